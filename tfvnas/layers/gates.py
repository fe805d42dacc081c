"""VINNAS' architecture gates: a table of ARD Gaussian gates, their per-example mixture, pruning by evidence.

Every (edge, op) of a cell type has one scalar gate z ~ N(theta, sigma^2)
with log dropout rate `log_alpha = log(sigma^2 / theta^2)`. The ARD KL
depends on `log_alpha` only (`variational.ard_kl_of_log_alpha`), and so
does the pruning decision. Two parameterisations keep theta from crossing
zero, where the additive one (`theta`, `log_sigma2`) lets `log_alpha` jump
to large values whatever the data say:

- `positive` (the default): `theta = exp(log_theta) > 0` and `log_sigma2`.
  A mixture weight has no use for a sign (every op ends in batch norm, or
  is the identity or a pooling); the KL pulls `log_theta` down and
  `log_sigma2` up, so an op the data do not defend fades and its dropout
  rate rises, as with sparse variational dropout.
- `log_alpha`: `theta` and `log_alpha` themselves, `sigma^2 = alpha *
  theta^2`; the KL acts on `log_alpha` only.

docs/search.md compares the two.

A gate is one scalar, so it is sampled once per example: the edge output of
example b is `sum_k (theta_k + sigma_k * eps_bk) * o_k(x_b)` with
eps of shape (batch, K) (`gate_mixture`). Drawing the noise per element of
the output instead would be Gaussian dropout on activations, a different
model whose noise averages out downstream.

A gate is pruned only when the evidence holds: its `log_alpha` is at or
above the threshold at `patience` consecutive checks (`GaussianGates.
update_evidence`). Pruning is permanent, and the gate's `log_alpha` at that
moment is kept for the record.

**The per-node floor.** A cell's derivation keeps `min_inputs` (the `top_k`
rule's k) distinct inputs per node, so pruning never takes a node below
`min_inputs` live edges (an edge is live while one of its countable ops,
every op but `none`, is active): a gate whose pruning would do so is *held*,
active, whatever its `log_alpha` (`node_floor`). When several gates of one
node are due at the same check, they go in order of the derivation's own
reading (`derivation_log_alpha`, the averaged one), weakest first, so the
floor keeps the edges the derivation ranks highest. Unstructured pruning
without it empties nodes, and a derivation then has to refill them from
gates that were pruned, ranked by how far each overshot the threshold.

References:
    - Ferianc, Fan, Rodrigues. "VINNAS: Variational Inference-based Neural
      Network Architecture Search." arXiv:2007.06103.
    - Kingma, Salimans, Welling. "Variational Dropout and the Local
      Reparameterization Trick." NeurIPS 2015 (the log_alpha
      parameterisation of Gaussian dropout).
"""

import keras
import numpy as np
import tensorflow as tf

from tfvnas import checks
from tfvnas.layers import noise, variational

PARAMETERISATIONS = ("positive", "log_alpha")


def gate_mixture(outputs, theta, sigma2, eps, keep=None):
    """`sum_k z_k * outputs[k]` with z_bk = theta_k + sqrt(sigma2_k) * eps_bk, one draw per example.

    Args:
        outputs: tensor `(K, B, ...)` stacking the K operation outputs.
        theta: gate means, shape `(K,)`.
        sigma2: gate variances, shape `(K,)`.
        eps: standard normal noise of shape `(B, K)`, or None for the mean
            `sum_k theta_k * outputs[k]`.
        keep: None, or factors of shape `(B, K)` that multiply every
            example's gates (`skip_keep`: the skip connections' dropout).

    Returns:
        A tensor of shape `outputs.shape[1:]`.
    """
    if eps is None and keep is None:
        return tf.tensordot(tf.cast(theta, outputs.dtype), outputs, axes=1)
    z = tf.cast(example_gates(theta, sigma2, eps, keep), outputs.dtype)  # (B, K), in the outputs' type
    shape = tf.shape(outputs)
    flat = tf.reshape(outputs, [shape[0], shape[1], -1])  # (K, B, rest)
    mixed = tf.einsum("bk,kbr->br", z, flat)
    return tf.reshape(mixed, shape[1:])


