"""The evidence study: does the VINNAS search beat random cells, avoid collapse, and save non-zero parameters?

On Fashion-MNIST (`../shared/data/fashion_mnist_50k_10k.npz`: 50,000 training
images, of which a stratified 10% is the validation split, and 10,000 test
images), it runs, in resumable units:

1. `null`: the random-cell null: parameter-free share, distinct op types and
   the normal cell's skip count of many genotypes drawn uniformly from the
   space (`tfvnas.models.derivation.random_genotype`); no training.
2. `recipe`: the training recipe's learning rate, chosen on the validation
   split (one cell, each candidate rate).
3. `search`: VINNAS and the DARTS baseline (its own architecture optimiser),
   the same supernet, proxy and budget, several seeds each.
4. `train`: every cell (the searched ones, random cells, the zoo cells)
   trained under one recipe twice, with sparse variational weights and
   dense; test accuracy, the per-image correctness, non-zero trainable
   parameters.
5. `collapse`: long searches at a small proxy (8x8 images), thousands of
   architecture updates per method, recording each epoch's derived normal
   cell.

`--report DOC` writes the tables, the paired bootstrap over the test images,
the Pareto and collapse plots into DOC between `evidence:begin` and
`evidence:end`. Every choice is made on the validation split; the test split
is read once per trained cell, for the final table.

    python scripts/experiment_collapse.py --out runs/evidence                      # everything
    python scripts/experiment_collapse.py --out runs/evidence --phases null,search # a part
    python scripts/experiment_collapse.py --out runs/evidence --report docs/RESULTS.md --no-run
    python scripts/experiment_collapse.py --quick --out runs/evidence-quick        # pipeline check

Two drivers started side by side with `--threads 1` (one per core) share the
same phases: each claims a unit before running it (`<out>/claims`), so no unit
runs twice, and a claim whose process died is taken over.

Every finished unit is a line of the results file (`--results FILE`, default
`<out>/results.jsonl`); a unit already there is skipped, so the study runs in
parts and resumes where it stopped. The file holds everything the report reads
(the per-image test correctness included), so the committed copy,
`docs/results/fashion_evidence.jsonl`, resumes and reports the study on any
machine:

    python scripts/experiment_collapse.py --out runs/evidence --results docs/results/fashion_evidence.jsonl
"""

import argparse
import base64
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from units import Units  # noqa: E402

DATA = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data", "fashion_mnist_50k_10k.npz"))

BUDGETS = {
    "full": {
        "seeds": (0, 1, 2),
        "random_cells": 5,
        "null_samples": 2000,
        "zoo": ("darts_v1", "darts_v2", "pc_darts", "drnas"),
        # The search: the `quick` preset's proxy (14x14 images) on a subset of the training split, at the
        # budget the recorded study ran (the preset's until 2026-12-07: 24 epochs of batch 64).
        "search": {"limit": 3200, "epochs": 24, "batch_size": 64, "optimization": "bilevel", "kl_weight": 16.0},
        # The training recipe every cell gets (lr chosen on the validation split).
        "train": {"layers": 4, "channels": 8, "epochs": 3, "batch_size": 128, "kl_warmup": 0.2, "resolution": 14},
        "recipe_lrs": (0.05, 0.1),
        "recipe_cell": "darts_v2",
        # Collapse: a small proxy and a long search.
        "collapse": {"layers": 3, "channels": 4, "batch_size": 32, "resolution": 8, "limit": 1600,
                     "epochs": 80, "optimization": "bilevel", "kl_weight": 16.0},
        "collapse_seeds": (0,),
    },
    "quick": {
        "seeds": (0,),
        "random_cells": 1,
        "null_samples": 200,
        "zoo": ("darts_v2",),
        # Perturbation selection on 200 validation images, not 1,000: after 2 epochs every op is
        # still live, and each costs one evaluation (a pipeline check, not a measurement).
        "search": {"limit": 512, "epochs": 2, "layers": 3, "channels": 4, "batch_size": 32, "nodes": 2,
                   "selection_images": 200, "optimization": "bilevel"},
        "train": {"layers": 3, "channels": 4, "epochs": 1, "batch_size": 64, "kl_warmup": 0.2, "resolution": 14,
                  "limit": 2000},
        "recipe_lrs": (0.05,),
        "recipe_cell": "darts_v2",
        "collapse": {"layers": 2, "channels": 4, "batch_size": 32, "resolution": 8, "limit": 512, "epochs": 3,
                     "nodes": 2, "selection_images": 200, "optimization": "bilevel"},
        "collapse_seeds": (0,),
    },
}
METHOD_CONFIGS = {
    # VINNAS: the `quick` preset's gates (docs/search.md).
    "vinnas": {"method": "vinnas"},
    # DARTS: its own architecture optimiser (Adam 3e-4, betas (0.5, 0.999), weight
    # decay 1e-3) and op set with `none`; same supernet, proxy and budget.
    "darts": {"method": "darts", "op_set": "darts_none"},
    # VINNAS with the ELBO's own KL weight (beta 1 instead of the preset's 16):
    # an arm of the long search, where the 8x8 proxy's small likelihood makes
    # the preset's KL weight prune most gates (docs/RESULTS.md).
    "vinnas_beta1": {"method": "vinnas", "kl_weight": 1.0},
    # VINNAS whose gates are judged only once the weights have trained: 24
    # weight-only epochs (the 30% PC-DARTS and DrNAS warm up for), then the
    # long search's 80 epochs of architecture updates (2,000).
    "vinnas_warmup": {"method": "vinnas", "arch_warmup": 24, "epochs": 104},
    # VINNAS with P-DARTS' operation-level dropout of the skip connections
    # (`skip_dropout`, constant at 0.4, the rate of P-DARTS' middle stage;
    # not tuned), against the drift toward skip-only normal cells.
    "vinnas_skipdrop": {"method": "vinnas", "skip_dropout": 0.4},
}
PHASES = ("null", "recipe", "search", "train", "collapse")


