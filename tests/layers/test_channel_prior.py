"""The channel-group ARD prior (`channel_prior=True`) against NumPy, the closed-form KL and Keras.

Shapes are tiny. The references: NumPy convolutions and KLs, standard Keras
layers with the folded kernels, the network's own inference outputs (for
strip), and the unshrunk stripped model (for shrink).
"""

import json
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.keras_config import assert_config_round_trip
from tests.helpers.modes import MODES, run_in_mode
from tests.helpers.networks import EVERY_OP, SHAPE, digits, scramble
from tests.helpers.variational import np_kl, np_same_conv, random_theta
from tfvnas import config
from tfvnas.compress import macs
from tfvnas.compress import strip as strip_lib
from tfvnas.layers import channel_prior
from tfvnas.layers import variational as vd
from tfvnas.models import network as network_lib

THRESHOLD = 3.0


def _layer(kind, **kwargs):
    """(layer, input shape, channel axis of the output) of each kind, the channel prior on."""
    kwargs = {"channel_prior": True, "seed": 3, **kwargs}
    if kind == "conv":
        return vd.VariationalConv2D(3, 3, **kwargs), (2, 5, 5, 2)
    if kind == "conv_strided_bias":
        return vd.VariationalConv2D(3, 1, strides=2, use_bias=True, **kwargs), (2, 5, 5, 2)
    if kind == "depthwise":
        return vd.VariationalDepthwiseConv2D(3, **kwargs), (2, 5, 5, 3)
    if kind == "depthwise_strided_dilated":
        return vd.VariationalDepthwiseConv2D(3, strides=2, dilation_rate=2, **kwargs), (2, 6, 6, 3)
    if kind == "dense":
        return vd.VariationalDense(4, **kwargs), (2, 5)
    raise AssertionError(kind)


KINDS = ("conv", "conv_strided_bias", "depthwise", "depthwise_strided_dilated", "dense")


def _built(kind, rng, weight_log_sigma2=-80.0, **kwargs):
    layer, shape = _layer(kind, **kwargs)
    layer.build(shape)
    layer.theta.assign(random_theta(rng, layer.theta.shape))
    layer.log_sigma2.assign(np.full(layer.log_sigma2.shape, weight_log_sigma2, "float32"))
    if layer.use_bias:
        layer.bias.assign(rng.normal(size=layer.bias.shape).astype("float32"))
    return layer, shape


def _set_channels(layer, phi, log_sigma2):
    layer.channel_phi.assign(np.asarray(phi, "float32"))
    layer.channel_log_sigma2.assign(np.asarray(log_sigma2, "float32"))


def _np_forward(layer, x, kernel):
    """The layer's output in NumPy for a given kernel, before the bias."""
    if isinstance(layer, vd.VariationalDense):
        return x.astype("float64") @ kernel.astype("float64")
    depthwise = isinstance(layer, vd.VariationalDepthwiseConv2D)
    return np_same_conv(x, kernel, layer.strides, layer.dilation_rate, depthwise)


def _per_channel(layer, values):
    """`values` (one per channel) broadcast over the kernel's output-channel axis."""
    shape = [1] * len(layer.theta.shape)
    shape[2 if isinstance(layer, vd.VariationalDepthwiseConv2D) else -1] = -1
    return np.reshape(values, shape)


def _bias(layer):
    return layer.bias.numpy() if layer.use_bias else 0.0


