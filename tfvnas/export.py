"""Export of a stripped network: SavedModel, TFLite (float, sparse, int8, QAT) and a report.

`export_stripped()` takes the *stripped* model (a Keras 3 functional model of
standard layers only, made by `tfvnas.strip`: its first layer `normalise`
rescales raw pixels, its output is logits) and writes one folder:

- `saved_model/`: a SavedModel with a `serving_default` signature.
- `model_float.tflite` (sparse weight encoding) and `model_float_dense.tflite`.
- `model_int8.tflite`: full-integer post-training quantization (optional).
- `model_qat_int8.tflite`: int8 after pruning-preserving quantization-aware
  fine-tuning with TF Model Optimization (optional).
- `report.json`, `report.md`, `model_card.md`, `export_config.json`.

**Input and output contract.** Every artefact has one signature,
`serving_default`, with one input `images`: shape `(None, H, W, C)`, the
dtype the dataset stores (uint8 raw pixels for MNIST/CIFAR, float32 for float
data), in the stored value range. The model casts to float32 and normalises
inside (its `Rescaling` layer), so callers feed raw pixels, never normalised
ones, and never quantization parameters, also for the int8 files (their first
ops are CAST and QUANTIZE). Outputs: `logits` and `probabilities` (softmax),
float32; int8 files give int8 outputs with a scale and zero point
(`run_tflite` dequantises them).

**Why `keras.export.ExportArchive`.** It is Keras 3's own SavedModel writer:
it tracks the model's variables under their Keras paths (so
`saved_model_weights()` can match them by name), and `add_endpoint` takes a
custom serving function with an explicit input signature: the uint8 input
named `images`, the cast, and the two named outputs. `model.export()` serves
the model's own call (its float32 input, one output named `output_0`). The
TFLite files are converted from that same SavedModel, so every artefact
shares one serving function.

`export()` is the `tfvnas export` entry point: it loads a `tfvnas train`
folder (`load_trained`), strips the network (`tfvnas.strip.strip`) and calls
`export_stripped`; `read_report()` reads a finished export's report.

**Verification.** Parity on the test split (max abs logit difference against
the Keras model, top-1 agreement, accuracy), LiteRT latency, whether each
file loads with the default XNNPACK delegate, and the zero pattern of every
kernel read back from each artefact (see `zero_pattern()`).

**XNNPACK and sparse int8.** XNNPACK cannot delegate a sparse int8
FULLY_CONNECTED, and the interpreter then fails to load the file. When the
sparse int8 file does not load with XNNPACK, the int8 model is converted again
without sparse encoding, and the one that loads is shipped; the report says
which and why.

References:
    - Ferianc, Fan, Rodrigues. VINNAS: Variational Inference-based Neural
      Network Architecture Search. arXiv 2007.06103.
    - TensorFlow Model Optimization: pruning-preserving quantization-aware
      training (`Default8BitPrunePreserveQuantizeScheme`).
"""

import dataclasses
import datetime
import gzip
import inspect
import json
import math
import os
import re
import shutil
import tempfile
import time
import warnings

import keras
import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from tfvnas import checks
from tfvnas import config as config_lib
from tfvnas import data as data_lib

SIGNATURE_KEY = "serving_default"
INPUT_NAME = "images"
OUTPUT_NAMES = ("logits", "probabilities")
NORMALISATION_LAYER = "normalise"

SAVED_MODEL_DIR = "saved_model"
FLOAT_TFLITE = "model_float.tflite"
FLOAT_DENSE_TFLITE = "model_float_dense.tflite"
INT8_TFLITE = "model_int8.tflite"
QAT_TFLITE = "model_qat_int8.tflite"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
MODEL_CARD = "model_card.md"
CONFIG_JSON = "export_config.json"

# Latency is measured single-threaded: what one phone core does, and stable
# on shared machines.
LATENCY_THREADS = 1
LATENCY_WARMUP = 5
DELEGATES = ("xnnpack", "none")

# The layers a stripped model may hold (`tfvnas.strip`), by class name.
STANDARD_LAYERS = (
    "InputLayer", "Rescaling", "Conv2D", "DepthwiseConv2D", "MaxPooling2D",
    "AveragePooling2D", "BatchNormalization", "ReLU", "Add", "Concatenate",
    "ZeroPadding2D", "Cropping2D", "GlobalAveragePooling2D", "Dense",
    "Activation", "Identity",
)

# Keras kernel -> TFLite constant layout. TFLite stores Conv2D as OHWI,
# DepthwiseConv2D as 1HW(C*M), FULLY_CONNECTED as (out, in).
_TFLITE_LAYOUTS = {
    "Conv2D": lambda k: np.transpose(k, (3, 0, 1, 2)),
    "DepthwiseConv2D": lambda k: k.reshape((1,) + k.shape[:2] + (-1,)),
    "Dense": lambda k: np.transpose(k),
}

# Keyword arguments every tf_keras layer takes (tf_keras base Layer).
_TF_KERAS_BASE_ARGS = frozenset({
    "name", "trainable", "dtype", "dynamic", "input_dim", "input_shape",
    "batch_input_shape", "batch_size", "weights", "activity_regularizer",
    "autocast", "implementation",
})


# ---------------------------------------------------------------------------
# Parameters


@dataclasses.dataclass(frozen=True)
class _Kernel:
    layer: str
    layer_type: str
    path: str
    values: np.ndarray


def _kernels(model):
    """The kernel weights of `model`, in layer order."""
    kernels = []
    for layer in model.layers:
        for weight in layer.weights:
            if weight.name.endswith("kernel"):
                kernels.append(
                    _Kernel(layer.name, type(layer).__name__, weight.path,
                            np.asarray(weight.numpy()))
                )
    return kernels


def count_parameters(model):
    """Counts the dense and non-zero parameters of a model.

    Args:
        model: A Keras 3 model.

    Returns:
        A dict: `dense` and `nonzero` over every weight of the model
        (kernels, biases, BatchNormalization parameters and statistics);
        `kernel_dense`, `kernel_nonzero` and `kernel_sparsity` over the
        kernels only; and `layers`, one dict per kernel-bearing layer with
        `name`, `type`, `weight`, `shape`, `dense`, `nonzero`, `sparsity`.
    """
    rows = []
    for kernel in _kernels(model):
        dense = int(kernel.values.size)
        nonzero = int(np.count_nonzero(kernel.values))
        rows.append({
            "name": kernel.layer,
            "type": kernel.layer_type,
            "weight": kernel.path,
            "shape": list(kernel.values.shape),
            "dense": dense,
            "nonzero": nonzero,
            "sparsity": _sparsity(dense, nonzero),
        })
    weights = model.get_weights()
    kernel_dense = sum(r["dense"] for r in rows)
    kernel_nonzero = sum(r["nonzero"] for r in rows)
    return {
        "dense": int(sum(w.size for w in weights)),
        "nonzero": int(sum(np.count_nonzero(w) for w in weights)),
        "kernel_dense": kernel_dense,
        "kernel_nonzero": kernel_nonzero,
        "kernel_sparsity": _sparsity(kernel_dense, kernel_nonzero),
        "layers": rows,
    }


def _sparsity(dense, nonzero):
    return float(1.0 - nonzero / dense) if dense else 0.0


# ---------------------------------------------------------------------------
# SavedModel


def write_saved_model(model, path, *, input_dtype="float32"):
    """Writes a SavedModel with the `serving_default` signature.

    The signature takes `images` (`(None,) + model input shape`, dtype
    `input_dtype`), casts it to float32, runs the model in inference mode and
    returns `{"logits": ..., "probabilities": softmax(logits)}`.

    Args:
        model: A Keras 3 model (written with `keras.export.ExportArchive`) or
            a tf_keras model (written with `tf.saved_model.save` of a
            `tf.Module`; used for the quantization-aware model).
        path: Directory to write; must not exist yet.
        input_dtype: `"uint8"` or `"float32"`, the dtype of `images`.

    Raises:
        ValueError: If `input_dtype` is not uint8 or float32.
    """
    dtype = _input_dtype(input_dtype)
    spec = tf.TensorSpec((None,) + _image_shape(model), tf.as_dtype(dtype), name=INPUT_NAME)

    def serve(images):
        logits = model(tf.cast(images, tf.float32), training=False)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

    path = os.fspath(path)
    if isinstance(model, keras.Model):
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(SIGNATURE_KEY, serve, input_signature=[spec])
        archive.write_out(path, verbose=False)
    else:
        module = tf.Module()
        # Track the variables, not the model: saving a tf_keras model object
        # also traces and stores every layer's call (seconds, unused here).
        module.model_variables = list(model.variables)
        module.serve = tf.function(serve, input_signature=[spec])
        tf.saved_model.save(module, path, signatures={SIGNATURE_KEY: module.serve})


