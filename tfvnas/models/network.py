"""The one topology shared by the supernet and the final network.

`cell_plan` lays out the cells (where the reductions are, how many channels
each cell has and receives); `Cell` wires a DARTS cell from a list of edges,
each computed by a layer that the caller's edge factory makes: a gated
mixture of every candidate operation in the supernet
(`tfvnas.layers.mixed_edge.MixedEdge`, passed in by `tfvnas.models.supernet`), a single
operation in the final network (`discrete_edge`; `Network`, built from a
`Genotype`).

References:
    - Liu, Simonyan, Yang. "DARTS: Differentiable Architecture Search." ICLR 2019.
"""

import dataclasses

import keras
import tensorflow as tf

from tfvnas import checks
from tfvnas.layers import batch_normalization as bn_lib
from tfvnas.layers import noise, variational
from tfvnas.layers import ops as ops_lib
from tfvnas.layers import registry as op_registry
from tfvnas.models import elbo


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
    `edge_factory(op_names, channels, strides, seed=..., weight_vd=...,
    affine=...)` to state `input` (states 0 and 1 are the preprocessed cell
    inputs, 2 + i is node i). The output is the channel concatenation of the
    states in `concat`.

    Args:
        plan: the cell's `CellPlan` (or its dict).
        edges: list of `(node, input, op_names)`.
        concat: state indices to concatenate.
        edge_factory: makes the layer of an edge: `discrete_edge` (the
            default: one op per edge) or a gated mixture of all its ops
            (`tfvnas.layers.mixed_edge.MixedEdge`, the supernet's). Not part of the
            config: a supernet rebuilds its cells itself.
        weight_vd: variational convolution weights.
        affine: affine batch normalisation.
        seed: base seed of the cell's noise.
        edge_options: more keyword arguments of every `edge_factory` call
            (a mixed edge's noise, skip dropout, ...).

    Call arguments:
        inputs: `[s0, s1]`, the outputs of the two previous cells.
        gates: for a mixed cell, `(theta, sigma2)` of shape
            `(len(edges), num_ops)`; edge e is called with row e of
            each. None otherwise.
        aux_skip: for a mixed cell, a scalar weight: every stride-1 edge
            adds this times its input to its output (DARTS-' auxiliary
            skip connection); None: nothing added.
        training: training flag.
        drop_path: overrides the constructor's drop-path rate (a float or a
            scalar tensor, e.g. a rate ramped up during training).
    """

    def __init__(
        self,
        plan,
        edges,
        concat,
        edge_factory=None,
        weight_vd=False,
        affine=True,
        seed=None,
        drop_path=0.0,
        edge_options=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.edge_options = dict(edge_options or {})
        self.plan = plan if isinstance(plan, CellPlan) else CellPlan(**plan)
        self.edges = [(int(n), int(j), tuple(o)) for n, j, o in edges]
        self.concat = [int(c) for c in concat]
        edge_factory = edge_factory or discrete_edge
        self.weight_vd = ops_lib.check_weight_vd(weight_vd)
        self.affine = bool(affine)
        self.seed = seed
        self.drop_path = float(drop_path)
        self.nodes = 1 + max(n for n, _, _ in self.edges)
        self.seed_generator = keras.random.SeedGenerator(seed)
        p, c = self.plan, self.plan.channels
        kw = dict(weight_vd=self.weight_vd, affine=self.affine)
        if p.reduction_prev:
            self.preprocess0 = ops_lib.FactorizedReduce(
                p.prev_prev_channels, 2, out_channels=c, seed=ops_lib.offset_seed(seed, 0), **kw
            )
        else:
            self.preprocess0 = ops_lib.ReLUConvBN(
                p.prev_prev_channels, 1, out_channels=c, seed=ops_lib.offset_seed(seed, 0), **kw
            )
        self.preprocess1 = ops_lib.ReLUConvBN(
            p.prev_channels, 1, out_channels=c, seed=ops_lib.offset_seed(seed, 10), **kw
        )
        self.edge_layers = []
        for e, (node, inp, op_names) in enumerate(self.edges):
            strides = 2 if p.reduction and inp < 2 else 1
            self.edge_layers.append(edge_factory(op_names, c, strides, seed=ops_lib.offset_seed(seed, 100 * (e + 1)),
                                                 **kw, **self.edge_options))

    def build(self, input_shape):
        """Builds every sublayer from the input shapes `[s0, s1]` (`ops.build_layer`), computing nothing."""
        states = [
            ops_lib.build_layer(self.preprocess0, input_shape[0]),
            ops_lib.build_layer(self.preprocess1, input_shape[1]),
        ]
        c = self.plan.channels
        for node in range(self.nodes):
            for (n, inp, op_names), layer in zip(self.edges, self.edge_layers):
                if n == node:
                    shape = ops_lib.build_layer(layer, states[inp])
                    if len(op_names) == 1:  # a mixed edge checks each of its ops
                        strides = 2 if self.plan.reduction and inp < 2 else 1
                        op_registry.check_op_output(op_names[0], layer, states[inp], shape, c, strides)
            states.append(shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        s1 = input_shape[1]
        strides = 2 if self.plan.reduction else 1
        spatial = [None if d is None else -(-int(d) // strides) for d in s1[1:3]]
        return (s1[0], *spatial, self.plan.channels * len(self.concat))

    def call(self, inputs, gates=None, training=None, drop_path=None, aux_skip=None):
        s0, s1 = inputs
        rate = self.drop_path if drop_path is None else drop_path
        use_drop_path = bool(training) and (drop_path is not None or self.drop_path > 0)
        states = [
            self.preprocess0(s0, training=training),
            self.preprocess1(s1, training=training),
        ]
        if gates is not None:
            # One row per edge, cut by one op per table (slicing row by row
            # would give every edge its own constant index).
            thetas, sigma2s = tf.unstack(gates[0]), tf.unstack(gates[1])
        for node in range(self.nodes):
            total = None
            for e, (n, inp, _) in enumerate(self.edges):
                if n != node:
                    continue
                layer = self.edge_layers[e]
                if gates is not None:
                    out = layer(states[inp], thetas[e], sigma2s[e], training=training)
                    if aux_skip is not None and not (self.plan.reduction and inp < 2):
                        out = out + tf.cast(aux_skip, out.dtype) * states[inp]
                else:
                    out = layer(states[inp], training=training)
                    if use_drop_path and not isinstance(layer, ops_lib.Identity):
                        out = _drop_path(out, rate, self.seed_generator)
                total = out if total is None else total + out
            states.append(total)
        return tf.concat([states[i] for i in self.concat], axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(
            plan=dataclasses.asdict(self.plan),
            edges=[[n, j, list(o)] for n, j, o in self.edges],
            concat=self.concat,
            weight_vd=self.weight_vd,
            affine=self.affine,
            seed=self.seed,
            drop_path=self.drop_path,
            edge_options=self.edge_options,
        )
        return config


def discrete_edge(op_names, channels, strides, **kwargs):
    """The layer of a final network's edge: its one op (`tfvnas.layers.registry.make_op`)."""
    if len(op_names) != 1:
        raise ValueError(f"A discrete cell edge must have exactly one op. Received: {list(op_names)}")
    return op_registry.make_op(op_names[0], channels, strides, **kwargs)


def _drop_path(x, rate, seed_generator):
    """Drops a whole path per example with probability `rate` (rescaling the rest)."""
    keep = 1.0 - tf.cast(rate, x.dtype)
    u = noise.uniform([tf.shape(x)[0], 1, 1, 1], seed_generator, x.dtype)
    return x * tf.cast(u < keep, x.dtype) / keep


def as_images(inputs, image_shape):
    """`inputs` as an NHWC batch: NHW becomes NHW1 when the model takes one channel.

    Raises:
        ValueError: for any other rank, or NHW images given to a model of
            several channels, naming the shape expected.
    """
    rank = inputs.shape.rank
    if rank == 4:
        return inputs
    if rank is None and image_shape is not None:
        # A trace relaxed to any rank (Keras' predict after NHWC and NHW
        # batches): the reshape takes both, and checks the size when it runs.
        return tf.reshape(inputs, (-1,) + tuple(image_shape)) if image_shape[-1] == 1 else inputs
    expected = "(batch, H, W, C)" if image_shape is None else f"(batch, {', '.join(map(str, image_shape))})"
    if rank == 3 and (image_shape is None or image_shape[-1] == 1):
        return inputs[..., None]
    raise ValueError(
        f"The model takes images of shape {expected}"
        + (" or, for one channel, (batch, H, W)" if image_shape is None or image_shape[-1] == 1 else "")
        + f". Received: images of shape {tuple(inputs.shape)}"
    )


def stem_layers(channels, stem_multiplier, *, weight_vd, affine, seed):
    """3x3 conv + BN."""
    return [
        ops_lib.conv2d(stem_multiplier * channels, 3, weight_vd=weight_vd, seed=ops_lib.offset_seed(seed, 7)),
        bn_lib.batch_norm(affine),
    ]


def classifier_layer(num_classes, *, weight_vd, seed):
    """The dense classifier; variational with `weight_vd` (its threshold among the options: no channel prior)."""
    if weight_vd:
        return variational.VariationalDense(num_classes, seed=ops_lib.offset_seed(seed, 9),
                                            **ops_lib.vd_options(weight_vd, ("threshold",)))
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


@keras.saving.register_keras_serializable(package="tfvnas")
class AuxiliaryHead(ops_lib.Chain):
    """Auxiliary classifier (DARTS), used only in training.

    ReLU, 5x5 average pooling (stride 3), 1x1 conv to 128 channels, BN, ReLU,
    global average pooling and a dense layer. DARTS' 2x2 'valid' conv assumes
    8x8 maps; global pooling makes the head fit any resolution.
    """

    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = checks.check_positive_int("num_classes", num_classes)
        self.steps = [
            keras.layers.ReLU(),
            keras.layers.AveragePooling2D(5, strides=3, padding="same"),
            ops_lib.conv2d(128, 1),
            bn_lib.batch_norm(True),
            keras.layers.ReLU(),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(self.num_classes),
        ]

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="tfvnas")
class Network(elbo.ELBOModel, keras.Model):
    """The discrete network a genotype describes (DARTS evaluation network).

    The same `cell_plan` and `Cell` as the supernet, with one operation per
    edge. Convolution and classifier weights are sparse variational by
    default: inference uses the masked means, and `tfvnas.compress.strip.strip`
    copies them into standard Keras layers for export. The model normalises
    raw pixels itself.

    Args:
        num_classes: number of classes.
        genotype: a `tfvnas.Genotype` (or its dict).
        layers: number of cells.
        channels: initial channels.
        stem_multiplier: stem width multiplier.
        weight_vd: sparse variational weights (False: plain Keras layers).
        auxiliary: an auxiliary head after the second reduction (training only).
        drop_path: maximum drop-path rate; the rate used is
            `drop_path * drop_path_progress`, a variable the trainer ramps.
        threshold: a weight is zero at `log_alpha >= threshold`.
        normalisation: `(mean, std)` per channel of the raw input.
        seed: base seed of all noise.
        kl_scale: what the KL is multiplied by in the model's `losses`,
            held in the variable `kl_scale` that every variational layer
            reads: `beta / N_train` for the ELBO. None (the default): `fit`
            sets it to `1 / N` for the N examples it trains on
            (`tfvnas.models.elbo`), and `tfvnas.train` sets it every step; a
            number is kept by `fit` (the `KLSchedule` callback warms it up).
        channel_prior: a scale with its own ARD prior per output channel of
            every variational convolution (`tfvnas.layers.channel_prior`), so whole
            channels go in training; needs `weight_vd`.
        channel_log_alpha_init, channel_scale_init: the channel scales'
            initial log dropout rate and mean.

    Call arguments:
        inputs: raw images, NHWC (or NHW for one-channel images).
        training: training flag.
        return_aux: also return the auxiliary logits (None without a head).

    Returns:
        Logits of shape `(batch, num_classes)` (and the auxiliary logits when
        `return_aux`).
    """

    def __init__(
        self,
        num_classes,
        genotype,
        layers=8,
        channels=16,
        stem_multiplier=3,
        weight_vd=True,
        auxiliary=False,
        drop_path=0.0,
        threshold=variational.DEFAULT_THRESHOLD,
        normalisation=((0.0,), (1.0,)),
        seed=0,
        kl_scale=None,
        channel_prior=False,
        channel_log_alpha_init=-4.0,
        channel_scale_init=0.1,
        **kwargs,
    ):
        from tfvnas.models import genotype as genotype_lib

        super().__init__(**kwargs)
        if isinstance(genotype, dict):
            genotype = genotype_lib.Genotype.from_dict(genotype)
        if not isinstance(genotype, genotype_lib.Genotype):
            raise ValueError(
                "`genotype` must be a tfvnas.Genotype or its dict. "
                f"Received: genotype of type {type(genotype).__name__}"
            )
        genotype.validate()  # against the op registry
        self.genotype = genotype
        self.num_classes = checks.check_positive_int("num_classes", num_classes)
        self.num_layers = checks.check_positive_int("layers", layers)
        self.channels = checks.check_positive_int("channels", channels)
        self.stem_multiplier = checks.check_positive_int("stem_multiplier", stem_multiplier)
        self.weight_vd = bool(weight_vd)
        self.auxiliary = bool(auxiliary)
        self.drop_path = float(drop_path)
        if not 0 <= self.drop_path < 1:
            raise ValueError(f"`drop_path` must be in [0, 1). Received: drop_path={drop_path!r}")
        self.threshold = float(threshold)
        self.normalisation = (list(normalisation[0]), list(normalisation[1]))
        self.seed = int(seed)
        self.channel_prior, self.channel_log_alpha_init, self.channel_scale_init = (
            variational.VariationalLayer.check_channel_prior(channel_prior, channel_log_alpha_init, channel_scale_init))
        if self.channel_prior and not self.weight_vd:
            raise ValueError(
                "`channel_prior` needs variational weights. Received: channel_prior=True, weight_vd=False")

        # The variational layers' options, passed down to every one of them.
        vd = self.weight_vd and {"threshold": self.threshold, "channel_prior": self.channel_prior,
                                 "channel_log_alpha_init": self.channel_log_alpha_init,
                                 "channel_scale_init": self.channel_scale_init}
        self.normalise = normalisation_layer(self.normalisation)
        self.stem = stem_layers(self.channels, self.stem_multiplier, weight_vd=vd, affine=True, seed=self.seed)
        concat = {"normal": list(genotype.normal_concat), "reduce": list(genotype.reduce_concat)}
        plans = cell_plan(
            self.num_layers,
            self.channels,
            concat_sizes={t: len(c) for t, c in concat.items()},
            stem_multiplier=self.stem_multiplier,
        )
        self.cells = [
            Cell(
                plan,
                genotype_edges(genotype, plan.cell_type),
                concat[plan.cell_type],
                weight_vd=vd,
                affine=True,
                seed=self.seed + 100_000 * (plan.index + 1),
                name=f"cell_{plan.index}",
            )
            for plan in plans
        ]
        self.aux_index = reduction_indices(self.num_layers)[-1] if self.auxiliary else None
        self.aux_head = AuxiliaryHead(self.num_classes, name="aux_head") if self.auxiliary else None
        self.global_pool = keras.layers.GlobalAveragePooling2D()
        self.classifier = classifier_layer(self.num_classes, weight_vd=vd, seed=self.seed)
        self.drop_path_progress = self.add_weight(
            name="drop_path_progress", shape=(), initializer="zeros", trainable=False
        )
        self.input_shape_built = None
        self.init_kl_scale(kl_scale)

    def build(self, input_shape):
        # One eager forward pass creates every weight (see Supernet.build).
        with tf.init_scope():
            self.call(tf.zeros((1,) + tuple(input_shape[1:])), training=False, return_aux=True)
        self.input_shape_built = tuple(int(d) for d in input_shape[1:])
        self.built = True

    def call(self, inputs, training=None, return_aux=False):
        x = self.normalise(tf.cast(as_images(inputs, self.input_shape_built), self.compute_dtype))
        for layer in self.stem:
            x = layer(x, training=training)
        drop_path = self.drop_path * self.drop_path_progress if self.drop_path > 0 else None
        s0 = s1 = x
        aux = None
        for cell in self.cells:
            s0, s1 = s1, cell([s0, s1], training=training, drop_path=drop_path)
            if return_aux and cell.plan.index == self.aux_index:
                aux = self.aux_head(s1, training=training)
        logits = self.classifier(self.global_pool(s1), training=training)
        return (logits, aux) if return_aux else logits

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "genotype": self.genotype.to_dict(),
            "layers": self.num_layers,
            "channels": self.channels,
            "stem_multiplier": self.stem_multiplier,
            "weight_vd": self.weight_vd,
            "auxiliary": self.auxiliary,
            "drop_path": self.drop_path,
            "threshold": self.threshold,
            "normalisation": [self.normalisation[0], self.normalisation[1]],
            "seed": self.seed,
            "kl_scale": self.kl_scale_argument,
            "channel_prior": self.channel_prior,
            "channel_log_alpha_init": self.channel_log_alpha_init,
            "channel_scale_init": self.channel_scale_init,
        }


def genotype_edges(genotype, cell_type):
    """`Cell` edges `(node, input, (op,))` of one cell of a genotype."""
    nodes = genotype.normal if cell_type == "normal" else genotype.reduce
    return [(i, int(inp), (op,)) for i, node in enumerate(nodes) for op, inp in node]
