"""The ranking study's statistics and bookkeeping (scripts/study_ranking.py), against closed forms."""

import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers.scripts import load_script
from tfvnas.models.genotype import Genotype


@pytest.fixture(scope="module")
def study():
    return load_script("study_ranking")


def _cell(normal, reduce=None):
    reduce = reduce or [[("max_pool_3x3", 0), ("max_pool_3x3", 1)]] * len(normal)
    return Genotype(normal=normal, normal_concat=list(range(2, 2 + len(normal))), reduce=reduce,
                    reduce_concat=list(range(2, 2 + len(reduce))))


def test_cell_statistics_count_skips_by_origin_convolutions_and_degenerate_nodes(study):
    g = _cell([[("sep_conv_3x3", 0), ("skip_connect", 1)],
               [("skip_connect", 2), ("sep_conv_3x3", 0)],
               [("skip_connect", 2), ("skip_connect", 3)],  # a sum of copies
               [("sep_conv_3x3", 3), ("sep_conv_3x3", 3)]])  # one distinct input
    assert study.skip_origins(g) == (3, 4)  # three skips read nodes 2 and 3, one reads cell input 1
    assert study.conv_share(g, ("normal",)) == pytest.approx(4 / 8)
    assert study.conv_share(g) == pytest.approx(12 / 16)  # the share of non-skips: max_pool counts
    assert study.degenerate_nodes(g) == ["normal node 4", "normal node 5"]
    # In the reduction cell a skip from a cell input is a factorized reduce, not a copy.
    r = _cell([[("sep_conv_3x3", 0), ("sep_conv_3x3", 1)]], reduce=[[("skip_connect", 0), ("skip_connect", 1)]])
    assert study.degenerate_nodes(r) == []


def test_kendall_agreement_is_one_for_equal_rankings_and_minus_one_for_reversed(study):
    rows = np.arange(12, dtype=float).reshape(3, 4)
    a = {"normal": rows, "reduce": rows[::-1]}
    assert study.kendall_agreement([a, a]) == (pytest.approx(1.0), 6)
    b = {"normal": -rows, "reduce": -rows[::-1]}
    assert study.kendall_agreement([a, b]) == (pytest.approx(-1.0), 6)
    mean, sd = study.null_kendall(num_ops=4, edges=3, pairs=1, samples=200)
    assert abs(mean) < 3 * sd + 0.02  # independent rankings agree at chance


def test_matched_size_residuals_are_the_distance_from_the_random_cells_line(study):
    params = [1e4, 2e4, 4e4, 8e4]
    trains = [{"group": "random", "weights": "sparse", "cell": f"random-{i}", "nonzero_params": p,
               "test_accuracy": 0.80 + 0.01 * np.log2(p / 1e4)} for i, p in enumerate(params)]
    trains.append({"group": "vinnas", "weights": "sparse", "cell": "v", "nonzero_params": 2e4,
                   "test_accuracy": 0.81 + 0.005})
    trains.append({"group": "vinnas", "weights": "dense", "cell": "v", "nonzero_params": 2e4,
                   "test_accuracy": 0.5})  # another weights kind: not fitted, not scored
    fit = study.matched_size(trains, "sparse")
    assert fit["slope_per_doubling"] == pytest.approx(0.01)
    assert fit["residual_sd"] == pytest.approx(0.0, abs=1e-12)
    assert fit["residuals"]["v"] == ("vinnas", pytest.approx(0.005))
    assert fit["random_cells"] == 4
    assert study.matched_size(trains[:2], "sparse") is None  # two points fit any line


def test_the_power_estimate_detects_its_difference_four_times_in_five(study):
    """At the returned difference, a one-sided z-test at 5% rejects in about 80% of simulated studies."""
    sd, n_a, n_b = 0.01, 3, 8
    d = study.power(sd, n_a, n_b)
    assert d == pytest.approx((1.645 + 0.842) * sd * (1 / 3 + 1 / 8) ** 0.5)
    rng = np.random.default_rng(0)
    a = rng.normal(d, sd, size=(20000, n_a)).mean(1)
    b = rng.normal(0.0, sd, size=(20000, n_b)).mean(1)
    z = (a - b) / (sd * (1 / n_a + 1 / n_b) ** 0.5)
    assert np.mean(z > 1.645) == pytest.approx(0.80, abs=0.015)


