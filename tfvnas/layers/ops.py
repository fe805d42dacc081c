"""Candidate operations of the DARTS search space, in one registry.

`OPS` maps an operation name to an `OpFactory`: called as
`OPS[name](channels, strides, *, weight_vd=False, affine=True, seed=None)`
it returns a `keras.layers.Layer` mapping `channels` input channels to
`channels` output channels with the given stride (the resolution divided
by it, rounded up). `weight_vd=True` makes every convolution a sparse
variational one (`tfvnas.layers.variational`); `affine=False` gives the
parameter-free batch normalisation DARTS uses in the supernet. Named
operation sets (`OP_SETS`) select subsets; every other list of names
(`op_names`, the parameter-free ones) is derived from `OPS`.

`register(name, factory)` (also `tfvnas.register_op`) adds an operation of
your own: a factory `(channels, strides) -> keras.layers.Layer`, which may
also take the keyword arguments above. See `register` for where a
registered operation works and what its layer must be.

References:
    - Liu, Simonyan, Yang. "DARTS: Differentiable Architecture Search."
      ICLR 2019 (operations and cell structure).
    - Sandler, Howard, Zhu, Zhmoginov, Chen. "MobileNetV2: Inverted
      Residuals and Linear Bottlenecks." CVPR 2018 (`mbconv_3x3_e3`).
"""

import contextlib
import inspect
import json
import re
import threading

import keras
import tensorflow as tf

from tfvnas import checks
from tfvnas.layers import variational

BN_MOMENTUM = 0.9  # PyTorch's momentum=0.1
BN_EPSILON = 1e-5


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


def batch_norm(affine):
    return BatchNorm(affine=affine)


_DEFERRED = threading.local()


@contextlib.contextmanager
def deferred_sync_updates():
    """Collects the assignments `assign_synchronised` would make; yields the list of `(variable, value)`.

    A distributed variable that averages across replicas (a moving
    statistic, `aggregation="mean"`) is assigned through a cross-replica
    mean, a synchronisation point that a nested function, such as the XLA
    cluster of a step (`tfvnas.loops.loop.Loop.loss_and_gradients`), cannot
    hold. Inside this scope such assignments are recorded instead; the
    caller returns the values from the function and assigns them after it.
    The scope is per thread, as each replica of a `MirroredStrategy` traces
    its step in its own thread.
    """
    previous = getattr(_DEFERRED, "updates", None)
    _DEFERRED.updates = []
    try:
        yield _DEFERRED.updates
    finally:
        _DEFERRED.updates = previous


def assign_synchronised(variable, value):
    """`variable.assign(value)`, or recorded inside `deferred_sync_updates` when `variable` is distributed."""
    updates = getattr(_DEFERRED, "updates", None)
    underlying = variable.value if isinstance(variable, keras.Variable) else variable
    if updates is not None and isinstance(underlying, tf.distribute.DistributedValues):
        updates.append((variable, value))
        return
    variable.assign(value)


