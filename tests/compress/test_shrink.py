"""Dead-channel elimination (`tfvnas.compress.shrinking`): a smaller model with the stripped model's logits.

The references do not use the pass: the unshrunk stripped model (which
tests/models/test_network.py pins to the network), constants computed here with
NumPy from the layers' weights, and MACs counted by hand.
"""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.networks import EVERY_OP
from tfvnas import data as data_lib
from tfvnas.compress import channel_plan, macs, shrinking
from tfvnas.compress import strip as strip_lib
from tfvnas.layers import variational
from tfvnas.models import network as network_lib
from tfvnas.models import zoo

L = keras.layers
SHAPE = (12, 12, 1)
EXAMPLE = "saved_models/example-mnist-5k/train"



@pytest.fixture(scope="module")
def test_images():
    """The 1,000 test images of mnist-5k at 12x12 (2-pixel crop, 2x2 mean)."""
    x = data_lib.load("mnist-5k").x_test[:, 2:26, 2:26, :].astype(np.float32)
    return np.round(x.reshape(len(x), 12, 2, 12, 2, 1).mean(axis=(2, 4)))


def _kill(net, seed, dead=0.4, sparsity=0.5, whole=0.1):
    """Random weights with dead channels, dead layers and random sparsity; random BN statistics.

    A weight is zero at inference when `log_sigma2 - log(theta^2) >= threshold`:
    `log_sigma2 = 20` kills it, `-20` keeps it. Depthwise kernels lose whole
    channels, 1x1 and dense kernels whole rows and columns, and a `whole`
    share of the layers every weight.
    """
    rng = np.random.default_rng(seed)
    for layer in variational.variational_layers(net):
        shape = tuple(layer.theta.shape)
        log_sigma2 = np.where(rng.random(shape) < sparsity, 20.0, -20.0)
        if rng.random() < whole:
            log_sigma2[...] = 20.0
        elif isinstance(layer, variational.VariationalDepthwiseConv2D):
            log_sigma2[:, :, rng.random(shape[2]) < dead, :] = 20.0
        elif isinstance(layer, variational.VariationalConv2D):
            log_sigma2[..., rng.random(shape[-1]) < dead / 2] = 20.0
            log_sigma2[:, :, rng.random(shape[2]) < dead / 2, :] = 20.0
        else:
            log_sigma2[rng.random(shape[0]) < dead, :] = 20.0
        layer.theta.assign(rng.normal(0.0, 0.5, shape).astype("float32"))
        layer.log_sigma2.assign(log_sigma2.astype("float32"))
    for v in net.variables:
        if v.path.endswith("moving_variance"):
            v.assign(rng.uniform(0.5, 2.0, v.shape).astype("float32"))
        elif v.path.endswith(("moving_mean", "gamma", "beta")):
            v.assign(rng.normal(0.3, 0.5, v.shape).astype("float32"))


def _network(genotype, channels, seed, auxiliary=False):
    net = network_lib.Network(10, genotype, layers=3, channels=channels, auxiliary=auxiliary,
                              normalisation=((33.0,), (78.0,)), seed=seed)
    net.build((None,) + SHAPE)
    _kill(net, seed, whole=0.3 if seed % 3 == 0 else 0.1)
    return net


def _assert_same_logits(expected, actual):
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5 * scale)


def _depthwise_channels(model):
    """(all, all-zero) depthwise channels of a model."""
    total = dead = 0
    for layer in model.layers:
        if isinstance(layer, L.DepthwiseConv2D):
            kernel = layer.get_weights()[0]
            total += kernel.shape[2]
            dead += int(np.sum(~np.any(kernel != 0, axis=(0, 1, 3))))
    return total, dead


CELLS = [(name, zoo.load_genotype(name)) for name in zoo.zoo_names()] + [("every_op", EVERY_OP)]


