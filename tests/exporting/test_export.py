"""tfvnas.exporting: SavedModel, TFLite (float, sparse, int8, QAT) and the report.

One module-scoped export (int8 and QAT on, tiny data) serves most tests; the
references are independent of the code under test where it matters: a
fresh Python process loads the SavedModel, the zero masks are compared with
the test's own layout transposes, and the sparse file's weights, densified by
LiteRT, against the dense file's. The export shrinks the model first
(dead channels out, `tfvnas.compress.shrinking`); the files must hold exactly the
shrunk model's kernels and compute the unshrunk model's logits.
"""

import errno
import glob
import json
import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvnas import config as config_lib
from tfvnas import data as data_lib
from tfvnas.compress import counting, macs, shrinking
from tfvnas.exporting import api, qat, saved_model, tflite

pytestmark = pytest.mark.slow  # one real export (SavedModel, TFLite, int8, QAT) serves the module


SPARSITY = 0.8
L = keras.layers


def _small_mnist():
    """12x12 MNIST: 2-pixel crop, 2x2 mean; 384 train, 32 val, 200 test."""
    full = data_lib.load("mnist-5k")

    def shrink(x):
        x = x[:, 2:26, 2:26, :].astype(np.float32)
        x = x.reshape(len(x), 12, 2, 12, 2, 1).mean(axis=(2, 4))
        return np.round(x).astype(np.uint8)

    return data_lib.Dataset(
        name="mnist-12",
        x_train=shrink(full.x_train[:384]), y_train=full.y_train[:384],
        x_val=shrink(full.x_val[:32]), y_val=full.y_val[:32],
        x_test=shrink(full.x_test[:200]), y_test=full.y_test[:200],
        num_classes=10,
    )


def _build(dataset):
    """A stripped-like model with every standard layer type `strip` emits."""
    mean, std = dataset.normalisation()
    inputs = keras.Input(dataset.image_shape)
    x = L.Rescaling(1.0 / std[0], offset=-mean[0] / std[0], name="normalise")(inputs)
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="stem_conv")(x)
    x = L.BatchNormalization(momentum=0.9, name="stem_bn")(x)
    a = L.ReLU(name="sep_relu")(x)
    a = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="sep_dw")(a)
    a = L.Conv2D(8, 1, use_bias=False, name="sep_pw")(a)
    a = L.BatchNormalization(momentum=0.9, name="sep_bn")(a)
    b = L.ReLU(name="dil_relu")(x)
    b = L.DepthwiseConv2D(3, dilation_rate=2, padding="same", use_bias=False, name="dil_dw")(b)
    b = L.Conv2D(8, 1, use_bias=False, name="dil_pw")(b)
    b = L.BatchNormalization(momentum=0.9, name="dil_bn")(b)
    m = L.MaxPooling2D(3, 1, padding="same", name="max_s1")(x)
    none = L.Rescaling(0.0, name="none_op")(x)
    s = L.Add(name="node_add")([a, b, m, none])
    p = L.AveragePooling2D(3, 1, padding="same", name="avg_s1")(x)
    y = L.Concatenate(name="cell_concat")([s, p])
    r1 = L.MaxPooling2D(3, 2, padding="same", name="max_s2")(y)
    r2 = L.AveragePooling2D(3, 2, padding="same", name="avg_s2")(y)
    r2 = L.ZeroPadding2D(((0, 1), (0, 1)), name="pad")(r2)
    r2 = L.Cropping2D(((0, 1), (0, 1)), name="crop")(r2)
    r3 = L.MaxPooling2D(1, 2, name="subsample")(y)
    z = L.Concatenate(name="reduce_concat")([r1, r2, r3])
    z = L.ReLU(name="head_relu")(z)
    z = L.Conv2D(16, 3, padding="same", name="head_conv")(z)
    z = L.GlobalAveragePooling2D(name="gap")(z)
    outputs = L.Dense(dataset.num_classes, name="classifier")(z)
    return keras.Model(inputs, outputs, name="stripped")