# ---------------------------------------------------------------------------
# Results file


def _resumable(run_dir):
    """Whether `run_dir` holds a checkpoint of an interrupted unit (then it continues from there)."""
    import tensorflow as tf

    from tfvnas.runs import CHECKPOINT_SUBDIR

    checkpoints = os.path.join(run_dir, CHECKPOINT_SUBDIR)
    return os.path.isdir(checkpoints) and tf.train.latest_checkpoint(checkpoints) is not None


def pack_correct(correct):
    """Per-image correctness (bool array) as text: base64 of the packed bits."""
    return base64.b64encode(np.packbits(np.asarray(correct, bool)).tobytes()).decode("ascii")


def unpack_correct(text, n):
    return np.unpackbits(np.frombuffer(base64.b64decode(text), np.uint8))[:n].astype(bool)


# ---------------------------------------------------------------------------
# Cell statistics


def cell_statistics(genotype):
    """Parameter-free share of both cells, distinct op types, the normal cell's skips."""
    from tfvnas.layers import registry as op_registry

    free = total = 0
    for cell_type in ("normal", "reduce"):
        f, _, t = op_registry.cell_op_counts(genotype, cell_type)
        free, total = free + f, total + t
    normal_free, normal_skips, normal_total = op_registry.cell_op_counts(genotype, "normal")
    return {
        "parameter_free_share": free / total,
        "distinct_ops": len(genotype.op_histogram()),
        "normal_parameter_free_share": normal_free / normal_total,
        "normal_skips": normal_skips,
        "op_histogram": genotype.op_histogram(),
    }


def _dataset():
    from tfvnas import data as data_lib

    if not os.path.isfile(DATA):
        raise SystemExit(f"experiment_collapse: the Fashion-MNIST file is missing: {DATA}")
    dataset = data_lib.load(DATA, seed=0)
    return dataset


# ---------------------------------------------------------------------------
# Phases


def phase_null(units, cfg):
    from tfvnas import config as config_lib
    from tfvnas.models.derivation import random_genotype

    if units.done("null", "null"):
        return
    ops = config_lib.preset("quick").op_names
    rng = np.random.default_rng(12345)
    nodes = cfg["search"].get("nodes", 4)
    stats = [cell_statistics(random_genotype(ops, nodes=nodes, rng=rng)) for _ in range(cfg["null_samples"])]
    record = {"kind": "null", "key": "null", "samples": len(stats)}
    for field in ("parameter_free_share", "distinct_ops", "normal_parameter_free_share", "normal_skips"):
        values = [s[field] for s in stats]
        record[field] = {"mean": float(np.mean(values)), "std": float(np.std(values))}
    units.append(record)


