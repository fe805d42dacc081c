"""`tfvnas.layers.mixed_edge`: the gated sum of an edge's ops, computed op by op and fused.

The shared and inline edge functions are compared on a search step in
tests/loops/test_search.py, beside the searches that trace the same edges.
"""

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.supernets import OPS
from tfvnas.layers import noise
from tfvnas.layers import ops as ops_lib
from tfvnas.layers import registry as op_registry
from tfvnas.layers import variational as vd_lib
from tfvnas.layers.mixed_edge import MixedEdge


def test_mixed_edge_is_the_gate_weighted_sum():
    edge = MixedEdge(OPS, 3, 1, affine=True, seed=0)
    x = tf.constant(np.random.default_rng(1).normal(size=(2, 5, 5, 3)), tf.float32)
    theta = tf.constant([0.5, 0.0, -2.0])
    sigma2 = tf.constant([0.1, 0.0, 0.3])
    out = edge(x, theta, sigma2, training=False).numpy()
    expected = sum(
        float(t) * op(x, training=False).numpy() for t, op in zip(theta.numpy(), edge.candidates)
    )
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def _edge_run(edge, x, theta, sigma2, training, fused):
    """Output, gradients and moving statistics of one edge call (state restored after)."""
    state = [v.numpy() for v in edge.non_trainable_variables]
    edge._fusable = MixedEdge._fusable.__get__(edge) if fused else (lambda: False)
    with tf.GradientTape() as tape:
        tape.watch([x, theta])
        y = edge(x, theta, sigma2, training=training)
        kl = tf.add_n(edge.losses) if edge.losses else tf.constant(0.0)
        loss = tf.reduce_sum(y * y) + 1e-3 * kl
    sources = [x, theta] + edge.trainable_variables
    grads = [0.0 if g is None else tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, sources)]
    moved = [v.numpy() for v in edge.non_trainable_variables] + [kl.numpy()]
    for v, value in zip(edge.non_trainable_variables, state):
        v.assign(value)
    del edge._fusable
    return y.numpy(), grads, moved


def _fixed_weight_noise(real):
    """`noise.standard_normal` with a constant for weight noise (rank 4), the real draw for gates."""

    def draw(shape, seed_generator, dtype):
        rank = len(shape) if isinstance(shape, (list, tuple)) else int(shape.shape[0])
        if rank == 4:
            return tf.fill(shape, tf.constant(0.37, dtype))
        return real(shape, seed_generator, dtype)

    return draw


@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize(
    "computed, weight_vd",
    [(None, False), ((1, 3, 5), False), ((2, 4, 6, 7), False), ((1, 2, 7), False), ((3, 4, 6), False),
     ((0,), False), (None, True), ((2, 3, 6), True)],
)
def test_fused_edge_equals_the_ops_one_by_one(strides, computed, weight_vd, monkeypatch):
    names = op_registry.OP_SETS["darts_none"]
    if weight_vd:
        # The fused edge draws the noise of all its variational convolutions
        # in one call (another random stream than one draw per layer), so
        # both computations get the same fixed weight noise here; the gate
        # noise is the edge's own stream in both.
        monkeypatch.setattr(noise, "standard_normal", _fixed_weight_noise(noise.standard_normal))
    edge = MixedEdge(names, 4, strides, seed=0, weight_vd=weight_vd)
    rng = np.random.default_rng(4)
    x = tf.constant(rng.normal(size=(2, 7, 7, 4)), tf.float32)
    theta = tf.constant(rng.uniform(0.1, 1.0, len(names)), tf.float32)
    sigma2 = tf.constant(rng.uniform(0.01, 0.1, len(names)), tf.float32)
    edge(x, theta, sigma2, training=False)  # builds every op
    assert edge._fusable()
    for layer in vd_lib.variational_layers(edge):  # some weights pruned: the masks bite
        noisy = rng.uniform(size=layer.log_sigma2.shape) < 0.3
        layer.log_sigma2.assign(np.where(noisy, 4.0, -6.0).astype("float32"))
    if computed is not None:
        edge.computed = computed
    _assert_fused_equals_ops(edge, x, theta, sigma2)


def _assert_fused_equals_ops(edge, x, theta, sigma2):
    """Outputs, gradients and moving statistics of the fused edge against its ops one by one, both modes."""
    for training in (False, True):
        want = _edge_run(edge, x, theta, sigma2, training, fused=False)
        got = _edge_run(edge, x, theta, sigma2, training, fused=True)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)
        for g, w in zip(got[1], want[1]):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
        for g, w in zip(got[2], want[2]):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_block_diagonal_kernel_applies_each_kernel_to_its_channel_block():
    from tfvnas.layers.mixed_edge import block_diagonal

    rng = np.random.default_rng(0)
    sizes, outs = (3, 2, 4), (2, 5, 3)
    kernels = [tf.constant(rng.normal(size=(1, 1, c, d)), tf.float32) for c, d in zip(sizes, outs)]
    x = tf.constant(rng.normal(size=(2, 3, 3, sum(sizes))), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch([x] + kernels)
        y = tf.nn.conv2d(x, block_diagonal(kernels), strides=1, padding="SAME")
        loss = tf.reduce_sum(y * y)
    # NumPy: each block of input channels times its own kernel, outputs concatenated.
    blocks = np.split(x.numpy(), np.cumsum(sizes)[:-1], axis=-1)
    want = np.concatenate([b @ k.numpy()[0, 0] for b, k in zip(blocks, kernels)], axis=-1)
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-5, atol=1e-5)
    # Differentiable on every CPU (a grouped convolution's gradient needs oneDNN).
    grads = tape.gradient(loss, [x] + kernels)
    want_dk = [np.einsum("bhwc,bhwd->cd", b, 2 * o)[None, None]
               for b, o in zip(blocks, np.split(want, np.cumsum(outs)[:-1], axis=-1))]
    for g, w in zip(grads[1:], want_dk):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-4, atol=1e-4)
    assert block_diagonal(kernels[:1]) is kernels[0]