def _kernel_masks(model, seed=0):
    rng = np.random.default_rng(seed)
    masks = {}
    for layer in model.layers:
        for w in layer.weights:
            if w.name == "kernel":
                masks[w.path] = (rng.random(tuple(w.shape)) >= SPARSITY).astype(np.float32)
    return masks


class _KeepZeros(keras.callbacks.Callback):
    def __init__(self, masks):
        super().__init__()
        self.masks = masks

    def on_train_batch_end(self, batch, logs=None):
        for w in self.model.weights:
            if w.path in self.masks:
                w.assign(w * self.masks[w.path])


@pytest.fixture(scope="module")
def dataset():
    return _small_mnist()


@pytest.fixture(scope="module")
def model(dataset):
    keras.utils.set_random_seed(0)
    model = _build(dataset)
    keep_zeros = _KeepZeros(_kernel_masks(model))
    keep_zeros.set_model(model)
    keep_zeros.on_train_batch_end(0)
    model.compile(keras.optimizers.Adam(1e-2),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(dataset.x_train.astype(np.float32), dataset.y_train, batch_size=64, epochs=20,
              verbose=0, callbacks=[keep_zeros])
    return model


@pytest.fixture(scope="module")
def exported(model, dataset, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("export") / "run"
    cfg = config_lib.ExportConfig(
        int8=True, qat=True, qat_epochs=1, qat_batch_size=64, representative_samples=64,
        latency_runs=10, latency_rounds=1, eval_batch_size=128, seed=0,
    )
    report = api.export_stripped(model, dataset, out_dir, cfg,
                                        extra_report={"epochs": 20, "note": "test"})
    return out_dir, report


@pytest.fixture(scope="module")
def shrunk(model):
    """What the export ships: shrinking is deterministic."""
    return shrinking.shrink(model)


def test_the_fixture_model_is_sparse_and_learnt(model, shrunk, dataset, exported):
    _, report = exported
    assert 0.7 < counting.count_parameters(model)["kernel_sparsity"] < 0.9
    params = report["parameters"]
    assert params == counting.count_parameters(shrunk)
    assert params["kernel_dense"] < counting.count_parameters(model)["kernel_dense"]
    assert {r["type"] for r in params["layers"]} == {"Conv2D", "DepthwiseConv2D", "Dense"}
    assert report["parity"]["keras"]["accuracy"] > 0.3  # well above chance (0.1)


def test_every_file_exists(exported):
    out_dir, report = exported
    names = [
        "saved_model/saved_model.pb", "model_float.tflite", "model_float_dense.tflite",
        "model_int8.tflite", "model_qat_int8.tflite", "report.json", "report.md",
        "model_card.md", "export_config.json",
    ]
    for name in names:
        assert (out_dir / name).is_file(), name
    assert set(report["files"]) == {
        "saved_model", "model_float.tflite", "model_float_dense.tflite",
        "model_int8.tflite", "model_qat_int8.tflite"}
    leftovers = [p for p in os.listdir(out_dir) if p.endswith((".sparse", ".dense"))
                 or p.startswith(".")]
    assert leftovers == []
    assert glob.glob(f"{out_dir}.tmp-*") == []
    assert config_lib.ExportConfig.load(out_dir / "export_config.json").qat is True


def test_saved_model_loads_in_a_fresh_process(model, dataset, exported, tmp_path):
    out_dir, _ = exported
    x = dataset.x_test[:16]
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import json, numpy as np, tensorflow as tf, keras
        x = np.load({str(tmp_path / "x.npy")!r})
        path = {str(out_dir / "saved_model")!r}
        loaded = tf.saved_model.load(path)
        sig = loaded.signatures["serving_default"]
        spec = sig.structured_input_signature[1]["images"]
        out = sig(images=tf.constant(x))
        layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
        out2 = layer(x)
        np.save({str(tmp_path / "logits.npy")!r}, out["logits"].numpy())
        np.save({str(tmp_path / "probs.npy")!r}, out["probabilities"].numpy())
        np.save({str(tmp_path / "layer_logits.npy")!r}, out2["logits"].numpy())
        print(json.dumps({{"dtype": spec.dtype.name, "shape": spec.shape.as_list(),
                           "outputs": sorted(out)}}))
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info == {"dtype": "uint8", "shape": [None, 12, 12, 1],
                    "outputs": ["logits", "probabilities"]}
    expected = model(x.astype(np.float32), training=False).numpy()
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), expected, atol=1e-4)
    np.testing.assert_allclose(np.load(tmp_path / "layer_logits.npy"), expected, atol=1e-4)
    np.testing.assert_allclose(np.load(tmp_path / "probs.npy"),
                               tf.nn.softmax(expected).numpy(), atol=1e-5)


