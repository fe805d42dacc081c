"""End-to-end search tests: one smoke search per strategy (supernet traces are slow)."""

import json
import os
import re

import numpy as np
import pytest

from tests.conftest import mirrored, summary_events
from tfvnas import config as config_lib
from tfvnas import data as data_lib
from tfvnas.cli import main
from tfvnas.loops import searching as search_lib
from tfvnas.models import derivation
from tfvnas.models import genotype as genotype_lib

pytestmark = pytest.mark.slow  # end-to-end runs


HISTORY_FIELDS = {
    "epoch", "step", "beta", "weight_lr", "train_loss", "train_accuracy", "arch_loss",
    "arch_accuracy", "val_loss", "val_accuracy", "kl_gates", "kl_network_weights", "active_ops",
    "total_ops", "pruned_this_epoch", "weight_sparsity", "log_alpha", "active", "time_s",
    "pruned_share", "genotype", "genotype_hash", "stable_epochs", "derivation_log_alpha", "settled",
    "live_edges",
}


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """`tfvnas search --preset smoke` through the command's own entry point."""
    out = tmp_path_factory.mktemp("cli") / "search"
    code = main([
        "search", "--dataset", "mnist-5k", "--preset", "smoke", "--out", str(out), "--seed", "3",
        "--tensorboard", str(out.parent / "tb"),
    ])
    return code, out


@pytest.fixture(scope="module")
def mirrored_run(tmp_path_factory):
    """The Python API on MirroredStrategy over 2 logical CPU devices."""
    strategy = mirrored()
    out = tmp_path_factory.mktemp("mirrored") / "search"
    result = search_lib.search(
        "mnist-5k", preset="smoke", strategy=strategy, out_dir=out, verbose=0,
        config={"weight_vd": True, "nodes": 1},  # one node: half the graph to trace
    )
    return strategy, result, out