# ---------------------------------------------------------------------------
# The layer: weights, KL, noise, inference
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_channel_scales_are_weights_of_one_per_output_channel(kind):
    layer, shape = _layer(kind, channel_log_alpha_init=-5.0, channel_scale_init=0.2)
    layer.build(shape)
    channels = {"conv": 3, "conv_strided_bias": 3, "depthwise": 3, "depthwise_strided_dilated": 3, "dense": 4}[kind]
    assert layer.channel_phi.shape == (channels,) and layer.channel_log_sigma2.shape == (channels,)
    assert {w.name for w in layer.trainable_weights} >= {"channel_phi", "channel_log_sigma2"}
    np.testing.assert_allclose(layer.channel_phi.numpy(), 0.2)
    np.testing.assert_allclose(layer.channel_log_alpha.numpy(), -5.0, atol=1e-5)
    plain, _ = _layer(kind, channel_prior=False)
    plain.build(shape)
    assert len(plain.weights) == len(layer.weights) - 2
    np.testing.assert_array_equal(plain.channel_mask().numpy(), np.ones(channels))


@pytest.mark.parametrize("kind", KINDS)
def test_kl_adds_the_closed_form_kl_of_the_channel_scales(kind):
    rng = np.random.default_rng(0)
    layer, shape = _built(kind, rng, weight_log_sigma2=-3.0, kl_scale=0.01)
    channels = layer.channel_phi.shape[0]
    phi = random_theta(rng, (channels,))
    log_sigma2 = rng.uniform(-6, 4, channels).astype("float32")
    _set_channels(layer, phi, log_sigma2)
    # 0.5 * log(1 + phi^2 / sigma^2) = 0.5 * softplus(-log_alpha), per channel.
    channel_kl = 0.5 * np.logaddexp(0.0, -(log_sigma2.astype("float64") - np.log(phi.astype("float64") ** 2)))
    np.testing.assert_allclose(channel_kl, np_kl(phi, log_sigma2), rtol=1e-9)
    expected = np_kl(layer.theta.numpy(), layer.log_sigma2.numpy()).sum() + channel_kl.sum()
    assert float(layer.kl()) == pytest.approx(expected, rel=1e-5)
    x = rng.normal(size=shape).astype("float32")
    for training in (True, False):
        layer(x, training=training)
        assert len(layer.losses) == 1
        assert float(layer.losses[0]) == pytest.approx(0.01 * expected, rel=1e-5)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ("conv", "depthwise_strided_dilated", "dense"))
