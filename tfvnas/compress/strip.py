"""Strip a trained `Network` into a model of standard Keras layers only.

Stripping is what `tfmot.sparsity.keras.strip_pruning` is to pruning: the
variational layers' masked means (`theta * [log_alpha < threshold]`) are
copied into plain `Conv2D`, `DepthwiseConv2D` and `Dense` kernels, our fused
`BatchNorm` becomes `BatchNormalization` with the same statistics, and the
cell topology is unrolled into a functional graph of `Add` and
`Concatenate`. Training-only parts (auxiliary head, drop-path, noise) are
left out. The result computes what `network(x, training=False)` computes,
loads with no tfvnas code, and is what `tfvnas.export` exports.

Layers used: Rescaling, Conv2D, DepthwiseConv2D, MaxPooling2D,
AveragePooling2D, BatchNormalization, ReLU, Add, Concatenate, ZeroPadding2D,
Cropping2D, GlobalAveragePooling2D, Dense (and whatever standard layers a
registered operation is made of, `tfvnas.layers.registry.register`: a
`tfvnas.layers.ops.Op` or a `keras.Sequential` is stripped layer by layer).
A strided dilated depthwise
convolution (which TensorFlow cannot run in one op) becomes a stride-1
`DepthwiseConv2D` followed by `MaxPooling2D(pool_size=1, strides=2)`, which
keeps every second pixel; the `none` op becomes `Rescaling(0)`.

By default the stripped model then goes through dead-channel elimination
(`tfvnas.compress.shrinking.shrink`): channels whose weights are all zero, and what
only they feed, are removed, and the constants dead channels still emit are
folded into the next layer's bias, so the model is smaller and computes
the same logits. `shrink=False` keeps every channel (and every zero).
"""

import keras
import numpy as np

from tfvnas import precision
from tfvnas.compress import shrinking
from tfvnas.layers import batch_normalization as bn_lib
from tfvnas.layers import ops as ops_lib
from tfvnas.layers import variational
from tfvnas.models import network as network_lib

STANDARD_LAYERS = (
    keras.layers.InputLayer,
    keras.layers.Rescaling,
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.BatchNormalization,
    keras.layers.ReLU,
    keras.layers.Add,
    keras.layers.Concatenate,
    keras.layers.ZeroPadding2D,
    keras.layers.Cropping2D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.Dense,
    keras.layers.Activation,
    keras.layers.Identity,
)


def strip(network, input_shape=None, name=None, shrink=True):
    """A functional model of standard Keras layers equal to `network`'s inference path.

    Args:
        network: a built `tfvnas.models.network.Network`.
        input_shape: `(H, W, C)` of the raw images; default the shape the
            network was built with.
        name: model name (default `"<network name>_stripped"`).
        shrink: remove dead channels and fold the constants they leave
            (`tfvnas.compress.shrinking.shrink`); False keeps every channel.

    Returns:
        A `keras.Model` taking float32 raw pixels `(None, H, W, C)` (named
        `images`) and returning logits.

    Raises:
        ValueError: if `network` is not a built `Network`, or `shrink` is
            not a bool.
    """
    if not isinstance(network, network_lib.Network):
        raise ValueError(
            "`network` must be a tfvnas.models.network.Network. "
            f"Received: {type(network).__name__}"
        )
    if not isinstance(shrink, bool):
        raise ValueError(f"`shrink` must be a bool. Received: shrink={shrink!r}")
    if input_shape is None:
        if not network.built or network.input_shape_built is None:
            raise ValueError("`network` must be built (or `input_shape` given) to be stripped.")
        input_shape = network.input_shape_built
    builder = _Builder()
    # float32 throughout, whatever precision the network was trained in and
    # whatever policy is set (`tfvnas.precision`): export ships float32.
    with precision.policy_scope("float32"):
        inputs = keras.Input(tuple(input_shape), dtype="float32", name="images")
        x = builder.clone(network.normalise, inputs, "normalise")
        for i, layer in enumerate(network.stem):
            x = builder.apply(layer, x, f"stem_{i}")
        s0 = s1 = x
        for cell in network.cells:
            s0, s1 = s1, builder.cell(cell, s0, s1)
        x = builder.clone(network.global_pool, s1, "global_pool")
        logits = builder.apply(network.classifier, x, "classifier")
        model = keras.Model(inputs, logits, name=name or f"{network.name}_stripped")
    return shrinking.shrink(model) if shrink else model


def check_standard_layers(model):
    """Raises `ValueError` naming the layers of `model` that are not `STANDARD_LAYERS`."""
    unknown = sorted({type(l).__name__ for l in model.layers if type(l) not in STANDARD_LAYERS})
    if unknown:
        names = ", ".join(c.__name__ for c in STANDARD_LAYERS)
        raise ValueError(
            f"`model` must be a stripped model made of standard layers only ({names}). "
            f"Received: a model with {', '.join(unknown)}"
        )