@pytest.mark.parametrize("name,genotype", CELLS, ids=[c[0] for c in CELLS])
@pytest.mark.parametrize("channels,seed", [(4, 0), (8, 1)])
def test_shrunk_cells_compute_the_stripped_logits(name, genotype, channels, seed, test_images):
    # Seed 0: an auxiliary head (training only, not stripped) and more dead layers.
    net = _network(genotype, channels, seed, auxiliary=seed == 0)
    stripped = strip_lib.strip(net, shrink=False)
    shrunk = shrinking.shrink(stripped)
    strip_lib.check_standard_layers(shrunk)
    x = test_images[:32]
    _assert_same_logits(stripped(x).numpy(), shrunk(x).numpy())
    # The whole test split, and inside a tf.function.
    full, again = stripped(test_images).numpy(), tf.function(shrunk)(tf.constant(test_images)).numpy()
    _assert_same_logits(full, again)
    assert np.array_equal(full.argmax(1), again.argmax(1))
    assert macs.count_macs(shrunk)["total"] < macs.count_macs(stripped)["total"]
    assert _depthwise_channels(shrunk)[1] < _depthwise_channels(stripped)[1]
    # The default strip is the shrunk one.
    assert [l.name for l in strip_lib.strip(net).layers] == [l.name for l in shrunk.layers]


def test_a_cell_can_die_whole(test_images):
    # Every convolution dead: the logits are a constant.
    net = _network(EVERY_OP, 4, 5)
    for layer in variational.variational_layers(net):
        if not isinstance(layer, variational.VariationalDense):
            layer.log_sigma2.assign(np.full(layer.theta.shape, 20.0, np.float32))
    stripped = strip_lib.strip(net, shrink=False)
    shrunk = shrinking.shrink(stripped)
    _assert_same_logits(stripped(test_images[:16]).numpy(), shrunk(test_images[:16]).numpy())
    # What is left is one channel along one path (each layer needs an input).
    assert macs.count_macs(shrunk)["total"] < 0.05 * macs.count_macs(stripped)["total"]
    assert len(shrunk.layers) < len(stripped.layers) / 2


def test_trained_example_shrinks_without_changing_a_prediction():
    from tfvnas.exporting import load_trained

    network, _ = load_trained(EXAMPLE)
    stripped = strip_lib.strip(network, shrink=False)
    shrunk = strip_lib.strip(network)
    x = data_lib.load("mnist-5k").x_test.astype(np.float32)
    expected, actual = stripped.predict(x, verbose=0), shrunk.predict(x, verbose=0)
    _assert_same_logits(expected[:256], actual[:256])
    assert np.array_equal(expected.argmax(1), actual.argmax(1))  # all 1,000 test images
    before, after = macs.count_macs(stripped)["total"], macs.count_macs(shrunk)["total"]
    assert before / after > 1.3  # 14.47 M -> 10.86 M MACs when this was written
    total, dead = _depthwise_channels(stripped)
    assert (total, dead) == (880, 625)
    assert _depthwise_channels(shrunk)[0] < 0.7 * total


# ---------------------------------------------------------------------------
# Small functional models, one rule each


def _random(shape, rng, zero=None):
    w = rng.normal(0.0, 0.5, shape).astype(np.float32)
    if zero is not None:
        w[zero] = 0.0
    return w


def _batch_norm(layer, rng, beta=None):
    c = layer.get_weights()[0].shape[0]
    gamma, mean = rng.uniform(0.5, 1.5, c), rng.normal(0.0, 0.5, c)
    var, b = rng.uniform(0.5, 2.0, c), rng.normal(0.0, 0.5, c) if beta is None else np.asarray(beta, float)
    layer.set_weights([gamma.astype(np.float32), b.astype(np.float32), mean.astype(np.float32),
                       var.astype(np.float32)])


def _affine(layer):
    gamma, beta, mean, var = (w.astype(np.float64) for w in layer.get_weights())
    a = gamma / np.sqrt(var + layer.epsilon)
    return a, beta - mean * a


def _head(x):
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return L.Dense(3, name="logits")(x)


def _check(model, x=None, **kwargs):
    x = np.random.default_rng(1).normal(0.0, 1.0, (4,) + tuple(model.inputs[0].shape[1:])) if x is None else x
    shrunk = shrinking.shrink(model, **kwargs)
    _assert_same_logits(model(x).numpy(), shrunk(x).numpy())
    strip_lib.check_standard_layers(shrunk)
    return shrunk


def _layer(model, name):
    return next((l for l in model.layers if l.name == name), None)


def _stem(inputs, channels, zero_columns, rng, beta=None, name="a"):
    conv = L.Conv2D(channels, 1, use_bias=False, name=f"conv_{name}")
    bn = L.BatchNormalization(name=f"bn_{name}")
    y = bn(conv(inputs))
    conv.set_weights([_random(conv.get_weights()[0].shape, rng, (..., zero_columns))])
    _batch_norm(bn, rng, beta)
    return y, conv, bn


