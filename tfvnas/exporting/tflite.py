"""TFLite: conversion, running, latency, and reading the weights back with LiteRT.

Converted from the SavedModel the export writes, so every artefact shares one
serving function. `tflite_weights` reads every constant tensor back through
LiteRT's own interpreter: a sparse-encoded tensor is expanded by the
runtime's own DENSIFY kernel, whose output the interpreter keeps
(`experimental_preserve_all_tensors`), so what is checked is what a phone
computes with. A sparse tensor that an op reads without DENSIFY (the int8
FULLY_CONNECTED kernel runs on block-sparse weights) is expanded here from
the sparsity parameters LiteRT reports (`sparse_to_dense`): LiteRT exposes no
densifier of its own to Python.
"""

import dataclasses
import os
import tempfile
import time
import warnings

import numpy as np
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from tfvnas import checks
from tfvnas.exporting.names import INPUT_NAME, SAVED_MODEL_DIR, SIGNATURE_KEY
from tfvnas.exporting.saved_model import (
    input_dtype_name,
    load_saved_model,
    write_saved_model,
)

# Latency is measured single-threaded: what one phone core does, and stable
# on shared machines.
LATENCY_THREADS = 1
LATENCY_WARMUP = 5
DELEGATES = ("xnnpack", "none")


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
    dtype = input_dtype_name(input_dtype)
    with tempfile.TemporaryDirectory(prefix="tfvnas-tflite-") as tmp:
        from_path = isinstance(model, (str, os.PathLike))
        if from_path:
            source = os.fspath(model)
            signature = load_saved_model(source).signatures[SIGNATURE_KEY]
        else:
            source = os.path.join(tmp, SAVED_MODEL_DIR)
            write_saved_model(model, source, input_dtype=dtype)
        converter = tf.lite.TFLiteConverter.from_saved_model(source, signature_keys=[SIGNATURE_KEY])
        optimizations = []
        if int8:
            optimizations.append(tf.lite.Optimize.DEFAULT)
            images = np.asarray(representative)
            if from_path:
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


def load_error(path, delegate):
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
    return load_error(path, "xnnpack") is None


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


def tflite_latencies(paths, image, *, runs, rounds=1, threads=(LATENCY_THREADS,), delegates=None,
                     warmup=LATENCY_WARMUP):
    """Times single-image invocations of several `.tflite` files, interleaved.

    On a shared machine the speed drifts over seconds; timing each file in
    one go would put the drift between files. Every file gets an
    interpreter per thread count (set up and warmed up once); then, for
    `rounds` rounds, each file runs `runs` timed invocations in turn. The
    statistics pool the runs of all rounds.

    Args:
        paths: `.tflite` files with the `serving_default` signature.
        image: One raw image `(H, W, C)` or a batch of one.
        runs: Positive int; timed invocations per file, thread count and round.
        rounds: Positive int.
        threads: Interpreter thread counts.
        delegates: `{path: "xnnpack" or "none"}` (default: XNNPACK for all).
        warmup: Non-negative int; untimed invocations first.

    Returns:
        `{path: {threads: {"median_ms", "p90_ms", "mean_ms", "runs",
        "num_threads", "delegate"}}}`, with `runs` the pooled count.
    """
    runs = checks.check_positive_int("runs", runs)
    rounds = checks.check_positive_int("rounds", rounds)
    delegates = delegates or {}
    interpreters = {}
    for path in paths:
        for count in threads:
            delegate = delegates.get(path, "xnnpack")
            interpreter = _interpreter(path, delegate, count)
            detail = interpreter.get_input_details()[0]
            x = _to_input(np.asarray(image).reshape((1,) + tuple(np.shape(image)[-3:])), detail)
            interpreter.resize_tensor_input(detail["index"], list(x.shape))
            interpreter.allocate_tensors()
            interpreter.set_tensor(detail["index"], x)
            for _ in range(warmup):
                interpreter.invoke()
            interpreters[path, count] = interpreter
    times = {key: [] for key in interpreters}
    for _ in range(rounds):
        for key, interpreter in interpreters.items():
            for _ in range(runs):
                start = time.perf_counter()
                interpreter.invoke()
                times[key].append((time.perf_counter() - start) * 1e3)
    result = {path: {} for path in paths}
    for (path, count), values in times.items():
        result[path][count] = {
            "median_ms": float(np.median(values)),
            "p90_ms": float(np.percentile(values, 90)),
            "mean_ms": float(np.mean(values)),
            "runs": len(values),
            "num_threads": count,
            "delegate": delegates.get(path, "xnnpack"),
        }
    return result