class _Builder:
    """Applies standard-layer copies of tfvnas layers to Keras tensors."""

    def cell(self, cell, s0, s1):
        prefix = cell.name
        states = [
            self.apply(cell.preprocess0, s0, f"{prefix}_pre0"),
            self.apply(cell.preprocess1, s1, f"{prefix}_pre1"),
        ]
        for node in range(cell.nodes):
            outs = []
            for e, (n, inp, op_names) in enumerate(cell.edges):
                if n != node:
                    continue
                tag = f"{prefix}_n{node}_in{inp}_{op_names[0]}"
                outs.append(self.apply(cell.edge_layers[e], states[inp], tag))
            states.append(outs[0] if len(outs) == 1 else keras.layers.Add(name=f"{prefix}_n{node}_add")(outs))
        picked = [states[i] for i in cell.concat]
        if len(picked) == 1:
            return picked[0]
        return keras.layers.Concatenate(name=f"{prefix}_concat")(picked)

    def apply(self, layer, x, name):
        if isinstance(layer, ops_lib.FactorizedReduce):
            x = self.clone(layer.relu, x, f"{name}_relu")
            a = self.apply(layer.conv_a, x, f"{name}_conv_a")
            b = self.clone(layer.shift, x, f"{name}_shift")
            b = self.clone(layer.crop, b, f"{name}_crop")
            b = self.apply(layer.conv_b, b, f"{name}_conv_b")
            x = keras.layers.Concatenate(name=f"{name}_concat")([a, b])
            return self.apply(layer.bn, x, f"{name}_bn")
        if isinstance(layer, ops_lib.Identity):
            return x
        if isinstance(layer, ops_lib.Zero):
            if layer.strides > 1:
                x = keras.layers.MaxPooling2D(1, strides=layer.strides, name=f"{name}_subsample")(x)
            return keras.layers.Rescaling(0.0, name=f"{name}_zero")(x)
        if isinstance(layer, (ops_lib.Chain, keras.Sequential)):
            steps = layer.steps if isinstance(layer, ops_lib.Chain) else layer.layers
            for i, step in enumerate(steps):
                x = self.apply(step, x, f"{name}_{i}")
            return x
        if isinstance(layer, bn_lib.BatchNorm):
            return self._batch_norm(layer, x, name)
        if isinstance(layer, variational.VariationalConv2D):
            return self._variational_conv(layer, x, name, depthwise=False)
        if isinstance(layer, variational.VariationalDepthwiseConv2D):
            return self._variational_conv(layer, x, name, depthwise=True)
        if isinstance(layer, variational.VariationalDense):
            weights = [_numpy(layer.masked_kernel())] + ([_numpy(layer.bias)] if layer.use_bias else [])
            dense = keras.layers.Dense(layer.units, use_bias=layer.use_bias, name=name)
            return _with_weights(dense, x, weights)
        if type(layer) in STANDARD_LAYERS:
            return self.clone(layer, x, name)
        raise ValueError(
            f"Cannot strip layer {layer.name!r}: it has no standard Keras equivalent. An operation of your "
            "own (`tfvnas.register_op`) strips when its factory returns a `tfvnas.layers.ops.Op` or a "
            "`keras.Sequential` of standard Keras layers, tfvnas' variational layers and "
            f"`tfvnas.layers.batch_normalization.BatchNorm`. Received: a layer of type {type(layer).__name__}"
        )

    def clone(self, layer, x, name):
        config = dict(layer.get_config(), name=name, dtype="float32")  # not a mixed policy it was trained in
        copy = type(layer).from_config(config)
        return _with_weights(copy, x, [_numpy(w).astype("float32") for w in layer.weights])

    def _batch_norm(self, layer, x, name):
        bn = keras.layers.BatchNormalization(
            momentum=layer.momentum,
            epsilon=layer.epsilon,
            center=layer.affine,
            scale=layer.affine,
            name=name,
        )
        weights = [_numpy(layer.moving_mean), _numpy(layer.moving_variance)]
        if layer.affine:
            weights = [_numpy(layer.gamma), _numpy(layer.beta)] + weights
        return _with_weights(bn, x, weights)

    def _variational_conv(self, layer, x, name, depthwise):
        s, d = layer.strides, layer.dilation_rate
        subsample = s > 1 and d > 1
        step = 1 if subsample else s
        weights = [_numpy(layer.masked_kernel())] + ([_numpy(layer.bias)] if layer.use_bias else [])
        if depthwise:
            conv = keras.layers.DepthwiseConv2D(
                layer.kernel_size, strides=step, dilation_rate=d, padding="same",
                use_bias=layer.use_bias, name=name,
            )
        else:
            conv = keras.layers.Conv2D(
                layer.filters, layer.kernel_size, strides=step, dilation_rate=d, padding="same",
                use_bias=layer.use_bias, name=name,
            )
        x = _with_weights(conv, x, weights)
        if subsample:
            x = keras.layers.MaxPooling2D(pool_size=1, strides=s, name=f"{name}_subsample")(x)
        return x


def _with_weights(layer, x, weights):
    y = layer(x)
    if weights:
        layer.set_weights(weights)
    return y


def _numpy(v):
    return np.asarray(keras.ops.convert_to_numpy(v))