def test_a_dead_depthwise_channel_goes_with_everything_that_only_serves_it():
    rng = np.random.default_rng(0)
    inputs = keras.Input((6, 6, 2))
    x, _, _ = _stem(inputs, 4, [], rng)
    x = L.ReLU(name="relu")(x)
    dw = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")
    x = dw(x)
    dw.set_weights([_random((3, 3, 4, 1), rng, (slice(None), slice(None), [1, 3]))])
    pw = L.Conv2D(5, 1, use_bias=False, name="pw")
    x = pw(x)
    pw.set_weights([_random((1, 1, 4, 5), rng)])
    model = keras.Model(inputs, _head(x))
    shrunk = _check(model)
    assert _layer(shrunk, "dw").get_weights()[0].shape == (3, 3, 2, 1)
    assert _layer(shrunk, "pw").get_weights()[0].shape == (1, 1, 2, 5)
    assert _layer(shrunk, "conv_a").get_weights()[0].shape == (1, 1, 2, 2)
    assert _layer(shrunk, "bn_a").get_weights()[0].shape == (2,)
    np.testing.assert_array_equal(_layer(shrunk, "dw").get_weights()[0], dw.get_weights()[0][:, :, [0, 2]])


def test_a_constant_channel_folds_into_the_bias_of_a_1x1_convolution():
    rng = np.random.default_rng(1)
    inputs = keras.Input((6, 6, 2))
    x, _, bn = _stem(inputs, 3, [2], rng, beta=[0.1, -0.2, 1.5])
    x = L.ReLU(name="relu")(x)
    pw = L.Conv2D(4, 1, use_bias=False, name="pw")
    x = pw(x)
    pw.set_weights([_random((1, 1, 3, 4), rng)])
    model = keras.Model(inputs, _head(x))
    shrunk = _check(model)
    new = _layer(shrunk, "pw")
    assert new.use_bias and new.get_weights()[0].shape == (1, 1, 2, 4)
    a, b = _affine(bn)
    constant = max(b[2], 0.0)  # BN of the zero column, through ReLU
    np.testing.assert_allclose(new.get_weights()[1], constant * pw.get_weights()[0][0, 0, 2], rtol=1e-6)
    assert _layer(shrunk, "conv_a").get_weights()[0].shape == (1, 1, 2, 2)


@pytest.mark.parametrize("centre_only", [False, True])
def test_a_constant_into_a_kxk_depthwise_kernel_is_kept_unless_only_the_centre_reads_it(centre_only):
    rng = np.random.default_rng(2)
    inputs = keras.Input((6, 6, 2))
    x, _, _ = _stem(inputs, 3, [2], rng, beta=[0.1, -0.2, 1.5])
    r = L.ReLU(name="relu")(x)
    dw = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")
    x = dw(r)
    kernel = _random((3, 3, 3, 1), rng)
    if centre_only:
        centre = kernel[1, 1, 2, 0]
        kernel[:, :, 2, 0] = 0.0
        kernel[1, 1, 2, 0] = centre
    dw.set_weights([kernel])
    pw = L.Conv2D(4, 1, use_bias=False, name="pw")
    x = pw(x)
    pw.set_weights([_random((1, 1, 3, 4), rng)])
    model = keras.Model(inputs, _head(x))
    probe = keras.Model(inputs, dw.output)(np.ones((1, 6, 6, 2), np.float32)).numpy()[0, :, :, 2]
    # Zero padding: the constant channel's depthwise output differs at the border ...
    assert np.ptp(probe) == 0 if centre_only else np.ptp(probe) > 0.1
    shrunk = _check(model)
    # ... so the channel is computed, unless the kernel never reads the padding.
    assert _layer(shrunk, "dw").get_weights()[0].shape[2] == (2 if centre_only else 3)
    assert _layer(shrunk, "pw").use_bias == centre_only