def _read(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def test_cli_search_writes_every_artefact(cli_run):
    code, out = cli_run
    assert code == 0
    assert sorted(os.listdir(out)) == sorted(search_lib.ARTEFACTS + ("checkpoints",))
    ops = config_lib.preset("smoke").op_names
    top = genotype_lib.Genotype.load(out / "genotype.json").validate(ops)
    thr = genotype_lib.Genotype.load(out / "genotype_threshold.json").validate(ops)
    nodes = config_lib.preset("smoke").nodes
    assert top.normal_nodes == top.reduce_nodes == nodes
    # top_k (k=2): exactly two distinct inputs per node, one op each; threshold: at least two inputs.
    for cell in (top.normal, top.reduce):
        assert all(len(node) == 2 and len({j for _, j in node}) == 2 for node in cell)
    for cell in (thr.normal, thr.reduce):
        assert all(len({j for _, j in node}) >= 2 for node in cell)
    cfg = config_lib.SearchConfig.from_dict(_read(out / "search_config.json"))
    assert cfg == config_lib.preset("smoke").replace(seed=3)


def test_cli_search_history_and_pruning(cli_run):
    _, out = cli_run
    history = _read(out / "search_history.json")
    cfg = config_lib.preset("smoke")
    assert history["dataset"] == "mnist-5k"
    assert history["op_names"] == list(cfg.op_names)
    epochs = history["epochs"]
    assert len(epochs) == cfg.epochs
    n_edges = genotype_lib.num_edges(cfg.nodes)
    for i, record in enumerate(epochs):
        assert set(record) == HISTORY_FIELDS
        assert record["epoch"] == i + 1
        for t in ("normal", "reduce"):
            la = np.array(record["log_alpha"][t])
            active = np.array(record["active"][t])
            assert la.shape == active.shape == (n_edges, len(cfg.op_names))
            assert np.isfinite(la).all()
            # A gate is inactive exactly when it has been pruned: log_alpha at
            # pruning time was >= threshold, and it never comes back.
            assert record["active_ops"][t] == int(active.sum())
            # The smoke preset prunes hard (its gates start at log_alpha 2.9): the
            # per-node floor keeps every node at top_k live edges or more all the same.
            assert min(record["live_edges"][t]) >= cfg.top_k
        assert 0.0 <= record["val_accuracy"] <= 1.0
        assert np.isfinite(record["train_loss"]) and np.isfinite(record["kl_gates"])
    last = epochs[-1]
    total = last["total_ops"]
    pruned = sum(total - last["active_ops"][t] for t in ("normal", "reduce"))
    assert pruned >= 1
    assert sum(r["pruned_this_epoch"] for r in epochs) == pruned
    for t in ("normal", "reduce"):
        before = np.array(epochs[0]["active"][t])
        after = np.array(last["active"][t])
        assert (after <= before).all()  # pruning is permanent
        la = np.array(last["log_alpha"][t])
        # Every pruned gate was pruned at or above the threshold (its value then is kept).
        assert (la[after == 0] >= cfg.threshold).all()
        assert last["pruned_share"][t] == pytest.approx(1 - after.mean())


def test_genotype_matches_history(cli_run):
    """The written genotypes are the derivation rules applied to the final gates."""
    _, out = cli_run
    history = _read(out / "search_history.json")
    cfg = config_lib.preset("smoke")
    last = history["epochs"][-1]
    # What the derivation read: the averaged values when the search averages (the default).
    assert ("derivation_log_alpha" in last) == (cfg.gate_average_decay > 0)
    log_alpha = {t: np.array(last.get("derivation_log_alpha", last["log_alpha"])[t]) for t in ("normal", "reduce")}
    active = last["active"]
    expected_top = derivation.derive_top_k(
        log_alpha, cfg.op_names, nodes=cfg.nodes, threshold=cfg.threshold, k=cfg.top_k, active=active
    )
    expected_thr = derivation.derive_threshold(log_alpha, cfg.op_names, nodes=cfg.nodes, active=active,
                                                 k=cfg.top_k)
    assert genotype_lib.Genotype.load(out / "genotype.json") == expected_top
    assert genotype_lib.Genotype.load(out / "genotype_threshold.json") == expected_thr
    # Each epoch records the top_k genotype of its gates, and for how long it has not changed.
    stable = 0
    for i, record in enumerate(history["epochs"]):
        genotype = genotype_lib.Genotype.from_dict(record["genotype"])
        assert genotype.hash() == record["genotype_hash"]
        if i:
            same = record["genotype_hash"] == history["epochs"][i - 1]["genotype_hash"]
            stable = stable + 1 if same else 0
        assert record["stable_epochs"] == stable
    assert genotype_lib.Genotype.from_dict(last["genotype"]) == expected_top


def test_mirrored_search_keeps_gates_identical(mirrored_run):
    strategy, result, out = mirrored_run
    assert strategy.num_replicas_in_sync == 2
    assert sorted(os.listdir(out)) == sorted(search_lib.ARTEFACTS + ("checkpoints",))
    model = result.model
    for var in model.arch_variables + [g.active for g in model.gates.values()]:
        values = [v.numpy() for v in strategy.experimental_local_results(var.value)]
        assert len(values) == 2
        np.testing.assert_array_equal(values[0], values[1])
    last = result.history[-1]
    assert sum(last["total_ops"] - last["active_ops"][t] for t in ("normal", "reduce")) >= 1
    # weight_vd was on: the weights are variational and sparsity is measured.
    assert last["weight_sparsity"] is not None and 0.0 <= last["weight_sparsity"] <= 1.0
    assert last["kl_network_weights"] > 0
    assert result.genotype == genotype_lib.Genotype.load(out / "genotype.json")
    assert result.config.weight_vd is True
    summary = result.summary()
    assert result.genotype.hash() in summary and "validation accuracy" in summary


def test_result_model_variables_disjoint_and_complete(mirrored_run):
    _, result, _ = mirrored_run
    model = result.model
    arch = {id(v) for v in model.arch_variables}
    weights = {id(v) for v in model.weight_variables}
    assert arch and weights and not arch & weights
    assert arch | weights == {id(v) for v in model.trainable_variables}


def test_joint_optimisation_runs_and_prunes(tmp_path):
    cfg = config_lib.preset("smoke").replace(optimization="joint", layers=1, nodes=1, epochs=2)
    result = search_lib.search("mnist-5k", config=cfg, verbose=0)
    last = result.history[-1]
    assert last["arch_loss"] is None and last["arch_accuracy"] is None
    assert sum(last["total_ops"] - last["active_ops"][t] for t in ("normal", "reduce")) >= 1
    assert result.out_dir is None


def test_arch_warmup_trains_the_weights_alone_then_the_gates():
    # Smoke gates start at log_alpha 2.9 with patience 1, so they prune at once when judged.
    # Two warm-up epochs keep the genotype: that must not count as stable (stop_when_stable).
    cfg = config_lib.preset("smoke").replace(layers=1, nodes=1, epochs=3, arch_warmup=2, stop_when_stable=1)
    searcher = search_lib.Searcher(cfg, data_lib.load("mnist-5k"), verbose=0)
    initial = {t: g.current_log_alpha().numpy() for t, g in searcher.model.gates.items()}
    weights = [v.numpy() for v in searcher.model.weight_variables]
    result = searcher.run()
    *warm_epochs, judged = result.history
    assert len(warm_epochs) == 2
    for warm in warm_epochs:
        for t, value in initial.items():  # the gates did not move, nothing was pruned
            np.testing.assert_allclose(warm["log_alpha"][t], value, rtol=0, atol=1e-4)
            assert all(warm["active"][t])
        assert warm["arch_loss"] is None and warm["pruned_this_epoch"] == 0 and warm["stable_epochs"] == 0
        assert warm["train_loss"] > 0
    assert judged["arch_loss"] is not None and judged["pruned_this_epoch"] >= 1
    assert any(not np.array_equal(a, b) for a, b in zip(weights, (v.numpy() for v in result.model.weight_variables)))


def test_arch_warmup_is_checked():
    with pytest.raises(ValueError, match=re.escape(
            "`arch_warmup` must be a whole number of epochs from 0 to epochs - 1 (1). Received: arch_warmup=2")):
        config_lib.preset("smoke").replace(arch_warmup=2)
    with pytest.raises(ValueError, match="`arch_warmup` needs optimization='bilevel'"):
        config_lib.preset("smoke").replace(arch_warmup=1, optimization="joint")


def test_non_finite_loss_stops_with_step(monkeypatch, tmp_path):
    real = search_lib.variational.elbo_loss

    def poisoned(*args, **kwargs):
        loss, ce, kl_term = real(*args, **kwargs)
        return loss * float("nan"), ce, kl_term

    monkeypatch.setattr(search_lib.variational, "elbo_loss", poisoned)
    cfg = config_lib.preset("smoke").replace(layers=1, nodes=1, epochs=1, optimization="joint")
    with pytest.raises(FloatingPointError, match="^" + re.escape(
        "The search loss became nan at epoch 1, step 1 (global step 1). "
        "Lower `weight_lr` or `arch_lr`, or check the data. No checkpoint was saved."
    ) + "$"):
        search_lib.search("mnist-5k", config=cfg, out_dir=tmp_path / "out", verbose=0)
    assert not (tmp_path / "out").exists()


def _prune(model, cell_type, count, rng):
    """Prunes `count` more ops of a cell type's table (log_alpha far above any threshold), each edge keeping one."""
    gates = model.gates[cell_type]
    shape = tuple(gates.shape)
    log_alpha = gates.raw_log_alpha().numpy().reshape(-1)
    active = gates.active.numpy() > 0
    spare = [e * shape[1] + o for e in range(shape[0]) for o in np.flatnonzero(active[e])[1:]]
    log_alpha[rng.choice(spare, count, replace=False)] = 30.0
    gates.set_log_alpha(log_alpha.reshape(shape))
    assert model.update_evidence(patience=1) == count


def test_retrace_when_pruned_share_times_steps_left_pays():
    cfg = config_lib.preset("smoke").replace(layers=1, nodes=1, epochs=2, retrace_cost_steps=2)
    searcher = search_lib.Searcher(cfg, data_lib.load("mnist-5k", seed=0), verbose=0)
    model, rng = searcher.model, np.random.default_rng(0)
    every_op = model.computed_ops()
    traced = sum(len(r) for rows in every_op.values() for r in rows)
    assert searcher.total_steps == 8 and traced == 28 and model.step_ops == every_op
    first = searcher.train_step
    # 1 of 28 traced ops gone x 8 steps left < 2: the step keeps its graph
    # (the pruned op is masked to zero) and the traced set is pinned.
    _prune(model, "normal", 1, rng)
    assert searcher.end_epoch(0) == {}
    assert searcher.train_step is first and model.step_ops == every_op
    assert model.computed_ops() != every_op
    # 13 of 28 gone x 8 steps left >= 2: traced anew without them.
    _prune(model, "reduce", 12, rng)
    assert searcher.end_epoch(0) == {}
    assert searcher.train_step is not first and model.step_ops == model.computed_ops()
    assert sum(len(r) for rows in model.step_ops.values() for r in rows) == 15
    # The traced set is part of the checkpoint state, so a resumed run traces
    # the graph the uninterrupted one runs.
    state = json.loads(json.dumps(searcher.checkpoint_state()))
    pinned, model.step_ops = model.step_ops, None
    searcher.restore_checkpoint_state(state)
    assert model.step_ops == pinned
    # No steps left: no re-trace, whatever was pruned.
    second = searcher.train_step
    searcher.position["step"] = searcher.total_steps
    _prune(model, "normal", 11, rng)
    searcher.end_epoch(1)
    assert searcher.train_step is second and model.step_ops == pinned


def test_pruning_is_checked_every_prune_every_steps_with_patience():
    cfg = config_lib.preset("smoke").replace(layers=1, nodes=1, epochs=1, prune_every=3, prune_patience=2)
    searcher = search_lib.Searcher(cfg, data_lib.load("mnist-5k", seed=0), verbose=0)
    gates = searcher.model.normal_gates
    la = np.full(gates.shape, -1.0, "float32")
    la[0, 0] = 5.0
    gates.set_log_alpha(la)
    sums = {}
    for step in range(1, 7):
        searcher.position["step"] = step
        searcher.after_step(sums)
        # Checks at steps 3 and 6 only; the second one prunes (patience 2).
        assert gates.streak.numpy()[0, 0] == (1.0 if step in (3, 4, 5) else 0.0)
        assert gates.active.numpy()[0, 0] == (0.0 if step == 6 else 1.0)
    assert sums == {"pruned": 1}


def test_the_search_stops_once_the_genotype_is_stable():
    cfg = config_lib.preset("smoke").replace(stop_when_stable=2)
    searcher = search_lib.Searcher.__new__(search_lib.Searcher)
    searcher.config = cfg
    for stable, done in ((0, False), (1, False), (2, True), (3, True)):
        searcher.history = [{"stable_epochs": stable}]
        assert searcher.finished() is done
    searcher.config = cfg.replace(stop_when_stable=0)
    assert searcher.finished() is False


def test_convergence_is_stated_with_its_numbers():
    cfg = config_lib.preset("smoke")
    result = search_lib.SearchResult(genotype=None, genotype_threshold=None, config=cfg, history=[
        {"pruned_share": {"normal": 0.6, "reduce": 0.5}, "stable_epochs": 2},
    ])
    assert result.converged()
    assert result.convergence_line() == (
        "converged: pruned normal 60%, reduce 50%; top_k genotype unchanged for the last 2 epochs")
    result.history[-1]["pruned_share"]["reduce"] = 0.45
    assert not result.converged()
    assert result.convergence_line().startswith("not converged (pruned normal 60%, reduce 45%;")
    result.history[-1].update(pruned_share={"normal": 0.9, "reduce": 0.9}, stable_epochs=1)
    assert not result.converged()


def test_summary_says_which_rule_chose_genotype_json():
    cfg = config_lib.preset("smoke")
    cell = derivation.random_genotype(cfg.op_names, nodes=2, rng=np.random.default_rng(0))
    history = [{"pruned_share": {"normal": 0.9, "reduce": 0.9}, "stable_epochs": 3, "val_accuracy": 0.5,
                "active_ops": {"normal": 4, "reduce": 4}, "total_ops": 40}]
    gates = search_lib.SearchResult(genotype=cell, genotype_threshold=cell, config=cfg, history=history)
    assert f"genotype.json ({cell.hash()}): the top_k genotype of the gates:" in gates.summary()
    chosen = search_lib.SearchResult(genotype=cell, genotype_threshold=cell, config=cfg, history=history,
                                     selection={"base_accuracy": 0.75, "images": 500})
    text = chosen.summary()
    assert (f"genotype.json ({cell.hash()}): chosen by perturbation among the gates' survivors "
            "(500 validation images, supernet accuracy 0.7500):") in text
    assert "top_k genotype of the gates" not in text
    bare = search_lib.SearchResult(genotype=cell, genotype_threshold=cell, config=cfg, history=history, selection={})
    assert f"genotype.json ({cell.hash()}): chosen by perturbation among the gates' survivors:" in bare.summary()


def test_tensorboard_holds_scalars_histograms_and_cell_images(cli_run):
    _, out = cli_run
    events = summary_events(out.parent / "tb")
    history = _read(out / "search_history.json")["epochs"]
    for tag in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "kl_gates", "beta",
                "weight_lr", "active_ops/normal", "active_ops/reduce", "pruned_this_epoch"):
        assert [(s, p) for s, p, _ in events[tag]] == [(r["epoch"], "scalars") for r in history], tag
        np.testing.assert_allclose([float(v) for _, _, v in events[tag]],
                                   [float(r[tag.split("/")[0]] if "/" not in tag else r["active_ops"][tag.split("/")[1]])
                                    for r in history], rtol=1e-6)
    for cell_type in ("normal", "reduce"):
        hist = events[f"log_alpha/{cell_type}"]
        assert [(s, p) for s, p, _ in hist] == [(r["epoch"], "histograms") for r in history]
        # The histogram covers the gates still active at that epoch.
        counts = [float(np.sum(v[:, 2])) for _, _, v in hist]
        assert counts == [float(r["active_ops"][cell_type]) for r in history]
        images = events[f"cell/{cell_type}"]
        assert [(s, p) for s, p, _ in images] == [(r["epoch"], "images") for r in history]
        width, height, png = images[-1][2][:3]
        assert int(width) > 100 and int(height) > 100 and png[:8] == b"\x89PNG\r\n\x1a\n"