@pytest.mark.parametrize("name", ["model_float.tflite", "model_float_dense.tflite"])
def test_float_tflite_matches_keras(model, dataset, exported, name):
    out_dir, report = exported
    x = dataset.x_test[:64]
    expected = model(x.astype(np.float32), training=False).numpy()
    out = tflite.run_tflite(out_dir / name, x, delegate="xnnpack")
    np.testing.assert_allclose(out["logits"], expected, atol=1e-4)
    assert np.mean(out["logits"].argmax(1) == expected.argmax(1)) == 1.0
    io = tflite.tflite_io(out_dir / name)
    assert io["input"] == {"name": "images", "dtype": "uint8", "shape": [-1, 12, 12, 1],
                           "quantization": None}
    assert report["tflite"][name]["loads_with_xnnpack"] is True
    assert report["parity"][name]["top1_agreement"] == 1.0
    assert report["parity"][name]["max_abs_diff"] < 1e-4


def _keras_kernels(model):
    return [(layer, w.path, w.numpy()) for layer in model.layers for w in layer.weights
            if w.name == "kernel"]


def test_saved_model_keeps_every_zero(shrunk, exported):
    out_dir, report = exported
    loaded = tf.saved_model.load(str(out_dir / "saved_model"))
    variables = {v.name: v.numpy() for v in loaded.variables}
    for _, path, kernel in _keras_kernels(shrunk):
        np.testing.assert_array_equal(variables[f"{path}:0"] == 0, kernel == 0)
        np.testing.assert_array_equal(variables[f"{path}:0"], kernel)
    pattern = report["zero_pattern"]["saved_model"]
    assert pattern["identical_masks"] is True and pattern["mismatches"] == 0
    assert all(row["values_equal"] for row in pattern["kernels"])


def _tflite_layout(layer, kernel):
    if isinstance(layer, L.DepthwiseConv2D):
        h, w, c, m = kernel.shape
        return kernel.reshape(1, h, w, c * m)
    if isinstance(layer, L.Conv2D):
        return kernel.transpose(3, 0, 1, 2)
    return kernel.T


@pytest.mark.parametrize("name", ["model_float.tflite", "model_float_dense.tflite"])
def test_float_tflite_keeps_every_zero(shrunk, exported, name):
    out_dir, report = exported
    constants = tflite.tflite_weights(out_dir / name)
    if name == "model_float.tflite":
        assert sum(c.sparse for c in constants) == len(_keras_kernels(shrunk))
    for layer, _, kernel in _keras_kernels(shrunk):
        mask = _tflite_layout(layer, kernel) != 0
        same = [c for c in constants if c.shape == mask.shape
                and np.array_equal(c.values != 0, mask)]
        assert same, f"no constant of {name} has the zero mask of {layer.name}"
    # The classifier is not folded with anything: its values come back exactly.
    dense = next(k for layer, _, k in _keras_kernels(shrunk) if layer.name == "classifier")
    assert any(c.shape == dense.T.shape and np.array_equal(c.values, dense.T)
               for c in constants)
    pattern = report["zero_pattern"][name]
    assert pattern["identical_masks"] is True and pattern["missing_kernels"] == 0
    assert {row["status"] for row in pattern["kernels"]} == {"found"}


