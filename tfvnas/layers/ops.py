"""Candidate operations of the DARTS search space: their Keras layers.

Each operation is an `Op`, a `Chain` of steps built in its `__init__`
(`SepConv`, `DilConv`, `Pool`, `FactorizedReduce`, `Identity`, `Zero`, and
`ReLUConvBN`, a cell's input preprocessing): it maps `channels` input
channels to `channels` output channels with the given stride (the
resolution divided by it, rounded up). `weight_vd=True` makes every
convolution a sparse variational one (`tfvnas.layers.variational`);
`affine=False` gives the parameter-free batch normalisation DARTS uses in
the supernet (`tfvnas.layers.batch_normalization`). `conv2d` and
`depthwise_conv2d` make those convolutions, for an operation of one's own
too; `apply_layer` and `build_layer` call and build a layer without Keras'
per-call machinery. Which name makes which layer is
`tfvnas.layers.registry`.

References:
    - Liu, Simonyan, Yang. "DARTS: Differentiable Architecture Search."
      ICLR 2019 (operations and cell structure).
"""

import keras
import tensorflow as tf

from tfvnas import checks
from tfvnas.layers import variational
from tfvnas.layers.batch_normalization import BatchNorm, batch_norm


def offset_seed(seed, offset):
    """`seed + offset`, or None when `seed` is None (the layer then draws its own)."""
    return None if seed is None else int(seed) + offset


VD_OPTIONS = ("threshold", "channel_prior", "channel_log_alpha_init", "channel_scale_init")


def check_weight_vd(weight_vd):
    """`weight_vd` as an op keeps it: False, True, or a dict of the variational layers' options.

    The options (`VD_OPTIONS`: the pruning threshold, the channel prior) are
    constructor arguments of `tfvnas.layers.variational.VariationalConv2D`
    and its depthwise twin; `True` takes their defaults. A model passes them
    down through its cells and ops to every variational layer it builds.
    """
    if isinstance(weight_vd, dict):
        unknown = sorted(set(weight_vd) - set(VD_OPTIONS))
        if unknown:
            raise ValueError(f"`weight_vd` options must be among {', '.join(VD_OPTIONS)}. "
                             f"Received: weight_vd={weight_vd!r}")
        return dict(weight_vd)
    return bool(weight_vd)


def vd_options(weight_vd, keys=VD_OPTIONS):
    """The variational layers' keyword arguments `weight_vd` holds ({} for True), among `keys`."""
    return {k: v for k, v in weight_vd.items() if k in keys} if isinstance(weight_vd, dict) else {}


def conv2d(filters, kernel_size, strides=1, dilation_rate=1, *, weight_vd=False, seed=None, name=None):
    """A bias-free 'same' Conv2D, variational when `weight_vd` (True, or a dict of its options)."""
    if weight_vd:
        return variational.VariationalConv2D(
            filters, kernel_size, strides=strides, dilation_rate=dilation_rate, seed=seed, name=name,
            **vd_options(weight_vd),
        )
    if strides > 1 and dilation_rate > 1:
        raise ValueError(
            "A plain strided dilated Conv2D is not supported. "
            f"Received: strides={strides}, dilation_rate={dilation_rate}"
        )
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        dilation_rate=dilation_rate,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=name,
    )


def depthwise_conv2d(kernel_size, strides=1, dilation_rate=1, *, weight_vd=False, seed=None):
    """Bias-free 'same' depthwise conv layers (a list: a subsample may follow).

    TensorFlow has no strided dilated depthwise convolution; it is computed
    at stride 1 and subsampled, by `VariationalDepthwiseConv2D` itself or,
    with plain weights, by a 1x1 max-pool of stride `strides` (a standard
    layer that keeps every `strides`-th pixel).
    """
    if weight_vd:
        return [
            variational.VariationalDepthwiseConv2D(
                kernel_size, strides=strides, dilation_rate=dilation_rate, seed=seed, **vd_options(weight_vd)
            )
        ]
    subsample = strides > 1 and dilation_rate > 1
    layers = [
        keras.layers.DepthwiseConv2D(
            kernel_size,
            strides=1 if subsample else strides,
            dilation_rate=dilation_rate,
            padding="same",
            use_bias=False,
            depthwise_initializer="he_normal",
        )
    ]
    if subsample:
        layers.append(keras.layers.MaxPooling2D(pool_size=1, strides=strides))
    return layers


