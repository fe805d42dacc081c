"""Hyperparameter tuning with keras-tuner: the training recipe of a cell, or the search.

Two `keras_tuner.HyperModel`s whose `build(hp)` returns a config (not a Keras
model) and whose `fit(hp, config)` runs tfvnas's own loop and returns a dict
of metrics:

- `TrainHyperModel` trains the network of one genotype (a `Trainer`) and
  tunes its recipe: learning rate, weight decay, drop-path, KL weight and the
  weight-pruning threshold.
- `SearchHyperModel` runs a search (a `Searcher`) and tunes the KL warm-up,
  the gate learning rate and the gate-pruning threshold.

The objective is `val_accuracy`, the validation accuracy after the last epoch
of a trial (the weights a run ends with: the training loop keeps no
best-epoch weights), maximised. The test split is never used. `tune()` runs
keras-tuner's own `RandomSearch`, `BayesianOptimization` or `Hyperband`
(subclassed only to hand the config to `fit`), resumes from keras-tuner's
state in `out_dir`, and writes `trials.json`, `best.json` and
`best_config.json`.

    >>> from tfvnas.loops.tuning import tune
    >>> study = tune("darts_v2", "mnist-5k", max_trials=8, out_dir="runs/tune")
    >>> study.best["val_accuracy"], study.best_config.lr

References:
    - O'Malley et al. "KerasTuner." https://github.com/keras-team/keras-tuner
    - Li, Jamieson, DeSalvo, Rostamizadeh, Talwalkar. "Hyperband: A Novel
      Bandit-Based Approach to Hyperparameter Optimization." JMLR 18 (2018).
"""

import dataclasses
import importlib.util
import json
import os
import shutil
import time
import typing

import keras_tuner

from tfvnas import checks, choices, files, runs
from tfvnas import config as config_lib
from tfvnas import data as data_lib
from tfvnas.loops import loop as loop_lib
from tfvnas.models import genotype as genotype_lib
from tfvnas.models import zoo

MODES = choices.TUNING_MODES
TUNERS = choices.TUNERS
OBJECTIVE = "val_accuracy"
PROJECT_NAME = "study"
STUDY_FILE = "study.json"
# keras-tuner keeps every metric as a float; these are counts.
COUNT_METRICS = ("nonzero_params", "dense_params", "epochs", "active_ops", "active_ops_normal",
                 "active_ops_reduce", "total_ops")

# A spec is `(low, high)` (uniform), `(low, high, "log")` (log-uniform), a
# list (a choice) or a single value (fixed). Int fields get `hp.Int`.
DEFAULT_TRAIN_SPACE = {
    "lr": (0.005, 0.1, "log"),
    "weight_decay": (1e-5, 1e-3, "log"),
    "drop_path": (0.0, 0.3),
    "kl_weight": (0.1, 2.0),
    "threshold": (2.0, 4.0),
}
# Around the `quick` search (docs/search.md has the study these ranges bracket).
DEFAULT_SEARCH_SPACE = {
    "kl_warmup": (0.0, 0.5),
    "arch_lr": (0.03, 0.5, "log"),
    "kl_weight": (1.0, 32.0, "log"),
    "threshold": (2.0, 4.0),
}


# -- search spaces ---------------------------------------------------------