def test_float_sparse_file_is_smaller(exported):
    out_dir, report = exported
    sparse = os.path.getsize(out_dir / "model_float.tflite")
    dense = os.path.getsize(out_dir / "model_float_dense.tflite")
    assert sparse < dense
    assert report["float_sparse_to_dense_ratio"]["bytes"] == pytest.approx(sparse / dense)


def test_int8_accuracy_is_within_tolerance(model, dataset, exported):
    out_dir, report = exported
    x, y = dataset.x_test, dataset.y_test
    keras_accuracy = np.mean(model(x.astype(np.float32), training=False).numpy().argmax(1) == y)
    for name, key in (("model_int8.tflite", "int8"), ("model_qat_int8.tflite", "qat")):
        # The shipped file must load with the default delegate (XNNPACK).
        assert tflite.loads_with_xnnpack(out_dir / name)
        logits = tflite.run_tflite(out_dir / name, x)["logits"]
        accuracy = np.mean(logits.argmax(1) == y)
        entry = report[key]
        assert entry["accuracy_drop"] == pytest.approx(keras_accuracy - accuracy)
        assert entry["within_tolerance"] == bool(keras_accuracy - accuracy <= entry["tolerance"])
        assert entry["encoding"] in ("sparse", "dense") and entry["reason"]
        sparse = entry["attempts"]["sparse"]
        if entry["encoding"] == "dense":
            assert sparse["loads_with_xnnpack"] is False or sparse["matches_dense"] is False
        else:
            assert sparse["matches_dense"] is True and sparse["max_abs_diff_to_dense"] == 0
        io = tflite.tflite_io(out_dir / name)
        assert io["input"]["dtype"] == "uint8"
        assert io["outputs"]["logits"]["dtype"] == "int8"
    drop = keras_accuracy - np.mean(
        tflite.run_tflite(out_dir / "model_int8.tflite", x)["logits"].argmax(1) == y)
    assert drop <= 0.03


def test_qat_keeps_conv2d_and_dense_zeros(shrunk, exported):
    out_dir, report = exported
    qat = report["qat"]
    # tfmot's prune-preserve scheme itself keeps Conv2D and Dense zeros ...
    moved = qat["zeros_moved_by_scheme"]
    for layer_type in ("Conv2D", "Dense"):
        assert moved[layer_type]["moved"] == 0, layer_type
        assert moved[layer_type]["kept_by_scheme"] is True
    # ... but not DepthwiseConv2D zeros (DESIGN §3), which the export re-zeroes.
    assert moved["DepthwiseConv2D"]["moved"] > 0
    assert moved["DepthwiseConv2D"]["layers_moved"] == ["sep_dw", "dil_dw"]
    for key in ("zeros_by_type", "keras_zeros_by_type"):
        for layer_type in ("Conv2D", "DepthwiseConv2D", "Dense"):
            assert qat[key][layer_type]["lost_zeros"] == 0, (key, layer_type)
            assert qat[key][layer_type]["preserved"] is True
    # Independently: each zero is zero in some same-shaped int8 tensor of the file.
    constants = tflite.tflite_weights(out_dir / "model_qat_int8.tflite")
    for layer, _, kernel in _keras_kernels(shrunk):
        zeros = _tflite_layout(layer, kernel) == 0
        assert any(c.shape == zeros.shape and not np.any(c.values[zeros])
                   for c in constants), layer.name