def test_training_multiplies_each_channel_by_one_draw_per_example(kind, mode):
    """With exact weights, out / conv(x, theta) is one value per (example, channel): s ~ N(phi, sigma^2)."""
    rng = np.random.default_rng(1)
    layer, shape = _built(kind, rng)
    channels = layer.channel_phi.shape[0]
    phi = rng.uniform(0.5, 1.5, channels).astype("float32")
    sigma = rng.uniform(0.1, 0.4, channels).astype("float32")
    _set_channels(layer, phi, 2 * np.log(sigma))
    # Positive inputs and means keep the reference away from zero, so the
    # LRT's numerical floor (1e-4 noise per element) is negligible.
    layer.theta.assign(np.abs(layer.theta.numpy()))
    copies = 2000
    x = np.tile(np.abs(np.random.default_rng(2).normal(size=(1,) + shape[1:])).astype("float32") + 0.5,
                (copies,) + (1,) * (len(shape) - 1))
    mean = _np_forward(layer, x[:1], layer.theta.numpy())
    out = run_in_mode(mode, lambda a: layer(a, training=True), x).astype("float64")
    ratio = (out - _bias(layer)) / mean
    # One value per example and channel: constant over the positions.
    per_example = ratio.reshape(copies, -1, channels)
    np.testing.assert_allclose(per_example, np.broadcast_to(per_example[:, :1, :], per_example.shape),
                               rtol=0, atol=2e-3)
    s = per_example[:, 0, :]
    # Monte Carlo moments of 2,000 draws: mean within 4 standard errors,
    # standard deviation within 10%.
    np.testing.assert_array_less(np.abs(s.mean(0) - phi), 4 * sigma / np.sqrt(copies))
    np.testing.assert_allclose(s.std(0), sigma, rtol=0.1)
    # Different examples and channels draw independently.
    assert abs(np.corrcoef(s[:, 0], s[:, 1])[0, 1]) < 0.1
    assert abs(np.corrcoef(s[::2, 0], s[1::2, 0])[0, 1]) < 0.1


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_zero_channel_variance_at_unit_scale_is_the_layer_without_the_prior(kind, mode):
    rng = np.random.default_rng(3)
    layer, shape = _built(kind, rng, weight_log_sigma2=-2.0)
    plain, _ = _layer(kind, channel_prior=False)
    plain.build(shape)
    channels = layer.channel_phi.shape[0]
    _set_channels(layer, np.ones(channels), np.full(channels, -400.0))  # sigma = exp(-200) = 0
    plain.set_weights([layer.theta.numpy(), layer.log_sigma2.numpy()] + ([layer.bias.numpy()] if layer.use_bias else []))
    x = rng.normal(size=shape).astype("float32")
    # The same seed: the weight noise is the same draw, and the channel
    # scale is exactly 1.
    np.testing.assert_array_equal(
        run_in_mode(mode, lambda a: layer(a, training=True), x), run_in_mode(mode, lambda a: plain(a, training=True), x))
    np.testing.assert_array_equal(layer(x).numpy(), plain(x).numpy())
    assert float(layer.kl()) > float(plain.kl())  # the channel KL is there, and large at alpha = 0


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", KINDS)
def test_inference_multiplies_by_phi_of_the_kept_channels(kind, mode):
    rng = np.random.default_rng(4)
    layer, shape = _built(kind, rng, weight_log_sigma2=-10.0)
    channels = layer.channel_phi.shape[0]
    phi = random_theta(rng, (channels,))
    pruned = np.zeros(channels, bool)
    pruned[[0, 2]] = True
    # log_alpha = log_sigma2 - log(phi^2): just above, just below and far above the threshold.
    log_alpha = np.full(channels, -6.0)
    log_alpha[:3] = [THRESHOLD + 1e-3, THRESHOLD - 1e-3, 8.0]
    _set_channels(layer, phi, log_alpha + np.log(phi.astype("float64") ** 2))
    mask = (~pruned).astype("float32")
    np.testing.assert_array_equal(layer.channel_mask().numpy(), mask)
    weight_mask = (layer.log_alpha.numpy() < THRESHOLD).astype("float32")
    np.testing.assert_array_equal(layer.kernel_mask().numpy(), weight_mask * _per_channel(layer, mask))
    folded = layer.theta.numpy() * weight_mask * _per_channel(layer, phi * mask)
    np.testing.assert_allclose(layer.masked_kernel().numpy(), folded, rtol=1e-6)
    x = rng.normal(size=shape).astype("float32")
    got = run_in_mode(mode, lambda a: layer(a, training=False), x)
    want = _np_forward(layer, x, folded) + _bias(layer)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # A pruned channel computes exactly its bias; a kept one is phi times the masked-weight output.
    bias = np.broadcast_to(_bias(layer), (channels,))
    out = got.reshape(-1, channels) - bias
    np.testing.assert_array_equal(out[:, pruned], 0.0)
    unscaled = _np_forward(layer, x, layer.theta.numpy() * weight_mask).reshape(-1, channels)
    np.testing.assert_allclose(out[:, ~pruned], unscaled[:, ~pruned] * phi[~pruned], rtol=1e-4, atol=1e-5)


