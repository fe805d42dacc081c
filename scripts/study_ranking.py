"""The ranking study: do the gates rank operations by value, and does the search then beat random cells?

On Fashion-MNIST (`../shared/data/fashion_mnist_50k_10k.npz`; a stratified
10% of the 50,000 training images is the validation split, the 10,000 test
images are read once per trained cell), in resumable units:

1. `energy`: the energy diagnostic of an untrained supernet
   (`tfvnas.models.energy`), with the plain identity and with `skip_bn`.
2. `s2`: R-DARTS' reduced space S2 = {skip_connect, sep_conv_3x3}, where a
   search that ranks by value keeps convolutions and one that ranks by
   energy keeps skips: the convolution share of the kept edges per arm over
   3 seeds.
3. `settings`: the VINNAS arms (normalisation, gate optimiser, KL weight,
   the two remedies) searched with 2 seeds each, every cell trained dense
   under the study's recipe and scored on the validation split; the arm with
   the best mean validation accuracy is the one the `final` phase uses.
   `--settings-arms` and `--settings-seeds` narrow it; the arm is chosen only
   once every listed arm has a trained cell for every listed seed.
4. `baselines`: the random and zoo cells of the final table, trained sparse
   and dense (they do not depend on the chosen arm, so a second driver can
   run them while the first runs the settings).
5. `final`: the chosen arm's remaining seeds (it waits while another live
   driver still runs the settings); then every cell (the chosen arm's 3
   searches, DARTS' 3, at least 8 random cells, the zoo) trained sparse and
   dense and scored on the test split, once.

`--report DOC` writes the tables between `ranking:begin` and `ranking:end`:
the S2 shares, the energy, the settings, seed-to-seed Kendall tau, the skip
origins against the random null, the accuracy table, the paired bootstrap,
the matched-size residuals and a power estimate.

    python scripts/study_ranking.py --out runs/ranking --results docs/results/fashion_ranking.jsonl \\
        --phases energy,s2,settings --threads 1 &          # one driver per core
    python scripts/study_ranking.py --out runs/ranking --results docs/results/fashion_ranking.jsonl \\
        --phases energy,s2,settings --threads 1
    python scripts/study_ranking.py --out runs/ranking --results docs/results/fashion_ranking.jsonl \\
        --reuse docs/results/fashion_evidence.jsonl       # DARTS, random and zoo units of the earlier study
    python scripts/study_ranking.py ... --phases settings,final --settings-seeds 0 &   # one driver per core
    python scripts/study_ranking.py ... --phases baselines,final --settings-seeds 0
    python scripts/study_ranking.py ... --report docs/RESULTS.md --no-run
"""

import argparse
import itertools
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import experiment_collapse as evidence  # noqa: E402  (the earlier study: cell statistics, recipe, bootstrap)
from units import Units  # noqa: E402

DATA = evidence.DATA
# The `quick` preset's proxy (14x14) on a subset of the training split, at the budget the recorded study ran
# (the preset's until 2026-12-07: 24 epochs of batch 64, bi-level, KL weight 16).
SEARCH = {"limit": 3200, "epochs": 24, "batch_size": 64, "optimization": "bilevel", "kl_weight": 16.0}
S2_OPS = ("skip_connect", "sep_conv_3x3")
SEEDS = (0, 1, 2)
SETTINGS_SEEDS = (0, 1)
RANDOM_CELLS = 8

# Each arm: SearchConfig fields over the `quick` preset and the gates' own cell (`_search_config`).
ARMS = {
    # The plain VINNAS rule on the supernet as it was: the identity unnormalised.
    "vinnas_plain": {"method": "vinnas", "skip_bn": False},
    # Every candidate's output comparable in scale: a parameter-free BN on the identity.
    "vinnas_bn": {"method": "vinnas", "skip_bn": True},
    # The gates' step: Adam at a tenth of the preset's rate.
    "vinnas_bn_lr003": {"method": "vinnas", "skip_bn": True, "arch_lr": 0.03},
    # The tempered KL at 4 instead of the preset's 16.
    "vinnas_bn_kl4": {"method": "vinnas", "skip_bn": True, "kl_weight": 4.0},
    # Perturbation-based selection (Wang et al., 2021) over the gates' survivors: the
    # `vinnas_bn` search itself (the selection runs after it), so not searched again.
    "vinnas_bn_pt": {"method": "vinnas", "skip_bn": True, "selection": "perturbation"},
    # DARTS-' auxiliary skip (Chu et al., 2021), its weight decaying from 1 to 0.
    "vinnas_bn_dartsminus": {"method": "vinnas", "skip_bn": True, "aux_skip": 1.0},
    # The DARTS baseline at its own hyperparameters.
    "darts": {"method": "darts", "op_set": "darts_none"},
}
SETTINGS_ARMS = ("vinnas_plain", "vinnas_bn", "vinnas_bn_lr003", "vinnas_bn_kl4", "vinnas_bn_pt",
                 "vinnas_bn_dartsminus")
# Arms whose cell is another arm's search, selected by perturbation.
PERTURBED = {"vinnas_bn_pt": "vinnas_bn"}
S2_ARMS = ("vinnas_plain", "vinnas_bn", "darts")
S2_SEEDS = SEEDS
QUICK = {  # a pipeline check in minutes
    "search": {"limit": 256, "epochs": 2, "layers": 3, "channels": 4, "batch_size": 32, "nodes": 2,
               "optimization": "bilevel"},
    "train": {"layers": 3, "channels": 4, "epochs": 1, "batch_size": 64, "kl_warmup": 0.2, "resolution": 14,
              "limit": 1000},
    "lr": 0.05,  # the pipeline check chooses nothing
}