def test_report_has_every_field(exported):
    out_dir, returned = exported
    report = json.loads((out_dir / "report.json").read_text())
    assert report == returned
    assert list(report) == [
        "format", "created", "dataset", "input", "outputs", "parameters", "macs", "shrink", "files",
        "float_sparse_to_dense_ratio", "tflite", "parity", "latency", "comparison", "zero_pattern",
        "int8", "qat", "config", "versions", "model"]
    assert report["input"] == {
        "name": "images", "shape": [None, 12, 12, 1], "dtype": "uint8", "range": [0.0, 255.0],
        "normalised_inside_model": True, "contract": report["input"]["contract"],
        "normalisation": report["input"]["normalisation"]}
    assert report["input"]["normalisation"]["layer"] == "normalise"
    assert set(report["parameters"]) == {
        "dense", "nonzero", "moving_statistics", "kernel_dense", "kernel_nonzero", "kernel_sparsity", "layers"}
    assert set(report["parameters"]["layers"][0]) == {
        "name", "type", "weight", "shape", "dense", "nonzero", "sparsity"}
    tflite_files = ["model_float.tflite", "model_float_dense.tflite", "model_int8.tflite",
                    "model_qat_int8.tflite"]
    for name in ["saved_model"] + tflite_files:
        assert set(report["files"][name]) == {"bytes", "gzip_bytes"}
        assert 0 < report["files"][name]["gzip_bytes"] < report["files"][name]["bytes"]
        assert set(report["parity"][name]) >= {"max_abs_diff", "top1_agreement", "accuracy"}
        assert set(report["zero_pattern"][name]) == {
            "preserved", "identical_masks", "mismatches", "lost_zeros", "new_zeros",
            "missing_kernels", "by_type", "kernels"}
    assert set(report["parity"]) == {"split", "examples", "keras", "saved_model", *tflite_files}
    for name in tflite_files:
        assert set(report["tflite"][name]) == {
            "input", "outputs", "encoding", "loads_with_xnnpack", "xnnpack_error"}
        latency = report["latency"][name]
        assert set(latency) == {"median_ms", "p90_ms", "mean_ms", "runs", "num_threads",
                                "delegate"}
        assert 0 < latency["median_ms"] <= latency["p90_ms"] and latency["runs"] == 10
        assert latency["num_threads"] == 1
    for key in ("int8", "qat"):
        assert set(report[key]) >= {"encoding", "reason", "attempts", "accuracy_drop",
                                    "tolerance", "within_tolerance"}
    assert set(report["qat"]) >= {"scheme", "epochs", "activation_ranges", "zeros_by_type",
                                  "keras_zeros_by_type", "zero_masks_reapplied",
                                  "zeros_moved_by_scheme"}
    assert report["config"]["int8"] is True and report["config"]["qat"] is True
    assert report["model"] == {"epochs": 20, "note": "test"}


def test_markdown_report_and_model_card_state_the_input_contract(exported):
    out_dir, _ = exported
    report_md = (out_dir / "report.md").read_text()
    card = (out_dir / "model_card.md").read_text()
    assert "| images | (N, 12, 12, 1) | uint8 | 0..255 | yes |" in report_md
    assert "## Zero pattern" in report_md and "## LiteRT" in report_md
    assert "- `images`: shape `(N, 12, 12, 1)`, dtype `uint8`, values 0..255" in card
    assert "Normalised inside the model: yes" in card
    assert "get_signature_runner(\"serving_default\")" in card
    assert "## Known limits" in card


@pytest.mark.parametrize("which", ["unshrunk", "shrunk"])
def test_to_tf_keras_computes_the_same_function(model, shrunk, dataset, which):
    source = shrunk if which == "shrunk" else model
    tf_model = qat.to_tf_keras(source)
    x = dataset.x_test[:8].astype(np.float32)
    np.testing.assert_allclose(tf_model(x, training=False).numpy(),
                               model(x, training=False).numpy(), atol=1e-5)
    assert [l.name for l in tf_model.layers] == [l.name for l in source.layers]


