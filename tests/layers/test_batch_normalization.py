"""tfvnas.layers.batch_normalization: BatchNorm against keras.layers.BatchNormalization, on one replica and two.

Shapes are tiny (batch 2, 5x5, 3 channels).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.modes import MODES, run_in_mode
from tfvnas.layers import batch_normalization as bn_lib


def _rng(seed=0):
    return np.random.default_rng(seed)


def _call(op, x, training, mode):
    return run_in_mode(mode, lambda a: op(a, training=training), x)


def _bn_pair(affine, rng):
    ours = bn_lib.BatchNorm(affine=affine)
    ref = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, center=affine, scale=affine)
    ours.build((None, 5, 5, 3))
    ref.build((None, 5, 5, 3))
    if affine:
        gamma = rng.uniform(0.5, 1.5, 3).astype("float32")
        beta = rng.normal(size=3).astype("float32")
        ours.gamma.assign(gamma)
        ours.beta.assign(beta)
        ref.gamma.assign(gamma)
        ref.beta.assign(beta)
    return ours, ref


def _bn_inputs():
    rng = _rng(5)
    # Three batches with different per-channel statistics.
    return [
        (rng.normal(size=(2, 5, 5, 3)) * [1.0, 2.0, 0.5] + [0.0, 1.0, -2.0] + i).astype("float32")
        for i in range(3)
    ]


def test_batch_norm_has_the_expected_weights():
    for affine, trainable in ((True, {"gamma", "beta"}), (False, set())):
        bn = bn_lib.BatchNorm(affine=affine)
        bn.build((None, 5, 5, 3))
        assert {w.name for w in bn.trainable_weights} == trainable
        assert [w.name for w in bn.non_trainable_weights] == ["moving_mean", "moving_variance"]
        np.testing.assert_array_equal(bn.moving_mean.numpy(), np.zeros(3))
        np.testing.assert_array_equal(bn.moving_variance.numpy(), np.ones(3))
    assert bn_lib.BN_MOMENTUM == 0.9 and bn_lib.BN_EPSILON == 1e-5


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_training_outputs_match_keras(affine, mode):
    ours, ref = _bn_pair(affine, _rng(6))
    for x in _bn_inputs():
        got = _call(ours, x, True, mode)
        want = ref(x, training=True).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _np_moving_stats(xs, unbiased):
    mean, var = np.zeros(3), np.ones(3)
    for x in xs:
        flat = x.reshape(-1, 3).astype("float64")
        mean = 0.9 * mean + 0.1 * flat.mean(0)
        var = 0.9 * var + 0.1 * flat.var(0, ddof=1 if unbiased else 0)
    return mean, var


def _train_three_steps(affine, mode):
    ours, ref = _bn_pair(affine, _rng(7))
    xs = _bn_inputs()
    for x in xs:
        _call(ours, x, True, mode)
        ref(x, training=True)
    return ours, ref, xs


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_moving_mean_matches_keras(affine, mode):
    ours, ref, xs = _train_three_steps(affine, mode)
    np_mean, _ = _np_moving_stats(xs, unbiased=False)
    np.testing.assert_allclose(ref.moving_mean.numpy(), np_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.moving_mean.numpy(), ref.moving_mean.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_moving_variance_matches_keras(affine, mode):
    """The docstring promises what keras.layers.BatchNormalization computes.

    Keras updates the moving variance with the *biased* (1/n) batch variance
    (the NumPy reference below pins that); the test holds BatchNorm to it.
    """
    ours, ref, xs = _train_three_steps(affine, mode)
    _, np_var_biased = _np_moving_stats(xs, unbiased=False)
    np.testing.assert_allclose(ref.moving_variance.numpy(), np_var_biased, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        ours.moving_variance.numpy(),
        ref.moving_variance.numpy(),
        rtol=1e-5,
        atol=1e-6,
        err_msg=(
            "BatchNorm's moving_variance differs from keras.layers.BatchNormalization's "
            f"(NumPy with the unbiased n/(n-1) batch variance: {_np_moving_stats(xs, unbiased=True)[1]})"
        ),
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_inference_matches_keras(affine, mode):
    rng = _rng(8)
    ours, ref = _bn_pair(affine, rng)
    mean = rng.normal(size=3).astype("float32")
    var = rng.uniform(0.5, 2.0, 3).astype("float32")
    for bn in (ours, ref):
        bn.moving_mean.assign(mean)
        bn.moving_variance.assign(var)
    x = _bn_inputs()[0]
    got = _call(ours, x, False, mode)
    np.testing.assert_allclose(got, ref(x, training=False).numpy(), rtol=1e-5, atol=1e-5)
    gamma = ours.gamma.numpy() if affine else 1.0
    beta = ours.beta.numpy() if affine else 0.0
    np.testing.assert_allclose(got, (x - mean) / np.sqrt(var + 1e-5) * gamma + beta, rtol=1e-5, atol=1e-5)
    # Inference leaves the moving statistics alone.
    np.testing.assert_array_equal(ours.moving_mean.numpy(), mean)
    np.testing.assert_array_equal(ours.moving_variance.numpy(), var)


def test_synchronized_batch_norm_uses_the_global_batch():
    from tests.conftest import mirrored

    strategy = mirrored()
    x = tf.random.stateless_normal((8, 3, 3, 4), seed=[3, 4]) * 2.0 + 1.0
    # Two halves with different statistics: per-replica and global differ.
    x = tf.concat([x[:4] + 3.0, x[4:]], axis=0)
    with strategy.scope():
        bn = bn_lib.BatchNorm(affine=True, synchronized=True)
        bn.build(x.shape)
    reference = keras.layers.BatchNormalization(momentum=bn_lib.BN_MOMENTUM, epsilon=bn_lib.BN_EPSILON)
    expected = reference(x, training=True).numpy()

    @tf.function
    def step(batch):
        return strategy.run(lambda b: bn(b, training=True), args=(batch,))

    data = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(x))
    out = step(next(iter(data)))
    got = np.concatenate([t.numpy() for t in strategy.experimental_local_results(out)], axis=0)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(bn.moving_mean.numpy(), reference.moving_mean.numpy(), atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), reference.moving_variance.numpy(), atol=1e-4)
    # Unsynchronised, each replica normalises its own half: not the global result.
    with strategy.scope():
        local = bn_lib.BatchNorm(affine=True)
        local.build(x.shape)

    @tf.function
    def local_step(batch):
        return strategy.run(lambda b: local(b, training=True), args=(batch,))

    out = local_step(next(iter(data)))
    per_replica = np.concatenate([t.numpy() for t in strategy.experimental_local_results(out)], axis=0)
    assert np.abs(per_replica - expected).max() > 0.1