# ---------------------------------------------------------------------------
# Statistics of cells and searches


def skip_origins(genotype):
    """`(skips from intermediate nodes, all skips)` of the normal cell."""
    pairs = [(op, inp) for node in genotype.normal for op, inp in node if op == "skip_connect"]
    return sum(inp >= 2 for _, inp in pairs), len(pairs)


def conv_share(genotype, cell_types=("normal", "reduce")):
    """The share of kept (op, input) pairs that are not `skip_connect` (in S2: convolutions)."""
    ops = [op for t in cell_types for node in getattr(genotype, t) for op, _ in node]
    return sum(op != "skip_connect" for op in ops) / len(ops)


def degenerate_nodes(genotype, k=2):
    """Nodes with fewer than `k` distinct inputs, or made only of stride-1 skips (copies of other states)."""
    bad = []
    for cell_type in ("normal", "reduce"):
        for i, node in enumerate(getattr(genotype, cell_type)):
            inputs = {inp for _, inp in node}
            stride1_skips = all(op == "skip_connect" and not (cell_type == "reduce" and inp < 2) for op, inp in node)
            if len(inputs) < min(k, 2 + i) or stride1_skips:
                bad.append(f"{cell_type} node {2 + i}")
    return bad


def skip_origin_null(op_names, nodes=4, samples=20000, seed=12345):
    """The random null of the normal cell's skip origins: share from intermediate nodes, per cell and pooled."""
    from tfvnas.models.derivation import random_genotype

    rng = np.random.default_rng(seed)
    inter = total = 0
    shares = []
    for _ in range(samples):
        i, t = skip_origins(random_genotype(op_names, nodes=nodes, rng=rng))
        inter, total = inter + i, total + t
        if t:
            shares.append(i / t)
    return {"pooled_share": inter / total, "mean": float(np.mean(shares)), "std": float(np.std(shares)),
            "samples": samples, "skips_per_cell": total / samples}


def skip_origin_tail(from_nodes, skips, null_share):
    """P(at least `from_nodes` of `skips` normal-cell skips come from intermediate nodes) when each does with the
    random null's pooled probability: a one-sided binomial tail (1.0 with no skips)."""
    from scipy.stats import binom

    return float(binom.sf(from_nodes - 1, skips, null_share)) if skips else 1.0


def skip_gap(log_alpha):
    """`(edges where the skip's log_alpha is the lower, edges, median |gap|)` of an S2 search's gate tables."""
    both = np.concatenate([np.asarray(log_alpha[t], float) for t in ("normal", "reduce")])
    skip, conv = both[:, S2_OPS.index("skip_connect")], both[:, S2_OPS.index("sep_conv_3x3")]
    return int(np.sum(skip < conv)), len(both), float(np.median(np.abs(skip - conv)))


def kendall_agreement(log_alphas):
    """Mean Kendall tau, over seed pairs, cell types and edges, of each edge's op ranking by log_alpha."""
    from scipy.stats import kendalltau

    taus = []
    for a, b in itertools.combinations(log_alphas, 2):
        for cell_type in ("normal", "reduce"):
            for row_a, row_b in zip(np.asarray(a[cell_type]), np.asarray(b[cell_type])):
                tau = kendalltau(row_a, row_b).statistic
                if np.isfinite(tau):
                    taus.append(tau)
    return (float(np.mean(taus)), len(taus)) if taus else (float("nan"), 0)


def top_op_agreement(log_alphas):
    """The share of (seed pair, cell type, edge) where the two searches' strongest op (lowest log_alpha) is the
    same; chance is 1 / the number of ops."""
    same = [np.argmin(row_a) == np.argmin(row_b)
            for a, b in itertools.combinations(log_alphas, 2) for cell_type in ("normal", "reduce")
            for row_a, row_b in zip(np.asarray(a[cell_type]), np.asarray(b[cell_type]))]
    return float(np.mean(same)), len(same)


def live_edge_agreement(log_alphas, threshold, samples=2000, seed=0):
    """How often two searches agree on whether an edge kept an op (some log_alpha below `threshold`, the
    searches' pruning threshold), against the same count of live edges placed at random: `(observed, null mean,
    null sd)` over seed pairs and cells."""
    rng = np.random.default_rng(seed)
    observed, null = [], []
    for a, b in itertools.combinations(log_alphas, 2):
        for cell_type in ("normal", "reduce"):
            live_a = np.asarray(a[cell_type]).min(1) < threshold
            live_b = np.asarray(b[cell_type]).min(1) < threshold
            observed.append(np.mean(live_a == live_b))
            null.append([np.mean(rng.permutation(live_a) == live_b) for _ in range(samples)])
    null_means = np.mean(np.asarray(null), 0)  # one mean over the pairs per simulated study
    return float(np.mean(observed)), float(np.mean(null_means)), float(np.std(null_means))


def _one_threshold(searches):
    """The pruning threshold the `searches` records share (records written before it was recorded used the
    config's default)."""
    from tfvnas import config as config_lib

    default = config_lib.SearchConfig().threshold
    found = {r.get("threshold", default) for r in searches}
    if len(found) != 1:
        raise SystemExit(f"study_ranking: the searches of one arm used different pruning thresholds: {sorted(found)}")
    return found.pop()