def test_sparse_weights_read_back_equal_the_dense_files(exported):
    # LiteRT's DENSIFY expands each sparse kernel to exactly the dense file's tensor.
    out_dir, _ = exported
    sparse = tflite.tflite_weights(out_dir / "model_float.tflite")
    dense = tflite.tflite_weights(out_dir / "model_float_dense.tflite")
    encoded = [c for c in sparse if c.sparse]
    assert encoded and all(c.stored < c.raw.size for c in encoded)
    assert not any(c.sparse for c in dense)
    for constant in encoded:
        same = [d for d in dense if d.shape == constant.shape and np.array_equal(d.values, constant.values)]
        assert same, constant.name


def test_float_data_gives_a_float32_input(model, dataset, tmp_path):
    # A float dataset keeps float32 raw pixels in the same range.
    saved = tmp_path / "sm"
    saved_model.write_saved_model(model, saved, input_dtype="float32")
    path = tmp_path / "f.tflite"
    path.write_bytes(tflite.tflite_convert(saved, sparse=True))
    assert tflite.tflite_io(path)["input"]["dtype"] == "float32"
    x = dataset.x_test[:8].astype(np.float32)
    np.testing.assert_allclose(tflite.run_tflite(path, x, delegate="none")["logits"],
                               model(x, training=False).numpy(), atol=1e-4)


def test_tflite_convert_wants_representative_images_for_int8(model):
    with pytest.raises(ValueError) as info:
        tflite.tflite_convert(model, sparse=False, int8=True)
    assert str(info.value) == (
        "`representative` must be an array of images when int8=True. "
        "Received: representative=None")
    with pytest.raises(ValueError) as info:
        tflite.run_tflite("unused.tflite", np.zeros((1, 12, 12, 1)), delegate="gpu")
    assert str(info.value) == (
        "`delegate` must be one of 'xnnpack', 'none'. Received: delegate='gpu'")


def test_count_parameters(model):
    counts = counting.count_parameters(model)
    kernels = [k for _, _, k in _keras_kernels(model)]
    assert counts["kernel_dense"] == sum(k.size for k in kernels)
    assert counts["kernel_nonzero"] == sum(np.count_nonzero(k) for k in kernels)
    # Parameters are the trainable weights; batch-norm moving statistics are apart.
    assert counts["dense"] == sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert counts["nonzero"] == sum(int(np.count_nonzero(w.numpy())) for w in model.trainable_weights)
    bn = [l for l in model.layers if isinstance(l, L.BatchNormalization)]
    assert bn and counts["moving_statistics"] == sum(2 * l.moving_mean.shape[0] for l in bn)
    assert counts["dense"] + counts["moving_statistics"] == sum(np.size(w) for w in model.get_weights())
    row = next(r for r in counts["layers"] if r["name"] == "head_conv")
    assert row["shape"] == [3, 3, 48, 16] and row["type"] == "Conv2D"


def test_a_non_empty_out_dir_is_refused(model, dataset, tmp_path):
    out_dir = tmp_path / "taken"
    out_dir.mkdir()
    (out_dir / "keep.txt").write_text("x")
    message = (
        "`out_dir` must not exist or be empty; pass overwrite=True (--overwrite) to replace it. "
        f"Received: out_dir={str(out_dir)!r}, which holds 1 entries"
    )
    with pytest.raises(ValueError) as info:
        api.export_stripped(model, dataset, out_dir)
    assert str(info.value) == message
    assert (out_dir / "keep.txt").read_text() == "x"


def test_a_crash_leaves_no_folder(model, dataset, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("converter exploded")

    # The SavedModel is already written into the temporary folder by then.
    monkeypatch.setattr(tflite, "tflite_convert", fail)
    out_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="^converter exploded$"):
        api.export_stripped(model, dataset, out_dir, config_lib.ExportConfig())
    assert not out_dir.exists()
    assert os.listdir(tmp_path) == []


