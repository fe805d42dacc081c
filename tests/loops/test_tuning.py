"""keras-tuner studies of the training recipe and of the search, CI-sized.

Every trial is a one-cell, four-channel network on 128 training images for
one epoch (a few seconds, most of it tracing the step).
"""

import json
import os

import keras_tuner
import pytest

from tfvnas import data as data_lib
from tfvnas.cli import main
from tfvnas.config import SearchConfig, TrainConfig
from tfvnas.layers import variational
from tfvnas.loops import loop as loop_lib
from tfvnas.loops.training import Trainer
from tfvnas.loops.tuning import (
    DEFAULT_TRAIN_SPACE,
    TrainHyperModel,
    normalise_space,
    tune,
)
from tfvnas.models import zoo

pytestmark = pytest.mark.slow  # end-to-end runs

TINY_TRAIN = dict(layers=1, channels=4, epochs=1, limit=128, batch_size=32)
TINY_SEARCH = dict(layers=1, channels=4, nodes=1, epochs=1, limit=128, batch_size=32, optimization="joint")


@pytest.fixture(scope="module")
def mnist():
    return data_lib.load("mnist-5k")


@pytest.fixture
def trainers(monkeypatch):
    """Counts the `Trainer`s built (one per trial run)."""
    built = []
    init = Trainer.__init__

    def counting_init(self, *args, **kwargs):
        built.append(self)
        init(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "__init__", counting_init)
    return built


