"""The search study: gate learning rate, initialisation, KL warm-up and weight, on a validation split.

Every study arm is a VINNAS search of the bundled mnist-5k data from one
base config (`BASE`, the `quick` preset's search) with one field changed. For each arm it records, per epoch, the share of
each gate table pruned and how many epochs the `top_k` genotype has been
unchanged; then it trains the found `top_k` cell from scratch (the `quick`
training recipe, the training split) and measures its accuracy on the
*validation* split. The test split is never read.

    python scripts/study_search.py --out runs/study-search             # every arm
    python scripts/study_search.py --out runs/study-search --arms base,lr_0.3
    python scripts/study_search.py --out runs/study-search --report docs/search.md

Each finished arm is appended to `<out>/results.jsonl` (or `--results FILE`;
one JSON line per arm) and skipped when the command runs again, so the study
can be run in parts; `--report FILE` rewrites the table and the figure between
the `study:begin` / `study:end` markers of FILE from the results gathered so
far.

The proxy check compares the `quick` search at its 14x14 proxy (`base`) with
the same search at the data's full 28x28 (`full_size`), over seeds, each cell
trained under the one recipe; `--proxy-report FILE` rewrites the section
between the `proxy:begin` / `proxy:end` markers of FILE:

    python scripts/study_search.py --out runs/proxy --arms base,full_size --seeds 0,1,2 \
        --results docs/search/proxy_results.jsonl --proxy-report docs/search.md

The budget study compares the `quick` search (`base`) with smaller budgets
(`b32_e12`, `b32_e8`), each found cell trained with the quick recipe and,
with `--also-train-epochs 4`, with 4 of its epochs too; `--budget-report
FILE` rewrites the section between the `budget:begin` / `budget:end` markers.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's tfvnas

# The study's base: the `quick` preset's search until 2026-12-07 (docs/search.md
# says why each field is what it is; the preset is now the `b32_e12` arm, by the
# budget study). Each arm changes one field of it, or a few.
BASE = {
    "layers": 4, "channels": 8, "nodes": 4, "epochs": 24, "batch_size": 64, "limit": 1600, "resolution": 14,
    "kl_warmup": 0.2, "kl_weight": 16.0, "gate_log_alpha_init": -1.0, "arch_lr": 0.3,
    "gate_parameterisation": "positive", "optimization": "bilevel",
}
ARMS = {
    "base": {},
    "beta_1": {"kl_weight": 1.0},
    "beta_4": {"kl_weight": 4.0},
    "lr_0.1": {"arch_lr": 0.1},
    "init_-3": {"gate_log_alpha_init": -3.0},
    "warmup_0": {"kl_warmup": 0.0},
    "warmup_0.5": {"kl_warmup": 0.5},
    "log_alpha": {"gate_parameterisation": "log_alpha"},
    "full_size": {"resolution": None},
    # Smaller budgets for the default run's time: half the batch with half the
    # epochs (300 gate updates, about the base's 288), and a third of the epochs.
    "b32_e12": {"batch_size": 32, "epochs": 12},
    "b32_e8": {"batch_size": 32, "epochs": 8},
    # The same 300 gate updates with one forward and backward pass a step
    # instead of two: a joint search on all 1,600 images (50 steps an epoch).
    # Its KL is per example of all 1,600 where the bi-level gates' is per
    # example of their 800, so `kl_weight` 32 keeps the KL's pull on a gate per
    # update that of the bi-level search at 16; `j_e6_kl16` keeps the field.
    "j_e6": {"batch_size": 32, "epochs": 6, "optimization": "joint", "kl_weight": 32.0},
    "j_e6_kl16": {"batch_size": 32, "epochs": 6, "optimization": "joint"},
}



def _search_record(result):
    history = result.history
    return {
        "epochs_run": len(history),
        "converged": result.converged(),
        "pruned_share": history[-1]["pruned_share"],
        "stable_epochs": history[-1]["stable_epochs"],
        "search_val_accuracy": history[-1]["val_accuracy"],
        "per_epoch": [
            {"epoch": r["epoch"], "step": r["step"], "pruned_share": r["pruned_share"],
             "stable_epochs": r["stable_epochs"], "genotype_hash": r["genotype_hash"]}
            for r in history
        ],
        "genotype": result.genotype.to_dict(),
        "genotype_hash": result.genotype.hash(),
    }


# The recipe every found cell is trained with: the `quick` training preset at
# the 8 epochs it had until 2026-12-07, so that every recorded arm is comparable.
RECIPE_EPOCHS = 8


def _val_accuracy(genotype, dataset, seed, epochs=None):
    """Trains `genotype` with the study's recipe (or `epochs` of it) and returns (validation accuracy, seconds,
    the share of variational weights pruned at the end); no test split."""
    from tfvnas import config as config_lib
    from tfvnas.loops.training import Trainer

    cfg = config_lib.TRAIN_PRESETS["quick"].replace(seed=seed, epochs=RECIPE_EPOCHS if epochs is None else epochs)
    start = time.perf_counter()
    trainer = Trainer(genotype, cfg, dataset, verbose=0)
    trainer.train()
    _, accuracy = trainer.evaluate("val")
    return accuracy, round(time.perf_counter() - start, 1), trainer.history[-1]["weight_sparsity"]


def run_arm(name, changes, seed, out_dir, also_train_epochs=()):
    from tfvnas import data as data_lib
    from tfvnas.loops.searching import search

    dataset = data_lib.load("mnist-5k", seed=seed)
    start = time.perf_counter()
    arm_dir = os.path.join(out_dir, f"{name}-seed{seed}")
    # An arm stopped part-way resumes from its last checkpoint.
    resume = os.path.isfile(os.path.join(arm_dir, "checkpoints", "checkpoint"))
    result = search(dataset, preset="quick", config={**BASE, **changes}, seed=seed, verbose=0,
                    out_dir=arm_dir, resume=resume)
    record = {"arm": name, "seed": seed, "changes": changes, "config": result.config.to_dict(),
              "search_s": round(time.perf_counter() - start, 1)}
    record.update(_search_record(result))
    record["cell_val_accuracy"], record["train_s"], record["weight_sparsity"] = _val_accuracy(
        result.genotype, dataset, seed)
    for epochs in also_train_epochs:  # the same cell under a shorter (or longer) training
        record.update(_retrained(result.genotype, dataset, seed, epochs))
    return record


def _retrained(genotype, dataset, seed, epochs):
    """The fields a training of `epochs` (instead of the recipe's) adds to a record."""
    accuracy, seconds, sparsity = _val_accuracy(genotype, dataset, seed, epochs=epochs)
    return {f"cell_val_accuracy_e{epochs}": accuracy, f"train_s_e{epochs}": seconds,
            f"weight_sparsity_e{epochs}": sparsity}


def retrain(record, epochs):
    """A results line: the recorded search's cell trained for `epochs` of the recipe (`--retrain-epochs`)."""
    from tfvnas import data as data_lib
    from tfvnas.models.genotype import Genotype

    seed = record["seed"]
    fields = _retrained(Genotype.from_dict(record["genotype"]), data_lib.load("mnist-5k", seed=seed), seed, epochs)
    return {"kind": "retrain", "arm": record["arm"], "seed": seed, "epochs": epochs, **fields}


def read_results(path):
    """The search records of a results file, each with the fields of its later trainings (`retrain`) merged in."""
    from tfvnas import files

    lines = files.read_json_lines(path)
    searches = [r for r in lines if r.get("kind") != "retrain"]
    for line in lines:
        if line.get("kind") == "retrain":
            for record in searches:
                if (record["arm"], record["seed"]) == (line["arm"], line["seed"]):
                    record.update({k: v for k, v in line.items() if k not in ("kind", "arm", "seed", "epochs")})
    return searches


def averaged_stable_epochs(history_path, decay=0.9, prune_every=10):
    """Epochs the `top_k` genotype is unchanged at the end, derived from averaged `log_alpha` (offline).

    The search records every gate's `log_alpha` once per epoch; this derives
    each epoch's genotype from an exponential moving average of those
    snapshots, the decay per epoch being `decay` per pruning check
    (`gate_average_decay`) over the checks of an epoch: what the derivation
    with `gate_average_decay=decay` reads, sampled once per epoch instead of
    once per check. None when the history is not there.
    """
    import numpy as np

    from tfvnas.models import derivation

    if not os.path.isfile(history_path):
        return None
    with open(history_path, encoding="utf-8") as f:
        history = json.load(f)
    epochs, threshold = history["epochs"], history["threshold"]
    steps = epochs[0]["step"]
    d = decay ** (steps / prune_every)
    average, hashes = None, []
    for record in epochs:
        current = {t: np.asarray(record["log_alpha"][t], float) for t in ("normal", "reduce")}
        if average is None:
            average = current
        else:  # pruned gates keep their value at pruning, as in the search
            average = {t: np.where(current[t] >= threshold, current[t], d * average[t] + (1 - d) * current[t])
                       for t in current}
        nodes = int((np.sqrt(8 * len(current["normal"]) + 9) - 3) / 2)
        hashes.append(derivation.derive_top_k(average, history["op_names"], nodes=nodes,
                                                threshold=threshold).hash())
    stable = 0
    for a, b in zip(hashes[::-1], hashes[-2::-1]):
        if a != b:
            break
        stable += 1
    return stable


def report(records, doc, out_dir):
    """Rewrites the study's table and figure in `doc` (between the study markers)."""
    from matplotlib.figure import Figure

    begin, end = "<!-- study:begin -->", "<!-- study:end -->"
    lines = [
        "| arm | changes | seed | epochs | pruned normal / reduce | genotype unchanged (epochs) | "
        "same, averaged log_alpha | converged | search val acc | cell val acc | search s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        changes = ", ".join(f"{k}={v}" for k, v in r["changes"].items()) or "-"
        share = r["pruned_share"]
        averaged = averaged_stable_epochs(os.path.join(out_dir, f"{r['arm']}-seed{r['seed']}", "search_history.json"))
        lines.append(
            f"| {r['arm']} | {changes} | {r['seed']} | {r['epochs_run']} | {share['normal']:.0%} / "
            f"{share['reduce']:.0%} | {r['stable_epochs']} | {'-' if averaged is None else averaged} | "
            f"{'yes' if r['converged'] else 'no'} | "
            f"{r['search_val_accuracy']:.3f} | {r['cell_val_accuracy']:.3f} | {r['search_s']:.0f} |"
        )
    figure = Figure(figsize=(7.5, 4.0), dpi=120, layout="constrained")
    axes = figure.add_subplot()
    for r in records:
        steps = [e["step"] for e in r["per_epoch"]]
        share = [min(e["pruned_share"].values()) for e in r["per_epoch"]]
        axes.plot(steps, share, label=f"{r['arm']} (seed {r['seed']})", linewidth=1.4)
    axes.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    axes.set_xlabel("gate updates")
    axes.set_ylabel("pruned share (smaller of the two tables)")
    axes.set_ylim(0, 1)
    axes.legend(fontsize=7, ncol=2)
    picture = os.path.join(os.path.dirname(doc), "search", "study_pruned_share.png")
    os.makedirs(os.path.dirname(picture), exist_ok=True)
    figure.savefig(picture)
    body = "\n".join(lines) + f"\n\n![pruned share per gate update](search/{os.path.basename(picture)})\n"
    with open(doc, encoding="utf-8") as f:
        text = f.read()
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(doc, "w", encoding="utf-8") as f:
        f.write(f"{head}{begin}\n\n{body}\n{end}{tail}")


PROXY_ARMS = ("base", "full_size")


def _cell_statistics(genotype_dict):
    """Parameter-free share of both cells and distinct op types of a recorded genotype."""
    from tfvnas.layers import registry as op_registry
    from tfvnas.models.genotype import Genotype

    genotype = Genotype.from_dict(genotype_dict)
    counts = [op_registry.cell_op_counts(genotype, t) for t in ("normal", "reduce")]
    return sum(c[0] for c in counts) / sum(c[2] for c in counts), len(genotype.op_histogram())


def _mean_std(values):
    import statistics

    values = list(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {std:.3f}"


def _zero_share(record, epochs):
    """` (71% zero)`: the share of variational weights a training of `epochs` left pruned, where recorded."""
    share = record.get(f"weight_sparsity_e{epochs}")
    return "" if share is None else f" ({share:.0%} zero)"


BUDGET_ARMS = ("base", "b32_e12", "b32_e8")
JOINT_ARMS = ("b32_e12", "j_e6", "j_e6_kl16")


def arms_table(records, arms):
    """Markdown: one row per (arm, seed) of `arms`, then each arm's mean ± std. A record's shorter trainings
    (`cell_val_accuracy_e<N>`, from --also-train-epochs) get columns of their own."""
    records = sorted((r for r in records if r["arm"] in arms), key=lambda r: (arms.index(r["arm"]), r["seed"]))
    extra = sorted({int(k[len("cell_val_accuracy_e"):]) for r in records for k in r
                    if k.startswith("cell_val_accuracy_e")})
    lines = [
        "| search | seed | pruned normal / reduce | converged | parameter-free share | distinct ops | "
        "search val acc | cell val acc | " + "".join(f"cell val acc ({n} epochs) | " for n in extra) +
        "search s | train s |",
        "|---|---|---|---|---|---|---|---|" + "---|" * len(extra) + "---|---|",
    ]
    for r in records:
        free, distinct = _cell_statistics(r["genotype"])
        share = r["pruned_share"]
        shorter = "".join(f"{r[f'cell_val_accuracy_e{n}']:.3f}{_zero_share(r, n)} | "
                          if f"cell_val_accuracy_e{n}" in r else "- | " for n in extra)
        lines.append(
            f"| {r['arm']} | {r['seed']} | {share['normal']:.0%} / {share['reduce']:.0%} | "
            f"{'yes' if r['converged'] else 'no'} | {free:.2f} | {distinct} | {r['search_val_accuracy']:.3f} | "
            f"{r['cell_val_accuracy']:.3f} | {shorter}{r['search_s']:.0f} | {r['train_s']:.0f} |"
        )
    lines += ["", "| search | seeds | cell val acc (mean ± std) | " +
              "".join(f"{n} epochs (mean ± std) | " for n in extra) + "search s (mean) |",
              "|---|---|---|" + "---|" * len(extra) + "---|"]
    for arm in arms:
        group = [r for r in records if r["arm"] == arm]
        if group:
            seconds = sum(r["search_s"] for r in group) / len(group)
            shorter = "".join(
                f"{_mean_std(r[f'cell_val_accuracy_e{n}'] for r in group if f'cell_val_accuracy_e{n}' in r)} | "
                if any(f"cell_val_accuracy_e{n}" in r for r in group) else "- | " for n in extra)
            lines.append(f"| {arm} | {len(group)} | {_mean_std(r['cell_val_accuracy'] for r in group)} | "
                         f"{shorter}{seconds:.0f} |")
    return "\n".join(lines) + "\n"


def proxy_table(records):
    """The proxy check's Markdown: one row per (arm, seed), then each arm's mean ± std."""
    return arms_table(records, PROXY_ARMS)


def rewrite_section(doc, name, body):
    """Rewrites the part of `doc` between the `<name>:begin` / `<name>:end` markers with `body`."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    with open(doc, encoding="utf-8") as f:
        text = f.read()
    if begin not in text or end not in text:
        raise SystemExit(f"study_search: {doc} has no {begin} ... {end} section to rewrite")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(doc, "w", encoding="utf-8") as f:
        f.write(f"{head}{begin}\n\n{body}\n{end}{tail}")


def proxy_report(records, doc):
    """Rewrites the proxy check's tables in `doc` (between the proxy markers)."""
    rewrite_section(doc, "proxy", proxy_table(records))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join("runs", "study-search"))
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of: {', '.join(ARMS)}")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--results", metavar="FILE", help="the results file (default <out>/results.jsonl)")
    parser.add_argument("--report", metavar="DOC", help="rewrite the study section of DOC; with --no-run only that")
    parser.add_argument("--proxy-report", metavar="DOC", help="rewrite the proxy check's section of DOC")
    parser.add_argument("--budget-report", metavar="DOC",
                        help="rewrite the budget study's section of DOC (arms " + ", ".join(BUDGET_ARMS) + ")")
    parser.add_argument("--joint-report", metavar="DOC",
                        help="rewrite the joint search's section of DOC (arms " + ", ".join(JOINT_ARMS) + ")")
    parser.add_argument("--also-train-epochs", default="", metavar="N[,N]",
                        help="also train each found cell for these epochs of the quick recipe "
                             "(recorded as cell_val_accuracy_e<N>)")
    parser.add_argument("--retrain-epochs", type=int, metavar="N",
                        help="instead of searching, train the recorded cells of --arms and --seeds for N epochs of "
                             "the recipe (those not trained so) and record them beside their searches")
    parser.add_argument("--no-run", action="store_true")
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow's intra- and inter-op threads (0: its default); with 1, two drivers "
                             "with different --arms or --seeds can share a results file, one per core")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.arms.split(",")) - set(ARMS))
    if unknown:
        parser.error(f"unknown arms {unknown}; known: {', '.join(ARMS)}")
    if args.threads < 0:
        parser.error(f"--threads must be 0 (TensorFlow's default) or a positive count; received {args.threads}")
    os.makedirs(args.out, exist_ok=True)
    results = args.results or os.path.join(args.out, "results.jsonl")
    if args.threads and not args.no_run:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    also = [int(n) for n in args.also_train_epochs.split(",") if n]
    if any(n <= 0 for n in also):
        parser.error(f"--also-train-epochs must be positive counts; received {args.also_train_epochs}")
    if args.retrain_epochs is not None and not args.no_run:
        if args.retrain_epochs <= 0:
            parser.error(f"--retrain-epochs must be a positive count; received {args.retrain_epochs}")
        from tfvnas import files

        seeds = {int(s) for s in args.seeds.split(",")}
        for record in read_results(results):
            key = f"cell_val_accuracy_e{args.retrain_epochs}"
            if record["arm"] in args.arms.split(",") and record["seed"] in seeds and key not in record:
                print(f"== {record['arm']} seed {record['seed']}: {args.retrain_epochs} training epochs", flush=True)
                line = retrain(record, args.retrain_epochs)
                files.append_json_line(results, line)
                print(json.dumps(line), flush=True)
    elif not args.no_run:
        for seed in [int(s) for s in args.seeds.split(",")]:
            for name in args.arms.split(","):
                done = {(r["arm"], r["seed"]) for r in read_results(results)}
                if (name, seed) in done:
                    continue
                print(f"== {name} seed {seed}", flush=True)
                record = run_arm(name, ARMS[name], seed, args.out, also_train_epochs=also)
                from tfvnas import files

                files.append_json_line(results, record)
                print(json.dumps({k: v for k, v in record.items() if k not in ("per_epoch", "genotype")}), flush=True)
    if args.report:
        report(read_results(results), args.report, args.out)
    if args.proxy_report:
        proxy_report(read_results(results), args.proxy_report)
    if args.budget_report:
        rewrite_section(args.budget_report, "budget", arms_table(read_results(results), BUDGET_ARMS))
    if args.joint_report:
        rewrite_section(args.joint_report, "joint", arms_table(read_results(results), JOINT_ARMS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