def _full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("free, message", [
    # Refused before anything is written.
    (1000, "Not enough free space for the export {out!r}: it needs about {needed}, 1000 B is free."),
    # The space check passes, then the disk fills (after the SavedModel is written).
    (1 << 30, "No space left on the disk writing the export {out!r} (needs about {needed} free, 1.0 GiB free)."),
], ids=["refused", "filled"])
def test_an_export_that_does_not_fit_is_one_line_and_leaves_no_folder(model, dataset, tmp_path, monkeypatch, free,
                                                                      message):
    monkeypatch.setattr(api.files, "free_bytes", lambda path: free)
    monkeypatch.setattr(tflite, "tflite_convert", _full)
    needed = api.export_bytes(model, config_lib.ExportConfig())
    assert needed > 4 * model.count_params() * 6
    out_dir = tmp_path / "run"
    with pytest.raises(api.files.WriteError, match="^" + re.escape(
            message.format(out=str(out_dir), needed=api.files.size_text(needed))) + "$"):
        api.export_stripped(model, dataset, out_dir)
    assert os.listdir(tmp_path) == []


def test_the_shrunk_export_computes_the_unshrunk_logits(model, shrunk, dataset, exported):
    out_dir, report = exported
    x = dataset.x_test
    expected = model(x.astype(np.float32), training=False).numpy()
    np.testing.assert_allclose(shrunk(x.astype(np.float32)).numpy(), expected, atol=1e-5)
    parity = report["shrink"]["parity"]
    assert parity["top1_agreement"] == 1.0 and parity["max_abs_diff"] < 1e-5
    assert parity["examples"] == len(x)
    # The files hold the shrunk model: fewer channels, and names kept.
    assert macs.count_macs(shrunk)["total"] < macs.count_macs(model)["total"]
    assert report["macs"] == macs.count_macs(shrunk)
    summary = report["shrink"]
    assert summary["enabled"] is True
    assert summary["macs"] == {"before": macs.count_macs(model)["total"],
                               "after": macs.count_macs(shrunk)["total"],
                               "ratio": pytest.approx(macs.count_macs(model)["total"]
                                                      / macs.count_macs(shrunk)["total"])}
    # head_conv has an all-zero output column: it and the classifier row reading it go.
    assert summary["channels"]["Conv2D"]["after"] < summary["channels"]["Conv2D"]["before"]
    assert shrunk.get_layer("classifier").kernel.shape[0] < model.get_layer("classifier").kernel.shape[0]


def test_the_comparison_table_puts_the_shipped_files_first(model, shrunk, dataset, exported):
    out_dir, report = exported
    table = report["comparison"]
    assert table["latency"] == {"runs": 10, "rounds": 1, "threads": [1, 2], "image": "the first test image"}
    rows = table["rows"]
    shipped = ["model_float.tflite", "model_float_dense.tflite", "model_int8.tflite", "model_qat_int8.tflite"]
    assert [(r["model"], r["file"], r["shipped"]) for r in rows] == (
        [("shrunk", name, True) for name in shipped]
        + [("unshrunk", name, False) for name in shipped[:3]])
    counts = {"shrunk": (shrunk, macs.count_macs(shrunk)["total"]),
              "unshrunk": (model, macs.count_macs(model)["total"])}
    for row in rows:
        keras_model, total = counts[row["model"]]
        assert row["macs"] == total
        params = counting.count_parameters(keras_model)
        assert row["parameters"] == {"dense": params["dense"], "nonzero": params["nonzero"]}
        assert set(row["latency"]) == {"1", "2"}
        for entry in row["latency"].values():
            assert 0 < entry["median_ms"] <= entry["p90_ms"]
        assert 0 < row["gzip_bytes"] < row["bytes"]
        if row["shipped"]:
            assert row["bytes"] == report["files"][row["file"]]["bytes"]
            assert row["accuracy"] == report["parity"][row["file"]]["accuracy"]
            assert row["latency"]["1"]["median_ms"] == report["latency"][row["file"]]["median_ms"]
    # Same predictions: the float files of both models have the Keras accuracy.
    keras_accuracy = report["parity"]["keras"]["accuracy"]
    assert [r["accuracy"] for r in rows if r["format"] == "float"] == [keras_accuracy] * 4
    # The unshrunk files were measured and deleted.
    assert not [p for p in os.listdir(out_dir) if p.startswith(".")]


