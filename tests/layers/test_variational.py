"""tfvnas.layers.variational against independent references (NumPy, TFP, standard Keras layers).

Shapes are tiny; every check that involves a layer call or a pure TF function
runs eagerly and under `tf.function` where that matters.
"""

import json
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tests.conftest import mirrored
from tests.helpers.keras_config import assert_config_round_trip
from tests.helpers.modes import MODES, run_in_mode
from tests.helpers.variational import np_kl, np_same_conv, random_theta
from tfvnas.layers import noise
from tfvnas.layers import variational as vd

tfd = tfp.distributions


def _rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------
# NumPy references
# ---------------------------------------------------------------------------


def _np_log_alpha(theta, log_sigma2):
    return np.asarray(log_sigma2, "float64") - np.log(np.asarray(theta, "float64") ** 2)


def _np_softplus(v):
    return np.logaddexp(0.0, v)


# ---------------------------------------------------------------------------
# 1. log_alpha and the ARD KL
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_log_alpha_matches_numpy(mode):
    rng = _rng(1)
    theta = random_theta(rng, (3, 4))
    log_sigma2 = rng.uniform(-12, 6, (3, 4)).astype("float32")
    got = run_in_mode(mode, vd.log_alpha, theta, log_sigma2)
    np.testing.assert_allclose(got, _np_log_alpha(theta, log_sigma2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_ard_kl_matches_closed_form_and_tfp(mode):
    rng = _rng(2)
    theta = np.concatenate([random_theta(rng, (10,)), [0.0, 1e-3, 3.0]]).astype("float32")
    log_sigma2 = np.concatenate([rng.uniform(-12, 6, 10), [-3.0, -80.0, 4.0]]).astype("float32")
    got = run_in_mode(mode, vd.ard_kl, theta, log_sigma2)

    closed = np_kl(theta, log_sigma2)
    np.testing.assert_allclose(got, closed, rtol=1e-5, atol=1e-6)
    # The same closed form written through log_alpha: 0.5 * softplus(-log_alpha).
    nonzero = theta != 0
    la = _np_log_alpha(theta[nonzero], log_sigma2[nonzero])
    np.testing.assert_allclose(closed[nonzero], 0.5 * _np_softplus(-la), rtol=1e-10)
    # An independent TFP computation: q = N(theta, sigma), ARD prior N(0, sqrt(theta^2 + sigma^2)).
    t64 = theta.astype("float64")
    s2 = np.exp(log_sigma2.astype("float64"))
    kl_tfp = tfd.kl_divergence(
        tfd.Normal(loc=t64, scale=np.sqrt(s2)), tfd.Normal(loc=0.0 * t64, scale=np.sqrt(t64**2 + s2))
    ).numpy()
    np.testing.assert_allclose(got, kl_tfp, rtol=1e-5, atol=1e-6)
    assert got[10] == 0.0  # theta = 0: q equals the prior.


def test_ard_kl_is_half_softplus_of_minus_library_log_alpha():
    rng = _rng(3)
    theta = random_theta(rng, (20,))
    log_sigma2 = rng.uniform(-10, 8, 20).astype("float32")
    kl = vd.ard_kl(theta, log_sigma2).numpy()
    la = vd.log_alpha(theta, log_sigma2).numpy().astype("float64")
    np.testing.assert_allclose(kl, 0.5 * _np_softplus(-la), rtol=1e-5, atol=1e-6)


def test_keep_mask_threshold_is_strict():
    la = tf.constant([2.0, 2.9999, 3.0, 3.0001, float("inf"), -float("inf")])
    np.testing.assert_array_equal(vd.keep_mask(la).numpy(), [1, 1, 0, 0, 0, 1])
    np.testing.assert_array_equal(vd.keep_mask(la, threshold=2.0).numpy(), [0, 0, 0, 0, 0, 1])
    assert vd.keep_mask(la).dtype == tf.float32


# ---------------------------------------------------------------------------
# 2. Local reparameterisation moments against Monte Carlo
# ---------------------------------------------------------------------------

N_MC = 4000
Z = 5.0  # tolerance in standard errors of the Monte-Carlo estimates


def _assert_moments(samples, mean, var):
    """Sample mean/var of `samples` (first axis) agree with `mean`/`var` within Z standard errors.

    The outputs are linear in Gaussian weights, hence Gaussian: the standard
    error of the sample mean is sqrt(var / S), that of the unbiased sample
    variance is var * sqrt(2 / (S - 1)).
    """
    s = samples.shape[0]
    mean = np.asarray(mean, "float64")
    var = np.asarray(var, "float64")
    assert samples.shape[1:] == mean.shape == var.shape
    assert np.all(var > 0)
    mc_mean = samples.mean(axis=0)
    mc_var = samples.var(axis=0, ddof=1)
    np.testing.assert_array_less(np.abs(mc_mean - mean), Z * np.sqrt(var / s) + 1e-6)
    np.testing.assert_array_less(np.abs(mc_var - var), Z * var * np.sqrt(2.0 / (s - 1)) + 1e-6)


def _weights(rng, shape):
    theta = rng.normal(size=shape).astype("float32")
    sigma2 = rng.uniform(0.05, 0.5, shape).astype("float32")
    return theta, sigma2


def _sample_weights(rng, theta, sigma2, n=N_MC):
    eps = rng.standard_normal((n,) + theta.shape)
    return theta.astype("float64") + np.sqrt(sigma2.astype("float64")) * eps


CONV_CASES = {
    # name: (kernel shape, strides, dilation, depthwise, input shape)
    "conv": ((3, 3, 2, 2), 1, 1, False, (2, 5, 5, 2)),
    "conv_strided": ((3, 3, 2, 2), 2, 1, False, (2, 6, 6, 2)),
    "depthwise": ((3, 3, 3, 1), 1, 1, True, (2, 5, 5, 3)),
    "depthwise_strided_dilated": ((3, 3, 3, 1), 2, 2, True, (2, 6, 6, 3)),
    "depthwise_5x5_strided_dilated_odd": ((5, 5, 3, 1), 2, 2, True, (2, 7, 7, 3)),
    "conv_strided_dilated_odd": ((3, 3, 2, 2), 2, 2, False, (2, 7, 7, 2)),
}


@pytest.mark.parametrize("size", [7, 8])
@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("depthwise", [False, True])
def test_strided_dilated_conv_is_the_plain_conv_of_every_other_pixel(depthwise, k, size):
    rng = _rng(12)
    x = rng.normal(size=(2, size, size, 3)).astype("float32")
    w = rng.normal(size=(k, k, 3, 1 if depthwise else 4)).astype("float32")
    sub, strides, dilation = vd.strided_dilated_as_plain(tf.constant(x), k, 2, 2)
    assert (strides, dilation) == (1, 1) and sub.shape[1] == (size + 1) // 2
    got = vd.conv_same(tf.constant(x), tf.constant(w), 2, 2, depthwise).numpy()
    np.testing.assert_allclose(got, np_same_conv(x, w, 2, 2, depthwise), rtol=1e-4, atol=1e-4)
    # Settings the identity does not cover are returned untouched.
    for args in ((k, 2, 1), (k, 1, 2), (4, 2, 2), (k, 2, 3)):
        same, s, d = vd.strided_dilated_as_plain(tf.constant(x), *args)
        assert same.shape == x.shape and (s, d) == args[1:]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_lrt_conv2d_moments_match_monte_carlo(case, mode):
    shape, strides, dilation, depthwise, x_shape = CONV_CASES[case]
    rng = _rng(10)
    x = rng.normal(size=x_shape).astype("float32")
    theta, sigma2 = _weights(rng, shape)

    mean, var = run_in_mode(
        mode,
        lambda a, t, s: vd.lrt_conv2d(a, t, s, strides=strides, dilation_rate=dilation, depthwise=depthwise),
        x,
        theta,
        sigma2,
    )
    samples = np_same_conv(x, _sample_weights(rng, theta, sigma2), strides, dilation, depthwise)
    _assert_moments(samples, mean, var)
    # Exact against the NumPy mean conv (no sampling involved).
    np.testing.assert_allclose(mean, np_same_conv(x, theta, strides, dilation, depthwise), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(var, np_same_conv(x**2, sigma2, strides, dilation, depthwise), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_lrt_dense_moments_match_monte_carlo(mode):
    rng = _rng(11)
    x = rng.normal(size=(3, 4)).astype("float32")
    theta, sigma2 = _weights(rng, (4, 2))
    mean, var = run_in_mode(mode, vd.lrt_dense, x, theta, sigma2)
    samples = np.einsum("bi,sio->sbo", x.astype("float64"), _sample_weights(rng, theta, sigma2))
    _assert_moments(samples, mean, var)


def _ref_moments(layer, x):
    """NumPy mean/var of a variational layer's pre-sampling output (bias included in the mean)."""
    theta = layer.theta.numpy()
    sigma2 = np.exp(layer.log_sigma2.numpy().astype("float64"))
    if isinstance(layer, vd.VariationalDense):
        mean, var = x.astype("float64") @ theta, (x.astype("float64") ** 2) @ sigma2
    else:
        depthwise = isinstance(layer, vd.VariationalDepthwiseConv2D)
        mean = np_same_conv(x, theta, layer.strides, layer.dilation_rate, depthwise)
        var = np_same_conv(x**2, sigma2, layer.strides, layer.dilation_rate, depthwise)
    if layer.use_bias:
        mean = mean + layer.bias.numpy()
    return mean, var


def _set_random_weights(layer, rng, log_sigma2=None):
    layer.theta.assign(random_theta(rng, layer.theta.shape))
    if log_sigma2 is None:
        log_sigma2 = np.log(rng.uniform(0.05, 0.5, layer.log_sigma2.shape))
    layer.log_sigma2.assign(np.broadcast_to(log_sigma2, layer.log_sigma2.shape).astype("float32"))
    if layer.use_bias:
        layer.bias.assign(rng.normal(size=layer.bias.shape).astype("float32"))


SAMPLING_CASES = {
    "conv": (lambda: vd.VariationalConv2D(2, 3, seed=21), (5, 5, 2)),
    "depthwise_strided_dilated": (
        lambda: vd.VariationalDepthwiseConv2D(3, strides=2, dilation_rate=2, use_bias=True, seed=22),
        (6, 6, 2),
    ),
    "dense": (lambda: vd.VariationalDense(3, seed=23), (4,)),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", sorted(SAMPLING_CASES))
def test_training_outputs_sample_the_lrt_moments(case, mode):
    """Mean/var of `layer(x, training=True)` over calls (and batch copies) match the moments."""
    make, in_shape = SAMPLING_CASES[case]
    rng = _rng(13)
    layer = make()
    layer.build((None,) + in_shape)
    _set_random_weights(layer, rng)
    x = rng.normal(size=(2,) + in_shape).astype("float32")
    # 8 calls of a batch holding 500 copies of x: eps is drawn per element
    # and per call, so these are 4000 independent samples per output element.
    copies, calls = 500, 8
    xt = np.tile(x, (copies,) + (1,) * len(in_shape))
    fn = lambda a: layer(a, training=True)  # noqa: E731
    if mode == "function":
        fn = tf.function(fn)
    mean, var = _ref_moments(layer, x)
    outs = []
    for _ in range(calls):
        out = fn(xt).numpy()
        assert out.shape == (copies * 2,) + mean.shape[1:]
        outs.append(out.reshape((copies,) + mean.shape))
    samples = np.concatenate(outs, axis=0).astype("float64")
    _assert_moments(samples, mean, var)


# ---------------------------------------------------------------------------
# 3 & 4. Equivalence with standard Keras layers (zero variance; inference mask)
# ---------------------------------------------------------------------------


def _keras_twin(case):
    """(variational layer, standard Keras equivalent, input shape) for each layer kind."""
    if case == "conv":
        return (
            vd.VariationalConv2D(3, 3, seed=1),
            keras.layers.Conv2D(3, 3, padding="same", use_bias=False),
            (2, 5, 5, 2),
        )
    if case == "conv_strided":
        return (
            vd.VariationalConv2D(2, 3, strides=2, seed=1),
            keras.layers.Conv2D(2, 3, strides=2, padding="same", use_bias=False),
            (2, 5, 5, 2),
        )
    if case == "depthwise":
        return (
            vd.VariationalDepthwiseConv2D(3, seed=1),
            keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False),
            (2, 5, 5, 3),
        )
    if case == "depthwise_strided_dilated":
        ref = keras.Sequential(
            [
                keras.layers.DepthwiseConv2D(3, dilation_rate=2, padding="same", use_bias=False),
                keras.layers.MaxPooling2D(pool_size=1, strides=2),
            ]
        )
        return vd.VariationalDepthwiseConv2D(3, strides=2, dilation_rate=2, seed=1), ref, (2, 6, 6, 3)
    if case == "dense":
        return vd.VariationalDense(3, seed=1), keras.layers.Dense(3), (4, 5)
    raise AssertionError(case)


TWIN_CASES = ("conv", "conv_strided", "depthwise", "depthwise_strided_dilated", "dense")


def _set_twin_weights(ref, kernel, layer):
    weights = [kernel] + ([layer.bias.numpy()] if layer.use_bias else [])
    ref.set_weights(weights)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", TWIN_CASES)
def test_zero_variance_training_equals_standard_keras_layer(case, mode):
    layer, ref, x_shape = _keras_twin(case)
    rng = _rng(30)
    x = rng.normal(size=x_shape).astype("float32")
    layer.build(x_shape)
    ref.build(x_shape)
    _set_random_weights(layer, rng, log_sigma2=-80.0)
    _set_twin_weights(ref, layer.theta.numpy(), layer)
    got = run_in_mode(mode, lambda a: layer(a, training=True), x)
    want = ref(x).numpy()
    assert got.shape == want.shape
    # sigma^2 = exp(-80) ~ 2e-35, so the only noise left is sample_lrt's
    # numerical floor sqrt(1e-8) = 1e-4 standard deviation.
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-3)


def _prune_entries(layer, rng, count):
    """Gives `count` chosen weights a huge variance; returns the expected 0/1 mask."""
    shape = tuple(layer.theta.shape)
    flat = rng.choice(int(np.prod(shape)), size=count, replace=False)
    mask = np.ones(int(np.prod(shape)), "float32")
    mask[flat] = 0.0
    mask = mask.reshape(shape)
    log_sigma2 = np.where(mask == 0, 8.0, -10.0).astype("float32")
    layer.theta.assign(random_theta(rng, shape))
    layer.log_sigma2.assign(log_sigma2)
    return mask


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", TWIN_CASES)
def test_inference_uses_masked_means(case, mode):
    layer, ref, x_shape = _keras_twin(case)
    rng = _rng(31)
    x = rng.normal(size=x_shape).astype("float32")
    layer.build(x_shape)
    ref.build(x_shape)
    if layer.use_bias:
        layer.bias.assign(rng.normal(size=layer.bias.shape).astype("float32"))
    mask = _prune_entries(layer, rng, count=4)
    theta = layer.theta.numpy()
    # The chosen entries are exactly those with log_alpha >= threshold.
    np.testing.assert_array_equal(mask, (_np_log_alpha(theta, layer.log_sigma2.numpy()) < layer.threshold))

    np.testing.assert_array_equal(layer.kernel_mask().numpy(), mask)
    masked = layer.masked_kernel().numpy()
    np.testing.assert_array_equal(masked, theta * mask)
    assert np.count_nonzero(masked) == mask.size - 4

    _set_twin_weights(ref, theta * mask, layer)
    got = run_in_mode(mode, lambda a: layer(a, training=False), x)
    np.testing.assert_allclose(got, ref(x).numpy(), rtol=1e-5, atol=1e-5)
    # The mask matters: the unmasked kernel gives a different output.
    _set_twin_weights(ref, theta, layer)
    assert not np.allclose(got, ref(x).numpy(), atol=1e-3)
    # Inference is deterministic.
    np.testing.assert_array_equal(got, run_in_mode(mode, lambda a: layer(a, training=False), x))


def test_kernel_mask_boundary_and_layer_threshold():
    layer = vd.VariationalDense(4, threshold=2.0, seed=1)
    layer.build((None, 1))
    # theta = 1 makes log_alpha exactly log_sigma2.
    layer.theta.assign(np.ones((1, 4), "float32"))
    layer.log_sigma2.assign(np.array([[1.9999, 2.0, 2.0001, -5.0]], "float32"))
    np.testing.assert_array_equal(layer.kernel_mask().numpy(), [[1, 0, 0, 1]])
    np.testing.assert_array_equal(layer.masked_kernel().numpy(), [[1, 0, 0, 1]])
    np.testing.assert_allclose(layer.log_alpha.numpy(), layer.log_sigma2.numpy(), rtol=0, atol=1e-6)


def _two_layer_model():
    conv = vd.VariationalConv2D(2, 3, seed=1)
    dense = vd.VariationalDense(3, seed=2)
    model = keras.Sequential(
        [
            keras.Input((5, 5, 2)),
            conv,
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
            keras.Sequential([dense]),  # nested: variational_layers must recurse
        ]
    )
    return model, conv, dense


def test_variational_layers_and_weight_sparsity_count_exactly():
    model, conv, dense = _two_layer_model()
    found = vd.variational_layers(model)
    assert len(found) == 2 and found[0] is conv and found[1] is dense
    rng = _rng(40)
    for layer in (conv, dense):
        _set_random_weights(layer, rng, log_sigma2=-10.0)
    total = 3 * 3 * 2 * 2 + 2 * 3
    assert vd.weight_sparsity(model) == (0, total)
    _prune_entries(conv, rng, count=5)
    _prune_entries(dense, rng, count=2)
    assert vd.weight_sparsity(model) == (7, total)
    # Consistent with the masks the layers use.
    pruned = sum(int(np.sum(1 - layer.kernel_mask().numpy())) for layer in found)
    assert pruned == 7
    assert vd.variational_layers(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])) == []
    assert vd.weight_sparsity(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])) == (0, 0)