def example_gates(theta, sigma2, eps, keep=None):
    """The gate values of every example: `(theta + sqrt(sigma2) * eps) * keep`, shape `(B, K)`.

    Without `eps`, every example's gates are the means; without `keep`, the factor is 1.
    """
    if eps is None:
        z = theta[None, :]
    else:
        z = theta[None, :] + tf.sqrt(sigma2)[None, :] * eps
    return z if keep is None else z * keep


def node_floor(candidates, active, order, node_of_edge, countable, min_inputs):
    """Which of the `candidates` gates can be pruned without taking a node below `min_inputs` live edges.

    Args:
        candidates: bool `(edges, ops)`, the gates due for pruning.
        active: bool `(edges, ops)`, the gates active now.
        order: float `(edges, ops)`; due gates are pruned highest first (the
            weakest by the derivation's reading).
        node_of_edge: int `(edges,)`, the node each edge enters.
        countable: bool `(ops,)`, the ops that make an edge live (all but `none`).
        min_inputs: the live edges every node keeps (a node with fewer
            incoming edges keeps all of them); 0: no floor.

    Returns:
        `(prune, held)`, bool `(edges, ops)`: the gates to prune now, and
        the due ones kept by the floor.
    """
    candidates = np.asarray(candidates, bool)
    if not min_inputs or not candidates.any():
        return candidates, np.zeros_like(candidates)
    active = np.array(active, bool)
    countable = np.asarray(countable, bool)
    node_of_edge = np.asarray(node_of_edge)
    prune = np.zeros_like(candidates)
    due = [tuple(ix) for ix in np.argwhere(candidates)]
    due.sort(key=lambda ix: -float(order[ix]))
    for e, o in due:
        if not countable[o]:
            prune[e, o] = True
            active[e, o] = False
            continue
        edge_stays_live = (active[e] & countable).sum() > 1
        if not edge_stays_live:
            node = node_of_edge[e]
            edges = np.flatnonzero(node_of_edge == node)
            live = int(sum((active[j] & countable).any() for j in edges))
            if live - 1 < min(min_inputs, len(edges)):
                continue
        prune[e, o] = True
        active[e, o] = False
    return prune, candidates & ~prune


def live_edges(active, node_of_edge, countable):
    """Per node, the number of incoming edges with an active countable op."""
    active = np.asarray(active, bool) & np.asarray(countable, bool)[None, :]
    node_of_edge = np.asarray(node_of_edge)
    return [int(active[node_of_edge == n].any(axis=1).sum()) for n in range(int(node_of_edge.max()) + 1)]


def skip_keep(batch, identity, rate, seed_generator, dtype):
    """Dropout of the skip connections, per example: the `keep` factors of `gate_mixture`.

    Every example drops each identity op (`identity[k]` true) as a whole
    with probability `rate`, and keeps it scaled by `1 / (1 - rate)`, so
    the mixture's mean is unchanged; the other ops' factor is 1. It is the
    operation-level dropout of P-DARTS (Chen et al., 2019) on the
    parameter-free shortcut that a search otherwise favours, drawn once per
    example like the gates, not per element. One uniform draw of shape
    `(batch, K)` from `seed_generator`.
    """
    u = noise.uniform([batch, len(identity)], seed_generator, dtype)
    dropped = tf.where(u < rate, tf.zeros_like(u), tf.fill(tf.shape(u), tf.constant(1.0 / (1.0 - rate), dtype)))
    return tf.where(tf.constant(identity)[None, :], dropped, tf.ones_like(u))


