"""The public export functions: `export` (from a training folder) and `export_stripped`.

`export_stripped()` takes the *stripped* model (a Keras 3 functional model of
standard layers only, made by `tfvnas.compress.strip`: its first layer `normalise`
rescales raw pixels, its output is logits) and writes one folder:

- `saved_model/`: a SavedModel with a `serving_default` signature.
- `model_float.tflite` (sparse weight encoding) and `model_float_dense.tflite`.
- `model_int8.tflite`: full-integer post-training quantization (optional).
- `model_qat_int8.tflite`: int8 after pruning-preserving quantization-aware
  fine-tuning with TF Model Optimization (optional).
- `report.json`, `report.md`, `model_card.md`, `export_config.json`.

With `ExportConfig.shrink` (the default) the model is first shrunk
(`tfvnas.compress.shrinking.shrink`: dead channels removed, the constants they leave
folded), and every file holds the shrunk model. With `compare_unshrunk` the
unshrunk model is converted too (float sparse and dense, int8), measured and
deleted: the report's `comparison` table gives MACs, parameters, sizes,
latencies and accuracy of both, and `shrink` what was removed.

`export()` is the `tfvnas export` entry point: it loads a `tfvnas train`
folder (`load_trained`), strips the network (`tfvnas.compress.strip.strip`) and calls
`export_stripped`; `read_report()` reads a finished export's report.
"""

import datetime
import gzip
import json
import os
import shutil
import time

import keras
import numpy as np

from tfvnas import config as config_lib
from tfvnas import data as data_lib
from tfvnas import files, streams
from tfvnas.compress import counting, shrinking
from tfvnas.compress import macs as macs_lib
from tfvnas.compress import strip as strip_lib
from tfvnas.exporting import qat, tflite, verify
from tfvnas.exporting import report as report_lib
from tfvnas.exporting.names import (
    FLOAT_DENSE_TFLITE,
    FLOAT_TFLITE,
    INT8_TFLITE,
    QAT_TFLITE,
    REPORT_JSON,
    SAVED_MODEL_DIR,
    TRAIN_HISTORY,
    TRAIN_MODEL,
)
from tfvnas.exporting.saved_model import (
    image_shape,
    saved_model_logits,
    write_saved_model,
)
from tfvnas.models import network as network_lib

# A streamed dataset is read into arrays for the export, at most this many
# examples of each split: int8 calibration, the QAT fine-tuning and the parity
# checks use those (the report gives their numbers).
STREAMED_EXAMPLES = 10_000


def _in_memory(dataset):
    """`dataset` as arrays: a `StreamedDataset`'s first `STREAMED_EXAMPLES` examples of each split."""
    if isinstance(dataset, streams.StreamedDataset):
        return dataset.in_memory(STREAMED_EXAMPLES)
    return dataset


def _representative(dataset, config):
    rng = np.random.default_rng(config.seed)
    count = min(config.representative_samples, len(dataset.x_train))
    return dataset.x_train[np.sort(rng.choice(len(dataset.x_train), count, replace=False))]


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
    strip_lib.check_standard_layers(model)
    if image_shape(model) != dataset.image_shape:
        raise ValueError(
            f"`model` input shape must be the dataset's image shape {dataset.image_shape}. "
            f"Received: model input shape={image_shape(model)}")
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
            json.dumps(files.jsonable(extra_report), allow_nan=False)
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


def _gzip_size(data):
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def _file_sizes(path):
    """Raw and gzip-9 bytes of a file, or of a directory (sum over its files)."""
    if os.path.isdir(path):
        paths = sorted(
            os.path.join(root, f) for root, _, names in os.walk(path) for f in names)
    else:
        paths = [path]
    raw = gz = 0
    for name in paths:
        with open(name, "rb") as f:
            data = f.read()
        raw += len(data)
        gz += _gzip_size(data)
    return {"bytes": raw, "gzip_bytes": gz}


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
    `model_card.md`, `export_config.json`. With `config.shrink` they hold
    `tfvnas.compress.shrinking.shrink(model)`, and the report compares it with
    `model` (`shrink`, `comparison`).

    Args:
        model: The stripped Keras 3 functional model: standard layers only
            (`STANDARD_LAYERS`), raw float32 pixels in, logits out.
        dataset: The `tfvnas.data.Dataset` it was trained on (or a
            `tfvnas.streams.StreamedDataset`, of which the first
            `STREAMED_EXAMPLES` examples of each split are read). Its stored
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
    dataset = _in_memory(dataset)
    _check_arguments(model, dataset, out_dir, config, extra_report, overwrite)
    log = log or (lambda line: None)
    out_dir = os.path.abspath(os.fspath(out_dir))
    needed = export_bytes(model, config)
    _check_free_space(out_dir, needed)
    tmp = f"{out_dir}.tmp-{os.getpid()}"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    try:
        with files.writing(out_dir, "the export", needed=needed):
            os.makedirs(tmp)
            report = _export_into(model, dataset, tmp, config, log)
            report["model"] = files.jsonable(extra_report) if extra_report is not None else None
            report_lib.write_reports(report, tmp, config)
        _check_out_dir(out_dir, overwrite)
        if os.path.isdir(out_dir):
            shutil.rmtree(out_dir)
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"exported to {out_dir}")
    return report