def normalise_space(space, config):
    """Checks a search space against a config; returns its canonical JSON form.

    Args:
        space: `{field: spec}`; a spec is `(low, high)`, `(low, high, "log")`,
            a list of choices, or one fixed value.
        config: the base `TrainConfig` or `SearchConfig`; every field must
            be one of its fields and every bound a value it accepts.

    Returns:
        `{field: {"type": "float"|"int"|"choice"|"fixed", ...}}`.

    Raises:
        ValueError: for an unknown field, a malformed spec, or a bound the
            config rejects.
    """
    cls = type(config)
    if not isinstance(space, dict) or not space:
        raise ValueError(
            f"`search_space` must be a non-empty dict of {cls.__name__} fields to specs. "
            f"Received: search_space={space!r}"
        )
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    out = {}
    for name, spec in space.items():
        if name not in names:
            raise ValueError(
                f"Unknown {cls.__name__} field {name!r} in `search_space`. Known fields: {', '.join(sorted(names))}"
            )
        if isinstance(spec, tuple):
            if len(spec) not in (2, 3) or (len(spec) == 3 and spec[2] not in ("linear", "log")):
                raise ValueError(
                    f"A range in `search_space` must be (low, high) or (low, high, 'linear'|'log'). "
                    f"Received: {name}={spec!r}"
                )
            low, high = spec[:2]
            sampling = spec[2] if len(spec) == 3 else "linear"
            numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high))
            if not numbers or not low < high or (sampling == "log" and low <= 0):
                raise ValueError(
                    f"A range in `search_space` needs numbers low < high (low > 0 for 'log'). "
                    f"Received: {name}={spec!r}"
                )
            is_int = hints[name] is int
            if is_int and not all(isinstance(v, int) for v in (low, high)):
                raise ValueError(f"`{name}` is an int field: its range needs int bounds. Received: {name}={spec!r}")
            entry = {"type": "int" if is_int else "float", "min": low if is_int else float(low),
                     "max": high if is_int else float(high), "sampling": sampling}
            values = (entry["min"], entry["max"])
        elif isinstance(spec, list):
            if not spec:
                raise ValueError(f"A choice in `search_space` needs at least one value. Received: {name}=[]")
            entry = {"type": "choice", "values": list(spec)}
            values = spec
        else:
            entry = {"type": "fixed", "value": spec}
            values = (spec,)
        for value in values:
            config.replace(**{name: value})  # raises the config's own message
        out[name] = entry
    return out


def _register(hp, name, entry):
    kind = entry["type"]
    if kind == "float":
        return hp.Float(name, entry["min"], entry["max"], sampling=entry["sampling"])
    if kind == "int":
        return hp.Int(name, entry["min"], entry["max"], sampling=entry["sampling"])
    if kind == "choice":
        return hp.Choice(name, entry["values"])
    return hp.Fixed(name, entry["value"])


# -- hypermodels -----------------------------------------------------------


class _ConfigHyperModel(keras_tuner.HyperModel):
    """A HyperModel whose `build` gives a config and whose `fit` runs a loop."""

    config_class = None
    default_space = None

    def __init__(self, dataset, base_config, search_space=None, *, strategy=None, name=None):
        if not isinstance(base_config, self.config_class):
            raise ValueError(
                f"`base_config` must be a {self.config_class.__name__}. "
                f"Received: base_config of type {type(base_config).__name__}"
            )
        super().__init__(name=name, tunable=True)
        self.base_config = base_config
        self.space = normalise_space(self.default_space if search_space is None else search_space, base_config)
        self.dataset = data_lib.load(dataset, seed=base_config.seed)  # a dataset object is returned as it is
        self.strategy = strategy

    def build(self, hp):
        """Registers the search space on `hp`; returns the config it gives."""
        values = {name: _register(hp, name, entry) for name, entry in self.space.items()}
        return self.base_config.replace(**values)

    def config_for(self, values):
        """The config a trial's hyperparameter values give (`tuner/epochs` included)."""
        cfg = self.base_config.replace(**{k: values[k] for k in self.space if k in values})
        if "tuner/epochs" in values:
            cfg = cfg.replace(epochs=int(values["tuner/epochs"]))
        return cfg

    def fit(self, hp, model, epochs=None, initial_epoch=0, verbose=0, trial_dir=None):
        """Runs one trial.

        Args:
            hp: the trial's `HyperParameters`.
            model: the config `build(hp)` returned.
            epochs: the number of epochs (Hyperband's budget for the trial);
                None keeps the config's. Each trial is a complete run of
                that many epochs (its cosine schedule and drop-path ramp
                span them); Hyperband's `initial_epoch` is ignored, so a
                promoted trial trains again from scratch.
            initial_epoch: ignored (see `epochs`).
            verbose: 0 silent, 1 progress bar.
            trial_dir: the trial's folder: checkpoints while it runs (an
                interrupted trial continues from them), and artefacts.

        Returns:
            A dict of metrics with `val_accuracy` (after the last epoch).

        Raises:
            keras_tuner.errors.FailedTrialError: when the loss stops being
                finite (keras-tuner marks the trial FAILED and goes on).
            keras_tuner.errors.FatalValueError: for a configuration the loop
                rejects (it stops the study).
        """
        del initial_epoch
        cfg = model if epochs is None else model.replace(epochs=int(epochs))
        try:
            return self._run(cfg, trial_dir, verbose)
        except FloatingPointError as e:
            raise keras_tuner.errors.FailedTrialError(str(e)) from e
        except ValueError as e:
            raise keras_tuner.errors.FatalValueError(str(e)) from e

    def _run(self, cfg, trial_dir, verbose):
        raise NotImplementedError

    def _start(self, loop, trial_dir):
        """Restores `loop` from an interrupted run of the same trial; returns the checkpoint folder."""
        if trial_dir is None:
            return None
        checkpoint_dir = os.path.join(trial_dir, runs.CHECKPOINT_SUBDIR)
        if os.path.isdir(checkpoint_dir):
            try:
                same = runs.saved_config(trial_dir, type(loop.config), loop.kind) == loop.config
            except ValueError:
                same = False
            if same:
                loop.restore(checkpoint_dir)
            else:
                shutil.rmtree(checkpoint_dir)
        return checkpoint_dir


