"""Batch normalisation: tfvnas' fused `BatchNorm` layer and its synchronisation across replicas.

`BatchNorm` (`batch_norm(affine)`, the one every operation's steps use)
computes what `keras.layers.BatchNormalization` computes, with TensorFlow's
fused kernel; `synchronize_batch_norm` turns a model's to the statistics of
the global batch. Its moving statistics average across replicas, and
`deferred_sync_updates` lets a step's nested function hand those
assignments out, to be made after it (`assign_synchronised`).
"""

import contextlib
import threading

import keras
import tensorflow as tf

BN_MOMENTUM = 0.9  # PyTorch's momentum=0.1
BN_EPSILON = 1e-5


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


def count_per_channel(x):
    """Elements per channel of an NHWC tensor: an int if the shape is static."""
    dims = x.shape[:-1]
    if all(d is not None for d in dims):
        n = 1
        for d in dims:
            n *= int(d)
        return n
    return tf.cast(tf.size(x) // tf.shape(x)[-1], tf.float32)  # statistics are float32


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