@pytest.mark.parametrize("padded", [False, True])
def test_zero_padding_breaks_constancy_in_a_factorized_reduce(padded):
    rng = np.random.default_rng(3)
    inputs = keras.Input((6, 6, 2))
    x, _, _ = _stem(inputs, 2, [1], rng, beta=[0.2, 1.0])
    x = L.ReLU(name="relu")(x)
    if padded:
        x = L.ZeroPadding2D(((0, 1), (0, 1)), name="shift")(x)
        x = L.Cropping2D(((1, 0), (1, 0)), name="crop")(x)
    conv = L.Conv2D(3, 1, strides=2, use_bias=False, name="conv_b")
    x = conv(x)
    conv.set_weights([_random((1, 1, 2, 3), rng)])
    shrunk = _check(keras.Model(inputs, _head(x)))
    # Shifted, the constant channel is 0 at the far edge: conv_b reads it.
    assert _layer(shrunk, "conv_b").get_weights()[0].shape[2] == (2 if padded else 1)


@pytest.mark.parametrize("pool", [L.AveragePooling2D, L.MaxPooling2D])
def test_pooling_of_a_constant_is_that_constant(pool):
    rng = np.random.default_rng(4)
    inputs = keras.Input((6, 6, 2))
    x, _, _ = _stem(inputs, 3, [0], rng, beta=[-1.0, 0.5, 0.5])
    x = pool(3, strides=2, padding="same", name="pool")(x)
    conv = L.Conv2D(2, 1, use_bias=False, name="conv_b")
    x = conv(x)
    conv.set_weights([_random((1, 1, 3, 2), rng)])
    shrunk = _check(keras.Model(inputs, _head(x)))
    assert _layer(shrunk, "conv_b").get_weights()[0].shape[2] == 2 and _layer(shrunk, "conv_b").use_bias


def _edge(x, rng, name, dead=False):
    r = L.ReLU(name=f"{name}_relu")(x)
    dw = L.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_dw")
    pw = L.Conv2D(4, 1, use_bias=False, name=f"{name}_pw")
    bn = L.BatchNormalization(name=f"{name}_bn")
    y = bn(pw(dw(r)))
    dw.set_weights([_random((3, 3, 4, 1), rng)])
    pw.set_weights([np.zeros((1, 1, 4, 4), np.float32) if dead else _random((1, 1, 4, 4), rng)])
    _batch_norm(bn, rng)
    return y, bn


def _after_node(node, rng, after):
    if after == "bn":  # a batch normalisation: it absorbs the offset in its moving mean
        bn = L.BatchNormalization(name="out_bn")
        y = bn(node)
        _batch_norm(bn, rng)
        return y
    if after == "relu":  # a ReLU and a 3x3 convolution: the node's value must be exact
        node = L.ReLU(name="node_relu")(node)
        conv = L.Conv2D(3, 3, padding="same", use_bias=False, name="out_conv")
    else:  # a 1x1 convolution: it absorbs the offset in a bias
        conv = L.Conv2D(3, 1, use_bias=False, name="out_conv")
    y = conv(node)
    conv.set_weights([_random(conv.get_weights()[0].shape, rng)])
    return y


@pytest.mark.parametrize("after", ["relu", "conv", "bn"])
def test_a_dead_edge_leaves_the_sum_and_its_constant_is_folded(after):
    rng = np.random.default_rng(5)
    inputs = keras.Input((6, 6, 2))
    state, _, _ = _stem(inputs, 4, [], rng)
    live, live_bn = _edge(state, rng, "live")
    dead, dead_bn = _edge(state, rng, "dead", dead=True)
    node = L.Add(name="node")([live, dead])
    model = keras.Model(inputs, _head(_after_node(node, rng, after)))
    shrunk = _check(model)
    names = [l.name for l in shrunk.layers]
    assert not [n for n in names if n.startswith("dead") or n == "node"], names
    assert not [n for n in names if n.endswith("_offset")], names
    _, constant = _affine(dead_bn)  # the dead edge outputs BN(0)
    beta = _layer(shrunk, "live_bn").get_weights()[1] - live_bn.get_weights()[1]
    if after == "relu":  # added into the live edge's batch normalisation: beta + constant
        np.testing.assert_allclose(beta, constant, rtol=1e-6, atol=1e-6)
    elif after == "conv":  # absorbed by the 1x1 convolution after the sum
        expected = constant @ model.get_layer("out_conv").get_weights()[0][0, 0]
        np.testing.assert_allclose(_layer(shrunk, "out_conv").get_weights()[1], expected, rtol=1e-6, atol=1e-6)
    else:  # absorbed by the batch normalisation after the sum: its mean moves down
        mean = model.get_layer("out_bn").get_weights()[2] - constant
        np.testing.assert_allclose(_layer(shrunk, "out_bn").get_weights()[2], mean, rtol=1e-6, atol=1e-6)
    if after != "relu":
        np.testing.assert_array_equal(beta, 0.0)