class TrainHyperModel(_ConfigHyperModel):
    """Tunes the training recipe of a found cell.

    Each trial trains the network of `genotype` from scratch with the
    trial's `TrainConfig` (the base config with the tuned fields replaced)
    and reports, after the last epoch: `val_accuracy` (the objective),
    `val_loss`, `best_val_accuracy` (over the epochs, for reference),
    `nonzero_params` and `dense_params` (every weight of the stripped
    network), `kernel_sparsity`, `weight_sparsity` (variational weights at
    or above the threshold), `epochs` and `seconds`.

    Args:
        genotype: a `Genotype`, a zoo name, a genotype JSON path or a
            search output folder.
        dataset: a dataset name, a path, a streamed source or a dataset
            object (see `tfvnas.data.load`).
        base_config: the `TrainConfig` whose fields the trials vary.
        search_space: `{TrainConfig field: spec}` (see `normalise_space`);
            default `DEFAULT_TRAIN_SPACE`.
        strategy: a `tf.distribute.Strategy` for every trial.
        name: the HyperModel's name.
    """

    config_class = config_lib.TrainConfig
    default_space = DEFAULT_TRAIN_SPACE

    def __init__(self, genotype, dataset, base_config, search_space=None, *, strategy=None, name=None):
        if not isinstance(genotype, genotype_lib.Genotype):
            genotype = zoo.load_genotype(genotype)
        genotype.validate()  # against the op registry
        self.genotype = genotype
        super().__init__(dataset, base_config, search_space, strategy=strategy, name=name)

    def _run(self, cfg, trial_dir, verbose):
        from tfvnas.compress import strip as strip_lib
        from tfvnas.compress.counting import count_parameters
        from tfvnas.loops.training import Trainer

        start = time.perf_counter()
        trainer = Trainer(self.genotype, cfg, self.dataset, strategy=self.strategy, verbose=verbose)
        checkpoint_dir = self._start(trainer, trial_dir)
        history = trainer.train(checkpoint_dir)
        counts = count_parameters(strip_lib.strip(trainer.model))
        last = history[-1]
        metrics = {
            "val_accuracy": last["val_accuracy"],
            "val_loss": last["val_loss"],
            "best_val_accuracy": max(r["val_accuracy"] for r in history),
            "nonzero_params": counts["nonzero"],
            "dense_params": counts["dense"],
            "kernel_sparsity": counts["kernel_sparsity"],
            "epochs": len(history),
            "seconds": round(time.perf_counter() - start, 3),
        }
        if last.get("weight_sparsity") is not None:
            metrics["weight_sparsity"] = last["weight_sparsity"]
        if trial_dir is not None:
            cfg.save(os.path.join(trial_dir, "train_config.json"))
            files.write_json(os.path.join(trial_dir, "train_history.json"), {"epochs": history})
            # Training state only: the study keeps the config, not the weights.
            shutil.rmtree(checkpoint_dir, ignore_errors=True)
        return metrics


