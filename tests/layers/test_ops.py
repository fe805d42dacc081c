"""tfvnas.layers.ops against standard Keras layers and NumPy, and its argument checks.

Shapes are tiny (batch 2, 5x5 or 6x6, 2-3 channels).
"""

import json
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.keras_config import assert_config_round_trip
from tests.helpers.modes import run_in_mode
from tfvnas.layers import batch_normalization as bn_lib
from tfvnas.layers import ops
from tfvnas.layers import registry as op_registry
from tfvnas.layers import variational as vd

MODES = ("eager", "function")
C = 2  # channels


def _rng(seed=0):
    return np.random.default_rng(seed)


def _x(shape=(2, 5, 5, C), seed=0):
    return _rng(seed).normal(size=shape).astype("float32")


def _call(op, x, training, mode):
    fn = lambda a: op(a, training=training)  # noqa: E731
    if mode == "function":
        fn = tf.function(fn)
    return fn(x).numpy()


def _randomize(layer, rng):
    """Gives every weight of `layer` a random value of the right kind.

    Kernel means are bounded away from zero and variational log variances are
    small, so no variational weight is pruned.
    """
    for w in layer.weights:
        shape = tuple(w.shape)
        name = w.name
        if name == "log_sigma2":
            value = np.full(shape, -10.0)
        elif name in ("kernel", "theta", "depthwise_kernel", "pointwise_kernel"):
            value = rng.choice([-1.0, 1.0], shape) * rng.uniform(0.2, 1.2, shape)
        elif name == "gamma":
            value = rng.uniform(0.5, 1.5, shape)
        elif name in ("beta", "moving_mean", "bias"):
            value = rng.normal(size=shape) * 0.5
        elif name == "moving_variance":
            value = rng.uniform(0.5, 2.0, shape)
        else:
            raise AssertionError(f"unexpected weight {w.path}")
        w.assign(value.astype("float32"))


def _plain_weights(layer):
    """Values of `layer.weights` with variational log variances dropped (inference kernels)."""
    return [w.numpy() for w in layer.weights if w.name != "log_sigma2"]