# ---------------------------------------------------------------------------
# 5. KL via add_loss
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("case", TWIN_CASES)
def test_layer_adds_its_kl_with_add_loss(case, training):
    layer, _, x_shape = _keras_twin(case)
    rng = _rng(50)
    layer.build(x_shape)
    _set_random_weights(layer, rng, log_sigma2=rng.uniform(-8, 4, layer.theta.shape))
    x = rng.normal(size=x_shape).astype("float32")
    layer(x, training=training)
    layer(x, training=training)  # losses are reset per call, not accumulated
    assert len(layer.losses) == 1
    kl = float(layer.kl())
    assert float(layer.losses[0]) == pytest.approx(kl, rel=1e-6)
    expected = float(np.sum(np_kl(layer.theta.numpy(), layer.log_sigma2.numpy())))
    assert kl == pytest.approx(expected, rel=1e-5)


def test_layer_kl_is_scaled_by_its_kl_scale_or_the_bound_variable():
    rng = _rng(51)
    layer = vd.VariationalDense(3, kl_scale=0.01, seed=1)
    x = rng.normal(size=(2, 4)).astype("float32")
    layer(x, training=True)
    kl = float(layer.kl())
    assert float(layer.losses[0]) == pytest.approx(0.01 * kl, rel=1e-6)
    weight = keras.Variable(0.25, trainable=False)
    model = keras.Sequential([keras.Input((4,)), layer])
    assert vd.bind_kl_scale(model, weight) == 1
    layer(x, training=True)
    assert float(layer.losses[0]) == pytest.approx(0.25 * kl, rel=1e-6)
    weight.assign(0.5)  # read at every call, also inside a traced function
    call = tf.function(lambda t: (layer(t, training=True), layer.losses[0])[1])
    assert float(call(tf.constant(x))) == pytest.approx(0.5 * kl, rel=1e-6)
    weight.assign(0.125)
    assert float(call(tf.constant(x))) == pytest.approx(0.125 * kl, rel=1e-6)