class SearchHyperModel(_ConfigHyperModel):
    """Tunes the search: KL warm-up, gate learning rate, gate threshold.

    Each trial runs a search with the trial's `SearchConfig` and reports,
    after the last epoch: `val_accuracy` of the supernet (the objective),
    `val_loss`, `active_ops` (gates still active, both cell types),
    `active_ops_normal`, `active_ops_reduce`, `total_ops` (gates per cell
    type), `weight_sparsity` (with `weight_vd`), `epochs` and `seconds`.
    With a `trial_dir` the trial folder is a search output folder
    (genotype.json, genotype_threshold.json, search_config.json,
    search_history.json), usable as `tfvnas train --genotype`.

    Args:
        dataset: a dataset name, a path, a streamed source or a dataset
            object (see `tfvnas.data.load`).
        base_config: the `SearchConfig` whose fields the trials vary.
        search_space: `{SearchConfig field: spec}`; default
            `DEFAULT_SEARCH_SPACE`.
        strategy: a `tf.distribute.Strategy` for every trial.
        name: the HyperModel's name.
    """

    config_class = config_lib.SearchConfig
    default_space = DEFAULT_SEARCH_SPACE

    def _run(self, cfg, trial_dir, verbose):
        from tfvnas.loops.searching import Searcher

        start = time.perf_counter()
        searcher = Searcher(cfg, self.dataset, strategy=self.strategy, verbose=verbose)
        self._start(searcher, trial_dir)  # `run` continues from a restored position
        result = searcher.run(trial_dir)
        last = result.history[-1]
        metrics = {
            "val_accuracy": last["val_accuracy"],
            "val_loss": last["val_loss"],
            "active_ops": sum(last["active_ops"].values()),
            "active_ops_normal": last["active_ops"]["normal"],
            "active_ops_reduce": last["active_ops"]["reduce"],
            "total_ops": last["total_ops"],
            "epochs": len(result.history),
            "seconds": round(time.perf_counter() - start, 3),
        }
        if last.get("weight_sparsity") is not None:
            metrics["weight_sparsity"] = last["weight_sparsity"]
        if trial_dir is not None:
            shutil.rmtree(os.path.join(trial_dir, runs.CHECKPOINT_SUBDIR), ignore_errors=True)
        return metrics


# -- tuners ----------------------------------------------------------------


class _ConfigTuner(keras_tuner.Tuner):
    """`run_trial` for HyperModels whose `build` returns a config.

    keras-tuner's own `run_trial` expects a Keras model to compile and
    checkpoint; here the HyperModel's `fit` runs tfvnas's loop. After each
    trial the study's `trials.json` and `best.json` are rewritten.
    """

    def run_trial(self, trial, *args, **kwargs):
        hp = trial.hyperparameters
        config = self.hypermodel.build(hp)
        try:
            return self.hypermodel.fit(hp, config, *args, trial_dir=self.get_trial_dir(trial.trial_id), **kwargs)
        except loop_lib.Interrupted as e:
            raise loop_lib.Interrupted(
                f"{e} The study stopped during trial {trial.trial_id}: run the same tune call (or "
                "command, without --overwrite) again to resume it; the trial continues from its checkpoint."
            ) from e

    def on_search_begin(self):
        super().on_search_begin()
        # keras-tuner first writes its tuner file when a trial ends; written
        # now, a study stopped during its first trial reloads its oracle
        # (and runs that trial again) instead of starting afresh.
        self.save()

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        write_reports(self)

    def load_model(self, trial):
        raise NotImplementedError(
            "tfvnas tuning trials keep no weights: train the best configuration "
            "(best_config.json) with `tfvnas train --config`."
        )


class RandomSearch(keras_tuner.RandomSearch, _ConfigTuner):
    """keras-tuner's `RandomSearch` for a tfvnas HyperModel."""


class BayesianOptimization(keras_tuner.BayesianOptimization, _ConfigTuner):
    """keras-tuner's `BayesianOptimization` for a tfvnas HyperModel."""