def export_bytes(model, config):
    """About how many bytes an export of `model` writes at most (its temporary files included).

    Each float copy of the weights (the SavedModel, the sparse and the dense
    float .tflite) takes 4 bytes per parameter, an int8 one 1; QAT writes a
    float SavedModel on the way; the unshrunk comparison converts the model
    once more. Graphs, reports and headers are bounded by 4 MiB.
    """
    copies = 3 + 0.25 * config.int8 + 1.25 * config.qat
    if config.shrink and config.compare_unshrunk:
        copies += 3 + 0.25 * config.int8
    return int(4 * model.count_params() * copies) + (4 << 20)


def _check_free_space(out_dir, needed):
    """Refuses an export that would not fit on its disk before writing anything.

    Raises:
        tfvnas.files.WriteError: naming the folder, the bytes needed and the bytes free.
    """
    free = files.free_bytes(out_dir)
    if free < needed:
        raise files.WriteError(
            f"Not enough free space for the export {out_dir!r}: it needs about {files.size_text(needed)}, "
            f"{files.size_text(free)} is free.", out_dir, True)


def _export_into(unshrunk, dataset, folder, config, log):
    """Writes every artefact into `folder` and returns the report: convert, verify, time, then report."""
    job = _Export(unshrunk, dataset, folder, config, log)
    job.convert()
    job.convert_unshrunk()
    job.verify()
    job.time()
    try:
        return files.jsonable(job.report())
    finally:
        if job.baseline:
            shutil.rmtree(os.path.join(folder, ".unshrunk"))


