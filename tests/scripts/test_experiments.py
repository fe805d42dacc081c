"""The evidence study's bookkeeping (scripts/experiment_collapse.py): results file, bootstrap."""

import json

import numpy as np

from tests.helpers.scripts import load_script


def _driver():
    return load_script("experiment_collapse")


def test_per_image_correctness_round_trips_through_text():
    driver = _driver()
    rng = np.random.default_rng(0)
    for n in (1, 8, 13, 10000):
        correct = rng.uniform(size=n) < 0.9
        text = driver.pack_correct(correct)
        assert isinstance(text, str)
        np.testing.assert_array_equal(driver.unpack_correct(text, n), correct)


def _units(out, results=None):
    return load_script("units").Units(out, results)


def test_the_results_file_resumes_and_may_live_apart_from_the_run_folders(tmp_path):
    units = _units(tmp_path / "runs", tmp_path / "kept" / "results.jsonl")
    assert units.read() == []
    units.append({"kind": "train", "key": "a", "value": 1})
    assert units.done("train", "a") and units.get("train", "a")["value"] == 1
    assert not units.done("train", "b") and units.get("train", "b") is None
    assert not (tmp_path / "runs" / "results.jsonl").exists()
    assert _units("x").path == "x/results.jsonl"


def test_paired_bootstrap_matches_the_observed_difference_and_its_spread():
    driver = _driver()
    rng = np.random.default_rng(1)
    n = 4000
    b = rng.uniform(size=(3, n)) < 0.85
    a = b[:2] | (rng.uniform(size=(2, n)) < 0.05)  # the same cells, a few more images right
    out = driver.paired_bootstrap(a, b, samples=2000)
    per_image = a.mean(0) - b.mean(0)
    assert abs(out["difference"] - per_image.mean()) < 1e-12
    # Closed form of the resampled mean's spread: std of the per-image difference / sqrt(n).
    se = per_image.std() / np.sqrt(n)
    assert out["low"] < out["difference"] < out["high"]
    np.testing.assert_allclose(out["high"] - out["low"], 2 * 1.96 * se, rtol=0.15)
    assert out["p_at_or_below_zero"] < 0.01
    same = driver.paired_bootstrap(b, b, samples=500)
    assert same["difference"] == 0.0 and same["p_at_or_below_zero"] == 1.0


def test_an_unfinished_long_search_is_recorded_partial_and_not_done(tmp_path):
    from tfvnas.models import zoo

    driver = _driver()
    out = tmp_path / "runs"
    cfg = driver.BUDGETS["quick"]
    checkpoints = out / "collapse" / "vinnas-seed0" / "checkpoints"
    checkpoints.mkdir(parents=True)
    genotype = zoo.load_genotype("darts_v2").to_dict()
    # One weight-only epoch (`arch_warmup`: no arch_loss), then three of architecture updates.
    history = [{"epoch": e, "step": 25 * e, "genotype": genotype, "pruned_share": {"normal": 0.1, "reduce": 0.2},
                "arch_loss": None if e == 1 else 0.5} for e in range(1, 5)]
    (checkpoints / "state-25.json").write_text(json.dumps({"position": {"step": 25}, "config": {}, "history": []}))
    (checkpoints / "state-75.json").write_text(json.dumps({"position": {"step": 75}, "config": {},
                                                           "history": history}))
    # What tf.train.CheckpointManager leaves: the index of each kept checkpoint and the pointer to the latest.
    for number in (25, 75):
        (checkpoints / f"ckpt-{number}.index").write_bytes(b"")
    (checkpoints / "checkpoint").write_text('model_checkpoint_path: "ckpt-75"\n'
                                            'all_model_checkpoint_paths: "ckpt-25"\n'
                                            'all_model_checkpoint_paths: "ckpt-75"\n')
    assert driver._resumable(str(out / "collapse" / "vinnas-seed0"))
    units = _units(out)
    driver.record_partial_collapses(units, cfg, ["vinnas", "darts"])  # darts: never started
    records = units.read()
    assert [r["key"] for r in records] == ["vinnas-seed0"]
    partial = records[0]
    assert partial["kind"] == "collapse_partial" and partial["arch_updates"] == 75
    assert [(e["epoch"], e["step"]) for e in partial["per_epoch"]] == [(1, 25), (2, 50), (3, 75)]
    stats = driver.cell_statistics(zoo.load_genotype("darts_v2"))
    assert partial["per_epoch"][0]["skip_count"] == stats["normal_skips"]
    assert not units.done("collapse", "vinnas-seed0")  # the phase still runs it


