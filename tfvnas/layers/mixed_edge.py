"""The supernet's gated edge: every candidate operation, mixed with Gaussian gates.

`MixedEdge` computes `sum_k z_k * op_k(x)`. On the DARTS operation set
without affine batch norm (the supernet's), its ops are computed together
(`edge_outputs`): one depthwise convolution for all separable and dilated
ops, one block-diagonal pointwise convolution per stage, one batch norm per stage,
each operation with its own weights (a test pins the result to the ops run
one by one).

**Each distinct edge is traced once.** The computation is a function of the
edge's input, its gate values and its variables (weights, batch-norm
statistics, noise state), not of the edge: in a traced step, every edge
with the same `EdgePlan` (operations, stride, training flag, `weight_vd`,
...) and input shape calls one `tf.function` (`edge_function`), which is
traced once and kept out of Grappler's function inlining (`_noinline`).
The 14 edges of a normal cell share one function, so the step graph holds
a handful of edge bodies instead of one per edge (the benchmarks measure
the graph, the trace and the first call it saves, and what the calls cost).

References:
    - Ferianc, Fan, Rodrigues. "VINNAS: Variational Inference-based Neural
      Network Architecture Search." arXiv:2007.06103.
    - Liu, Simonyan, Yang. "DARTS: Differentiable Architecture Search." ICLR 2019.
"""

import collections
import dataclasses

import keras
import tensorflow as tf

from tfvnas import replicas
from tfvnas.layers import batch_normalization as bn_lib
from tfvnas.layers import gates as gates_lib
from tfvnas.layers import noise, variational
from tfvnas.layers import ops as ops_lib
from tfvnas.layers import registry as op_registry