def test_kl_schedule_warms_up_the_scale_under_fit():
    rng = _rng(52)
    layer = vd.VariationalDense(2, seed=2)
    model = keras.Sequential([keras.Input((3,)), layer])
    schedule = vd.KLSchedule(n_train=40, warmup_steps=4)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(float(schedule.variable.numpy()))

    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = rng.normal(size=(40, 3)).astype("float32"), rng.integers(0, 2, 40)
    model.fit(x, y, batch_size=10, epochs=2, verbose=0, callbacks=[schedule, Record()])
    np.testing.assert_allclose(seen, [0.0, 0.25 / 40, 0.5 / 40, 0.75 / 40, 1 / 40, 1 / 40, 1 / 40, 1 / 40], rtol=1e-6)
    assert layer._bound_kl_scale.variable is schedule.variable


def test_weight_decay_exclusions_are_the_variances_and_by_default_the_means():
    model, conv, dense = _two_layer_model()
    ids = lambda vs: {id(v) for v in vs}  # noqa: E731
    assert ids(vd.weight_decay_exclusions(model)) == ids([conv.theta, conv.log_sigma2, dense.theta, dense.log_sigma2])
    assert ids(vd.weight_decay_exclusions(model, include_means=True)) == ids([conv.log_sigma2, dense.log_sigma2])


