"""Optimizers whose update is one fused kernel per variable.

Keras' optimizers trace a chain of small ops per variable through the
distribution strategy's update path (learning-rate schedule, weight decay,
momentum, clipping, each per variable): for a search's hundreds of weight
variables that is a large share of the first step's trace time and graph
(measured in the benchmarks). `SGD` and `Adam` here compute the schedule, the
clipping and the all-reduce once for all variables and then run one
`ResourceApplyKerasMomentum` / `ResourceApplyAdam` kernel per variable on the
replica's own copy (every replica applies the same all-reduced gradients, so
the copies stay identical without a merge call).

The arithmetic is Keras 3's (pinned by tests against `keras.optimizers.SGD`
and `Adam`): decoupled weight decay `w -= lr * weight_decay * w` before the
update, momentum `m = momentum * m - lr * g; w += m`, Adam with bias-corrected
step size and `epsilon` outside the square root. One difference, on purpose:
with several replicas the global-norm clip is applied to the all-reduced
(global) gradient; Keras clips each replica's partial gradient before the
all-reduce.

In a traced step, `SGD` updates its variables in chunks of up to
`CHUNK` variables of one shape, each chunk one call of a `tf.function` traced
once per chunk shape and kept out of Grappler's inlining (`_noinline`), as
the supernet's edges are (`tfvnas.layers.mixed_edge`): a search updates hundreds of
variables of a few shapes, and ten graph nodes per variable would be more
than half of its step's graph. The global
norm of the clip is summed the same way, chunk by chunk.

Both are `tf.Module`s, so `tf.train.Checkpoint` tracks their slots and step.
"""

import collections
import contextlib

import keras
import tensorflow as tf

from tfvnas import replicas

CHUNK = 8


def _tf_variable(variable):
    """The `tf.Variable` (or distributed variable) behind a Keras variable."""
    return variable.value if isinstance(variable, keras.Variable) else variable


class _Targets:
    """The variables an optimizer updates, kept out of `tf.Module` tracking.

    As a plain attribute the list would make every checkpoint hold each model
    weight a second time (under the optimizer) and `optimizer.variables`
    list the model's weights.
    """

    def __init__(self, variables):
        self.variables = variables


class _Fused(tf.Module):
    """Shared parts: the step counter, the schedule, the all-reduce and the clip."""

    slot_names = ()

    def __init__(self, learning_rate, *, global_clipnorm=None, name=None):
        super().__init__(name=name)
        self._schedule = learning_rate
        self.global_clipnorm = global_clipnorm
        self._variables = None

    def build(self, variables):
        """Creates the step counter and the slot variables for `variables`.

        They are created under the strategy the variables belong to
        (mirrored like them), wherever `build` is called from.
        """
        if self._variables is not None:
            return
        targets = [_tf_variable(v) for v in variables]
        # A distributed variable knows its strategy; a plain one has none.
        strategy = next((getattr(v, "_distribute_strategy", None) for v in targets), None)
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False, name="iterations")
            for slot in self.slot_names:
                setattr(self, slot, [
                    tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name=f"{slot}_{i}")
                    for i, v in enumerate(targets)
                ])
        self._variables = _Targets(targets)

    @property
    def learning_rate(self):
        """The learning rate of the next update (of the first before `build`)."""
        return self._learning_rate(self.iterations if self._variables is not None else 0)

    def _learning_rate(self, step):
        if callable(self._schedule):
            return tf.cast(self._schedule(step), tf.float32)
        return tf.constant(self._schedule, tf.float32)

    def _prepare(self, grads, check_finite=False):
        """`[(variable, slots, gradient)]` all-reduced (summed), the learning rate, the clip's scale and
        (with `check_finite`) whether every all-reduced gradient is finite.

        A variable whose gradient is None (an op the search has pruned out of
        the computation) is left as it is, slots included, as Keras does.
        The scale (None without a clip) multiplies every gradient, as
        `tf.clip_by_global_norm` does; the squared norms are summed in
        chunks (`chunks`), and the gradients are finite when that sum is.
        """
        if self._variables is None:
            raise ValueError("The optimizer is not built: call `build(variables)` before `apply`.")
        grads = list(grads)
        targets = self._variables.variables
        if len(grads) != len(targets):
            raise ValueError(
                f"Expected one gradient per built variable ({len(targets)}). Received: {len(grads)}"
            )
        for i, (v, g) in enumerate(zip(targets, grads)):
            if g is not None and not v.shape.is_compatible_with(g.shape):
                raise ValueError(
                    f"Gradient {i} has shape {g.shape}, but built variable {i} ({v.name}) has shape "
                    f"{v.shape}: gradients must come in the order of the variables given to `build`."
                )
        slots = [getattr(self, name) for name in self.slot_names]
        kept = [
            (v, [s[i] for s in slots], g) for i, (v, g) in enumerate(zip(targets, grads)) if g is not None
        ]
        grads = [g for _, _, g in kept]
        context = tf.distribute.get_replica_context()
        if grads and context is not None and context.num_replicas_in_sync > 1:
            grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        updates = [(v, s, g) for (v, s, _), g in zip(kept, grads)]
        scale = finite = None
        if grads and (self.global_clipnorm or check_finite):
            # tf.clip_by_global_norm's arithmetic, its sum of halved squares by chunks.
            halves = [_call(_half_squares, [g for _, _, g in chunk]) for chunk in chunks(updates)]
            norm = tf.sqrt(tf.add_n(halves) * 2.0)
            if check_finite:  # only then: a tensor here puts the whole update under a `tf.cond`
                finite = tf.math.is_finite(norm)
        if grads and self.global_clipnorm:
            clip = tf.constant(self.global_clipnorm, norm.dtype)
            scale = clip * tf.minimum(1.0 / norm, 1.0 / clip) + (norm - norm)  # NaN/inf propagate
        if check_finite and finite is None:
            finite = tf.constant(True)
        return updates, self._learning_rate(self.iterations), scale, finite

    def _update_if(self, finite, update):
        """Runs `update()` and counts the step, unless `finite` is a false tensor: then nothing changes.

        `finite` is the same on every replica (it is read from the
        all-reduced gradients), so the replicas' copies stay identical.
        Returns `finite`.
        """
        def run():
            update()
            self._step()

        if finite is None:
            run()
            return None
        tf.cond(finite, run, lambda: None)
        return finite

    def _step(self):
        # Each replica increments its own copy, as it updates its own weights.
        tf.raw_ops.AssignAddVariableOp(resource=self.iterations.handle, value=tf.constant(1, tf.int64))

    def apply(self, grads, skip_nonfinite=False):
        """Applies one update with `grads` (one per built variable, same order).

        With `skip_nonfinite` (a dynamic loss scale's steps), an update whose
        all-reduced gradients are not all finite changes nothing (slots and
        step counter included), as Keras' `LossScaleOptimizer` skips it;
        returns whether they were finite (a bool tensor), else None.
        """
        raise NotImplementedError


