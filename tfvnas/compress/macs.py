"""Counting the multiply-accumulates (MACs) a model does per image.

Parameter counting lives in `tfvnas.compress.counting`; MACs are here, apart, so
that the dead-channel elimination (`tfvnas.compress.shrinking`) and the export report
share one rule:

- `Conv2D`: `out_h * out_w * k_h * k_w * in_channels * out_channels / groups`.
- `DepthwiseConv2D`: `out_h * out_w * k_h * k_w * in_channels * depth_multiplier`.
- `Dense`: `in_features * units`, times every position when it is applied to
  a feature map rather than a vector.
- Everything else (pooling, batch normalisation, `Add`, `Concatenate`,
  activations, `Rescaling`, padding, cropping) counts 0: those are not
  multiply-accumulates, and a converter folds a batch normalisation after a
  convolution into it.

Zeros in a kernel count like any other weight: this is the work a dense
kernel (which LiteRT runs, also for a sparse-encoded file) does.
"""

import math

import keras

MAC_LAYERS = ("Conv2D", "DepthwiseConv2D", "Dense")


def kernel_macs(layer_type, output_shape, kernel_shape):
    """The MACs per image of one convolution or dense layer.

    Args:
        layer_type: `"Conv2D"`, `"DepthwiseConv2D"` or `"Dense"`.
        output_shape: the layer's output shape without the batch axis
            (`(out_h, out_w, channels)`, or `(units,)` for a vector).
        kernel_shape: the kernel's shape in Keras' layout:
            `(k_h, k_w, in / groups, out)`, `(k_h, k_w, in, multiplier)` or
            `(in, units)`. Every output position multiplies the whole kernel
            once (`/ groups` is in its shape).

    Returns:
        An int.

    Raises:
        ValueError: for another layer type.
    """
    if layer_type not in MAC_LAYERS:
        raise ValueError(
            f"`layer_type` must be one of {', '.join(MAC_LAYERS)}. Received: layer_type={layer_type!r}")
    positions = math.prod(int(d) for d in output_shape[:-1])
    return int(positions * math.prod(int(d) for d in kernel_shape))


def count_macs(model):
    """Counts the MACs per image of a Keras model, layer by layer.

    Args:
        model: a built Keras 3 model whose layers are each called once (a
            stripped network, for example).

    Returns:
        A dict: `total` (int) and `layers`, one dict per convolution or
        dense layer with `name`, `type`, `output_shape` and `macs`, in
        layer order. The rule is in the module docstring.
    """
    rows = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind not in MAC_LAYERS or not isinstance(layer, getattr(keras.layers, kind)):
            continue
        output_shape = tuple(int(d) for d in layer.output.shape[1:])
        rows.append({
            "name": layer.name,
            "type": kind,
            "output_shape": list(output_shape),
            "macs": kernel_macs(kind, output_shape, tuple(layer.kernel.shape)),
        })
    return {"total": int(sum(r["macs"] for r in rows)), "layers": rows}