@keras.saving.register_keras_serializable(package="tfvnas")
class BatchNorm(keras.layers.Layer):
    """Batch normalisation over the channel axis with TensorFlow's fused kernel.

    Computes what `keras.layers.BatchNormalization(momentum, epsilon, center=affine,
    scale=affine)` computes (a test pins it), in one fused op instead of
    about thirty: a supernet has hundreds of these, and graph size is what
    makes its first trace slow. Moving statistics average across replicas
    (`aggregation="mean"`).

    With `synchronized=True`, training normalises with the statistics of the
    global batch: each replica's per-channel sums are added across replicas
    (one all-reduce), as `keras.layers.BatchNormalization(synchronized=True)`
    does. Without a strategy, or on one replica, it is the same as the
    per-replica statistics.

    Args:
        affine: learn a scale and an offset (`center` and `scale`).
        momentum: moving-average momentum.
        epsilon: variance epsilon.
        synchronized: batch statistics over all replicas.

    Call arguments:
        inputs: NHWC tensor.
        training: normalise with batch statistics and update the moving ones.
    """

    def __init__(self, affine=True, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, synchronized=False, **kwargs):
        super().__init__(**kwargs)
        self.affine = bool(affine)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.synchronized = bool(synchronized)

    def build(self, input_shape):
        channels = (int(input_shape[-1]),)
        # float32 under a mixed precision policy, as in Keras' BatchNormalization
        # (the fused kernel takes 16-bit inputs with float32 parameters).
        if self.affine:
            self.gamma = self.add_weight(name="gamma", shape=channels, initializer="ones", autocast=False)
            self.beta = self.add_weight(name="beta", shape=channels, initializer="zeros", autocast=False)
        self.moving_mean = self.add_weight(
            name="moving_mean", shape=channels, initializer="zeros",
            trainable=False, aggregation="mean", autocast=False,
        )
        self.moving_variance = self.add_weight(
            name="moving_variance", shape=channels, initializer="ones",
            trainable=False, aggregation="mean", autocast=False,
        )

    def _scale_offset(self, x):
        if self.affine:
            return self.gamma, self.beta
        channels = int(x.shape[-1])
        return tf.ones([channels], tf.float32), tf.zeros([channels], tf.float32)

    def _synchronized_moments(self, inputs):
        """Mean and biased variance of the global batch, or None off a multi-replica run."""
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync <= 1:
            return None
        x = tf.cast(inputs, tf.float32)
        local = tf.concat(
            [
                tf.reduce_sum(x, axis=[0, 1, 2]),
                tf.reduce_sum(tf.square(x), axis=[0, 1, 2]),
                tf.cast(tf.reshape(tf.size(x) // tf.shape(x)[-1], [1]), tf.float32),
            ],
            axis=0,
        )
        total = context.all_reduce(tf.distribute.ReduceOp.SUM, local)
        c = int(inputs.shape[-1])
        count = total[2 * c]
        mean = total[:c] / count
        variance = tf.maximum(total[c : 2 * c] / count - tf.square(mean), 0.0)
        return mean, variance

    def call(self, inputs, training=None):
        scale, offset = self._scale_offset(inputs)
        moments = self._synchronized_moments(inputs) if training and self.synchronized else None
        if moments is not None:
            mean, variance = moments
            m = self.momentum
            assign_synchronised(self.moving_mean, self.moving_mean * m + tf.stop_gradient(mean) * (1 - m))
            assign_synchronised(self.moving_variance, self.moving_variance * m + tf.stop_gradient(variance) * (1 - m))
            y = tf.nn.batch_normalization(tf.cast(inputs, tf.float32), mean, variance, offset, scale, self.epsilon)
            return tf.cast(y, inputs.dtype)
        if training:
            y, mean, variance, *_ = tf.compat.v1.nn.fused_batch_norm(
                inputs, scale, offset, epsilon=self.epsilon, is_training=True
            )
            # The fused kernel returns the unbiased batch variance; Keras'
            # BatchNormalization tracks the biased one, and so do we. The
            # count is a Python number when the shape is static (one op
            # instead of eight: a supernet step has hundreds of these).
            n = count_per_channel(inputs)
            if isinstance(n, int):
                variance = variance * ((n - 1.0) / max(n, 1.0))
            else:
                variance = variance * (n - 1.0) / tf.maximum(n, 1.0)
            m = self.momentum
            assign_synchronised(self.moving_mean, self.moving_mean * m + tf.stop_gradient(mean) * (1 - m))
            assign_synchronised(self.moving_variance, self.moving_variance * m + tf.stop_gradient(variance) * (1 - m))
            return y
        y, *_ = tf.compat.v1.nn.fused_batch_norm(
            inputs,
            scale,
            offset,
            mean=self.moving_mean,
            variance=self.moving_variance,
            epsilon=self.epsilon,
            is_training=False,
        )
        return y

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            affine=self.affine, momentum=self.momentum, epsilon=self.epsilon, synchronized=self.synchronized
        )
        return config


def synchronize_batch_norm(model, synchronized=True):
    """Sets `synchronized` on every `BatchNorm` inside `model`; returns how many."""
    layers = [l for l in model._flatten_layers(include_self=True, recursive=True) if isinstance(l, BatchNorm)]
    for layer in layers:
        layer.synchronized = bool(synchronized)
    return len(layers)


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
        shape = _conv_output_shape(input_shape, 2, layer.out_channels)
        build_layer(layer.bn, shape)
        layer.built = True
        return shape
    if isinstance(layer, (Identity, Zero)) and not layer.steps:
        layer.built = True
        return _conv_output_shape(input_shape, layer.strides, input_shape[-1])
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


def _conv_output_shape(shape, strides, channels):
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


def count_per_channel(x):
    """Elements per channel of an NHWC tensor: an int if the shape is static."""
    dims = x.shape[:-1]
    if all(d is not None for d in dims):
        n = 1
        for d in dims:
            n *= int(d)
        return n
    return tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)  # statistics are float32


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
        self.strides = _check_strides(strides)
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


