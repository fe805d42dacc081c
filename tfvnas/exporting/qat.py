"""Pruning-preserving quantization-aware fine-tuning (TF Model Optimization, on tf_keras).

tensorflow-model-optimization works only with the legacy tf_keras (Keras 2),
so the stripped network (standard layers only) is rebuilt in tf_keras
(`to_tf_keras`), annotated and quantized with
`Default8BitPrunePreserveQuantizeScheme`, and fine-tuned. tf_keras and tfmot
are imported only when this runs.

References:
    - TensorFlow Model Optimization: pruning-preserving quantization-aware
      training (`Default8BitPrunePreserveQuantizeScheme`).
"""

import inspect
import os

import keras
import numpy as np
import tensorflow as tf

from tfvnas import data as data_lib
from tfvnas.compress import counting
from tfvnas.compress import strip as strip_lib

# Keyword arguments every tf_keras layer takes (tf_keras base Layer).
_TF_KERAS_BASE_ARGS = frozenset({
    "name", "trainable", "dtype", "dynamic", "input_dim", "input_shape",
    "batch_input_shape", "batch_size", "weights", "activity_regularizer",
    "autocast", "implementation",
})



def _import_tf_keras():
    import tf_keras

    return tf_keras


def _import_tfmot():
    """Imports tensorflow_model_optimization without switching `tf.keras`.

    tfmot sets `TF_USE_LEGACY_KERAS=1` and then touches `tf.keras`, which
    would bind `tf.keras` to tf_keras for the whole process. Resolving
    `tf.keras` first keeps it Keras 3; the variable is restored afterwards.
    """
    previous = os.environ.get("TF_USE_LEGACY_KERAS")
    tf.keras.layers  # noqa: B018 - resolves the lazy `tf.keras` (Keras 3) first
    try:
        import tensorflow_model_optimization as tfmot
    finally:
        if previous is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = previous
    return tfmot


def _init_arguments(cls):
    names = set(_TF_KERAS_BASE_ARGS)
    for klass in cls.__mro__:
        if "__init__" in vars(klass):
            names.update(inspect.signature(klass.__init__).parameters)
        if klass.__name__ == "Layer":
            break
    names.discard("self")
    names.discard("kwargs")
    return names


def _tf_keras_config(layer_name, class_name, config, tf_cls, tf_keras):
    """Maps a Keras 3 layer config to the arguments of the tf_keras class."""
    config = dict(config)
    dtype = config.get("dtype")
    if isinstance(dtype, dict):
        config["dtype"] = dtype.get("config", {}).get("name", "float32")
    for key in list(config):
        value = config[key]
        if key.endswith("_initializer"):
            # Weights are copied after building: initializers never run.
            del config[key]
        elif key.endswith(("_regularizer", "_constraint")) and value is not None:
            module = tf_keras.regularizers if key.endswith("_regularizer") else tf_keras.constraints
            try:
                config[key] = module.get(
                    {"class_name": value["class_name"], "config": value.get("config", {})})
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(
                    f"Layer {layer_name!r} ({class_name}) has a {key} tf_keras cannot "
                    f"rebuild. Received: {key}={value!r}"
                ) from error
    allowed = _init_arguments(tf_cls)
    for key in list(config):
        if key in allowed:
            continue
        if config[key] in (None, False):
            del config[key]  # a Keras 3-only option left off (e.g. quantization_config)
        else:
            raise ValueError(
                f"Layer {layer_name!r} ({class_name}) uses the Keras 3 option {key!r}, "
                f"which tf_keras does not have. Received: {key}={config[key]!r}"
            )
    return config


def _history(value):
    """The `(layer, node, tensor)` key of a serialized Keras tensor."""
    return tuple(value["config"]["keras_history"])


def _is_tensor_ref(value):
    return isinstance(value, dict) and value.get("class_name") == "__keras_tensor__"


def _resolve(value, tensors):
    if _is_tensor_ref(value):
        return tensors[_history(value)]
    if isinstance(value, (list, tuple)):
        return [_resolve(v, tensors) for v in value]
    return value


