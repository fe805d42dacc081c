"""Which gates a search keeps: the share of each op type's gates still active, per epoch.

Reads the `search_history.json` of one or more search folders and prints a
Markdown table per folder and gate table: one row per chosen epoch, one
column per op type, each cell the share of that op type's gates (one per
edge) not yet pruned. It shows which operations the evidence keeps longest,
for instance whether a search that ends on skip connections got there by
pruning everything else first.

    python scripts/gate_survival.py runs/evidence/collapse/vinnas-seed0
    python scripts/gate_survival.py RUN [RUN ...] --epochs 1,5,10,20,40,80 --table normal
"""

import argparse
import json
import os
import sys

import numpy as np


def survival(run_dir, table="normal", epochs=None):
    """`(op_names, [(epoch, {op: share of its gates active})])` of the search in `run_dir`."""
    with open(os.path.join(run_dir, "search_history.json"), encoding="utf-8") as f:
        saved = json.load(f)
    ops, history = saved["op_names"], saved["epochs"]
    if epochs is None:
        epochs = sorted({1, *range(5, len(history) + 1, 5), len(history)})
    rows = []
    for epoch in epochs:
        if not 1 <= epoch <= len(history):
            continue
        active = np.asarray(history[epoch - 1]["active"][table], dtype=float).reshape(-1, len(ops))
        rows.append((epoch, {op: float(active[:, k].mean()) for k, op in enumerate(ops)}))
    return ops, rows


def markdown(run_dir, table="normal", epochs=None):
    ops, rows = survival(run_dir, table, epochs)
    lines = [f"{os.path.basename(os.path.normpath(run_dir))}, {table} table: share of each op type's gates active",
             "", "| epoch | " + " | ".join(ops) + " |", "|---|" + "---|" * len(ops)]
    lines += [f"| {epoch} | " + " | ".join(f"{share[op]:.0%}" for op in ops) + " |" for epoch, share in rows]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN", help="search output folders")
    parser.add_argument("--table", choices=("normal", "reduce"), default="normal")
    parser.add_argument("--epochs", help="comma-separated epochs (default: 1, every 5th and the last)")
    args = parser.parse_args(argv)
    epochs = [int(e) for e in args.epochs.split(",")] if args.epochs else None
    for run in args.runs:
        if not os.path.isfile(os.path.join(run, "search_history.json")):
            parser.error(f"{run!r} is not a finished search folder (no search_history.json)")
        print(markdown(run, args.table, epochs) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