def test_shared_and_inline_edge_functions_compute_the_same_step():
    ds = data_lib.load("mnist-5k")
    losses = {}
    for shared in (True, False):
        # One node per cell: a normal and a reduction cell's edges, a third of the trace.
        cfg = config_lib.PRESETS["smoke"].replace(shared_edge_functions=shared, nodes=1)
        searcher = search_lib.Searcher(cfg, ds, verbose=0)
        edges = [edge for cell in searcher.model.cells for edge in cell.edge_layers]
        assert edges and all(edge.shared_function is shared for edge in edges)
        batches = next(iter(searcher.epoch_data(0)))
        losses[shared] = {k: float(v) for k, v in searcher.train_step(batches).items()}
    assert losses[True].keys() == losses[False].keys()
    for key in losses[True]:
        assert losses[True][key] == pytest.approx(losses[False][key], rel=1e-5, abs=1e-6), key


def test_skip_dropout_is_checked_and_reaches_the_supernet():
    with pytest.raises(ValueError, match=re.escape("`skip_dropout` must be a rate in [0, 1). Received: skip_dropout=-0.1")):
        config_lib.preset("smoke").replace(skip_dropout=-0.1)
    cfg = config_lib.preset("smoke").replace(layers=1, nodes=1, epochs=1, skip_dropout=0.3)
    searcher = search_lib.Searcher(cfg, data_lib.load("mnist-5k"), verbose=0)
    assert searcher.model.skip_dropout == 0.3
    edges = [e for c in searcher.model.cells for e in c.edge_layers]
    assert edges and {e.skip_dropout for e in edges} == {0.3}