class Hyperband(keras_tuner.Hyperband, _ConfigTuner):
    """keras-tuner's `Hyperband` for a tfvnas HyperModel (epochs are the budget)."""


_SET_BY_TFVNAS = ("hypermodel", "objective", "max_trials", "max_epochs", "directory", "project_name", "overwrite")


def make_tuner(
    name, hypermodel, *, max_trials, directory, project_name=PROJECT_NAME, seed=0, overwrite=False,
    tuner_options=None,
):
    """One of keras-tuner's tuners over `hypermodel`, maximising `val_accuracy`.

    Args:
        name: 'random', 'bayesian' or 'hyperband'.
        hypermodel: a `TrainHyperModel` or `SearchHyperModel`.
        max_trials: the number of trials to run in total (a resumed study
            counts its earlier trials). For Hyperband it caps the trials its
            brackets ask for; its `max_epochs` is the base config's epochs.
        directory, project_name: where keras-tuner keeps its state.
        seed: seed of the tuner's sampling.
        overwrite: start afresh instead of reloading the state.
        tuner_options: more keyword arguments of the keras-tuner tuner, for
            example `{"num_initial_points": 4}` (bayesian; keras-tuner's
            default is 3 per tuned field) or `{"factor": 2,
            "hyperband_iterations": 2}` (hyperband; default factor 3).

    Raises:
        ValueError: for an unknown tuner name, or an option tfvnas sets.
        RuntimeError: for 'bayesian' without scikit-learn.
    """
    if name not in TUNERS:
        raise ValueError(f"`tuner` must be one of {', '.join(map(repr, TUNERS))}. Received: tuner={name!r}")
    if name == "bayesian" and importlib.util.find_spec("sklearn") is None:
        raise checks.ActionableError(
            "The 'bayesian' tuner needs scikit-learn (keras-tuner's Gaussian process): "
            "pip install 'keras-tuner[bayesian]'. Received: tuner='bayesian'"
        )
    options = dict(tuner_options or {})
    taken = sorted(set(options) & set(_SET_BY_TFVNAS))
    if taken:
        raise ValueError(
            f"`tuner_options` cannot set {', '.join(taken)} (tfvnas sets them). Received: tuner_options={options!r}"
        )
    common = dict(
        hypermodel=hypermodel,
        objective=keras_tuner.Objective(OBJECTIVE, "max"),
        # keras-tuner treats seed 0 as "no seed".
        seed=seed + 1,
        directory=directory,
        project_name=project_name,
        overwrite=overwrite,
    )
    common.update(options)
    if name == "random":
        return RandomSearch(max_trials=max_trials, **common)
    if name == "bayesian":
        return BayesianOptimization(max_trials=max_trials, **common)
    tuner = Hyperband(max_epochs=hypermodel.base_config.epochs, **{"factor": 3, **common})
    # HyperbandOracle takes no max_trials; the base Oracle stops at it all the same.
    tuner.oracle.max_trials = max_trials
    return tuner


# -- reports ---------------------------------------------------------------


def trial_records(tuner):
    """One dict per trial, in start order: id, status, hyperparameters, metrics, error."""
    oracle = tuner.oracle
    order = list(oracle.start_order) + [t for t in oracle.trials if t not in oracle.start_order]
    records = []
    for trial_id in order:
        trial = oracle.trials[trial_id]
        values = dict(trial.hyperparameters.values)
        record = {
            "trial_id": trial_id,
            "status": trial.status,
            "hyperparameters": {k: v for k, v in values.items() if not k.startswith("tuner/")},
        }
        hyperband = {k[len("tuner/"):]: v for k, v in values.items() if k.startswith("tuner/")}
        if hyperband:
            record["hyperband"] = hyperband
        record[OBJECTIVE] = None
        for name in sorted(trial.metrics.metrics):
            value = trial.metrics.get_last_value(name)
            if value is not None:
                value = int(value) if name in COUNT_METRICS else float(value)
            record[name] = value
        if trial.status != "COMPLETED" and trial.message:
            record["error"] = _error_line(trial.message)
        records.append(record)
    return records


