"""The registry of candidate operations: name -> layer factory, and the named sets of them.

`OPS` maps an operation name to an `OpFactory`: called as
`OPS[name](channels, strides, *, weight_vd=False, affine=True, seed=None)`
it returns a `keras.layers.Layer` mapping `channels` input channels to
`channels` output channels with the given stride (the resolution divided
by it, rounded up). `weight_vd=True` makes every convolution a sparse
variational one (`tfvnas.layers.variational`); `affine=False` gives the
parameter-free batch normalisation DARTS uses in the supernet. Named
operation sets (`OP_SETS`) select subsets; every other list of names
(`op_names`, the parameter-free ones) is derived from `OPS`.

`register(name, factory)` (also `tfvnas.register_op`) adds an operation of
your own: a factory `(channels, strides) -> keras.layers.Layer`, which may
also take the keyword arguments above. See `register` for where a
registered operation works and what its layer must be.

References:
    - Liu, Simonyan, Yang. "DARTS: Differentiable Architecture Search."
      ICLR 2019 (operations and cell structure).
    - Sandler, Howard, Zhu, Zhmoginov, Chen. "MobileNetV2: Inverted
      Residuals and Linear Bottlenecks." CVPR 2018 (`mbconv_3x3_e3`).
"""

import inspect
import json
import re

import keras

from tfvnas.layers.inverted_residual import InvertedResidual
from tfvnas.layers.ops import (
    DilConv,
    FactorizedReduce,
    Identity,
    Pool,
    SepConv,
    Zero,
    build_layer,
    check_strides,
    conv_output_shape,
)


def _skip(channels, strides, **kwargs):
    if strides == 1:
        return Identity(channels, 1, **kwargs)
    return FactorizedReduce(channels, strides, **kwargs)


def _mbconv(expansion):
    def factory(channels, strides, **kwargs):
        return InvertedResidual(channels, strides, expansion=expansion, **kwargs)

    return factory


# The options tfvnas passes to a factory; a factory that does not take one
# is called without it (a plain `(channels, strides)` factory gets none).
OPTIONS = ("weight_vd", "affine", "seed", "normalised")


class OpFactory:
    """A registered operation: its layer factory, and whether it has weights.

    Called as `op(channels, strides, **options)`, it calls the factory with
    the `OPTIONS` the factory takes (all of them when it takes `**kwargs`).

    Attributes:
        factory: the factory `(channels, strides, ...) -> keras.layers.Layer`.
        parameter_free: the layer has no weights at stride 1 (pooling, the
            identity): what the parameter-free share of a cell counts.
        builtin: one of tfvnas' own, which the supernet's fused edge
            computes by name (`tfvnas.layers.mixed_edge`): never replaced.
    """

    def __init__(self, factory, parameter_free=False, builtin=False):
        self.factory = factory
        self.parameter_free = bool(parameter_free)
        self.builtin = bool(builtin)
        try:
            parameters = inspect.signature(factory).parameters.values()
        except (TypeError, ValueError):  # no signature to read: pass every option
            parameters = [inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)]
        if any(p.kind is p.VAR_KEYWORD for p in parameters):
            self.options = frozenset(OPTIONS)
        else:
            self.options = frozenset(p.name for p in parameters if p.kind is not p.POSITIONAL_ONLY) & set(OPTIONS)

    def __call__(self, channels, strides, **options):
        return self.factory(channels, strides, **{k: v for k, v in options.items() if k in self.options})


OPS = {
    "none": OpFactory(lambda c, s, **kw: Zero(c, s, **kw), parameter_free=True, builtin=True),
    "max_pool_3x3": OpFactory(lambda c, s, **kw: Pool(c, s, kind="max", **kw), parameter_free=True, builtin=True),
    "avg_pool_3x3": OpFactory(lambda c, s, **kw: Pool(c, s, kind="avg", **kw), parameter_free=True, builtin=True),
    # At stride 2 a FactorizedReduce (two 1x1 convolutions): `is_parameter_free`.
    "skip_connect": OpFactory(_skip, parameter_free=True, builtin=True),
    "sep_conv_3x3": OpFactory(lambda c, s, **kw: SepConv(c, s, kernel_size=3, **kw), builtin=True),
    "sep_conv_5x5": OpFactory(lambda c, s, **kw: SepConv(c, s, kernel_size=5, **kw), builtin=True),
    "dil_conv_3x3": OpFactory(lambda c, s, **kw: DilConv(c, s, kernel_size=3, **kw), builtin=True),
    "dil_conv_5x5": OpFactory(lambda c, s, **kw: DilConv(c, s, kernel_size=5, **kw), builtin=True),
}

