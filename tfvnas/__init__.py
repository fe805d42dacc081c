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

Yet `keras.models.load_model` finds every tfvnas layer and model after a
plain `import tfvnas`: each registered class has a stand-in in Keras' registry
of custom objects (`_SERIALIZABLE`), put there as soon as Keras is imported,
which loads the real class from its module when a saved model names it (the
real class replaces the stand-in when its module is imported).
"""

import importlib
import importlib.abc
import importlib.util
import os
import sys

# TensorFlow's C++ info lines drown the progress bar; users can still set it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN's CPU kernels: TensorFlow enables them by default on Intel CPUs
# only, and a search step on an AMD CPU is faster with them (the grouped
# convolutions' gradient needs them too). Read when TensorFlow is first imported, so it takes
# effect when tfvnas is imported first (the `tfvnas` command always is);
# TF_ENABLE_ONEDNN_OPTS=0 switches it off.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"

# Public name -> module that holds it (or `(module, name there)`).
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
    "register_op": ("tfvnas.layers.registry", "register"),
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

# Every class registered with `keras.saving.register_keras_serializable(package="tfvnas")`
# -> the module that defines it (a test checks the list against the registry).
_SERIALIZABLE = {
    "BatchNorm": "tfvnas.layers.batch_normalization",
    "DilConv": "tfvnas.layers.ops",
    "FactorizedReduce": "tfvnas.layers.ops",
    "Identity": "tfvnas.layers.ops",
    "InvertedResidual": "tfvnas.layers.inverted_residual",
    "Pool": "tfvnas.layers.ops",
    "ReLUConvBN": "tfvnas.layers.ops",
    "SepConv": "tfvnas.layers.ops",
    "Zero": "tfvnas.layers.ops",
    "VariationalConv2D": "tfvnas.layers.variational",
    "VariationalDense": "tfvnas.layers.variational",
    "VariationalDepthwiseConv2D": "tfvnas.layers.variational",
    "GaussianGates": "tfvnas.layers.gates",
    "SoftmaxGates": "tfvnas.layers.darts",
    "MixedEdge": "tfvnas.layers.mixed_edge",
    "Cell": "tfvnas.models.network",
    "AuxiliaryHead": "tfvnas.models.network",
    "Network": "tfvnas.models.network",
    "Supernet": "tfvnas.models.supernet",
}


def _stand_in(name, module):
    """A class Keras' deserialisation can call `from_config` on: it imports `module` and defers to its `name`."""

    def from_config(cls, config, custom_objects=None):
        real = getattr(importlib.import_module(module), name)
        return real.from_config(config)

    return type(name, (), {"from_config": classmethod(from_config), "get_config": lambda self: {},
                           "__doc__": f"Stands in for `{module}.{name}` until that module is imported."})


def _register_stand_ins():
    from keras.src.saving import object_registration  # noqa: PLC0415 - Keras is imported by now

    registry = object_registration.GLOBAL_CUSTOM_OBJECTS
    for name, module in _SERIALIZABLE.items():
        registry.setdefault(f"tfvnas>{name}", _stand_in(name, module))


class _AfterKeras(importlib.abc.MetaPathFinder):
    """Registers the stand-ins once the `keras` package has been imported (by anyone, TensorFlow included)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("keras")
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        run = loader.exec_module

        def exec_module(module):
            run(module)
            _register_stand_ins()

        loader.exec_module = exec_module
        return spec


if "keras" in sys.modules:
    _register_stand_ins()
elif not any(isinstance(f, _AfterKeras) for f in sys.meta_path):
    sys.meta_path.insert(0, _AfterKeras())


def __getattr__(name):
    if name in _PUBLIC:
        module, attribute = _PUBLIC[name] if isinstance(_PUBLIC[name], tuple) else (_PUBLIC[name], name)
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'tfvnas' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
