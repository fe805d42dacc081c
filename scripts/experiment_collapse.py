"""VINNAS against a DARTS baseline on the bundled data: cell diversity, accuracy, sparsity.

For every seed and method (`vinnas`, `darts`) it searches a cell, then trains the
found cell under one recipe (sparse variational weights, the same for every cell);
the published cells of the genotype zoo are trained under that recipe too, as
reference points. Per run it records test accuracy, dense and non-zero
parameters, the histogram of op types in the kept edges, the share of
parameter-free ops (skip, pooling, none), and search and training time.

    python scripts/experiment_collapse.py --quick --out runs/collapse-quick
    python scripts/experiment_collapse.py --out runs/collapse

Runs can be split over processes (one core each) and their tables merged:

    python scripts/experiment_collapse.py --methods vinnas --zoo darts_v1,darts_v2 --out runs/a &
    python scripts/experiment_collapse.py --methods darts --zoo pc_darts,drnas --out runs/b
    python scripts/experiment_collapse.py --summarise runs/a runs/b --out runs/collapse

`--out DIR` gets `results.json` (one record per run), `results.md` (the table,
mean +- std over seeds) and each run's artefacts (`<method>-seed<k>/search`,
`.../train`, `zoo-<name>/train`).
"""

import argparse
import json
import os
import statistics
import sys
import time

SEARCH = {
    # The `quick` search preset, for both methods.
    "full": dict(layers=4, channels=8, nodes=4, epochs=5, batch_size=64, limit=1600),
    # Minutes per run on 2 cores.
    "quick": dict(layers=3, channels=6, nodes=4, epochs=3, batch_size=64, limit=800),
}
TRAIN = {
    "full": dict(layers=4, channels=8, epochs=8, batch_size=64, lr=0.05, kl_warmup=0.1),
    "quick": dict(layers=3, channels=8, epochs=3, batch_size=64, lr=0.05, kl_warmup=0.1, limit=1500),
}
METHODS = {
    "vinnas": dict(method="vinnas", arch_lr=0.05, kl_warmup=0.2),
    # DARTS (first order): softmax mixing over the set with `none`, Adam 3e-4 on the
    # architecture logits, top-2 derivation without `none`.
    "darts": dict(method="darts", op_set="darts_none", arch_lr=3e-4, arch_beta1=0.5),
}


def _parameter_free_share(genotype):
    from tfvnas.ops import PARAMETER_FREE

    hist = genotype.op_histogram()
    total = sum(hist.values())
    return sum(n for op, n in hist.items() if op in PARAMETER_FREE) / total if total else 0.0


def _train_record(genotype, dataset, recipe, out_dir, seed):
    from tfvnas.training import train

    start = time.perf_counter()
    result = train(genotype, dataset, config=recipe, out_dir=out_dir, seed=seed, verbose=0)
    return {
        "test_accuracy": result.test_accuracy,
        "dense_params": result.parameters["dense"],
        "nonzero_params": result.parameters["nonzero"],
        "kernel_sparsity": result.parameters["kernel_sparsity"],
        "train_s": round(time.perf_counter() - start, 1),
    }


def _cell_record(genotype):
    return {
        "genotype_hash": genotype.hash(),
        "op_histogram": genotype.op_histogram(),
        "parameter_free_share": _parameter_free_share(genotype),
        "genotype": genotype.to_dict(),
    }


def run(out_dir, seeds, budget, zoo, methods):
    from tfvnas import data as data_lib
    from tfvnas.zoo import load_genotype
    from tfvnas.searching import search

    dataset = data_lib.load("mnist-5k")
    records = []
    os.makedirs(out_dir, exist_ok=True)

    def save():
        save_records(records, out_dir)

    for seed in seeds:
        for method in methods:
            run_dir = os.path.join(out_dir, f"{method}-seed{seed}")
            print(f"== {method} seed {seed}", flush=True)
            start = time.perf_counter()
            found = search(
                dataset, config={**SEARCH[budget], **METHODS[method]}, out_dir=os.path.join(run_dir, "search"),
                seed=seed, verbose=0,
            )
            search_s = round(time.perf_counter() - start, 1)
            record = {"method": method, "seed": seed, "search_s": search_s,
                      "search_val_accuracy": found.history[-1]["val_accuracy"], **_cell_record(found.genotype)}
            record.update(_train_record(found.genotype, dataset, TRAIN[budget], os.path.join(run_dir, "train"), seed))
            records.append(record)
            save()
            print(json.dumps({k: v for k, v in record.items() if k != "genotype"}), flush=True)
    for name in zoo:
        genotype = load_genotype(name)
        print(f"== zoo {name}", flush=True)
        record = {"method": f"zoo:{name}", "seed": seeds[0], "search_s": 0.0, "search_val_accuracy": None,
                  **_cell_record(genotype)}
        record.update(_train_record(genotype, dataset, TRAIN[budget], os.path.join(out_dir, f"zoo-{name}", "train"), seeds[0]))
        records.append(record)
        save()
    write_table(records, out_dir)
    return records