def apply_layer(layer, inputs, training=None):
    """`layer(inputs, training=training)` without Keras' per-call machinery, once built.

    A supernet step calls thousands of small sublayers. Keras' `__call__`
    (name scopes, autocast, argument inspection, build checks) costs far
    more than the TensorFlow op under it while a step is traced, and trace
    time is what makes the first step slow. A built standard layer is
    computed here with the TensorFlow op Keras' TensorFlow backend runs for
    it (same kernel, same result); a built tfvnas layer through its `call`.
    An unbuilt layer goes through `__call__`, which builds it.
    """
    if not layer.built:
        return layer(inputs, training=training)
    kind = type(layer)
    if kind is keras.layers.ReLU and _plain_relu(layer):
        return tf.nn.relu(inputs) if layer.max_value is None else tf.nn.relu6(inputs)
    if kind is keras.layers.Conv2D and _plain_conv(layer):
        return tf.nn.conv2d(
            inputs, layer.kernel, strides=layer.strides[0], padding="SAME", dilations=layer.dilation_rate[0]
        )
    if kind is keras.layers.DepthwiseConv2D and _plain_conv(layer) and (
        layer.strides[0] == 1 or layer.dilation_rate[0] == 1
    ):
        s, d = layer.strides[0], layer.dilation_rate[0]
        return tf.nn.depthwise_conv2d(
            inputs, layer.kernel, strides=[1, s, s, 1], padding="SAME", dilations=[d, d]
        )
    if kind in (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D) and layer.data_format == "channels_last":
        pool = max_pool if kind is keras.layers.MaxPooling2D else tf.nn.avg_pool2d
        return pool(inputs, layer.pool_size, layer.strides, layer.padding.upper())
    if isinstance(layer, (BatchNorm, Chain, variational.VariationalConv2D, variational.VariationalDepthwiseConv2D)):
        return layer.call(inputs, training=training)
    return layer(inputs, training=training)


def max_pool(x, pool_size, strides, padding="SAME"):
    """`tf.nn.max_pool2d`, with a gradient that runs oneDNN's kernel inside any traced function.

    The gradient computes the pooling again: TensorFlow's oneDNN pass
    replaces the generic `MaxPoolGrad` kernel (several times slower; the
    largest single op of a training step that has max pools) only when the
    pooling it differentiates is in the same graph, and a traced function's
    forward and backward can be two graphs.
    """
    window = [1, *_pair(pool_size), 1]
    steps = [1, *_pair(strides), 1]

    @tf.custom_gradient
    def pool(inputs):
        def grad(dy):
            again = tf.nn.max_pool2d(inputs, window[1:3], steps[1:3], padding)
            return tf.raw_ops.MaxPoolGrad(orig_input=inputs, orig_output=again, grad=dy, ksize=window,
                                          strides=steps, padding=padding)

        return tf.nn.max_pool2d(inputs, window[1:3], steps[1:3], padding), grad

    return pool(x)


def _pair(value):
    return (int(value), int(value)) if not isinstance(value, (tuple, list)) else tuple(int(v) for v in value)


def shift_up_left(x):
    """`x` moved one pixel up and left, zeros at the far edges (FactorizedReduce's second path).

    A slice and a pad: the slice's gradient is a pad (a strided slice's is
    `StridedSliceGrad`, a slow generic kernel).
    """
    return tf.pad(tf.slice(x, [0, 1, 1, 0], [-1, -1, -1, -1]), [[0, 0], [0, 1], [0, 1], [0, 0]])


def build_layer(layer, input_shape):
    """Builds `layer` (and the sublayers of a tfvnas composite) for `input_shape`, computing nothing.

    Creating a supernet's weights by running it once costs seconds of eager
    execution and of Keras' per-call machinery over thousands of sublayers;
    their shapes follow from the input shape alone. A layer without its own
    `build` or `compute_output_shape` (a registered operation's) is run
    once on a symbolic input. Returns the output shape.
    """
    input_shape = tuple(input_shape)
    if isinstance(layer, FactorizedReduce):
        for conv in (layer.conv_a, layer.conv_b):
            build_layer(conv, input_shape)
        shape = conv_output_shape(input_shape, 2, layer.out_channels)
        build_layer(layer.bn, shape)
        layer.built = True
        return shape
    if isinstance(layer, (Identity, Zero)) and not layer.steps:
        layer.built = True
        return conv_output_shape(input_shape, layer.strides, input_shape[-1])
    if isinstance(layer, Chain):
        shape = input_shape
        for step in layer.steps:
            shape = build_layer(step, shape)
        layer.built = True
        return shape
    if not layer.built and type(layer).build is not keras.layers.Layer.build:
        layer.build(input_shape)
    if layer.built:
        try:
            return tuple(layer.compute_output_shape(input_shape))
        except NotImplementedError:
            pass
    # A layer of another kind (a registered operation's): Keras builds it by
    # running it on a symbolic input, which gives the output shape too.
    return tuple(layer(keras.KerasTensor(input_shape)).shape)


