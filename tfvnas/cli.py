"""The `tfvnas` command: a thin layer that parses arguments into one library call.

    tfvnas run                                    # search, train, export (bundled data)
    tfvnas search --dataset mnist-5k --preset quick --out runs/quick
    tfvnas search --dataset 'tfrecord:data/{split}-*.tfrecord' --out runs/big
    tfvnas train --genotype runs/quick --out runs/net
    tfvnas export --model runs/net --out runs/net-export --int8
    tfvnas show runs/quick

A user mistake prints one line, `tfvnas: error: ...`, and exits with status 2;
so does a folder another run holds. A write that fails (a full disk) exits
with 74, a lost worker of a multi-worker run with 75 (with the command that
resumes), an interrupt with 130: each with one line that names the newest
complete checkpoint.
"""

import argparse
import importlib
import inspect
import os
import shlex
import sys

from tfvnas.checks import ActionableError, WorkerLost
from tfvnas.choices import METHODS, PRESET_NAMES, STRATEGIES, TUNERS, TUNING_MODES
from tfvnas.files import WriteError

# What a user can act on; any other exception (a bug) keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, ActionableError,
               FloatingPointError)


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}")
    return value


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, received {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, received {text!r}")
    return value


def _int(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, received {text!r}") from None


DATASET_HELP = (
    "mnist-5k (bundled), mnist, fashion_mnist, cifar10, cifar100 (need the internet), "
    "a .npz file with x_train, y_train, x_test, y_test, a folder of class sub-folders (streamed), "
    "tfrecord:PATTERN (TFRecord files of tf.train.Example records with 'image': an encoded png/jpeg/bmp/gif "
    "and 'label': int64; {split} in PATTERN stands for train, val, test; streamed), "
    "or tfds:NAME (needs tensorflow-datasets; streamed) (default: mnist-5k)"
)


def _add_config_args(parser, kind, config_class):
    """The data and the configuration: options of every command that runs a loop or a study."""
    parser.add_argument("--dataset", default="mnist-5k", help=DATASET_HELP)
    parser.add_argument("--preset", choices=PRESET_NAMES, default="quick", help=f"{kind} size (default: quick)")
    parser.add_argument("--epochs", type=_positive_int, help="override the preset's number of epochs")
    parser.add_argument("--seed", type=_int, help="override the seed")
    parser.add_argument("--config", help=f"JSON or YAML file of {config_class} fields overriding the preset")


def _add_loop_args(parser, kind, config_class):
    """Options shared by every command that runs a training loop."""
    _add_config_args(parser, kind, config_class)
    _add_distribution_args(parser)


def _add_distribution_args(parser):
    parser.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="auto",
        help="tf.distribute strategy: auto picks multiworker when TF_CONFIG is set, mirrored when "
        "more than one GPU is visible, else default (default: auto)",
    )
    parser.add_argument(
        "--resume", action="store_true",
        help="continue the interrupted run in --out from its newest checkpoint that restores",
    )
    parser.add_argument(
        "--overwrite", action="store_true",
        help="replace the run --out holds (without it or --resume, a folder that holds a run is refused)",
    )
    parser.add_argument(
        "--checkpoint-every", type=_int, default=0, metavar="STEPS",
        help="also checkpoint every STEPS steps (default: only at the end of each epoch)",
    )
    parser.add_argument(
        "--deterministic", action="store_true",
        help="seeds and TensorFlow op determinism: bit-identical reruns on one machine (slower)",
    )
    parser.add_argument(
        "--tensorboard", metavar="DIR",
        help="write TensorBoard summaries (scalars, log_alpha histograms, cell drawings) to DIR",
    )
    parser.add_argument(
        "--worker-timeout", type=_seconds, metavar="SECONDS",
        help="multi-worker: a worker silent this long is lost, and the others stop (default: TensorFlow's, 10)",
    )
    parser.add_argument(
        "--collective-timeout", type=_seconds, metavar="SECONDS",
        help="multi-worker: a collective operation waiting this long fails, for a worker that hangs "
        "(default: none; it must exceed the first step's trace)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="tfvnas",
        description="Variational-inference-based neural architecture search (VINNAS) for Keras.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser(
        "run",
        help="search, train and export in one go",
        description=(
            "Search a cell, train it from scratch as a sparse network and export it to SavedModel and "
            "TFLite: --out/search, --out/train and --out/export. With no arguments: the bundled "
            "mnist-5k data, the quick presets, output under saved_models/."
        ),
    )
    _add_loop_args(run, "search and training", "SearchConfig")
    _add_method_arg(run)
    run.add_argument("--out", help="output folder (default: saved_models/<dataset>-<preset>)")
    run.add_argument("--train-config", help="JSON or YAML file of TrainConfig fields")
    run.add_argument("--train-epochs", type=_positive_int, help="override the training preset's epochs")
    _add_export_flags(run)
    run.set_defaults(handler=_forward("tfvnas.pipeline:run", ("dataset",), {"config": "search_config"}))

    search = sub.add_parser(
        "search",
        help="search a cell on a dataset",
        description=(
            "Search a DARTS-space cell with VINNAS and write genotype.json (top_k inputs per node, the ops "
            "chosen by perturbation, or by the gates with selection: gates), "
            "genotype_threshold.json, search_config.json, search_history.json and checkpoints/ to --out."
        ),
    )
    _add_loop_args(search, "search", "SearchConfig")
    _add_method_arg(search)
    search.add_argument("--out", default="runs/search", help="output folder (default: runs/search)")
    search.set_defaults(handler=_forward("tfvnas.loops.searching:search", ("dataset",)))

    train = sub.add_parser(
        "train",
        help="train a found (or published) cell from scratch as a sparse network",
        description=(
            "Build the network of a genotype and train it from scratch with sparse variational weights; "
            "write model.keras, genotype.json, train_config.json, train_history.json and checkpoints/ to --out."
        ),
    )
    train.add_argument(
        "--genotype", required=True,
        help="a genotype JSON file, a search output folder, or a published cell: "
        "darts_v1, darts_v2, pc_darts, drnas",
    )
    _add_loop_args(train, "training", "TrainConfig")
    train.add_argument("--out", default="runs/train", help="output folder (default: runs/train)")
    train.set_defaults(handler=_forward("tfvnas.loops.training:train", ("genotype", "dataset")))

    export = sub.add_parser(
        "export",
        help="export a trained model to SavedModel and TFLite with a verification report",
        description=(
            "Strip a trained model into standard Keras layers and write a SavedModel, sparse float "
            "TFLite (and int8 / QAT int8 with the flags), report.json, report.md and model_card.md."
        ),
    )
    export.add_argument("--model", required=True, help="the output folder of `tfvnas train`")
    export.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    export.add_argument(
        "--dataset", help="data for calibration and the parity checks (default: the one it was trained on)"
    )
    _add_export_flags(export)
    export.add_argument("--config", help="JSON or YAML file of ExportConfig fields")
    export.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    export.set_defaults(handler=_forward("tfvnas.exporting:export", ("model", "out")))

    _add_show_parser(sub)
    _add_tune_parser(sub)
    return parser


def _add_method_arg(parser):
    parser.add_argument(
        "--method", choices=METHODS,
        help="vinnas (default) or darts: the DARTS baseline (softmax mixing, op set darts_none)",
    )


def _add_export_flags(parser):
    parser.add_argument("--int8", action="store_true", help="also write an int8 post-training-quantized .tflite")
    parser.add_argument(
        "--qat", action="store_true",
        help="also write an int8 .tflite after pruning-preserving quantization-aware fine-tuning",
    )
    parser.add_argument(
        "--no-shrink", dest="shrink", action="store_false", default=None,
        help="export every channel: skip dead-channel elimination and constant folding",
    )


# Command-line option -> the library's keyword, where the names differ.
_KEYWORDS = {"out": "out_dir", "tensorboard": "tensorboard_dir"}


def _forward(target, positional=(), renamed=None):
    """A handler that calls the library function `target` ("module:function") with the parsed options.

    `positional` options are passed first, in order; every other option the
    function takes is passed by keyword (`_KEYWORDS` and `renamed` map an
    option to a keyword of another name); `--quiet` becomes `verbose=0`.
    """

    def handler(args):
        module, name = target.split(":")
        function = getattr(importlib.import_module(module), name)
        takes = inspect.signature(function).parameters
        names = {**_KEYWORDS, **(renamed or {})}
        kwargs = {names.get(option, option): value for option, value in vars(args).items()
                  if option not in positional and names.get(option, option) in takes}
        if "quiet" in vars(args) and "verbose" in takes:
            kwargs["verbose"] = 0 if args.quiet else 1
        function(*(getattr(args, option) for option in positional), **kwargs)
        return 0

    return handler


def _add_show_parser(subparsers):
    show = subparsers.add_parser(
        "show",
        help="draw the cells, gate trajectories and sparsity of a result",
        description=(
            "Print a summary and draw SVG and PNG pictures of a genotype JSON file or of a search/train "
            "output folder: the normal and reduction cells (graphviz when `dot` is installed, matplotlib "
            "otherwise), log_alpha of every gate over the search epochs, and per-layer weight sparsity."
        ),
    )
    show.add_argument("target", metavar="GENOTYPE_OR_DIR", help="a genotype JSON file or an output folder")
    show.add_argument("--out", help="folder for the pictures (default: <target folder>/pictures)")
    show.set_defaults(handler=_forward("tfvnas.pictures.plots:show", ("target",)))


def _add_tune_parser(subparsers):
    tune = subparsers.add_parser(
        "tune",
        help="tune the training recipe of a cell (or the search) with keras-tuner",
        description=(
            "Run a keras-tuner study (random, bayesian or hyperband) that maximises the validation accuracy. "
            "--mode train (default) tunes the training of --genotype: lr, weight_decay, drop_path, kl_weight, "
            "threshold; --mode search tunes the search: kl_warmup, arch_lr, kl_weight, threshold. Writes study.json, "
            "trials.json, best.json and best_config.json (for --config) to --out; running the same command "
            "again resumes the study, up to --max-trials trials in total."
        ),
    )
    tune.add_argument(
        "--genotype",
        help="mode train: a genotype JSON file, a search output folder, or a published cell: "
        "darts_v1, darts_v2, pc_darts, drnas",
    )
    _add_config_args(tune, "every trial's", "TrainConfig (SearchConfig with --mode search)")
    tune.add_argument("--mode", choices=TUNING_MODES, default="train", help="what to tune (default: train)")
    tune.add_argument(
        "--tuner", choices=TUNERS, default="random",
        help="keras-tuner tuner (default: random); hyperband's largest budget is the config's epochs",
    )
    tune.add_argument(
        "--max-trials", type=_positive_int, default=10, metavar="N",
        help="trials in total, earlier runs of the study included (default: 10)",
    )
    tune.add_argument("--out", default="runs/tune", help="study folder (default: runs/tune)")
    tune.add_argument("--overwrite", action="store_true", help="discard the study in --out and start a new one")
    tune.add_argument("--quiet", action="store_true", help="no trial tables or progress bars")
    tune.set_defaults(handler=_forward("tfvnas.loops.tuning:tune", ("genotype", "dataset")))


# TensorFlow 2.21 prints these at import whatever TF_CPP_MIN_LOG_LEVEL says.
_TENSORFLOW_START_UP_LINES = ("WARNING: All log messages before absl::InitializeLog()", "I0000 ")


def _import_tensorflow_quietly():
    """Imports TensorFlow with its start-up info lines filtered out of stderr (warnings and errors pass)."""
    if "tensorflow" in sys.modules:
        return
    import tempfile

    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode("utf-8", "replace").splitlines(keepends=True):
                if not line.startswith(_TENSORFLOW_START_UP_LINES):
                    sys.stderr.write(line)


# Exit statuses (sysexits.h): a failed write, and a lost worker (a temporary failure: resume).
EXIT_WRITE_FAILED = 74
EXIT_WORKER_LOST = 75


def main(argv=None):
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = parser.parse_args(argv)
    try:
        _import_tensorflow_quietly()
        return args.handler(args)
    except WorkerLost as e:
        command = argv if "--resume" in argv else [*argv, "--resume"]
        print(f"tfvnas: error: {e} Command: tfvnas {shlex.join(command)}", file=sys.stderr)
        return EXIT_WORKER_LOST
    except USER_ERRORS as e:
        print(f"tfvnas: error: {e}", file=sys.stderr)
        return EXIT_WRITE_FAILED if isinstance(e, WriteError) else 2
    except KeyboardInterrupt as e:
        print(f"tfvnas: interrupted. {e}".rstrip(), file=sys.stderr)
        return 130



def entry():
    """The `tfvnas` console script: `main`, then an exit that skips interpreter teardown.

    Every artefact is written, closed and renamed before `main` returns, and
    TensorBoard files are flushed every epoch. What is left at exit is
    freeing TensorFlow's traced graphs one Python object at a time, which
    takes tens of seconds after a large run. A
    multi-worker run (`TF_CONFIG` set) exits normally, so that TensorFlow's
    coordination service shuts down with the other workers.
    """
    code = main()
    if os.environ.get("TF_CONFIG"):
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0 if code is None else int(code))


if __name__ == "__main__":
    entry()