def test_the_search_options_of_the_ranking_reach_the_supernet():
    """skip_bn normalises every stride-1 identity; aux_skip's weight decays linearly to zero over the search."""
    cfg = config_lib.preset("smoke").replace(layers=3, nodes=1, epochs=2, skip_bn=True, aux_skip=0.8)
    searcher = search_lib.Searcher(cfg, data_lib.load("mnist-5k"), verbose=0)
    identities = [c for cell in searcher.model.cells for e in cell.edge_layers for c in e.candidates
                  if type(c).__name__ == "Identity"]
    assert identities and all(i.normalised for i in identities)
    total = searcher.total_steps
    for step, weight in [(0, 0.8), (total // 2, 0.8 * (1 - (total // 2) / total)), (total, 0.0)]:
        searcher.before_step(step)
        assert float(searcher.model.aux_skip_weight.numpy()) == pytest.approx(weight, abs=1e-6)
    with pytest.raises(ValueError, match=re.escape("`aux_skip` must be")):
        config_lib.preset("smoke").replace(aux_skip=-1.0)


def test_the_selection_computes_only_the_live_ops_and_decides_as_the_full_supernet_does():
    from tfvnas.loops import selection as selection_lib

    ds = data_lib.load("mnist-5k")
    cfg = config_lib.PRESETS["smoke"].replace(nodes=2, selection="perturbation")
    searcher = search_lib.Searcher(cfg, ds, verbose=0)
    model = searcher.model
    every_op = model.step_ops
    # Every edge keeps one to three of its ops: most ops pruned, every node's edges live.
    rng = np.random.default_rng(0)
    for gates in model.gates.values():
        table = np.zeros(gates.active.shape, np.float32)
        for row in table:
            row[rng.choice(len(row), size=rng.integers(1, 4), replace=False)] = 1.0
        gates.active.assign(table)
    live = model.computed_ops()
    val = searcher.dataset.reader("val").subset(np.arange(64))
    images = np.stack([x for x, _ in val.head(64).as_numpy_iterator()]).astype(np.float32)

    def select():
        logits = model(images, training=False).numpy()
        genotype, record = selection_lib.perturbation_genotype(model, lambda: searcher.evaluate_reader(val)[1])
        return logits, genotype, record

    full = select()
    assert model.step_ops == every_op  # the pruned ops computed, as exact zeros
    searcher.trace_live_ops()
    assert model.step_ops == live
    pinned = select()
    edges = {t: [] for t in live}
    for cell in model.cells:
        edges[cell.plan.cell_type].append(tuple(edge.computed for edge in cell.edge_layers))
    assert all(rows == tuple(live[t]) for t, cells in edges.items() for rows in cells)
    np.testing.assert_allclose(pinned[0], full[0], rtol=1e-5, atol=1e-5)
    assert pinned[1] == full[1]
    for key, value in full[2].items():  # the same measurements (NaN where nothing was measured)
        if key in ("op_drops", "edge_drops"):
            for cell_type in value:
                np.testing.assert_array_equal(pinned[2][key][cell_type], value[cell_type])
        else:
            assert pinned[2][key] == value, key
