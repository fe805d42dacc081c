"""The supernet's gated edge: every candidate operation, mixed with Gaussian gates.

`MixedEdge` computes `sum_k z_k * op_k(x)`. On the DARTS operation set
without affine batch norm (the supernet's), its ops are computed together
(`fused_outputs`): one depthwise convolution for all separable and dilated
ops, one grouped pointwise convolution per stage, one batch norm per stage,
each operation with its own weights (a test pins the result to the ops run
one by one).

References:
    - Ferianc, Fan, Rodrigues. "VINNAS: Variational Inference-based Neural
      Network Architecture Search." arXiv:2007.06103.
    - Liu, Simonyan, Yang. "DARTS: Differentiable Architecture Search." ICLR 2019.
"""

import keras
import tensorflow as tf

from tfvnas import gates as gates_lib
from tfvnas import ops as ops_lib
from tfvnas import variational


@keras.saving.register_keras_serializable(package="tfvnas")
class MixedEdge(keras.layers.Layer):
    """An edge computing `sum_k z_k * op_k(x)` with Gaussian gates z_k.

    Training draws every gate once per example (`tfvnas.gates.gate_mixture`:
    noise of shape (batch, K), the same at every position and channel of an
    op's output); inference uses the gate means. Gates the caller passes as
    zero (pruned) contribute exactly zero.

    Args:
        op_names: the candidate operations.
        channels: channels in and out.
        strides: 1 or 2.
        weight_vd: variational convolution weights inside the ops.
        affine: affine batch normalisation inside the ops.
        seed: seed of the edge's noise (ops derive theirs from it).

    Call arguments:
        inputs: NHWC tensor.
        theta: gate means, shape `(len(op_names),)`.
        sigma2: gate variances, shape `(len(op_names),)`.
        training: training flag.
    """

    def __init__(self, op_names, channels, strides, weight_vd=False, affine=False, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.op_names = ops_lib.check_op_names(op_names)
        self.channels = channels
        self.strides = strides
        self.weight_vd = bool(weight_vd)
        self.affine = bool(affine)
        self.seed = seed
        self.candidates = [
            ops_lib.make_op(
                name,
                channels,
                strides,
                weight_vd=self.weight_vd,
                affine=self.affine,
                seed=None if seed is None else seed + 10 * (k + 1),
            )
            for k, name in enumerate(self.op_names)
        ]
        self.seed_generator = keras.random.SeedGenerator(seed)
        # Indices of the candidates the edge computes; the others are pruned
        # (their gates are exactly zero). Set by the Supernet from its gate
        # tables when a step is traced (`Supernet.computed_ops`).
        self.computed = tuple(range(len(self.op_names)))
        # False for the DARTS baseline: a plain softmax mixture, no noise.
        self.noisy = True

    def build(self, input_shape):
        self.built = True  # sublayers build on their first call (see ops.Chain)

    def call(self, inputs, theta, sigma2, training=None):
        computed = self.computed
        if len(computed) < len(self.candidates) and training:
            self._keep_skipped_in_the_objective(computed)
        if not computed:
            x = inputs[:, :: self.strides, :: self.strides, :] if self.strides > 1 else inputs
            return tf.zeros_like(x)
        eps = None
        if training and self.noisy:
            # Drawn for every op, computed or not, so the random stream does
            # not depend on what the step computes.
            shape = [tf.shape(inputs)[0], len(self.op_names)]
            eps = variational.standard_normal(shape, self.seed_generator, inputs.dtype)
        if self._fusable():
            return grouped_mixture(fused_outputs(self, inputs, computed, training), theta, sigma2, eps)
        outputs = [ops_lib.apply_layer(self.candidates[k], inputs, training) for k in computed]
        if len(computed) < len(self.candidates):
            index = list(computed)
            theta, sigma2 = tf.gather(theta, index), tf.gather(sigma2, index)
            eps = None if eps is None else tf.gather(eps, index, axis=1)
        return gates_lib.gate_mixture(tf.stack(outputs, axis=0), theta, sigma2, eps)

    def _keep_skipped_in_the_objective(self, computed):
        """Keeps the objective and the gradients what they were when pruned ops were computed.

        A computed, masked op added its weights' ARD KL to the loss (with
        `weight_vd`) and gave its other weights exactly zero gradients; the
        same terms are added here without computing the op, so the
        optimizers see the same variables with the same gradients (weight
        decay and momentum go on as before, and Keras does not warn about
        variables without gradients).
        """
        zero = []
        for k, op in enumerate(self.candidates):
            if k in computed:
                continue
            vd_layers = variational.variational_layers(op)
            for layer in vd_layers:
                self.add_loss(layer.kl() * layer.kl_scale(layer.theta.dtype))
            covered = {id(v) for l in vd_layers for v in l.trainable_weights}
            zero += [tf.reduce_sum(v) for v in op.trainable_weights if id(v) not in covered]
        if zero:
            self.add_loss(0.0 * tf.add_n(zero))

    def _fusable(self):
        """Whether `_fused_outputs` computes this edge (DARTS ops without affine or bias, all built)."""
        if self.affine or not set(self.op_names) <= _FUSED_OPS:
            return False
        layers = list(self._flatten_layers())
        if any(l.synchronized for l in layers if isinstance(l, ops_lib.BatchNorm)):
            return False  # the fused edge computes per-replica statistics
        if any(getattr(l, "use_bias", False) for l in layers):
            return False
        return all(l.built for op in self.candidates for l in getattr(op, "steps", ()))

    def get_config(self):
        config = super().get_config()
        config.update(
            op_names=list(self.op_names),
            channels=self.channels,
            strides=self.strides,
            weight_vd=self.weight_vd,
            affine=self.affine,
            seed=self.seed,
        )
        return config


# ---------------------------------------------------------------------------
# The fused edge
# ---------------------------------------------------------------------------

_FUSED_OPS = frozenset(
    {"sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5", "max_pool_3x3", "avg_pool_3x3",
     "skip_connect", "none"}
)


def fused_outputs(edge, x, computed, training):
    """The outputs of the candidates `computed` of a plain supernet edge, computed together.

    Each operation's own weights are used, so the result is what the
    operations compute one by one (a test pins it), but with a fraction of
    the ops: a step on a small CPU batch is dominated by per-op cost, not
    arithmetic.

    - the first ReLU is shared; the depthwise convolutions of the separable
      ops (and those of the dilated ops) run as one depthwise convolution
      over the input repeated once per op, with the smaller kernels
      zero-padded to the largest (the same sums: 'same' padding keeps the
      kernels centred);
    - the pointwise convolutions of a stage run as one grouped 1x1
      convolution, and the batch norms of a stage as one fused batch norm
      over the concatenated channels (per-channel statistics do not mix);
      each operation's moving statistics are updated from its slice;
    - the pooling ops share the second stage's batch norm.

    Args:
        edge: a `MixedEdge` whose `_fusable()` is true.
        x: the edge input.
        computed: indices of the candidates to compute.
        training: training flag.

    Returns:
        A list of `(tensor, slots)`: `tensor` concatenates, along channels,
        one block of the edge's channels per entry of `slots`, the output
        of op `slots[i]` (an index into `op_names`). `none` ops are left out
        (their output is zero); an edge of `none` alone gives one
        `(zeros, [None])`.
    """
    s = edge.strides
    kind = {k: edge.op_names[k] for k in computed}
    seps = [k for k in computed if kind[k].startswith("sep_conv")]
    dils = [k for k in computed if kind[k].startswith("dil_conv")]
    pools = [k for k in computed if kind[k] in ("max_pool_3x3", "avg_pool_3x3")]
    op = edge.candidates
    groups = []
    first = None
    if seps or dils:
        r = tf.nn.relu(x)
        parts, pointwise, norms = [], [], []
        if seps:
            parts.append(_grouped_depthwise(edge, r, [op[k].steps[1] for k in seps], s, 1, training))
            pointwise += [op[k].steps[2] for k in seps]
            norms += [op[k].steps[3] for k in seps]
        if dils:
            parts.append(_grouped_depthwise(edge, r, [op[k].steps[1] for k in dils], s, 2, training))
            pointwise += [op[k].steps[-2] for k in dils]
            norms += [op[k].steps[-1] for k in dils]
        h = tf.concat(parts, axis=-1) if len(parts) > 1 else parts[0]
        first = _grouped_batch_norm(_grouped_pointwise(edge, h, pointwise, training), norms, training)
        if seps and dils:
            # Split, not sliced: a slice's gradient is a slow generic kernel.
            channels = int(x.shape[-1])
            first, dil_out = tf.split(first, [len(seps) * channels, len(dils) * channels], axis=-1)
            groups.append((dil_out, dils))
        elif dils:
            groups.append((first, dils))
    second, norms = [], []
    if seps:
        r2 = tf.nn.relu(first)
        dw = _grouped_depthwise(edge, r2, [op[k].steps[5] for k in seps], 1, 1, training, repeat=False)
        second.append(_grouped_pointwise(edge, dw, [op[k].steps[6] for k in seps], training))
        norms += [op[k].steps[7] for k in seps]
    for k in pools:
        pool, bn = op[k].steps
        second.append(ops_lib.apply_layer(pool, x))
        norms.append(bn)
    if second:
        h = tf.concat(second, axis=-1) if len(second) > 1 else second[0]
        groups.append((_grouped_batch_norm(h, norms, training), seps + pools))
    for k in computed:
        if kind[k] == "skip_connect":
            groups.append((ops_lib.apply_layer(op[k], x, training), [k]))
    if not groups:  # only `none`
        groups.append((tf.zeros_like(x[:, ::s, ::s, :] if s > 1 else x), [None]))
    return groups


def grouped_mixture(groups, theta, sigma2, eps):
    """`tfvnas.gates.gate_mixture` over the channel blocks `fused_outputs` returns.

    A group of S blocks of C channels is mixed by one matrix product with
    the (S*C, C) matrix that stacks `z[slot] * I_C` per block: the weighted
    sum over the blocks in one kernel, forward and backward, instead of a
    broadcast multiplication, a reshape and a reduction over a tensor S
    times the output. With noise (`eps` of shape (B, K)) every example has
    its own gate values, so the product is a batched one with one such
    matrix per example; without, the gate means are shared by the batch.
    """
    shared = eps is None
    if shared:
        weights = tf.concat([theta, tf.zeros([1], theta.dtype)], 0)  # (K + 1,)
    else:
        z = gates_lib.example_gates(theta, sigma2, eps)
        weights = tf.concat([z, tf.zeros_like(z[:, :1])], 1)  # (B, K + 1)
    none = int(theta.shape[0])  # the slot of a `none` op: weight 0
    out = []
    for y, slots in groups:
        index = [none if k is None else k for k in slots]
        if len(slots) == 1:
            w = weights[index[0]] if shared else weights[:, index[0]][:, None, None, None]
            out.append(w * y)
            continue
        channels = int(y.shape[-1]) // len(slots)
        eye = tf.eye(channels, dtype=y.dtype)
        shape = tf.shape(y)
        if shared:
            matrix = tf.reshape(tf.gather(weights, index)[:, None, None] * eye, [len(slots) * channels, channels])
            mixed = tf.matmul(tf.reshape(y, [-1, len(slots) * channels]), matrix)
        else:
            per_example = tf.gather(weights, index, axis=1)[:, :, None, None] * eye  # (B, S, C, C)
            matrix = tf.reshape(per_example, [-1, len(slots) * channels, channels])
            mixed = tf.matmul(tf.reshape(y, [shape[0], -1, len(slots) * channels]), matrix)
        out.append(tf.reshape(mixed, tf.concat([shape[:-1], [channels]], 0)))
    return tf.add_n(out)


def _grouped_depthwise(edge, x, layers, strides, dilation, training, repeat=True):
    """Depthwise convs of `layers` (one per op) on `x` (repeated per op), as one conv.

    `x` is one tensor used by every op (`repeat`), or the channel
    concatenation of one input per op. Smaller kernels are zero-padded to
    the largest (centred: the same sums). A strided dilated conv reads
    every `strides`-th pixel only (`variational.strided_dilated_as_plain`),
    so the input is subsampled before it is repeated. Returns the channel
    concatenation of the outputs (see `_grouped_conv` for variational
    layers).
    """
    n = len(layers)
    sizes = [int((l.theta if isinstance(l, variational.VariationalLayer) else l.kernel).shape[0]) for l in layers]
    size = max(sizes)
    x, strides, dilation = variational.strided_dilated_as_plain(x, size, strides, dilation)

    def conv(inputs, kernels):
        if repeat and n > 1:
            inputs = tf.tile(inputs, [1, 1, 1, n])
        padded = []
        for kernel, k in zip(kernels, sizes):
            if k < size:
                p = (size - k) // 2
                kernel = tf.pad(kernel, [[p, p], [p, p], [0, 0], [0, 0]])
            padded.append(kernel)
        kernel = tf.concat(padded, axis=2) if n > 1 else padded[0]
        return variational.conv_same(inputs, kernel, strides, dilation, depthwise=True)

    return _grouped_conv(edge, x, layers, conv, training)


def _grouped_pointwise(edge, x, layers, training):
    """The 1x1 convs `layers[i]` on consecutive channel blocks of `x`, as one grouped conv."""

    def conv(inputs, kernels):
        kernel = tf.concat(kernels, axis=-1) if len(kernels) > 1 else kernels[0]
        return tf.nn.conv2d(inputs, kernel, strides=1, padding="SAME")

    return _grouped_conv(edge, x, layers, conv, training)


def _grouped_conv(edge, x, layers, conv, training):
    """`conv(x, kernels)` for plain or variational `layers` (all of one kind).

    Plain layers: their kernels. Variational layers (`weight_vd`) compute
    what each one's `call` does, together: the KL of each is added to
    `edge`'s losses; training samples the output with the local
    reparameterisation trick, `conv` of the means and of the squared input
    with the variances, and each layer's own noise (its seed generator, its
    block of channels), so the random stream is the per-layer one;
    inference uses the masked means.
    """
    if not isinstance(layers[0], variational.VariationalLayer):
        return conv(x, [l.kernel for l in layers])
    for layer in layers:
        edge.add_loss(layer.kl() * layer.kl_scale(layer.theta.dtype))
    if not training:
        return conv(x, [l.masked_kernel() for l in layers])
    mean = conv(x, [l.theta for l in layers])
    var = conv(tf.square(x), [tf.exp(l.log_sigma2) for l in layers])
    channels = int(mean.shape[-1]) // len(layers)
    shape = tf.concat([tf.shape(mean)[:-1], [channels]], 0)
    eps = [variational.standard_normal(shape, l.seed_generator, mean.dtype) for l in layers]
    return variational.sample_lrt(mean, var, eps=tf.concat(eps, -1) if len(eps) > 1 else eps[0])


def _grouped_batch_norm(x, layers, training):
    """`ops.BatchNorm` layers (no affine) applied to consecutive equal channel slices of `x`."""
    if len(layers) == 1:
        return layers[0].call(x, training=training)
    channels = int(x.shape[-1])
    ones, zeros = tf.ones([channels], x.dtype), tf.zeros([channels], x.dtype)
    epsilon = layers[0].epsilon
    if not training:
        y, *_ = tf.compat.v1.nn.fused_batch_norm(
            x, ones, zeros,
            mean=tf.concat([l.moving_mean for l in layers], 0),
            variance=tf.concat([l.moving_variance for l in layers], 0),
            epsilon=epsilon, is_training=False,
        )
        return y
    y, mean, variance, *_ = tf.compat.v1.nn.fused_batch_norm(x, ones, zeros, epsilon=epsilon, is_training=True)
    n = ops_lib.count_per_channel(x)
    if isinstance(n, int):
        variance = variance * ((n - 1.0) / max(n, 1.0))
    else:
        variance = variance * (n - 1.0) / tf.maximum(n, 1.0)
    means = tf.split(tf.stop_gradient(mean), len(layers))
    variances = tf.split(tf.stop_gradient(variance), len(layers))
    for layer, batch_mean, batch_var in zip(layers, means, variances):
        m = layer.momentum
        layer.moving_mean.assign(layer.moving_mean * m + batch_mean * (1 - m))
        layer.moving_variance.assign(layer.moving_variance * m + batch_var * (1 - m))
    return y