def _read(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _study(out, mnist, max_trials, **kwargs):
    kwargs.setdefault("config", TINY_TRAIN)
    return tune("darts_v2", mnist, max_trials=max_trials, out_dir=str(out), preset="smoke", verbose=0, **kwargs)


# -- search spaces and the hypermodel (no training) --------------------------


def test_build_gives_the_config_of_the_hyperparameters(mnist):
    base = TrainConfig(**TINY_TRAIN)
    model = TrainHyperModel("darts_v2", mnist, base)
    hp = keras_tuner.HyperParameters()
    cfg = model.build(hp)
    assert set(hp.values) == set(DEFAULT_TRAIN_SPACE)
    assert {p.name: p.sampling for p in hp.space}["lr"] == "log"
    # An empty HyperParameters gives every range's lower bound.
    assert (cfg.lr, cfg.weight_decay, cfg.drop_path, cfg.kl_weight, cfg.threshold) == (0.005, 1e-5, 0.0, 0.1, 2.0)
    hp.values.update(lr=0.05, threshold=3.5)
    assert (model.build(hp).lr, model.build(hp).threshold) == (0.05, 3.5)


def test_search_space_and_option_errors(tmp_path, mnist):
    base = TrainConfig(**TINY_TRAIN)
    with pytest.raises(ValueError) as e:
        normalise_space({"learning_rate": (0.01, 0.1)}, base)
    assert str(e.value).startswith("Unknown TrainConfig field 'learning_rate' in `search_space`. Known fields: ")
    with pytest.raises(ValueError) as e:
        normalise_space({"lr": (0.0, 0.1, "log")}, base)
    assert str(e.value) == (
        "A range in `search_space` needs numbers low < high (low > 0 for 'log'). Received: lr=(0.0, 0.1, 'log')"
    )
    with pytest.raises(ValueError) as e:
        normalise_space({"drop_path": (0.0, 1.0)}, base)
    assert str(e.value) == "`drop_path` must be below 1. Received: drop_path=1.0"
    assert normalise_space({"arch_lr": [0.01, 0.1], "seed": 3}, SearchConfig()) == {
        "arch_lr": {"type": "choice", "values": [0.01, 0.1]},
        "seed": {"type": "fixed", "value": 3},
    }
    with pytest.raises(ValueError) as e:
        _study(tmp_path / "o", mnist, 2, tuner_options={"objective": "val_loss"})
    assert str(e.value) == (
        "`tuner_options` cannot set objective (tfvnas sets them). Received: tuner_options={'objective': 'val_loss'}"
    )
    assert os.listdir(tmp_path / "o") == []


# -- studies -----------------------------------------------------------------


def test_study_runs_then_resumes_with_one_more_trial(tmp_path, mnist, trainers):
    out = tmp_path / "study"
    first = _study(out, mnist, 2)
    assert len(trainers) == 2 and first.new_trials == 2
    trials = _read(out / "trials.json")["trials"]
    assert [t["trial_id"] for t in trials] == ["0", "1"]
    assert [t["status"] for t in trials] == ["COMPLETED", "COMPLETED"]
    for t in trials:
        assert 0.0 <= t["val_accuracy"] <= 1.0
        assert isinstance(t["nonzero_params"], int) and 0 < t["nonzero_params"] <= t["dense_params"]
        assert set(t["hyperparameters"]) == set(DEFAULT_TRAIN_SPACE)
        assert 0.005 <= t["hyperparameters"]["lr"] <= 0.1
    assert trials[0]["hyperparameters"] != trials[1]["hyperparameters"]

    best = _read(out / "best.json")
    winner = max(trials, key=lambda t: t["val_accuracy"])
    assert best["trial_id"] == winner["trial_id"]
    assert best["hyperparameters"] == winner["hyperparameters"]
    assert best["metrics"]["nonzero_params"] == winner["nonzero_params"]
    # best_config.json is a TrainConfig file for `tfvnas train --config`.
    from tfvnas import config as config_lib

    cfg = config_lib.settle(config_lib.TrainConfig, preset="smoke", config=str(out / "best_config.json"))
    assert cfg == config_lib.settle(config_lib.TrainConfig, preset="smoke", config=TINY_TRAIN).replace(
        **winner["hyperparameters"])
    assert cfg.to_dict() == best["config"] and cfg == first.best_config

    # Resume: keras-tuner's state keeps the first two trials; one more runs.
    trial_files = {i: (out / "study" / f"trial_{i}" / "trial.json").read_text() for i in ("0", "1")}
    second = _study(out, mnist, 3)
    assert len(trainers) == 3 and second.new_trials == 1
    trials_after = _read(out / "trials.json")["trials"]
    assert [t["trial_id"] for t in trials_after] == ["0", "1", "2"]
    assert trials_after[:2] == trials
    assert trials_after[2]["status"] == "COMPLETED"
    assert {i: (out / "study" / f"trial_{i}" / "trial.json").read_text() for i in ("0", "1")} == trial_files
    assert _read(out / "study" / "oracle.json")["end_order"] == ["0", "1", "2"]

    # Nothing left to run at the same max_trials; other settings are refused.
    assert _study(out, mnist, 3).new_trials == 0 and len(trainers) == 3
    with pytest.raises(ValueError) as e:
        _study(out, mnist, 4, tuner="bayesian")
    assert str(e.value) == (
        f"The study in {str(out)!r} was started with a different tuner. Resume it with the same settings, "
        "or pass overwrite=True (--overwrite) to start a new study there."
    )
    with pytest.raises(ValueError) as e:
        _study(out, mnist, 4, epochs=2)
    assert "different base config fields epochs." in str(e.value)


@pytest.mark.parametrize("tuner", ["bayesian", "hyperband"])
def test_bayesian_and_hyperband(tmp_path, mnist, tuner):
    out = tmp_path / tuner
    if tuner == "bayesian":
        pytest.importorskip("sklearn", reason="BayesianOptimization needs keras-tuner[bayesian] (scikit-learn)")
        # One random point, then the Gaussian process proposes the second trial.
        result = _study(out, mnist, 2, tuner="bayesian", tuner_options={"num_initial_points": 1})
        assert type(result.tuner.oracle).__name__ == "BayesianOptimizationOracle"
    else:
        # Base epochs 3 is Hyperband's max_epochs: its first bracket trains 3 trials for 1 epoch
        # (max_trials stops it after the first).
        result = _study(out, mnist, 1, tuner="hyperband", config={**TINY_TRAIN, "epochs": 3})
        assert type(result.tuner.oracle).__name__ == "HyperbandOracle"
    trials = _read(out / "trials.json")["trials"]
    assert [t["status"] for t in trials] == ["COMPLETED"] * (2 if tuner == "bayesian" else 1)
    if tuner == "bayesian":
        assert trials[0]["hyperparameters"] != trials[1]["hyperparameters"]
    else:
        (trial,) = trials
        assert trial["hyperband"] == {"epochs": 1, "initial_epoch": 0, "bracket": 1, "round": 0}
        assert trial["epochs"] == 1
        assert TrainConfig.load(out / "study" / "trial_0" / "train_config.json").epochs == 1
        assert result.best_config.epochs == 1


def test_nan_trial_is_failed_and_the_study_goes_on(tmp_path, mnist, trainers, monkeypatch):
    elbo_loss = variational.elbo_loss

    def nan_in_first_trial(*args, **kwargs):
        loss, ce, kl = elbo_loss(*args, **kwargs)
        return (loss * float("nan") if len(trainers) == 1 else loss), ce, kl

    monkeypatch.setattr(variational, "elbo_loss", nan_in_first_trial)
    out = tmp_path / "nan"
    result = _study(out, mnist, 2)
    trials = _read(out / "trials.json")["trials"]
    assert [t["status"] for t in trials] == ["FAILED", "COMPLETED"]
    assert trials[0]["val_accuracy"] is None and "nonzero_params" not in trials[0]
    assert trials[0]["error"].startswith("FailedTrialError: The training loss became nan at epoch 1, step 1 ")
    assert _read(out / "best.json")["trial_id"] == "1" == result.best["trial_id"]


def test_three_failed_trials_in_a_row_stop_the_study(tmp_path, mnist, monkeypatch):
    def diverge(self, cfg, trial_dir, verbose):
        raise FloatingPointError(f"The training loss became nan (lr={cfg.lr:.3f}).")

    monkeypatch.setattr(TrainHyperModel, "_run", diverge)
    out = tmp_path / "diverging"
    with pytest.raises(RuntimeError) as e:
        _study(out, mnist, 5)
    trials = _read(out / "trials.json")["trials"]
    assert [t["status"] for t in trials] == ["FAILED"] * 3
    lr = trials[2]["hyperparameters"]["lr"]
    assert str(e.value) == (
        "The study stopped: 3 trials in a row failed (keras-tuner's limit). The last one: "
        f"FailedTrialError: The training loss became nan (lr={lr:.3f}). "
        f"See {out}/trials.json."
    )
    assert _read(out / "best.json") == {"trial_id": None, "reason": "no trial has completed"}


def test_interrupted_trial_continues_from_its_checkpoint(tmp_path, mnist, trainers, monkeypatch):
    begin_epoch = Trainer.begin_epoch
    epochs_begun = []

    def stop_in_second_epoch(self, epoch):
        epochs_begun.append((len(trainers), epoch))
        if len(trainers) == 1 and epoch == 1:
            raise loop_lib.Interrupted("Stopped by SIGTERM at epoch 2, step 1.")
        begin_epoch(self, epoch)

    monkeypatch.setattr(Trainer, "begin_epoch", stop_in_second_epoch)
    out = tmp_path / "stopped"
    with pytest.raises(loop_lib.Interrupted) as e:
        _study(out, mnist, 1, config={**TINY_TRAIN, "epochs": 2})
    assert str(e.value) == (
        "Stopped by SIGTERM at epoch 2, step 1. The study stopped during trial 0: run the same tune call "
        "(or command, without --overwrite) again to resume it; the trial continues from its checkpoint."
    )
    first_hp = _read(out / "study" / "trial_0" / "trial.json")["hyperparameters"]["values"]
    _study(out, mnist, 1, config={**TINY_TRAIN, "epochs": 2})
    # The second run restored the checkpoint written after epoch 1 and ran only epoch 2.
    assert epochs_begun == [(1, 0), (1, 1), (2, 1)]
    trials = _read(out / "trials.json")["trials"]
    assert len(trials) == 1 and trials[0]["status"] == "COMPLETED" and trials[0]["epochs"] == 2
    assert trials[0]["hyperparameters"] == first_hp
    assert not (out / "study" / "trial_0" / "checkpoints").exists()


def test_search_mode(tmp_path, mnist):
    out = tmp_path / "search"
    result = tune(
        dataset=mnist, mode="search", max_trials=1, out_dir=str(out), preset="smoke", config=TINY_SEARCH, verbose=0
    )
    (trial,) = _read(out / "trials.json")["trials"]
    assert trial["status"] == "COMPLETED" and 0.0 <= trial["val_accuracy"] <= 1.0
    assert set(trial["hyperparameters"]) == {"kl_warmup", "arch_lr", "kl_weight", "threshold"}
    assert trial["total_ops"] == 2 * len(SearchConfig().op_names)  # one node: two edges
    assert trial["active_ops"] == trial["active_ops_normal"] + trial["active_ops_reduce"] <= 2 * trial["total_ops"]
    best = _read(out / "best.json")
    assert best["config_class"] == "SearchConfig"
    assert SearchConfig.load(out / "best_config.json") == result.best_config
    # The trial folder is a search output folder.
    assert zoo.load_genotype(best["trial_dir"]).to_dict() == best["genotype"]


def test_a_study_on_a_tf_data_dataset(tmp_path, mnist):
    import tensorflow as tf  # noqa: PLC0415

    streamed = {split: tf.data.Dataset.from_tensor_slices((getattr(mnist, f"x_{split}")[:160],
                                                            getattr(mnist, f"y_{split}")[:160]))
                for split in ("train", "val", "test")}
    out = tmp_path / "streamed"
    _study(out, streamed, 1)
    (trial,) = _read(out / "trials.json")["trials"]
    assert trial["status"] == "COMPLETED" and 0.0 <= trial["val_accuracy"] <= 1.0
    assert _read(out / "study.json")["dataset"] == "tf.data"


# -- command line ------------------------------------------------------------


def test_cli_tune(tmp_path, capsys):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_TRAIN))
    out = tmp_path / "cli"
    argv = ["tune", "--genotype", "darts_v2", "--max-trials", "1", "--out", str(out), "--preset", "smoke",
            "--config", str(config), "--quiet"]
    assert main(argv) == 0
    (trial,) = _read(out / "trials.json")["trials"]
    assert trial["status"] == "COMPLETED" and trial["nonzero_params"] > 0
    assert os.path.exists(out / "best_config.json") and capsys.readouterr().err == ""


def test_cli_tune_train_needs_a_genotype(tmp_path, capsys):
    code = main(["tune", "--out", str(tmp_path / "x"), "--max-trials", "2"])
    assert (code, capsys.readouterr().err) == (
        2,
        "tfvnas: error: `genotype` is required with mode='train' (the cell whose training is tuned). "
        "Received: genotype=None\n",
    )
    assert not (tmp_path / "x").exists()
