"""Sparse variational layers, the ARD KL and the one objective (`elbo_loss`).

The math lives in small pure functions (`log_alpha`, `ard_kl`,
`ard_kl_of_log_alpha`, `keep_mask`, `lrt_conv2d`, `elbo_loss`); the layers
are thin wrappers that own weights and randomness and switch on the
call-time `training` flag. The architecture gates are in `tfvnas.layers.gates`.

**The KL scale.** Every layer with a KL term (`KLTerm`: these layers and
the gates) adds `KL * kl_scale` to its `losses`, as TensorFlow
Probability's layers do with `kernel_divergence_fn = KL / N`: what a layer
adds is already the objective's term, so a Keras `compile`/`fit` trains the
same ELBO as tfvnas' own loops. The scale is `beta / N_train` (`kl_scale`),
with `beta` the KL weight of the configs (`SearchConfig.kl_weight`,
`TrainConfig.kl_weight`), warmed up from 0 (`warmed_up_beta`). A tfvnas
model owns one variable for the scale and binds it to all its layers
(`bind_kl_scale`); its loops set it every step, `fit` sets it to `1 / N`
for the N examples it is given (`tfvnas.models.elbo`), and the
`KLSchedule` callback warms it up under `fit`. A layer used on its own
takes its `kl_scale` argument (e.g. `1 / len(x_train)`).

References:
    - Ferianc, Fan, Rodrigues. "VINNAS: Variational Inference-based Neural
      Network Architecture Search." arXiv:2007.06103.
    - Molchanov, Ashukha, Vetrov. "Variational Dropout Sparsifies Deep Neural
      Networks." ICML 2017 (additive parameterisation, local
      reparameterisation trick).
    - Kingma, Salimans, Welling. "Variational Dropout and the Local
      Reparameterization Trick." NeurIPS 2015.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from tfvnas import checks
from tfvnas.layers import noise

DEFAULT_THRESHOLD = 3.0
_EPS = 1e-8


# ---------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------


def log_alpha(theta, log_sigma2):
    """Log dropout rate `log(sigma^2 / theta^2)` of a Gaussian N(theta, sigma^2).

    Args:
        theta: mean tensor.
        log_sigma2: log variance tensor, same shape as `theta`.

    Returns:
        A tensor of the same shape.
    """
    return log_sigma2 - tf.math.log(tf.square(theta) + _EPS)


def ard_kl(theta, log_sigma2):
    """Elementwise KL(q || p) for q = N(theta, sigma^2) and the ARD prior.

    The prior is p = N(0, gamma) with gamma at its empirical-Bayes optimum
    `theta^2 + sigma^2`, which gives the closed form
    `0.5 * log(1 + theta^2 / sigma^2) = 0.5 * softplus(-log_alpha)`.
    Both distributions are `tfp.distributions.Normal`, and the KL comes from
    `tfp.distributions.kl_divergence`.

    Args:
        theta: mean tensor.
        log_sigma2: log variance tensor, same shape as `theta`.

    Returns:
        A tensor of the same shape with the KL of every element.
    """
    # Imported on first use: TensorFlow Probability imports tf_keras with it.
    import tensorflow_probability as tfp

    tfd = tfp.distributions
    sigma2 = tf.exp(log_sigma2)
    q = tfd.Normal(loc=theta, scale=tf.sqrt(sigma2))
    p = tfd.Normal(loc=tf.zeros_like(theta), scale=tf.sqrt(tf.square(theta) + sigma2))
    return tfd.kl_divergence(q, p)


def ard_kl_of_log_alpha(log_alpha_value):
    """`ard_kl` of a Gaussian given by its log dropout rate alone: 0.5 * softplus(-log_alpha).

    The ARD KL is invariant to the scale of theta, so it is computed (with
    `tfp.distributions`, as `ard_kl`) for theta = 1 and sigma^2 = alpha.
    `log_alpha` is clipped to [-20, 20] first, where the KL's gradient has
    vanished to 1e-9 either way, so alpha stays finite in float32.
    """
    la = tf.clip_by_value(tf.convert_to_tensor(log_alpha_value), -20.0, 20.0)
    return ard_kl(tf.ones_like(la), la)


def keep_mask(log_alpha_value, threshold=DEFAULT_THRESHOLD, dtype="float32"):
    """1 where an element is kept (`log_alpha < threshold`), else 0."""
    return tf.cast(log_alpha_value < threshold, dtype)


def masked_weight(theta, log_sigma2, threshold=DEFAULT_THRESHOLD):
    """The weight used at inference: `theta * [log_alpha < threshold]`."""
    theta = tf.convert_to_tensor(theta)
    return theta * keep_mask(log_alpha(theta, log_sigma2), threshold, theta.dtype)


def summed_ard_kl(pairs):
    """`sum(ard_kl(theta, log_sigma2))` over the `(theta, log_sigma2)` pairs, as one KL.

    The pairs are flattened and concatenated first, so a group of
    variational layers costs one `ard_kl` instead of one per layer.
    """
    thetas = [tf.reshape(t, [-1]) for t, _ in pairs]
    log_sigma2s = [tf.reshape(s, [-1]) for _, s in pairs]
    if len(pairs) == 1:
        return tf.reduce_sum(ard_kl(thetas[0], log_sigma2s[0]))
    return tf.reduce_sum(ard_kl(tf.concat(thetas, 0), tf.concat(log_sigma2s, 0)))


def strided_dilated_as_plain(x, kernel_size, strides, dilation_rate):
    """The input and settings of a plain conv equal to a strided dilated one.

    A 'same' conv with odd `kernel_size` and `dilation_rate == strides`
    reads, at output pixel i, input pixels `s*i + d*k - (kernel_size-1)*d/2`:
    only every `strides`-th row and column. It is therefore the stride-1,
    undilated 'same' conv of the same kernel over `x[:, ::s, ::s, :]`
    (zero padding included), with a quarter of the input and no
    space-to-batch reshuffles. Other settings are returned unchanged.

    Returns:
        `(x, strides, dilation_rate)` to run instead.
    """
    if strides > 1 and dilation_rate == strides and kernel_size % 2 == 1:
        return x[:, ::strides, ::strides, :], 1, 1
    return x, strides, dilation_rate


def conv_same(x, kernel, strides, dilation_rate, depthwise):
    """'same' convolution; a strided dilated conv runs at stride 1 then subsamples.

    TensorFlow rejects strides > 1 together with dilation > 1. Running at
    stride 1 and keeping every `strides`-th row and column is the same
    computation as a symmetric-padding strided dilated convolution, and is
    what `keras.layers.MaxPooling2D(pool_size=1, strides=s)` reproduces in a
    standard network; when `strided_dilated_as_plain` applies, the input is
    subsampled first instead (the same numbers, cheaper).
    """
    x, strides, dilation_rate = strided_dilated_as_plain(x, int(kernel.shape[0]), strides, dilation_rate)
    subsample = strides > 1 and dilation_rate > 1
    step = 1 if subsample else strides
    if depthwise:
        y = tf.nn.depthwise_conv2d(
            x,
            kernel,
            strides=[1, step, step, 1],
            padding="SAME",
            dilations=[dilation_rate, dilation_rate],
        )
    else:
        y = tf.nn.conv2d(
            x, kernel, strides=step, padding="SAME", dilations=dilation_rate
        )
    if subsample:
        y = y[:, ::strides, ::strides, :]
    return y


def lrt_conv2d(x, theta, sigma2, strides=1, dilation_rate=1, depthwise=False):
    """Moments of a convolution with independent Gaussian weights N(theta, sigma2).

    Args:
        x: input tensor, NHWC.
        theta: kernel means (Conv2D layout `(kh, kw, in, out)`, or depthwise
            layout `(kh, kw, in, 1)` when `depthwise`).
        sigma2: kernel variances, same shape as `theta`.
        strides: int stride.
        dilation_rate: int dilation.
        depthwise: whether the convolution is depthwise.

    Returns:
        `(mean, var)` of the output pre-activations:
        `mean = conv(x, theta)`, `var = conv(x^2, sigma2)`.
    """
    x, strides, dilation_rate = strided_dilated_as_plain(x, int(theta.shape[0]), strides, dilation_rate)
    if depthwise:
        # One depthwise convolution of `[x, x^2]` with `[theta, sigma2]`: the
        # same arithmetic as two, in one kernel call forward and backward.
        both = conv_same(tf.concat([x, tf.square(x)], -1), tf.concat([theta, sigma2], 2), strides, dilation_rate,
                         depthwise)
        mean, var = tf.split(both, 2, axis=-1)
        return mean, var
    mean = conv_same(x, theta, strides, dilation_rate, depthwise)
    var = conv_same(tf.square(x), sigma2, strides, dilation_rate, depthwise)
    return mean, var


def lrt_dense(x, theta, sigma2):
    """Moments of `x @ W` for independent Gaussian weights N(theta, sigma2)."""
    return tf.matmul(x, theta), tf.matmul(tf.square(x), sigma2)


def elbo_loss(labels, logits, kl_term, *, global_batch_size):
    """The one search/training objective: mean cross-entropy + the model's KL term.

    `kl_term` is what the model's layers added to `losses`: each KL times
    the model's KL weight `beta / N_train` (see the module docstring), so
    the objective per batch is `CE + beta * KL / N_train`. Per-replica
    values are scaled so that summing them over replicas gives the global
    mean cross-entropy plus the KL term once.

    Args:
        labels: int labels, shape (B,).
        logits: shape (B, classes).
        kl_term: scalar, the sum of the model's `losses`.
        global_batch_size: batch size summed over replicas.

    Returns:
        `(loss, cross_entropy, kl_term)`, each already scaled for
        cross-replica summation.
    """
    # float32 whatever the compute type (a mixed precision policy).
    per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=tf.cast(logits, tf.float32)
    )
    ce = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)
    kl_term = tf.nn.scale_regularization_loss(tf.cast(kl_term, ce.dtype))
    return ce + kl_term, ce, kl_term


def kl_scale(beta, n_train):
    """The scale of the KL in the ELBO: `beta / n_train` (the KL is per data set)."""
    return float(beta) / float(checks.check_positive_int("n_train", n_train))


def warmed_up_beta(step, warmup_steps, final=1.0):
    """The KL weight beta at `step`: linear from 0 to `final` over `warmup_steps` steps.

    The one warm-up of tfvnas: the loops (`tfvnas.loops.loop.Loop.beta`) and
    `KLSchedule` both read it. `warmup_steps` may be fractional (a share of
    the steps); 0 or less: `final` from the start.
    """
    if warmup_steps <= 0:
        return float(final)
    return float(final) * min(1.0, step / warmup_steps)


def sample_lrt(mean, var, seed_generator=None, eps=None):
    """`mean + sqrt(var) * eps` with eps ~ N(0, 1) drawn per element.

    `eps` is drawn from `seed_generator` unless given (the fused supernet
    edge draws each layer's noise itself and samples them together).
    """
    if eps is None:
        eps = noise.standard_normal(tf.shape(mean), seed_generator, mean.dtype)
    return mean + tf.sqrt(var + _EPS) * eps


# ---------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------


_positive_int = checks.check_positive_int


def _kernel_size(value):
    if isinstance(value, (tuple, list)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(
                "`kernel_size` must be an int or a square pair. "
                f"Received: kernel_size={value!r}"
            )
        value = value[0]
    return _positive_int("kernel_size", value)


class _Shared:
    """A variable another object owns, held outside Keras' attribute tracking."""

    __slots__ = ("variable",)

    def __init__(self, variable):
        self.variable = variable


class KLTerm:
    """Mixin of the layers that add a KL term: the scale they multiply it by.

    `kl_scale` (a float, in the config) is used until a model binds its own
    variable with `bind_kl_scale`; then every layer reads that one variable.
    """

    def init_kl_scale(self, kl_scale):
        if isinstance(kl_scale, bool) or not isinstance(kl_scale, (int, float)) or kl_scale < 0:
            raise ValueError(f"`kl_scale` must be a non-negative number. Received: kl_scale={kl_scale!r}")
        self.kl_scale = float(kl_scale)
        self._bound_kl_scale = None

    def scaled_kl(self, kl):
        """`kl` times this layer's KL scale (the bound variable, or `kl_scale`): what it adds to `losses`."""
        bound = self._bound_kl_scale
        if bound is None:
            return kl * tf.constant(self.kl_scale, kl.dtype)
        return kl * tf.cast(tf.convert_to_tensor(bound.variable), kl.dtype)

    @classmethod
    def from_config(cls, config):
        # Layer configs written before the rename call the scale `kl_weight`.
        config = dict(config)
        if "kl_weight" in config:
            config["kl_scale"] = config.pop("kl_weight")
        return super().from_config(config)


def kl_layers(model):
    """Every layer of `model` (itself included) that adds a KL term."""
    return [layer for layer in model._flatten_layers(include_self=True, recursive=True) if isinstance(layer, KLTerm)]


def bind_kl_scale(model, variable):
    """Makes every KL layer of `model` scale its KL by `variable` (a scalar variable); returns how many."""
    layers = kl_layers(model)
    for layer in layers:
        layer._bound_kl_scale = _Shared(variable)
    return len(layers)


class KLSchedule(keras.callbacks.Callback):
    """Sets the KL scale to `beta(step) / n_train` before every batch of `fit`.

    `beta` warms up linearly from 0 to `final` over `warmup_steps` steps
    (`warmed_up_beta`, as in tfvnas' own loops; 0: `final` from the start).
    The model's own KL scale variable is used when it has one (`Network`,
    `Supernet`); otherwise the callback creates one and binds it to every KL
    layer of the model (a plain Keras model of `VariationalConv2D` /
    `VariationalDense`). A `Network` or `Supernet` given this callback
    leaves the scale to it (no `1 / N` of its own).

    Args:
        n_train: number of training examples.
        warmup_steps: steps of the linear warm-up.
        final: beta after the warm-up.
    """

    def __init__(self, n_train, warmup_steps=0, final=1.0):
        super().__init__()
        self.n_train = checks.check_positive_int("n_train", n_train)
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"`warmup_steps` must be a non-negative int. Received: warmup_steps={warmup_steps!r}")
        self.warmup_steps = warmup_steps
        self.final = float(final)
        self.step = 0
        self.variable = None

    def beta(self, step):
        return warmed_up_beta(step, self.warmup_steps, self.final)

    def on_train_begin(self, logs=None):
        variable = getattr(self.model, "kl_scale", None)
        if not isinstance(variable, keras.Variable):
            variable = keras.Variable(0.0, trainable=False, name="kl_scale")
            bind_kl_scale(self.model, variable)
        self.variable = variable

    def on_train_batch_begin(self, batch, logs=None):
        self.variable.assign(kl_scale(self.beta(self.step), self.n_train))
        self.step += 1


