"""The energy diagnostic (`tfvnas.models.energy`), the normalised skip and DARTS-' auxiliary skip (tiny, eager)."""

import numpy as np
import pytest

from tests.helpers.supernets import OPS, tiny_supernet
from tfvnas.models.energy import energy_summary, node_energy


def _supernet(**kwargs):
    return tiny_supernet((8, 8, 1), **{"channels": 4, "nodes": 3, "seed": 3, **kwargs})


def _images(n=16, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, 8, 8, 1)).astype("float32")


def test_energy_summary_is_the_mean_share_relative_to_an_equal_one():
    records = [
        # node (cell 0, node 0): two terms, energies 3 and 1 -> shares 0.75, 0.25 -> relative 1.5, 0.5
        {"op": "skip_connect", "input_kind": "node", "share": 0.75, "terms": 2, "cell": 0, "node": 0,
         "state_energy": 4.0},
        {"op": "sep_conv_3x3", "input_kind": "cell input", "share": 0.25, "terms": 2, "cell": 0, "node": 0,
         "state_energy": 4.0},
        # node (cell 1, node 0): one term -> relative 1.0
        {"op": "skip_connect", "input_kind": "node", "share": 1.0, "terms": 1, "cell": 1, "node": 0,
         "state_energy": 2.0},
        {"op": "sep_conv_3x3", "input_kind": "cell input", "share": 0.5, "terms": 2, "cell": 1, "node": 1,
         "state_energy": 10.0},
    ]
    summary = energy_summary(records)
    assert summary["skip_connect"] == {"node": pytest.approx((1.5 + 1.0) / 2)}
    assert summary["sep_conv_3x3"] == {"cell input": pytest.approx((0.5 + 1.0) / 2)}
    assert summary["state_energy"] == {0: pytest.approx(3.0), 1: pytest.approx(10.0)}


@pytest.fixture(scope="module")
def energies():
    images = _images()
    return {skip_bn: node_energy(_supernet(skip_bn=skip_bn), images) for skip_bn in (False, True)}


def test_shares_of_a_node_sum_to_one_and_every_active_gate_is_counted(energies):
    for records in energies.values():
        by_node = {}
        for r in records:
            by_node.setdefault((r["cell"], r["node"]), []).append(r)
        # 3 cells x 3 nodes, node i with (2 + i) edges x 3 ops
        assert len(by_node) == 9
        for (_, node), terms in by_node.items():
            assert len(terms) == (2 + node) * len(OPS) == terms[0]["terms"]
            assert sum(t["share"] for t in terms) == pytest.approx(1.0, rel=1e-5)
            assert {t["input_kind"] for t in terms} == ({"cell input"} if node == 0 else {"cell input", "node"})


def test_a_plain_skip_from_a_node_carries_the_node_energy_and_the_normalised_one_does_not(energies):
    """At initialisation every candidate but the plain identity ends in batch norm (unit energy):
    the plain skip from a node carries that node's summed energy; the normalised one an equal share."""
    plain, normalised = energy_summary(energies[False]), energy_summary(energies[True])
    others = [plain[op][kind] for op in ("sep_conv_3x3", "max_pool_3x3") for kind in plain[op]]
    assert plain["skip_connect"]["node"] > 3.0 * max(others)
    # the node states grow node by node without it
    states = [plain["state_energy"][n] for n in range(3)]
    assert states[0] < states[1] < states[2]
    for op in OPS:
        for kind, share in normalised[op].items():
            assert share == pytest.approx(1.0, abs=0.02), (op, kind, share)


def test_the_auxiliary_skip_adds_its_weight_times_each_stride_one_input():
    """DARTS-: a one-node normal cell's output moves by exactly w x (both preprocessed inputs)."""
    import tensorflow as tf

    model = _supernet(nodes=1, aux_skip=1.0)
    cell = model.cells[0]
    assert not cell.plan.reduction
    rng = np.random.default_rng(1)
    s = [tf.constant(rng.normal(size=(2, 8, 8, 12)), tf.float32) for _ in range(2)]
    gates = model.gates["normal"](training=False)
    base = cell(s, gates=gates, training=False, aux_skip=0.0).numpy()
    moved = cell(s, gates=gates, training=False, aux_skip=0.4).numpy()
    p0 = cell.preprocess0(s[0], training=False).numpy()
    p1 = cell.preprocess1(s[1], training=False).numpy()
    np.testing.assert_allclose(moved - base, 0.4 * (p0 + p1), rtol=1e-4, atol=1e-5)
    # a reduction cell's strided edges from its inputs get nothing (DARTS- adds skips at stride 1 only)
    reduction = model.cells[1]
    assert reduction.plan.reduction
    x = [tf.constant(rng.normal(size=(2, 8, 8, c)), tf.float32)
         for c in (reduction.plan.prev_prev_channels, reduction.plan.prev_channels)]
    rgates = model.gates["reduce"](training=False)
    np.testing.assert_allclose(reduction(x, gates=rgates, training=False, aux_skip=0.4).numpy(),
                               reduction(x, gates=rgates, training=False, aux_skip=0.0).numpy(), atol=1e-6)