class _Export:
    """One export: the steps of `_export_into`, each filling in its part."""

    def __init__(self, unshrunk, dataset, folder, config, log):
        self.unshrunk, self.dataset, self.folder, self.config, self.log = unshrunk, dataset, folder, config, log
        self.input_dtype = np.dtype(dataset.x_train.dtype).name
        self.representative = _representative(dataset, config)
        self.model = unshrunk
        self.encodings, self.qat_info = {}, None
        self.baseline, self.encodings_baseline = {}, {}

    def path(self, name):
        return os.path.join(self.folder, name)

    @property
    def tflite_files(self):
        return [FLOAT_TFLITE, FLOAT_DENSE_TFLITE] + list(self.encodings)

    def convert(self):
        """The shipped model (dead channels removed unless `shrink` is off) as SavedModel and TFLite files."""
        config, log, path = self.config, self.log, self.path
        if config.shrink:
            log("removing dead channels and folding constants")
            self.model = shrinking.shrink(self.unshrunk)
        log("writing the SavedModel")
        write_saved_model(self.model, path(SAVED_MODEL_DIR), input_dtype=self.input_dtype)
        log("converting to TFLite (float, sparse and dense)")
        _write_float_tflite(path(SAVED_MODEL_DIR), self.folder)
        if config.int8:
            log("converting to int8 TFLite (post-training quantization)")
            self.encodings[INT8_TFLITE] = tflite.convert_loadable_int8(
                path(SAVED_MODEL_DIR), path(INT8_TFLITE), self.representative, log)
        if config.qat:
            self._convert_qat()

    def _convert_qat(self):
        config, dataset, log = self.config, self.dataset, self.log
        log("quantization-aware fine-tuning (tf_keras, pruning-preserving)")
        start = time.perf_counter()
        qat_model, moved = qat.quantization_aware_finetune(
            self.model, dataset.x_train, dataset.y_train, epochs=config.qat_epochs,
            learning_rate=config.qat_lr, batch_size=config.qat_batch_size, seed=config.seed,
            calibration=self.representative)
        qat_keras_zeros = verify.qat_zero_pattern(self.model, qat_model)
        qat_source = os.path.join(self.folder, ".qat_saved_model")
        write_saved_model(qat_model, qat_source, input_dtype=self.input_dtype)
        self.encodings[QAT_TFLITE] = tflite.convert_loadable_int8(
            qat_source, self.path(QAT_TFLITE), self.representative, log)
        shutil.rmtree(qat_source)
        self.qat_info = {
            "scheme": "Default8BitPrunePreserveQuantizeScheme",
            "activation_ranges": ("started at the float model's output ranges on the "
                                  f"{len(self.representative)} representative images"),
            "epochs": config.qat_epochs,
            "learning_rate": config.qat_lr,
            "batch_size": config.qat_batch_size,
            "training_examples": int(len(dataset.x_train)),
            "seconds": round(time.perf_counter() - start, 2),
            "zero_masks_reapplied": True,
            "zeros_moved_by_scheme": moved,
            "keras_zeros_by_type": qat_keras_zeros["by_type"],
        }

    def convert_unshrunk(self):
        """The unshrunk network's TFLite files, for the comparison (not shipped)."""
        config = self.config
        if not (config.shrink and config.compare_unshrunk):
            return
        self.log("converting the unshrunk network for the comparison (not shipped)")
        folder = os.path.join(self.folder, ".unshrunk")
        saved = os.path.join(folder, SAVED_MODEL_DIR)
        write_saved_model(self.unshrunk, saved, input_dtype=self.input_dtype)
        _write_float_tflite(saved, folder)
        self.baseline = {name: os.path.join(folder, name) for name in (FLOAT_TFLITE, FLOAT_DENSE_TFLITE)}
        if config.int8:
            self.encodings_baseline[INT8_TFLITE] = tflite.convert_loadable_int8(
                saved, os.path.join(folder, INT8_TFLITE), self.representative, self.log)
            self.baseline[INT8_TFLITE] = os.path.join(folder, INT8_TFLITE)

    def verify(self):
        """Parity of every file with the Keras model on the test split; which delegate each loads with."""
        self.log("verifying")
        path, batch = self.path, self.config.eval_batch_size
        x, labels = self.dataset.x_test, self.dataset.y_test
        self.reference = verify.keras_logits(self.model, x, batch)
        parity = {"split": "test", "examples": int(len(x)),
                  "keras": {"accuracy": float(np.mean(self.reference.argmax(1) == labels))}}
        parity[SAVED_MODEL_DIR] = verify.parity(
            self.reference, saved_model_logits(path(SAVED_MODEL_DIR), x, batch), labels)
        self.tflite_entries, self.delegates = {}, {}
        for name in self.tflite_files:
            xnnpack_error = tflite.load_error(path(name), "xnnpack")
            delegate = "xnnpack" if xnnpack_error is None else "none"
            self.delegates[path(name)] = delegate
            logits = tflite.run_tflite(path(name), x, delegate=delegate, batch_size=batch)["logits"]
            parity[name] = {**verify.parity(self.reference, logits, labels), "delegate": delegate}
            self.tflite_entries[name] = {
                **tflite.tflite_io(path(name)),
                "encoding": self.encodings.get(name, {}).get(
                    "encoding", "sparse" if name == FLOAT_TFLITE else "dense"),
                "loads_with_xnnpack": xnnpack_error is None,
                "xnnpack_error": xnnpack_error,
            }
        for name, entry in self.encodings.items():
            drop = parity["keras"]["accuracy"] - parity[name]["accuracy"]
            entry.update({
                "accuracy_drop": float(drop),
                "tolerance": self.config.int8_tolerance,
                "within_tolerance": bool(drop <= self.config.int8_tolerance + 1e-12),
            })
        for file in self.baseline.values():
            self.delegates[file] = "xnnpack" if tflite.load_error(file, "xnnpack") is None else "none"
        self.parity = parity

    def time(self):
        """Every file's latency in the LiteRT interpreter."""
        config = self.config
        self.log("timing (LiteRT)")
        self.timed = tflite.tflite_latencies(
            [self.path(name) for name in self.tflite_files] + list(self.baseline.values()), self.dataset.x_test[0],
            runs=config.latency_runs, rounds=config.latency_rounds, threads=config.latency_threads,
            delegates=self.delegates)

    def report(self):
        """`report.json`'s contents from what the steps found."""
        config, dataset, model, path = self.config, self.dataset, self.model, self.path
        tflite_files = self.tflite_files
        threads = tflite.LATENCY_THREADS if tflite.LATENCY_THREADS in config.latency_threads \
            else config.latency_threads[0]
        latency = {name: self.timed[path(name)][threads] for name in tflite_files}
        zeros = {SAVED_MODEL_DIR: verify.zero_pattern(model, saved_model=path(SAVED_MODEL_DIR))}
        for name in tflite_files:
            zeros[name] = verify.zero_pattern(model, tflite=path(name))
        sizes = {name: _file_sizes(path(name)) for name in [SAVED_MODEL_DIR] + tflite_files}
        sparse, dense = sizes[FLOAT_TFLITE], sizes[FLOAT_DENSE_TFLITE]
        rows = _comparison_rows(
            "shrunk" if config.shrink else "unshrunk", True, model, {name: path(name) for name in tflite_files},
            self.encodings, self.timed, {name: self.parity[name]["accuracy"] for name in tflite_files})
        if self.baseline:
            x, labels, batch = dataset.x_test, dataset.y_test, config.eval_batch_size
            accuracy = {
                name: float(np.mean(tflite.run_tflite(file, x, delegate=self.delegates[file], batch_size=batch)
                                    ["logits"].argmax(1) == labels))
                for name, file in self.baseline.items()
            }
            rows += _comparison_rows("unshrunk", False, self.unshrunk, self.baseline, self.encodings_baseline,
                                     self.timed, accuracy)
        return {
            "format": "tfvnas-export/1",
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "dataset": {"name": dataset.name, "num_classes": dataset.num_classes,
                        "test_examples": int(len(dataset.x_test))},
            "input": report_lib.input_report(model, dataset),
            "outputs": {
                "logits": f"float32 ({dataset.num_classes},) per image",
                "probabilities": "softmax of the logits",
            },
            "parameters": counting.count_parameters(model),
            "macs": macs_lib.count_macs(model),
            "shrink": self._shrink_report(),
            "files": sizes,
            "float_sparse_to_dense_ratio": {
                "bytes": sparse["bytes"] / dense["bytes"],
                "gzip_bytes": sparse["gzip_bytes"] / dense["gzip_bytes"],
            },
            "tflite": self.tflite_entries,
            "parity": self.parity,
            "latency": latency,
            "comparison": {
                "latency": {"runs": config.latency_runs * config.latency_rounds, "rounds": config.latency_rounds,
                            "threads": list(config.latency_threads), "image": "the first test image"},
                "rows": rows,
            },
            "zero_pattern": zeros,
            "int8": self.encodings.get(INT8_TFLITE),
            "qat": None if self.qat_info is None else {**self.qat_info, **self.encodings[QAT_TFLITE],
                                                       "zeros_by_type": zeros[QAT_TFLITE]["by_type"]},
            "config": config.to_dict(),
            "versions": report_lib.versions(),
        }

    def _shrink_report(self):
        if not self.config.shrink:
            return {"enabled": False}
        x = self.dataset.x_test
        unshrunk_logits = verify.keras_logits(self.unshrunk, x, self.config.eval_batch_size)
        return {
            "enabled": True,
            **shrinking.shrink_summary(self.unshrunk, self.model),
            "parity": {
                "split": "test",
                "examples": int(len(x)),
                "max_abs_diff": float(np.max(np.abs(unshrunk_logits - self.reference))),
                "top1_agreement": float(np.mean(unshrunk_logits.argmax(1) == self.reference.argmax(1))),
            },
        }


