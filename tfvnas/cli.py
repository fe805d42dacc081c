"""The `tfvnas` command: a thin layer that parses arguments into one library call.

    tfvnas search --dataset mnist-5k --preset quick --out runs/quick

A user mistake prints one line, `tfvnas: error: ...`, and exits with status 2.
"""

import argparse
import sys

PRESET_NAMES = ("smoke", "quick", "paper")
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError, RuntimeError, FloatingPointError)


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}")
    return value


def _int(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, received {text!r}") from None


def build_parser():
    parser = argparse.ArgumentParser(
        prog="tfvnas",
        description="Variational-inference-based neural architecture search (VINNAS) for Keras.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    search = sub.add_parser(
        "search",
        help="search a cell on a dataset",
        description=(
            "Search a DARTS-space cell with VINNAS and write genotype.json (top_k rule), "
            "genotype_threshold.json, search_config.json and search_history.json to --out."
        ),
    )
    search.add_argument(
        "--dataset",
        default="mnist-5k",
        help="mnist-5k (bundled), mnist, fashion_mnist, cifar10, cifar100 (need the internet), "
        "a .npz file with x_train, y_train, x_test, y_test, or a folder of class sub-folders "
        "(default: mnist-5k)",
    )
    search.add_argument("--preset", choices=PRESET_NAMES, default="quick", help="search size (default: quick)")
    search.add_argument("--out", default="runs/search", help="output folder (default: runs/search)")
    search.add_argument("--epochs", type=_positive_int, help="override the preset's number of epochs")
    search.add_argument("--seed", type=_int, help="override the seed")
    search.add_argument("--config", help="JSON or YAML file of SearchConfig fields overriding the preset")
    search.add_argument("--quiet", action="store_true", help="no progress bar")
    search.set_defaults(handler=_search)
    _add_show_parser(sub)
    return parser


def _search(args):
    from tfvnas.search import search

    search(
        args.dataset,
        preset=args.preset,
        config=args.config,
        out_dir=args.out,
        epochs=args.epochs,
        seed=args.seed,
        verbose=0 if args.quiet else 1,
    )
    return 0


def _add_show_parser(subparsers):
    show = subparsers.add_parser(
        "show",
        help="draw the cells, gate trajectories and sparsity of a result",
        description=(
            "Print a summary and draw SVG and PNG pictures of a genotype JSON file or of a search/train "
            "output folder: the normal and reduction cells (graphviz when `dot` is installed, a built-in "
            "renderer otherwise), log_alpha of every gate over the search epochs, and per-layer weight sparsity."
        ),
    )
    show.add_argument("target", metavar="GENOTYPE_OR_DIR", help="a genotype JSON file or an output folder")
    show.add_argument("--out", help="folder for the pictures (default: <target folder>/pictures)")
    show.set_defaults(handler=_show)


def _show(args):
    from tfvnas.plots import show

    show(args.target, out_dir=args.out)
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except USER_ERRORS as e:
        print(f"tfvnas: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tfvnas: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