def saved_model_weights(path):
    """Reads the variables of a SavedModel.

    Args:
        path: A SavedModel directory.

    Returns:
        A dict, in the SavedModel's variable order, from variable name
        (without the `:0` suffix; for a Keras 3 model the weight's `path`,
        e.g. `"stem_conv/kernel"`) to its value as a NumPy array. A repeated
        name gets a `#k` suffix.
    """
    loaded = tf.saved_model.load(os.fspath(path))
    weights = {}
    for variable in loaded.variables:
        name = variable.name[:-2] if variable.name.endswith(":0") else variable.name
        key, k = name, 1
        while key in weights:
            key, k = f"{name}#{k}", k + 1
        weights[key] = variable.numpy()
    return weights


def _saved_model_logits(path, x, batch_size):
    signature = tf.saved_model.load(os.fspath(path)).signatures[SIGNATURE_KEY]
    out = [
        signature(**{INPUT_NAME: tf.constant(x[i : i + batch_size])})["logits"].numpy()
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(out)


# ---------------------------------------------------------------------------
# TFLite: conversion, running


def tflite_convert(model, *, sparse, int8=False, representative=None, input_dtype="float32"):
    """Converts a model to a TFLite flatbuffer with the serving signature.

    Args:
        model: A Keras 3 model, a tf_keras model (e.g. quantization-aware),
            or the path of a SavedModel written by `write_saved_model`.
        sparse: Bool; encode weights sparsely
            (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`): only non-zeros are
            stored, and a DENSIFY op expands them at load time.
        int8: Bool; full-integer quantization: int8 weights and activations
            (`TFLITE_BUILTINS_INT8` only) and int8 outputs. The input keeps
            `input_dtype` (cast and quantized inside).
        representative: Images `(N, H, W, C)` calibrating the int8
            activation ranges; required when `int8` (a quantization-aware
            model takes its ranges from its fake-quant ops and uses these only
            for layers without them).
        input_dtype: `"uint8"` or `"float32"`; dtype of the `images` input
            (ignored for a SavedModel path, which fixes it).

    Returns:
        The `.tflite` file contents, bytes.

    Raises:
        ValueError: If an argument is invalid.
    """
    for name, value in (("sparse", sparse), ("int8", int8)):
        if not isinstance(value, bool):
            raise ValueError(f"`{name}` must be a bool. Received: {name}={value!r}")
    if int8 and representative is None:
        raise ValueError(
            "`representative` must be an array of images when int8=True. "
            "Received: representative=None"
        )
    dtype = _input_dtype(input_dtype)
    with tempfile.TemporaryDirectory(prefix="tfvnas-tflite-") as tmp:
        from_path = isinstance(model, (str, os.PathLike))
        if from_path:
            source = os.fspath(model)
        else:
            source = os.path.join(tmp, SAVED_MODEL_DIR)
            write_saved_model(model, source, input_dtype=dtype)
        converter = tf.lite.TFLiteConverter.from_saved_model(source, signature_keys=[SIGNATURE_KEY])
        optimizations = []
        if int8:
            optimizations.append(tf.lite.Optimize.DEFAULT)
            images = np.asarray(representative)
            if from_path:
                signature = tf.saved_model.load(source).signatures[SIGNATURE_KEY]
                rep_dtype = signature.structured_input_signature[1][INPUT_NAME].dtype.as_numpy_dtype
            else:
                rep_dtype = np.dtype(dtype)

            def dataset():
                for i in range(len(images)):
                    yield {INPUT_NAME: images[i : i + 1].astype(rep_dtype)}

            converter.representative_dataset = dataset
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_output_type = tf.int8
        if sparse:
            optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
        converter.optimizations = optimizations
        with warnings.catch_warnings():
            # Calibration runs the deprecated tf.lite.Interpreter internally.
            warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
            return converter.convert()


def _resolver(delegate):
    if delegate not in DELEGATES:
        raise ValueError(
            f"`delegate` must be one of {', '.join(repr(d) for d in DELEGATES)}. "
            f"Received: delegate={delegate!r}"
        )
    if delegate == "xnnpack":
        return OpResolverType.AUTO  # built-in ops plus the default XNNPACK delegate
    return OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES


def _interpreter(path, delegate, num_threads=None):
    return Interpreter(
        model_path=os.fspath(path),
        num_threads=num_threads,
        experimental_op_resolver_type=_resolver(delegate),
    )


def _to_input(x, detail):
    """Casts (or, for a quantized input, quantizes) raw images for `detail`."""
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if scale and np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        q = np.round(np.asarray(x, np.float32) / scale + zero_point)
        return np.clip(q, info.min, info.max).astype(dtype)
    return np.asarray(x).astype(dtype, copy=False)


def _from_output(y, detail):
    scale, zero_point = detail["quantization"]
    if scale and np.issubdtype(np.asarray(y).dtype, np.integer):
        return ((np.asarray(y, np.float32) - zero_point) * scale).astype(np.float32)
    return np.asarray(y, np.float32)


def run_tflite(path, x, *, delegate="xnnpack", batch_size=256, num_threads=None):
    """Runs a `.tflite` file's serving signature on a batch of images.

    Args:
        path: A `.tflite` file with the `serving_default` signature.
        x: Raw images `(N, H, W, C)`; cast to the input dtype (or quantized,
            should the input be quantized).
        delegate: `"xnnpack"` (the default delegate, as on a phone) or
            `"none"` (built-in kernels only,
            `OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES`).
        batch_size: Positive int; images per invocation.
        num_threads: Interpreter threads (None: the runtime's default).

    Returns:
        A dict from output name to a float32 array; quantized outputs are
        dequantised with their scale and zero point.

    Raises:
        ValueError: If `delegate` or `batch_size` is invalid.
        RuntimeError: If the interpreter cannot load or run the file.
    """
    batch_size = checks.check_positive_int("batch_size", batch_size)
    runner = _interpreter(path, delegate, num_threads).get_signature_runner(SIGNATURE_KEY)
    in_detail = runner.get_input_details()[INPUT_NAME]
    out_details = runner.get_output_details()
    outputs = {name: [] for name in out_details}
    for start in range(0, len(x), batch_size):
        result = runner(**{INPUT_NAME: _to_input(x[start : start + batch_size], in_detail)})
        for name, detail in out_details.items():
            outputs[name].append(_from_output(result[name], detail))
    return {name: np.concatenate(parts) for name, parts in outputs.items()}


def _load_error(path, delegate):
    """None if the file loads and runs one image with `delegate`, else the error."""
    try:
        interpreter = _interpreter(path, delegate)
        runner = interpreter.get_signature_runner(SIGNATURE_KEY)
        detail = runner.get_input_details()[INPUT_NAME]
        shape = [1] + [int(d) for d in detail["shape_signature"][1:]]
        runner(**{INPUT_NAME: np.zeros(shape, detail["dtype"])})
    except (RuntimeError, ValueError) as error:
        return f"{type(error).__name__}: {error}"
    return None


def loads_with_xnnpack(path):
    """Whether a `.tflite` file loads and runs with the default XNNPACK delegate.

    Tries `Interpreter(path)` with the default op resolver (which applies
    XNNPACK), `allocate_tensors()` and one `invoke()` on a zero image.

    Args:
        path: A `.tflite` file with the `serving_default` signature.

    Returns:
        Bool.
    """
    return _load_error(path, "xnnpack") is None


def tflite_io(path):
    """The serving signature's input and outputs of a `.tflite` file.

    Returns:
        A dict: `input` (name, dtype, shape with -1 for the batch,
        quantization `[scale, zero_point]` or None) and `outputs` (name ->
        dtype and quantization).
    """
    runner = _interpreter(path, "none").get_signature_runner(SIGNATURE_KEY)

    def describe(detail):
        scale, zero_point = detail["quantization"]
        return {
            "dtype": np.dtype(detail["dtype"]).name,
            "shape": [int(d) for d in detail["shape_signature"]],
            "quantization": [float(scale), int(zero_point)] if scale else None,
        }

    return {
        "input": {"name": INPUT_NAME, **describe(runner.get_input_details()[INPUT_NAME])},
        "outputs": {n: describe(d) for n, d in sorted(runner.get_output_details().items())},
    }


def tflite_latency(path, image, *, runs, delegate="xnnpack", num_threads=LATENCY_THREADS,
                   warmup=LATENCY_WARMUP):
    """Times single-image invocations of a `.tflite` file.

    Args:
        path: A `.tflite` file with the `serving_default` signature.
        image: One raw image `(H, W, C)` or a batch of one.
        runs: Positive int; timed invocations after `warmup` untimed ones.
        delegate: `"xnnpack"` or `"none"`, as in `run_tflite`.
        num_threads: Interpreter threads.
        warmup: Non-negative int.

    Returns:
        A dict: `median_ms`, `p90_ms`, `mean_ms`, `runs`, `num_threads`,
        `delegate`.
    """
    interpreter = _interpreter(path, delegate, num_threads)
    # The serving signature has one input; a signature runner would resize
    # and re-allocate on every call, which is not what a phone app times.
    detail = interpreter.get_input_details()[0]
    x = _to_input(np.asarray(image).reshape((1,) + tuple(np.shape(image)[-3:])), detail)
    interpreter.resize_tensor_input(detail["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], x)
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append((time.perf_counter() - start) * 1e3)
    return {
        "median_ms": float(np.median(times)),
        "p90_ms": float(np.percentile(times, 90)),
        "mean_ms": float(np.mean(times)),
        "runs": int(runs),
        "num_threads": num_threads,
        "delegate": delegate,
    }


# ---------------------------------------------------------------------------
# TFLite: reading constant tensors back out of the flatbuffer


@dataclasses.dataclass(frozen=True, eq=False)
class TFLiteConstant:
    """A constant tensor of a `.tflite` file, densified.

    Attributes:
        index: Tensor index in the main subgraph.
        name: Tensor name given by the converter.
        shape: Tuple of ints.
        dtype: NumPy dtype name of the stored values (e.g. `"int8"`).
        raw: The dense stored values (zeros filled in for a sparse tensor).
        values: `raw` dequantised to float32 for a quantized tensor, else `raw`.
        sparse: Whether the tensor is stored with sparse encoding.
        stored: Number of values stored in the file.
    """

    index: int
    name: str
    shape: tuple
    dtype: str
    raw: np.ndarray
    values: np.ndarray
    sparse: bool
    stored: int


def _schema():
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:  # older wheels: TensorFlow ships the same schema
        from tensorflow.lite.python import schema_py_generated
    return schema_py_generated


_TENSOR_DTYPES = {
    "FLOAT32": np.float32, "FLOAT16": np.float16, "FLOAT64": np.float64,
    "INT8": np.int8, "UINT8": np.uint8, "INT16": np.int16, "UINT16": np.uint16,
    "INT32": np.int32, "UINT32": np.uint32, "INT64": np.int64, "BOOL": np.bool_,
}


def tflite_weights(path):
    """Reads every constant tensor of a `.tflite` file, sparse ones densified.

    The flatbuffer is parsed with the LiteRT schema (`schema_py_generated`),
    not through the interpreter: a sparse-encoded tensor holds only its
    non-zeros plus CSR-style index arrays, which `Interpreter.get_tensor`
    does not expand. `densify()` rebuilds the dense tensor exactly as the
    runtime's DENSIFY op does, with zeros everywhere else.

    Args:
        path: A `.tflite` file.

    Returns:
        A list of `TFLiteConstant`, in tensor order, for the main subgraph's
        tensors that have data (weights, biases, shapes and other constants).
    """
    schema = _schema()
    with open(os.fspath(path), "rb") as f:
        content = f.read()
    model = schema.ModelT.InitFromPackedBuf(content, 0)
    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    constants = []
    for index, tensor in enumerate(model.subgraphs[0].tensors):
        data = _buffer_bytes(model.buffers[tensor.buffer], content) if tensor.buffer else None
        dtype = _TENSOR_DTYPES.get(type_names.get(tensor.type))
        if data is None or len(data) == 0 or dtype is None:
            continue
        shape = tuple(int(d) for d in (tensor.shape if tensor.shape is not None else ()))
        stored = np.frombuffer(data, dtype=dtype)
        if tensor.sparsity is not None:
            raw = densify(stored, shape, tensor.sparsity)
        else:
            raw = stored.reshape(shape).copy()
        constants.append(TFLiteConstant(
            index=index,
            name=tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name),
            shape=shape,
            dtype=np.dtype(dtype).name,
            raw=raw,
            values=_dequantize(raw, tensor.quantization),
            sparse=tensor.sparsity is not None,
            stored=int(stored.size),
        ))
    return constants


def _buffer_bytes(buffer, content):
    # Files over 2 GB keep buffers after the flatbuffer (offset, size).
    if getattr(buffer, "offset", 0) and buffer.offset > 1:
        return content[buffer.offset : buffer.offset + buffer.size]
    if buffer.data is None:
        return None
    return np.asarray(buffer.data, dtype=np.uint8).tobytes()


def _dequantize(raw, quantization):
    if quantization is None or quantization.scale is None or len(quantization.scale) == 0:
        return raw
    scale = np.asarray(quantization.scale, np.float32)
    zero_point = np.asarray(
        quantization.zeroPoint if quantization.zeroPoint is not None else np.zeros_like(scale),
        np.float32,
    )
    if scale.size > 1:
        shape = [1] * raw.ndim
        shape[quantization.quantizedDimension] = -1
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    return ((raw.astype(np.float32) - zero_point) * scale).astype(np.float32)


def densify(values, shape, sparsity):
    """Expands a sparse-encoded TFLite tensor to its dense form.

    Implements the TFLite sparsity format (the runtime's
    `FormatConverter::SparseToDense`): the tensor is traversed in
    `traversal_order` (original dimensions, then block dimensions mapped by
    `block_map`); each level is DENSE (a size) or SPARSE_CSR (segments and
    indices); the leaves, in order, are the stored values.

    Args:
        values: 1-D array of the stored values.
        shape: The dense shape, a tuple of ints.
        sparsity: A `SparsityParametersT` from the LiteRT schema.

    Returns:
        The dense array of `shape`, zeros where nothing is stored.

    Raises:
        ValueError: If the index structure does not match `values` or `shape`.
    """
    dense_format = _schema().DimensionType.DENSE
    rank = len(shape)
    order = [int(d) for d in sparsity.traversalOrder]
    block_map = [int(d) for d in (sparsity.blockMap if sparsity.blockMap is not None else [])]
    coords = np.zeros((1, 0), np.int64)
    prev = np.zeros(1, np.int64)
    level_sizes = []
    for dim in sparsity.dimMetadata:
        if dim.format == dense_format:
            size = int(dim.denseSize)
            new = np.tile(np.arange(size, dtype=np.int64), len(prev))
            coords = np.repeat(coords, size, axis=0)
            prev = np.repeat(prev, size) * size + new
        else:
            size = None
            segments = np.asarray(dim.arraySegments.values, np.int64)
            indices = np.asarray(dim.arrayIndices.values, np.int64)
            starts = segments[prev]
            counts = segments[prev + 1] - starts
            offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            prev = np.repeat(starts, counts) + offsets
            coords = np.repeat(coords, counts, axis=0)
            new = indices[prev]
        coords = np.concatenate([coords, new[:, None]], axis=1)
        level_sizes.append(size)
    if len(coords) != len(values):
        raise ValueError(
            f"Sparse tensor index structure names {len(coords)} values. "
            f"Received: {len(values)} stored values"
        )
    original = np.zeros((len(coords), rank), np.int64)
    for level in range(rank):
        original[:, order[level]] = coords[:, level]
    for level in range(rank, len(order)):
        dim = block_map[order[level] - rank]
        original[:, dim] = original[:, dim] * level_sizes[level] + coords[:, level]
    if len(original) and np.any(original >= np.asarray(shape)):
        raise ValueError(f"Sparse tensor indices exceed its dense shape. Received: shape={shape}")
    dense = np.zeros(shape, dtype=np.asarray(values).dtype)
    dense[tuple(original.T)] = values
    return dense


# ---------------------------------------------------------------------------
# Zero pattern


def _mask_counts(expected, found):
    """(lost, new) zeros of `found` against `expected`, same shape."""
    expected_zero = expected == 0
    found_zero = found == 0
    return int(np.sum(expected_zero & ~found_zero)), int(np.sum(~expected_zero & found_zero))


def _summarise_pattern(rows):
    by_type = {}
    for row in rows:
        entry = by_type.setdefault(row["type"], {
            "kernels": 0, "zeros_expected": 0, "lost_zeros": 0, "new_zeros": 0,
            "missing": 0,
        })
        entry["kernels"] += 1
        entry["zeros_expected"] += row["zeros_expected"]
        entry["lost_zeros"] += row["lost_zeros"] or 0
        entry["new_zeros"] += row["new_zeros"] or 0
        entry["missing"] += row["status"] == "missing"
    for entry in by_type.values():
        entry["preserved"] = entry["lost_zeros"] == 0 and entry["missing"] == 0
    lost = sum(e["lost_zeros"] for e in by_type.values())
    new = sum(e["new_zeros"] for e in by_type.values())
    missing = sum(e["missing"] for e in by_type.values())
    return {
        "preserved": lost == 0 and missing == 0,
        "identical_masks": lost == 0 and new == 0 and missing == 0,
        "mismatches": lost + new,
        "lost_zeros": lost,
        "new_zeros": new,
        "missing_kernels": missing,
        "by_type": by_type,
        "kernels": rows,
    }


def zero_pattern(model, *, saved_model=None, tflite=None):
    """Compares the zero mask of every kernel of `model` with an artefact's.

    What is verified:

    - **SavedModel** (`saved_model`: a directory): each kernel variable is
      found by its Keras path (`"stem_conv/kernel"`), or else the next unused
      variable of the same shape in order; its zero positions are compared
      element by element with the model kernel's, and `values_equal` says
      whether the values are bit-identical.
    - **.tflite** (`tflite`: a path): every constant tensor is read back and
      densified (`tflite_weights`); the model kernel is put into the TFLite
      layout (Conv2D `HWIO -> OHWI`, DepthwiseConv2D `HWCM -> 1HW(C*M)`,
      Dense `(in, out) -> (out, in)`) and compared position by position
      with the tensor of that shape that matches it. Matching: tensors whose
      name holds the layer's scope (`<layer>/`, `<layer>_N/`, `quant_<layer>/`)
      first, then the fewest mask differences, each tensor used once. Only
      zero *positions* are compared, not values: the converter folds
      BatchNormalization into the preceding convolution (scaling each
      output channel, which keeps zeros) and quantization rounds. A kernel
      of only zeros that the converter folded away counts as `folded`.

    Per kernel: `zeros_expected` (zeros in the model), `lost_zeros` (zero in
    the model, non-zero in the artefact), `new_zeros` (non-zero in the model,
    zero in the artefact, e.g. int8 rounding). The artefact *preserves* the
    zeros when every kernel is found and no zero is lost.

    Args:
        model: The stripped Keras 3 model (the reference masks).
        saved_model: A SavedModel directory, or None.
        tflite: A `.tflite` path, or None. Exactly one of the two.

    Returns:
        A dict: `preserved`, `identical_masks`, `mismatches` (lost + new),
        `lost_zeros`, `new_zeros`, `missing_kernels`, `by_type` (the same
        totals per layer type) and `kernels` (one row per kernel).

    Raises:
        ValueError: If not exactly one artefact is given.
    """
    if (saved_model is None) == (tflite is None):
        raise ValueError(
            "Pass exactly one of `saved_model` and `tflite`. "
            f"Received: saved_model={saved_model!r}, tflite={tflite!r}"
        )
    kernels = _kernels(model)
    if saved_model is not None:
        return _summarise_pattern(_saved_model_rows(kernels, saved_weights=saved_model_weights(saved_model)))
    return _summarise_pattern(_tflite_rows(kernels, tflite_weights(tflite)))


def _row(kernel, status, artefact_name, expected, found):
    lost, new = _mask_counts(expected, found) if found is not None else (None, None)
    return {
        "layer": kernel.layer,
        "type": kernel.layer_type,
        "shape": list(kernel.values.shape),
        "artefact_tensor": artefact_name,
        "status": status,
        "zeros_expected": int(np.sum(kernel.values == 0)),
        "lost_zeros": lost if found is not None else (
            0 if status == "folded" else int(np.sum(kernel.values == 0))),
        "new_zeros": new if found is not None else 0,
    }


def _saved_model_rows(kernels, saved_weights):
    used = set()
    rows = []
    for kernel in kernels:
        name = kernel.path
        value = saved_weights.get(name)
        status = "name"
        if value is None or value.shape != kernel.values.shape or name in used:
            name = next(
                (n for n, v in saved_weights.items()
                 if n not in used and v.shape == kernel.values.shape), None)
            value = saved_weights.get(name) if name is not None else None
            status = "order"
        if value is None:
            rows.append(_row(kernel, "missing", None, kernel.values, None))
            continue
        used.add(name)
        row = _row(kernel, status, name, kernel.values, value)
        row["values_equal"] = bool(np.array_equal(kernel.values, value))
        rows.append(row)
    return rows


def _name_hint(layer, tensor_name):
    pattern = rf"(^|[/;])(quant_)?{re.escape(layer)}(_\d+)?/"
    return re.search(pattern, tensor_name) is not None


def _tflite_rows(kernels, constants):
    layouts = [
        (i, _TFLITE_LAYOUTS[k.layer_type](k.values)) for i, k in enumerate(kernels)
        if k.layer_type in _TFLITE_LAYOUTS
    ]
    candidates = [c for c in constants if np.issubdtype(c.values.dtype, np.floating)]
    scored = []
    for i, expected in layouts:
        for j, constant in enumerate(candidates):
            if constant.shape != expected.shape:
                continue
            lost, new = _mask_counts(expected, constant.values)
            hint = _name_hint(kernels[i].layer, constant.name)
            scored.append(((not hint, lost + new), i, j))
    scored.sort(key=lambda s: s[0])
    match, taken = {}, set()
    for _, i, j in scored:
        if i not in match and j not in taken:
            match[i] = j
            taken.add(j)
    rows = []
    for i, expected in layouts:
        kernel = kernels[i]
        if i in match:
            constant = candidates[match[i]]
            rows.append(_row(kernel, "found", constant.name, expected, constant.values))
        else:
            status = "folded" if not np.any(kernel.values) else "missing"
            rows.append(_row(kernel, status, None, expected, None))
    return rows


def _qat_kernel_variables(model, qat_model):
    """`(kernel, variable or None)` for each kernel of the stripped model.

    The QAT model's variable is found by the wrapped layer's name. The
    wrapper owns the variables and swaps the layer's `kernel` attribute for
    its fake-quant tensor, so the variable is looked up among the wrapper's
    weights (`kernel` or `depthwise_kernel`).
    """
    owners = {getattr(layer, "layer", layer).name: layer for layer in qat_model.layers}
    pairs = []
    for kernel in _kernels(model):
        layer = owners.get(kernel.layer)
        variable = next(
            (w for w in (layer.weights if layer is not None else [])
             if w.name.split("/")[-1].split(":")[0] in ("kernel", "depthwise_kernel")
             and tuple(w.shape) == kernel.values.shape),
            None,
        )
        pairs.append((kernel, variable))
    return pairs


def qat_zero_pattern(model, qat_model):
    """Compares the stripped model's kernel zeros with a QAT model's kernels.

    Reads the float kernel variables of the quantization-aware tf_keras model,
    matched by layer name, and compares zero positions as `zero_pattern`
    does. This sees zeros lost in fine-tuning even when int8 rounding hides
    them in the converted file.

    Args:
        model: The stripped Keras 3 model.
        qat_model: Its quantization-aware tf_keras model.

    Returns:
        A dict like `zero_pattern`'s.
    """
    rows = []
    for kernel, variable in _qat_kernel_variables(model, qat_model):
        if variable is None:
            rows.append(_row(kernel, "missing", None, kernel.values, None))
        else:
            rows.append(_row(kernel, "found", variable.name, kernel.values, variable.numpy()))
    return _summarise_pattern(rows)


# ---------------------------------------------------------------------------
# tf_keras rebuild and quantization-aware fine-tuning


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
        model: A Keras 3 functional model of `STANDARD_LAYERS` only.

    Returns:
        A `tf_keras.Model` computing the same function, with the same layer
        names.

    Raises:
        ValueError: If a layer is not a standard layer or its config cannot
            be expressed in tf_keras.
    """
    tf_keras = _import_tf_keras()
    _check_standard_layers(model)
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
        pairs = [(k, v) for k, v in _qat_kernel_variables(model, qat) if v is not None]
        callbacks.append(_zero_keeper(tf_keras, pairs))
    ds = data_lib.make_tf_dataset(x, y, batch_size, shuffle=True, seed=seed)
    qat.fit(ds, epochs=epochs, verbose=0, callbacks=callbacks)
    return qat, (callbacks[0].summary() if keep_zeros else None)


# ---------------------------------------------------------------------------
# Export


def _input_dtype(dtype):
    try:
        name = np.dtype(tf.as_dtype(dtype).as_numpy_dtype).name
    except TypeError:
        name = None
    if name not in ("uint8", "float32"):
        raise ValueError(
            f"`input_dtype` must be 'uint8' or 'float32'. Received: input_dtype={dtype!r}"
        )
    return name


def _image_shape(model):
    shape = model.inputs[0].shape
    return tuple(int(d) for d in shape[1:])


def _check_standard_layers(model):
    unknown = sorted({type(l).__name__ for l in model.layers} - set(STANDARD_LAYERS))
    if unknown:
        raise ValueError(
            "`model` must be a stripped model made of standard layers only "
            f"({', '.join(STANDARD_LAYERS)}). Received: a model with {', '.join(unknown)}"
        )


def _check_arguments(model, dataset, out_dir, config, extra_report, overwrite):
    if not isinstance(model, keras.Model) or not hasattr(model, "inputs") or not model.inputs:
        raise ValueError(
            f"`model` must be a functional Keras 3 model. Received: model={model!r}")
    if not isinstance(dataset, data_lib.Dataset):
        raise ValueError(
            f"`dataset` must be a tfvnas.data.Dataset. Received: dataset={dataset!r}")
    if not isinstance(config, config_lib.ExportConfig):
        raise ValueError(
            f"`config` must be an ExportConfig or None. Received: config={config!r}")
    if not isinstance(out_dir, (str, os.PathLike)):
        raise ValueError(f"`out_dir` must be a path. Received: out_dir={out_dir!r}")
    if not isinstance(overwrite, bool):
        raise ValueError(f"`overwrite` must be a bool. Received: overwrite={overwrite!r}")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            "`model` must have one input and one output. Received: "
            f"{len(model.inputs)} inputs, {len(model.outputs)} outputs")
    _check_standard_layers(model)
    if _image_shape(model) != dataset.image_shape:
        raise ValueError(
            f"`model` input shape must be the dataset's image shape {dataset.image_shape}. "
            f"Received: model input shape={_image_shape(model)}")
    out_shape = tuple(model.outputs[0].shape[1:])
    if out_shape != (dataset.num_classes,):
        raise ValueError(
            f"`model` must output ({dataset.num_classes},) logits per image. "
            f"Received: output shape={out_shape}")
    if extra_report is not None:
        if not isinstance(extra_report, dict):
            raise ValueError(
                f"`extra_report` must be a dict or None. Received: extra_report={extra_report!r}")
        try:
            json.dumps(_jsonable(extra_report), allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"`extra_report` must be JSON-serialisable. Received: {error}") from error
    _check_out_dir(out_dir, overwrite)


def _check_out_dir(out_dir, overwrite):
    out_dir = os.fspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(
            f"`out_dir` must be a directory path. Received: out_dir={out_dir!r}, which is a file")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        raise ValueError(
            "`out_dir` must not exist or be empty; pass overwrite=True (--overwrite) to replace it. "
            f"Received: out_dir={out_dir!r}, which holds {len(os.listdir(out_dir))} entries"
        )


def _representative(dataset, config):
    rng = np.random.default_rng(config.seed)
    count = min(config.representative_samples, len(dataset.x_train))
    return dataset.x_train[np.sort(rng.choice(len(dataset.x_train), count, replace=False))]


def _keras_logits(model, x, batch_size):
    predict = tf.function(lambda images: model(tf.cast(images, tf.float32), training=False))
    return np.concatenate([
        np.asarray(predict(tf.constant(x[i : i + batch_size])))
        for i in range(0, len(x), batch_size)
    ])


def _parity(reference, logits, labels):
    return {
        "max_abs_diff": float(np.max(np.abs(reference - logits))),
        "top1_agreement": float(np.mean(reference.argmax(1) == logits.argmax(1))),
        "accuracy": float(np.mean(logits.argmax(1) == labels)),
    }


def _gzip_size(data):
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def _file_sizes(path):
    """Raw and gzip-9 bytes of a file, or of a directory (sum over its files)."""
    if os.path.isdir(path):
        files = sorted(
            os.path.join(root, f) for root, _, names in os.walk(path) for f in names)
    else:
        files = [path]
    raw = gz = 0
    for name in files:
        with open(name, "rb") as f:
            data = f.read()
        raw += len(data)
        gz += _gzip_size(data)
    return {"bytes": raw, "gzip_bytes": gz}


def _convert_loadable_int8(source, path, representative, log):
    """Writes an int8 file at `path` that loads, preferring sparse with XNNPACK.

    Returns the report entry: the kept `encoding`, why, and each attempt's
    size and load results.
    """
    attempts = {}
    candidates = {}
    for encoding in ("sparse", "dense"):
        candidate = f"{path}.{encoding}"
        with open(candidate, "wb") as f:
            f.write(tflite_convert(source, sparse=encoding == "sparse", int8=True,
                                   representative=representative))
        candidates[encoding] = candidate
        xnnpack_error = _load_error(candidate, "xnnpack")
        attempts[encoding] = {
            "bytes": os.path.getsize(candidate),
            "loads_with_xnnpack": xnnpack_error is None,
            "xnnpack_error": xnnpack_error,
            "loads_without_delegates": _load_error(candidate, "none") is None,
        }
        if xnnpack_error is None:
            break
        log(f"{os.path.basename(path)}: {encoding} encoding does not load with XNNPACK")
    if attempts["sparse"]["loads_with_xnnpack"]:
        kept, reason = "sparse", "the sparse int8 file loads with the default XNNPACK delegate"
    elif attempts["dense"]["loads_with_xnnpack"]:
        kept = "dense"
        reason = ("the sparse int8 file fails to load with the default XNNPACK delegate "
                  f"({attempts['sparse']['xnnpack_error']}); the dense int8 file loads")
    elif attempts["sparse"]["loads_without_delegates"]:
        kept = "sparse"
        reason = ("neither encoding loads with XNNPACK; the sparse file loads with "
                  "built-in kernels only (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)")
    elif attempts["dense"]["loads_without_delegates"]:
        kept = "dense"
        reason = ("neither encoding loads with XNNPACK; the dense file loads with "
                  "built-in kernels only (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)")
    else:
        raise RuntimeError(
            f"The int8 model {os.path.basename(path)} does not load in LiteRT in either "
            f"encoding. Sparse: {attempts['sparse']['xnnpack_error']}; dense: "
            f"{attempts['dense']['xnnpack_error']}")
    os.replace(candidates[kept], path)
    for candidate in candidates.values():
        if os.path.exists(candidate):
            os.remove(candidate)
    return {"encoding": kept, "reason": reason, "attempts": attempts}


def _input_report(model, dataset):
    low, high = dataset.input_range
    first = next((l for l in model.layers if not isinstance(l, keras.layers.InputLayer)), None)
    normalised = isinstance(first, keras.layers.Rescaling)
    entry = {
        "name": INPUT_NAME,
        "shape": [None, *dataset.image_shape],
        "dtype": np.dtype(dataset.x_train.dtype).name,
        "range": [low, high],
        "normalised_inside_model": normalised,
        "contract": (
            f"raw pixels as stored ({np.dtype(dataset.x_train.dtype).name}, {low:g}..{high:g}); "
            + ("the model normalises them itself (first layer "
               f"{first.name!r}: x * scale + offset)" if normalised
               else "the model has no normalisation layer")
        ),
    }
    if normalised:
        entry["normalisation"] = {
            "layer": first.name,
            "scale": _jsonable(first.get_config()["scale"]),
            "offset": _jsonable(first.get_config()["offset"]),
        }
    return entry


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _versions():
    versions = {"tensorflow": tf.__version__, "keras": keras.__version__}
    for module, key in (("tf_keras", "tf_keras"), ("tensorflow_model_optimization", "tfmot"),
                        ("ai_edge_litert", "ai_edge_litert")):
        try:
            from importlib import metadata

            versions[key] = metadata.version(module.replace("_", "-"))
        except Exception:  # noqa: BLE001 - a version string is informative only
            versions[key] = None
    return versions


def export_stripped(model, dataset, out_dir, config=None, *, extra_report=None, overwrite=False,
                    log=None):
    """Exports a stripped model to SavedModel and TFLite, and verifies each file.

    Everything is written into a temporary sibling folder
    `out_dir + ".tmp-<pid>"`, renamed to `out_dir` only once every file and
    check is done: a crash leaves neither `out_dir` nor the temporary
    folder.

    Files (see the module docstring for the input/output contract):
    `saved_model/`, `model_float.tflite` (sparse encoding),
    `model_float_dense.tflite`, `model_int8.tflite` (if `config.int8`),
    `model_qat_int8.tflite` (if `config.qat`), `report.json`, `report.md`,
    `model_card.md`, `export_config.json`.

    Args:
        model: The stripped Keras 3 functional model: standard layers only
            (`STANDARD_LAYERS`), raw float32 pixels in, logits out.
        dataset: The `tfvnas.data.Dataset` it was trained on. Its stored
            dtype becomes the input dtype; the training split calibrates int8
            and fine-tunes QAT; the test split measures parity and accuracy.
        out_dir: The folder to create.
        config: An `ExportConfig` (None: the defaults).
        extra_report: Optional JSON-serialisable dict (e.g. the training
            summary), stored under `"model"` in the report.
        overwrite: Bool; replace a non-empty `out_dir`.
        log: Optional callable taking a progress line (e.g. `print`).

    Returns:
        The report, as written to `report.json`.

    Raises:
        ValueError: If an argument is invalid, or `out_dir` exists and is not
            empty while `overwrite` is False.
        RuntimeError: If an int8 model loads in LiteRT in neither encoding.
    """
    config = config_lib.ExportConfig() if config is None else config
    _check_arguments(model, dataset, out_dir, config, extra_report, overwrite)
    log = log or (lambda line: None)
    out_dir = os.path.abspath(os.fspath(out_dir))
    tmp = f"{out_dir}.tmp-{os.getpid()}"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    try:
        report = _export_into(model, dataset, tmp, config, log)
        report["model"] = _jsonable(extra_report) if extra_report is not None else None
        _write_reports(report, tmp, config)
        _check_out_dir(out_dir, overwrite)
        if os.path.isdir(out_dir):
            shutil.rmtree(out_dir)
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"exported to {out_dir}")
    return report


def _export_into(model, dataset, folder, config, log):
    input_dtype = np.dtype(dataset.x_train.dtype).name

    def path(name):
        return os.path.join(folder, name)

    representative = _representative(dataset, config)

    log("writing the SavedModel")
    write_saved_model(model, path(SAVED_MODEL_DIR), input_dtype=input_dtype)
    log("converting to TFLite (float, sparse and dense)")
    for name, sparse in ((FLOAT_TFLITE, True), (FLOAT_DENSE_TFLITE, False)):
        with open(path(name), "wb") as f:
            f.write(tflite_convert(path(SAVED_MODEL_DIR), sparse=sparse))
    encodings = {}
    if config.int8:
        log("converting to int8 TFLite (post-training quantization)")
        encodings[INT8_TFLITE] = _convert_loadable_int8(
            path(SAVED_MODEL_DIR), path(INT8_TFLITE), representative, log)
    qat_info = None
    if config.qat:
        log("quantization-aware fine-tuning (tf_keras, pruning-preserving)")
        start = time.perf_counter()
        qat_model, moved = quantization_aware_finetune(
            model, dataset.x_train, dataset.y_train, epochs=config.qat_epochs,
            learning_rate=config.qat_lr, batch_size=config.qat_batch_size, seed=config.seed,
            calibration=representative)
        qat_keras_zeros = qat_zero_pattern(model, qat_model)
        qat_source = os.path.join(folder, ".qat_saved_model")
        write_saved_model(qat_model, qat_source, input_dtype=input_dtype)
        encodings[QAT_TFLITE] = _convert_loadable_int8(
            qat_source, path(QAT_TFLITE), representative, log)
        shutil.rmtree(qat_source)
        qat_info = {
            "scheme": "Default8BitPrunePreserveQuantizeScheme",
            "activation_ranges": ("started at the float model's output ranges on the "
                                  f"{len(representative)} representative images"),
            "epochs": config.qat_epochs,
            "learning_rate": config.qat_lr,
            "batch_size": config.qat_batch_size,
            "training_examples": int(len(dataset.x_train)),
            "seconds": round(time.perf_counter() - start, 2),
            "zero_masks_reapplied": True,
            "zeros_moved_by_scheme": moved,
            "keras_zeros_by_type": qat_keras_zeros["by_type"],
        }
    tflite_files = [FLOAT_TFLITE, FLOAT_DENSE_TFLITE] + list(encodings)

    log("verifying")
    x, labels = dataset.x_test, dataset.y_test
    batch = config.eval_batch_size
    reference = _keras_logits(model, x, batch)
    parity = {"split": "test", "examples": int(len(x)),
              "keras": {"accuracy": float(np.mean(reference.argmax(1) == labels))}}
    parity[SAVED_MODEL_DIR] = _parity(reference, _saved_model_logits(path(SAVED_MODEL_DIR), x, batch),
                                      labels)
    tflite = {}
    latency = {}
    for name in tflite_files:
        xnnpack_error = _load_error(path(name), "xnnpack")
        delegate = "xnnpack" if xnnpack_error is None else "none"
        logits = run_tflite(path(name), x, delegate=delegate, batch_size=batch)["logits"]
        parity[name] = {**_parity(reference, logits, labels), "delegate": delegate}
        latency[name] = tflite_latency(path(name), x[0], runs=config.latency_runs, delegate=delegate)
        tflite[name] = {
            **tflite_io(path(name)),
            "encoding": encodings.get(name, {}).get(
                "encoding", "sparse" if name == FLOAT_TFLITE else "dense"),
            "loads_with_xnnpack": xnnpack_error is None,
            "xnnpack_error": xnnpack_error,
        }
    for name, entry in encodings.items():
        drop = parity["keras"]["accuracy"] - parity[name]["accuracy"]
        entry.update({
            "accuracy_drop": float(drop),
            "tolerance": config.int8_tolerance,
            "within_tolerance": bool(drop <= config.int8_tolerance + 1e-12),
        })

    zeros = {SAVED_MODEL_DIR: zero_pattern(model, saved_model=path(SAVED_MODEL_DIR))}
    for name in tflite_files:
        zeros[name] = zero_pattern(model, tflite=path(name))

    files = {name: _file_sizes(path(name)) for name in [SAVED_MODEL_DIR] + tflite_files}
    sparse, dense = files[FLOAT_TFLITE], files[FLOAT_DENSE_TFLITE]
    report = {
        "format": "tfvnas-export/1",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "dataset": {"name": dataset.name, "num_classes": dataset.num_classes,
                    "test_examples": int(len(dataset.x_test))},
        "input": _input_report(model, dataset),
        "outputs": {
            "logits": f"float32 ({dataset.num_classes},) per image",
            "probabilities": "softmax of the logits",
        },
        "parameters": count_parameters(model),
        "files": files,
        "float_sparse_to_dense_ratio": {
            "bytes": sparse["bytes"] / dense["bytes"],
            "gzip_bytes": sparse["gzip_bytes"] / dense["gzip_bytes"],
        },
        "tflite": tflite,
        "parity": parity,
        "latency": latency,
        "zero_pattern": zeros,
        "int8": encodings.get(INT8_TFLITE),
        "qat": None if qat_info is None else {**qat_info, **encodings[QAT_TFLITE],
                                              "zeros_by_type": zeros[QAT_TFLITE]["by_type"]},
        "config": config.to_dict(),
        "versions": _versions(),
    }
    return _jsonable(report)


# ---------------------------------------------------------------------------
# From a training folder (`tfvnas export`)

TRAIN_MODEL = "model.keras"
TRAIN_HISTORY = "train_history.json"


def load_trained(model_dir):
    """Loads what `tfvnas train` wrote: the trained network and its summary.

    Args:
        model_dir: The output folder of `tfvnas train` (`model.keras`,
            `train_history.json`).

    Returns:
        A tuple `(network, history)`: the `tfvnas.network.Network` and the
        parsed `train_history.json`.

    Raises:
        ValueError: If the folder does not hold both files or they cannot be
            read.
    """
    # Registers the Network's layers with Keras before loading.
    from tfvnas import network as network_lib

    model_dir = os.fspath(model_dir)
    model_path = os.path.join(model_dir, TRAIN_MODEL)
    history_path = os.path.join(model_dir, TRAIN_HISTORY)
    if not (os.path.isfile(model_path) and os.path.isfile(history_path)):
        held = sorted(os.listdir(model_dir)) if os.path.isdir(model_dir) else "not a folder"
        raise ValueError(
            f"`model` must be the output folder of `tfvnas train` (holding {TRAIN_MODEL} and "
            f"{TRAIN_HISTORY}). Received: {model_dir!r} ({held})"
        )
    try:
        network = keras.models.load_model(model_path, compile=False)
    except Exception as error:  # noqa: BLE001 - zip, JSON and Keras errors alike
        raise ValueError(f"Cannot load the trained model in {model_dir!r}: {error}") from error
    if not isinstance(network, network_lib.Network):
        raise ValueError(
            f"`model` must hold a tfvnas Network in {TRAIN_MODEL}. "
            f"Received: {type(network).__name__} in {model_dir!r}"
        )
    try:
        with open(history_path, encoding="utf-8") as f:
            history = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"Cannot read {history_path!r}: {error}") from error
    if not isinstance(history, dict):
        raise ValueError(
            f"{history_path!r} must hold a JSON object. Received: {type(history).__name__}")
    return network, history


def _export_config(config, int8, qat):
    if config is None:
        config = config_lib.ExportConfig()
    elif isinstance(config, dict):
        config = config_lib.ExportConfig.from_dict(config)
    elif isinstance(config, (str, os.PathLike)):
        config = config_lib.ExportConfig.load(config)
    elif not isinstance(config, config_lib.ExportConfig):
        raise ValueError(
            "`config` must be an ExportConfig, a dict of fields, a JSON/YAML path or None. "
            f"Received: config={config!r}")
    # The flags only switch options on: False (a flag left off) keeps the config's value.
    return config.replace(int8=True if int8 else None, qat=True if qat else None)


def export(model_dir, out_dir, *, dataset=None, config=None, int8=None, qat=None,
           overwrite=False, verbose=1):
    """Strips the network trained in `model_dir` and exports it (`tfvnas export`).

    Loads `model.keras` and `train_history.json` (`load_trained`), strips the
    network into standard layers (`tfvnas.strip.strip`) and runs
    `export_stripped` with the training summary (all of `train_history.json`
    but the per-epoch records) under `"model"` in the report.

    Args:
        model_dir: The output folder of `tfvnas train`.
        out_dir: The folder to create (see `export_stripped`).
        dataset: A `tfvnas.data.Dataset`, a name or a path for
            `tfvnas.data.load`; None: the dataset named in the training
            summary.
        config: An `ExportConfig`, a dict of its fields, a JSON/YAML file, or
            None (the defaults).
        int8, qat: True switches the option on over `config`.
        overwrite: Bool; replace a non-empty `out_dir`.
        verbose: 0 silent, 1 one line per step.

    Returns:
        The report (`report.json`).

    Raises:
        ValueError: If the folder is not a training output, the data does not
            fit the model, or an argument is invalid.
    """
    from tfvnas import strip as strip_lib

    config = _export_config(config, int8, qat)
    _check_out_dir(out_dir, overwrite)
    network, history = load_trained(model_dir)
    info = history.get("dataset") or {}
    if dataset is None:
        if not info.get("name"):
            raise ValueError(
                "`dataset` must be given: the training summary names none. Received: dataset=None")
        dataset = info["name"]
    if not isinstance(dataset, data_lib.Dataset):
        dataset = data_lib.load(dataset)
    shape = tuple(info.get("image_shape") or network.input_shape_built or dataset.image_shape)
    classes = int(info.get("num_classes") or network.num_classes)
    if tuple(dataset.image_shape) != shape or dataset.num_classes != classes:
        raise ValueError(
            f"The model takes images of shape {shape} with {classes} classes. Received: dataset "
            f"{dataset.name!r} with images of shape {dataset.image_shape} and "
            f"{dataset.num_classes} classes."
        )
    stripped = strip_lib.strip(network, input_shape=shape)
    summary = {key: value for key, value in history.items() if key != "epochs"}
    summary["epochs_trained"] = len(history.get("epochs") or [])
    # Relative to the export folder, so a moved or shipped pair of folders
    # still points at its training run (and no machine path is published).
    train_dir, export_dir = os.path.abspath(os.fspath(model_dir)), os.path.abspath(os.fspath(out_dir))
    try:
        summary["train_dir"] = os.path.relpath(train_dir, export_dir)
    except ValueError:  # Windows, different drives: no relative path exists
        summary["train_dir"] = train_dir
    log = (lambda line: print(f"export: {line}", flush=True)) if verbose else None
    return export_stripped(stripped, dataset, out_dir, config, extra_report=summary,
                           overwrite=overwrite, log=log)


def read_report(out_dir):
    """Reads the `report.json` of an export folder.

    Raises:
        ValueError: If the folder holds no readable report.
    """
    path = os.path.join(os.fspath(out_dir), REPORT_JSON)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"Cannot read the export report {path!r}: {error}") from error


# ---------------------------------------------------------------------------
# Human-readable reports


def _table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _kb(n):
    return f"{n / 1024:.1f} KB"


def _yes(flag):
    return "yes" if flag else "no"


def _report_markdown(report):
    inp = report["input"]
    params = report["parameters"]
    parity = report["parity"]
    artefacts = [SAVED_MODEL_DIR] + list(report["tflite"])
    sections = [
        f"# Export report: {report['dataset']['name']}",
        "",
        f"Created {report['created']}.",
        "",
        "## Input",
        "",
        _table(["name", "shape", "dtype", "range", "normalised inside the model"], [[
            inp["name"], str(tuple(inp["shape"])).replace("None", "N"), inp["dtype"],
            f"{inp['range'][0]:g}..{inp['range'][1]:g}", _yes(inp["normalised_inside_model"])]]),
        "",
        f"Contract: {inp['contract']}.",
        "",
        "## Parameters",
        "",
        f"All weights: {params['dense']:,} dense, {params['nonzero']:,} non-zero. "
        f"Kernels: {params['kernel_dense']:,} dense, {params['kernel_nonzero']:,} non-zero "
        f"({params['kernel_sparsity']:.1%} sparse).",
        "",
        _table(["layer", "type", "shape", "dense", "non-zero", "sparsity"], [
            [r["name"], r["type"], "x".join(map(str, r["shape"])), r["dense"], r["nonzero"],
             f"{r['sparsity']:.1%}"] for r in params["layers"]]),
        "",
        "## Files",
        "",
        _table(["artefact", "size", "gzip -9"], [
            [name, _kb(s["bytes"]), _kb(s["gzip_bytes"])] for name, s in report["files"].items()]),
        "",
        "Float sparse / dense size: "
        f"{report['float_sparse_to_dense_ratio']['bytes']:.3f} raw, "
        f"{report['float_sparse_to_dense_ratio']['gzip_bytes']:.3f} gzipped.",
        "",
        f"## Parity on the {parity['split']} split ({parity['examples']} images)",
        "",
        f"Keras accuracy: {parity['keras']['accuracy']:.4f}.",
        "",
        _table(["artefact", "max abs logit diff", "top-1 agreement", "accuracy", "delegate"], [
            [name, f"{parity[name]['max_abs_diff']:.3g}", f"{parity[name]['top1_agreement']:.4f}",
             f"{parity[name]['accuracy']:.4f}", parity[name].get("delegate", "-")]
            for name in artefacts]),
        "",
    ]
    for key, title in (("int8", "Post-training int8"), ("qat", "Quantization-aware int8")):
        entry = report.get(key)
        if entry:
            sections += [
                f"{title}: accuracy drop {entry['accuracy_drop']:+.4f} against Keras "
                f"(tolerance {entry['tolerance']}: "
                f"{'within' if entry['within_tolerance'] else 'OUTSIDE'}); kept the "
                f"{entry['encoding']} encoding because {entry['reason']}.",
                "",
            ]
    sections += [
        "## LiteRT",
        "",
        _table(["file", "encoding", "input", "loads with XNNPACK", "median ms", "p90 ms",
                "threads", "delegate"], [
            [name, t["encoding"], t["input"]["dtype"], _yes(t["loads_with_xnnpack"]),
             f"{report['latency'][name]['median_ms']:.3f}",
             f"{report['latency'][name]['p90_ms']:.3f}",
             report["latency"][name]["num_threads"], report["latency"][name]["delegate"]]
            for name, t in report["tflite"].items()]),
        "",
        "## Zero pattern",
        "",
        "Each kernel's zero positions read back from the artefact against the stripped "
        "model's (TFLite: up to the layout transpose; BatchNormalization folding keeps zeros). "
        "Lost: zero in the model, non-zero in the file. New: the reverse (int8 rounding).",
        "",
        _table(["artefact", "zeros preserved", "lost zeros", "new zeros", "missing kernels"], [
            [name, _yes(z["preserved"]), z["lost_zeros"], z["new_zeros"], z["missing_kernels"]]
            for name, z in report["zero_pattern"].items()]),
        "",
        _table(["artefact", "layer type", "kernels", "zeros", "lost", "new", "preserved"], [
            [name, t, e["kernels"], e["zeros_expected"], e["lost_zeros"], e["new_zeros"],
             _yes(e["preserved"])]
            for name, z in report["zero_pattern"].items() for t, e in z["by_type"].items()]),
        "",
    ]
    if report.get("qat"):
        moved = report["qat"]["zeros_moved_by_scheme"]
        keras_zeros = report["qat"]["keras_zeros_by_type"]
        sections += [
            "Quantization-aware fine-tuning: pruned kernel entries that the optimizer made "
            "non-zero under tfmot's prune-preserve scheme (re-zeroed after every step), and "
            "the float kernels of the tf_keras model before conversion:",
            "",
            _table(["layer type", "kernels", "zeros", "moved by the scheme",
                    "kept by the scheme", "lost after re-zeroing"], [
                [t, e["kernels"], e["zeros"], e["moved"], _yes(e["kept_by_scheme"]),
                 keras_zeros[t]["lost_zeros"]] for t, e in moved.items()]),
            "",
        ]
    return "\n".join(sections)


def _model_card(report):
    inp = report["input"]
    params = report["parameters"]
    parity = report["parity"]
    files = report["files"]
    shape = str(tuple(inp["shape"])).replace("None", "N")
    low, high = inp["range"]
    limits = [
        "Accuracy is measured on the dataset's test split only "
        f"({parity['examples']} images).",
        "Sparse weight encoding shrinks the files; LiteRT densifies the weights when it "
        "loads them, so it does not make inference faster.",
        "The int8 files take raw pixels too: their first ops (CAST, QUANTIZE) run in float, "
        "which an integer-only accelerator cannot run.",
    ]
    for key in ("int8", "qat"):
        entry = report.get(key)
        if entry and entry["encoding"] == "dense":
            limits.append(
                f"{INT8_TFLITE if key == 'int8' else QAT_TFLITE} uses dense weight encoding: "
                "a sparse int8 model does not load with the default XNNPACK delegate.")
    if report.get("qat"):
        lost = sorted({t for key in ("zeros_by_type", "keras_zeros_by_type")
                       for t, e in report["qat"][key].items() if not e["preserved"]})
        if lost:
            limits.append(
                f"Quantization-aware fine-tuning did not keep the zeros of {', '.join(lost)} "
                "kernels.")
        moved = sorted(t for t, e in report["qat"]["zeros_moved_by_scheme"].items()
                       if not e["kept_by_scheme"])
        if moved:
            limits.append(
                "TF Model Optimization's prune-preserve scheme alone would have lost zeros of "
                f"{', '.join(moved)} kernels (it masks neither DepthwiseConv2D kernels nor "
                "kernels feeding a Concatenate or followed directly by ReLU); the export "
                "re-zeroes them after every fine-tuning step.")
    lines = [
        f"# Model card: {report['dataset']['name']} classifier",
        "",
        "A convolutional network found by variational-inference-based differentiable "
        "architecture search (VINNAS), trained with sparse variational weights and "
        "stripped to standard Keras layers.",
        "",
        "## Input",
        "",
        f"- `{inp['name']}`: shape `{shape}`, dtype `{inp['dtype']}`, values "
        f"{low:g}..{high:g}: raw pixels as stored.",
        f"- Normalised inside the model: {_yes(inp['normalised_inside_model'])}. "
        "Do not normalise before calling it.",
        "",
        "## Outputs",
        "",
        f"- `logits`: {report['outputs']['logits']}.",
        "- `probabilities`: softmax of the logits.",
        "- int8 files return int8 tensors with a scale and zero point: "
        "`real = scale * (q - zero_point)`.",
        "",
        "## Accuracy and size",
        "",
        _table(["artefact", "test accuracy", "size", "gzip -9"], [
            [name, f"{parity[name]['accuracy']:.4f}", _kb(files[name]["bytes"]),
             _kb(files[name]["gzip_bytes"])] for name in files]),
        "",
        f"Keras model accuracy: {parity['keras']['accuracy']:.4f}. Parameters: "
        f"{params['kernel_nonzero']:,} non-zero of {params['kernel_dense']:,} kernel weights "
        f"({params['kernel_sparsity']:.1%} sparse); {params['nonzero']:,} non-zero of "
        f"{params['dense']:,} weights in all.",
        "",
        "## Run it with LiteRT (Python)",
        "",
        "```python",
        "import numpy as np",
        "from ai_edge_litert.interpreter import Interpreter",
        "",
        f'runner = Interpreter(model_path="{FLOAT_TFLITE}").get_signature_runner("{SIGNATURE_KEY}")',
        f"images = np.zeros((1, {', '.join(map(str, inp['shape'][1:]))}), np.{inp['dtype']})"
        "  # raw pixels",
        f"out = runner({INPUT_NAME}=images)",
        'print(out["probabilities"].argmax(-1))',
        "```",
        "",
        "SavedModel: `tf.saved_model.load(\"saved_model\").signatures[\"serving_default\"]"
        f"({INPUT_NAME}=images)`, or `keras.layers.TFSMLayer(\"saved_model\", "
        "call_endpoint=\"serving_default\")`.",
        "",
        "## Known limits",
        "",
    ]
    lines += [f"- {item}" for item in limits]
    return "\n".join(lines) + "\n"


def _write_reports(report, folder, config):
    config_lib._atomic_write(
        os.path.join(folder, REPORT_JSON),
        json.dumps(report, indent=2, sort_keys=False, allow_nan=False) + "\n")
    config_lib._atomic_write(os.path.join(folder, REPORT_MD), _report_markdown(report) + "\n")
    config_lib._atomic_write(os.path.join(folder, MODEL_CARD), _model_card(report))
    config.save(os.path.join(folder, CONFIG_JSON))
