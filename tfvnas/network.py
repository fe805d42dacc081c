"""The one topology shared by the supernet and the final network.

`cell_plan` lays out the cells (where the reductions are, how many channels
each cell has and receives); `Cell` wires a DARTS cell from a list of edges,
each computed by a layer that the caller's edge factory makes: a gated
mixture of every candidate operation in the supernet
(`tfvnas.supernet.MixedEdge`), a single operation in the final network
(`Network`, built from a `Genotype`).

References:
    - Liu, Simonyan, Yang. "DARTS: Differentiable Architecture Search." ICLR 2019.
"""

import dataclasses

import keras
import tensorflow as tf

from tfvnas import checks
from tfvnas import ops as ops_lib
from tfvnas import variational


@dataclasses.dataclass(frozen=True)
class CellPlan:
    """Where a cell sits and which channel counts it sees."""

    index: int
    reduction: bool
    reduction_prev: bool
    prev_prev_channels: int
    prev_channels: int
    channels: int

    @property
    def cell_type(self):
        return "reduce" if self.reduction else "normal"


def reduction_indices(layers):
    """Cells that reduce: at 1/3 and 2/3 of the depth (DARTS)."""
    return sorted({layers // 3, 2 * layers // 3})


def cell_plan(layers, channels, *, concat_sizes, stem_multiplier=3):
    """The layout of `layers` cells starting from `channels` channels.

    Args:
        layers: number of cells.
        channels: channels of the first cell's nodes.
        concat_sizes: `{"normal": n, "reduce": m}`, how many node outputs each
            cell type concatenates (its output has `n * channels` channels).
        stem_multiplier: the stem outputs `stem_multiplier * channels`.

    Returns:
        A list of `CellPlan`.
    """
    for name, value in (("layers", layers), ("channels", channels), ("stem_multiplier", stem_multiplier)):
        checks.check_positive_int(name, value)
    reductions = set(reduction_indices(layers))
    c_pp = c_p = stem_multiplier * channels
    c = channels
    plans = []
    reduction_prev = False
    for i in range(layers):
        reduction = i in reductions
        if reduction:
            c *= 2
        plans.append(CellPlan(i, reduction, reduction_prev, c_pp, c_p, c))
        kind = "reduce" if reduction else "normal"
        c_pp, c_p = c_p, concat_sizes[kind] * c
        reduction_prev = reduction
    return plans


@keras.saving.register_keras_serializable(package="tfvnas")
class Cell(keras.layers.Layer):
    """A DARTS cell: two preprocessed inputs, intermediate nodes, a concat.

    Node i sums its incoming edges; edge `(node, input, op_names)` applies
    `edge_factory(op_names, channels, strides)` to state `input` (states 0
    and 1 are the preprocessed cell inputs, 2 + i is node i). The output is
    the channel concatenation of the states in `concat`.

    Args:
        plan: the cell's `CellPlan` (or its dict).
        edges: list of `(node, input, op_names)`.
        concat: state indices to concatenate.
        mixed: whether an edge mixes all its ops with gates (supernet) or
            applies a single op (final network).
        weight_vd: variational convolution weights.
        affine: affine batch normalisation.
        seed: base seed of the cell's noise.

    Call arguments:
        inputs: `[s0, s1]`, the outputs of the two previous cells.
        gates: for a mixed cell, `(theta, sigma2)` of shape
            `(len(edges), num_ops)`; None otherwise.
        training: training flag.
    """

    def __init__(
        self,
        plan,
        edges,
        concat,
        mixed=False,
        weight_vd=False,
        affine=True,
        seed=None,
        drop_path=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.plan = plan if isinstance(plan, CellPlan) else CellPlan(**plan)
        self.edges = [(int(n), int(j), tuple(o)) for n, j, o in edges]
        self.concat = [int(c) for c in concat]
        self.mixed = bool(mixed)
        self.weight_vd = bool(weight_vd)
        self.affine = bool(affine)
        self.seed = seed
        self.drop_path = float(drop_path)
        self.nodes = 1 + max(n for n, _, _ in self.edges)
        self.seed_generator = keras.random.SeedGenerator(seed)
        p, c = self.plan, self.plan.channels
        kw = dict(weight_vd=self.weight_vd, affine=self.affine)
        if p.reduction_prev:
            self.preprocess0 = ops_lib.FactorizedReduce(
                p.prev_prev_channels, 2, out_channels=c, seed=_seed(seed, 0), **kw
            )
        else:
            self.preprocess0 = ops_lib.ReLUConvBN(
                p.prev_prev_channels, 1, out_channels=c, seed=_seed(seed, 0), **kw
            )
        self.preprocess1 = ops_lib.ReLUConvBN(
            p.prev_channels, 1, out_channels=c, seed=_seed(seed, 10), **kw
        )
        self.edge_layers = []
        for e, (node, inp, op_names) in enumerate(self.edges):
            strides = 2 if p.reduction and inp < 2 else 1
            edge_seed = _seed(seed, 100 * (e + 1))
            if self.mixed:
                from tfvnas.supernet import MixedEdge

                layer = MixedEdge(op_names, c, strides, seed=edge_seed, **kw)
            else:
                if len(op_names) != 1:
                    raise ValueError(
                        "A discrete cell edge must have exactly one op. "
                        f"Received: {list(op_names)}"
                    )
                layer = ops_lib.make_op(op_names[0], c, strides, seed=edge_seed, **kw)
            self.edge_layers.append(layer)

    def build(self, input_shape):
        self.built = True  # sublayers build on their first call (see ops._Chain)

    def call(self, inputs, gates=None, training=None):
        s0, s1 = inputs
        states = [
            self.preprocess0(s0, training=training),
            self.preprocess1(s1, training=training),
        ]
        for node in range(self.nodes):
            total = None
            for e, (n, inp, _) in enumerate(self.edges):
                if n != node:
                    continue
                layer = self.edge_layers[e]
                if self.mixed:
                    theta, sigma2 = gates
                    out = layer(states[inp], theta[e], sigma2[e], training=training)
                else:
                    out = layer(states[inp], training=training)
                    if training and self.drop_path > 0 and not isinstance(layer, ops_lib.Identity):
                        out = _drop_path(out, self.drop_path, self.seed_generator)
                total = out if total is None else total + out
            states.append(total)
        return tf.concat([states[i] for i in self.concat], axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(
            plan=dataclasses.asdict(self.plan),
            edges=[[n, j, list(o)] for n, j, o in self.edges],
            concat=self.concat,
            mixed=self.mixed,
            weight_vd=self.weight_vd,
            affine=self.affine,
            seed=self.seed,
            drop_path=self.drop_path,
        )
        return config


def _seed(seed, offset):
    return None if seed is None else int(seed) + offset


def _drop_path(x, rate, seed_generator):
    """Drops a whole path per example with probability `rate` (rescaling the rest)."""
    keep = 1.0 - rate
    u = tf.random.stateless_uniform(
        [tf.shape(x)[0], 1, 1, 1], seed=variational.replica_seed(seed_generator)
    )
    return x * tf.cast(u < keep, x.dtype) / keep


def stem_layers(channels, stem_multiplier, *, weight_vd, affine, seed):
    """3x3 conv + BN."""
    return [
        ops_lib.conv2d(stem_multiplier * channels, 3, weight_vd=weight_vd, seed=_seed(seed, 7)),
        ops_lib.batch_norm(affine),
    ]


def classifier_layer(num_classes, *, weight_vd, seed):
    if weight_vd:
        return variational.VariationalDense(num_classes, seed=_seed(seed, 9))
    return keras.layers.Dense(num_classes)


def normalisation_layer(normalisation):
    """Normalises raw pixels inside the model: `(x - mean) / std` per channel."""
    mean, std = normalisation
    scale = [1.0 / float(s) for s in std]
    offset = [-float(m) / float(s) for m, s in zip(mean, std)]
    # A scalar when all channels agree: the common case, and cheaper to export.
    if len(set(scale)) == 1 and len(set(offset)) == 1:
        scale, offset = scale[0], offset[0]
    return keras.layers.Rescaling(scale=scale, offset=offset, name="normalise")