def test_ard_kl_of_log_alpha_is_the_kl_of_any_theta():
    la = np.array([-20.0, -4.0, -0.5, 0.0, 2.0, 7.0, 20.0], "float32")
    got = vd.ard_kl_of_log_alpha(la).numpy().astype("float64")
    np.testing.assert_allclose(got, 0.5 * np.log1p(np.exp(-la.astype("float64"))), rtol=1e-5, atol=1e-7)
    theta = np.float32(0.3)
    np.testing.assert_allclose(got, vd.ard_kl(np.full_like(la, theta), la + np.log(theta**2)).numpy(), rtol=1e-4)
    # Clipped beyond +-20, where the gradient has vanished: finite, never NaN.
    assert np.all(np.isfinite(vd.ard_kl_of_log_alpha(np.array([-200.0, 200.0], "float32")).numpy()))


def test_variational_kl_inside_a_model_sums_the_layers():
    model, conv, dense = _two_layer_model()
    model(np.zeros((2, 5, 5, 2), "float32"), training=True)
    assert len(model.losses) == 2
    assert float(tf.add_n(model.losses)) == pytest.approx(float(conv.kl()) + float(dense.kl()), rel=1e-6)


# ---------------------------------------------------------------------------
# 6. Serialisation
# ---------------------------------------------------------------------------


