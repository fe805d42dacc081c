"""`tfvnas run` end to end (smoke size), `tfvnas train` / `tfvnas export` on its output, and bad input."""

import json
import os
import shutil

import keras
import numpy as np
import pytest

from tests.conftest import summary_events
from tfvnas import data as data_lib
from tfvnas import pipeline
from tfvnas.cli import main
from tfvnas.exporting import load_trained
from tfvnas.loops.training import ARTEFACTS as TRAIN_ARTEFACTS
from tfvnas.models import genotype as genotype_lib
from tfvnas.models import zoo

pytestmark = pytest.mark.slow  # end-to-end runs

SEARCH_FILES = {"genotype.json", "genotype_threshold.json", "search_config.json", "search_history.json", "checkpoints"}
TRAIN_FILES = set(TRAIN_ARTEFACTS) | {"checkpoints"}
EXPORT_FILES = {
    "saved_model", "model_float.tflite", "model_float_dense.tflite", "report.json", "report.md", "model_card.md",
    "export_config.json",
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "smoke"
    code = main([
        # int8 and QAT: tests/exporting/test_export.py; the flags' way here: test_run_passes_the_export_flags.
        "run", "--preset", "smoke", "--out", str(out), "--quiet",
        "--tensorboard", str(out.parent / "tb"),
    ])
    assert code == 0
    return out


def _read(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def test_run_writes_every_artefact(run_dir):
    assert sorted(os.listdir(run_dir)) == ["export", "search", "train"]
    assert set(os.listdir(run_dir / "search")) == SEARCH_FILES
    assert set(os.listdir(run_dir / "train")) == TRAIN_FILES
    assert EXPORT_FILES <= set(os.listdir(run_dir / "export"))
    # The trained cell is the searched one.
    searched = genotype_lib.Genotype.load(run_dir / "search" / "genotype.json")
    assert genotype_lib.Genotype.load(run_dir / "train" / "genotype.json") == searched


def test_run_report_has_sparsity_sizes_parity_and_latency(run_dir):
    report = _read(run_dir / "export" / "report.json")
    history = _read(run_dir / "train" / "train_history.json")
    assert report["model"]["genotype_hash"] == history["genotype_hash"]
    assert report["model"]["test_accuracy"] == history["test_accuracy"]
    assert report["model"]["train_dir"] == os.path.join("..", "train")  # relative: the pair can move
    params = report["parameters"]
    assert 0 < params["nonzero"] <= params["dense"]
    assert params["kernel_nonzero"] < params["kernel_dense"]
    text = json.dumps(report)
    for key in ("latency", "xnnpack", "gzip", "top1_agreement"):
        assert key in text, key


def test_trained_model_reloads_with_identical_outputs(run_dir):
    network, history = load_trained(run_dir / "train")
    again = keras.models.load_model(run_dir / "train" / "model.keras")
    x = data_lib.load("mnist-5k").x_test[:8].astype("float32")
    np.testing.assert_array_equal(network(x).numpy(), again(x).numpy())
    assert history["dataset"] == {
        "name": "mnist-5k", "image_shape": [28, 28, 1], "dtype": "uint8",
        "input_range": [0.0, 255.0], "num_classes": 10,
    }
    assert 0.0 <= history["test_accuracy"] <= 1.0
    layers = history["layer_sparsity"]
    assert sum(l["dense"] for l in layers) == history["parameters"]["kernel_dense"]
    assert sum(l["nonzero"] for l in layers) == history["parameters"]["kernel_nonzero"]
    record = history["epochs"][-1]
    for key in ("epoch", "step", "beta", "lr", "train_loss", "train_accuracy", "val_loss",
                "val_accuracy", "kl_network_weights", "weight_sparsity", "time_s"):
        assert key in record, key


def test_run_refuses_a_used_folder_and_resumes_a_finished_one(run_dir, capsys):
    assert main(["run", "--preset", "smoke", "--out", str(run_dir), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"tfvnas: error: The output folder {str(run_dir)!r} already holds files. Pass --resume "
        "(resume=True) to continue that run, --overwrite (overwrite=True) to replace it, or choose another --out.\n"
    )
    before = _read(run_dir / "export" / "report.json")
    assert main(["run", "--preset", "smoke", "--out", str(run_dir), "--resume"]) == 0
    out = capsys.readouterr().out
    for step in ("search", "train", "export"):
        assert f"== {step}: already finished in" in out
    assert _read(run_dir / "export" / "report.json") == before


def test_run_passes_the_export_flags(run_dir, tmp_path, monkeypatch):
    from tfvnas import exporting

    calls = []

    def export(model_dir, out_dir, **kwargs):
        calls.append(kwargs)
        return {}

    monkeypatch.setattr(exporting, "export", export)
    out = tmp_path / "run"
    for step in ("search", "train"):  # finished steps: `--resume` goes on with the export
        shutil.copytree(run_dir / step, out / step)
    assert main(["run", "--preset", "smoke", "--out", str(out), "--resume", "--int8", "--qat", "--no-shrink",
                 "--quiet"]) == 0
    assert len(calls) == 1
    assert {k: calls[0][k] for k in ("int8", "qat", "shrink")} == {"int8": True, "qat": True, "shrink": False}


def test_default_run_folder():
    assert pipeline.default_out_dir("mnist-5k", "quick") == os.path.join("saved_models", "mnist-5k-quick")
    assert pipeline.default_out_dir("/data/my set.npz", "smoke") == os.path.join("saved_models", "my_set-smoke")
    assert pipeline.default_out_dir("tfrecord:/data/imagenet/{split}-*.tfrecord", "quick") == os.path.join(
        "saved_models", "imagenet-quick")
    assert pipeline.default_out_dir("tfds:cifar10", "quick") == os.path.join("saved_models", "cifar10-quick")


def test_export_command_refuses_existing_folder(run_dir, capsys):
    assert main(["export", "--model", str(run_dir / "train"), "--out", str(run_dir / "export")]) == 2
    n = len(os.listdir(run_dir / "export"))
    assert capsys.readouterr().err == (
        "tfvnas: error: `out_dir` must not exist or be empty; pass overwrite=True (--overwrite) to "
        f"replace it. Received: out_dir={str(run_dir / 'export')!r}, which holds {n} entries\n"
    )


def test_export_rejects_a_folder_that_is_not_a_model(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hi")
    assert main(["export", "--model", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == (
        "tfvnas: error: `model` must be the output folder of `tfvnas train` (holding model.keras and "
        f"train_history.json). Received: {str(tmp_path)!r} (['notes.txt'])\n"
    )
    assert not (tmp_path / "x").exists()


def test_export_rejects_a_corrupt_model(tmp_path, capsys):
    (tmp_path / "model.keras").write_bytes(b"not a zip")
    (tmp_path / "train_history.json").write_text("{}")
    assert main(["export", "--model", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"tfvnas: error: The trained model {str(tmp_path / 'model.keras')!r} does not load (damaged or truncated?): "
    ) and err.count("\n") == 1


def test_export_rejects_data_of_another_shape(run_dir, tmp_path, capsys):
    rng = np.random.default_rng(0)
    path = tmp_path / "small.npz"
    np.savez(
        path,
        x_train=rng.integers(0, 255, (40, 8, 8, 1), dtype=np.uint8), y_train=rng.integers(0, 10, 40),
        x_test=rng.integers(0, 255, (20, 8, 8, 1), dtype=np.uint8), y_test=rng.integers(0, 10, 20),
    )
    out = tmp_path / "export"
    assert main(["export", "--model", str(run_dir / "train"), "--out", str(out), "--dataset", str(path)]) == 2
    assert capsys.readouterr().err == (
        "tfvnas: error: The model takes images of shape (28, 28, 1) with 10 classes. "
        "Received: dataset 'small' with images of shape (8, 8, 1) and 10 classes.\n"
    )
    assert not out.exists()


def test_train_rejects_unknown_genotype_name(tmp_path, capsys):
    assert main(["train", "--genotype", "nasnet_z", "--out", str(tmp_path / "t"), "--preset", "smoke"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tfvnas: error: ") and "darts_v2" in err and "nasnet_z" in err
    assert not (tmp_path / "t").exists()


def test_train_rejects_genotype_with_unknown_op(tmp_path, capsys):
    g = zoo.load_genotype("darts_v2").to_dict()
    g["normal"][0][0] = ["conv_9x9", 0]
    path = tmp_path / "g.json"
    path.write_text(json.dumps(g))
    assert main(["train", "--genotype", str(path), "--out", str(tmp_path / "t"), "--preset", "smoke"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tfvnas: error: ") and "conv_9x9" in err
    assert not (tmp_path / "t").exists()


def test_train_rejects_missing_dataset(tmp_path, capsys):
    missing = tmp_path / "nope.npz"
    assert main(["train", "--genotype", "darts_v2", "--dataset", str(missing), "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tfvnas: error: ") and "nope.npz" in err


def test_run_writes_tensorboard_for_search_and_training(run_dir):
    train = _read(run_dir / "train" / "train_history.json")["epochs"]
    events = summary_events(run_dir.parent / "tb" / "train")
    for tag in ("train_loss", "val_accuracy", "lr", "kl_network_weights", "weight_sparsity"):
        assert [s for s, _, _ in events[tag]] == [r["epoch"] for r in train], tag
    np.testing.assert_allclose(float(events["val_accuracy"][-1][2]), train[-1]["val_accuracy"], rtol=1e-6)
    search = summary_events(run_dir.parent / "tb" / "search")
    assert {"val_accuracy", "log_alpha/normal", "cell/reduce"} <= set(search)