def _error_line(message):
    """The last line of a traceback, with the exception's module path dropped."""
    lines = [line for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return message
    name, sep, text = lines[-1].partition(": ")
    if sep and " " not in name:
        name = name.rsplit(".", 1)[-1]
    return name + sep + text


def best_record(tuner, records=None):
    """The completed trial with the highest `val_accuracy` (first started wins a tie), or None."""
    records = trial_records(tuner) if records is None else records
    done = [r for r in records if r["status"] == "COMPLETED" and r[OBJECTIVE] is not None]
    if not done:
        return None
    return max(done, key=lambda r: r[OBJECTIVE])


def write_reports(tuner):
    """Writes `trials.json`, `best.json` and `best_config.json` to the study folder.

    Returns:
        `(records, best, best_config)`; `best` and `best_config` are None
        while no trial has completed (best.json then says so and
        best_config.json is removed).
    """
    hypermodel = tuner.hypermodel
    out_dir = os.fspath(tuner.directory)
    records = trial_records(tuner)
    files.write_json(os.path.join(out_dir, "trials.json"), {"objective": OBJECTIVE, "trials": records})
    best = best_record(tuner, records)
    config_path = os.path.join(out_dir, "best_config.json")
    if best is None:
        files.write_json(os.path.join(out_dir, "best.json"), {"trial_id": None, "reason": "no trial has completed"})
        if os.path.exists(config_path):
            os.remove(config_path)
        return records, None, None
    trial = tuner.oracle.trials[best["trial_id"]]
    best_config = hypermodel.config_for(trial.hyperparameters.values)
    best_config.save(config_path)
    report = {
        "trial_id": best["trial_id"],
        "objective": f"{OBJECTIVE} (after the last epoch of the trial, maximised)",
        "hyperparameters": best["hyperparameters"],
        "metrics": {k: v for k, v in best.items() if k not in ("trial_id", "status", "hyperparameters", "hyperband")},
        "config_class": type(best_config).__name__,
        "config": best_config.to_dict(),
        "config_file": config_path,
        "trial_dir": tuner.get_trial_dir(best["trial_id"]),
    }
    if isinstance(hypermodel, TrainHyperModel):
        report["genotype_hash"] = hypermodel.genotype.hash()
        report["genotype"] = hypermodel.genotype.to_dict()
    else:
        genotype_path = os.path.join(report["trial_dir"], "genotype.json")
        if os.path.exists(genotype_path):
            report["genotype_file"] = genotype_path
            report["genotype"] = genotype_lib.Genotype.load(genotype_path).to_dict()
    files.write_json(os.path.join(out_dir, "best.json"), report)
    return records, best, best_config


# -- the study -------------------------------------------------------------


@dataclasses.dataclass
class TuneResult:
    """What a tuning study has found so far.

    Attributes:
        trials: one dict per trial (as in trials.json).
        best: the best completed trial's record, or None.
        best_config: its `TrainConfig` / `SearchConfig`, or None.
        out_dir: the study folder.
        mode: 'train' or 'search'.
        tuner: the keras-tuner tuner (its oracle holds the state).
        new_trials: how many trials this call ran.
    """

    trials: list
    best: dict
    best_config: object
    out_dir: str
    mode: str
    tuner: object = None
    new_trials: int = 0

    def summary(self):
        counts = {}
        for t in self.trials:
            counts[t["status"]] = counts.get(t["status"], 0) + 1
        status = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())) or "none"
        lines = [f"tuning ({self.mode}): {len(self.trials)} trials ({status}), {self.new_trials} run now"]
        if self.best is None:
            lines.append("  no trial has completed")
        else:
            b = self.best
            line = f"  best trial {b['trial_id']}: val_accuracy {b[OBJECTIVE]:.4f}"
            if "nonzero_params" in b:
                line += f", non-zero parameters {b['nonzero_params']:,}"
            if "active_ops" in b:
                line += f", active ops {b['active_ops']}"
            lines.append(line)
            lines.append("  " + ", ".join(f"{k}={_short(v)}" for k, v in b["hyperparameters"].items()))
            lines.append(f"  best config: {os.path.join(self.out_dir, 'best_config.json')}")
        lines.append(f"  trials: {os.path.join(self.out_dir, 'trials.json')}")
        return "\n".join(lines)