def _registered_layers():
    return {
        "VariationalConv2D": (
            lambda: vd.VariationalConv2D(
                3, 3, strides=2, use_bias=True, threshold=2.0, log_sigma2_init=-8.0, seed=4,
                kernel_initializer="glorot_uniform", name="vconv",
            ),
            (2, 5, 5, 2),
        ),
        "VariationalDepthwiseConv2D": (
            lambda: vd.VariationalDepthwiseConv2D(
                (3, 3), strides=2, dilation_rate=2, use_bias=True, threshold=2.5, seed=5, name="vdw"
            ),
            (2, 6, 6, 2),
        ),
        "VariationalDense": (
            lambda: vd.VariationalDense(4, use_bias=False, seed=6, kernel_initializer="he_normal", name="vdense"),
            (3, 5),
        ),
    }


def _json(obj):
    return json.loads(json.dumps(obj))


def _outputs(layer, x, training):
    return (layer(x, training=training).numpy(),)


@pytest.mark.parametrize("name", sorted(_registered_layers()))
def test_config_json_round_trip_rebuilds_an_equivalent_layer(name):
    make, x_shape = _registered_layers()[name]
    layer = make()
    rng = _rng(60)
    x = None
    if x_shape is None:
        layer.theta.assign(random_theta(rng, layer.theta.shape))
        layer.log_sigma2.assign(rng.uniform(-6, 6, layer.log_sigma2.shape).astype("float32"))
        assert layer.prune() > 0
    else:
        x = rng.normal(size=x_shape).astype("float32")
        layer.build(x_shape)
        _prune_entries(layer, rng, count=3)
        if layer.use_bias:
            layer.bias.assign(rng.normal(size=layer.bias.shape).astype("float32"))
    rebuilt = assert_config_round_trip(layer, x)  # inference outputs: the same values
    # The seed is in the config, so even the first training-mode noise agrees.
    for got, want in zip(_outputs(rebuilt, x, True), _outputs(layer, x, True)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", sorted(_registered_layers()))
def test_layers_are_registered_under_tfvnas(name):
    make, _ = _registered_layers()[name]
    layer = make()
    cls = type(layer)
    assert keras.saving.get_registered_name(cls) == f"tfvnas>{name}"
    assert keras.saving.get_registered_object(f"tfvnas>{name}") is cls
    serialized = _json(keras.saving.serialize_keras_object(layer))
    assert serialized["registered_name"] == f"tfvnas>{name}"
    restored = keras.saving.deserialize_keras_object(serialized)
    assert type(restored) is cls
    assert _json(restored.get_config()) == _json(layer.get_config())


# ---------------------------------------------------------------------------
# 8. elbo_loss
# ---------------------------------------------------------------------------


def _np_cross_entropy(labels, logits):
    logits = logits.astype("float64")
    lse = np.log(np.sum(np.exp(logits - logits.max(1, keepdims=True)), 1)) + logits.max(1)
    return lse - logits[np.arange(len(labels)), labels]


def _elbo_data():
    rng = _rng(80)
    labels = np.array([0, 3, 1, 4], "int64")
    logits = rng.normal(size=(4, 5)).astype("float32") * 2
    return labels, logits, np.float32(12.5), 1000, 0.3


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scale", [1, 2])
def test_elbo_loss_one_replica(scale, mode):
    labels, logits, kl, n_train, beta = _elbo_data()
    gbs = scale * len(labels)
    loss, ce, kl_term = run_in_mode(
        mode,
        lambda y, z, k: vd.elbo_loss(y, z, k * vd.kl_scale(beta, n_train), global_batch_size=gbs),
        labels,
        logits,
        tf.constant(kl),
    )
    ce_ref = _np_cross_entropy(labels, logits).sum() / gbs  # mean CE, halved when gbs = 2 * batch
    kl_ref = beta * float(kl) / n_train
    assert float(ce) == pytest.approx(ce_ref, rel=1e-5)
    assert float(kl_term) == pytest.approx(kl_ref, rel=1e-5)
    assert float(loss) == pytest.approx(ce_ref + kl_ref, rel=1e-5)
    if scale == 1:
        assert float(ce) == pytest.approx(_np_cross_entropy(labels, logits).mean(), rel=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_elbo_loss_sums_to_the_global_value_over_replicas(mode):
    labels, logits, kl, n_train, beta = _elbo_data()
    strategy = mirrored()
    assert strategy.num_replicas_in_sync == 2
    per = len(labels) // 2
    dist_labels = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(labels[ctx.replica_id_in_sync_group * per : (ctx.replica_id_in_sync_group + 1) * per])
    )
    dist_logits = strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(logits[ctx.replica_id_in_sync_group * per : (ctx.replica_id_in_sync_group + 1) * per])
    )

    def step(y, z):
        return strategy.run(
            lambda a, b: vd.elbo_loss(a, b, tf.constant(kl) * vd.kl_scale(beta, n_train),
                                      global_batch_size=len(labels)),
            args=(y, z),
        )

    if mode == "function":
        step = tf.function(step)
    loss, ce, kl_term = step(dist_labels, dist_logits)
    total = lambda v: float(strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None))  # noqa: E731

    ce_ref = _np_cross_entropy(labels, logits).mean()
    kl_ref = beta * float(kl) / n_train
    assert total(ce) == pytest.approx(ce_ref, rel=1e-5)
    assert total(kl_term) == pytest.approx(kl_ref, rel=1e-5)  # the KL counted once
    assert total(loss) == pytest.approx(ce_ref + kl_ref, rel=1e-5)
    for part in strategy.experimental_local_results(kl_term):
        assert float(part) == pytest.approx(kl_ref / 2, rel=1e-5)