@pytest.mark.parametrize("strides, weight_vd", [(1, False), (2, False), (1, True)])
def test_the_fused_edge_runs_no_grouped_convolution(strides, weight_vd, monkeypatch):
    # A grouped convolution (input depth a multiple of the kernel's) has a CPU
    # gradient only under oneDNN, which TensorFlow enables on Intel CPUs alone:
    # every convolution of the edge must read as many channels as its kernel.
    depths = []
    real = tf.nn.conv2d

    def conv2d(inputs, filters, *args, **kwargs):
        depths.append((int(inputs.shape[-1]), int(filters.shape[2])))
        return real(inputs, filters, *args, **kwargs)

    monkeypatch.setattr(tf.nn, "conv2d", conv2d)
    names = op_registry.OP_SETS["darts_none"]
    edge = MixedEdge(names, 4, strides, seed=0, weight_vd=weight_vd)
    x = tf.constant(np.random.default_rng(0).normal(size=(2, 6, 6, 4)), tf.float32)
    theta, sigma2 = tf.fill([len(names)], 0.5), tf.fill([len(names)], 0.05)
    edge(x, theta, sigma2, training=False)
    assert edge._fusable()
    depths.clear()
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = edge(x, theta, sigma2, training=True)
    assert tape.gradient(y, x) is not None
    assert depths, "the fused edge ran no tf.nn.conv2d"
    assert all(inputs == kernel for inputs, kernel in depths), depths


@pytest.mark.parametrize("strides", [1, 2])
def test_fused_edge_drops_skips_as_the_ops_one_by_one_do(strides):
    names = op_registry.OP_SETS["darts_none"]
    edge = MixedEdge(names, 4, strides, seed=0)
    rng = np.random.default_rng(8)
    x = tf.constant(rng.normal(size=(16, 5, 5, 4)), tf.float32)
    theta = tf.constant(rng.uniform(0.1, 1.0, len(names)), tf.float32)
    sigma2 = tf.constant(rng.uniform(0.01, 0.1, len(names)), tf.float32)
    edge(x, theta, sigma2, training=False)  # builds every op
    runs = {}
    for rate in (0.0, 0.5):
        edge.skip_dropout = rate
        state = edge.seed_generator.state.numpy()
        runs[rate] = [_edge_run(edge, x, theta, sigma2, True, fused) for fused in (False, True)]
        edge.seed_generator.state.assign(state)
    want, got = runs[0.5]
    np.testing.assert_allclose(got[0], want[0], rtol=1e-5, atol=1e-5)
    for g, w in zip(got[1], want[1]):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
    if strides == 1:
        # Same gate draws in both runs, so per example the difference is the identity's
        # share, z * x, taken away (dropped) or added once more (kept, scaled by 2):
        # one factor of x at every position, with both signs across examples.
        diff = runs[0.5][0][0] - runs[0.0][0][0]
        factor = np.median((diff / x.numpy()).reshape(len(diff), -1), axis=1)
        np.testing.assert_allclose(diff, factor[:, None, None, None] * x.numpy(), rtol=0, atol=1e-5)
        assert (factor > 0.01).any() and (factor < -0.01).any()
    else:  # a strided skip is FactorizedReduce: not dropped
        np.testing.assert_array_equal(runs[0.5][0][0], runs[0.0][0][0])
    edge.skip_dropout = 0.0


@pytest.mark.parametrize("fused", [True, False])
def test_mixed_edge_draws_one_noise_per_example_and_op(fused, monkeypatch):
    names = op_registry.OP_SETS["darts"]
    edge = MixedEdge(names, 3, 1, seed=0)
    x = tf.constant(np.random.default_rng(5).normal(size=(4, 5, 5, 3)), tf.float32)
    theta = tf.fill([len(names)], 0.5)
    sigma2 = tf.fill([len(names)], 0.2)
    edge(x, theta, sigma2, training=False)
    if not fused:
        monkeypatch.setattr(edge, "_fusable", lambda: False)
    shapes = []
    real = noise.standard_normal

    def spy(shape, seed_generator, dtype):
        if seed_generator is edge.seed_generator:
            shapes.append([int(d) for d in shape])
        return real(shape, seed_generator, dtype)

    monkeypatch.setattr(noise, "standard_normal", spy)
    y = edge(x, theta, sigma2, training=True)
    assert shapes == [[4, len(names)]]
    assert y.shape == (4, 5, 5, 3)


@pytest.mark.parametrize("computed", [None, (1, 3, 7)])
def test_fused_edge_with_a_normalised_skip_equals_the_ops_one_by_one(computed):
    """skip_bn: the fused edge's identity group ends in the same non-affine batch norm as `ops.Identity`."""
    names = op_registry.OP_SETS["darts_none"]
    edge = MixedEdge(names, 4, 1, seed=0, skip_bn=True)
    rng = np.random.default_rng(6)
    x = tf.constant(rng.normal(1.0, 2.0, size=(2, 7, 7, 4)), tf.float32)
    theta = tf.constant(rng.uniform(0.1, 1.0, len(names)), tf.float32)
    sigma2 = tf.constant(rng.uniform(0.01, 0.1, len(names)), tf.float32)
    edge(x, theta, sigma2, training=False)
    assert edge._fusable()
    skip = edge.candidates[names.index("skip_connect")]
    assert isinstance(skip, ops_lib.Identity) and skip.normalised
    if computed is not None:
        edge.computed = computed
    _assert_fused_equals_ops(edge, x, theta, sigma2)