def test_config_json_round_trip_keeps_the_channel_prior():
    rng = np.random.default_rng(5)
    for kind in KINDS:
        layer, shape = _built(kind, rng, weight_log_sigma2=-3.0, channel_log_alpha_init=-2.5,
                              channel_scale_init=0.3, name=f"v_{kind}")
        channels = layer.channel_phi.shape[0]
        _set_channels(layer, random_theta(rng, (channels,)), rng.uniform(-4, 6, channels))
        config = json.loads(json.dumps(layer.get_config()))
        assert (config["channel_prior"], config["channel_log_alpha_init"], config["channel_scale_init"]) == (
            True, -2.5, 0.3)
        x = rng.normal(size=shape).astype("float32")
        rebuilt = assert_config_round_trip(layer, x)
        for training in (True, False):  # the seed is in the config: the same noise
            np.testing.assert_array_equal(rebuilt(x, training=training).numpy(), layer(x, training=training).numpy())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"channel_prior": 1}, "`channel_prior` must be a bool. Received: channel_prior=1"),
        ({"channel_scale_init": 0.0}, "`channel_scale_init` must be a positive number. Received: channel_scale_init=0.0"),
        ({"channel_scale_init": True}, "`channel_scale_init` must be a positive number. Received: channel_scale_init=True"),
        ({"channel_log_alpha_init": "low"},
         "`channel_log_alpha_init` must be a number. Received: channel_log_alpha_init='low'"),
        ({"channel_log_alpha_init": float("nan")},
         "`channel_log_alpha_init` must be a number. Received: channel_log_alpha_init=nan"),
    ],
)
def test_invalid_channel_prior_arguments_raise_keras_style_errors(kwargs, message):
    for make in (lambda: vd.VariationalConv2D(2, 3, **kwargs), lambda: vd.VariationalDepthwiseConv2D(3, **kwargs),
                 lambda: vd.VariationalDense(2, **kwargs)):
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            make()


# ---------------------------------------------------------------------------
# The network: configuration, strip, shrink, training
# ---------------------------------------------------------------------------


def _network(**kwargs):
    kwargs = {"layers": 3, "channels": 4, "normalisation": ((33.0,), (78.0,)), "channel_prior": True, **kwargs}
    net = network_lib.Network(10, EVERY_OP, **kwargs)
    net.build((None,) + SHAPE)
    return net


def _prune_channels(net, share, seed):
    """Gives a `share` of every layer's channel scales a log_alpha far above the threshold."""
    rng = np.random.default_rng(seed)
    for layer in channel_prior.channel_prior_layers(net):
        c = layer.channel_phi.shape[0]
        phi = random_theta(rng, (c,))
        la = np.where(rng.random(c) < share, 8.0, rng.uniform(-6.0, 2.0, c))
        _set_channels(layer, phi, la + np.log(phi.astype("float64") ** 2))


@pytest.fixture(scope="module")
def images():
    return (np.random.default_rng(1).random((5,) + SHAPE) * 255).astype("float32")


def test_network_puts_the_prior_on_every_convolution_and_not_the_classifier():
    net = _network(channel_log_alpha_init=-3.0, channel_scale_init=0.5)
    layers = channel_prior.channel_prior_layers(net)
    convs = [l for l in vd.variational_layers(net) if not isinstance(l, vd.VariationalDense)]
    assert layers == convs and len(layers) > 10
    assert not net.classifier.channel_prior
    assert all(l.channel_scale_init == 0.5 and l.channel_log_alpha_init == -3.0 for l in layers)
    assert channel_prior.channel_sparsity(net) == (0, sum(l.channel_phi.shape[0] for l in layers))
    plain = network_lib.Network(10, EVERY_OP, layers=3, channels=4)
    assert channel_prior.channel_prior_layers(plain) == []
    with pytest.raises(ValueError, match=re.escape(
            "`channel_prior` needs variational weights. Received: channel_prior=True, weight_vd=False")):
        network_lib.Network(10, EVERY_OP, layers=3, channels=4, weight_vd=False, channel_prior=True)
    # The options reach every variational layer through the constructors: in each layer's own config.
    assert all(l.get_config()["channel_prior"] is True and l.get_config()["channel_scale_init"] == 0.5
               for l in layers)
    threshold = network_lib.Network(10, EVERY_OP, layers=3, channels=4, threshold=2.5)
    assert {l.get_config()["threshold"] for l in vd.variational_layers(threshold)} == {2.5}