def _check_strides(strides):
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


def _skip(channels, strides, **kwargs):
    if strides == 1:
        return Identity(channels, 1, **kwargs)
    return FactorizedReduce(channels, strides, **kwargs)


def _mbconv(expansion):
    def factory(channels, strides, **kwargs):
        from tfvnas.layers.inverted_residual import InvertedResidual  # noqa: PLC0415 - it subclasses `Op`

        return InvertedResidual(channels, strides, expansion=expansion, **kwargs)

    return factory


# The options tfvnas passes to a factory; a factory that does not take one
# is called without it (a plain `(channels, strides)` factory gets none).
OPTIONS = ("weight_vd", "affine", "seed", "normalised")


class OpFactory:
    """A registered operation: its layer factory, and whether it has weights.

    Called as `op(channels, strides, **options)`, it calls the factory with
    the `OPTIONS` the factory takes (all of them when it takes `**kwargs`).

    Attributes:
        factory: the factory `(channels, strides, ...) -> keras.layers.Layer`.
        parameter_free: the layer has no weights at stride 1 (pooling, the
            identity): what the parameter-free share of a cell counts.
        builtin: one of tfvnas' own, which the supernet's fused edge
            computes by name (`tfvnas.layers.mixed_edge`): never replaced.
    """

    def __init__(self, factory, parameter_free=False, builtin=False):
        self.factory = factory
        self.parameter_free = bool(parameter_free)
        self.builtin = bool(builtin)
        try:
            parameters = inspect.signature(factory).parameters.values()
        except (TypeError, ValueError):  # no signature to read: pass every option
            parameters = [inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)]
        if any(p.kind is p.VAR_KEYWORD for p in parameters):
            self.options = frozenset(OPTIONS)
        else:
            self.options = frozenset(p.name for p in parameters if p.kind is not p.POSITIONAL_ONLY) & set(OPTIONS)

    def __call__(self, channels, strides, **options):
        return self.factory(channels, strides, **{k: v for k, v in options.items() if k in self.options})


OPS = {
    "none": OpFactory(lambda c, s, **kw: Zero(c, s, **kw), parameter_free=True, builtin=True),
    "max_pool_3x3": OpFactory(lambda c, s, **kw: Pool(c, s, kind="max", **kw), parameter_free=True, builtin=True),
    "avg_pool_3x3": OpFactory(lambda c, s, **kw: Pool(c, s, kind="avg", **kw), parameter_free=True, builtin=True),
    # At stride 2 a FactorizedReduce (two 1x1 convolutions): `is_parameter_free`.
    "skip_connect": OpFactory(_skip, parameter_free=True, builtin=True),
    "sep_conv_3x3": OpFactory(lambda c, s, **kw: SepConv(c, s, kernel_size=3, **kw), builtin=True),
    "sep_conv_5x5": OpFactory(lambda c, s, **kw: SepConv(c, s, kernel_size=5, **kw), builtin=True),
    "dil_conv_3x3": OpFactory(lambda c, s, **kw: DilConv(c, s, kernel_size=3, **kw), builtin=True),
    "dil_conv_5x5": OpFactory(lambda c, s, **kw: DilConv(c, s, kernel_size=5, **kw), builtin=True),
}

_NAME = re.compile(r"[A-Za-z0-9_]+")
_HOW_TO_REGISTER = ("`tfvnas.register_op({name!r}, factory)`, with `factory(channels, strides)` returning a "
                    "keras.layers.Layer, in the process that builds the model")


def how_to_register(name):
    """The sentence an error about an unregistered operation `name` ends with."""
    return f"To use an operation of your own, register it first: {_HOW_TO_REGISTER.format(name=name)}."