# ---------------------------------------------------------------------------
# 1. Every registered op: output shapes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("weight_vd", [False, True])
@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("name", sorted(op_registry.OPS))
def test_every_op_output_shape(name, strides, weight_vd, affine):
    x = _x()
    op = op_registry.make_op(name, C, strides, weight_vd=weight_vd, affine=affine, seed=1)
    expected = (2, -(-5 // strides), -(-5 // strides), C)
    outs = [op(x, training=True), op(x, training=False)]
    both = tf.function(lambda a: (op(a, training=True), op(a, training=False)))
    outs += list(both(x))
    for out in outs:
        assert tuple(out.shape) == expected
        assert np.all(np.isfinite(out.numpy()))


# ---------------------------------------------------------------------------
# 2. Individual ops against references
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("weight_vd", [False, True])
def test_skip_connect_stride_1_is_the_identity(weight_vd, training, mode):
    x = _x()
    op = op_registry.make_op("skip_connect", C, 1, weight_vd=weight_vd)
    assert isinstance(op, ops.Identity)
    np.testing.assert_array_equal(_call(op, x, training, mode), x)
    assert op.weights == []


def test_skip_connect_stride_2_is_factorized_reduce():
    op = op_registry.make_op("skip_connect", C, 2, affine=False, seed=3)
    assert isinstance(op, ops.FactorizedReduce)
    assert (op.channels, op.strides, op.out_channels, op.affine, op.seed) == (C, 2, C, False, 3)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("strides", [1, 2])
def test_none_gives_exact_zeros_of_the_strided_shape(strides, training, mode):
    x = _x()
    got = _call(op_registry.make_op("none", C, strides), x, training, mode)
    n = -(-5 // strides)
    assert got.shape == (2, n, n, C)
    assert got.dtype == np.float32
    assert np.all(got == 0.0)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pools_with_affine_equal_keras_pooling(kind, strides, mode):
    x = _x() - 1.0  # mostly negative, so zero padding would show in max pooling
    name = f"{kind}_pool_3x3"
    op = op_registry.make_op(name, C, strides, affine=True)
    pool = keras.layers.MaxPooling2D if kind == "max" else keras.layers.AveragePooling2D
    want = pool(3, strides=strides, padding="same")(x).numpy()
    for training in (True, False):
        np.testing.assert_allclose(_call(op, x, training, mode), want, rtol=1e-6, atol=1e-6)
    assert op.weights == []
    # Independent NumPy check: a window clipped to the image (padding neither counted nor used).
    n = -(-5 // strides)
    ref = np.empty((2, n, n, C), "float64")
    pad = max((n - 1) * strides + 3 - 5, 0) // 2
    for i in range(n):
        for j in range(n):
            r0, c0 = i * strides - pad, j * strides - pad
            win = x[:, max(r0, 0) : r0 + 3, max(c0, 0) : c0 + 3, :]
            ref[:, i, j, :] = win.max((1, 2)) if kind == "max" else win.mean((1, 2))
    np.testing.assert_allclose(want, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pools_without_affine_add_a_parameter_free_batch_norm(kind, mode):
    x = _x()
    op = op_registry.make_op(f"{kind}_pool_3x3", C, 2, affine=False)
    pool = (keras.layers.MaxPooling2D if kind == "max" else keras.layers.AveragePooling2D)(3, 2, "same")
    bn = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, center=False, scale=False)
    np.testing.assert_allclose(_call(op, x, True, mode), bn(pool(x), training=True).numpy(), rtol=1e-5, atol=1e-5)
    assert [w.name for w in op.weights] == ["moving_mean", "moving_variance"]
    assert op.trainable_weights == []


def _keras_bn():
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)


def _sep_chain(k, strides, c=C):
    return [
        keras.layers.ReLU(),
        keras.layers.DepthwiseConv2D(k, strides=strides, padding="same", use_bias=False),
        keras.layers.Conv2D(c, 1, padding="same", use_bias=False),
        _keras_bn(),
        keras.layers.ReLU(),
        keras.layers.DepthwiseConv2D(k, padding="same", use_bias=False),
        keras.layers.Conv2D(c, 1, padding="same", use_bias=False),
        _keras_bn(),
    ]


def _dil_chain(k, strides, c=C):
    chain = [
        keras.layers.ReLU(),
        keras.layers.DepthwiseConv2D(k, dilation_rate=2, padding="same", use_bias=False),
    ]
    if strides == 2:
        chain.append(keras.layers.MaxPooling2D(pool_size=1, strides=2))
    return chain + [keras.layers.Conv2D(c, 1, padding="same", use_bias=False), _keras_bn()]


def _relu_conv_bn_chain(strides, c_out):
    return [
        keras.layers.ReLU(),
        keras.layers.Conv2D(c_out, 1, strides=strides, padding="same", use_bias=False),
        _keras_bn(),
    ]


def _mbconv_chain(expansion, strides, c=C):
    """MobileNetV2's inverted residual without the identity, in standard layers."""
    return [
        keras.layers.Conv2D(expansion * c, 1, padding="same", use_bias=False),
        _keras_bn(),
        keras.layers.ReLU(max_value=6.0),
        keras.layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False),
        _keras_bn(),
        keras.layers.ReLU(max_value=6.0),
        keras.layers.Conv2D(c, 1, padding="same", use_bias=False),
        _keras_bn(),
    ]


def _registered(name):
    return lambda s, weight_vd: op_registry.make_op(name, C, s, weight_vd=weight_vd, seed=1)


CHAIN_CASES = {
    "sep_conv_3x3": (_registered("sep_conv_3x3"), lambda s: _sep_chain(3, s)),
    "sep_conv_5x5": (_registered("sep_conv_5x5"), lambda s: _sep_chain(5, s)),
    "dil_conv_3x3": (_registered("dil_conv_3x3"), lambda s: _dil_chain(3, s)),
    "dil_conv_5x5": (_registered("dil_conv_5x5"), lambda s: _dil_chain(5, s)),
    "mbconv_3x3_e3": (_registered("mbconv_3x3_e3"), lambda s: _mbconv_chain(3, s)),
    "relu_conv_bn": (
        lambda s, weight_vd: ops.ReLUConvBN(C, s, out_channels=3, weight_vd=weight_vd, seed=1),
        lambda s: _relu_conv_bn_chain(s, 3),
    ),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("weight_vd", [False, True])
@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("case", sorted(CHAIN_CASES))
def test_conv_ops_equal_a_chain_of_standard_keras_layers(case, strides, weight_vd, mode):
    """Inference of an affine op equals the hand-wired standard layers with the same weights.

    With `weight_vd` the chain gets the variational means (no weight is pruned here).
    """
    make_op, make_chain = CHAIN_CASES[case]
    x = _x((2, 6, 6, C), seed=1)
    op = make_op(strides, weight_vd)
    op(x, training=False)  # builds
    _randomize(op, _rng(9))
    ref = keras.Sequential(make_chain(strides))
    ref.build(x.shape)
    ref.set_weights(_plain_weights(op))
    got = _call(op, x, False, mode)
    np.testing.assert_allclose(got, ref(x, training=False).numpy(), rtol=1e-4, atol=1e-4)
    if not weight_vd:
        # Training mode (batch statistics) agrees too.
        got = _call(op, x, True, mode)
        np.testing.assert_allclose(got, ref(x, training=True).numpy(), rtol=1e-4, atol=1e-4)


def _np_bn(y, gamma, beta, mean=None, var=None, eps=1e-5):
    if mean is None:
        flat = y.reshape(-1, y.shape[-1])
        mean, var = flat.mean(0), flat.var(0)
    return (y - mean) / np.sqrt(var + eps) * gamma + beta


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("size, out_channels", [(6, None), (5, None), (6, 4)])
def test_factorized_reduce_matches_numpy(size, out_channels, training, mode):
    x = _x((2, size, size, C), seed=2)
    op = ops.FactorizedReduce(C, 2, out_channels=out_channels)
    op(x, training=False)
    _randomize(op, _rng(10))
    out_c = C if out_channels is None else out_channels
    wa = op.conv_a.kernel.numpy()
    wb = op.conv_b.kernel.numpy()
    assert wa.shape == wb.shape == (1, 1, C, out_c // 2)

    xr = np.maximum(x, 0.0).astype("float64")
    a = xr[:, ::2, ::2, :] @ wa[0, 0]
    shifted = np.zeros_like(xr)
    shifted[:, :-1, :-1, :] = xr[:, 1:, 1:, :]  # pixel (i, j) <- (i + 1, j + 1)
    b = shifted[:, ::2, ::2, :] @ wb[0, 0]
    y = np.concatenate([a, b], axis=-1)
    gamma, beta = op.bn.gamma.numpy(), op.bn.beta.numpy()
    if training:
        want = _np_bn(y, gamma, beta)
    else:
        want = _np_bn(y, gamma, beta, op.bn.moving_mean.numpy(), op.bn.moving_variance.numpy())
    got = _call(op, x, training, mode)
    n = -(-size // 2)
    assert got.shape == (2, n, n, out_c)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------
# 3. Argument validation
# ---------------------------------------------------------------------------


def _raises(fn, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        fn()


@pytest.mark.parametrize("name", sorted(op_registry.OPS))
@pytest.mark.parametrize("strides", [0, 3, -1])
def test_strides_must_be_1_or_2(name, strides):
    _raises(lambda: op_registry.make_op(name, C, strides), f"`strides` must be 1 or 2. Received: strides={strides}")


@pytest.mark.parametrize("strides", [2.0, True])
def test_strides_must_be_the_int_1_or_2(strides):
    """A float or bool stride is a user mistake (STYLE rule 11), as for `channels`.

    `strides in (1, 2)` lets 2.0 through to a deep Keras/TF error (or to a
    FactorizedReduce for skip_connect) and True silently through as 1.
    """
    for name in sorted(op_registry.OPS):
        _raises(lambda: op_registry.make_op(name, C, strides), f"`strides` must be 1 or 2. Received: strides={strides!r}")


@pytest.mark.parametrize("name", sorted(op_registry.OPS))
@pytest.mark.parametrize("channels", [0, -3])
def test_channels_must_be_positive(name, channels):
    for strides in (1, 2):
        _raises(
            lambda: op_registry.make_op(name, channels, strides),
            f"`channels` must be a positive int. Received: channels={channels}",
        )


def test_other_argument_errors():
    _raises(lambda: ops.Pool(C, 1, kind="min"), "`kind` must be 'max' or 'avg'. Received: kind='min'")
    _raises(
        lambda: ops.FactorizedReduce(C, 2, out_channels=3),
        "`out_channels` of FactorizedReduce must be even. Received: out_channels=3",
    )
    _raises(
        lambda: ops.FactorizedReduce(3, 2),
        "`out_channels` of FactorizedReduce must be even. Received: out_channels=3",
    )
    _raises(
        lambda: ops.ReLUConvBN(C, 1, out_channels=0),
        "`out_channels` must be a positive int. Received: out_channels=0",
    )
    _raises(
        lambda: ops.conv2d(2, 3, strides=2, dilation_rate=2),
        "A plain strided dilated Conv2D is not supported. Received: strides=2, dilation_rate=2",
    )
    _raises(lambda: op_registry.make_op("none", 2.0, 1), "`channels` must be a positive int. Received: channels=2.0")
    _raises(lambda: op_registry.make_op("none", True, 1), "`channels` must be a positive int. Received: channels=True")


def test_weight_vd_builds_variational_layers_with_distinct_seeds():
    op = op_registry.make_op("sep_conv_3x3", C, 2, weight_vd=True, seed=10)
    layers = [s for s in op.steps if isinstance(s, vd.VariationalLayer)]
    assert [type(s).__name__ for s in layers] == [
        "VariationalDepthwiseConv2D", "VariationalConv2D", "VariationalDepthwiseConv2D", "VariationalConv2D",
    ]
    assert [s.seed for s in layers] == [11, 12, 13, 14]
    assert [s.strides for s in layers] == [2, 1, 1, 1]
    plain = op_registry.make_op("sep_conv_3x3", C, 2, weight_vd=False)
    assert not any(isinstance(s, vd.VariationalLayer) for s in plain.steps)


# ---------------------------------------------------------------------------
# 4. Config round trips
# ---------------------------------------------------------------------------

OP_CLASSES = {
    "BatchNorm": lambda: bn_lib.BatchNorm(affine=False, momentum=0.8, epsilon=1e-3, name="bn"),
    "SepConv": lambda: ops.SepConv(3, 2, kernel_size=5, weight_vd=True, affine=False, seed=4, name="sep"),
    "DilConv": lambda: ops.DilConv(3, 1, kernel_size=5, dilation_rate=3, weight_vd=True, seed=5),
    "Pool": lambda: ops.Pool(2, 2, kind="avg", affine=False),
    "FactorizedReduce": lambda: ops.FactorizedReduce(3, 2, out_channels=6, weight_vd=True, seed=6),
    "Identity": lambda: ops.Identity(4, 1),
    "Zero": lambda: ops.Zero(4, 2, affine=False),
    "ReLUConvBN": lambda: ops.ReLUConvBN(2, 2, out_channels=4, affine=False, seed=7),
}


@pytest.mark.parametrize("name", sorted(OP_CLASSES))
def test_op_config_json_round_trip(name):
    op = OP_CLASSES[name]()
    assert type(op).__name__ == name
    assert_config_round_trip(op)
    config = json.loads(json.dumps(op.get_config()))
    assert keras.saving.get_registered_name(type(op)) == f"tfvnas>{name}"
    restored = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(keras.saving.serialize_keras_object(op)))
    )
    assert type(restored) is type(op)
    assert json.loads(json.dumps(restored.get_config())) == config


def test_config_carries_every_constructor_argument():
    config = OP_CLASSES["SepConv"]().get_config()
    for key, value in dict(channels=3, strides=2, kernel_size=5, weight_vd=True, affine=False, seed=4).items():
        assert config[key] == value, key
    config = OP_CLASSES["BatchNorm"]().get_config()
    assert (config["affine"], config["momentum"], config["epsilon"]) == (False, 0.8, 1e-3)
    config = OP_CLASSES["DilConv"]().get_config()
    assert (config["kernel_size"], config["dilation_rate"]) == (5, 3)
    assert OP_CLASSES["Pool"]().get_config()["kind"] == "avg"
    assert OP_CLASSES["FactorizedReduce"]().get_config()["out_channels"] == 6


@pytest.mark.parametrize("strides", [1, 2])
def test_max_pool_and_the_shift_equal_tensorflows_ops_in_value_and_gradient(strides):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(2, 7, 6, 3)), tf.float32)

    def value_and_gradient(fn):
        def run(inputs):
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                y = fn(inputs)
                loss = tf.reduce_sum(y * tf.reshape(tf.cos(tf.range(tf.size(y), dtype=tf.float32)), tf.shape(y)))
            return y, tape.gradient(loss, inputs)
        return run

    pairs = [
        (lambda t: ops.max_pool(t, 3, strides), lambda t: tf.nn.max_pool2d(t, 3, strides, "SAME")),
        (ops.shift_up_left, lambda t: tf.pad(t[:, 1:, 1:, :], [[0, 0], [0, 1], [0, 1], [0, 0]])),
    ]
    for mode in MODES:
        for ours, reference in pairs:
            got = run_in_mode(mode, value_and_gradient(ours), x)
            want = run_in_mode(mode, value_and_gradient(reference), x)
            np.testing.assert_allclose(got[0], want[0])
            np.testing.assert_allclose(got[1], want[1], rtol=1e-6, atol=1e-6)


def test_a_normalised_identity_is_a_batch_norm_without_scale_or_shift():
    x = np.random.default_rng(5).normal(2.0, 3.0, (4, 5, 5, 3)).astype("float32")
    layer = ops.Identity(3, 1, normalised=True, affine=False)
    got = layer(x, training=True).numpy()
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    np.testing.assert_allclose(got, (x - mean) / np.sqrt(var + 1e-5), rtol=1e-4, atol=1e-4)
    assert layer.trainable_weights == []  # nothing to learn: a search-time normalisation
    np.testing.assert_array_equal(ops.Identity(3, 1)(x, training=True).numpy(), x)  # the plain one passes x on
    with pytest.raises(ValueError, match=re.escape("A normalised identity is a supernet op: it needs `affine=False`. "
                                                   "Received: normalised=True, affine=True")):
        ops.Identity(3, 1, normalised=True, affine=True)
