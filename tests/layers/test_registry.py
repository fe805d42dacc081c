"""tfvnas.layers.registry: the registry's contract, the named sets, and registering operations of one's own.

Shapes are tiny (batch 2, 5x5, 2-3 channels).
"""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvnas.layers import registry as op_registry

C = 2  # channels


def _x(shape=(2, 5, 5, C), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _raises(fn, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        fn()


KNOWN = ", ".join(sorted(op_registry.OPS))


def test_op_names_is_the_sorted_registry():
    names = op_registry.op_names()
    assert isinstance(names, tuple)
    assert list(names) == sorted(op_registry.OPS)
    assert set(names) == {
        "none", "max_pool_3x3", "avg_pool_3x3", "skip_connect",
        "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5", "mbconv_3x3_e3",
    }


def test_op_sets_name_only_registered_ops():
    assert op_registry.DEFAULT_OP_SET in op_registry.OP_SETS
    for name, members in op_registry.OP_SETS.items():
        assert members, name
        assert len(set(members)) == len(members), name
        assert set(members) <= set(op_registry.OPS), name
        assert op_registry.check_op_names(members) == tuple(members)
        assert op_registry.resolve_op_set(name) == tuple(members)
    # DESIGN.md §1: the default set, `none` off by default, and a set without dilation.
    assert op_registry.OP_SETS["darts"] == (
        "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5",
        "max_pool_3x3", "avg_pool_3x3", "skip_connect",
    )
    assert op_registry.resolve_op_set() == op_registry.OP_SETS["darts"]
    assert "none" not in op_registry.OP_SETS["darts"] and "none" in op_registry.OP_SETS["darts_none"]
    assert not any(n.startswith("dil_") for n in op_registry.OP_SETS["mobile"])
    assert {n for n in op_registry.OPS if op_registry.is_parameter_free(n)} == {"none", "max_pool_3x3", "avg_pool_3x3", "skip_connect"}


@pytest.mark.parametrize("name", sorted(op_registry.OPS))
def test_parameter_free_ops_have_no_trainable_weights(name):
    op = op_registry.make_op(name, C, 1, affine=True)
    op(_x(), training=False)
    assert (not op.trainable_weights) == op_registry.is_parameter_free(name)


def test_resolve_op_set_prefers_explicit_ops():
    assert op_registry.resolve_op_set("mobile", ops=["skip_connect", "none"]) == ("skip_connect", "none")
    assert op_registry.resolve_op_set("no_such_set", ops=["none"]) == ("none",)


def test_registry_errors_have_whole_messages():
    unknown = (f"Unknown operation 'conv_7x7'. Known operations: {KNOWN}. To use an operation of your own, "
               "register it first: `tfvnas.register_op('conv_7x7', factory)`, with `factory(channels, strides)` "
               "returning a keras.layers.Layer, in the process that builds the model.")
    _raises(lambda: op_registry.check_op_names(["sep_conv_3x3", "conv_7x7"]), unknown)
    _raises(lambda: op_registry.make_op("conv_7x7", C, 1), unknown)
    _raises(
        lambda: op_registry.check_op_names(["skip_connect", "none", "skip_connect"]),
        "`ops` must not repeat a name. Received: ops=['skip_connect', 'none', 'skip_connect']",
    )
    _raises(lambda: op_registry.check_op_names([]), "`ops` must name at least one operation. Received: ops=()")
    _raises(lambda: op_registry.resolve_op_set(ops=[]), "`ops` must name at least one operation. Received: ops=()")
    _raises(
        lambda: op_registry.resolve_op_set("no_such_set"),
        "Unknown operation set 'no_such_set'. Known sets: " + ", ".join(sorted(op_registry.OP_SETS)),
    )
    assert KNOWN == (
        "avg_pool_3x3, dil_conv_3x3, dil_conv_5x5, max_pool_3x3, mbconv_3x3_e3, none, "
        "sep_conv_3x3, sep_conv_5x5, skip_connect"
    )


def test_skip_connect_is_parameter_free_only_at_stride_one():
    from tfvnas.models.genotype import Genotype

    assert op_registry.is_parameter_free("skip_connect", 1) and not op_registry.is_parameter_free("skip_connect", 2)
    assert op_registry.is_parameter_free("max_pool_3x3", 2) and not op_registry.is_parameter_free("sep_conv_3x3", 1)
    # Weights counted from the layers themselves: a stride-2 skip has two 1x1 convolutions.
    op = op_registry.make_op("skip_connect", 4, 2, affine=True)
    op(tf.zeros((1, 6, 6, 4)))
    assert op.count_params() > 0
    genotype = Genotype(
        normal=[[("skip_connect", 0), ("skip_connect", 1)], [("max_pool_3x3", 2), ("sep_conv_3x3", 0)]],
        normal_concat=[2, 3],
        reduce=[[("skip_connect", 0), ("skip_connect", 1)], [("skip_connect", 2), ("avg_pool_3x3", 0)]],
        reduce_concat=[2, 3],
    )
    assert op_registry.cell_op_counts(genotype, "normal") == (3, 2, 4)
    # Reduction cell: skips from inputs 0 and 1 are FactorizedReduce; from node 2 an identity.
    assert op_registry.cell_op_counts(genotype, "reduce") == (2, 3, 4)


# ---------------------------------------------------------------------------
# Registering operations of one's own
# ---------------------------------------------------------------------------


@pytest.fixture
def register():
    """`op_registry.register`, with every name it registers taken out of the registry afterwards."""
    names = []

    def register(name, factory, **kwargs):
        op = op_registry.register(name, factory, **kwargs)
        names.append(name)
        return op

    yield register
    for name in names:
        op_registry.OPS.pop(name, None)


def _conv_bn(channels, strides):
    """A plain `(channels, strides)` factory: a Keras Sequential of standard layers."""
    return keras.Sequential([
        keras.layers.Conv2D(channels, 3, strides=strides, padding="same", use_bias=False),
        keras.layers.BatchNormalization(),
    ])


def test_a_registered_op_is_made_like_any_other(register):
    import tfvnas

    assert tfvnas.register_op is op_registry.register
    op = register("conv_bn_3x3", _conv_bn)
    assert op_registry.OPS["conv_bn_3x3"] is op and "conv_bn_3x3" in op_registry.op_names()
    assert op.options == frozenset() and not op.builtin and not op_registry.is_parameter_free("conv_bn_3x3")
    # The options tfvnas passes and the factory does not take are left out.
    layer = op_registry.make_op("conv_bn_3x3", 3, 2, weight_vd=True, affine=False, seed=4)
    x = _x((2, 5, 5, 3))
    assert tuple(layer(x).shape) == (2, 3, 3, 3)
    assert op_registry.check_op_names(["conv_bn_3x3", "skip_connect"]) == ("conv_bn_3x3", "skip_connect")
    # A factory taking some of the options gets those.
    seen = {}

    def pool(channels, strides, seed=None):
        seen["seed"] = seed
        return keras.layers.AveragePooling2D(3, strides=strides, padding="same")

    register("my_pool", pool, parameter_free=True)
    op_registry.make_op("my_pool", 2, 1, weight_vd=True, seed=7)
    assert seen == {"seed": 7} and op_registry.is_parameter_free("my_pool")


def test_register_checks_the_layer_its_factory_makes(register):
    class Unsaveable(keras.layers.Layer):
        """Takes an argument no config can hold."""

        def __init__(self, channels, rng, **kwargs):
            super().__init__(**kwargs)
            self.conv = keras.layers.Conv2D(channels, 1)

        def call(self, x):
            return self.conv(x)

    cases = [
        ("bad-name", _conv_bn, {}, "`name` must be letters, digits and underscores. Received: name='bad-name'"),
        ("sep_conv_3x3", _conv_bn, {},
         "'sep_conv_3x3' is one of tfvnas' own operations and cannot be replaced. Received: name='sep_conv_3x3'"),
        ("x", "conv", {}, "`factory` must be callable as factory(channels, strides). Received: factory='conv'"),
        ("x", _conv_bn, {"parameter_free": 1}, "`parameter_free` must be a bool. Received: parameter_free=1"),
        ("x", lambda c, s: tf.nn.relu, {},
         "The factory of operation 'x' must return a keras.layers.Layer. Received: function for channels=4, "
         "strides=1"),
        ("x", lambda c, s: keras.layers.Conv2D(c, 3, padding="same"), {},
         "Operation 'x' must map inputs of shape (None, 8, 8, 4) to (None, 4, 4, 4) (channels=4, strides=2: as "
         "many channels, the resolution divided by the stride). Received: output shape (None, 8, 8, 4) from its "
         "Conv2D"),
        ("x", lambda c, s: keras.layers.Conv2D(2 * c, 1, strides=s, padding="same"), {},
         "Operation 'x' must map inputs of shape (None, 8, 8, 4) to (None, 8, 8, 4) (channels=4, strides=1: as "
         "many channels, the resolution divided by the stride). Received: output shape (None, 8, 8, 8) from its "
         "Conv2D"),
        ("x", _conv_bn, {"parameter_free": True},
         "Operation 'x' is registered parameter-free but its layer has weights at stride 1. Received: "),
        ("x", lambda c, s: Unsaveable(c, np.random.default_rng(0)), {},
         "The layer of operation 'x' (Unsaveable) must rebuild from its JSON config (`get_config`, "
         "`from_config`). Received: "),
    ]
    for name, factory, kwargs, message in cases:
        with pytest.raises(ValueError, match="^" + re.escape(message)):
            register(name, factory, **kwargs)
        assert name not in op_registry.OPS or op_registry.OPS[name].builtin
    register("conv_bn", _conv_bn)
    _raises(lambda: register("conv_bn", _conv_bn),
            "Operation 'conv_bn' is already registered; pass overwrite=True to replace it. Received: name='conv_bn'")
    replaced = register("conv_bn", _conv_bn, overwrite=True)
    assert op_registry.OPS["conv_bn"] is replaced


def test_a_wrong_shape_is_caught_where_the_op_is_built(register):
    from tfvnas.layers.mixed_edge import MixedEdge
    from tfvnas.models import genotype as genotype_lib
    from tfvnas.models import network as network_lib

    # Right at the 4 channels `register` tries, wrong at others.
    register("fixed_width", lambda c, s: keras.layers.Conv2D(4, 1, strides=s, padding="same"), check=False)
    message = ("Operation 'fixed_width' must map inputs of shape (None, 6, 6, 2) to (None, 6, 6, 2) (channels=2, "
               "strides=1: as many channels, the resolution divided by the stride). Received: output shape "
               "(None, 6, 6, 4) from its Conv2D")
    _raises(lambda: MixedEdge(("fixed_width", "skip_connect"), 2, 1).build((None, 6, 6, 2)), message)
    genotype = genotype_lib.Genotype(normal=[[("fixed_width", 0), ("skip_connect", 1)]], normal_concat=[2],
                                     reduce=[[("max_pool_3x3", 0), ("skip_connect", 1)]], reduce_concat=[2])
    with pytest.raises(ValueError, match=re.escape("Operation 'fixed_width' must map inputs of shape")):
        network_lib.Network(10, genotype, layers=3, channels=2, stem_multiplier=1).build((None, 6, 6, 1))