@keras.saving.register_keras_serializable(package="tfvnas")
class MixedEdge(keras.layers.Layer):
    """An edge computing `sum_k z_k * op_k(x)` with Gaussian gates z_k.

    Training draws every gate once per example (`tfvnas.layers.gates.gate_mixture`:
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
        noisy: draw the gates' noise in training (False: a plain mixture
            of the gate values, the DARTS baseline).
        skip_dropout: in training, the rate at which every example drops
            the stride-1 `skip_connect` as a whole (`tfvnas.layers.gates.
            skip_keep`); 0: none.
        skip_bn: the stride-1 `skip_connect` ends in a parameter-free batch
            norm like every other candidate (`tfvnas.layers.ops.Identity`,
            `normalised`).
        fused: compute the candidates together (`edge_outputs`) when the op
            set allows it; False: op by op.
        shared_function: in a traced step, call the one traced function of
            the edge's plan (`edge_function`); False: trace the computation
            inline, as eager code runs it.

    Call arguments:
        inputs: NHWC tensor.
        theta: gate means, shape `(len(op_names),)`.
        sigma2: gate variances, shape `(len(op_names),)`.
        training: training flag.
    """

    def __init__(self, op_names, channels, strides, weight_vd=False, affine=False, seed=None, noisy=True,
                 skip_dropout=0.0, skip_bn=False, fused=True, shared_function=True, **kwargs):
        super().__init__(**kwargs)
        self.op_names = op_registry.check_op_names(op_names)
        self.channels = channels
        self.strides = strides
        self.weight_vd = ops_lib.check_weight_vd(weight_vd)
        self.affine = bool(affine)
        self.seed = seed
        self.noisy = bool(noisy)
        self.skip_dropout = float(skip_dropout)
        if not 0.0 <= self.skip_dropout < 1.0:
            raise ValueError(f"`skip_dropout` must be a rate in [0, 1). Received: skip_dropout={skip_dropout!r}")
        self.skip_bn = bool(skip_bn)
        self.fused = bool(fused)
        self.shared_function = bool(shared_function)
        identity = identity_ops(self.op_names, strides)
        self.candidates = [
            op_registry.make_op(
                name,
                channels,
                strides,
                weight_vd=self.weight_vd,
                affine=self.affine,
                seed=None if seed is None else seed + 10 * (k + 1),
                **({"normalised": True} if self.skip_bn and identity[k] else {}),
            )
            for k, name in enumerate(self.op_names)
        ]
        self.seed_generator = keras.random.SeedGenerator(seed)
        # Indices of the candidates the edge computes; the others are pruned
        # (their gates are exactly zero). Set by the Supernet from its gate
        # tables when a step is traced (`Supernet.computed_ops`): call-time
        # state, not configuration.
        self.computed = tuple(range(len(self.op_names)))

    def build(self, input_shape):
        for name, op in zip(self.op_names, self.candidates):
            shape = ops_lib.build_layer(op, input_shape)
            op_registry.check_op_output(name, op, input_shape, shape, self.channels, self.strides)
        self.built = True

    def compute_output_shape(self, input_shape):
        s = self.strides
        spatial = [None if d is None else -(-int(d) // s) for d in input_shape[1:3]]
        return (input_shape[0], *spatial, self.channels)

    def call(self, inputs, theta, sigma2, training=None):
        computed = self.computed
        training = bool(training)
        if len(computed) < len(self.candidates) and training:
            self._keep_skipped_in_the_objective(computed)
        if not computed:
            x = inputs[:, :: self.strides, :: self.strides, :] if self.strides > 1 else inputs
            return tf.zeros_like(x)
        if self._fusable():
            return self._fused_call(inputs, theta, sigma2, training)
        eps = None
        if training and self.noisy:
            # Drawn for every op, computed or not, so the random stream does
            # not depend on what the step computes.
            shape = [tf.shape(inputs)[0], len(self.op_names)]
            eps = noise.standard_normal(shape, self.seed_generator, theta.dtype)
        # After the gate noise, as `edge_outputs` draws it.
        keep = skip_keep(self.op_names, self.strides, training, self.skip_dropout, tf.shape(inputs)[0],
                         self.seed_generator, theta.dtype)
        outputs = [ops_lib.apply_layer(self.candidates[k], inputs, training) for k in computed]
        if len(computed) < len(self.candidates):
            index = list(computed)
            theta, sigma2 = tf.gather(theta, index), tf.gather(sigma2, index)
            eps = None if eps is None else tf.gather(eps, index, axis=1)
            keep = None if keep is None else tf.gather(keep, index, axis=1)
        return gates_lib.gate_mixture(tf.stack(outputs, axis=0), theta, sigma2, eps, keep)

    def plan(self, computed, training, stats_out=False, replica=0):
        """The `EdgePlan` of computing `computed` (op indices) in this mode."""
        bn = next(l for l in self._flatten_layers() if isinstance(l, bn_lib.BatchNorm))
        vd_layers = variational.variational_layers(self)
        return EdgePlan(
            op_names=self.op_names,
            computed=tuple(computed),
            strides=self.strides,
            training=bool(training),
            noisy=bool(self.noisy),
            weight_vd=bool(self.weight_vd),
            threshold=vd_layers[0].threshold if vd_layers else 0.0,
            momentum=bn.momentum,
            epsilon=bn.epsilon,
            stats_out=bool(stats_out),
            replica=int(replica),
            skip_dropout=float(self.skip_dropout),
            skip_bn=self.skip_bn,
        )

    def _fused_call(self, inputs, theta, sigma2, training):
        shared = self.shared_function and tf.inside_function()
        bn = next(l for l in self._flatten_layers() if isinstance(l, bn_lib.BatchNorm))
        # Distributed moving statistics are assigned here, not inside the
        # function: their cross-replica mean is a synchronisation point.
        stats_out = shared and training and isinstance(bn.moving_mean.value, tf.distribute.DistributedValues)
        replica = tf.get_static_value(replicas.replica_id()) if shared else 0
        if replica is None:  # a replica id only known when the step runs: trace inline
            shared, replica = False, 0
        plan = self.plan(self.computed, training, stats_out, replica)
        weights, stats = edge_variables(self, plan, unwrap=shared)
        if shared:
            draws = plan.training and (plan.noisy or plan.weight_vd or plan.drops_skips)
            state = replicas.replica_local(self.seed_generator.state.value) if draws else None
            out = edge_function(plan)(inputs, theta, sigma2, state, weights, stats)
        else:
            out = edge_outputs(plan, inputs, theta, sigma2, self.seed_generator, weights, stats)
        y, kl, new_stats = out["output"], out.get("kl"), out.get("stats")
        if new_stats:
            _, variables = edge_variables(self, plan)
            for k, op_stats in zip(plan.computed, variables):
                for j, (moving_mean, moving_var) in enumerate(op_stats):
                    mean, var = new_stats[f"{k}/{j}"]
                    bn_lib.assign_synchronised(moving_mean, mean)
                    bn_lib.assign_synchronised(moving_var, var)
        if plan.weight_vd:
            layer = variational.variational_layers(self)[0]
            self.add_loss(layer.scaled_kl(kl))
        return y

    def _keep_skipped_in_the_objective(self, computed):
        """Keeps the objective and the gradients what they were when pruned ops were computed.

        A computed, masked op added its weights' ARD KL to the loss (with
        `weight_vd`) and gave its other weights exactly zero gradients; the
        same terms are added here without computing the op, so the
        optimizers see the same variables with the same gradients (weight
        decay and momentum go on as before, and Keras does not warn about
        variables without gradients).
        """
        zero, vd_layers = [], []
        for k, op in enumerate(self.candidates):
            if k in computed:
                continue
            layers = variational.variational_layers(op)
            vd_layers += layers
            covered = {id(v) for l in layers for v in l.trainable_weights}
            zero += [tf.reduce_sum(v) for v in op.trainable_weights if id(v) not in covered]
        if vd_layers:
            kl = variational.summed_ard_kl([(l.theta, l.log_sigma2) for l in vd_layers])
            self.add_loss(vd_layers[0].scaled_kl(kl))
        if zero:
            self.add_loss(0.0 * tf.add_n(zero))

    def _fusable(self):
        """Whether `edge_outputs` computes this edge (`fused`; DARTS ops without affine or bias, all built).

        A registered operation (`tfvnas.layers.registry.register`) is computed op
        by op: the fused edge knows tfvnas' own operations only.
        """
        if not self.fused or self.affine or not all(op_registry.OPS[name].builtin for name in self.op_names):
            return False
        layers = list(self._flatten_layers())
        if any(l.synchronized for l in layers if isinstance(l, bn_lib.BatchNorm)):
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
            noisy=self.noisy,
            skip_dropout=self.skip_dropout,
            skip_bn=self.skip_bn,
            fused=self.fused,
            shared_function=self.shared_function,
        )
        return config


# ---------------------------------------------------------------------------
# The fused edge, a function of its inputs and variables
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EdgePlan:
    """Everything but the tensors that an edge's computation depends on.

    Edges with equal plans (and inputs of one shape) compute the same
    function of their inputs and variables, so a traced step traces it once
    (`edge_function`).

    Attributes:
        op_names: the edge's candidate operations.
        computed: indices of the operations computed (the others are pruned).
        strides: 1 or 2.
        training: batch statistics, gate noise and weight noise (else the
            moving statistics, the gate means and the masked weights).
        noisy: gate noise in training (False: the DARTS baseline).
        weight_vd: variational convolution weights.
        threshold: the variational weights' pruning threshold (inference).
        momentum: the batch norms' moving-average momentum.
        epsilon: the batch norms' variance epsilon.
        stats_out: return the new moving statistics instead of assigning
            them (distributed variables: their cross-replica mean is an
            assignment in the replica's own graph, outside any function).
        replica: the replica id folded into the noise seeds (a constant of
            the trace, not an argument: Grappler specialises a function
            call per constant argument, one copy per edge).
        skip_dropout: in training, the rate at which every example drops
            the identity op (`tfvnas.layers.gates.skip_keep`); 0: none.
        skip_bn: the identity op ends in a parameter-free batch norm.
    """

    op_names: tuple
    computed: tuple
    strides: int
    training: bool
    noisy: bool
    weight_vd: bool
    threshold: float
    momentum: float
    epsilon: float
    stats_out: bool = False
    replica: int = 0
    skip_dropout: float = 0.0
    skip_bn: bool = False

    def kind(self, k):
        name = self.op_names[k]
        if name.startswith("sep_conv"):
            return "sep"
        if name.startswith("dil_conv"):
            return "dil"
        if name in ("max_pool_3x3", "avg_pool_3x3"):
            return "pool"
        if name == "skip_connect":
            return "identity" if identity_ops([name], self.strides)[0] else "reduce"
        return "none"

    def ops_of(self, kind):
        return [k for k in self.computed if self.kind(k) == kind]

    @property
    def drops_skips(self):
        """Whether a step draws the skip connections' dropout (`drops_skips`)."""
        return drops_skips(self.op_names, self.strides, self.training, self.skip_dropout)


def identity_ops(op_names, strides):
    """Per op, whether it is the identity (`skip_connect` at stride 1; strided, it is `FactorizedReduce`)."""
    return [name == "skip_connect" and strides == 1 for name in op_names]


def drops_skips(op_names, strides, training, rate):
    """Whether an edge draws the skip connections' dropout: in training, at a rate, with an identity op."""
    return bool(training) and rate > 0 and any(identity_ops(op_names, strides))


def skip_keep(op_names, strides, training, rate, batch, seeds, dtype):
    """The `keep` factors of an edge's skip-connection dropout (`tfvnas.layers.gates.skip_keep`), or None.

    Drawn whether the identity op is computed or pruned, so that the random
    stream does not depend on what the step computes. The fused edge
    (`edge_outputs`) and the op-by-op one (`MixedEdge.call`) both draw here.
    """
    if not drops_skips(op_names, strides, training, rate):
        return None
    return gates_lib.skip_keep(batch, identity_ops(op_names, strides), rate, seeds, dtype)


def edge_variables(edge, plan, unwrap=False):
    """`(weights, stats)` of the operations `plan` computes, in its order.

    `weights[i]` holds the convolution weights of op `plan.computed[i]`
    (separable: depthwise, pointwise, depthwise, pointwise; dilated:
    depthwise, pointwise; strided skip: the two 1x1 convolutions; a kernel,
    or `(theta, log_sigma2)` with `weight_vd`), `stats[i]` the
    `(moving_mean, moving_variance)` of its batch norms. `unwrap` gives the
    `tf.Variable` under each Keras variable (what a `tf.function` takes as
    an argument without tracing anew for every edge), this replica's own
    copy of a distributed one (`replicas.replica_local`).
    """
    def var(v):
        return replicas.replica_local(v.value) if unwrap else v

    def entry(layer):
        if isinstance(layer, variational.VariationalLayer):
            return (var(layer.theta), var(layer.log_sigma2))
        return var(layer.kernel)

    weights, stats = [], []
    for k in plan.computed:
        op, kind = edge.candidates[k], plan.kind(k)
        if kind == "sep":
            convs, bns = [op.steps[1], op.steps[2], op.steps[5], op.steps[6]], [op.steps[3], op.steps[7]]
        elif kind == "dil":
            convs, bns = [op.steps[1], op.steps[-2]], [op.steps[-1]]
        elif kind == "pool":
            convs, bns = [], [op.steps[1]]
        elif kind == "reduce":
            convs, bns = [op.conv_a, op.conv_b], [op.bn]
        elif kind == "identity":
            convs, bns = [], list(op.steps)
        else:
            convs, bns = [], []
        weights.append(tuple(entry(l) for l in convs))
        stats.append(tuple((var(b.moving_mean), var(b.moving_variance)) for b in bns))
    return tuple(weights), tuple(stats)


_FUNCTIONS = collections.OrderedDict()
_MAX_FUNCTIONS = 64


def edge_function(plan):
    """The `tf.function` computing edges of `plan`: traced once per input shape, never inlined.

    Call arguments (tensors or variables, so that every edge of the plan
    calls the same traced function): `x`, `theta`, `sigma2` (see
    `MixedEdge`), `state` (the edge's `SeedGenerator` state variable, or
    None when the plan draws no noise), `weights`, `stats`
    (`edge_variables(..., unwrap=True)`). Returns what `edge_outputs` does.

    The call is kept out of Grappler's function inlining (`_noinline`):
    inlined, every call would be optimised, instantiated and run as a copy of
    the body, which is the graph size this function exists to avoid. The
    function's gradient (its forward and backward functions) inherits the
    attribute, and is traced once too. No argument is a constant (Grappler
    would specialise the call to it, one copy per call).
    """
    fn = _FUNCTIONS.get(plan)
    if fn is None:
        def run(x, theta, sigma2, state, weights, stats):
            seeds = None if state is None else noise.GeneratorState(state, plan.replica)
            return edge_outputs(plan, x, theta, sigma2, seeds, weights, stats)

        fn = tf.function(run, autograph=False, experimental_attributes={"_noinline": True})
        _FUNCTIONS[plan] = fn
        while len(_FUNCTIONS) > _MAX_FUNCTIONS:
            _FUNCTIONS.popitem(last=False)
    else:
        _FUNCTIONS.move_to_end(plan)
    return fn


def edge_outputs(plan, x, theta, sigma2, seeds, weights, stats):
    """The mixed output of a plain supernet edge, its candidates computed together.

    Each operation's own weights are used, so the result is what the
    operations compute one by one (a test pins it), but with a fraction of
    the ops: a step on a small CPU batch is dominated by per-op cost, not
    arithmetic.

    - the first ReLU is shared; the depthwise convolutions of the separable
      ops (and those of the dilated ops) run as one depthwise convolution
      over the input repeated once per op, with the smaller kernels
      zero-padded to the largest (the same sums: 'same' padding keeps the
      kernels centred);
    - the pointwise convolutions of a stage run as one 1x1 convolution
      with a block-diagonal kernel (`block_diagonal`), and the batch norms of a stage as one fused batch norm
      over the concatenated channels (per-channel statistics do not mix);
      each operation's moving statistics are updated from its slice;
    - the pooling ops share the second stage's batch norm; a strided skip's
      two 1x1 convolutions share one ReLU and one batch norm;
    - with `weight_vd`, the ARD KL of every variational weight is one sum,
      and training draws the noise of every variational convolution of the
      edge (local reparameterisation) in one call;
    - the gate mixture is one matrix product per group (`grouped_mixture`).

    Args:
        plan: an `EdgePlan`.
        x: the edge input.
        theta, sigma2: the gate values (see `MixedEdge`).
        seeds: the noise's seed generator (a `keras.random.SeedGenerator` or
            `noise.GeneratorState`); None when the plan draws none.
        weights, stats: `edge_variables(edge, plan)`.

    Returns:
        A dict: `output`, the mixture; with `weight_vd`, `kl`, the unscaled
        ARD KL of the computed operations' variational weights; with
        `plan.stats_out`, `stats`, the new moving statistics
        `{"k/j": (mean, variance)}` of batch norm j of op k (otherwise
        they are assigned). Nothing else, so that no output of a traced
        call goes unused (Grappler would specialise the call).
    """
    eps = None
    if plan.training and plan.noisy:
        # Drawn for every op, computed or not, so the random stream does
        # not depend on what the step computes.
        # The gates' noise in their own type (float32 under a mixed policy).
        eps = noise.standard_normal([tf.shape(x)[0], len(plan.op_names)], seeds, theta.dtype)
    keep = skip_keep(plan.op_names, plan.strides, plan.training, plan.skip_dropout, tf.shape(x)[0], seeds,
                     theta.dtype)
    stats = {(k, j): pair for k, op_stats in zip(plan.computed, stats) for j, pair in enumerate(op_stats)}
    run = _Run(plan, x, dict(zip(plan.computed, weights)), stats, seeds)
    out = {"output": grouped_mixture(run.groups(), theta, sigma2, eps, keep)}
    if plan.weight_vd:
        out["kl"] = run.kl()
    if plan.stats_out:
        out["stats"] = run.new_stats
    return out


class _Run:
    """The fused computation of one edge call (see `edge_outputs`)."""

    def __init__(self, plan, x, weights, stats, seeds):
        self.plan, self.x, self.weights, self.stats = plan, x, weights, stats
        self.channels = int(x.shape[-1])
        self.new_stats = {}
        self.noise = None
        if plan.weight_vd and plan.training:
            # One draw for every variational convolution of the edge, cut
            # into each one's channels as they are computed.
            total = self._noise_channels()
            if total:
                self.noise = noise.standard_normal(_output_shape(x, plan.strides, total), seeds, x.dtype)
            self.noise_offset = 0

    def _noise_channels(self):
        ns, nd = len(self.plan.ops_of("sep")), len(self.plan.ops_of("dil"))
        reduce = len(self.plan.ops_of("reduce"))
        return self.channels * (2 * (ns + nd) + 2 * ns + reduce)

    def _take_noise(self, channels):
        start = self.noise_offset
        self.noise_offset += channels
        return self.noise[..., start:start + channels]

    def kl(self):
        pairs = [e for k in self.plan.computed for e in self.weights[k]] if self.plan.weight_vd else []
        if not pairs:
            return tf.constant(0.0, tf.float32)
        return variational.summed_ard_kl(pairs)  # float32: the variational weights are

    def conv(self, x, entries, conv):
        """`conv(x, kernels)` with plain or variational `entries` (see `edge_variables`).

        The kernels are cast to `x`'s type: variational weights are float32
        under a mixed precision policy (`tfvnas.precision`).
        """
        plan = self.plan

        def cast(kernel):
            return tf.cast(kernel, x.dtype)

        if not plan.weight_vd:
            return conv(x, [cast(e) for e in entries])
        if not plan.training:
            return conv(x, [cast(variational.masked_weight(t, s, plan.threshold)) for t, s in entries])
        mean = conv(x, [cast(t) for t, _ in entries])
        var = conv(tf.square(x), [cast(tf.exp(s)) for _, s in entries])
        return variational.sample_lrt(mean, var, eps=self._take_noise(int(mean.shape[-1])))

    def depthwise(self, x, entries, strides, dilation, repeat=True):
        """Depthwise convs of `entries` (one per op) on `x` (repeated per op), as one conv.

        `x` is one tensor used by every op (`repeat`), or the channel
        concatenation of one input per op. Smaller kernels are zero-padded
        to the largest (centred: the same sums). A strided dilated conv
        reads every `strides`-th pixel only
        (`variational.strided_dilated_as_plain`), so the input is subsampled
        before it is repeated.
        """
        n = len(entries)
        sizes = [int((e[0] if isinstance(e, tuple) else e).shape[0]) for e in entries]
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

        return self.conv(x, entries, conv)

    def pointwise(self, x, entries):
        """The 1x1 convs `entries[i]` on consecutive channel blocks of `x`, as one conv (`block_diagonal`)."""

        def conv(inputs, kernels):
            return tf.nn.conv2d(inputs, block_diagonal(kernels), strides=1, padding="SAME")

        return self.conv(x, entries, conv)

    def batch_norm(self, x, keys):
        """Parameter-free batch norm of consecutive equal channel slices of `x`, one stats key each."""
        plan = self.plan
        stats = [self.stats[key] for key in keys]
        channels = int(x.shape[-1])
        # float32 scale, offset and statistics, whatever `x`'s type.
        ones, zeros = tf.ones([channels], tf.float32), tf.zeros([channels], tf.float32)
        if not plan.training:
            mean = [tf.convert_to_tensor(m) for m, _ in stats]
            var = [tf.convert_to_tensor(v) for _, v in stats]
            y, *_ = tf.compat.v1.nn.fused_batch_norm(
                x, ones, zeros,
                mean=tf.concat(mean, 0) if len(stats) > 1 else mean[0],
                variance=tf.concat(var, 0) if len(stats) > 1 else var[0],
                epsilon=plan.epsilon, is_training=False,
            )
            return y
        y, mean, variance, *_ = tf.compat.v1.nn.fused_batch_norm(
            x, ones, zeros, epsilon=plan.epsilon, is_training=True
        )
        # The fused kernel returns the unbiased batch variance; the moving
        # statistics track the biased one (as `batch_normalization.BatchNorm`).
        n = bn_lib.count_per_channel(x)
        if isinstance(n, int):
            variance = variance * ((n - 1.0) / max(n, 1.0))
        else:
            variance = variance * (n - 1.0) / tf.maximum(n, 1.0)
        mean, variance = tf.stop_gradient(mean), tf.stop_gradient(variance)
        means = tf.split(mean, len(stats)) if len(stats) > 1 else [mean]
        variances = tf.split(variance, len(stats)) if len(stats) > 1 else [variance]
        m = plan.momentum
        for key, (moving_mean, moving_var), batch_mean, batch_var in zip(keys, stats, means, variances):
            new_mean = moving_mean * m + batch_mean * (1 - m)
            new_var = moving_var * m + batch_var * (1 - m)
            if plan.stats_out:
                self.new_stats[f"{key[0]}/{key[1]}"] = (new_mean, new_var)
            else:
                bn_lib.assign_synchronised(moving_mean, new_mean)
                bn_lib.assign_synchronised(moving_var, new_var)
        return y

    def groups(self):
        """A list of `(tensor, slots)`: `tensor` concatenates, along channels,
        one block of the edge's channels per entry of `slots`, the output of
        op `slots[i]` (an index into `op_names`). `none` ops are left out
        (their output is zero); an edge of `none` alone gives one
        `(zeros, [None])`."""
        plan, x, w = self.plan, self.x, self.weights
        s = plan.strides
        seps, dils, pools = plan.ops_of("sep"), plan.ops_of("dil"), plan.ops_of("pool")
        groups = []
        first = None
        if seps or dils:
            r = tf.nn.relu(x)
            parts, pointwise, norms = [], [], []
            if seps:
                parts.append(self.depthwise(r, [w[k][0] for k in seps], s, 1))
                pointwise += [w[k][1] for k in seps]
                norms += [(k, 0) for k in seps]
            if dils:
                parts.append(self.depthwise(r, [w[k][0] for k in dils], s, 2))
                pointwise += [w[k][1] for k in dils]
                norms += [(k, 0) for k in dils]
            h = tf.concat(parts, axis=-1) if len(parts) > 1 else parts[0]
            first = self.batch_norm(self.pointwise(h, pointwise), norms)
            if seps and dils:
                # Split, not sliced: a slice's gradient is a slow generic kernel.
                first, dil_out = tf.split(first, [len(seps) * self.channels, len(dils) * self.channels], axis=-1)
                groups.append((dil_out, dils))
            elif dils:
                groups.append((first, dils))
        second, norms = [], []
        if seps:
            r2 = tf.nn.relu(first)
            dw = self.depthwise(r2, [w[k][2] for k in seps], 1, 1, repeat=False)
            second.append(self.pointwise(dw, [w[k][3] for k in seps]))
            norms += [(k, 1) for k in seps]
        for k in pools:
            if plan.op_names[k] == "max_pool_3x3":
                second.append(ops_lib.max_pool(x, 3, s))
            else:
                second.append(tf.nn.avg_pool2d(x, 3, s, "SAME"))  # excludes the padding
            norms.append((k, 0))
        if second:
            h = tf.concat(second, axis=-1) if len(second) > 1 else second[0]
            groups.append((self.batch_norm(h, norms), seps + pools))
        for k in plan.ops_of("reduce"):
            groups.append((self.factorized_reduce(x, w[k], (k, 0)), [k]))
        for k in plan.ops_of("identity"):
            groups.append((self.batch_norm(x, [(k, 0)]) if plan.skip_bn else x, [k]))
        if not groups:  # only `none`
            groups.append((tf.zeros_like(x[:, ::s, ::s, :] if s > 1 else x), [None]))
        return groups

    def factorized_reduce(self, x, entries, key):
        """`ops.FactorizedReduce` (the strided skip): two offset strided 1x1 convs, one batch norm."""
        r = tf.nn.relu(x)
        shifted = ops_lib.shift_up_left(r)

        def conv(inputs, kernels):
            return tf.nn.conv2d(inputs, kernels[0], strides=2, padding="SAME")

        a = self.conv(r, [entries[0]], conv)
        b = self.conv(shifted, [entries[1]], conv)
        return self.batch_norm(tf.concat([a, b], axis=-1), [key])


def block_diagonal(kernels):
    """One 1x1 kernel that applies `kernels[i]` to the i-th block of input channels.

    The kernels `(1, 1, c_i, d_i)` sit on the diagonal of a
    `(1, 1, sum c, sum d)` kernel, zeros elsewhere, so one plain convolution
    computes them all: output block i reads input block i only. A grouped
    convolution (input depth a multiple of the kernel's) would compute the
    same with fewer multiplications, but its gradient exists on CPU only
    where oneDNN runs (TensorFlow enables it on Intel CPUs by default, not
    on AMD's); the zero blocks cost little at the widths of a cell.
    """
    if len(kernels) == 1:
        return kernels[0]
    sizes = [int(k.shape[2]) for k in kernels]
    total, start, columns = sum(sizes), 0, []
    for kernel, size in zip(kernels, sizes):
        columns.append(tf.pad(kernel, [[0, 0], [0, 0], [start, total - start - size], [0, 0]]))
        start += size
    return tf.concat(columns, axis=-1)


def _output_shape(x, strides, channels):
    """The shape of an edge output of `channels` channels (static where `x`'s is)."""
    dims = [x.shape[1], x.shape[2]]
    if all(d is not None for d in dims):
        return [tf.shape(x)[0]] + [-(-int(d) // strides) for d in dims] + [channels]
    spatial = (tf.shape(x)[1:3] + strides - 1) // strides
    return tf.concat([tf.shape(x)[:1], spatial, [channels]], 0)


def grouped_mixture(groups, theta, sigma2, eps, keep=None):
    """`tfvnas.layers.gates.gate_mixture` over the channel blocks of `edge_outputs`' groups.

    A group of S blocks of C channels is mixed by one matrix product with
    the (S*C, C) matrix that stacks `z[slot] * I_C` per block: the weighted
    sum over the blocks in one kernel, forward and backward, instead of a
    broadcast multiplication, a reshape and a reduction over a tensor S
    times the output. With noise (`eps` of shape (B, K)) every example has
    its own gate values, so the product is a batched one with one such
    matrix per example, as with `keep` (`tfvnas.layers.gates.skip_keep`); without
    either, the gate means are shared by the batch.
    """
    shared = eps is None and keep is None
    dtype = groups[0][0].dtype  # the outputs' type; the gates are float32 under a mixed policy
    if shared:
        weights = tf.cast(tf.concat([theta, tf.zeros([1], theta.dtype)], 0), dtype)  # (K + 1,)
    else:
        z = gates_lib.example_gates(theta, sigma2, eps, keep)
        weights = tf.cast(tf.concat([z, tf.zeros_like(z[:, :1])], 1), dtype)  # (B, K + 1)
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
    return tf.add_n(out) if len(out) > 1 else out[0]