def test_network_config_round_trip_keeps_the_prior(images):
    net = _network(channel_scale_init=0.2)
    scramble(net)
    _prune_channels(net, 0.3, seed=2)
    config = json.loads(json.dumps(net.get_config()))
    assert config["channel_prior"] is True and config["channel_scale_init"] == 0.2
    assert_config_round_trip(net, images)


def test_channel_sparsity_and_decay_exclusions():
    net = _network()
    _prune_channels(net, 0.5, seed=3)
    layers = channel_prior.channel_prior_layers(net)
    pruned = sum(int(np.sum(l.channel_log_alpha.numpy() >= THRESHOLD)) for l in layers)
    assert channel_prior.channel_sparsity(net) == (pruned, sum(l.channel_phi.shape[0] for l in layers))
    assert 0 < pruned
    ids = {id(v) for v in channel_prior.decay_exclusions(net)}
    assert ids == {id(v) for l in layers for v in (l.channel_phi, l.channel_log_sigma2)}
    # A weight in a pruned channel counts as pruned.
    weights_pruned, _ = vd.weight_sparsity(net)
    assert weights_pruned >= sum(int(np.sum(1 - l.kernel_mask().numpy())) for l in layers) > 0


@pytest.mark.parametrize("shrink", [False, True])
def test_strip_folds_the_channel_scales_and_matches_inference(images, shrink):
    net = _network()
    scramble(net)
    _prune_channels(net, 0.3, seed=4)
    stripped = strip_lib.strip(net, shrink=shrink)
    strip_lib.check_standard_layers(stripped)
    expected = net(images, training=False).numpy()
    np.testing.assert_allclose(stripped(images).numpy(), expected, rtol=1e-5, atol=1e-5)
    # Inference differs from the unfolded kernels: the scales are not all 1.
    assert not np.allclose(expected, _network_without_scales(net)(images, training=False).numpy(), atol=1e-3)


def _network_without_scales(net):
    """The same network with every channel scale 1 and kept."""
    clone = network_lib.Network.from_config(net.get_config())
    clone.build((None,) + SHAPE)
    clone.set_weights(net.get_weights())
    for layer in channel_prior.channel_prior_layers(clone):
        c = layer.channel_phi.shape[0]
        _set_channels(layer, np.ones(c), np.full(c, -10.0))
    return clone


def test_pruned_channel_groups_become_dead_channels_that_shrink_removes(images):
    net = _network()
    scramble(net)
    # The weights alone: every channel kept, log_sigma2 of the weights low so
    # no column is zero by chance.
    for layer in vd.variational_layers(net):
        layer.log_sigma2.assign(np.full(layer.log_sigma2.shape, -12.0, "float32"))
    kept_all = _network_without_scales(net)
    _prune_channels(net, 0.5, seed=5)
    stem = net.stem[0]
    dead_stem = int(np.sum(stem.channel_mask().numpy() == 0))
    assert dead_stem > 0
    unshrunk = strip_lib.strip(net, shrink=False)
    kernel = unshrunk.get_layer("stem_0").kernel.numpy()
    np.testing.assert_array_equal(np.flatnonzero(~np.any(kernel != 0, axis=(0, 1, 2))),
                                  np.flatnonzero(stem.channel_mask().numpy() == 0))
    shrunk = strip_lib.strip(net)
    # A dead stem channel feeds only 1x1 convolutions (the cells'
    # preprocessing), which fold its constant: it is gone.
    assert shrunk.get_layer("stem_0").kernel.shape[-1] == stem.filters - dead_stem
    np.testing.assert_allclose(shrunk(images).numpy(), net(images, training=False).numpy(), rtol=1e-5, atol=1e-5)
    total = macs.count_macs(unshrunk)["total"]
    assert macs.count_macs(strip_lib.strip(kept_all))["total"] > 0.95 * total  # nothing to remove without it
    assert macs.count_macs(shrunk)["total"] < 0.6 * total