def test_an_offset_no_layer_can_take_gets_a_rescaling():
    # The live input of the sum is a pooling of a tensor another layer reads:
    # the dead edge's constant cannot move into a layer, so a Rescaling adds it.
    rng = np.random.default_rng(6)
    inputs = keras.Input((6, 6, 2))
    state, _, _ = _stem(inputs, 4, [], rng)
    pooled = L.AveragePooling2D(3, strides=1, padding="same", name="pool")(state)
    dead, dead_bn = _edge(state, rng, "dead", dead=True)
    other, _ = _edge(state, rng, "other")
    node = L.Add(name="node")([pooled, dead])
    out = L.Concatenate(name="concat")([_after_node(node, rng, "relu"), other])
    model = keras.Model(inputs, _head(out))
    shrunk = _check(model)
    offset = _layer(shrunk, "node_offset")
    assert isinstance(offset, L.Rescaling)
    np.testing.assert_allclose(offset.get_config()["offset"], _affine(dead_bn)[1], rtol=1e-6, atol=1e-6)


def test_a_selection_feeds_a_depthwise_layer_the_channels_it_needs():
    rng = np.random.default_rng(7)
    inputs = keras.Input((8, 8, 2))
    state, _, _ = _stem(inputs, 16, [], rng)
    r = L.ReLU(name="e_relu")(state)
    dw = L.DepthwiseConv2D(5, padding="same", use_bias=False, name="e_dw")
    kernel = _random((5, 5, 16, 1), rng)
    kernel[:, :, 3:] = 0.0  # 3 live channels of 16
    y = L.Conv2D(16, 1, use_bias=False, name="e_pw")(dw(r))
    dw.set_weights([kernel])
    node = L.Add(name="node")([L.MaxPooling2D(3, 1, padding="same", name="pool")(state), y])
    model = keras.Model(inputs, _head(node))
    with_select = _check(model)
    selection = _layer(with_select, "e_relu_select")
    assert isinstance(selection, L.Conv2D) and selection.get_weights()[0].shape == (1, 1, 16, 3)
    np.testing.assert_array_equal(selection.get_weights()[0][0, 0], np.eye(16)[:, :3])
    assert _layer(with_select, "e_dw").get_weights()[0].shape[2] == 3
    without = _check(model, select=False)
    assert _layer(without, "e_relu_select") is None and _layer(without, "e_dw").get_weights()[0].shape[2] == 16
    assert macs.count_macs(with_select)["total"] < macs.count_macs(without)["total"]


def test_an_unknown_layer_is_kept_whole():
    rng = np.random.default_rng(8)
    inputs = keras.Input((6, 6, 2))
    x, _, _ = _stem(inputs, 3, [1], rng)
    x = L.Activation("sigmoid", name="squash")(x)
    conv = L.Conv2D(2, 1, use_bias=False, name="conv_b")
    x = conv(x)
    conv.set_weights([_random((1, 1, 3, 2), rng)])
    shrunk = _check(keras.Model(inputs, _head(x)))
    assert _layer(shrunk, "squash").output.shape[-1] == 3
    assert _layer(shrunk, "conv_a").get_weights()[0].shape == (1, 1, 2, 3)


def test_the_shrunk_model_saves_loads_and_rebuilds_in_tf_keras(tmp_path):
    from tfvnas.exporting import qat

    shrunk = shrinking.shrink(strip_lib.strip(_network(EVERY_OP, 4, 1), shrink=False))
    x = np.random.default_rng(0).uniform(0, 255, (4,) + SHAPE).astype(np.float32)
    expected = shrunk(x).numpy()
    shrunk.save(tmp_path / "m.keras")
    np.testing.assert_array_equal(keras.models.load_model(tmp_path / "m.keras")(x).numpy(), expected)
    np.testing.assert_allclose(qat.to_tf_keras(shrunk)(x, training=False).numpy(), expected, atol=1e-5)


