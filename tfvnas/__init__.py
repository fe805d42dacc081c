"""tfvnas: variational-inference-based differentiable neural architecture search for Keras.

    >>> import tfvnas
    >>> found = tfvnas.search("mnist-5k", preset="quick", out_dir="runs/search")
    >>> trained = tfvnas.train(found.genotype, "mnist-5k", preset="quick", out_dir="runs/train")
    >>> report = tfvnas.export("runs/train", "runs/export", int8=True)

`tfvnas.search`, `tfvnas.train`, `tfvnas.export` and `tfvnas.run` are
functions; the modules that hold them are `tfvnas.loops.searching`,
`tfvnas.loops.training`, `tfvnas.exporting` and `tfvnas.pipeline`. Every public
name is loaded on first use, so `import tfvnas` imports neither TensorFlow
nor LiteRT, tf_keras, tfmot or keras-tuner.
"""

import importlib
import os

# TensorFlow's C++ info lines drown the progress bar; users can still set it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN's CPU kernels: TensorFlow enables them by default on Intel CPUs
# only; on an AMD CPU a search step is 1.3x faster with them
# (docs/BENCHMARKS.md). Read when TensorFlow is first imported, so it takes
# effect when tfvnas is imported first (the `tfvnas` command always is);
# TF_ENABLE_ONEDNN_OPTS=0 switches it off.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"

# Public name -> module that holds it.
_PUBLIC = {
    "ExportConfig": "tfvnas.config",
    "PRESETS": "tfvnas.config",
    "SearchConfig": "tfvnas.config",
    "TRAIN_PRESETS": "tfvnas.config",
    "TrainConfig": "tfvnas.config",
    "Genotype": "tfvnas.models.genotype",
    "load_genotype": "tfvnas.models.zoo",
    "zoo_names": "tfvnas.models.zoo",
    "Network": "tfvnas.models.network",
    "Supernet": "tfvnas.models.supernet",
    "VariationalConv2D": "tfvnas.layers.variational",
    "VariationalDense": "tfvnas.layers.variational",
    "VariationalDepthwiseConv2D": "tfvnas.layers.variational",
    "SearchResult": "tfvnas.loops.searching",
    "Searcher": "tfvnas.loops.searching",
    "search": "tfvnas.loops.searching",
    "TrainResult": "tfvnas.loops.training",
    "Trainer": "tfvnas.loops.training",
    "train": "tfvnas.loops.training",
    "export": "tfvnas.exporting",
    "export_stripped": "tfvnas.exporting",
    "shrink": "tfvnas.compress.shrinking",
    "count_macs": "tfvnas.compress.macs",
    "RunResult": "tfvnas.pipeline",
    "run": "tfvnas.pipeline",
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'tfvnas' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