def _short(value):
    return f"{value:.4g}" if isinstance(value, float) else repr(value)


def _check_study(out_dir, study, overwrite):
    """Refuses to continue a study started with different settings."""
    path = os.path.join(out_dir, STUDY_FILE)
    if overwrite or not os.path.exists(path):
        if not overwrite and os.path.isdir(out_dir) and os.listdir(out_dir):
            raise ValueError(
                f"`out_dir` holds files but no tuning study ({STUDY_FILE}). Use a new or empty folder, "
                f"or pass overwrite=True (--overwrite). Received: out_dir={out_dir!r}"
            )
        return
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"Cannot read the study file {path!r}: {e}") from e
    requested = json.loads(json.dumps(study))
    keys = sorted(set(saved) | set(requested))
    diff = [k for k in keys if k != "keras_tuner" and saved.get(k) != requested.get(k)]
    if diff:
        details = []
        for k in diff:
            if k == "base_config":
                a, b = saved.get(k) or {}, requested.get(k) or {}
                fields = sorted(f for f in set(a) | set(b) if a.get(f) != b.get(f))
                details.append(f"base config fields {', '.join(fields)}")
            else:
                details.append(k)
        raise ValueError(
            f"The study in {out_dir!r} was started with a different {'; '.join(details)}. Resume it with "
            "the same settings, or pass overwrite=True (--overwrite) to start a new study there."
        )


def _check_tune_arguments(genotype, mode, tuner, max_trials, out_dir, strategy):
    """The arguments of `tune` that need no data: each wrong one is a Keras-style `ValueError`."""
    if mode not in MODES:
        raise ValueError(f"`mode` must be one of {', '.join(map(repr, MODES))}. Received: mode={mode!r}")
    if tuner not in TUNERS:
        raise ValueError(f"`tuner` must be one of {', '.join(map(repr, TUNERS))}. Received: tuner={tuner!r}")
    if isinstance(max_trials, bool) or not isinstance(max_trials, int) or max_trials <= 0:
        raise ValueError(f"`max_trials` must be a positive int. Received: max_trials={max_trials!r}")
    if out_dir is None:
        raise ValueError("`out_dir` is required: the study keeps its state there. Received: out_dir=None")
    if mode == "train" and genotype is None:
        raise ValueError(
            "`genotype` is required with mode='train' (the cell whose training is tuned). Received: genotype=None"
        )
    if mode == "search" and genotype is not None:
        raise ValueError(
            "`genotype` is only used with mode='train' (a search finds its own cell). "
            f"Received: genotype={genotype!r}"
        )
    if strategy == "multiworker":
        raise ValueError("`strategy` must be a single-process strategy for tuning. Received: strategy='multiworker'")


def _search(kt, out_dir, verbose):
    """Runs keras-tuner's search; a study stopped by failing trials is one line naming the last error."""
    try:
        kt.search(verbose=verbose)
    except RuntimeError as e:
        if not str(e).startswith("Number of consecutive failures"):
            raise
        records, _, _ = write_reports(kt)
        last = records[-1].get("error", "").rstrip(".") if records else ""
        # keras-tuner's message carries the whole traceback; one line is enough here.
        raise checks.ActionableError(
            f"The study stopped: {kt.oracle.max_consecutive_failed_trials} trials in a row failed "
            f"(keras-tuner's limit). The last one: {last}. See {os.path.join(out_dir, 'trials.json')}."
        ) from None


