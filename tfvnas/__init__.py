"""tfvnas: variational-inference-based differentiable neural architecture search for Keras.

    >>> import tfvnas
    >>> result = tfvnas.search("mnist-5k", preset="quick", out_dir="runs/quick")
    >>> print(result.genotype.summary())
"""

import os

# TensorFlow's C++ info lines drown the progress bar; users can still set it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfvnas.config import PRESETS, SearchConfig  # noqa: E402
from tfvnas.genotype import Genotype  # noqa: E402
from tfvnas.search import SearchResult, Searcher, search  # noqa: E402

__version__ = "0.1.0"

__all__ = ["Genotype", "PRESETS", "SearchConfig", "SearchResult", "Searcher", "search", "__version__"]
