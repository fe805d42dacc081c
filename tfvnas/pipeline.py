"""`tfvnas run`: search, train and export in one go.

Each step writes into its own sub-folder of `out_dir` (`search/`, `train/`,
`export/`) and reads only the previous step's artefacts, exactly as the
separate commands do. With `resume=True` a finished step is skipped (its
last artefact is present), an interrupted one continues from its latest
checkpoint, and the rest run as usual.
"""

import contextlib
import dataclasses
import os
import re
import shutil

from tfvnas import config as config_lib
from tfvnas import runs
from tfvnas.loops import distribute
from tfvnas.loops import loop as loop_lib
from tfvnas.models import genotype as genotype_lib

DEFAULT_ROOT = "saved_models"


@dataclasses.dataclass
class RunResult:
    """Where each step's artefacts are, and the export report."""

    out_dir: str
    search_dir: str
    train_dir: str
    export_dir: str
    genotype: genotype_lib.Genotype
    report: dict

    def summary(self):
        model = self.report.get("model", {})
        lines = [
            f"tfvnas run: {self.out_dir}",
            f"  search   {self.search_dir}  (genotype {self.genotype.hash()})",
            f"  train    {self.train_dir}"
            + (f"  (test accuracy {model['test_accuracy']:.4f})" if "test_accuracy" in model else ""),
            f"  export   {self.export_dir}  (report.md, model_card.md)",
        ]
        return "\n".join(lines)


def default_out_dir(dataset, preset):
    """`saved_models/<dataset>-<preset>`, the dataset name made file-safe."""
    if isinstance(dataset, str) and dataset.startswith("tfds:"):
        name = dataset[len("tfds:"):]
    elif isinstance(dataset, str) and dataset.startswith("tfrecord:"):  # the files' folder
        name = os.path.basename(os.path.dirname(os.path.normpath(dataset[len("tfrecord:"):])))
    elif isinstance(dataset, (str, os.PathLike)):
        name = os.path.basename(os.path.normpath(os.fspath(dataset)))
    else:  # a dataset object (its name), or a tf.data.Dataset
        name = getattr(dataset, "name", None)
        name = name if isinstance(name, str) else "data"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.splitext(name)[0]) or "data"
    return os.path.join(DEFAULT_ROOT, f"{name}-{preset}")