def test_the_model_card_gives_the_shrunk_numbers_first(exported):
    out_dir, report = exported
    card = (out_dir / "model_card.md").read_text()
    report_md = (out_dir / "report.md").read_text()
    assert card.index("## Size and speed") < card.index("## Accuracy and size")
    assert f"This model (dead channels removed, constants folded): {report['macs']['total']:,} MACs" in card
    table = card[card.index("| model | file | MACs"):card.index("LiteRT with XNNPACK")]
    lines = [line for line in table.splitlines() if line.startswith("| shrunk") or line.startswith("| unshrunk")]
    assert lines[0].startswith("| shrunk | model_float.tflite |")
    assert lines[-1].startswith("| unshrunk (not shipped) | model_int8.tflite |")
    assert "Removing dead channels cut the MACs per image" in card
    assert "## Dead-channel elimination" in report_md and "## Size, speed and accuracy" in report_md
    assert f"{report['shrink']['macs']['ratio']:.2f}x fewer" in report_md


def test_no_shrink_exports_every_channel(model, dataset, tmp_path):
    cfg = config_lib.ExportConfig(shrink=False, latency_runs=3, latency_rounds=1, latency_threads=(1,),
                                  eval_batch_size=128)
    report = api.export_stripped(model, dataset, tmp_path / "plain", cfg)
    assert report["shrink"] == {"enabled": False}
    assert report["parameters"] == counting.count_parameters(model)
    assert report["macs"] == macs.count_macs(model)
    assert [(r["model"], r["file"]) for r in report["comparison"]["rows"]] == [
        ("unshrunk", "model_float.tflite"), ("unshrunk", "model_float_dense.tflite")]
    assert report["zero_pattern"]["saved_model"]["identical_masks"] is True
    card = (tmp_path / "plain" / "model_card.md").read_text()
    assert "Dead channels were not removed (`--no-shrink`)" in card
    assert config_lib.ExportConfig.load(tmp_path / "plain" / "export_config.json").shrink is False


def test_export_config_checks_the_new_fields():
    with pytest.raises(ValueError) as info:
        config_lib.ExportConfig(latency_threads=(1, 1))
    assert str(info.value) == (
        "`latency_threads` must be distinct positive thread counts. Received: latency_threads=[1, 1]")
    with pytest.raises(ValueError) as info:
        config_lib.ExportConfig(latency_rounds=0)
    assert str(info.value) == "`latency_rounds` must be positive. Received: latency_rounds=0"
    with pytest.raises(ValueError) as info:
        api.export("unused", "unused-out", shrink="no")
    assert str(info.value) == "`shrink` must be a bool or None. Received: shrink='no'"


def test_sparse_to_dense_expands_like_litert_densify(exported):
    # Independent reference: LiteRT's own DENSIFY kernel, on the sparse float file.
    from ai_edge_litert.interpreter import Interpreter

    out_dir, _ = exported
    path = str(out_dir / "model_float.tflite")
    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    encoded = [c for c in tflite.tflite_weights(path) if c.sparse]
    assert encoded
    for constant in encoded:
        detail = details[constant.index]
        dense = tflite.sparse_to_dense(interpreter.get_tensor(constant.index), detail["sparsity_parameters"],
                                       constant.shape)
        np.testing.assert_array_equal(dense, constant.raw)


def test_a_sparse_int8_file_that_lost_weights_is_not_shipped(exported):
    # The shrunk classifier reads 15 features: the converter's 1x16 block-sparse
    # int8 encoding of it loads with XNNPACK but drops weights.
    _, report = exported
    attempts = report["int8"]["attempts"]["sparse"]
    assert attempts["loads_with_xnnpack"] is True and attempts["matches_dense"] is False
    assert report["int8"]["encoding"] == "dense"
    assert report["int8"]["reason"].startswith("the sparse int8 file computes other logits than the dense one")
