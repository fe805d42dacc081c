"""The named choices of tfvnas, kept apart from the code behind them so the command line can offer them fast.

`tfvnas --help` and argument errors answer without importing TensorFlow, so
the lists the parser offers live here (standard library only); the modules
that implement them import them from here too.
"""

# Search methods: VINNAS' Gaussian ARD gates, or the DARTS baseline (`tfvnas.layers.darts`).
METHODS = ("vinnas", "darts")

# Preset sizes of the search and the training (`tfvnas.config.PRESETS`, `TRAIN_PRESETS`).
PRESET_NAMES = ("smoke", "quick", "paper")

# `tf.distribute` strategies by name (`tfvnas.loops.distribute.make_strategy`).
STRATEGIES = ("auto", "default", "mirrored", "multiworker")

# keras-tuner studies (`tfvnas.loops.tuning`).
TUNING_MODES = ("train", "search")
TUNERS = ("random", "bayesian", "hyperband")

# Keras mixed-precision policies a search or a training runs under (`tfvnas.precision`).
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