def conv_output_shape(shape, strides, channels):
    def out(n):
        return None if n is None else -(-int(n) // strides)

    return (shape[0], out(shape[1]), out(shape[2]), channels)


def _plain_relu(layer):
    """A ReLU or a ReLU6 (MobileNet's), with no slope or threshold."""
    return layer.max_value in (None, 6.0) and not layer.negative_slope and not layer.threshold


def _plain_conv(layer):
    return (
        layer.padding == "same"
        and not layer.use_bias
        and layer.activation is keras.activations.linear
        and layer.data_format == "channels_last"
        and len(set(layer.strides)) == 1
        and len(set(layer.dilation_rate)) == 1
        and (layer.strides[0] == 1 or layer.dilation_rate[0] == 1)
        and getattr(layer, "depth_multiplier", 1) == 1
        and getattr(layer, "groups", 1) == 1
    )


class Chain(keras.layers.Layer):
    """Applies `self.steps` in order; the steps are built in `__init__`."""

    steps = ()

    def build(self, input_shape):
        # Sublayers build on their first call. Without this, Keras builds a
        # composite layer by tracing `call` symbolically, once per level of
        # nesting, which dominates supernet construction time.
        self.built = True

    def call(self, inputs, training=None):
        x = inputs
        for step in self.steps:
            x = apply_layer(step, x, training=training)
        return x


class Op(Chain):
    """Base of tfvnas' operations: validates and records the arguments; `steps` are applied in order.

    A subclass builds its `steps` in `__init__` after calling this one; an
    operation made this way is stripped (`tfvnas.compress.strip`) step by step.
    """

    def __init__(self, channels, strides, weight_vd=False, affine=True, seed=None, **kwargs):
        self.channels = _check_positive_int("channels", channels)
        self.strides = check_strides(strides)
        self.weight_vd = check_weight_vd(weight_vd)
        self.affine = bool(affine)
        self.seed = seed
        super().__init__(**kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(
            channels=self.channels,
            strides=self.strides,
            weight_vd=self.weight_vd,
            affine=self.affine,
            seed=self.seed,
        )
        return config


def check_strides(strides):
    if isinstance(strides, bool) or not isinstance(strides, int) or strides not in (1, 2):
        raise ValueError(f"`strides` must be 1 or 2. Received: strides={strides!r}")
    return strides


_check_positive_int = checks.check_positive_int


@keras.saving.register_keras_serializable(package="tfvnas")
class SepConv(Op):
    """ReLU, depthwise kxk, pointwise 1x1, BN, twice (the first strided)."""

    def __init__(self, channels, strides, kernel_size=3, **kwargs):
        self.kernel_size = kernel_size
        super().__init__(channels, strides, **kwargs)
        c, vd, s = self.channels, self.weight_vd, self.seed
        self.steps = [
            keras.layers.ReLU(),
            *depthwise_conv2d(kernel_size, self.strides, weight_vd=vd, seed=offset_seed(s, 1)),
            conv2d(c, 1, weight_vd=vd, seed=offset_seed(s, 2)),
            batch_norm(self.affine),
            keras.layers.ReLU(),
            *depthwise_conv2d(kernel_size, 1, weight_vd=vd, seed=offset_seed(s, 3)),
            conv2d(c, 1, weight_vd=vd, seed=offset_seed(s, 4)),
            batch_norm(self.affine),
        ]

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size}


@keras.saving.register_keras_serializable(package="tfvnas")
class DilConv(Op):
    """ReLU, dilated depthwise kxk (rate 2), pointwise 1x1, BN."""

    def __init__(self, channels, strides, kernel_size=3, dilation_rate=2, **kwargs):
        self.kernel_size = kernel_size
        self.dilation_rate = dilation_rate
        super().__init__(channels, strides, **kwargs)
        c, vd, s = self.channels, self.weight_vd, self.seed
        self.steps = [
            keras.layers.ReLU(),
            *depthwise_conv2d(kernel_size, self.strides, dilation_rate, weight_vd=vd, seed=offset_seed(s, 1)),
            conv2d(c, 1, weight_vd=vd, seed=offset_seed(s, 2)),
            batch_norm(self.affine),
        ]

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_size": self.kernel_size,
            "dilation_rate": self.dilation_rate,
        }