def _endpoints(spec):
    """`input_layers` / `output_layers` of a functional config as a list of keys."""
    if spec and isinstance(spec[0], str):
        return [tuple(spec)]
    return [tuple(s) for s in spec]


def to_tf_keras(model):
    """Rebuilds a stripped Keras 3 model in tf_keras (Keras 2) with its weights.

    Walks the functional graph as the model's config records it (layers in
    topological order, each call's inputs by `keras_history`), creates the
    same layer class from `tf_keras.layers` with the mapped config, calls it
    on the rebuilt tensors and copies the weights. Config mapping: the dtype
    policy becomes its name; initializers are dropped (weights are copied);
    regularizers and constraints are rebuilt by class name; Keras 3-only
    options are dropped when off (`quantization_config=None`) and refused
    when set.

    Args:
        model: A Keras 3 functional model of `tfvnas.compress.strip.STANDARD_LAYERS` only.

    Returns:
        A `tf_keras.Model` computing the same function, with the same layer
        names.

    Raises:
        ValueError: If a layer is not a standard layer or its config cannot
            be expressed in tf_keras.
    """
    tf_keras = _import_tf_keras()
    strip_lib.check_standard_layers(model)
    config = model.get_config()
    tensors = {}
    calls = {}
    for spec in config["layers"]:
        class_name, name = spec["class_name"], spec["name"]
        layer_config = spec["config"]
        if class_name == "InputLayer":
            shape = layer_config.get("batch_shape") or layer_config.get("batch_input_shape")
            tensors[(name, 0, 0)] = tf_keras.Input(
                shape=tuple(shape[1:]), dtype=layer_config.get("dtype", "float32"), name=name)
            continue
        tf_cls = getattr(tf_keras.layers, class_name)
        layer = tf_cls.from_config(
            _tf_keras_config(name, class_name, layer_config, tf_cls, tf_keras))
        for node in spec["inbound_nodes"]:
            args = _resolve(node["args"], tensors)
            kwargs = {k: _resolve(v, tensors) for k, v in node.get("kwargs", {}).items()
                      if v is not None}
            outputs = layer(*args, **kwargs)
            call = calls.get(name, 0)
            calls[name] = call + 1
            for k, out in enumerate(outputs if isinstance(outputs, (list, tuple)) else [outputs]):
                tensors[(name, call, k)] = out
        layer.set_weights(model.get_layer(name).get_weights())
    inputs = [tensors[key] for key in _endpoints(config["input_layers"])]
    outputs = [tensors[key] for key in _endpoints(config["output_layers"])]
    return tf_keras.Model(
        inputs[0] if len(inputs) == 1 else inputs,
        outputs[0] if len(outputs) == 1 else outputs,
        name=model.name,
    )


def _output_quantize_config_class(tfmot):
    """A QuantizeConfig that fake-quantizes a layer's output only."""

    class OutputQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return [tfmot.quantization.keras.quantizers.MovingAverageQuantizer(
                num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]

        def get_config(self):
            return {}

    return OutputQuantizeConfig


def _annotate(tf_model, tfmot, tf_keras):
    """Annotates every layer for quantization.

    Layers the default 8-bit registry knows get its config; a
    BatchNormalization right after a convolution or dense layer is folded by
    tfmot's transforms; any other layer (Rescaling, a standalone
    BatchNormalization, Identity) gets an output-only fake-quant, so the
    converter can keep the whole graph in int8. (Left unannotated, the
    prune-preserve registry claims to support a weightless Rescaling and
    then fails on it.)
    """
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry,
    )

    registry = default_8bit_quantize_registry.Default8BitQuantizeRegistry()
    output_config = _output_quantize_config_class(tfmot)
    annotate = tfmot.quantization.keras.quantize_annotate_layer
    folded = set()
    for layer in tf_model.layers:
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            producers = [n.inbound_layers for n in layer._inbound_nodes]  # noqa: SLF001
            producer = producers[0] if len(producers) == 1 else None
            if (isinstance(producer, (tf_keras.layers.Conv2D, tf_keras.layers.DepthwiseConv2D,
                                      tf_keras.layers.Dense))
                    and producer.get_config().get("activation") == "linear"
                    and len(producer._outbound_nodes) == 1):  # noqa: SLF001
                folded.add(layer.name)

    def clone(layer):
        if layer.name in folded or registry.supports(layer):
            return annotate(layer)
        return annotate(layer, quantize_config=output_config())

    annotated = tf_keras.models.clone_model(tf_model, clone_function=clone)
    annotated.set_weights(tf_model.get_weights())
    return annotated, {"OutputQuantizeConfig": output_config}