def run(
    dataset="mnist-5k",
    *,
    preset="quick",
    out_dir=None,
    search_config=None,
    train_config=None,
    epochs=None,
    train_epochs=None,
    seed=None,
    int8=False,
    qat=False,
    shrink=None,
    method=None,
    strategy="auto",
    resume=False,
    overwrite=False,
    checkpoint_every=0,
    deterministic=False,
    tensorboard_dir=None,
    worker_timeout=None,
    collective_timeout=None,
    verbose=1,
):
    """Searches a cell, trains it as a sparse network and exports it.

    Args:
        dataset: a dataset name, a path (.npz or image directory), a
            streamed source or a dataset object (see `tfvnas.data.load`).
        preset: 'smoke', 'quick' or 'paper', for both the search and the
            training.
        out_dir: output folder (default `saved_models/<dataset>-<preset>`);
            it must not exist or be empty, unless `resume` or `overwrite`.
            The run holds it (`tfvnas.runs.RunLock`): a second run there is
            refused.
        search_config, train_config: a config object, dict or JSON/YAML
            path overriding the presets' fields.
        epochs: overrides the search epochs; `train_epochs` the training's.
        seed: overrides both seeds.
        int8, qat: also write the int8 and the QAT int8 .tflite.
        shrink: None keeps the export default (dead channels removed);
            False exports every channel.
        method: the search method ('vinnas' or 'darts'; default the config's).
        strategy: a `tf.distribute.Strategy` or a name; shared by both loops.
        resume: skip finished steps and continue an interrupted one.
        overwrite: delete the `search/`, `train/` and `export/` folders a
            run left in `out_dir` first.
        checkpoint_every: also checkpoint every this many steps.
        deterministic: seeds and op determinism.
        worker_timeout, collective_timeout: how soon a multi-worker run
            notices a lost worker (`tfvnas.loops.distribute.make_strategy`).
        tensorboard_dir: TensorBoard folder (`search/` and `train/` runs in it).
        verbose: 0 silent, 1 progress and summaries.

    Returns:
        A `RunResult`.
    """
    from tfvnas.exporting import export as export_model
    from tfvnas.exporting import read_report
    from tfvnas.loops.searching import search as run_search
    from tfvnas.loops.training import train as run_train

    out_dir = _out_folder(dataset, preset, out_dir, resume, overwrite)
    # The search's configuration settles the data's splits (its seed), as `tfvnas search` with the
    # same configuration would; the training then sees the same splits.
    strategy, _, dataset = loop_lib.open_run(config_lib.SearchConfig, dataset, preset=preset, config=search_config,
                                             strategy=strategy, epochs=epochs, seed=seed, method=method,
                                             worker_timeout=worker_timeout, collective_timeout=collective_timeout)
    with _hold(out_dir, distribute.is_chief(strategy)):
        steps = _Steps(out_dir, resume, verbose)
        if overwrite:
            for folder in steps.dirs.values():
                shutil.rmtree(folder, ignore_errors=True)
        common = dict(strategy=strategy, checkpoint_every=checkpoint_every, deterministic=deterministic,
                      verbose=verbose)
        if steps.start("search"):
            run_search(dataset, preset=preset, config=search_config, out_dir=steps.dirs["search"], epochs=epochs,
                       seed=seed, method=method, resume=steps.interrupted("search"),
                       tensorboard_dir=steps.board(tensorboard_dir, "search"), **common)
        genotype = genotype_lib.Genotype.load(os.path.join(steps.dirs["search"], "genotype.json"))
        if steps.start("train"):
            run_train(genotype, dataset, preset=preset, config=train_config, out_dir=steps.dirs["train"],
                      epochs=train_epochs, seed=seed, resume=steps.interrupted("train"),
                      tensorboard_dir=steps.board(tensorboard_dir, "train"), **common)
        if steps.start("export"):
            report = export_model(steps.dirs["train"], steps.dirs["export"], dataset=dataset, int8=int8, qat=qat,
                                  shrink=shrink, overwrite=True, verbose=verbose)
        else:
            report = read_report(steps.dirs["export"])
        result = RunResult(out_dir, steps.dirs["search"], steps.dirs["train"], steps.dirs["export"], genotype, report)
        if verbose:
            print(result.summary())
        return result


def _hold(out_dir, chief):
    return runs.RunLock(out_dir, "tfvnas run") if chief else contextlib.nullcontext()


def _out_folder(dataset, preset, out_dir, resume, overwrite):
    """The run's folder (default `default_out_dir`), refused when it holds files and the run is not resumed or
    overwritten."""
    runs.check_resume_overwrite(resume, overwrite)
    if out_dir is not None and not isinstance(out_dir, (str, os.PathLike)):
        raise ValueError(f"`out_dir` must be a path or None. Received: out_dir={out_dir!r}")
    out_dir = os.fspath(default_out_dir(dataset, preset) if out_dir is None else out_dir)
    held = set(os.listdir(out_dir)) - {runs.LOCK_FILE} if os.path.isdir(out_dir) else set()
    if not (resume or overwrite) and held:
        raise ValueError(
            f"The output folder {out_dir!r} already holds files. Pass --resume (resume=True) to "
            "continue that run, --overwrite (overwrite=True) to replace it, or choose another --out."
        )
    return out_dir


class _Steps:
    """The three steps' folders, and which of them a resumed run has finished or left interrupted."""

    LAST = {"search": "search_history.json", "train": "train_history.json", "export": "report.json"}

    def __init__(self, out_dir, resume, verbose):
        self.dirs = {step: os.path.join(out_dir, step) for step in self.LAST}
        self.resume, self.verbose = resume, verbose

    def status(self, step):
        if not self.resume:
            return "new"
        if os.path.isfile(os.path.join(self.dirs[step], self.LAST[step])):
            return "done"
        if step != "export" and os.path.isdir(os.path.join(self.dirs[step], runs.CHECKPOINT_SUBDIR)):
            return "interrupted"
        return "new"

    def interrupted(self, step):
        return self.status(step) == "interrupted"

    def start(self, step):
        """Whether `step` runs (it has not finished); says which."""
        done = self.status(step) == "done"
        if self.verbose:
            print(f"== {step}: already finished in {self.dirs[step]}" if done else f"== {step} -> {self.dirs[step]}")
        return not done

    @staticmethod
    def board(tensorboard_dir, step):
        return None if tensorboard_dir is None else os.path.join(os.fspath(tensorboard_dir), step)
