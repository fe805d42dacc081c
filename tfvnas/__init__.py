"""tfvnas: variational-inference-based differentiable neural architecture search for Keras.

    >>> import tfvnas
    >>> found = tfvnas.search("mnist-5k", preset="quick", out_dir="runs/search")
    >>> trained = tfvnas.train(found.genotype, "mnist-5k", preset="quick", out_dir="runs/train")
    >>> report = tfvnas.export("runs/train", "runs/export", int8=True)

`tfvnas.search`, `tfvnas.train` and `tfvnas.export` are the functions; their
modules are reached with `from tfvnas.search import Searcher` and the like.
"""

import os

# TensorFlow's C++ info lines drown the progress bar; users can still set it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfvnas.config import PRESETS, TRAIN_PRESETS, ExportConfig, SearchConfig, TrainConfig  # noqa: E402
from tfvnas.genotype import Genotype  # noqa: E402
from tfvnas.zoo import load_genotype, zoo_names  # noqa: E402
from tfvnas.network import Network  # noqa: E402
from tfvnas.search import SearchResult, Searcher, search  # noqa: E402
from tfvnas.train import TrainResult, Trainer, train  # noqa: E402
from tfvnas.export import export, export_stripped  # noqa: E402
from tfvnas.pipeline import RunResult, run  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "ExportConfig", "Genotype", "Network", "PRESETS", "RunResult", "SearchConfig", "SearchResult",
    "Searcher", "TRAIN_PRESETS", "TrainConfig", "TrainResult", "Trainer", "export", "export_stripped",
    "load_genotype", "run", "search", "train", "zoo_names", "__version__",
]