def test_a_train_config_file_sets_the_channel_prior(tmp_path):

    path = tmp_path / "prior.json"
    path.write_text('{"channel_prior": true, "channel_scale_init": 0.05}')
    cfg = config.settle(config.TrainConfig, preset="quick", config=str(path))
    assert cfg.channel_prior and cfg.channel_scale_init == 0.05
    assert cfg.channels == config.TRAIN_PRESETS["quick"].channels


def test_training_config_reaches_the_network_and_the_optimizer():
    from tfvnas import data as data_lib
    from tfvnas.loops import training

    cfg = config.TrainConfig(layers=3, channels=4, epochs=1, batch_size=8, limit=16, channel_prior=True,
                             channel_log_alpha_init=-2.0, channel_scale_init=0.25)
    again = config.TrainConfig.from_dict(json.loads(cfg.to_json()))
    assert again == cfg and again.channel_prior and again.channel_scale_init == 0.25
    assert config.TrainConfig().channel_prior is False
    with pytest.raises(ValueError, match=re.escape(
            "`channel_scale_init` must be positive. Received: channel_scale_init=0.0")):
        config.TrainConfig(channel_scale_init=0.0)
    with pytest.raises(ValueError, match=re.escape(
            "`channel_prior` needs `weight_vd`. Received: channel_prior=True, weight_vd=False")):
        config.TrainConfig(channel_prior=True, weight_vd=False)
    ds = data_lib.load("mnist-5k").resized(12)
    trainer = training.Trainer(EVERY_OP, cfg, ds, verbose=0)
    trainer.training_parts()
    model = trainer.build_model()
    layers = channel_prior.channel_prior_layers(model)
    assert layers and all(l.channel_scale_init == 0.25 and l.channel_log_alpha_init == -2.0 for l in layers)
    # Weight decay skips the channel scales: a step with zero gradients
    # shrinks a batch-norm gamma, and leaves them as they are.
    trainer.model = model
    optimizer, variables = trainer.build_optimizers(total_steps=2)["optimizer"]
    optimizer.build(variables)
    before = [v.numpy().copy() for v in variables]
    optimizer.apply([tf.zeros_like(v) for v in variables])
    changed = {v.path for v, b in zip(variables, before) if not np.array_equal(v.numpy(), b)}
    assert any(path.endswith("gamma") for path in changed)
    scales = {v.path for l in layers for v in (l.channel_phi, l.channel_log_sigma2)}
    assert scales and not scales & changed


def test_keras_fit_trains_the_elbo_with_the_channel_kl():
    from tfvnas.layers import variational

    x, y = digits(32)
    net = _network(kl_scale=1.0 / 256)
    scramble(net)
    _prune_channels(net, 0.3, seed=6)
    net.compile(optimizer=keras.optimizers.SGD(0.01),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    logits = net(x, training=False)
    elbo, _, kl_term = variational.elbo_loss(y, logits, tf.add_n(net.losses), global_batch_size=len(x))
    channel_kl = sum(float(tf.reduce_sum(vd.ard_kl(l.channel_phi, l.channel_log_sigma2)))
                     for l in channel_prior.channel_prior_layers(net))
    weight_kl = sum(float(tf.reduce_sum(vd.ard_kl(l.theta, l.log_sigma2))) for l in vd.variational_layers(net))
    assert float(kl_term) == pytest.approx((channel_kl + weight_kl) / 256, rel=1e-5)
    assert net.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)["loss"] == pytest.approx(
        float(elbo), rel=1e-5)
    # One step of fit moves the channel scales.
    before = [l.channel_phi.numpy().copy() for l in channel_prior.channel_prior_layers(net)]
    net.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    after = [l.channel_phi.numpy() for l in channel_prior.channel_prior_layers(net)]
    assert any(not np.array_equal(a, b) for a, b in zip(after, before))