def null_kendall(num_ops, edges, pairs, samples=2000, seed=0):
    """Kendall tau of independent random rankings (the chance level) over as many edges: mean and std of the mean."""
    from scipy.stats import kendalltau

    rng = np.random.default_rng(seed)
    means = [np.mean([kendalltau(rng.permutation(num_ops), rng.permutation(num_ops)).statistic
                      for _ in range(edges * pairs)]) for _ in range(samples // 10)]
    return float(np.mean(means)), float(np.std(means))


# ---------------------------------------------------------------------------
# Units


def _dataset():
    from tfvnas import data as data_lib

    if not os.path.isfile(DATA):
        raise SystemExit(f"study_ranking: the Fashion-MNIST file is missing: {DATA}")
    return data_lib.load(DATA, seed=0)


def _search_config(arm, quick, **more):
    # The gates' cell unless the arm names another selection: the arms compare settings of the plain rule,
    # and perturbation selection is its own arm, run on the `vinnas_bn` search (`PERTURBED`).
    return {**(QUICK["search"] if quick else SEARCH), "selection": "gates", **ARMS[arm], **more}


def _energy(model, images):
    from tfvnas.models.energy import energy_summary, node_energy

    return energy_summary(node_energy(model, images))


def run_search(units, kind, arm, seed, dataset, quick, **more):
    """One search unit: the genotype, its statistics, the energy at the end, the last log_alpha."""
    from tfvnas.loops.searching import search

    key = f"{arm}-seed{seed}"
    if not units.take(kind, key):
        return
    print(f"== {kind} {key}", flush=True)
    start = time.perf_counter()
    run_dir = os.path.join(units.out_dir, kind, key)
    result = search(dataset, preset="quick", config=_search_config(arm, quick, **more), seed=seed, out_dir=run_dir,
                    resume=evidence._resumable(run_dir), verbose=0)
    seconds = round(time.perf_counter() - start, 1)
    last = result.history[-1]
    images = dataset.resized(result.config.resolution).x_train[:64] if result.config.resolution else \
        dataset.x_train[:64]
    inter, skips = skip_origins(result.genotype)
    perturbed = {}
    if arm in PERTURBED.values():
        perturbed = _perturbation(result, dataset)
    units.finish({
        "kind": kind, "key": key, "arm": arm, "method": result.config.method, "seed": seed, "seconds": seconds,
        "epochs": len(result.history), "steps": last["step"], "settled": bool(last.get("settled")),
        "converged": result.converged(), "pruned_share": last["pruned_share"],
        "genotype": result.genotype.to_dict(), "degenerate_nodes": degenerate_nodes(result.genotype),
        "conv_share": conv_share(result.genotype), "normal_conv_share": conv_share(result.genotype, ("normal",)),
        "skips_from_nodes": inter, "normal_skips_all": skips,
        "log_alpha": last["log_alpha"], "threshold": result.config.threshold,
        "supernet_val_accuracy": last["val_accuracy"],
        "energy_end": _energy(result.model, images),
        "selection": None if result.selection is None else {
            k: result.selection[k] for k in ("base_accuracy", "reduced_accuracy", "gates_genotype")},
        **perturbed,
        **evidence.cell_statistics(result.genotype),
    })


def _perturbation(result, dataset, images=1000):
    """The perturbation-selected genotype of a finished search (`tfvnas.loops.selection`), and its record."""
    import tensorflow as tf

    from tfvnas.loops.selection import perturbation_genotype

    data = dataset.resized(result.config.resolution) if result.config.resolution else dataset
    x, y = data.x_val[:images], data.y_val[:images]
    model = result.model
    logits = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True)

    def accuracy():
        predictions = np.concatenate([np.argmax(logits(tf.constant(x[i:i + 250])).numpy(), -1)
                                      for i in range(0, len(x), 250)])
        return float(np.mean(predictions == y))

    genotype, record = perturbation_genotype(model, accuracy, k=result.config.top_k)
    return {"pt_genotype": genotype.to_dict(), "pt_base_accuracy": record["base_accuracy"],
            "pt_reduced_accuracy": record["reduced_accuracy"], "pt_same_as_gates": genotype == result.genotype,
            "pt_degenerate_nodes": degenerate_nodes(genotype)}


def phase_energy(units, dataset, quick):
    from tfvnas import config as config_lib
    from tfvnas.loops.searching import Searcher

    for arm in ("vinnas_plain", "vinnas_bn"):
        key = f"init-{arm}"
        if not units.take("energy", key):
            continue
        cfg = config_lib.preset("quick").replace(**_search_config(arm, quick))
        searcher = Searcher(cfg, dataset, verbose=0)
        units.finish({"kind": "energy", "key": key, "arm": arm,
                      "summary": _energy(searcher.model, searcher.dataset.x_train[:64])})


def phase_s2(units, dataset, quick):
    for seed in SEEDS[:1] if quick else S2_SEEDS:
        for arm in S2_ARMS:
            ops = ("none",) + S2_OPS if arm == "darts" else S2_OPS
            run_search(units, "s2", arm, seed, dataset, quick, ops=list(ops))


def _train(units, kind, key, cell, group, genotype, dataset, quick, weights, split):
    """One training unit of `genotype` under the study's recipe, scored on `split` ('val' or 'test').

    A 'val' unit never reads the test split; a 'test' unit is the final table's, read once.
    """
    from tfvnas.loops.training import Trainer, train

    if not units.take(kind, key):
        return
    print(f"== {kind} {key}", flush=True)
    budget = {"train": QUICK["train"]} if quick else evidence.BUDGETS["full"]
    data = evidence._resized(dataset, budget)
    start = time.perf_counter()
    lr = QUICK["lr"] if quick else recipe_lr(units)
    config = evidence._train_config(budget, lr=lr, weight_vd=weights == "sparse", seed=0)
    record = {"kind": kind, "key": key, "cell": cell, "group": group, "weights": weights,
              "genotype_hash": genotype.hash(), **evidence.cell_statistics(genotype)}
    if split == "val":
        trainer = Trainer(genotype, config, data, verbose=0)
        trainer.train()
        record["val_accuracy"] = trainer.evaluate("val")[1]
    else:
        run_dir = os.path.join(units.out_dir, kind, key)
        result = train(genotype, data, config=config, out_dir=run_dir, resume=evidence._resumable(run_dir),
                       verbose=0)
        logits = result.model.predict(data.x_test, batch_size=500, verbose=0)
        correct = np.argmax(logits, -1) == data.y_test
        p = result.parameters
        record.update(val_accuracy=result.history[-1]["val_accuracy"], test_accuracy=result.test_accuracy,
                      test_images=int(correct.size), test_correct=evidence.pack_correct(correct),
                      nonzero_params=p["nonzero"], dense_params=p["dense"],
                      nonzero_params_shrunk=p["shrunk"]["nonzero"], kernel_sparsity=p["kernel_sparsity"])
    record["seconds"] = round(time.perf_counter() - start, 1)
    units.finish(record)


def recipe_lr(units):
    recipes = units.of_kind("recipe")
    if not recipes:
        raise SystemExit("study_ranking: no recipe in the results file; pass --reuse with the earlier study's "
                         "results (its learning rate was chosen on the validation split) or run its recipe phase")
    return max(recipes, key=lambda r: r["val_accuracy"])["lr"]


def phase_settings(units, dataset, quick):
    from tfvnas.models.genotype import Genotype

    for seed in SETTINGS_SEEDS[:1] if quick else SETTINGS_SEEDS:
        for arm in SETTINGS_ARMS:
            searched = PERTURBED.get(arm, arm)
            run_search(units, "search", searched, seed, dataset, quick)
            record = units.get("search", f"{searched}-seed{seed}")
            if record is not None:
                genotype = record["pt_genotype"] if arm in PERTURBED else record["genotype"]
                _train(units, "valtrain", f"{arm}-seed{seed}", f"{arm}-seed{seed}", arm,
                       Genotype.from_dict(genotype), dataset, quick, "dense", "val")


def chosen_arm(units, quick=False):
    """The settings arm with the best mean validation accuracy of its trained cells (every seed trained)."""
    by_arm = {}
    for r in units.of_kind("valtrain"):
        by_arm.setdefault(r["group"], []).append(r["val_accuracy"])
    seeds = 1 if quick else len(SETTINGS_SEEDS)
    missing = [a for a in SETTINGS_ARMS if len(by_arm.get(a, ())) < seeds]
    if missing:
        raise SystemExit(f"study_ranking: the settings phase has not finished (arms without their {seeds} "
                         f"trained cell(s): {', '.join(missing)}); the arm is chosen there")
    return max(SETTINGS_ARMS, key=lambda a: statistics.mean(by_arm[a]))


def final_cells(units, quick, searched_cells=True):
    """`(name, group, genotype)` of every cell the final table trains (`searched_cells=False`: only the
    random and zoo cells, which do not depend on the chosen arm)."""
    from tfvnas import config as config_lib
    from tfvnas.models import zoo
    from tfvnas.models.derivation import random_genotype
    from tfvnas.models.genotype import Genotype

    arm = chosen_arm(units, quick) if searched_cells else None
    cells = []
    searched = PERTURBED.get(arm, arm)
    for r in units.of_kind("search") if searched_cells else ():
        if r["arm"] == searched:
            genotype = r["pt_genotype"] if arm in PERTURBED else r["genotype"]
            cells.append((f"{arm}-seed{r['seed']}", "vinnas", Genotype.from_dict(genotype)))
        elif r["arm"] == "darts":
            cells.append((r["key"], "darts", Genotype.from_dict(r["genotype"])))
    ops = config_lib.preset("quick").op_names
    nodes = 2 if quick else 4
    for i in range(1 if quick else RANDOM_CELLS):
        cells.append((f"random-{i}", "random", random_genotype(ops, nodes=nodes, rng=np.random.default_rng(1000 + i))))
    names = ("darts_v2",) if quick else evidence.BUDGETS["full"]["zoo"]
    cells += [(f"zoo-{name}", "zoo", zoo.load_genotype(name)) for name in names]
    return cells


def phase_baselines(units, dataset, quick):
    """The final table's random and zoo cells, which do not wait for the settings phase."""
    for name, group, genotype in final_cells(units, quick, searched_cells=False):
        for weights in ("sparse", "dense"):
            _train(units, "train", f"{name}-{weights}", name, group, genotype, dataset, quick, weights, "test")


def _settings_running(units):
    """Whether a live process holds a claim on a search or a validation training."""
    return units.running("search", "valtrain")


def phase_final(units, dataset, quick, wait=60):
    while True:  # another driver may still run the settings phase: wait for it rather than choose early
        try:
            arm = chosen_arm(units, quick)
            break
        except SystemExit as waiting:
            if not _settings_running(units):
                raise
            print(f"{waiting}; waiting {wait} s for the driver that runs it", flush=True)
            time.sleep(wait)
    print(f"== final: the chosen arm is {arm}", flush=True)
    for seed in SEEDS[:1] if quick else SEEDS:
        run_search(units, "search", PERTURBED.get(arm, arm), seed, dataset, quick)
        run_search(units, "search", "darts", seed, dataset, quick)
    # Train what is listed, then list again: a search another driver was still running when the list was made
    # adds its cell later (without this, that driver alone would train both of its units).
    cells = final_cells(units, quick)
    while True:
        for name, group, genotype in cells:
            for weights in ("sparse", "dense"):
                _train(units, "train", f"{name}-{weights}", name, group, genotype, dataset, quick, weights, "test")
        listed, cells = len(cells), final_cells(units, quick)
        if len(cells) > listed:
            continue
        if not _settings_running(units):
            break
        print(f"a search is still running in another driver; waiting {wait} s for its cell", flush=True)
        time.sleep(wait)


def reuse(units, source):
    """Copies the earlier study's units that this one shares: its recipe, DARTS' searches, and the trainings
    of DARTS', the random and the zoo cells (same code path, recipe and seeds), each marked `reused`."""
    from tfvnas import files

    have = {(r["kind"], r["key"]) for r in units.read()}
    copied = 0
    for r in files.read_json_lines(source):
        take = (r["kind"] == "recipe"
                or (r["kind"] == "search" and r["method"] == "darts")
                or (r["kind"] == "train" and r["group"] in ("darts", "random", "zoo")))
        if not take or (r["kind"], r["key"]) in have:
            continue
        r = {**r, "reused": os.path.basename(source)}
        if r["kind"] == "search":
            r["arm"] = "darts"
        units.append(r)
        copied += 1
    print(f"reused {copied} units of {source}")


# ---------------------------------------------------------------------------
# Report


def _ms(values, fmt="{:.4f}"):
    return evidence._ms(values, fmt)


def matched_size(trains, weights):
    """The random cells' fit of test accuracy on log non-zero parameters, and every other cell's residual."""
    rnd = [r for r in trains if r["group"] == "random" and r["weights"] == weights]
    if len(rnd) < 3:
        return None
    x = np.log([r["nonzero_params"] for r in rnd])
    y = np.array([r["test_accuracy"] for r in rnd])
    slope, intercept = np.polyfit(x, y, 1)
    residual_sd = float(np.std(y - (intercept + slope * x), ddof=2))
    out = {}
    for r in trains:
        if r["weights"] == weights:
            out[r["cell"]] = (r["group"], float(r["test_accuracy"] - (intercept + slope * np.log(r["nonzero_params"]))))
    return {"slope_per_doubling": float(slope * np.log(2)), "intercept": float(intercept),
            "residual_sd": residual_sd, "residuals": out, "random_cells": len(rnd)}


def power(between_sd, n_a, n_b, z_alpha=1.645, z_power=0.842):
    """The smallest mean difference a one-sided test at 5% detects with 80% power, given the cell-to-cell sd."""
    return (z_alpha + z_power) * between_sd * (1.0 / n_a + 1.0 / n_b) ** 0.5


def report(units, doc, quick=False):
    records = units.read()
    lines = []
    energy = {r["arm"]: r["summary"] for r in records if r["kind"] == "energy"}
    if energy:
        lines += ["Energy at initialisation: each gated output's share of its node's energy, relative to an equal "
                  "share (1.00), by op type and input (the quick preset's supernet, 64 training images):", "",
                  "| op | " + " | ".join(f"{a}: from a cell input | {a}: from a node" for a in energy) + " |",
                  "|---|" + "---|---|" * len(energy)]
        ops = [op for op in next(iter(energy.values())) if op != "state_energy"]
        for op in ops:
            lines.append(f"| {op} | " + " | ".join(
                f"{s[op].get('cell input', float('nan')):.2f} | {s[op].get('node', float('nan')):.2f}"
                for s in energy.values()) + " |")
        lines.append("")
        lines += [f"Mean square of the node states (nodes 2, 3, ...), {a}: "
                  + ", ".join(f"{v:.0f}" for v in s["state_energy"].values()) + "." for a, s in energy.items()]
        lines.append("")
    s2 = [r for r in records if r["kind"] == "s2"]
    if s2:
        lines += ["S2 = {skip_connect, sep_conv_3x3}: the share of kept edges that are convolutions (mean ± std "
                  "over seeds), and how the gates of an edge's two ops stand at the end (VINNAS: the skip's "
                  "`log_alpha` lower, i.e. stronger; the median gap between the two):", "",
                  "| arm | seeds | both cells | normal cell | normal skips from nodes / all | degenerate nodes | "
                  "pruned (mean of both tables) | edges where the skip is stronger | median gap |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for arm in [a for a in ARMS if any(r["arm"] == a for r in s2)]:
            rs = sorted((r for r in s2 if r["arm"] == arm), key=lambda r: r["seed"])
            gaps = [skip_gap(r["log_alpha"]) for r in rs] if arm != "darts" else []
            stronger = ", ".join(f"{g[0]}/{g[1]}" for g in gaps) or "-"
            median = _ms([g[2] for g in gaps], "{:.2f}") if gaps else "-"
            lines.append(f"| {arm} | {len(rs)} | {_ms([r['conv_share'] for r in rs], '{:.2f}')} | "
                         f"{_ms([r['normal_conv_share'] for r in rs], '{:.2f}')} | "
                         f"{sum(r['skips_from_nodes'] for r in rs)} / {sum(r['normal_skips_all'] for r in rs)} | "
                         f"{sum(len(r['degenerate_nodes']) for r in rs)} | "
                         f"{_ms([np.mean(list(r['pruned_share'].values())) for r in rs], '{:.2f}')} | "
                         f"{stronger} | {median} |")
        lines.append("")
    searches = [r for r in records if r["kind"] == "search" and not r.get("reused")]
    valtrains = {r["key"]: r for r in records if r["kind"] == "valtrain"}
    if searches:
        lines += ["Searches on the full space (the `quick` proxy, 3,200 training images) and, for the settings, "
                  "the cell trained dense and scored on the validation split:", "",
                  "| search | seconds | steps | settled | pruned normal / reduce | supernet val acc | "
                  "cell val acc | parameter-free share | normal skips (from nodes) | degenerate nodes |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(searches, key=lambda r: (r["arm"], r["seed"])):
            v = valtrains.get(r["key"])
            share = r["pruned_share"]
            lines.append(f"| {r['key']} | {r['seconds']:.0f} | {r['steps']} | {'yes' if r['settled'] else 'no'} | "
                         f"{share['normal']:.0%} / {share['reduce']:.0%} | {r['supernet_val_accuracy']:.4f} | "
                         f"{'-' if v is None else format(v['val_accuracy'], '.4f')} | "
                         f"{r['parameter_free_share']:.2f} | {r['normal_skips_all']} ({r['skips_from_nodes']}) | "
                         f"{len(r['degenerate_nodes'])} |")
        lines.append("")
        by_arm = {}
        for key, v in valtrains.items():
            by_arm.setdefault(v["group"], []).append(v["val_accuracy"])
        if by_arm:
            lines += ["| settings arm | cells | validation accuracy (dense) |", "|---|---|---|"]
            lines += [f"| {a} | {len(v)} | {_ms(v)} |" for a, v in sorted(by_arm.items())]
            try:
                lines += ["", f"Chosen on the validation split: `{chosen_arm(units, quick)}`.", ""]
            except SystemExit:
                lines.append("")
        taus = []
        for arm in sorted({r["arm"] for r in searches}):
            rs = [r for r in searches if r["arm"] == arm]
            if len(rs) >= 2:
                las = [r["log_alpha"] for r in rs]
                tau, n = kendall_agreement(las)
                taus.append((arm, len(rs), tau, n, top_op_agreement(las)[0],
                             live_edge_agreement(las, _one_threshold(rs))))
        if taus:
            num_ops = len(np.asarray(searches[0]["log_alpha"]["normal"])[0])
            chance, chance_sd = null_kendall(num_ops, 14, 1)
            lines += [f"Seed-to-seed agreement (mean over seed pairs, both cells and every edge): each edge's op "
                      f"ranking by log_alpha (Kendall tau; chance is {chance:+.2f}, and the mean of 28 random edges "
                      f"spreads by ± {chance_sd:.2f}), each edge's strongest op (chance 1/{num_ops} = "
                      f"{1 / num_ops:.2f}), and whether an edge kept any op (against as many live edges placed at "
                      f"random):", "",
                      "| arm | searches | Kendall tau | edge pairs | same strongest op | same live edges (null) |",
                      "|---|---|---|---|---|---|"]
            lines += [f"| {a} | {s} | {t:+.3f} | {n} | {top:.2f} | {live[0]:.2f} ({live[1]:.2f} ± {live[2]:.2f}) |"
                      for a, s, t, n, top, live in taus]
            lines.append("")
    null = next((r for r in records if r["kind"] == "skip_null"), None)
    if null is not None and searches:
        lines += [f"Skip origins in the normal cell: random null {null['pooled_share']:.2f} of skips from "
                  f"intermediate nodes (per cell with a skip {null['mean']:.2f} ± {null['std']:.2f}; "
                  f"{null['skips_per_cell']:.2f} skips per cell); per arm, pooled over its searches:", "",
                  "| arm | normal skips | from intermediate nodes | share |", "|---|---|---|---|"]
        for arm in sorted({r["arm"] for r in searches}):
            rs = [r for r in searches if r["arm"] == arm]
            i, t = sum(r["skips_from_nodes"] for r in rs), sum(r["normal_skips_all"] for r in rs)
            lines.append(f"| {arm} | {t} | {i} | {i / t:.2f} |" if t else f"| {arm} | 0 | 0 | - |")
        lines.append("")
    try:
        chosen = chosen_arm(units, quick)
    except SystemExit:
        chosen = None
    trains = [_final_group(r, chosen) for r in records if r["kind"] == "train"]
    if trains:
        lines += _final_tables(trains)
    lines += _search_targets(records, chosen)
    begin, end = "<!-- ranking:begin -->", "<!-- ranking:end -->"
    with open(doc, encoding="utf-8") as f:
        text = f.read()
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(doc, "w", encoding="utf-8") as f:
        f.write(f"{head}{begin}\n\n" + "\n".join(lines) + f"\n{end}{tail}")


def _final_group(record, chosen):
    """A final-table training as the report groups it: 'vinnas' only for the chosen arm's cells; the
    cells of another VINNAS arm (trained while it was the choice) as 'vinnas:<arm>', shown beside them."""
    arm = record["cell"].rsplit("-seed", 1)[0]
    if record["group"] != "vinnas" or chosen is None or arm == chosen:
        return record
    return {**record, "group": f"vinnas:{arm}"}


def _final_tables(trains):
    lines = ["| group | weights | cells | test accuracy | non-zero params | dense params | parameter-free share |",
             "|---|---|---|---|---|---|---|"]
    others = sorted({r["group"] for r in trains if r["group"].startswith("vinnas:")})
    for group in ("vinnas", *others, "darts", "random", "zoo"):
        for weights in ("sparse", "dense"):
            rs = evidence._group(trains, group, weights)
            if rs:
                lines.append(f"| {group} | {weights} | {len(rs)} | {_ms([r['test_accuracy'] for r in rs])} | "
                             f"{_ms([r['nonzero_params'] for r in rs], '{:,.0f}')} | "
                             f"{_ms([r['dense_params'] for r in rs], '{:,.0f}')} | "
                             f"{_ms([r['parameter_free_share'] for r in rs], '{:.2f}')} |")
    lines += ["", "| cell | sparse | dense | parameter-free share | normal-cell skips | reused |", "|---|---|---|---|---|---|"]
    by_cell = {}
    for r in trains:
        by_cell.setdefault(r["cell"], {})[r["weights"]] = r
    for cell, runs in by_cell.items():
        cols = [f"{runs[w]['test_accuracy']:.4f} ({runs[w]['nonzero_params']:,})" if w in runs else "-"
                for w in ("sparse", "dense")]
        first = next(iter(runs.values()))
        lines.append(f"| {cell} | {cols[0]} | {cols[1]} | {first['parameter_free_share']:.2f} | "
                     f"{first['normal_skips']} | {'yes' if first.get('reused') else ''} |")
    lines.append("")
    rows = []
    for weights in ("sparse", "dense"):
        vinnas = evidence._group(trains, "vinnas", weights)
        for other in ("random", "darts"):
            rs = evidence._group(trains, other, weights)
            if vinnas and rs:
                boot = evidence.paired_bootstrap(np.stack([evidence._correct(r) for r in vinnas]),
                                                 np.stack([evidence._correct(r) for r in rs]))
                rows.append(f"| {weights} | {other} | {boot['difference']:+.4f} | [{boot['low']:+.4f}, "
                            f"{boot['high']:+.4f}] | {boot['p_at_or_below_zero']:.4f} |")
    if rows:
        lines += ["Paired bootstrap over the test images (10,000 resamples), mean accuracy of the VINNAS cells "
                  "minus that of the other group's:", "",
                  "| weights | against | difference | 95% interval | resamples at or below 0 |", "|---|---|---|---|---|",
                  *rows, ""]
    for weights in ("sparse", "dense"):
        fit = matched_size(trains, weights)
        if fit is None:
            continue
        res = fit["residuals"]
        groups = {}
        for cell, (group, value) in res.items():
            groups.setdefault(group, []).append(value)
        lines += [f"Matched size ({weights}): the {fit['random_cells']} random cells' fit gives "
                  f"{fit['slope_per_doubling'] * 100:+.2f} points per doubling of non-zero parameters (residual sd "
                  f"{fit['residual_sd'] * 100:.2f} points); each group's mean residual against it: "
                  + ", ".join(f"{g} {100 * statistics.mean(v):+.2f} ({len(v)})" for g, v in groups.items()) + " points.", ""]
    rnd = [r["test_accuracy"] for r in evidence._group(trains, "random", "dense")]
    nv = len(evidence._group(trains, "vinnas", "dense"))
    if len(rnd) >= 2 and nv:
        sd = statistics.stdev(rnd)
        lines += [f"Power: with the random cells' spread ({100 * sd:.2f} points, dense), {nv} searched and "
                  f"{len(rnd)} random cells detect a mean difference of {100 * power(sd, nv, len(rnd)):.2f} points "
                  f"(one-sided 5%, power 80%); the test split's own binomial noise per cell is "
                  f"{100 * (0.89 * 0.11 / 10000) ** 0.5:.2f} points.", ""]
    lines += _targets(trains)
    return lines


def _search_targets(records, chosen):
    """The issue's targets on the searches themselves: well-formed cells, skip origins (of the chosen arm), S2."""
    searches = [r for r in records if r["kind"] == "search" and not r.get("reused")]
    rows = ["| target (searches) | measured | verdict |", "|---|---|---|"]
    if searches:
        bad = [(r["key"], r["degenerate_nodes"]) for r in searches if r["degenerate_nodes"]]
        rows.append(f"| no degenerate node (fewer than top_k inputs, or only stride-1 skips) in any searched "
                    f"genotype | {len(bad)} of {len(searches)} searches have one"
                    + (": " + "; ".join(f"{k}: {', '.join(v)}" for k, v in bad) if bad else "")
                    + f" | {'met' if not bad else 'missed'} |")
    null = next((r for r in records if r["kind"] == "skip_null"), None)
    finals = [r for r in searches if chosen is not None and r["arm"] == PERTURBED.get(chosen, chosen)]
    if null is not None and finals:
        if chosen in PERTURBED:  # the cells perturbation selected, not the gates'
            from tfvnas.models.genotype import Genotype

            counts = [skip_origins(Genotype.from_dict(r["pt_genotype"])) for r in finals]
        else:
            counts = [(r["skips_from_nodes"], r["normal_skips_all"]) for r in finals]
        i, t = sum(c[0] for c in counts), sum(c[1] for c in counts)
        tail = skip_origin_tail(i, t, null["pooled_share"])
        rows.append(f"| the normal cells' skips come from intermediate nodes no more often than the random null's "
                    f"{null['pooled_share']:.2f} (one-sided binomial test at 5%) | {i} of {t} skips "
                    f"({len(finals)} searches): P(at least {i} | null) = {tail:.2f} | "
                    f"{'met' if tail >= 0.05 else 'missed'} |")
    s2 = [r for r in records if r["kind"] == "s2" and r["arm"] != "darts"]
    for arm in sorted({r["arm"] for r in s2}):
        rs = [r for r in s2 if r["arm"] == arm]
        share = statistics.mean(r["conv_share"] for r in rs)
        rows.append(f"| S2: {arm} keeps a convolution on at least 75% of the kept edges (mean over seeds) | "
                    f"{share:.2f} over {len(rs)} seeds | {'met' if share >= 0.75 and len(rs) >= 3 else 'missed'} |")
    rows.append("")
    return rows


def _targets(trains):
    rows = ["| target | measured | verdict |", "|---|---|---|"]
    for weights in ("sparse", "dense"):
        v = [r["test_accuracy"] for r in evidence._group(trains, "vinnas", weights)]
        rnd = [r["test_accuracy"] for r in evidence._group(trains, "random", weights)]
        if len(v) >= 2 and len(rnd) >= 2:
            diff = statistics.mean(v) - statistics.mean(rnd)
            se = (statistics.variance(v) / len(v) + statistics.variance(rnd) / len(rnd)) ** 0.5
            rows.append(f"| VINNAS ({weights}) above the random mean by more than the combined standard error | "
                        f"{diff:+.4f} against {se:.4f} ({len(v)} and {len(rnd)} cells) | {'met' if diff > se else 'missed'} |")
        fit = matched_size(trains, weights)
        if fit is not None:
            res = [value for group, value in fit["residuals"].values() if group == "vinnas"]
            if res:
                m = statistics.mean(res)
                rows.append(f"| VINNAS ({weights}) mean residual against the random cells' accuracy-size fit positive | "
                            f"{100 * m:+.2f} points ({len(res)} cells) | {'met' if m > 0 else 'missed'} |")
    vs, dd = evidence._group(trains, "vinnas", "sparse"), evidence._group(trains, "darts", "dense")
    if vs and dd:
        diff = statistics.mean(r["test_accuracy"] for r in vs) - statistics.mean(r["test_accuracy"] for r in dd)
        ratio = statistics.mean(r["nonzero_params"] for r in dd) / statistics.mean(r["nonzero_params"] for r in vs)
        rows.append(f"| VINNAS sparse within 0.5 points of DARTS dense with at least 2x fewer non-zero parameters | "
                    f"{100 * diff:+.2f} points, {ratio:.2f}x fewer | "
                    f"{'met' if diff >= -0.005 and ratio >= 2 else 'missed'} |")
    rows.append("")
    return rows


def main(argv=None):
    global SETTINGS_SEEDS, SETTINGS_ARMS, S2_ARMS, S2_SEEDS
    phases_known = ("energy", "s2", "settings", "baselines", "final")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a pipeline check in minutes (tiny budget)")
    parser.add_argument("--out", default=None, help="run folder (default runs/ranking[-quick])")
    parser.add_argument("--results", metavar="FILE", help="the results file (default <out>/results.jsonl)")
    parser.add_argument("--phases", default="", help=f"comma-separated, of: {', '.join(phases_known)}")
    parser.add_argument("--reuse", metavar="FILE", help="copy the shared units of the earlier study's results file")
    parser.add_argument("--report", metavar="DOC", help="write the results section of DOC")
    parser.add_argument("--no-run", action="store_true", help="only --reuse and --report")
    parser.add_argument("--s2-arms", default=",".join(S2_ARMS),
                        help=f"comma-separated arms of the s2 phase, of: {', '.join(a for a in ARMS if a not in PERTURBED)}")
    parser.add_argument("--s2-seeds", default=",".join(map(str, SEEDS)), help="comma-separated seeds of the s2 phase")
    parser.add_argument("--settings-seeds", default=",".join(map(str, SETTINGS_SEEDS)),
                        help="comma-separated seeds of the settings phase (the arm is chosen on their mean)")
    parser.add_argument("--settings-arms", default=",".join(SETTINGS_ARMS),
                        help=f"comma-separated arms of the settings phase, of: {', '.join(SETTINGS_ARMS)}")
    parser.add_argument("--threads", type=int, default=0, help="TensorFlow's intra- and inter-op threads (0: default)")
    args = parser.parse_args(argv)
    out = args.out or os.path.join("runs", "ranking-quick" if args.quick else "ranking")
    os.makedirs(out, exist_ok=True)
    units = Units(out, args.results)
    SETTINGS_SEEDS = tuple(int(s) for s in args.settings_seeds.split(",") if s.strip())
    S2_SEEDS = tuple(int(s) for s in args.s2_seeds.split(",") if s.strip())
    S2_ARMS = tuple(a.strip() for a in args.s2_arms.split(",") if a.strip())
    settings_arms = tuple(a.strip() for a in args.settings_arms.split(",") if a.strip())
    if not settings_arms or any(a not in SETTINGS_ARMS for a in settings_arms):
        parser.error(f"--settings-arms: expected some of {', '.join(SETTINGS_ARMS)}; received {args.settings_arms!r}")
    SETTINGS_ARMS = settings_arms
    unknown = [a for a in S2_ARMS if a not in ARMS or a in PERTURBED]
    if unknown:
        parser.error(f"--s2-arms: unknown or perturbation-selected arm(s) {', '.join(unknown)}; "
                     f"known: {', '.join(a for a in ARMS if a not in PERTURBED)}")
    if args.threads < 0:
        parser.error(f"--threads must be 0 or a positive count; received {args.threads}")
    if args.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    if args.reuse:
        reuse(units, args.reuse)
    if not units.done("skip_null", "null"):
        from tfvnas import config as config_lib

        units.append({"kind": "skip_null", "key": "null",
                      **skip_origin_null(config_lib.preset("quick").op_names, samples=2000 if args.quick else 20000)})
    phases = [p for p in args.phases.split(",") if p]
    unknown = sorted(set(phases) - set(phases_known))
    if unknown:
        parser.error(f"unknown phases {unknown}; known: {', '.join(phases_known)}")
    if not args.no_run and phases:
        dataset = _dataset()
        for phase in phases_known:
            if phase in phases:
                start = time.perf_counter()
                globals()[f"phase_{phase}"](units, dataset, args.quick)
                print(f"== phase {phase}: {time.perf_counter() - start:.0f} s", flush=True)
    if args.report:
        report(units, args.report, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