class GateTable(keras.layers.Layer):
    """Shared shape of the gate tables (`GaussianGates`, `tfvnas.layers.darts.SoftmaxGates`).

    One row per edge, one column per candidate operation. Calling a table
    returns `(theta, sigma2)`, each of shape `(num_edges, num_ops)`; the
    search derives from `derivation_log_alpha()` (lower is stronger),
    records `current_log_alpha()` in its history and calls
    `update_evidence()` at every pruning check.
    """

    def current_log_alpha(self):
        """What the history records; the derivation's values unless a table averages them."""
        return self.derivation_log_alpha()

    def __init__(self, num_edges, num_ops, **kwargs):
        self.num_edges = checks.check_positive_int("num_edges", num_edges)
        self.num_ops = checks.check_positive_int("num_ops", num_ops)
        super().__init__(**kwargs)
        self.shape = (self.num_edges, self.num_ops)

    def compute_output_spec(self, training=None):
        return (keras.KerasTensor(self.shape), keras.KerasTensor(self.shape))

    def get_config(self):
        return {**super().get_config(), "num_edges": self.num_edges, "num_ops": self.num_ops}


@keras.saving.register_keras_serializable(package="tfvnas")
class GaussianGates(variational.KLTerm, GateTable):
    """A table of ARD-gated Gaussian gates z ~ N(theta, alpha * theta^2), one per (edge, op).

    The layer owns two trainable tables (`log_theta` and `log_sigma2`, or
    `theta` and `log_alpha`: see `parameterisation`), and three
    non-trainable tables: `active` (0/1: pruned gates stay pruned),
    `streak` (consecutive checks each gate has read `log_alpha >=
    threshold`) and `pruned_log_alpha` (each pruned gate's `log_alpha` when
    it was pruned), and `averaged_log_alpha` when `average_decay` > 0.
    Calling it returns the effective `(theta, sigma2)` with
    pruned gates exactly zero, and adds the KL of the active gates, times
    the model's KL scale, with `add_loss`.

    Args:
        num_edges: number of edges (rows).
        num_ops: number of candidate operations (columns).
        theta_init: initial gate mean (the same for every op set size).
        log_alpha_init: initial log dropout rate.
        threshold: pruning threshold on `log_alpha`.
        kl_scale: what the KL is multiplied by in `losses` when no model
            binds its own variable (`variational.bind_kl_scale`).
        parameterisation: 'positive' or 'log_alpha' (the module docstring).
        average_decay: in [0, 1). Above 0, every pruning check
            (`update_evidence`) also updates an exponential moving average of
            each active gate's `log_alpha` with this decay, and the
            derivation reads it (`derivation_log_alpha`): the gates move by
            about the learning rate at every Adam step, so close
            competitors swap places from one step to the next, and the
            average (Polyak averaging of the iterates) is the estimate of
            where they settle. The pruning rule reads the current values.
            0: the derivation reads the current values too.
        nodes: the cell's intermediate nodes (rows are edges in
            `tfvnas.models.genotype.edge_list(nodes)` order); needed with
            `min_inputs`.
        min_inputs: the per-node floor (`node_floor`): pruning never takes a
            node below this many live edges. 0: no floor.
        countable: per op, whether it makes an edge live (False for `none`);
            default every op.

    Call arguments:
        training: unused; the gates are the same in both modes (the mixed
            edges draw the noise, once per example).

    Returns:
        `(theta, sigma2)`, each of shape `(num_edges, num_ops)`.
    """

    def __init__(
        self,
        num_edges,
        num_ops,
        theta_init=1.0,
        log_alpha_init=-3.0,
        threshold=variational.DEFAULT_THRESHOLD,
        kl_scale=1.0,
        parameterisation="positive",
        average_decay=0.0,
        nodes=None,
        min_inputs=0,
        countable=None,
        **kwargs,
    ):
        if isinstance(average_decay, bool) or not isinstance(average_decay, (int, float)) or not (
                0 <= average_decay < 1):
            raise ValueError(f"`average_decay` must be in [0, 1). Received: average_decay={average_decay!r}")
        self.average_decay = float(average_decay)
        self.theta_init = float(theta_init)
        self.log_alpha_init = float(log_alpha_init)
        self.threshold = float(threshold)
        if parameterisation not in PARAMETERISATIONS:
            raise ValueError(
                f"`parameterisation` must be one of {', '.join(map(repr, PARAMETERISATIONS))}. "
                f"Received: parameterisation={parameterisation!r}"
            )
        if parameterisation == "positive" and not self.theta_init > 0:
            raise ValueError(f"`theta_init` must be positive. Received: theta_init={theta_init!r}")
        self.parameterisation = parameterisation
        super().__init__(num_edges, num_ops, **kwargs)
        self.min_inputs = checks.check_non_negative_int("min_inputs", min_inputs)
        self.nodes = None if nodes is None else checks.check_positive_int("nodes", nodes)
        if self.min_inputs and self.nodes is None:
            raise ValueError(f"`min_inputs` needs `nodes` (which edge enters which node). Received: "
                             f"min_inputs={min_inputs!r}, nodes=None")
        if self.nodes is not None and self.nodes * (self.nodes + 3) // 2 != self.num_edges:
            raise ValueError(f"A cell of {self.nodes} nodes has {self.nodes * (self.nodes + 3) // 2} edges. "
                             f"Received: nodes={nodes!r}, num_edges={num_edges!r}")
        self.countable = [True] * self.num_ops if countable is None else [bool(c) for c in countable]
        if len(self.countable) != self.num_ops:
            raise ValueError(f"`countable` must hold one flag per op ({self.num_ops}). Received: countable={countable!r}")
        self.init_kl_scale(kl_scale)

        def weight(name, value):
            return self.add_weight(name=name, shape=self.shape, initializer=keras.initializers.Constant(value))

        if parameterisation == "positive":
            log_theta = float(np.log(self.theta_init))
            self.log_theta = weight("log_theta", log_theta)
            self.log_sigma2 = weight("log_sigma2", self.log_alpha_init + 2.0 * log_theta)
        else:
            self.theta = weight("theta", self.theta_init)
            self.log_alpha = weight("log_alpha", self.log_alpha_init)
        self.active = self.add_weight(name="active", shape=self.shape, initializer="ones", trainable=False)
        self.streak = self.add_weight(name="streak", shape=self.shape, initializer="zeros", trainable=False)
        self.pruned_log_alpha = self.add_weight(
            name="pruned_log_alpha", shape=self.shape, initializer="zeros", trainable=False
        )
        if self.average_decay:
            self.averaged_log_alpha = self.add_weight(
                name="averaged_log_alpha", shape=self.shape,
                initializer=keras.initializers.Constant(self.log_alpha_init), trainable=False,
            )
        self.built = True

    def theta_value(self):
        """The gate means."""
        if self.parameterisation == "positive":
            return tf.exp(self.log_theta)
        return tf.convert_to_tensor(self.theta)

    def raw_log_alpha(self):
        """Log dropout rates of every gate, pruned or not."""
        if self.parameterisation == "positive":
            return self.log_sigma2 - 2.0 * self.log_theta
        return tf.convert_to_tensor(self.log_alpha)

    def set_theta(self, values):
        """Sets the gate means, keeping each gate's `log_alpha`."""
        values = np.asarray(values, "float32")
        if self.parameterisation == "positive":
            la = self.raw_log_alpha().numpy()
            self.log_theta.assign(np.log(values))
            self.log_sigma2.assign(la + 2.0 * np.log(values))
        else:
            self.theta.assign(values)

    def set_log_alpha(self, values):
        """Sets every gate's `log_alpha`, keeping its mean."""
        values = np.broadcast_to(np.asarray(values, "float32"), self.shape)
        if self.parameterisation == "positive":
            self.log_sigma2.assign(values + 2.0 * self.log_theta.numpy())
        else:
            self.log_alpha.assign(values)
        if self.average_decay:  # a state set by hand is its own average
            self.averaged_log_alpha.assign(values)

    def current_log_alpha(self):
        """`log_alpha` of active gates now, the value at pruning of pruned ones (the history's record)."""
        return tf.where(self.active > 0, self.raw_log_alpha(), tf.convert_to_tensor(self.pruned_log_alpha))

    def derivation_log_alpha(self):
        """What the derivation reads: as `current_log_alpha`, with active gates averaged (`average_decay`)."""
        if not self.average_decay:
            return self.current_log_alpha()
        return tf.where(self.active > 0, tf.convert_to_tensor(self.averaged_log_alpha),
                        tf.convert_to_tensor(self.pruned_log_alpha))

    def kl(self):
        """Unscaled ARD KL summed over the active gates."""
        kl = variational.ard_kl_of_log_alpha(self.raw_log_alpha())
        return tf.reduce_sum(tf.where(self.active > 0, kl, tf.zeros_like(kl)))

    @property
    def node_of_edge(self):
        """The node each row's edge enters (None without `nodes`)."""
        if self.nodes is None:
            return None
        return np.array([i for i in range(self.nodes) for _ in range(2 + i)])

    def live_edges(self):
        """Per node, its edges with an active countable op (needs `nodes`)."""
        return live_edges(self.active.numpy() > 0, self.node_of_edge, self.countable)

    def settled(self):
        """Whether pruning is done: every node at `min_inputs` live edges, each with one active countable op."""
        if not self.min_inputs:
            return False
        active = (self.active.numpy() > 0) & np.asarray(self.countable)[None, :]
        per_edge = active.sum(axis=1)
        floor = [min(self.min_inputs, 2 + n) for n in range(self.nodes)]
        return self.live_edges() == floor and bool(np.all(per_edge <= 1))

    def update_evidence(self, threshold=None, patience=1):
        """One check: counts each gate's streak at `log_alpha >= threshold`, prunes at `patience`.

        A gate's streak grows by one at every check that reads its
        `log_alpha` at or above the threshold and falls back to zero at any
        check below it; a gate whose streak reaches `patience` is pruned
        for good, and its `log_alpha` of that check kept in
        `pruned_log_alpha`, unless the per-node floor holds it
        (`min_inputs`, `node_floor`): a held gate stays active and due, and
        goes at the first check that can spare it. With `patience=1` this is
        a plain threshold.

        Returns:
            The number of gates pruned by this check.
        """
        threshold = self.threshold if threshold is None else float(threshold)
        patience = checks.check_positive_int("patience", patience)
        la = self.raw_log_alpha().numpy()
        active = self.active.numpy() > 0
        if self.average_decay:
            d = self.average_decay
            average = self.averaged_log_alpha.numpy()
            self.averaged_log_alpha.assign(np.where(active, d * average + (1.0 - d) * la, average).astype("float32"))
        over = active & (la >= threshold)
        streak = np.where(over, self.streak.numpy() + 1, 0).astype("float32")
        due = over & (streak >= patience)
        if self.min_inputs:
            newly, _ = node_floor(due, active, self.derivation_log_alpha().numpy(), self.node_of_edge,
                                  self.countable, self.min_inputs)
        else:
            newly = due
        self.streak.assign(np.where(newly, 0.0, streak).astype("float32"))
        if newly.any():
            self.pruned_log_alpha.assign(np.where(newly, la, self.pruned_log_alpha.numpy()).astype("float32"))
            self.active.assign(np.where(newly, 0.0, self.active.numpy()).astype("float32"))
        return int(newly.sum())

    def call(self, training=None):
        self.add_loss(self.scaled_kl(self.kl()))
        # tf.where, not a product: a pruned gate is exactly zero even if its
        # variance overflowed to inf.
        on = self.active > 0
        theta = self.theta_value()
        if self.parameterisation == "positive":
            sigma2 = tf.exp(self.log_sigma2)
        else:
            sigma2 = tf.exp(self.log_alpha) * tf.square(theta)
        zeros = tf.zeros_like(theta)
        return tf.where(on, theta, zeros), tf.where(on, sigma2, zeros)

    def get_config(self):
        config = super().get_config()
        config.update(
            theta_init=self.theta_init,
            log_alpha_init=self.log_alpha_init,
            threshold=self.threshold,
            kl_scale=self.kl_scale,
            parameterisation=self.parameterisation,
            average_decay=self.average_decay,
            nodes=self.nodes,
            min_inputs=self.min_inputs,
            countable=list(self.countable),
        )
        return config