# ---------------------------------------------------------------------------
# 9. Argument validation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: vd.VariationalConv2D(0, 3), "`filters` must be a positive int. Received: filters=0"),
        (lambda: vd.VariationalConv2D(-2, 3), "`filters` must be a positive int. Received: filters=-2"),
        (lambda: vd.VariationalConv2D(2.0, 3), "`filters` must be a positive int. Received: filters=2.0"),
        (lambda: vd.VariationalConv2D(True, 3), "`filters` must be a positive int. Received: filters=True"),
        (lambda: vd.VariationalConv2D(2, 0), "`kernel_size` must be a positive int. Received: kernel_size=0"),
        (lambda: vd.VariationalConv2D(2, -3), "`kernel_size` must be a positive int. Received: kernel_size=-3"),
        (
            lambda: vd.VariationalConv2D(2, (3, 5)),
            "`kernel_size` must be an int or a square pair. Received: kernel_size=(3, 5)",
        ),
        (lambda: vd.VariationalConv2D(2, 3, strides=0), "`strides` must be a positive int. Received: strides=0"),
        (
            lambda: vd.VariationalConv2D(2, 3, dilation_rate=-1),
            "`dilation_rate` must be a positive int. Received: dilation_rate=-1",
        ),
        (
            lambda: vd.VariationalDepthwiseConv2D(0),
            "`kernel_size` must be a positive int. Received: kernel_size=0",
        ),
        (
            lambda: vd.VariationalDepthwiseConv2D(3, strides=-2),
            "`strides` must be a positive int. Received: strides=-2",
        ),
        (
            lambda: vd.VariationalDepthwiseConv2D(3, dilation_rate=0),
            "`dilation_rate` must be a positive int. Received: dilation_rate=0",
        ),
        (lambda: vd.VariationalDense(0), "`units` must be a positive int. Received: units=0"),
        (lambda: vd.VariationalDense(-4), "`units` must be a positive int. Received: units=-4"),
        (lambda: vd.VariationalDense(3, kl_scale=-1.0), "`kl_scale` must be a non-negative number. Received: kl_scale=-1.0"),
    ],
)
def test_invalid_arguments_raise_keras_style_errors(make, message):
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        make()