def _write_float_tflite(saved_model_dir, folder):
    for name, sparse in ((FLOAT_TFLITE, True), (FLOAT_DENSE_TFLITE, False)):
        with open(os.path.join(folder, name), "wb") as f:
            f.write(tflite.tflite_convert(saved_model_dir, sparse=sparse))


def _comparison_rows(variant, shipped, model, paths, encodings, timed, accuracy):
    """One comparison row per `.tflite` file of one model (shrunk or unshrunk)."""
    params = counting.count_parameters(model)
    total_macs = macs_lib.count_macs(model)["total"]
    kinds = {FLOAT_TFLITE: "float", FLOAT_DENSE_TFLITE: "float", INT8_TFLITE: "int8",
             QAT_TFLITE: "int8 (QAT)"}
    rows = []
    for name, file in paths.items():
        rows.append({
            "model": variant,
            "file": name,
            "shipped": shipped,
            "format": kinds[name],
            "encoding": encodings.get(name, {}).get("encoding", "sparse" if name == FLOAT_TFLITE else "dense"),
            "macs": total_macs,
            "parameters": {"dense": params["dense"], "nonzero": params["nonzero"]},
            **_file_sizes(file),
            "latency": {str(t): {k: v[k] for k in ("median_ms", "p90_ms")} for t, v in timed[file].items()},
            "delegate": next(iter(timed[file].values()))["delegate"],
            "accuracy": accuracy[name],
        })
    return rows