def tune(
    genotype=None,
    dataset="mnist-5k",
    *,
    mode="train",
    tuner="random",
    max_trials=10,
    out_dir="runs/tune",
    preset="quick",
    config=None,
    epochs=None,
    seed=None,
    search_space=None,
    tuner_options=None,
    overwrite=False,
    strategy=None,
    verbose=1,
):
    """Runs (or resumes) a keras-tuner study of the training or search hyperparameters.

    Args:
        genotype: mode 'train': the cell whose training recipe is tuned (a
            `Genotype`, zoo name, genotype JSON path or search output
            folder). Mode 'search': must be None.
        dataset: a dataset name, a path, a streamed source or a dataset
            object (see `tfvnas.data.load`).
        mode: 'train' (`TrainHyperModel`) or 'search' (`SearchHyperModel`).
        tuner: 'random', 'bayesian' or 'hyperband' (keras-tuner's tuners).
            Hyperband's largest budget is the base config's epochs.
        max_trials: trials in total; a resumed study counts its earlier ones.
        out_dir: the study folder: keras-tuner's state in `out_dir/study`
            (a folder per trial), study.json, trials.json, best.json and
            best_config.json.
        preset: the `TrainConfig` ('train') or `SearchConfig` ('search')
            preset the base config starts from.
        config: a config, dict or JSON/YAML file overriding the preset.
        epochs, seed: override the base config's.
        search_space: `{field: spec}` (see `normalise_space`); default
            `DEFAULT_TRAIN_SPACE` or `DEFAULT_SEARCH_SPACE`.
        tuner_options: more keyword arguments of the keras-tuner tuner
            (see `make_tuner`), e.g. `{"num_initial_points": 4}`.
        overwrite: discard the study in `out_dir` and start afresh. Without
            it, a study already in `out_dir` is resumed from keras-tuner's
            state: finished trials are kept, an interrupted trial runs
            again (from its last checkpoint), and new trials run until
            `max_trials`; its settings must be the same.
        strategy: a `tf.distribute.Strategy` or a single-process name
            ('auto', 'default', 'mirrored').
        verbose: 0 silent; 1 keras-tuner's trial tables, progress bars and
            a summary.

    Returns:
        A `TuneResult`.

    Raises:
        ValueError: for bad arguments, a config the loop rejects, or a study
            in `out_dir` started with other settings.
        RuntimeError: when three trials in a row fail (keras-tuner's limit),
            or for 'bayesian' without scikit-learn.
        tfvnas.loops.loop.Interrupted: after SIGTERM/SIGINT during a trial.
    """
    _check_tune_arguments(genotype, mode, tuner, max_trials, out_dir, strategy)
    out_dir = os.fspath(out_dir)
    config_class = config_lib.TrainConfig if mode == "train" else config_lib.SearchConfig
    strategy, cfg, dataset = loop_lib.open_run(config_class, dataset, preset=preset, config=config,
                                               strategy=strategy, epochs=epochs, seed=seed)
    if mode == "train":
        hypermodel = TrainHyperModel(genotype, dataset, cfg, search_space, strategy=strategy)
    else:
        hypermodel = SearchHyperModel(dataset, cfg, search_space, strategy=strategy)

    study = {
        "mode": mode,
        "tuner": tuner,
        "objective": OBJECTIVE,
        "dataset": hypermodel.dataset.name,
        "genotype_hash": hypermodel.genotype.hash() if mode == "train" else None,
        "base_config": cfg.to_dict(),
        "search_space": hypermodel.space,
        "tuner_options": dict(tuner_options or {}),
        "keras_tuner": keras_tuner.__version__,
    }
    _check_study(out_dir, study, overwrite)
    fresh = overwrite or not os.path.exists(os.path.join(out_dir, STUDY_FILE))
    os.makedirs(out_dir, exist_ok=True)
    try:
        kt = make_tuner(
            tuner, hypermodel, max_trials=max_trials, directory=out_dir, seed=cfg.seed, overwrite=overwrite,
            tuner_options=tuner_options,
        )
    except Exception:
        if fresh:  # leave no half-made study behind a bad option
            shutil.rmtree(os.path.join(out_dir, PROJECT_NAME), ignore_errors=True)
        raise
    files.write_json(os.path.join(out_dir, STUDY_FILE), study)
    before = len(kt.oracle.end_order)
    _search(kt, out_dir, verbose)
    records, best, best_config = write_reports(kt)
    result = TuneResult(
        trials=records,
        best=best,
        best_config=best_config,
        out_dir=out_dir,
        mode=mode,
        tuner=kt,
        new_trials=len(kt.oracle.end_order) - before,
    )
    if verbose:
        print(result.summary())
    return result