# ---------------------------------------------------------------------------
# Reading constant tensors back


@dataclasses.dataclass(frozen=True, eq=False)
class TFLiteConstant:
    """A constant tensor of a `.tflite` file, densified.

    Attributes:
        index: Tensor index in the main subgraph (for a sparse tensor, the
            index of its stored values).
        name: Tensor name given by the converter.
        shape: Tuple of ints (the dense shape).
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


def tflite_weights(path):
    """Reads every constant tensor of a `.tflite` file, sparse ones densified by LiteRT.

    The file is loaded with built-in kernels only and every tensor kept
    (`experimental_preserve_all_tensors`); one invocation on a zero image
    runs each DENSIFY op, whose output is the dense form of its sparse
    input, zeros included.

    Args:
        path: A `.tflite` file.

    Returns:
        A list of `TFLiteConstant`, in tensor order: the main subgraph's
        tensors that no op computes and that hold data (weights, biases,
        shapes and other constants).
    """
    interpreter = Interpreter(
        model_path=os.fspath(path),
        experimental_op_resolver_type=_resolver("none"),
        experimental_preserve_all_tensors=True,
    )
    interpreter.allocate_tensors()
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    stored = {}
    for index, detail in details.items():
        try:
            stored[index] = np.array(interpreter.get_tensor(index))
        except ValueError:  # a tensor without data (an intermediate before invoke)
            continue
    ops = interpreter._get_ops_details()  # noqa: SLF001 - LiteRT's only op-graph view
    computed = {int(t) for op in ops for t in op["outputs"]}
    densified = {int(op["inputs"][0]): int(op["outputs"][0]) for op in ops if op["op_name"] == "DENSIFY"}
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    interpreter.invoke()
    inputs = {d["index"] for d in interpreter.get_input_details()}
    constants = []
    for index in sorted(stored):
        if index in computed or index in inputs or stored[index].size == 0:
            continue
        detail = details[index]
        sparsity = detail.get("sparsity_parameters") or {}
        sparse = index in densified or bool(sparsity.get("dim_metadata"))
        if index in densified:
            raw = np.array(interpreter.get_tensor(densified[index]))
        elif sparse:
            raw = sparse_to_dense(stored[index], sparsity, tuple(int(d) for d in detail["shape"]))
        else:
            raw = stored[index]
        constants.append(TFLiteConstant(
            index=index,
            name=detail["name"],
            shape=tuple(int(d) for d in raw.shape),
            dtype=np.dtype(raw.dtype).name,
            raw=raw,
            values=_dequantize(raw, detail["quantization_parameters"]),
            sparse=sparse,
            stored=int(stored[index].size),
        ))
    return constants


def sparse_to_dense(values, sparsity, shape):
    """Expands a TFLite sparse tensor (TACO format: dense and CSR dimensions, blocks).

    Follows the `SparsityParameters` of the TFLite schema: `dim_metadata`
    gives, in `traversal_order`, each dimension of the expanded tensor
    (the original dimensions, then one per entry of `block_map`) as DENSE
    (`dense_size`) or SPARSE_CSR (`array_segments`, `array_indices`); the
    stored `values` come in that traversal order, zeros inside a stored
    block included. Positions past the original shape (block padding) are
    dropped.

    Args:
        values: the stored values, 1-D.
        sparsity: the tensor's `sparsity_parameters` as LiteRT's
            `get_tensor_details()` reports them.
        shape: the dense shape.

    Returns:
        The dense array.
    """
    order = [int(d) for d in sparsity["traversal_order"]]
    blocks = [int(d) for d in sparsity.get("block_map", [])]
    meta = sparsity["dim_metadata"]
    rank = len(shape)
    block_size = {d: int(meta[order.index(rank + k)]["dense_size"]) for k, d in enumerate(blocks)}
    values = np.asarray(values).reshape(-1)
    dense = np.zeros(shape, values.dtype)
    index = [0] * len(order)
    taken = 0

    def visit(level, previous):
        nonlocal taken
        if level == len(order):
            position = []
            for d in range(rank):
                i = index[d]
                if d in block_size:
                    i = i * block_size[d] + index[rank + blocks.index(d)]
                position.append(i)
            if all(p < n for p, n in zip(position, shape)):
                dense[tuple(position)] = values[taken]
            taken += 1
            return
        dim, entry = order[level], meta[level]
        if entry["format"] == 0:  # DENSE
            size = int(entry["dense_size"])
            for i in range(size):
                index[dim] = i
                visit(level + 1, previous * size + i)
        else:  # SPARSE_CSR
            segments, indices = entry["array_segments"], entry["array_indices"]
            for j in range(int(segments[previous]), int(segments[previous + 1])):
                index[dim] = int(indices[j])
                visit(level + 1, j)

    visit(0, 0)
    return dense


def _dequantize(raw, quantization):
    scale = np.asarray(quantization["scales"], np.float32)
    if scale.size == 0 or not np.issubdtype(raw.dtype, np.integer):
        return raw
    zero_point = np.asarray(quantization["zero_points"], np.float32)
    if scale.size > 1:
        shape = [1] * raw.ndim
        shape[quantization["quantized_dimension"]] = -1
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    return ((raw.astype(np.float32) - zero_point) * scale).astype(np.float32)


# ---------------------------------------------------------------------------
# An int8 file that loads


def convert_loadable_int8(source, path, representative, log):
    """Writes an int8 file at `path` that loads and computes what it should, preferring sparse.

    Both encodings are converted. The sparse file is kept only if it loads
    with XNNPACK and gives the dense file's outputs on the representative
    images (one output quantization step at most; a correct sparse file gives
    the same ones): the converter's block-sparse int8 FULLY_CONNECTED
    encoding of a 10x15 kernel kept one block of 16 and lost the rest of the
    weights (accuracy 0.145 against 0.52), which a load check alone misses.

    Returns the report entry: the kept `encoding`, why, and each attempt's
    size, load results and, for the sparse one, the largest output
    difference to the dense file.
    """
    attempts = {}
    candidates = {}
    for encoding in ("sparse", "dense"):
        candidate = f"{path}.{encoding}"
        with open(candidate, "wb") as f:
            f.write(tflite_convert(source, sparse=encoding == "sparse", int8=True,
                                   representative=representative))
        candidates[encoding] = candidate
        xnnpack_error = load_error(candidate, "xnnpack")
        attempts[encoding] = {
            "bytes": os.path.getsize(candidate),
            "loads_with_xnnpack": xnnpack_error is None,
            "xnnpack_error": xnnpack_error,
            "loads_without_delegates": load_error(candidate, "none") is None,
        }
    sparse, dense = attempts["sparse"], attempts["dense"]
    sparse["max_abs_diff_to_dense"] = None
    sparse["matches_dense"] = False
    if sparse["loads_without_delegates"] and dense["loads_without_delegates"]:
        outputs = {e: run_tflite(candidates[e], representative, delegate="none") for e in candidates}
        step = _output_step(candidates["dense"])
        diff = float(np.max(np.abs(outputs["sparse"]["logits"] - outputs["dense"]["logits"])))
        sparse["max_abs_diff_to_dense"] = diff
        sparse["matches_dense"] = diff <= step * (1 + 1e-6)
    if sparse["loads_with_xnnpack"] and sparse["matches_dense"]:
        kept, reason = "sparse", "the sparse int8 file loads with the default XNNPACK delegate"
    elif dense["loads_with_xnnpack"]:
        kept = "dense"
        if not sparse["loads_with_xnnpack"]:
            reason = ("the sparse int8 file fails to load with the default XNNPACK delegate "
                      f"({sparse['xnnpack_error']}); the dense int8 file loads")
        else:
            reason = ("the sparse int8 file computes other logits than the dense one (largest "
                      f"difference {sparse['max_abs_diff_to_dense']:.4g} on the representative "
                      "images): the converter's sparse encoding lost weights; the dense file loads")
    elif sparse["loads_without_delegates"] and sparse["matches_dense"]:
        kept = "sparse"
        reason = ("neither encoding loads with XNNPACK; the sparse file loads with "
                  "built-in kernels only (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)")
    elif dense["loads_without_delegates"]:
        kept = "dense"
        reason = ("neither encoding loads with XNNPACK; the dense file loads with "
                  "built-in kernels only (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)")
    else:
        raise checks.ActionableError(
            f"The int8 model {os.path.basename(path)} does not load in LiteRT in either "
            f"encoding. Sparse: {sparse['xnnpack_error']}; dense: {dense['xnnpack_error']}")
    log(f"{os.path.basename(path)}: kept the {kept} encoding")
    os.replace(candidates[kept], path)
    for candidate in candidates.values():
        if os.path.exists(candidate):
            os.remove(candidate)
    return {"encoding": kept, "reason": reason, "attempts": attempts}


def _output_step(path):
    """The quantization step of a file's `logits` output (0 for a float output)."""
    runner = _interpreter(path, "none").get_signature_runner(SIGNATURE_KEY)
    scale, _ = runner.get_output_details()["logits"]["quantization"]
    return float(scale)