_NAME = re.compile(r"[A-Za-z0-9_]+")
_HOW_TO_REGISTER = ("`tfvnas.register_op({name!r}, factory)`, with `factory(channels, strides)` returning a "
                    "keras.layers.Layer, in the process that builds the model")


def how_to_register(name):
    """The sentence an error about an unregistered operation `name` ends with."""
    return f"To use an operation of your own, register it first: {_HOW_TO_REGISTER.format(name=name)}."


def register(name, factory, *, parameter_free=False, overwrite=False, check=True):
    """Registers an operation `name` made by `factory`, for every part of tfvnas.

    A registered operation can be named in a `SearchConfig`'s `ops`, in a
    genotype, a `Network` or a `Supernet`. The supernet computes it op by
    op (its fused edge computes tfvnas' own operations only), with a gate
    like any other; `tfvnas.compress.strip` strips it, dead-channel
    elimination shrinks through it, MACs are counted and it exports to
    SavedModel and TFLite, when its layer is made of what strip knows: a
    `tfvnas.layers.ops.Op` (its `steps` in order; `InvertedResidual` is
    one) or a `keras.Sequential`, of standard Keras layers
    (`tfvnas.compress.strip.STANDARD_LAYERS`; a ReLU may have `max_value`),
    tfvnas' variational layers and `BatchNorm`. Another layer trains and
    searches, and strip refuses it by name.

    Registration lives in the process: a genotype file or a saved
    `Network` names the operation, so the process that loads it registers it
    first (tfvnas' command line knows its own operations only).

    Args:
        name: letters, digits and underscores (it names layers).
        factory: `factory(channels, strides) -> keras.layers.Layer`, the
            layer mapping `channels` channels to `channels` channels with
            stride 1 or 2 ('same' padding: the resolution divided by the
            stride, rounded up). It may take the keyword arguments
            `weight_vd` (variational weights: use
            `tfvnas.layers.ops.conv2d(..., weight_vd=...)` and
            `depthwise_conv2d`, so the weights sparsify), `affine` (False in
            the supernet: batch norm without scale and shift) and `seed`;
            those it does not take are not passed.
        parameter_free: the layer has no weights (at stride 1); counted as
            parameter-free in a cell's summary.
        overwrite: replace an operation registered before (never one of
            tfvnas' own).
        check: build the layer once for each stride (4 channels, 8x8
            inputs) to check that it is a Keras layer with the right output
            shape, no weights if `parameter_free`, and a config that rebuilds
            it through JSON (`get_config` / `from_config`).

    Returns:
        The `OpFactory` registered.

    Raises:
        ValueError: for a bad name, a name taken, a factory that is not
            callable, or one whose layer fails a check.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"`name` must be letters, digits and underscores. Received: name={name!r}")
    if not callable(factory):
        raise ValueError(f"`factory` must be callable as factory(channels, strides). Received: factory={factory!r}")
    for arg, value in (("parameter_free", parameter_free), ("overwrite", overwrite), ("check", check)):
        if not isinstance(value, bool):
            raise ValueError(f"`{arg}` must be a bool. Received: {arg}={value!r}")
    if name in OPS and OPS[name].builtin:
        raise ValueError(f"{name!r} is one of tfvnas' own operations and cannot be replaced. Received: name={name!r}")
    if name in OPS and not overwrite:
        raise ValueError(f"Operation {name!r} is already registered; pass overwrite=True to replace it. "
                         f"Received: name={name!r}")
    op = OpFactory(factory, parameter_free=parameter_free)
    if check:
        for strides in (1, 2):
            check_op_layer(name, op, strides)
    OPS[name] = op
    return op


def check_op_layer(name, op, strides, channels=4, size=8):
    """Builds `op(channels, strides)` on `(None, size, size, channels)` inputs and checks what `register` checks."""
    layer = op(channels, strides)
    if not isinstance(layer, keras.layers.Layer):
        raise ValueError(f"The factory of operation {name!r} must return a keras.layers.Layer. "
                         f"Received: {type(layer).__name__} for channels={channels}, strides={strides}")
    input_shape = (None, size, size, channels)
    check_op_output(name, layer, input_shape, build_layer(layer, input_shape), channels, strides)
    if op.parameter_free and strides == 1 and layer.weights:
        raise ValueError(f"Operation {name!r} is registered parameter-free but its layer has weights at stride 1. "
                         f"Received: {', '.join(w.path for w in layer.weights)}")
    try:
        config = json.loads(json.dumps(layer.get_config()))
        again = type(layer).from_config(config).get_config()
    except Exception as error:  # noqa: BLE001 - any failure to rebuild is the user's to see
        raise ValueError(f"The layer of operation {name!r} ({type(layer).__name__}) must rebuild from its JSON "
                         f"config (`get_config`, `from_config`). Received: {type(error).__name__}: {error}") from error
    if json.loads(json.dumps(again)) != config:
        differ = sorted(k for k in set(config) | set(again) if config.get(k) != again.get(k))
        raise ValueError(f"The layer of operation {name!r} ({type(layer).__name__}) must rebuild from its config "
                         f"with the same config. Received: {', '.join(differ)} differ")
    return layer


def check_op_output(name, layer, input_shape, output_shape, channels, strides):
    """Raises `ValueError` unless the layer of operation `name` maps `input_shape` to the shape an edge needs."""
    expected = conv_output_shape(tuple(input_shape), strides, channels)
    if tuple(output_shape)[1:] != expected[1:]:
        raise ValueError(
            f"Operation {name!r} must map inputs of shape {tuple(input_shape)} to {expected} (channels={channels}, "
            f"strides={strides}: as many channels, the resolution divided by the stride). "
            f"Received: output shape {tuple(output_shape)} from its {type(layer).__name__}"
        )


def is_parameter_free(name, strides=1):
    """Whether operation `name` has no weights at `strides` (`skip_connect` at stride 2 has; unknown: False)."""
    if name == "skip_connect":
        return strides == 1
    return name in OPS and OPS[name].parameter_free


def cell_op_counts(genotype, cell_type):
    """`(parameter_free, skips, total)` over the (op, input) pairs of one cell of `genotype`.

    An edge from a cell input (0 or 1) of a reduction cell has stride 2, so
    its `skip_connect` is a FactorizedReduce: a skip, but not parameter-free.
    """
    cell = genotype.normal if cell_type == "normal" else genotype.reduce
    pairs = [(op, 2 if cell_type == "reduce" and inp < 2 else 1) for node in cell for op, inp in node]
    free = sum(is_parameter_free(op, s) for op, s in pairs)
    skips = sum(op == "skip_connect" for op, _ in pairs)
    return free, skips, len(pairs)


_DARTS_OPS = (
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
)
OP_SETS = {
    "darts": _DARTS_OPS,
    # DARTS' own space: its candidates and the zero op first.
    "darts_none": ("none",) + _DARTS_OPS,
    # Fits the TFLite/XNNPACK sparse kernels: no dilation.
    "mobile": (
        "sep_conv_3x3",
        "sep_conv_5x5",
        "max_pool_3x3",
        "avg_pool_3x3",
        "skip_connect",
    ),
}
DEFAULT_OP_SET = "darts"


def op_names():
    """Every registered operation name, sorted."""
    return tuple(sorted(OPS))


def check_op_names(names):
    """Validates a sequence of operation names; returns it as a tuple."""
    if isinstance(names, str):
        raise ValueError(f"`ops` must be a list of operation names. Received: ops={names!r}")
    names = tuple(names)
    if not names:
        raise ValueError("`ops` must name at least one operation. Received: ops=()")
    for name in names:
        if name not in OPS:
            raise ValueError(
                f"Unknown operation {name!r}. Known operations: {', '.join(op_names())}. {how_to_register(name)}"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"`ops` must not repeat a name. Received: ops={list(names)}")
    return names


def resolve_op_set(op_set=DEFAULT_OP_SET, ops=None):
    """The operation names of a named set, or `ops` when given."""
    if ops is not None:
        return check_op_names(ops)
    if op_set not in OP_SETS:
        raise ValueError(
            f"Unknown operation set {op_set!r}. Known sets: {', '.join(sorted(OP_SETS))}"
        )
    return OP_SETS[op_set]


def make_op(name, channels, strides, **kwargs):
    """Builds the operation `name`; raises `ValueError` for an unknown name."""
    check_op_names([name])
    return OPS[name](channels, check_strides(strides), **kwargs)


# MobileNetV2's inverted residual (`tfvnas.layers.inverted_residual`),
# registered as any operation of a user's is.
register("mbconv_3x3_e3", _mbconv(3), check=False)