def _train_config(cfg, **changes):
    from tfvnas import config as config_lib

    fields = {k: v for k, v in cfg["train"].items() if k != "resolution"}
    return config_lib.TrainConfig(**{**fields, **changes})


def _resized(dataset, cfg):
    size = cfg["train"].get("resolution")
    return dataset.resized(size) if size else dataset


def phase_recipe(units, cfg, dataset):
    from tfvnas.loops.training import Trainer
    from tfvnas.models import zoo

    genotype = zoo.load_genotype(cfg["recipe_cell"])
    data = _resized(dataset, cfg)
    for lr in cfg["recipe_lrs"]:
        key = f"lr={lr}"
        if not units.take("recipe", key):
            continue
        print(f"== recipe {key}", flush=True)
        start = time.perf_counter()
        trainer = Trainer(genotype, _train_config(cfg, lr=lr, seed=0), data, verbose=0)
        trainer.train()
        _, val = trainer.evaluate("val")  # the validation split only
        units.finish({"kind": "recipe", "key": key, "lr": lr, "val_accuracy": val,
                          "seconds": round(time.perf_counter() - start, 1)})


def chosen_lr(units):
    recipes = units.of_kind("recipe")
    if not recipes:
        raise SystemExit("experiment_collapse: run the recipe phase first (the learning rate is chosen there)")
    return max(recipes, key=lambda r: r["val_accuracy"])["lr"]


def _searches(units, kind, seeds, config, dataset, methods, record):
    """The search units of a phase: every method and seed not finished, each `record(result)` appended."""
    from tfvnas.loops.searching import search

    for seed in seeds:
        for method in methods:
            key = f"{method}-seed{seed}"
            if not units.take(kind, key):
                continue
            print(f"== {kind} {key}", flush=True)
            start = time.perf_counter()
            run_dir = os.path.join(units.out_dir, kind, key)
            result = search(dataset, preset="quick", config={**config, **METHOD_CONFIGS[method]},
                            seed=seed, out_dir=run_dir, resume=_resumable(run_dir), verbose=0)
            units.finish({"kind": kind, "key": key, "method": method, "seed": seed,
                          "seconds": round(time.perf_counter() - start, 1), **record(result)})


def phase_search(units, cfg, dataset, methods):
    def record(result):
        last = result.history[-1]
        return {"epochs": len(result.history), "steps": last["step"], "converged": result.converged(),
                "pruned_share": last["pruned_share"], "stable_epochs": last["stable_epochs"],
                "genotype": result.genotype.to_dict(), **cell_statistics(result.genotype)}

    _searches(units, "search", cfg["seeds"], cfg["search"], dataset, methods, record)


def _cells(units, cfg):
    """`(name, group, genotype)` of every cell the train phase trains."""
    from tfvnas import config as config_lib
    from tfvnas.models import zoo
    from tfvnas.models.derivation import random_genotype
    from tfvnas.models.genotype import Genotype

    cells = [(r["key"], r["method"], Genotype.from_dict(r["genotype"])) for r in units.of_kind("search")]
    ops = config_lib.preset("quick").op_names
    nodes = cfg["search"].get("nodes", 4)
    for i in range(cfg["random_cells"]):
        cells.append((f"random-{i}", "random", random_genotype(ops, nodes=nodes, rng=np.random.default_rng(1000 + i))))
    cells += [(f"zoo-{name}", "zoo", zoo.load_genotype(name)) for name in cfg["zoo"]]
    return cells


def phase_train(units, cfg, dataset):
    from tfvnas.loops.training import train

    lr = chosen_lr(units)
    data = _resized(dataset, cfg)
    for name, group, genotype in _cells(units, cfg):
        for weights in ("sparse", "dense"):
            key = f"{name}-{weights}"
            if not units.take("train", key):
                continue
            print(f"== train {key}", flush=True)
            start = time.perf_counter()
            run_dir = os.path.join(units.out_dir, "train", key)
            result = train(genotype, data, config=_train_config(cfg, lr=lr, weight_vd=weights == "sparse"),
                           seed=0, out_dir=run_dir, resume=_resumable(run_dir), verbose=0)
            logits = result.model.predict(data.x_test, batch_size=500, verbose=0)
            correct = np.argmax(logits, -1) == data.y_test
            p = result.parameters
            units.finish({
                "kind": "train", "key": key, "cell": name, "group": group, "weights": weights,
                "genotype_hash": genotype.hash(), "seconds": round(time.perf_counter() - start, 1),
                "test_accuracy": result.test_accuracy, "test_accuracy_check": float(correct.mean()),
                "val_accuracy": result.history[-1]["val_accuracy"],
                "test_images": int(correct.size), "test_correct": pack_correct(correct),
                "nonzero_params": p["nonzero"], "dense_params": p["dense"],
                "nonzero_params_shrunk": p["shrunk"]["nonzero"], "kernel_sparsity": p["kernel_sparsity"],
                **cell_statistics(genotype),
            })


