"""Perturbation-based selection (`tfvnas.loops.selection`) against a NumPy reference, on a stand-in supernet.

The stand-in's "validation accuracy" is the sum of a known value per active
(edge, op): masking an op then costs exactly its value, so the selection's
every decision has a closed form.
"""

import numpy as np
import pytest
import tensorflow as tf

from tfvnas.loops.selection import perturbation_genotype
from tfvnas.models import genotype as genotype_lib

NAMES = ("none", "sep_conv_3x3", "max_pool_3x3", "skip_connect")
NODES = 3
EDGES = sum(2 + i for i in range(NODES))


class _Gates:
    def __init__(self, active):
        self.active = tf.Variable(active.astype("float32"))


class _StandIn:
    def __init__(self, active, values):
        self.op_names, self.nodes, self.top_k = NAMES, NODES, 2
        self.gates = {t: _Gates(active[t]) for t in genotype_lib.CELL_TYPES}
        self.values = values
        self.calls = 0

    def accuracy(self):
        self.calls += 1
        return sum(float(np.sum(self.gates[t].active.numpy() * self.values[t])) for t in self.gates)


def _tables(seed):
    rng = np.random.default_rng(seed)
    active = {t: (rng.uniform(size=(EDGES, len(NAMES))) < 0.7).astype("float32") for t in genotype_lib.CELL_TYPES}
    for t in active:  # every edge live (one countable op at least)
        active[t][:, 1] = 1.0
    values = {t: rng.uniform(0.0, 1.0, (EDGES, len(NAMES))).round(4) for t in genotype_lib.CELL_TYPES}
    return active, values


def _reference(active, values, k=2):
    """Per edge the live countable op of the largest value; per node the k edges whose chosen value is largest."""
    cells = {}
    for t in genotype_lib.CELL_TYPES:
        cell = []
        for i in range(NODES):
            chosen = []
            for j in range(2 + i):
                e = genotype_lib.edge_index(i, j)
                live = [o for o in range(1, len(NAMES)) if active[t][e, o] > 0]
                best = max(live, key=lambda o: values[t][e, o])
                chosen.append((values[t][e, best], j, NAMES[best]))
            keep = sorted(sorted(chosen, reverse=True)[:k], key=lambda c: c[1])
            cell.append(tuple((name, j) for _, j, name in keep))
        cells[t] = tuple(cell)
    concat = tuple(range(2, 2 + NODES))
    return genotype_lib.Genotype(normal=cells["normal"], normal_concat=concat, reduce=cells["reduce"],
                                 reduce_concat=concat)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_selection_keeps_the_ops_and_edges_whose_masking_costs_the_most(seed):
    active, values = _tables(seed)
    model = _StandIn(active, values)
    genotype, record = perturbation_genotype(model, model.accuracy)
    assert genotype == _reference(active, values)
    # every live countable op of an edge with a choice measured once, its drop its value; `none` never a
    # candidate; an edge's only live op taken unmeasured
    drops = np.array(record["op_drops"]["normal"])
    live = active["normal"] > 0
    live[:, 0] = False
    choice = live & (live.sum(axis=1, keepdims=True) > 1)
    np.testing.assert_allclose(drops[choice], values["normal"][choice], atol=1e-5)
    assert np.all(np.isnan(drops[~choice]))
    # one evaluation for the base, one per live op of an edge with a choice, one for the reduced cells,
    # and one per edge of the nodes with more than k = 2 inputs (node 2's two edges are both kept)
    ops = sum(int(((active[t][:, 1:] > 0).sum(axis=1) > 1) @ (active[t][:, 1:] > 0).sum(axis=1)) for t in active)
    assert model.calls == record["evaluations"] == 1 + ops + 1 + 2 * (EDGES - 2)
    for t in genotype_lib.CELL_TYPES:
        assert np.all(np.isnan(record["edge_drops"][t][:2])) and not np.any(np.isnan(record["edge_drops"][t][2:]))
    # the gate tables are as they were
    for t in genotype_lib.CELL_TYPES:
        np.testing.assert_array_equal(model.gates[t].active.numpy(), active[t])


def test_a_node_with_too_few_live_edges_is_an_error_that_names_it():
    active, values = _tables(0)
    active["reduce"][genotype_lib.edge_index(1, 0)] = 0.0  # node 3 of the reduction cell: 2 of 3 edges live
    active["reduce"][genotype_lib.edge_index(1, 2)] = 0.0  # now 1
    model = _StandIn(active, values)
    with pytest.raises(ValueError, match=r"^Node 3 of the reduce cell has 1 live incoming edge\(s\); perturbation "
                                         r"selection needs 2\. Received: live edges \[1\]$"):
        perturbation_genotype(model, model.accuracy)
    np.testing.assert_array_equal(model.gates["reduce"].active.numpy(), active["reduce"])


def test_decisions_without_an_alternative_are_taken_unmeasured():
    """A pruned supernet whose edges hold one live op each, two live edges per node: the genotype is forced,
    and the selection measures only the supernet as trained and as reduced."""
    active = {t: np.zeros((EDGES, len(NAMES)), "float32") for t in genotype_lib.CELL_TYPES}
    expected = {}
    for t in genotype_lib.CELL_TYPES:
        cell = []
        for i in range(NODES):
            for j, o in ((0, 1 + i % 3), (1 + i, 1 + (i + 1) % 3)):  # inputs 0 and the previous node
                active[t][genotype_lib.edge_index(i, j), o] = 1.0
            active[t][genotype_lib.edge_index(i, 0), 0] = 1.0  # a live `none` is no alternative
            cell.append(((NAMES[1 + i % 3], 0), (NAMES[1 + (i + 1) % 3], 1 + i)))
        expected[t] = tuple(cell)
    values = {t: np.ones((EDGES, len(NAMES))) for t in genotype_lib.CELL_TYPES}
    model = _StandIn(active, values)
    genotype, record = perturbation_genotype(model, model.accuracy)
    concat = tuple(range(2, 2 + NODES))
    assert genotype == genotype_lib.Genotype(normal=expected["normal"], normal_concat=concat,
                                             reduce=expected["reduce"], reduce_concat=concat)
    assert model.calls == record["evaluations"] == 2
    for t in genotype_lib.CELL_TYPES:
        assert np.all(np.isnan(record["op_drops"][t])) and np.all(np.isnan(record["edge_drops"][t]))