def save_records(records, out_dir):
    """Writes `out_dir/results.json` atomically."""
    tmp = os.path.join(out_dir, f".results-{os.getpid()}.json")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(records, f, indent=1)
    os.replace(tmp, os.path.join(out_dir, "results.json"))


def write_table(records, out_dir):
    """Writes `out_dir/results.md` (the summary table) and prints it."""
    table = summarise(records)
    with open(os.path.join(out_dir, "results.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    print(table)


def _mean_std(values, fmt):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(statistics.stdev(values))}"


def summarise(records):
    """A markdown table, mean ± std over seeds per method."""
    groups = {}
    for r in records:
        groups.setdefault(r["method"], []).append(r)
    lines = [
        "| method | runs | test accuracy | non-zero params | dense params | kernel sparsity | "
        "parameter-free ops | distinct op types | search s | train s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method, rs in groups.items():
        lines.append(
            f"| {method} | {len(rs)} | {_mean_std([r['test_accuracy'] for r in rs], '{:.4f}')} | "
            f"{_mean_std([r['nonzero_params'] for r in rs], '{:,.0f}')} | "
            f"{_mean_std([r['dense_params'] for r in rs], '{:,.0f}')} | "
            f"{_mean_std([r['kernel_sparsity'] for r in rs], '{:.3f}')} | "
            f"{_mean_std([r['parameter_free_share'] for r in rs], '{:.2f}')} | "
            f"{_mean_std([len(r['op_histogram']) for r in rs], '{:.1f}')} | "
            f"{_mean_std([r['search_s'] for r in rs], '{:.0f}')} | "
            f"{_mean_std([r['train_s'] for r in rs], '{:.0f}')} |"
        )
    lines += ["", "Op histograms (kept edges, both cells):", ""]
    for r in records:
        hist = ", ".join(f"{k} {v}" for k, v in r["op_histogram"].items())
        lines.append(f"- {r['method']} seed {r['seed']} ({r['genotype_hash']}): {hist}")
    return "\n".join(lines)


def merge(folders, out_dir):
    """Merges the `results.json` of `folders` into `out_dir` (results.json and results.md)."""
    records = []
    for folder in folders:
        path = os.path.join(folder, "results.json")
        if not os.path.isfile(path):
            raise SystemExit(f"experiment_collapse: no results.json in {folder!r}")
        with open(path, encoding="utf-8") as f:
            records += json.load(f)
    order = {"vinnas": 0, "darts": 1}
    records.sort(key=lambda r: (order.get(r["method"], 2), r["method"], r["seed"]))
    os.makedirs(out_dir, exist_ok=True)
    save_records(records, out_dir)
    write_table(records, out_dir)
    return records


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small budget, 2 seeds, one zoo cell")
    parser.add_argument("--out", default=None, help="output folder (default runs/collapse[-quick])")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1 quick, 0,1,2 full)")
    parser.add_argument("--methods", default="vinnas,darts")
    parser.add_argument("--zoo", default=None, help="comma-separated zoo cells (default darts_v2 quick, all full)")
    parser.add_argument("--summarise", nargs="+", metavar="DIR", default=None,
                        help="only merge the results.json of these folders into --out (no runs)")
    args = parser.parse_args(argv)
    if args.summarise:
        if not args.out:
            parser.error("--summarise needs --out (where the merged results.json and results.md go)")
        merge(args.summarise, args.out)
        return 0
    budget = "quick" if args.quick else "full"
    seeds = [int(s) for s in (args.seeds or ("0,1" if args.quick else "0,1,2")).split(",")]
    zoo = [z for z in (args.zoo if args.zoo is not None else ("darts_v2" if args.quick else "darts_v1,darts_v2,pc_darts,drnas")).split(",") if z]
    out = args.out or os.path.join("runs", "collapse-quick" if args.quick else "collapse")
    run(out, seeds, budget, zoo, [m for m in args.methods.split(",") if m])
    return 0


if __name__ == "__main__":
    sys.exit(main())