class VariationalLayer(KLTerm, keras.layers.Layer):
    """Shared machinery of the sparse variational layers.

    Subclasses create `self.theta` and `self.log_sigma2` in `build` and define
    `_moments(x, theta, sigma2)` (training) and `_apply(x, kernel)` (inference).

    **Channel prior** (`channel_prior=True`). Each output channel c also gets
    a Gaussian scale `s_c ~ N(phi_c, sigma_c^2)` with its own ARD prior and
    KL (`ard_kl`, as a weight's), added to the layer's. In training the
    output channel is multiplied by one draw of `s_c` per example (noise of
    shape `(batch, 1, 1, channels)`: one variable per channel, so a noisy
    channel is noisy everywhere); at inference by `phi_c * [log_alpha_c <
    threshold]`, which `masked_kernel` folds into the kernel's output column,
    so a pruned channel is an all-zero column and `tfvnas.compress.shrinking` removes
    it. `channel_scale_init` is phi's initial value and
    `channel_log_alpha_init` its initial log dropout rate; why phi starts
    small is in `tfvnas.layers.channel_prior`. The supernet's fused edges
    (`tfvnas.layers.mixed_edge`) read `theta` directly and do not support it.
    """

    def __init__(
        self,
        threshold=DEFAULT_THRESHOLD,
        log_sigma2_init=-10.0,
        seed=None,
        kl_scale=1.0,
        channel_prior=False,
        channel_log_alpha_init=-4.0,
        channel_scale_init=0.1,
        **kwargs,
    ):
        self.threshold = float(threshold)
        self.log_sigma2_init = float(log_sigma2_init)
        self.seed = seed
        self.channel_prior, self.channel_log_alpha_init, self.channel_scale_init = self.check_channel_prior(
            channel_prior, channel_log_alpha_init, channel_scale_init)
        super().__init__(**kwargs)
        self.init_kl_scale(kl_scale)
        self.seed_generator = keras.random.SeedGenerator(seed)

    @staticmethod
    def check_channel_prior(channel_prior, log_alpha_init, scale_init):
        """Validates the channel-prior arguments; returns them as `(bool, float, float)`."""
        def number(value):
            return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)

        if not isinstance(channel_prior, bool):
            raise ValueError(f"`channel_prior` must be a bool. Received: channel_prior={channel_prior!r}")
        if not number(log_alpha_init):
            raise ValueError(
                f"`channel_log_alpha_init` must be a number. Received: channel_log_alpha_init={log_alpha_init!r}")
        if not (number(scale_init) and scale_init > 0):
            raise ValueError(
                f"`channel_scale_init` must be a positive number. Received: channel_scale_init={scale_init!r}")
        return channel_prior, float(log_alpha_init), float(scale_init)

    def _add_kernel(self, shape, initializer):
        # Not autocast under a mixed precision policy: the KL and the masks
        # read them in float32; `call` casts them for the convolution.
        self.theta = self.add_weight(name="theta", shape=shape, initializer=initializer, autocast=False)
        self.log_sigma2 = self.add_weight(
            name="log_sigma2",
            shape=shape,
            initializer=keras.initializers.Constant(self.log_sigma2_init),
            autocast=False,
        )

    def _add_channel_scale(self, channels):
        """Creates `channel_phi` and `channel_log_sigma2` (one per output channel) with the prior on."""
        if not self.channel_prior:
            return
        phi = self.channel_scale_init
        self.channel_phi = self.add_weight(
            name="channel_phi", shape=(channels,), initializer=keras.initializers.Constant(phi), autocast=False)
        self.channel_log_sigma2 = self.add_weight(
            name="channel_log_sigma2", shape=(channels,),
            initializer=keras.initializers.Constant(self.channel_log_alpha_init + 2.0 * math.log(phi)),
            autocast=False)

    # The kernel axis of the output channels: the last one (a depthwise kernel overrides it).
    channel_axis = -1

    def _channel_shape(self):
        """The kernel's rank with 1 on every axis but the output channels' (-1)."""
        shape = [1] * len(self.theta.shape)
        shape[self.channel_axis] = -1
        return shape

    @property
    def log_alpha(self):
        """Per-weight log dropout rate."""
        return log_alpha(self.theta, self.log_sigma2)

    @property
    def channel_log_alpha(self):
        """Per-channel log dropout rate of the channel scales (channel prior only)."""
        return log_alpha(self.channel_phi, self.channel_log_sigma2)

    def channel_mask(self):
        """1 for kept channels, 0 for pruned ones (all ones without the channel prior)."""
        if not self.channel_prior:
            return tf.ones([int(self.theta.shape[self.channel_axis])], self.theta.dtype)
        return keep_mask(self.channel_log_alpha, self.threshold, self.theta.dtype)

    def kernel_mask(self):
        """1 for kept weights (and, with the channel prior, in kept channels), 0 for pruned ones."""
        mask = keep_mask(self.log_alpha, self.threshold, self.theta.dtype)
        if self.channel_prior:
            mask = mask * tf.reshape(self.channel_mask(), self._channel_shape())
        return mask

    def masked_kernel(self):
        """The kernel used at inference: theta * [log_alpha < threshold] (* phi_c per channel)."""
        kernel = self.theta * self.kernel_mask()
        if self.channel_prior:
            kernel = kernel * tf.reshape(self.channel_phi, self._channel_shape())
        return kernel

    def kl(self):
        """Unscaled ARD KL summed over all weights (and channel scales)."""
        kl = tf.reduce_sum(ard_kl(self.theta, self.log_sigma2))
        if self.channel_prior:
            kl = kl + tf.reduce_sum(ard_kl(self.channel_phi, self.channel_log_sigma2))
        return kl

    def _channel_sample(self, outputs):
        """One draw of every channel scale per example, shaped to multiply `outputs`."""
        shape = tf.concat([tf.shape(outputs)[:1], tf.ones([outputs.shape.rank - 2], tf.int32),
                           tf.shape(outputs)[-1:]], 0)
        eps = noise.standard_normal(shape, self.seed_generator, tf.float32)
        return tf.cast(self.channel_phi + tf.exp(0.5 * self.channel_log_sigma2) * eps, outputs.dtype)

    def call(self, inputs, training=None):
        self.add_loss(self.scaled_kl(self.kl()))
        dtype = inputs.dtype  # the compute type: float32, or 16-bit under a mixed policy
        if training:
            theta, sigma2 = tf.cast(self.theta, dtype), tf.cast(tf.exp(self.log_sigma2), dtype)
            mean, var = self._moments(inputs, theta, sigma2)
            out = sample_lrt(mean, var, self.seed_generator)
            if self.channel_prior:
                out = out * self._channel_sample(out)
        else:
            out = self._apply(inputs, tf.cast(self.masked_kernel(), dtype))
        if self.use_bias:
            out = out + self.bias
        return out

    def get_config(self):
        config = super().get_config()
        config.update(
            threshold=self.threshold,
            log_sigma2_init=self.log_sigma2_init,
            seed=self.seed,
            use_bias=self.use_bias,
            kl_scale=self.kl_scale,
            channel_prior=self.channel_prior,
            channel_log_alpha_init=self.channel_log_alpha_init,
            channel_scale_init=self.channel_scale_init,
        )
        return config