def test_square_pair_kernel_size_is_accepted():
    assert vd.VariationalConv2D(2, (3, 3)).kernel_size == 3
    assert vd.VariationalDepthwiseConv2D([5, 5]).kernel_size == 5


# ---------------------------------------------------------------------------
# 10. Randomness
# ---------------------------------------------------------------------------


def _seeded_conv(seed, rng_seed=90):
    layer = vd.VariationalConv2D(2, 3, seed=seed)
    layer.build((None, 5, 5, 2))
    _set_random_weights(layer, _rng(rng_seed))
    return layer


@pytest.mark.parametrize("mode", MODES)
def test_training_noise_changes_per_call_and_follows_the_seed(mode):
    x = _rng(91).normal(size=(2, 5, 5, 2)).astype("float32")
    a, b, c = _seeded_conv(7), _seeded_conv(7), _seeded_conv(8)
    fns = [lambda v, layer=layer: layer(v, training=True) for layer in (a, b, c)]
    if mode == "function":
        fns = [tf.function(f) for f in fns]
    a1, b1, c1 = (f(x).numpy() for f in fns)
    a2, b2 = fns[0](x).numpy(), fns[1](x).numpy()
    np.testing.assert_array_equal(a1, b1)  # same seed, same weights: same noise
    np.testing.assert_array_equal(a2, b2)  # ... and the same sequence
    assert np.abs(a1 - a2).max() > 1e-2  # a new draw per call
    assert np.abs(a1 - c1).max() > 1e-2  # another seed, other noise
    # The noise is around the mean, with the LRT scale.
    mean, var = _ref_moments(a, x)
    assert np.all(np.abs(a1 - mean) < Z * np.sqrt(var))