def register(name, factory, *, parameter_free=False, overwrite=False, check=True):
    """Registers an operation `name` made by `factory`, for every part of tfvnas.

    A registered operation can be named in a `SearchConfig`'s `ops`, in a
    genotype, a `Network` or a `Supernet`. The supernet computes it op by
    op (its fused edge computes tfvnas' own operations only), with a gate
    like any other; `tfvnas.compress.strip` strips it, dead-channel
    elimination shrinks through it, MACs are counted and it exports to
    SavedModel and TFLite, when its layer is made of what strip knows: a
    `tfvnas.layers.ops.Op` (its `steps` in order; `InvertedResidual` is
    one) or a `keras.Sequential`, of standard Keras layers
    (`tfvnas.compress.strip.STANDARD_LAYERS`; a ReLU may have `max_value`),
    tfvnas' variational layers and `BatchNorm`. Another layer trains and
    searches, and strip refuses it by name.

    Registration lives in the process: a genotype file or a saved
    `Network` names the operation, so the process that loads it registers it
    first (tfvnas' command line knows its own operations only).

    Args:
        name: letters, digits and underscores (it names layers).
        factory: `factory(channels, strides) -> keras.layers.Layer`, the
            layer mapping `channels` channels to `channels` channels with
            stride 1 or 2 ('same' padding: the resolution divided by the
            stride, rounded up). It may take the keyword arguments
            `weight_vd` (variational weights: use
            `tfvnas.layers.ops.conv2d(..., weight_vd=...)` and
            `depthwise_conv2d`, so the weights sparsify), `affine` (False in
            the supernet: batch norm without scale and shift) and `seed`;
            those it does not take are not passed.
        parameter_free: the layer has no weights (at stride 1); counted as
            parameter-free in a cell's summary.
        overwrite: replace an operation registered before (never one of
            tfvnas' own).
        check: build the layer once for each stride (4 channels, 8x8
            inputs) to check that it is a Keras layer with the right output
            shape, no weights if `parameter_free`, and a config that rebuilds
            it through JSON (`get_config` / `from_config`).

    Returns:
        The `OpFactory` registered.

    Raises:
        ValueError: for a bad name, a name taken, a factory that is not
            callable, or one whose layer fails a check.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"`name` must be letters, digits and underscores. Received: name={name!r}")
    if not callable(factory):
        raise ValueError(f"`factory` must be callable as factory(channels, strides). Received: factory={factory!r}")
    for arg, value in (("parameter_free", parameter_free), ("overwrite", overwrite), ("check", check)):
        if not isinstance(value, bool):
            raise ValueError(f"`{arg}` must be a bool. Received: {arg}={value!r}")
    if name in OPS and OPS[name].builtin:
        raise ValueError(f"{name!r} is one of tfvnas' own operations and cannot be replaced. Received: name={name!r}")
    if name in OPS and not overwrite:
        raise ValueError(f"Operation {name!r} is already registered; pass overwrite=True to replace it. "
                         f"Received: name={name!r}")
    op = OpFactory(factory, parameter_free=parameter_free)
    if check:
        for strides in (1, 2):
            check_op_layer(name, op, strides)
    OPS[name] = op
    return op


def check_op_layer(name, op, strides, channels=4, size=8):
    """Builds `op(channels, strides)` on `(None, size, size, channels)` inputs and checks what `register` checks."""
    layer = op(channels, strides)
    if not isinstance(layer, keras.layers.Layer):
        raise ValueError(f"The factory of operation {name!r} must return a keras.layers.Layer. "
                         f"Received: {type(layer).__name__} for channels={channels}, strides={strides}")
    input_shape = (None, size, size, channels)
    check_op_output(name, layer, input_shape, build_layer(layer, input_shape), channels, strides)
    if op.parameter_free and strides == 1 and layer.weights:
        raise ValueError(f"Operation {name!r} is registered parameter-free but its layer has weights at stride 1. "
                         f"Received: {', '.join(w.path for w in layer.weights)}")
    try:
        config = json.loads(json.dumps(layer.get_config()))
        again = type(layer).from_config(config).get_config()
    except Exception as error:  # noqa: BLE001 - any failure to rebuild is the user's to see
        raise ValueError(f"The layer of operation {name!r} ({type(layer).__name__}) must rebuild from its JSON "
                         f"config (`get_config`, `from_config`). Received: {type(error).__name__}: {error}") from error
    if json.loads(json.dumps(again)) != config:
        differ = sorted(k for k in set(config) | set(again) if config.get(k) != again.get(k))
        raise ValueError(f"The layer of operation {name!r} ({type(layer).__name__}) must rebuild from its config "
                         f"with the same config. Received: {', '.join(differ)} differ")
    return layer


def check_op_output(name, layer, input_shape, output_shape, channels, strides):
    """Raises `ValueError` unless the layer of operation `name` maps `input_shape` to the shape an edge needs."""
    expected = _conv_output_shape(tuple(input_shape), strides, channels)
    if tuple(output_shape)[1:] != expected[1:]:
        raise ValueError(
            f"Operation {name!r} must map inputs of shape {tuple(input_shape)} to {expected} (channels={channels}, "
            f"strides={strides}: as many channels, the resolution divided by the stride). "
            f"Received: output shape {tuple(output_shape)} from its {type(layer).__name__}"
        )


def is_parameter_free(name, strides=1):
    """Whether operation `name` has no weights at `strides` (`skip_connect` at stride 2 has; unknown: False)."""
    if name == "skip_connect":
        return strides == 1
    return name in OPS and OPS[name].parameter_free


def cell_op_counts(genotype, cell_type):
    """`(parameter_free, skips, total)` over the (op, input) pairs of one cell of `genotype`.

    An edge from a cell input (0 or 1) of a reduction cell has stride 2, so
    its `skip_connect` is a FactorizedReduce: a skip, but not parameter-free.
    """
    cell = genotype.normal if cell_type == "normal" else genotype.reduce
    pairs = [(op, 2 if cell_type == "reduce" and inp < 2 else 1) for node in cell for op, inp in node]
    free = sum(is_parameter_free(op, s) for op, s in pairs)
    skips = sum(op == "skip_connect" for op, _ in pairs)
    return free, skips, len(pairs)


OP_SETS = {
    "darts": (
        "sep_conv_3x3",
        "sep_conv_5x5",
        "dil_conv_3x3",
        "dil_conv_5x5",
        "max_pool_3x3",
        "avg_pool_3x3",
        "skip_connect",
    ),
    "darts_none": (
        "none",
        "sep_conv_3x3",
        "sep_conv_5x5",
        "dil_conv_3x3",
        "dil_conv_5x5",
        "max_pool_3x3",
        "avg_pool_3x3",
        "skip_connect",
    ),
    # Fits the TFLite/XNNPACK sparse kernels: no dilation.
    "mobile": (
        "sep_conv_3x3",
        "sep_conv_5x5",
        "max_pool_3x3",
        "avg_pool_3x3",
        "skip_connect",
    ),
}
DEFAULT_OP_SET = "darts"


def op_names():
    """Every registered operation name, sorted."""
    return tuple(sorted(OPS))


def check_op_names(names):
    """Validates a sequence of operation names; returns it as a tuple."""
    if isinstance(names, str):
        raise ValueError(f"`ops` must be a list of operation names. Received: ops={names!r}")
    names = tuple(names)
    if not names:
        raise ValueError("`ops` must name at least one operation. Received: ops=()")
    for name in names:
        if name not in OPS:
            raise ValueError(
                f"Unknown operation {name!r}. Known operations: {', '.join(op_names())}. {how_to_register(name)}"
            )
    if len(set(names)) != len(names):
        raise ValueError(f"`ops` must not repeat a name. Received: ops={list(names)}")
    return names


def resolve_op_set(op_set=DEFAULT_OP_SET, ops=None):
    """The operation names of a named set, or `ops` when given."""
    if ops is not None:
        return check_op_names(ops)
    if op_set not in OP_SETS:
        raise ValueError(
            f"Unknown operation set {op_set!r}. Known sets: {', '.join(sorted(OP_SETS))}"
        )
    return OP_SETS[op_set]


def make_op(name, channels, strides, **kwargs):
    """Builds the operation `name`; raises `ValueError` for an unknown name."""
    check_op_names([name])
    return OPS[name](channels, _check_strides(strides), **kwargs)


# MobileNetV2's inverted residual (`tfvnas.layers.inverted_residual`),
# registered as any operation of a user's is.
register("mbconv_3x3_e3", _mbconv(3), check=False)