class _Units:
    def __init__(self, out_dir, records):
        self.out_dir, self.records = out_dir, records

    def of_kind(self, kind):
        return [r for r in self.records if r["kind"] == kind]


def test_the_arm_is_chosen_only_when_every_settings_arm_has_its_cells(study, tmp_path, monkeypatch):
    monkeypatch.setattr(study, "SETTINGS_ARMS", ("a", "b"))
    monkeypatch.setattr(study, "SETTINGS_SEEDS", (0, 1))
    records = [{"kind": "valtrain", "group": "a", "val_accuracy": v} for v in (0.90, 0.88)]
    records.append({"kind": "valtrain", "group": "b", "val_accuracy": 0.95})
    units = _Units(str(tmp_path), records)
    with pytest.raises(SystemExit, match="arms without their 2 trained cell.s.: b"):
        study.chosen_arm(units)
    records.append({"kind": "valtrain", "group": "b", "val_accuracy": 0.82})
    assert study.chosen_arm(units) == "a"  # mean 0.89 against 0.885: the higher mean wins
    records[-1]["val_accuracy"] = 0.86
    assert study.chosen_arm(units) == "b"


def test_the_final_phase_waits_only_for_a_live_settings_driver(study, tmp_path):
    units = study.Units(str(tmp_path), str(tmp_path / "results.jsonl"))
    assert not study._settings_running(units)  # no claims folder yet
    claims = tmp_path / "claims"
    claims.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (claims / "search-a-seed0.pid").write_text(str(dead.pid))
    (claims / "train-random-5-sparse.pid").write_text(str(os.getpid()))  # a training is not the settings
    assert not study._settings_running(units)
    (claims / "valtrain-a-seed0.pid").write_text(str(os.getpid()))
    assert study._settings_running(units)


def test_the_strongest_op_and_the_live_edges_agree_by_count(study):
    a = {"normal": [[-2.0, 4.0, 4.0], [4.0, 4.0, 5.0]], "reduce": [[4.0, -1.0, 4.0], [-3.0, 4.0, 4.0]]}
    b = {"normal": [[-2.0, 4.0, 4.0], [4.0, 0.0, 5.0]], "reduce": [[4.0, 4.0, -1.0], [-3.0, 4.0, 4.0]]}
    # Strongest ops: normal (0, 0) same, (0, 1) differ; reduce (1, 2) differ, (0, 0) same.
    assert study.top_op_agreement([a, b]) == (0.5, 4)
    observed, null_mean, null_sd = study.live_edge_agreement([a, b], 3.0, samples=500)
    assert observed == 0.75  # every edge live in both but a's second normal edge (all log_alpha >= 3)
    # The null keeps each table's count of live edges: normal 1 of 2 against 2 of 2 always agrees on one edge.
    assert null_mean == pytest.approx((0.5 + 1.0) / 2) and null_sd == pytest.approx(0.0)


def test_the_skip_origin_test_is_a_binomial_tail(study):
    assert study.skip_origin_tail(1, 1, 0.35) == pytest.approx(0.35)  # one skip from a node: no evidence
    assert study.skip_origin_tail(0, 0, 0.35) == 1.0
    # 42 of 43 from nodes (the earlier study's normal cells) against 0.35: far in the tail.
    assert study.skip_origin_tail(42, 43, 0.35) < 1e-15
    # The tail by hand: P(X >= 2) for X ~ Binomial(3, 0.35).
    assert study.skip_origin_tail(2, 3, 0.35) == pytest.approx(3 * 0.35**2 * 0.65 + 0.35**3)


def test_the_final_table_counts_only_the_chosen_arms_cells_as_vinnas(study):
    rows = [{"group": "vinnas", "cell": "vinnas_bn_pt-seed1"}, {"group": "vinnas", "cell": "vinnas_bn-seed1"},
            {"group": "random", "cell": "random-3"}]
    grouped = [study._final_group(r, "vinnas_bn_pt")["group"] for r in rows]
    assert grouped == ["vinnas", "vinnas:vinnas_bn", "random"]
    assert [study._final_group(r, None)["group"] for r in rows] == ["vinnas", "vinnas", "random"]