def test_shrink_summary_says_what_went():
    rng = np.random.default_rng(9)
    inputs = keras.Input((6, 6, 2))
    state, _, _ = _stem(inputs, 4, [], rng)
    live, _ = _edge(state, rng, "live")
    dead, _ = _edge(state, rng, "dead", dead=True)
    model = keras.Model(inputs, _head(_after_node(L.Add(name="node")([live, dead]), rng, "conv")))
    shrunk = shrinking.shrink(model)
    summary = shrinking.shrink_summary(model, shrunk)
    assert summary["macs"]["before"] == macs.count_macs(model)["total"]
    assert summary["macs"]["ratio"] == pytest.approx(summary["macs"]["before"] / summary["macs"]["after"])
    assert summary["layers"]["removed"] == ["dead_relu", "dead_dw", "dead_pw", "dead_bn", "node"]
    assert summary["layers"]["added"] == []
    assert summary["biases_added"] == ["out_conv"]
    assert summary["channels"]["DepthwiseConv2D"] == {"before": 8, "after": 4}
    assert summary["parameters"]["after"]["dense"] < summary["parameters"]["before"]["dense"]


def test_count_macs_by_hand():
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, strides=2, padding="same", name="conv")(inputs)  # 4x4 out
    x = L.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(x)
    x = L.MaxPooling2D(name="pool")(L.BatchNormalization(name="bn")(x))  # 2x2 out, no MACs
    x = L.Conv2D(6, 1, groups=2, name="grouped")(x)
    x = L.Dense(5, name="per_pixel")(x)
    x = L.Dense(2, name="fc")(L.GlobalAveragePooling2D(name="gap")(x))
    counted = macs.count_macs(keras.Model(inputs, x))
    expected = {"conv": 16 * 9 * 3 * 4, "dw": 16 * 9 * 4 * 2, "grouped": 4 * 8 * 6 // 2,
                "per_pixel": 4 * 6 * 5, "fc": 5 * 2}
    assert {r["name"]: r["macs"] for r in counted["layers"]} == expected
    assert counted["total"] == sum(expected.values())
    with pytest.raises(ValueError, match=re.escape(
            "`layer_type` must be one of Conv2D, DepthwiseConv2D, Dense. Received: layer_type='ReLU'")):
        macs.kernel_macs("ReLU", (2, 2, 3), (3,))


def test_shrink_rejects_what_it_cannot_walk():
    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match=r"^`model` must be a functional Keras model\. Received: model="):
        shrinking.shrink(Subclassed())
    a, b = keras.Input((4,)), keras.Input((4,))
    with pytest.raises(ValueError, match=re.escape(
            "`model` must have one input and one output. Received: 2 inputs, 1 outputs")):
        shrinking.shrink(keras.Model([a, b], L.Add()([a, b])))
    shared = L.Dense(4, name="shared")
    with pytest.raises(ValueError, match=re.escape(
            "`model` must call each layer once. Received: layer 'shared' is called 2 times")):
        shrinking.shrink(keras.Model(a, shared(shared(a))))
    with pytest.raises(ValueError, match=re.escape(
            "`min_select_gain` must be a number in [0, 1]. Received: min_select_gain=2")):
        shrinking.shrink(keras.Model(a, L.Dense(2)(a)), min_select_gain=2)
    with pytest.raises(ValueError, match=re.escape("`select` must be a bool. Received: select='no'")):
        channel_plan.plan_channels(keras.Model(a, L.Dense(2)(a)), select="no")
    with pytest.raises(ValueError, match=re.escape("`shrink` must be a bool. Received: shrink=1")):
        strip_lib.strip(_network(EVERY_OP, 4, 1), shrink=1)


def test_show_draws_the_per_layer_sparsity_of_a_shrunk_network(tmp_path):
    # Training records the layer sparsity of the (now shrunk) stripped network.
    import json

    from tfvnas.compress import counting
    from tfvnas.pictures import plots

    shrunk = strip_lib.strip(_network(EVERY_OP, 4, 1))
    counts = counting.count_parameters(shrunk)
    history = tmp_path / "train_history.json"
    history.write_text(json.dumps({"layer_sparsity": counts["layers"]}))
    shown = plots.show(str(history), out_dir=str(tmp_path / "pictures"), formats=("svg",), verbose=False)
    assert [p.endswith("sparsity.svg") for p in shown["files"]] == [True]
    assert (f"{len(counts['layers'])} layers, {counts['kernel_nonzero']:,} of {counts['kernel_dense']:,} "
            "weights non-zero") in shown["summary"]