class SGD(_Fused):
    """SGD with momentum, Keras-style decoupled weight decay and a global-norm clip.

    `exclude_from_weight_decay(var_list)` keeps the decay off some variables
    (as Keras' optimizers do): the search and the training exclude the
    variational layers' `log_sigma2` (`variational.weight_decay_exclusions`).
    """

    slot_names = ("momentums",)

    def __init__(self, learning_rate, *, momentum=0.0, weight_decay=None, global_clipnorm=None, name="SGD"):
        super().__init__(learning_rate, global_clipnorm=global_clipnorm, name=name)
        self.momentum = float(momentum)
        self.weight_decay = float(weight_decay or 0.0)
        self._no_decay = _Targets(set())

    def exclude_from_weight_decay(self, var_list):
        """Keeps weight decay off the variables of `var_list`."""
        self._no_decay.variables |= {id(_tf_variable(v)) for v in var_list}

    def apply(self, grads, skip_nonfinite=False):
        updates, lr, scale, finite = self._prepare(grads, skip_nonfinite)

        def update():
            for chunk in chunks(updates, self._decays):
                # Each replica's own copies: a distributed variable argument
                # would bind the traced function to the first chunk's variables.
                variables = [replicas.replica_local(v) for v, _, _ in chunk]
                slots = [replicas.replica_local(slot) for _, (slot,), _ in chunk]
                decay = self.weight_decay if self._decays(chunk[0][0]) else 0.0
                _call(_momentum_update(self.momentum, decay), variables, slots, [g for _, _, g in chunk], lr, scale)

        return self._update_if(finite, update)

    def _decays(self, variable):
        return bool(self.weight_decay) and id(variable) not in self._no_decay.variables


def chunks(updates, key=None):
    """`updates` (`(variable, slots, gradient)`) cut into chunks of up to `CHUNK` of one shape and dtype.

    Chunks of one signature (shape, dtype, size and `key(variable)`) call
    one traced function; the order of the updates does not matter, since
    each touches its own variables only.
    """
    buckets = collections.OrderedDict()
    for u in updates:
        v = u[0]
        buckets.setdefault((tuple(v.shape), v.dtype, None if key is None else key(v)), []).append(u)
    return [b[i:i + CHUNK] for b in buckets.values() for i in range(0, len(b), CHUNK)]


def _call(fn, *args):
    """`fn(*args)`: through its shared traced function inside a graph, directly when eager."""
    return fn(*args) if tf.inside_function() else fn.python_function(*args)