@keras.saving.register_keras_serializable(package="tfvnas")
class VariationalConv2D(VariationalLayer):
    """Conv2D with sparse variational dropout weights ('same' padding, no bias by default).

    Training uses the local reparameterisation trick (`lrt_conv2d`); inference
    uses the masked means.

    Args:
        filters: number of output channels.
        kernel_size: int (square kernels).
        strides: int stride.
        dilation_rate: int dilation.
        use_bias: whether to add a (deterministic) bias.
        threshold: pruning threshold on `log_alpha`.
        log_sigma2_init: initial log variance of every weight.
        seed: seed of the layer's noise.
        kl_scale: what the layer's KL is multiplied by in `losses`,
            `beta / N_train` for the ELBO, until a model binds its own
            variable (`bind_kl_scale`).
        channel_prior: a scale with an ARD prior per output channel (see
            `VariationalLayer`).
        channel_log_alpha_init: initial log dropout rate of the channel scales.
        channel_scale_init: initial mean phi of the channel scales.

    Call arguments:
        inputs: NHWC tensor.
        training: sample with the LRT when true, use masked means otherwise.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        dilation_rate=1,
        use_bias=False,
        kernel_initializer="he_normal",
        **kwargs,
    ):
        self.filters = _positive_int("filters", filters)
        self.kernel_size = _kernel_size(kernel_size)
        self.strides = _positive_int("strides", strides)
        self.dilation_rate = _positive_int("dilation_rate", dilation_rate)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        super().__init__(**kwargs)

    def build(self, input_shape):
        k = self.kernel_size
        self._add_kernel((k, k, int(input_shape[-1]), self.filters), self.kernel_initializer)
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
        self._add_channel_scale(self.filters)

    def _moments(self, x, theta, sigma2):
        return lrt_conv2d(x, theta, sigma2, self.strides, self.dilation_rate)

    def _apply(self, x, kernel):
        return conv_same(x, kernel, self.strides, self.dilation_rate, depthwise=False)

    def compute_output_shape(self, input_shape):
        return _conv_output_shape(input_shape, self.strides, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters,
            kernel_size=self.kernel_size,
            strides=self.strides,
            dilation_rate=self.dilation_rate,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


@keras.saving.register_keras_serializable(package="tfvnas")
class VariationalDepthwiseConv2D(VariationalLayer):
    """DepthwiseConv2D (depth multiplier 1) with sparse variational dropout weights.

    With `channel_prior`, one scale per channel (the kernel's axis 2).

    Args:
        kernel_size: int (square kernels).
        strides: int stride.
        dilation_rate: int dilation (strided + dilated runs at stride 1 and
            subsamples, see `lrt_conv2d`).
        use_bias, threshold, log_sigma2_init, seed, kl_scale, channel_prior,
            channel_log_alpha_init, channel_scale_init: as `VariationalConv2D`.
    """

    channel_axis = 2

    def __init__(
        self,
        kernel_size,
        strides=1,
        dilation_rate=1,
        use_bias=False,
        kernel_initializer="he_normal",
        **kwargs,
    ):
        self.kernel_size = _kernel_size(kernel_size)
        self.strides = _positive_int("strides", strides)
        self.dilation_rate = _positive_int("dilation_rate", dilation_rate)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        super().__init__(**kwargs)

    def build(self, input_shape):
        k = self.kernel_size
        channels = int(input_shape[-1])
        self._add_kernel((k, k, channels, 1), self.kernel_initializer)
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(channels,), initializer="zeros")
        self._add_channel_scale(channels)

    def _moments(self, x, theta, sigma2):
        return lrt_conv2d(x, theta, sigma2, self.strides, self.dilation_rate, depthwise=True)

    def _apply(self, x, kernel):
        return conv_same(x, kernel, self.strides, self.dilation_rate, depthwise=True)

    def compute_output_shape(self, input_shape):
        return _conv_output_shape(input_shape, self.strides, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(
            kernel_size=self.kernel_size,
            strides=self.strides,
            dilation_rate=self.dilation_rate,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


@keras.saving.register_keras_serializable(package="tfvnas")
class VariationalDense(VariationalLayer):
    """Dense layer with sparse variational dropout weights.

    Args:
        units: number of outputs.
        use_bias: whether to add a bias (default true).
        threshold, log_sigma2_init, seed, kl_scale, channel_prior,
            channel_log_alpha_init, channel_scale_init: as `VariationalConv2D`
            (one channel scale per unit).
    """

    def __init__(self, units, use_bias=True, kernel_initializer="glorot_uniform", **kwargs):
        self.units = _positive_int("units", units)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        super().__init__(**kwargs)

    def build(self, input_shape):
        self._add_kernel((int(input_shape[-1]), self.units), self.kernel_initializer)
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")
        self._add_channel_scale(self.units)

    def _moments(self, x, theta, sigma2):
        return lrt_dense(x, theta, sigma2)

    def _apply(self, x, kernel):
        return tf.matmul(x, kernel)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


def _conv_output_shape(input_shape, strides, channels):
    def out(n):
        return None if n is None else -(-n // strides)

    return (input_shape[0], out(input_shape[1]), out(input_shape[2]), channels)


def variational_layers(model):
    """All sparse variational kernel layers inside `model`."""
    return [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, VariationalLayer)
    ]


def pruned_counts(masks):
    """`(pruned, total)` entries over 0/1 keep masks (tensors or arrays)."""
    pruned = total = 0
    for mask in masks:
        mask = np.asarray(mask)
        total += mask.size
        pruned += int(mask.size - mask.sum())
    return pruned, total


def weight_sparsity(model):
    """`(pruned, total)` weight counts over the variational layers of `model`."""
    return pruned_counts(layer.kernel_mask() for layer in variational_layers(model))


def weight_decay_exclusions(model, include_means=False):
    """The variables of `model` that weight decay must not touch.

    Decay is a Gaussian prior on a weight; on a variational layer's
    `log_sigma2` it would be a prior outside the ELBO (which already has the
    ARD prior), and on its `theta` a second prior on top of the ARD one.
    Both are excluded, `theta` unless `include_means`.
    """
    excluded = []
    for layer in variational_layers(model):
        excluded.append(layer.log_sigma2)
        if not include_means:
            excluded.append(layer.theta)
    return excluded