def _layer_ranges(model, images, batch_size):
    """`{layer name: (min, max)}` of each layer's float output over `images`.

    The model's input layer gets the range of the raw images themselves.
    """
    outputs = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            outputs[layer.name] = layer.output
        except (AttributeError, ValueError):  # a layer called more than once
            continue
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    probe = keras.Model(inputs, outputs)
    ranges = {}
    for start in range(0, len(images), batch_size):
        x = np.asarray(images[start : start + batch_size], np.float32)
        batch = {name: np.asarray(v) for name, v in probe(x, training=False).items()}
        batch[model.layers[0].name] = x
        for name, value in batch.items():
            low, high = float(value.min()), float(value.max())
            old = ranges.get(name, (low, high))
            ranges[name] = (min(old[0], low), max(old[1], high))
    return ranges


def _calibrate_activation_ranges(model, qat_model, images, batch_size):
    """Starts every activation range of a QAT model at the float model's.

    tfmot starts each activation range at [-6, 6] and moves it by 0.1% of
    the batch range per step (an EMA with decay 0.999): a fine-tuning of a
    few hundred steps would clip raw 0..255 pixels at 6. Each range variable
    (`output_*`, `post_activation_*`, `quantize_layer_*`; not the kernels')
    is set to the float output range of the layer it quantizes, widened to
    include 0 as tfmot does.

    Returns:
        The number of range variables set.
    """
    ranges = _layer_ranges(model, images, batch_size)
    count = 0
    for layer in qat_model.layers:
        if hasattr(layer, "layer"):
            source = layer.layer.name
        else:  # QuantizeLayer: quantizes its input
            nodes = getattr(layer, "_inbound_nodes", [])
            inbound = nodes[0].inbound_layers if nodes else None
            source = getattr(inbound, "name", None)
        if source not in ranges:
            continue
        low, high = min(ranges[source][0], 0.0), max(ranges[source][1], 0.0)
        # A constant-zero output (the `none` op) would give scale 0.
        high = max(high, low + 1e-3)
        for variable in layer.non_trainable_weights:
            short = variable.name.split("/")[-1].split(":")[0]
            if "kernel" in short or not short.endswith(("_min", "_max")):
                continue
            value = low if short.endswith("_min") else high
            variable.assign(np.full(variable.shape, value, np.float32))
            count += 1
    return count