@keras.saving.register_keras_serializable(package="tfvnas")
class Pool(Op):
    """3x3 max or average pooling (average excludes padding), then BN in the supernet.

    DARTS follows pooling with a parameter-free BN inside mixed edges so its
    scale matches the convolutions'; `affine=False` (supernet) adds it, the
    final network (`affine=True`) does not.
    """

    def __init__(self, channels, strides, kind="max", **kwargs):
        if kind not in ("max", "avg"):
            raise ValueError(f"`kind` must be 'max' or 'avg'. Received: kind={kind!r}")
        self.kind = kind
        super().__init__(channels, strides, **kwargs)
        pool_cls = keras.layers.MaxPooling2D if kind == "max" else keras.layers.AveragePooling2D
        self.steps = [pool_cls(pool_size=3, strides=self.strides, padding="same")]
        if not self.affine:
            self.steps.append(batch_norm(False))

    def get_config(self):
        return {**super().get_config(), "kind": self.kind}


@keras.saving.register_keras_serializable(package="tfvnas")
class FactorizedReduce(Op):
    """Halves the resolution with two offset strided 1x1 convs, concatenated, then BN."""

    def __init__(self, channels, strides=2, out_channels=None, **kwargs):
        super().__init__(channels, strides, **kwargs)
        self.out_channels = self.channels if out_channels is None else _check_positive_int(
            "out_channels", out_channels
        )
        if self.out_channels % 2:
            raise ValueError(
                "`out_channels` of FactorizedReduce must be even. "
                f"Received: out_channels={self.out_channels}"
            )
        half, vd, s = self.out_channels // 2, self.weight_vd, self.seed
        self.relu = keras.layers.ReLU()
        self.conv_a = conv2d(half, 1, strides=2, weight_vd=vd, seed=offset_seed(s, 1))
        self.shift = keras.layers.ZeroPadding2D(((0, 1), (0, 1)))
        self.crop = keras.layers.Cropping2D(((1, 0), (1, 0)))
        self.conv_b = conv2d(half, 1, strides=2, weight_vd=vd, seed=offset_seed(s, 2))
        self.concat = keras.layers.Concatenate()
        self.bn = batch_norm(self.affine)

    def call(self, inputs, training=None):
        if not all(l.built for l in (self.conv_a, self.conv_b, self.bn)):
            x = self.relu(inputs)
            a = self.conv_a(x, training=training)
            b = self.conv_b(self.crop(self.shift(x)), training=training)
            return self.bn(self.concat([a, b]), training=training)
        # Built: the same computation without Keras' per-call overhead
        # (shift then crop is a one-pixel offset with zeros at the far edge).
        x = tf.nn.relu(inputs)
        a = apply_layer(self.conv_a, x, training)
        shifted = shift_up_left(x)
        b = apply_layer(self.conv_b, shifted, training)
        return self.bn.call(tf.concat([a, b], axis=-1), training=training)

    def get_config(self):
        return {**super().get_config(), "out_channels": self.out_channels}


@keras.saving.register_keras_serializable(package="tfvnas")
class Identity(Op):
    """skip_connect with stride 1; in a supernet, optionally followed by a parameter-free BN.

    Args:
        normalised: a batch norm without scale and shift after the identity
            (`affine` must be False: only a supernet's edges have it), so that
            the skip's output has the scale of the other candidates' outputs,
            which all end in batch norm (DARTS does the same for pooling).
            Without it a skip from a late node carries that node's whole,
            unnormalised energy, and its gate is judged on energy instead of
            on value (docs/search.md). The derived network's identity is
            plain.
    """

    def __init__(self, channels, strides=1, normalised=False, **kwargs):
        self.normalised = bool(normalised)
        super().__init__(channels, strides, **kwargs)
        if self.normalised and self.affine:
            raise ValueError("A normalised identity is a supernet op: it needs `affine=False`. "
                             "Received: normalised=True, affine=True")
        self.steps = [batch_norm(False)] if self.normalised else []

    def call(self, inputs, training=None):
        return super().call(inputs, training=training) if self.steps else inputs

    def get_config(self):
        return {**super().get_config(), "normalised": self.normalised}


@keras.saving.register_keras_serializable(package="tfvnas")
class Zero(Op):
    """The `none` operation: zeros at the output resolution."""

    def call(self, inputs, training=None):
        x = inputs[:, :: self.strides, :: self.strides, :] if self.strides > 1 else inputs
        return tf.zeros_like(x)


@keras.saving.register_keras_serializable(package="tfvnas")
class ReLUConvBN(Op):
    """ReLU, 1x1 conv, BN: the cell's input preprocessing."""

    def __init__(self, channels, strides=1, out_channels=None, **kwargs):
        super().__init__(channels, strides, **kwargs)
        self.out_channels = self.channels if out_channels is None else _check_positive_int(
            "out_channels", out_channels
        )
        self.steps = [
            keras.layers.ReLU(),
            conv2d(self.out_channels, 1, strides=self.strides, weight_vd=self.weight_vd, seed=offset_seed(self.seed, 1)),
            batch_norm(self.affine),
        ]

    def get_config(self):
        return {**super().get_config(), "out_channels": self.out_channels}