def phase_collapse(units, cfg, dataset, methods):
    def record(result):
        return {"arch_updates": _arch_updates(result.history), "per_epoch": _per_epoch(result.history)}

    _searches(units, "collapse", cfg["collapse_seeds"], cfg["collapse"], dataset, methods, record)


def _warmup_steps(history):
    """The steps of the `arch_warmup` epochs at the start (no gate update: no `arch_loss`)."""
    warm = [r for r in history if r["arch_loss"] is None]
    return warm[-1]["step"] if warm else 0


def _arch_updates(history):
    return history[-1]["step"] - _warmup_steps(history)


def _per_epoch(history):
    """The derived normal cell after every epoch of architecture updates, numbered from 1 (warm-up left out)."""
    from tfvnas.models.genotype import Genotype

    per_epoch, warm = [], _warmup_steps(history)
    for record in (r for r in history if r["arch_loss"] is not None):
        stats = cell_statistics(Genotype.from_dict(record["genotype"]))
        per_epoch.append({"epoch": len(per_epoch) + 1, "step": record["step"] - warm,
                          "parameter_free_share": stats["normal_parameter_free_share"],
                          "skip_count": stats["normal_skips"], "pruned_share": record["pruned_share"]})
    return per_epoch


def record_partial_collapses(units, cfg, methods):
    """A `collapse_partial` line for each unfinished long search: its epochs so far, from its last checkpoint.

    Checkpoint states are written atomically, so the latest one reads even
    while the search runs. It does not mark the unit done (the search
    continues from the checkpoint when the phase runs again); the report
    shows it, marked partial, until the finished unit's line replaces it.
    """
    from tfvnas.runs import latest_state

    for seed in cfg["collapse_seeds"]:
        for method in methods:
            key = f"{method}-seed{seed}"
            run_dir = os.path.join(units.out_dir, "collapse", key)
            if units.done("collapse", key) or not _resumable(run_dir):
                continue
            history = latest_state(run_dir, "search")["history"]
            planned = {**cfg["collapse"], **METHOD_CONFIGS[method]}
            per_epoch = _per_epoch(history)
            if per_epoch:  # not while the weights warm up (`arch_warmup`)
                units.append({"kind": "collapse_partial", "key": key, "method": method, "seed": seed,
                                  "arch_updates": _arch_updates(history),
                                  "planned_epochs": planned["epochs"] - planned.get("arch_warmup", 0),
                                  "per_epoch": per_epoch})


# ---------------------------------------------------------------------------
# Report


def _correct(record):
    return unpack_correct(record["test_correct"], record["test_images"])


def paired_bootstrap(a, b, samples=10000, seed=0):
    """Mean accuracy of cells `a` minus that of cells `b`, resampling the test images (paired).

    `a`, `b`: boolean arrays (cells, images) of per-image correctness. Returns
    the observed difference, a 95% interval and the share of resamples at or
    below zero (a one-sided p-value for "a is better").
    """
    rng = np.random.default_rng(seed)
    n = a.shape[1]
    per_image = a.mean(0) - b.mean(0)
    diffs = np.array([per_image[rng.integers(0, n, n)].mean() for _ in range(samples)])
    return {"difference": float(per_image.mean()), "low": float(np.percentile(diffs, 2.5)),
            "high": float(np.percentile(diffs, 97.5)), "p_at_or_below_zero": float(np.mean(diffs <= 0))}


def _ms(values, fmt="{:.4f}"):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(statistics.stdev(values))}"


def _group(trains, group, weights):
    return [r for r in trains if r["group"] == group and r["weights"] == weights]