def test_two_driver_processes_never_run_the_same_unit(tmp_path):
    import os
    import subprocess
    import sys

    units = _units(tmp_path)
    assert units.take("train", "a")  # claimed by this process
    assert not units.take("train", "a")  # already claimed (this process is alive)
    # Another live process's claim holds; a dead process's claim is taken over.
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        for key, pid in (("b", live.pid), ("c", dead.pid)):
            path = units.claim_path("train", key)
            with open(path, "w", encoding="ascii") as f:
                f.write(str(pid))
        assert not units.take("train", "b")
        assert units.take("train", "c")
        with open(units.claim_path("train", "c"), encoding="ascii") as f:
            assert int(f.read()) == os.getpid()
    finally:
        live.kill()
        live.wait()
    # A finished unit is never taken, and finishing drops the claim.
    units.finish({"kind": "train", "key": "a", "value": 1})
    assert not os.path.exists(units.claim_path("train", "a"))
    assert not units.take("train", "a")
    assert units.done("train", "a")


def test_the_targets_are_judged_from_the_records():
    driver = _driver()
    null = {"kind": "null", "key": "null", "parameter_free_share": {"mean": 0.4, "std": 0.1},
            "normal_parameter_free_share": {"mean": 0.4, "std": 0.2}}

    def train(group, weights, accuracy, nonzero):
        return {"kind": "train", "group": group, "weights": weights, "test_accuracy": accuracy,
                "nonzero_params": nonzero}

    records = [null] + [train("vinnas", "sparse", a, 10_000) for a in (0.880, 0.882, 0.884)]
    records += [train("random", "sparse", a, 20_000) for a in (0.870, 0.872, 0.874)]
    records += [train("darts", "dense", a, 30_000) for a in (0.884, 0.886)]
    records += [{"kind": "search", "method": "vinnas", "parameter_free_share": 0.3},
                {"kind": "collapse", "method": "darts", "per_epoch": [{"parameter_free_share": 0.7}]}]
    verdicts = [v for _, _, v in driver.targets(records)]
    # sparse: +0.010 against a combined standard error of 0.0016; dense: no cell trained;
    # 0.30 points below DARTS dense with 3x fewer; 0.3 <= 0.4 and 0.7 above 0.6.
    assert verdicts == ["met", "not yet run", "met", "met"]
    records[1] = train("vinnas", "sparse", 0.860, 10_000)  # +0.0033 on random, within 0.0078; 1 point behind DARTS
    records[-1]["per_epoch"][-1]["parameter_free_share"] = 0.5
    assert [v for _, _, v in driver.targets(records)] == ["missed", "not yet run", "missed", "missed"]


def test_json_lines_round_trip_and_a_missing_file_is_empty(tmp_path):
    from tfvnas import files

    path = tmp_path / "deep" / "log.jsonl"
    assert files.read_json_lines(str(path)) == []
    files.append_json_line(str(path), {"a": np.float32(1.5), "b": [np.int64(2)]})
    files.append_json_line(str(path), {"c": None})
    assert files.read_json_lines(str(path)) == [{"a": 1.5, "b": [2]}, {"c": None}]


def test_the_proxy_check_tables_each_search_and_each_arms_mean_and_spread(tmp_path):
    from tfvnas.models import zoo

    study = load_script("study_search")
    genotype = zoo.load_genotype("darts_v2").to_dict()  # 10 of 16 ops parameter-free, 4 op types

    def record(arm, seed, accuracy, seconds):
        return {"arm": arm, "seed": seed, "genotype": genotype, "converged": seed == 0,
                "pruned_share": {"normal": 0.5, "reduce": 0.875}, "search_val_accuracy": 0.9,
                "cell_val_accuracy": accuracy, "search_s": seconds, "train_s": 60.0}

    records = [record("full_size", 1, 0.95, 900.0), record("base", 0, 0.96, 300.0),
               record("full_size", 0, 0.97, 1100.0), record("lr_0.1", 0, 0.5, 1.0)]
    lines = study.proxy_table(records).splitlines()
    rows = [line for line in lines if line.startswith("| base |") or line.startswith("| full_size |")]
    # The proxy first, seeds in order; other arms left out.
    assert [row.split(" | ")[:2] for row in rows[:3]] == [["| base", "0"], ["| full_size", "0"], ["| full_size", "1"]]
    assert rows[0] == "| base | 0 | 50% / 88% | yes | 0.62 | 4 | 0.900 | 0.960 | 300 | 60 |"
    # Means and sample standard deviations: full_size 0.96 ± 0.01414, base one seed.
    assert rows[3] == "| base | 1 | 0.960 ± 0.000 | 300 |"
    assert rows[4] == "| full_size | 2 | 0.960 ± 0.014 | 1000 |"

    doc = tmp_path / "search.md"
    doc.write_text("before\n<!-- proxy:begin -->\nold\n<!-- proxy:end -->\nafter\n", encoding="utf-8")
    study.proxy_report(records, str(doc))
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("before\n<!-- proxy:begin -->\n\n| search |") and text.endswith("<!-- proxy:end -->\nafter\n")
    assert "old" not in text