def _zero_keeper(tf_keras, pairs):
    """A callback that re-zeroes pruned kernel entries after every step.

    It also records, per layer type, which pruned positions the optimizer
    made non-zero at least once: what the quantization scheme alone would
    have lost.
    """

    class KeepZeros(tf_keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.masks = [(k, v, tf.constant(k.values != 0, v.dtype)) for k, v in pairs]
            self.moved = [np.zeros(k.values.shape, bool) for k, _ in pairs]

        def on_train_batch_end(self, batch, logs=None):
            for (kernel, variable, mask), moved in zip(self.masks, self.moved):
                moved |= (variable.numpy() != 0) & (kernel.values == 0)
                variable.assign(variable * mask)

        def summary(self):
            by_type = {}
            for (kernel, _, _), moved in zip(self.masks, self.moved):
                entry = by_type.setdefault(kernel.layer_type, {"kernels": 0, "zeros": 0,
                                                               "moved": 0, "layers_moved": []})
                entry["kernels"] += 1
                entry["zeros"] += int(np.sum(kernel.values == 0))
                entry["moved"] += int(moved.sum())
                if moved.any():
                    entry["layers_moved"].append(kernel.layer)
            for entry in by_type.values():
                entry["kept_by_scheme"] = entry["moved"] == 0
            return by_type

    return KeepZeros()


def quantization_aware_finetune(model, x, y, *, epochs, learning_rate, batch_size, seed=0,
                                calibration=None, keep_zeros=True):
    """Pruning-preserving quantization-aware fine-tuning of a stripped model.

    The model is rebuilt in tf_keras (`to_tf_keras`), annotated, quantized
    with `Default8BitPrunePreserveQuantizeScheme`, its activation ranges are
    started at the float model's ranges on `calibration` images, and it is
    fine-tuned with Adam on raw images (the model normalises them itself).

    The scheme multiplies Conv2D and Dense kernels by their zero mask in
    every step, but not DepthwiseConv2D kernels, and not any kernel layer
    whose quantize config one of tfmot's graph transforms sets rather than
    the registry: a layer feeding a Concatenate (`ConcatTransform`, e.g. the
    two 1x1 convolutions of a factorized reduce) or followed directly by a
    ReLU (`LayerReLUQuantize`, which also drops its weight fake-quant). With
    `keep_zeros`, a callback re-zeroes every pruned entry after each step
    (projected gradient descent), so all kernels keep the stripped model's
    zeros; what the scheme alone would have moved is measured.

    Args:
        model: The stripped Keras 3 model.
        x: Raw training images `(N, H, W, C)`.
        y: Integer labels `(N,)`.
        epochs, learning_rate, batch_size: The fine-tuning.
        seed: Seed of the data order.
        calibration: Raw images for the activation ranges (None: the first
            256 of `x`).
        keep_zeros: Bool; re-zero pruned kernel entries after every step.

    Returns:
        A tuple `(qat_model, moved)`: the quantization-aware tf_keras model,
        and per layer type the number of pruned positions the optimizer made
        non-zero at least once (`kernels`, `zeros`, `moved`, `layers_moved`,
        `kept_by_scheme`); None when `keep_zeros` is False.
    """
    tfmot = _import_tfmot()
    tf_keras = _import_tf_keras()
    annotated, custom = _annotate(to_tf_keras(model), tfmot, tf_keras)
    with tfmot.quantization.keras.quantize_scope(custom):
        qat = tfmot.quantization.keras.quantize_apply(
            annotated, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme())
    _calibrate_activation_ranges(
        model, qat, x[:256] if calibration is None else calibration, batch_size)
    qat.compile(
        optimizer=tf_keras.optimizers.Adam(learning_rate),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    callbacks = []
    if keep_zeros:
        pairs = [(k, v) for k, v in qat_kernel_variables(model, qat) if v is not None]
        callbacks.append(_zero_keeper(tf_keras, pairs))
    ds = data_lib.make_tf_dataset(x, y, batch_size, shuffle=True, seed=seed)
    qat.fit(ds, epochs=epochs, verbose=0, callbacks=callbacks)
    return qat, (callbacks[0].summary() if keep_zeros else None)


def qat_kernel_variables(model, qat_model):
    """`(kernel, variable or None)` for each kernel of the stripped model.

    The QAT model's variable is found by the wrapped layer's name. The
    wrapper owns the variables and swaps the layer's `kernel` attribute for
    its fake-quant tensor, so the variable is looked up among the wrapper's
    weights (`kernel` or `depthwise_kernel`).
    """
    owners = {getattr(layer, "layer", layer).name: layer for layer in qat_model.layers}
    pairs = []
    for kernel in counting.kernels(model):
        layer = owners.get(kernel.layer)
        variable = next(
            (w for w in (layer.weights if layer is not None else [])
             if w.name.split("/")[-1].split(":")[0] in ("kernel", "depthwise_kernel")
             and tuple(w.shape) == kernel.values.shape),
            None,
        )
        pairs.append((kernel, variable))
    return pairs