def targets(records):
    """The issue's three targets, each `(target, measured, verdict)`; verdicts 'met', 'missed' or 'not yet run'."""
    null = next(r for r in records if r["kind"] == "null")
    trains = [r for r in records if r["kind"] == "train"]
    rows = []
    for weights in ("sparse", "dense"):
        v = [r["test_accuracy"] for r in _group(trains, "vinnas", weights)]
        rnd = [r["test_accuracy"] for r in _group(trains, "random", weights)]
        target = f"VINNAS cells ({weights}) above the random-cell mean by more than the combined standard error"
        if len(v) < 2 or len(rnd) < 2:
            rows.append((target, f"{len(v)} VINNAS and {len(rnd)} random cells trained", "not yet run"))
            continue
        diff = statistics.mean(v) - statistics.mean(rnd)
        se = (statistics.variance(v) / len(v) + statistics.variance(rnd) / len(rnd)) ** 0.5
        rows.append((target, f"{diff:+.4f} against a combined standard error of {se:.4f} "
                             f"({len(v)} and {len(rnd)} cells)", "met" if diff > se else "missed"))
    v, d = _group(trains, "vinnas", "sparse"), _group(trains, "darts", "dense")
    target = "VINNAS sparse within 0.5 points of DARTS dense, with at least 2x fewer non-zero trainable parameters"
    if v and d:
        diff = statistics.mean(r["test_accuracy"] for r in v) - statistics.mean(r["test_accuracy"] for r in d)
        ratio = statistics.mean(r["nonzero_params"] for r in d) / statistics.mean(r["nonzero_params"] for r in v)
        rows.append((target, f"accuracy {100 * diff:+.2f} points, {ratio:.2f}x fewer non-zero parameters "
                             f"({len(v)} and {len(d)} cells)", "met" if diff >= -0.005 and ratio >= 2 else "missed"))
    else:
        rows.append((target, f"{len(v)} VINNAS sparse and {len(d)} DARTS dense cells trained", "not yet run"))
    searches = [r for r in records if r["kind"] == "search" and r["method"] == "vinnas"]
    collapse = [r for r in records if r["kind"] == "collapse" and r["method"] == "darts"]
    mean = null["parameter_free_share"]["mean"]
    nmean, nstd = null["normal_parameter_free_share"]["mean"], null["normal_parameter_free_share"]["std"]
    if searches and collapse:
        share = statistics.mean(r["parameter_free_share"] for r in searches)
        darts_last = statistics.mean(r["per_epoch"][-1]["parameter_free_share"] for r in collapse)
        met = share <= mean and darts_last > nmean + nstd
        rows.append(("VINNAS cells' parameter-free share at or below the random expectation, while DARTS' long "
                     "search rises above the random band",
                     f"VINNAS {share:.2f} against {mean:.2f} ({len(searches)} searches); DARTS' last normal cell "
                     f"{darts_last:.2f} against the band's top {nmean + nstd:.2f}", "met" if met else "missed"))
    else:
        rows.append(("VINNAS parameter-free share at or below random, DARTS' long search above the band",
                     f"{len(searches)} VINNAS searches, {len(collapse)} DARTS long searches", "not yet run"))
    return rows