def load_trained(model_dir):
    """Loads what `tfvnas train` wrote: the trained network and its summary.

    Args:
        model_dir: The output folder of `tfvnas train` (`model.keras`,
            `train_history.json`).

    Returns:
        A tuple `(network, history)`: the `tfvnas.models.network.Network` and the
        parsed `train_history.json`.

    Raises:
        ValueError: If the folder does not hold both files or they cannot be
            read.
    """
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
        reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise ValueError(f"The trained model {model_path!r} does not load (damaged or truncated?): {reason}") \
            from error
    if not isinstance(network, network_lib.Network):
        raise ValueError(
            f"`model` must hold a tfvnas Network in {TRAIN_MODEL}. "
            f"Received: {type(network).__name__} in {model_dir!r}"
        )
    history = files.read_json(history_path, "training history")
    if not isinstance(history, dict):
        raise ValueError(
            f"{history_path!r} must hold a JSON object. Received: {type(history).__name__}")
    return network, history


def _export_config(config, int8, qat, shrink=None):
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
    # The flags only switch options on: False (a flag left off) keeps the config's value;
    # `shrink` is None (keep) or a bool (the `--no-shrink` flag gives False).
    if shrink is not None and not isinstance(shrink, bool):
        raise ValueError(f"`shrink` must be a bool or None. Received: shrink={shrink!r}")
    return config.override(int8=True if int8 else None, qat=True if qat else None, shrink=shrink)


def export(model_dir, out_dir, *, dataset=None, config=None, int8=None, qat=None, shrink=None,
           overwrite=False, verbose=1):
    """Strips the network trained in `model_dir` and exports it (`tfvnas export`).

    Loads `model.keras` and `train_history.json` (`load_trained`), strips the
    network into standard layers (`tfvnas.compress.strip.strip`, every channel kept)
    and runs `export_stripped`, which shrinks it unless `shrink` is off, with
    the training summary (all of `train_history.json` but the per-epoch
    records) under `"model"` in the report.

    Args:
        model_dir: The output folder of `tfvnas train`.
        out_dir: The folder to create (see `export_stripped`).
        dataset: A dataset object, a name, a path or a streamed source for
            `tfvnas.data.load`; None: the dataset named in the training
            summary.
        config: An `ExportConfig`, a dict of its fields, a JSON/YAML file, or
            None (the defaults).
        int8, qat: True switches the option on over `config`.
        shrink: None keeps `config.shrink`; a bool sets it (False: export
            every channel, as `tfvnas export --no-shrink`).
        overwrite: Bool; replace a non-empty `out_dir`.
        verbose: 0 silent, 1 one line per step.

    Returns:
        The report (`report.json`).

    Raises:
        ValueError: If the folder is not a training output, the data does not
            fit the model, or an argument is invalid.
    """
    for name, value in (("model_dir", model_dir), ("out_dir", out_dir)):
        if not isinstance(value, (str, os.PathLike)):
            raise ValueError(f"`{name}` must be a path. Received: {name}={value!r}")
    config = _export_config(config, int8, qat, shrink)
    _check_out_dir(out_dir, overwrite)
    network, history = load_trained(model_dir)
    info = history.get("dataset") or {}
    if dataset is None:
        if not info.get("name"):
            raise ValueError(
                "`dataset` must be given: the training summary names none. Received: dataset=None")
        dataset = info["name"]
    dataset = data_lib.load(dataset)  # a dataset object is returned as it is
    shape = tuple(info.get("image_shape") or network.input_shape_built or dataset.image_shape)
    classes = int(info.get("num_classes") or network.num_classes)
    if tuple(dataset.image_shape) != shape or dataset.num_classes != classes:
        raise ValueError(
            f"The model takes images of shape {shape} with {classes} classes. Received: dataset "
            f"{dataset.name!r} with images of shape {dataset.image_shape} and "
            f"{dataset.num_classes} classes."
        )
    # Unshrunk: export_stripped shrinks it, and compares with it.
    stripped = strip_lib.strip(network, input_shape=shape, shrink=False)
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
    return files.read_json(os.path.join(os.fspath(out_dir), REPORT_JSON), "export report")
