"""The VINNAS supernet: every edge mixes every candidate op with Gaussian gates.

References:
    - Ferianc, Fan, Rodrigues. "VINNAS: Variational Inference-based Neural
      Network Architecture Search." arXiv:2007.06103.
    - Liu, Simonyan, Yang. "DARTS: Differentiable Architecture Search." ICLR 2019.
"""

import keras
import numpy as np
import tensorflow as tf

from tfvnas import checks
from tfvnas import darts as darts_lib
from tfvnas import genotype as genotype_lib
from tfvnas import network
from tfvnas import ops as ops_lib
from tfvnas import variational

CELL_TYPES = ("normal", "reduce")


@keras.saving.register_keras_serializable(package="tfvnas")
class MixedEdge(keras.layers.Layer):
    """An edge computing `sum_k z_k * op_k(x)` with Gaussian gates z_k.

    Training draws the output with the local reparameterisation trick
    (`variational.gate_mixture_moments`, then one noise sample per
    element); inference returns the mean. Gates the caller passes as zero
    (pruned) contribute exactly zero.

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
        self.built = True  # sublayers build on their first call (see ops._Chain)

    def call(self, inputs, theta, sigma2, training=None):
        computed = self.computed
        if len(computed) < len(self.candidates) and training:
            self._keep_skipped_in_the_objective(computed)
        if not computed:
            x = inputs[:, :: self.strides, :: self.strides, :] if self.strides > 1 else inputs
            mean = var = tf.zeros_like(x)
        else:
            if self._fusable():
                groups = _fused_outputs(self, inputs, computed, training)
                mean, var = _grouped_mixture_moments(groups, theta, sigma2)
            else:
                outputs = [ops_lib.apply_layer(self.candidates[k], inputs, training) for k in computed]
                if len(computed) < len(self.candidates):
                    index = list(computed)
                    theta, sigma2 = tf.gather(theta, index), tf.gather(sigma2, index)
                mean, var = variational.gate_mixture_moments(tf.stack(outputs, axis=0), theta, sigma2)
        if training and self.noisy:
            return variational.sample_lrt(mean, var, self.seed_generator)
        return mean

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
                self.add_loss(layer.kl())
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


@keras.saving.register_keras_serializable(package="tfvnas")
class Supernet(keras.Model):
    """A DARTS supernet with ARD-gated mixed edges.

    The gates of each cell type are one `GaussianGates` table shared by all
    cells of that type (rows: edges in `genotype.edge_list` order, columns:
    `op_names`). The model normalises raw pixels itself.

    Args:
        num_classes: number of classes.
        layers: number of cells.
        channels: initial channels.
        nodes: intermediate nodes per cell.
        op_names: candidate operations.
        stem_multiplier: stem width multiplier.
        weight_vd: sparse variational weights in every convolution and the
            classifier.
        threshold: pruning threshold on `log_alpha`.
        gate_theta_init: initial gate mean.
        gate_log_sigma2_init: initial gate log variance.
        normalisation: `(mean, std)` per channel of the raw input.
        seed: base seed of all noise.

    Call arguments:
        inputs: raw images, NHWC.
        training: training flag.

    Returns:
        Logits of shape `(batch, num_classes)`.
    """

    def __init__(
        self,
        num_classes,
        layers=5,
        channels=8,
        nodes=4,
        op_names=ops_lib.OP_SETS[ops_lib.DEFAULT_OP_SET],
        stem_multiplier=3,
        weight_vd=False,
        threshold=variational.DEFAULT_THRESHOLD,
        gate_theta_init=1.0,
        gate_log_sigma2_init=-6.0,
        normalisation=((0.0,), (1.0,)),
        seed=0,
        method="vinnas",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if method not in darts_lib.METHODS:
            raise ValueError(
                f"`method` must be one of {', '.join(darts_lib.METHODS)}. Received: method={method!r}"
            )
        self.method = method
        self.num_classes = checks.check_positive_int("num_classes", num_classes)
        self.num_layers = checks.check_positive_int("layers", layers)
        self.channels = checks.check_positive_int("channels", channels)
        self.nodes = checks.check_positive_int("nodes", nodes)
        self.op_names = ops_lib.check_op_names(op_names)
        self.stem_multiplier = stem_multiplier
        self.weight_vd = bool(weight_vd)
        self.threshold = float(threshold)
        self.gate_theta_init = float(gate_theta_init)
        self.gate_log_sigma2_init = float(gate_log_sigma2_init)
        self.normalisation = (list(normalisation[0]), list(normalisation[1]))
        self.seed = int(seed)

        edge_list = genotype_lib.edge_list(self.nodes)
        num_edges = len(edge_list)
        gate_kw = dict(
            theta_init=self.gate_theta_init,
            log_sigma2_init=self.gate_log_sigma2_init,
            threshold=self.threshold,
        )
        if self.method == "darts":
            self.normal_gates = darts_lib.SoftmaxGates(
                num_edges, len(self.op_names), seed=self.seed, name="normal_gates"
            )
            self.reduce_gates = darts_lib.SoftmaxGates(
                num_edges, len(self.op_names), seed=self.seed + 1, name="reduce_gates"
            )
        else:
            self.normal_gates = variational.GaussianGates(num_edges, len(self.op_names), name="normal_gates", **gate_kw)
            self.reduce_gates = variational.GaussianGates(num_edges, len(self.op_names), name="reduce_gates", **gate_kw)

        self.normalise = network.normalisation_layer(self.normalisation)
        self.stem = network.stem_layers(
            self.channels, stem_multiplier, weight_vd=self.weight_vd, affine=False, seed=self.seed
        )
        concat = list(range(2, 2 + self.nodes))
        plans = network.cell_plan(
            self.num_layers,
            self.channels,
            concat_sizes={"normal": self.nodes, "reduce": self.nodes},
            stem_multiplier=stem_multiplier,
        )
        edges = [(node, inp, self.op_names) for node, inp in edge_list]
        self.cells = [
            network.Cell(
                plan,
                edges,
                concat,
                mixed=True,
                weight_vd=self.weight_vd,
                affine=False,
                seed=self.seed + 100_000 * (plan.index + 1),
                name=f"cell_{plan.index}",
            )
            for plan in plans
        ]
        for cell in self.cells:
            for edge in cell.edge_layers:
                edge.noisy = self.method == "vinnas"
        self.global_pool = keras.layers.GlobalAveragePooling2D()
        self.classifier = network.classifier_layer(self.num_classes, weight_vd=self.weight_vd, seed=self.seed)
        # The op set traced steps compute (None: `computed_ops()`, every op
        # not pruned). The search pins it and moves it on when re-tracing
        # pays (`Searcher.end_epoch`); pruned ops still in it are masked to
        # exactly zero.
        self.step_ops = None

    def build(self, input_shape):
        # One eager forward pass creates every weight; Keras' default (a
        # symbolic trace of `call`) costs as much as tracing a whole step.
        with tf.init_scope():
            self.call(tf.zeros((1,) + tuple(input_shape[1:])), training=False)
        self.built = True

    @property
    def gates(self):
        return {"normal": self.normal_gates, "reduce": self.reduce_gates}

    def computed_ops(self):
        """`{"normal": rows, "reduce": rows}`: per edge, the op indices a step computes.

        An op pruned in a cell type's gate table is pruned in every cell of
        that type, so it leaves the computation of all of them. A traced step
        keeps the set it was traced with (`step_ops` when set): the search
        re-traces its step when pruning has removed enough (`Searcher.end_epoch`).
        """
        with tf.init_scope():  # the gate state, even while a step is traced
            active = {t: np.asarray(g.active.numpy()) > 0 for t, g in self.gates.items()}
        return {t: tuple(tuple(np.flatnonzero(row).tolist()) for row in a) for t, a in active.items()}

    def call(self, inputs, training=None):
        computed = self.step_ops or self.computed_ops()
        for cell in self.cells:
            for edge, ops in zip(cell.edge_layers, computed[cell.plan.cell_type]):
                edge.computed = ops
        x = self.normalise(tf.cast(inputs, self.compute_dtype))
        for layer in self.stem:
            x = ops_lib.apply_layer(layer, x, training)
        gate_values = {t: g(training=training) for t, g in self.gates.items()}
        s0 = s1 = x
        for cell in self.cells:
            s0, s1 = s1, cell([s0, s1], gates=gate_values[cell.plan.cell_type], training=training)
        return self.classifier(self.global_pool(s1), training=training)

    # -- variables --------------------------------------------------------

    @property
    def arch_variables(self):
        """The gate parameters of both cell types (theta and log_sigma2; DARTS: alpha)."""
        return [v for g in self.gates.values() for v in g.trainable_weights]

    @property
    def weight_variables(self):
        """Every other trainable variable (operation, stem, classifier weights)."""
        arch = {id(v) for v in self.arch_variables}
        return [v for v in self.trainable_variables if id(v) not in arch]

    # -- gates ------------------------------------------------------------

    def log_alpha(self):
        """`{"normal": array, "reduce": array}` of shape (edges, ops); +inf where pruned."""
        return {t: g.log_alpha().numpy() for t, g in self.gates.items()}

    def prune(self, threshold=None):
        """Prunes gates at `log_alpha >= threshold`; returns how many were newly pruned."""
        return sum(g.prune(threshold) for g in self.gates.values())

    def active_ops(self):
        """`{"normal": n, "reduce": m}` gates still active."""
        return {t: int(np.sum(g.active.numpy())) for t, g in self.gates.items()}

    def arch_kl(self):
        return sum(g.kl() for g in self.gates.values())

    def weight_kl(self):
        layers = variational.variational_layers(self)
        if not layers:
            return tf.constant(0.0)
        return tf.add_n([l.kl() for l in layers])

    def derive(self, rule="top_k", k=2, threshold=None):
        """The genotype the current gates give, by the `top_k` or `threshold` rule."""
        threshold = self.threshold if threshold is None else threshold
        kwargs = dict(nodes=self.nodes, threshold=threshold)
        if rule == "top_k":
            return genotype_lib.derive_top_k(self.log_alpha(), self.op_names, k=k, **kwargs)
        if rule == "threshold":
            return genotype_lib.derive_threshold(self.log_alpha(), self.op_names, **kwargs)
        raise ValueError(f"`rule` must be 'top_k' or 'threshold'. Received: rule={rule!r}")

    def get_config(self):
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "layers": self.num_layers,
            "channels": self.channels,
            "nodes": self.nodes,
            "op_names": list(self.op_names),
            "stem_multiplier": self.stem_multiplier,
            "weight_vd": self.weight_vd,
            "threshold": self.threshold,
            "gate_theta_init": self.gate_theta_init,
            "gate_log_sigma2_init": self.gate_log_sigma2_init,
            "normalisation": [self.normalisation[0], self.normalisation[1]],
            "seed": self.seed,
            "method": self.method,
        }


# ---------------------------------------------------------------------------
# The fused edge
# ---------------------------------------------------------------------------

_FUSED_OPS = frozenset(
    {"sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5", "max_pool_3x3", "avg_pool_3x3",
     "skip_connect", "none"}
)


def _fused_outputs(edge, x, computed, training):
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


def _grouped_mixture_moments(groups, theta, sigma2):
    """`variational.gate_mixture_moments` over the channel blocks `_fused_outputs` returns.

    A group of S blocks of C channels is mixed by one matrix product with
    the (S*C, C) matrix that stacks `theta[slot] * I_C` per block (and one
    with `sigma2[slot] * I_C` on the squared outputs): the weighted sum over
    the blocks in one kernel, forward and backward, instead of a broadcast
    multiplication, a reshape and a reduction over a tensor S times the
    output.
    """
    zero = tf.zeros([1], theta.dtype)
    theta_ext, sigma2_ext = tf.concat([theta, zero], 0), tf.concat([sigma2, zero], 0)
    none = int(theta.shape[0])
    means, variances = [], []
    for y, slots in groups:
        index = [none if k is None else k for k in slots]
        if len(slots) == 1:
            t, v = theta_ext[index[0]], sigma2_ext[index[0]]
            means.append(t * y)
            variances.append(v * tf.square(y))
            continue
        channels = int(y.shape[-1]) // len(slots)
        eye = tf.eye(channels, dtype=y.dtype)

        def mix(values, weights):
            matrix = tf.reshape(tf.gather(weights, index)[:, None, None] * eye, [len(slots) * channels, channels])
            flat = tf.reshape(values, [-1, len(slots) * channels])
            return tf.reshape(tf.matmul(flat, matrix), tf.concat([tf.shape(values)[:-1], [channels]], 0))

        means.append(mix(y, theta_ext))
        variances.append(mix(tf.square(y), sigma2_ext))
    return tf.add_n(means), tf.add_n(variances)


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
        edge.add_loss(layer.kl())
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
    n = ops_lib._count_per_channel(x)
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