def test_replicas_draw_different_noise_from_one_generator_state():
    strategy = mirrored()
    with strategy.scope():
        layer = vd.VariationalDense(3, seed=5)
        layer.build((None, 4))
    _set_random_weights(layer, _rng(92))
    x = np.ones((1, 4), "float32")

    @tf.function
    def step():
        return strategy.run(lambda: layer(x, training=True))

    first, second = (np.concatenate([t.numpy() for t in strategy.experimental_local_results(step())]) for _ in range(2))
    assert np.abs(first[0] - first[1]).max() > 1e-3  # replicas differ
    assert np.abs(first - second).max() > 1e-3  # steps differ
    # One generator state, advanced once per step and identical on both replicas.
    states = [v.numpy() for v in strategy.experimental_local_results(layer.seed_generator.state.value)]
    assert len(states) == 2
    np.testing.assert_array_equal(states[0], [5, 2])
    np.testing.assert_array_equal(states[1], [5, 2])


def test_the_portable_noise_never_draws_zero_or_one():
    """The extreme bit patterns map inside (0, 1), so the normal noise (the inverse CDF) stays finite."""
    bits = tf.constant([0, 1, 2**31, 2**32 - 2, 2**32 - 1], tf.uint32)
    u = noise.unit_floats(bits).numpy()
    assert u.min() == 2.0**-24 and u.max() == 1.0 - 2.0**-24
    assert np.all(np.isfinite(tf.math.ndtri(u).numpy()))
    # and the draws themselves: uniform moments over a million
    draws = noise.portable_uniform([1_000_000], tf.constant([3, 4], tf.int64)).numpy()
    assert 0.0 < draws.min() and draws.max() < 1.0
    assert abs(draws.mean() - 0.5) < 4 * (1 / 12) ** 0.5 / 1000