def _traced(fn):
    return tf.function(fn, autograph=False, experimental_attributes={"_noinline": True})


@_traced
def _half_squares(grads):
    return tf.add_n([tf.nn.l2_loss(g) for g in grads])


_MOMENTUM_UPDATES = {}


def _momentum_update(momentum, decay):
    """The traced SGD update of a chunk, for one momentum and weight decay."""
    key = (float(momentum), float(decay))
    if key not in _MOMENTUM_UPDATES:

        def update(variables, slots, grads, lr, scale):
            m = tf.constant(key[0], tf.float32)
            for variable, slot, grad in zip(variables, slots, grads):
                if key[1]:
                    # Keras' decoupled weight decay, before the update.
                    tf.raw_ops.AssignSubVariableOp(resource=variable.handle, value=variable * (lr * key[1]))
                if scale is not None:
                    grad = grad * scale
                tf.raw_ops.ResourceApplyKerasMomentum(
                    var=variable.handle, accum=slot.handle, lr=lr, grad=grad, momentum=m
                )

        _MOMENTUM_UPDATES[key] = _traced(update)
    return _MOMENTUM_UPDATES[key]


class Adam(_Fused):
    """Adam (Keras 3 arithmetic), with optional L2 weight decay.

    `weight_decay` adds `weight_decay * w` to each gradient before the
    update, as `torch.optim.Adam(weight_decay=...)` does: the architecture
    optimiser of DARTS (Adam 3e-4, betas (0.5, 0.999), weight decay 1e-3).
    """

    slot_names = ("m", "v")

    def __init__(self, learning_rate, *, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=0.0,
                 global_clipnorm=None, name="Adam"):
        super().__init__(learning_rate, global_clipnorm=global_clipnorm, name=name)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)
        self.weight_decay = float(weight_decay or 0.0)

    def apply(self, grads, skip_nonfinite=False):
        updates, lr, scale, finite = self._prepare(grads, skip_nonfinite)
        if scale is not None:
            updates = [(v, s, g * scale) for v, s, g in updates]

        def update():
            t = tf.cast(self.iterations + 1, tf.float32)
            beta_1, beta_2 = tf.constant(self.beta_1), tf.constant(self.beta_2)
            beta_1_power, beta_2_power = tf.pow(beta_1, t), tf.pow(beta_2, t)
            epsilon = tf.constant(self.epsilon)
            for variable, (m, v), grad in updates:
                if self.weight_decay:
                    grad = grad + self.weight_decay * variable.read_value()
                tf.raw_ops.ResourceApplyAdam(
                    var=variable.handle, m=m.handle, v=v.handle, beta1_power=beta_1_power,
                    beta2_power=beta_2_power, lr=lr, beta1=beta_1, beta2=beta_2, epsilon=epsilon, grad=grad,
                )

        return self._update_if(finite, update)


class DynamicLossScale(tf.Module):
    """The dynamic loss scale of `mixed_float16` training, with Keras' `LossScaleOptimizer` rule.

    The loss is multiplied by `scale` before the gradient is taken, so that
    small float16 gradients do not flush to zero, and the gradients are
    divided by it after. An update whose gradients are not all finite is
    skipped (`_Fused.apply(..., skip_nonfinite=True)`) and halves the scale;
    `growth_steps` finite updates in a row double it. Keras' own
    `LossScaleOptimizer` wraps a Keras optimizer; the fused optimizers here
    all-reduce and apply per replica, so the rule is kept beside them.
    The variables are created under the strategy's scope (`build`) and
    updated on every replica alike (the decision is read from all-reduced
    gradients), so checkpoints hold them.

    Args:
        initial_scale: the first scale (Keras' default 2**15).
        growth_steps: finite updates in a row before the scale doubles
            (Keras' default 2000).
    """

    def __init__(self, initial_scale=2.0**15, growth_steps=2000, name="loss_scale"):
        super().__init__(name=name)
        if not initial_scale > 0:
            raise ValueError(f"`initial_scale` must be positive. Received: initial_scale={initial_scale!r}")
        self.initial_scale = float(initial_scale)
        self.growth_steps = int(growth_steps)
        self.scale = tf.Variable(self.initial_scale, dtype=tf.float32, trainable=False, name="scale")
        self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="good_steps")

    def update(self, finite):
        """Halves the scale after a non-finite update, doubles it after `growth_steps` finite ones."""
        good = tf.where(finite, self.good_steps + 1, tf.constant(0, tf.int64))
        grow = good >= self.growth_steps
        scale = tf.where(finite, tf.where(grow, self.scale * 2.0, self.scale), self.scale * 0.5)
        self.good_steps.assign(tf.where(grow, tf.constant(0, tf.int64), good))
        self.scale.assign(scale)