def test_the_budget_study_tables_the_shorter_trainings_beside_the_quick_recipe(tmp_path):
    from tfvnas.models import zoo

    study = load_script("study_search")
    genotype = zoo.load_genotype("darts_v2").to_dict()

    def record(arm, seed, accuracy, short=None):
        r = {"arm": arm, "seed": seed, "genotype": genotype, "converged": False,
             "pruned_share": {"normal": 0.5, "reduce": 0.875}, "search_val_accuracy": 0.9,
             "cell_val_accuracy": accuracy, "search_s": 100.0 * (seed + 1), "train_s": 60.0}
        if short is not None:
            r["cell_val_accuracy_e4"], r["train_s_e4"] = short, 30.0
        return r

    records = [record("b32_e8", 0, 0.95, 0.93), record("base", 0, 0.96, 0.94), record("base", 1, 0.98, 0.96),
               record("b32_e8", 1, 0.97)]
    lines = study.arms_table(records, study.BUDGET_ARMS).splitlines()
    assert lines[0].endswith("| cell val acc | cell val acc (4 epochs) | search s | train s |")
    assert lines[2] == "| base | 0 | 50% / 88% | no | 0.62 | 4 | 0.900 | 0.960 | 0.940 | 100 | 60 |"
    assert lines[5] == "| b32_e8 | 1 | 50% / 88% | no | 0.62 | 4 | 0.900 | 0.970 | - | 200 | 60 |"
    # Means over the records that have the column: b32_e8's shorter training is one seed.
    assert lines[-2] == "| base | 2 | 0.970 ± 0.014 | 0.950 ± 0.014 | 150 |"
    assert lines[-1] == "| b32_e8 | 2 | 0.960 ± 0.014 | 0.930 ± 0.000 | 150 |"

    doc = tmp_path / "search.md"
    doc.write_text("a\n<!-- budget:begin -->\nold\n<!-- budget:end -->\nb\n", encoding="utf-8")
    study.main(["--out", str(tmp_path), "--no-run", "--results", str(tmp_path / "none.jsonl"),
                "--budget-report", str(doc)])
    assert doc.read_text(encoding="utf-8").startswith("a\n<!-- budget:begin -->\n\n| search |")


def test_a_retraining_of_recorded_cells_is_recorded_beside_their_searches_once(tmp_path, monkeypatch):
    from tfvnas import files
    from tfvnas.models import zoo

    study = load_script("study_search")
    genotype = zoo.load_genotype("darts_v2").to_dict()
    results = tmp_path / "results.jsonl"
    for arm, seed in (("j_e6", 0), ("j_e6", 1), ("b32_e12", 0)):
        files.append_json_line(str(results), {
            "arm": arm, "seed": seed, "genotype": genotype, "converged": True,
            "pruned_share": {"normal": 0.5, "reduce": 0.875}, "search_val_accuracy": 0.9,
            "cell_val_accuracy": 0.96, "search_s": 100.0, "train_s": 60.0})
    trained = []

    def fake_training(genotype_, dataset, seed, epochs=None):
        trained.append((genotype_.hash(), dataset.name, seed, epochs))
        return 0.95 - 0.01 * seed, 30.0, 0.66

    monkeypatch.setattr(study, "_val_accuracy", fake_training)
    argv = ["--out", str(tmp_path), "--results", str(results), "--arms", "j_e6", "--seeds", "0,1",
            "--retrain-epochs", "6"]
    assert study.main(argv) == 0
    assert study.main(argv) == 0  # nothing left to train
    darts_v2 = zoo.load_genotype("darts_v2").hash()
    assert trained == [(darts_v2, "mnist-5k", 0, 6), (darts_v2, "mnist-5k", 1, 6)]
    records = study.read_results(str(results))
    assert [(r["arm"], r["seed"]) for r in records] == [("j_e6", 0), ("j_e6", 1), ("b32_e12", 0)]
    assert records[1]["cell_val_accuracy_e6"] == 0.94 and records[1]["weight_sparsity_e6"] == 0.66
    assert "cell_val_accuracy_e6" not in records[2]
    lines = study.arms_table(records, study.JOINT_ARMS).splitlines()
    assert lines[0].endswith("| cell val acc | cell val acc (6 epochs) | search s | train s |")
    assert lines[3] == "| j_e6 | 0 | 50% / 88% | yes | 0.62 | 4 | 0.900 | 0.960 | 0.950 (66% zero) | 100 | 60 |"
    assert lines[2].endswith("| 0.960 | - | 100 | 60 |")  # b32_e12 first, not retrained
    assert lines[-2:] == ["| b32_e12 | 1 | 0.960 ± 0.000 | - | 100 |", "| j_e6 | 2 | 0.960 ± 0.000 | 0.945 ± 0.007 | 100 |"]
