"""The DARTS baseline: softmax mixing of every candidate op, in the same supernet.

`SearchConfig(method="darts")` swaps the Gaussian gate tables of the VINNAS
supernet for `SoftmaxGates`: one architecture logit per (edge, op), mixed as
`sum_k softmax(alpha)_k * o_k(x)` with no noise and no KL, nothing pruned
during the search. Everything else (cells, ops, data split, first-order
bi-level optimisation, loop, checkpoints) is shared with VINNAS, so the two
differ only in how an edge mixes its ops. The cell is derived by the DARTS
rule: each node keeps the two incoming edges whose strongest non-`none` op
has the largest softmax weight, and that op (`derive_top_k` on the score
`-softmax(alpha)`).

References:
    - Liu, Simonyan, Yang. "DARTS: Differentiable Architecture Search." ICLR 2019.
"""

import keras
import tensorflow as tf

from tfvnas.layers import gates as gates_lib


@keras.saving.register_keras_serializable(package="tfvnas")
class SoftmaxGates(gates_lib.GateTable):
    """A table of DARTS architecture logits, one per (edge, op).

    It has the interface of `tfvnas.layers.gates.GaussianGates`, so the supernet
    and the search treat both alike: calling it returns `(weights, zeros)`
    (softmax over each edge's ops, and zero variance; the supernet's edges
    then mix without drawing noise); `derivation_log_alpha()` returns the
    derivation score `-softmax(alpha)` (lower is stronger, always below any
    threshold); `kl()` is zero and `update_evidence()` prunes nothing.

    Args:
        num_edges: number of edges (rows).
        num_ops: number of candidate operations (columns).
        alpha_init_scale: standard deviation of the initial logits (DARTS: 1e-3).
        seed: seed of the initial logits.
    """

    def __init__(self, num_edges, num_ops, alpha_init_scale=1e-3, seed=None, **kwargs):
        self.alpha_init_scale = float(alpha_init_scale)
        self.seed = seed
        super().__init__(num_edges, num_ops, **kwargs)
        shape = self.shape
        self.alpha = self.add_weight(
            name="alpha",
            shape=shape,
            initializer=keras.initializers.RandomNormal(stddev=self.alpha_init_scale, seed=seed),
        )
        self.active = self.add_weight(name="active", shape=shape, initializer="ones", trainable=False)
        self.built = True

    def weights_(self):
        return tf.nn.softmax(self.alpha, axis=-1)

    def raw_log_alpha(self):
        """The derivation score `-softmax(alpha)` (recorded in the history)."""
        return -self.weights_()

    def derivation_log_alpha(self):
        return self.raw_log_alpha()

    def kl(self):
        return tf.constant(0.0)

    def update_evidence(self, threshold=None, patience=1):
        return 0

    def call(self, training=None):
        weights = self.weights_()
        return weights, tf.zeros_like(weights)

    def get_config(self):
        config = super().get_config()
        config.update(
            alpha_init_scale=self.alpha_init_scale,
            seed=self.seed,
        )
        return config