def report(units, doc):
    from tfvnas.pictures import charts

    records = units.read()
    null = next(r for r in records if r["kind"] == "null")
    trains = [r for r in records if r["kind"] == "train"]
    searches = [r for r in records if r["kind"] == "search"]
    lines = []
    recipes = [r for r in records if r["kind"] == "recipe"]
    if recipes:
        lines += ["Training recipe, chosen on the validation split: "
                  + "; ".join(f"lr {r['lr']}: val accuracy {r['val_accuracy']:.4f}" for r in recipes)
                  + f" (kept lr {chosen_lr(units)}).", ""]
    if trains:
        lines += ["| group | weights | cells | test accuracy | non-zero params | after dead-channel elimination | "
                  "dense params | parameter-free share | distinct op types |",
                  "|---|---|---|---|---|---|---|---|---|"]
    else:
        lines += ["No cell has been trained yet (the `train` phase).", ""]
    groups = ("vinnas", "darts", "random", "zoo")
    for group in groups:
        for weights in ("sparse", "dense"):
            rs = _group(trains, group, weights)
            if not rs:
                continue
            lines.append(
                f"| {group} | {weights} | {len(rs)} | {_ms([r['test_accuracy'] for r in rs])} | "
                f"{_ms([r['nonzero_params'] for r in rs], '{:,.0f}')} | "
                f"{_ms([r['nonzero_params_shrunk'] for r in rs], '{:,.0f}')} | "
                f"{_ms([r['dense_params'] for r in rs], '{:,.0f}')} | "
                f"{_ms([r['parameter_free_share'] for r in rs], '{:.2f}')} | "
                f"{_ms([r['distinct_ops'] for r in rs], '{:.1f}')} |")
    p, d = null["parameter_free_share"], null["distinct_ops"]
    lines += ["", f"Random null ({null['samples']} genotypes drawn uniformly, no training): parameter-free "
              f"share {p['mean']:.2f} ± {p['std']:.2f}, distinct op types {d['mean']:.1f} ± {d['std']:.1f}, "
              f"normal cell's parameter-free share {null['normal_parameter_free_share']['mean']:.2f} ± "
              f"{null['normal_parameter_free_share']['std']:.2f}, normal-cell skips {null['normal_skips']['mean']:.2f} ± "
              f"{null['normal_skips']['std']:.2f}.", ""]
    if searches:
        lines += ["| search | seconds | architecture updates | converged | pruned normal / reduce | "
                  "parameter-free share | normal cell: parameter-free share, skips | genotype |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in searches:
            share = r["pruned_share"]
            lines.append(f"| {r['key']} | {r['seconds']:.0f} | {r['steps']} | {'yes' if r['converged'] else 'no'} | "
                         f"{share['normal']:.0%} / {share['reduce']:.0%} | {r['parameter_free_share']:.2f} | "
                         f"{r['normal_parameter_free_share']:.2f}, {r['normal_skips']} | "
                         + ", ".join(f"{k} {v}" for k, v in r["op_histogram"].items()) + " |")
        lines.append("")
    if trains:
        lines += ["Every trained cell (test accuracy; non-zero trainable parameters):", "",
                  "| cell | sparse | dense | parameter-free share | normal-cell skips |", "|---|---|---|---|---|"]
        by_cell = {}
        for r in trains:
            by_cell.setdefault(r["cell"], {})[r["weights"]] = r
        for cell, runs in by_cell.items():
            cols = [f"{runs[w]['test_accuracy']:.4f} ({runs[w]['nonzero_params']:,})" if w in runs else "-"
                    for w in ("sparse", "dense")]
            first = next(iter(runs.values()))
            lines.append(f"| {cell} | {cols[0]} | {cols[1]} | {first['parameter_free_share']:.2f} | "
                         f"{first['normal_skips']} |")
        lines.append("")
    comparisons = []
    for weights in ("sparse", "dense"):
        vinnas = _group(trains, "vinnas", weights)
        for other in ("random", "darts"):
            rs = _group(trains, other, weights)
            if vinnas and rs:
                boot = paired_bootstrap(np.stack([_correct(r) for r in vinnas]),
                                        np.stack([_correct(r) for r in rs]))
                comparisons.append((weights, other, boot))
    if comparisons:
        lines += ["Paired bootstrap over the test images (10,000 resamples), mean accuracy of the VINNAS cells "
                  "minus that of the other group's cells:", "",
                  "| weights | against | difference | 95% interval | resamples at or below 0 |", "|---|---|---|---|---|"]
        lines += [f"| {w} | {o} | {b['difference']:+.4f} | [{b['low']:+.4f}, {b['high']:+.4f}] | "
                  f"{b['p_at_or_below_zero']:.4f} |" for w, o, b in comparisons]
        lines.append("")
    pictures = os.path.join(os.path.dirname(doc), "results")
    os.makedirs(pictures, exist_ok=True)
    points = [{"label": r["cell"], "group": f"{r['group']} ({r['weights']})", "nonzero_params": r["nonzero_params"],
               "accuracy": r["test_accuracy"]} for r in trains]
    if points:
        charts.pareto_png(points, os.path.join(pictures, "fashion_pareto.png"))
        lines += ["![test accuracy against non-zero parameters](results/fashion_pareto.png)", ""]
    collapses = [r for r in records if r["kind"] == "collapse"]
    finished = {r["key"] for r in collapses}
    partials = {}
    for r in records:  # the latest partial line of each unfinished long search
        if r["kind"] == "collapse_partial" and r["key"] not in finished:
            partials[r["key"]] = r
    collapses += list(partials.values())
    if collapses:
        series = {}
        for r in collapses:
            series.setdefault(r["method"], []).append(
                [{"epoch": e["epoch"], "parameter_free_share": e["parameter_free_share"],
                  "skip_count": e["skip_count"]} for e in r["per_epoch"]])
        band = {"parameter_free_share": (null["normal_parameter_free_share"]["mean"],
                                         null["normal_parameter_free_share"]["std"]),
                "skip_count": (null["normal_skips"]["mean"], null["normal_skips"]["std"])}
        charts.collapse_png(series, os.path.join(pictures, "fashion_collapse.png"), band=band)
        lines += ["| long search | architecture updates | seconds | last epoch's normal cell: parameter-free share, "
                  "skips |", "|---|---|---|---|"]
        for r in collapses:
            name, seconds = r["key"], "-"
            if r["kind"] == "collapse_partial":
                name += f" (partial: {len(r['per_epoch'])} of {r['planned_epochs']} epochs)"
            else:
                seconds = f"{r['seconds']:.0f}"
            last = r["per_epoch"][-1]
            lines.append(f"| {name} | {r['arch_updates']} | {seconds} | "
                         f"{last['parameter_free_share']:.2f}, {last['skip_count']} |")
        lines += ["", "![the derived normal cell per epoch of the long searches](results/fashion_collapse.png)", ""]
    lines += ["| target | measured | verdict |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {v} |" for t, m, v in targets(records)]
    lines.append("")
    begin, end = "<!-- evidence:begin -->", "<!-- evidence:end -->"
    with open(doc, encoding="utf-8") as f:
        text = f.read()
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(doc, "w", encoding="utf-8") as f:
        f.write(f"{head}{begin}\n\n" + "\n".join(lines) + f"\n{end}{tail}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a pipeline check in minutes (tiny budget)")
    parser.add_argument("--out", default=None, help="output folder (default runs/evidence[-quick])")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated, of: {', '.join(PHASES)}")
    parser.add_argument("--methods", default="vinnas,darts", help=f"comma-separated, of: {', '.join(METHOD_CONFIGS)}")
    parser.add_argument("--results", metavar="FILE",
                        help="the results file (default <out>/results.jsonl); it alone resumes and reports the study")
    parser.add_argument("--report", metavar="DOC", help="write the results section of DOC")
    parser.add_argument("--no-run", action="store_true", help="only --report")
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow's intra- and inter-op threads (0: its default); with 1, run one "
                             "driver per core: they share the units through claims in <out>/claims")
    parser.add_argument("--record-partial", action="store_true",
                        help="write the epochs so far of unfinished long searches (collapse) to the results file")
    args = parser.parse_args(argv)
    cfg = BUDGETS["quick" if args.quick else "full"]
    out = args.out or os.path.join("runs", "evidence-quick" if args.quick else "evidence")
    os.makedirs(out, exist_ok=True)
    units = Units(out, args.results)
    methods = [m for m in args.methods.split(",") if m]
    if not methods or set(methods) - set(METHOD_CONFIGS):
        parser.error(f"--methods must be a comma-separated list of {', '.join(METHOD_CONFIGS)}; "
                     f"received {args.methods!r}")
    if args.threads < 0:
        parser.error(f"--threads must be 0 (TensorFlow's default) or a positive count; received {args.threads}")
    if args.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    if not args.no_run:
        phases = [p for p in args.phases.split(",") if p]
        unknown = sorted(set(phases) - set(PHASES))
        if unknown:
            parser.error(f"unknown phases {unknown}; known: {', '.join(PHASES)}")
        dataset = None if phases == ["null"] else _dataset()
        run = {
            "null": lambda: phase_null(units, cfg),
            "recipe": lambda: phase_recipe(units, cfg, dataset),
            "search": lambda: phase_search(units, cfg, dataset, methods),
            "train": lambda: phase_train(units, cfg, dataset),
            "collapse": lambda: phase_collapse(units, cfg, dataset, methods),
        }
        for phase in (p for p in PHASES if p in phases):
            start = time.perf_counter()
            run[phase]()
            print(f"== phase {phase}: {time.perf_counter() - start:.0f} s", flush=True)
    if args.record_partial:
        record_partial_collapses(units, cfg, methods)
    if args.report:
        report(units, args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
