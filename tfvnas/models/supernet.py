"""The VINNAS supernet: every edge mixes every candidate op with Gaussian gates.

References:
    - Ferianc, Fan, Rodrigues. "VINNAS: Variational Inference-based Neural
      Network Architecture Search." arXiv:2007.06103.
    - Liu, Simonyan, Yang. "DARTS: Differentiable Architecture Search." ICLR 2019.
"""

import keras
import numpy as np
import tensorflow as tf

from tfvnas import checks, choices
from tfvnas.layers import darts as darts_lib
from tfvnas.layers import gates as gates_lib
from tfvnas.layers import mixed_edge, variational
from tfvnas.layers import ops as ops_lib
from tfvnas.layers import registry as op_registry
from tfvnas.models import derivation, elbo, network
from tfvnas.models import genotype as genotype_lib


@keras.saving.register_keras_serializable(package="tfvnas")
class Supernet(elbo.ELBOModel, keras.Model):
    """A DARTS supernet with ARD-gated mixed edges.

    The gates of each cell type are one `tfvnas.layers.gates.GaussianGates` table
    shared by all cells of that type (rows: edges in `genotype.edge_list`
    order, columns: `op_names`). The model normalises raw pixels itself, and
    owns the KL scale (`kl_scale`, a variable every KL layer reads; see
    `tfvnas.models.elbo`).

    Args:
        num_classes: number of classes.
        layers: number of cells.
        channels: initial channels.
        nodes: intermediate nodes per cell.
        op_names: candidate operations.
        stem_multiplier: stem width multiplier.
        weight_vd: sparse variational weights in every convolution and the
            classifier.
        threshold: pruning threshold on `log_alpha`, of the gates and of the
            variational weights.
        gate_theta_init: initial gate mean.
        gate_log_alpha_init: initial gate log dropout rate.
        gate_parameterisation: 'positive' or 'log_alpha' (`tfvnas.layers.gates`).
        gate_average_decay: the derivation reads a moving average of each
            gate's `log_alpha` over the pruning checks with this decay
            (`tfvnas.layers.gates.GaussianGates`, `average_decay`); 0: the current
            values.
        normalisation: `(mean, std)` per channel of the raw input.
        seed: base seed of all noise.
        method: 'vinnas' or 'darts' (softmax gates, `tfvnas.layers.darts`).
        kl_scale: the KL's scale in `losses`, `beta / N_train` (the search
            sets it every step); None: `fit` sets it to `1 / N`
            (`tfvnas.models.elbo`).
        skip_dropout: in training, the rate at which every example drops
            each stride-1 `skip_connect` of every edge as a whole (scaled by
            `1 / (1 - rate)` when kept; `tfvnas.layers.gates.skip_keep`); 0: none.
        top_k: the inputs per node of the derived cell; pruning never takes a
            node below this many live edges (`tfvnas.layers.gates.node_floor`).
        skip_bn: the stride-1 `skip_connect` ends in a parameter-free batch
            norm, as every other candidate does (`tfvnas.layers.ops.Identity`).
        aux_skip: DARTS-' auxiliary skip connection: every stride-1 edge adds
            its input times the model's `aux_skip_weight` (a variable the
            search decays from this value to 0); 0: none.
        fused: compute each edge's candidates together where the op set
            allows (`tfvnas.layers.mixed_edge.edge_outputs`).
        shared_edge_functions: edges of one plan call one traced function
            (`tfvnas.layers.mixed_edge.edge_function`); False: every edge
            traced inline.

    Call arguments:
        inputs: raw images, NHWC (or NHW for one-channel images).
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
        op_names=op_registry.OP_SETS[op_registry.DEFAULT_OP_SET],
        stem_multiplier=3,
        weight_vd=False,
        threshold=variational.DEFAULT_THRESHOLD,
        gate_theta_init=1.0,
        gate_log_alpha_init=-3.0,
        gate_parameterisation="positive",
        gate_average_decay=0.0,
        normalisation=((0.0,), (1.0,)),
        seed=0,
        method="vinnas",
        kl_scale=None,
        skip_dropout=0.0,
        top_k=2,
        skip_bn=False,
        aux_skip=0.0,
        fused=True,
        shared_edge_functions=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if method not in choices.METHODS:
            raise ValueError(
                f"`method` must be one of {', '.join(choices.METHODS)}. Received: method={method!r}"
            )
        self.method = method
        self.num_classes = checks.check_positive_int("num_classes", num_classes)
        self.num_layers = checks.check_positive_int("layers", layers)
        self.channels = checks.check_positive_int("channels", channels)
        self.nodes = checks.check_positive_int("nodes", nodes)
        self.op_names = op_registry.check_op_names(op_names)
        self.stem_multiplier = stem_multiplier
        self.weight_vd = bool(weight_vd)
        self.threshold = float(threshold)
        self.gate_theta_init = float(gate_theta_init)
        self.gate_log_alpha_init = float(gate_log_alpha_init)
        self.gate_parameterisation = gate_parameterisation
        self.gate_average_decay = float(gate_average_decay)
        self.normalisation = (list(normalisation[0]), list(normalisation[1]))
        self.seed = int(seed)
        self.skip_dropout = float(skip_dropout)
        if not 0.0 <= self.skip_dropout < 1.0:
            raise ValueError(f"`skip_dropout` must be a rate in [0, 1). Received: skip_dropout={skip_dropout!r}")
        self.top_k = checks.check_positive_int("top_k", top_k)
        self.skip_bn = bool(skip_bn)
        if isinstance(aux_skip, bool) or not isinstance(aux_skip, (int, float)) or aux_skip < 0:
            raise ValueError(f"`aux_skip` must be a non-negative number. Received: aux_skip={aux_skip!r}")
        self.aux_skip = float(aux_skip)
        self.fused = bool(fused)
        self.shared_edge_functions = bool(shared_edge_functions)

        edge_list = genotype_lib.edge_list(self.nodes)
        self.normal_gates, self.reduce_gates = self._make_gates(len(edge_list))
        self.normalise = network.normalisation_layer(self.normalisation)
        # The variational layers' options, passed down to every one of them.
        vd = self.weight_vd and {"threshold": self.threshold}
        self.stem = network.stem_layers(self.channels, stem_multiplier, weight_vd=vd, affine=False, seed=self.seed)
        self.cells = self._make_cells(edge_list, stem_multiplier, vd)
        # DARTS-' auxiliary skip weight, set by the search at every step.
        self.aux_skip_weight = None
        if self.aux_skip:
            self.aux_skip_weight = self.add_weight(
                name="aux_skip_weight", shape=(), initializer=keras.initializers.Constant(self.aux_skip),
                trainable=False)
        self.global_pool = keras.layers.GlobalAveragePooling2D()
        self.classifier = network.classifier_layer(self.num_classes, weight_vd=vd, seed=self.seed)
        # The op set traced steps compute (None: `computed_ops()`, every op
        # not pruned). The search pins it and moves it on when re-tracing
        # pays (`Searcher.end_epoch`); pruned ops still in it are masked to
        # exactly zero.
        self.step_ops = None
        self.init_kl_scale(kl_scale)
        self.input_shape_built = None

    def _make_gates(self, num_edges):
        """The normal and reduction cells' gate tables: Gaussian (VINNAS) or softmax (DARTS)."""
        if self.method == "darts":
            # The gates stay float32 under a mixed precision policy (`tfvnas.precision`).
            return tuple(darts_lib.SoftmaxGates(num_edges, len(self.op_names), seed=self.seed + i,
                                                name=f"{t}_gates", dtype="float32")
                         for i, t in enumerate(("normal", "reduce")))
        gate_kw = dict(
            theta_init=self.gate_theta_init,
            log_alpha_init=self.gate_log_alpha_init,
            parameterisation=self.gate_parameterisation,
            average_decay=self.gate_average_decay,
            threshold=self.threshold,
            nodes=self.nodes,
            min_inputs=self.top_k,
            countable=[name != "none" for name in self.op_names],
        )
        return tuple(gates_lib.GaussianGates(num_edges, len(self.op_names), name=f"{t}_gates", dtype="float32",
                                             **gate_kw) for t in ("normal", "reduce"))

    def _make_cells(self, edge_list, stem_multiplier, weight_vd):
        """Every cell, its edges mixed over every op, each edge given the search's options at construction."""
        concat = list(range(2, 2 + self.nodes))
        plans = network.cell_plan(
            self.num_layers,
            self.channels,
            concat_sizes={"normal": self.nodes, "reduce": self.nodes},
            stem_multiplier=stem_multiplier,
        )
        edges = [(node, inp, self.op_names) for node, inp in edge_list]
        options = dict(noisy=self.method == "vinnas", skip_dropout=self.skip_dropout, skip_bn=self.skip_bn,
                       fused=self.fused, shared_function=self.shared_edge_functions)
        return [
            network.Cell(plan, edges, concat, edge_factory=mixed_edge.MixedEdge, weight_vd=weight_vd, affine=False,
                         seed=self.seed + 100_000 * (plan.index + 1), edge_options=options,
                         name=f"cell_{plan.index}")
            for plan in plans
        ]

    def build(self, input_shape):
        # Every weight is created from the shapes alone (`ops.build_layer`):
        # Keras' default (a symbolic trace of `call`) costs as much as
        # tracing a whole step, and an eager pass seconds of op-by-op work.
        image = tuple(int(d) for d in input_shape[1:])
        with tf.init_scope():
            shape = (None,) + (image + (1,) if len(image) == 2 else image)
            for layer in self.stem:
                shape = ops_lib.build_layer(layer, shape)
            s0 = s1 = shape
            for cell in self.cells:
                cell.build([s0, s1])
                s0, s1 = s1, cell.compute_output_shape([s0, s1])
            self.classifier.build((None, s1[-1]))
        self.input_shape_built = image
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
        x = self.normalise(tf.cast(network.as_images(inputs, self.input_shape_built), self.compute_dtype))
        for layer in self.stem:
            x = ops_lib.apply_layer(layer, x, training)
        gate_values = {t: g(training=training) for t, g in self.gates.items()}
        s0 = s1 = x
        aux = None if self.aux_skip_weight is None else tf.convert_to_tensor(self.aux_skip_weight)
        for cell in self.cells:
            s0, s1 = s1, cell([s0, s1], gates=gate_values[cell.plan.cell_type], training=training, aux_skip=aux)
        return self.classifier(self.global_pool(s1), training=training)

    # -- variables --------------------------------------------------------

    @property
    def arch_variables(self):
        """The gate parameters of both cell types (theta and log_alpha; DARTS: alpha)."""
        return [v for g in self.gates.values() for v in g.trainable_weights]

    @property
    def weight_variables(self):
        """Every other trainable variable (operation, stem, classifier weights)."""
        arch = {id(v) for v in self.arch_variables}
        return [v for v in self.trainable_variables if id(v) not in arch]

    # -- gates ------------------------------------------------------------

    def log_alpha(self):
        """`{"normal": array, "reduce": array}` of shape (edges, ops), as the derivation reads them.

        Active gates give their `log_alpha` averaged over the pruning checks
        (`gate_average_decay`; the current value without it), pruned ones the
        value they had when they were pruned (at or above the threshold).
        The history records the current values (`GaussianGates.current_log_alpha`).
        """
        return {t: g.derivation_log_alpha().numpy() for t, g in self.gates.items()}

    def update_evidence(self, threshold=None, patience=1):
        """One pruning check of both gate tables (`GaussianGates.update_evidence`); returns how many were pruned."""
        return sum(g.update_evidence(threshold, patience) for g in self.gates.values())

    def active(self):
        """`{"normal": array, "reduce": array}` of 0/1: the gates not pruned."""
        return {t: g.active.numpy() for t, g in self.gates.items()}

    def settled(self):
        """Whether pruning has nothing left to decide: every node of both cells at `top_k` live edges with
        one op each (`GaussianGates.settled`; never for the DARTS baseline, which prunes nothing)."""
        return self.method == "vinnas" and all(g.settled() for g in self.gates.values())

    def pruned_share(self):
        """`{"normal": share, "reduce": share}` of each gate table pruned."""
        return {t: float(1.0 - np.mean(g.active.numpy())) for t, g in self.gates.items()}

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

    def derive(self, rule="top_k", k=None, threshold=None):
        """The genotype the current gates give, by the `top_k` (k: default `top_k`) or `threshold` rule."""
        k = self.top_k if k is None else k
        threshold = self.threshold if threshold is None else threshold
        kwargs = dict(nodes=self.nodes, threshold=threshold, active=self.active())
        if rule == "top_k":
            return derivation.derive_top_k(self.log_alpha(), self.op_names, k=k, **kwargs)
        if rule == "threshold":
            return derivation.derive_threshold(self.log_alpha(), self.op_names, k=self.top_k, **kwargs)
        raise ValueError(f"`rule` must be 'top_k' or 'threshold'. Received: rule={rule!r}")

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "layers": self.num_layers,
            "channels": self.channels,
            "nodes": self.nodes,
            "op_names": list(self.op_names),
            "stem_multiplier": self.stem_multiplier,
            "weight_vd": self.weight_vd,
            "threshold": self.threshold,
            "gate_theta_init": self.gate_theta_init,
            "gate_log_alpha_init": self.gate_log_alpha_init,
            "gate_parameterisation": self.gate_parameterisation,
            "gate_average_decay": self.gate_average_decay,
            "normalisation": [self.normalisation[0], self.normalisation[1]],
            "seed": self.seed,
            "method": self.method,
            "kl_scale": self.kl_scale_argument,
            "skip_dropout": self.skip_dropout,
            "top_k": self.top_k,
            "skip_bn": self.skip_bn,
            "aux_skip": self.aux_skip,
            "fused": self.fused,
            "shared_edge_functions": self.shared_edge_functions,
        }
