"""Tests for tfvnas.models.derivation: genotypes from gate tables (top_k, threshold), random cells."""

import json
import math
import re

import numpy as np
import pytest

from tests.helpers.genotypes import DARTS_OPS, darts_v2
from tfvnas.models.derivation import derive_threshold, derive_top_k
from tfvnas.models.genotype import Genotype, edge_index, num_edges

INF = math.inf


def raises(message):
    return pytest.raises(ValueError, match="^" + re.escape(message) + "$")


def raises_starting(message):
    return pytest.raises(ValueError, match="^" + re.escape(message))


OPS = ["none", "skip_connect", "sep_conv_3x3", "max_pool_3x3"]

# nodes=2: rows are edges (node, input) = (0,0) (0,1) (1,0) (1,1) (1,2).
NORMAL2 = [
    [-5.0, 1.0, 0.5, 2.0],  # best survivor sep_conv_3x3 (none is excluded)
    [-5.0, 4.0, INF, 2.5],  # max_pool_3x3
    [0.0, 2.9, 2.95, INF],  # skip_connect, weakest edge of node 1
    [0.0, -1.0, 0.0, 1.0],  # skip_connect
    [0.0, 0.2, -0.5, 3.0],  # sep_conv_3x3; max_pool at the threshold is pruned
]
REDUCE2 = [
    [0.0, 5.0, 2.0, 4.0],  # sep_conv_3x3 (none is excluded)
    [0.0, INF, 3.5, 0.0],  # max_pool_3x3
    [-9.0, 0.5, INF, INF],  # skip_connect
    [-9.0, INF, INF, INF],  # only the excluded none: no survivor
    [-9.0, INF, 2.5, INF],  # sep_conv_3x3
]
TABLES2 = {"normal": np.array(NORMAL2), "reduce": np.array(REDUCE2)}
REDUCE2_DERIVED = (
    (("sep_conv_3x3", 0), ("max_pool_3x3", 1)),
    (("skip_connect", 0), ("sep_conv_3x3", 2)),
)


def test_top_k_nodes2():
    g = derive_top_k(TABLES2, OPS, nodes=2)
    assert g == Genotype(
        normal=[
            [("sep_conv_3x3", 0), ("max_pool_3x3", 1)],
            [("skip_connect", 1), ("sep_conv_3x3", 2)],
        ],
        normal_concat=[2, 3],
        reduce=REDUCE2_DERIVED,
        reduce_concat=[2, 3],
    )


def test_top_k_k1():
    g = derive_top_k(TABLES2, OPS, nodes=2, k=1)
    assert g.normal == ((("sep_conv_3x3", 0),), (("skip_connect", 1),))
    assert g.reduce == ((("max_pool_3x3", 1),), (("skip_connect", 0),))


def test_top_k_k3():
    # Node 0 has only two incoming edges, so k=3 keeps both; node 1 keeps three.
    g = derive_top_k({"normal": NORMAL2, "reduce": NORMAL2}, OPS, nodes=2, k=3)
    assert g.normal == g.reduce == (
        (("sep_conv_3x3", 0), ("max_pool_3x3", 1)),
        (("skip_connect", 0), ("skip_connect", 1), ("sep_conv_3x3", 2)),
    )


def test_top_k_refuses_a_node_short_of_k_instead_of_refilling_it():
    # The reduce cell's node 1 has two edges with a survivor; k=3 needs three.
    with raises_starting("Node 3 of the reduce cell has 2 incoming edge(s) with ops below the threshold; the "
                "derivation needs 3."):
        derive_top_k(TABLES2, OPS, nodes=2, k=3)
    # Only one edge of node 0 survives: no edge is taken back from the pruned.
    table = np.full((5, 4), INF)
    table[0, 1] = table[3, 2] = table[4, 3] = 0.0
    with raises_starting("Node 2 of the normal cell has 1 incoming edge(s) with ops below the threshold"):
        derive_top_k({"normal": table, "reduce": table}, OPS, nodes=2)


def test_every_top_k_node_has_exactly_k_distinct_inputs_each_with_one_op():
    rng = np.random.default_rng(0)
    for _ in range(200):
        tables = {t: rng.normal(size=(num_edges(4), len(DARTS_OPS))) for t in ("normal", "reduce")}
        active = {t: (rng.random(size=tables[t].shape) < 0.3).astype(float) for t in tables}
        for t in active:  # two live edges per node at least, as the per-node floor keeps
            for i in range(4):
                for j in rng.choice(2 + i, size=2, replace=False):
                    active[t][edge_index(i, int(j)), rng.integers(len(DARTS_OPS) - 1)] = 1.0  # not `none`
        g = derive_top_k(tables, DARTS_OPS, nodes=4, active=active)
        for cell in (g.normal, g.reduce):
            assert all(len(node) == 2 and len({j for _, j in node}) == 2 for node in cell)


def test_active_gates_survive_whatever_their_log_alpha():
    # A gate held by the per-node floor is active above the threshold; a
    # pruned gate is gone below it.
    table = np.zeros((5, 4))
    table[:, 2] = 5.0  # sep_conv_3x3 above the threshold everywhere
    active = np.zeros((5, 4))
    active[:, 2] = 1.0  # ... and active (held); every other op pruned
    g = derive_top_k({"normal": table, "reduce": table}, OPS, nodes=2, active={"normal": active, "reduce": active})
    assert g.normal == ((("sep_conv_3x3", 0), ("sep_conv_3x3", 1)), (("sep_conv_3x3", 0), ("sep_conv_3x3", 1)))
    t = derive_threshold({"normal": table, "reduce": table}, OPS, nodes=2, k=2,
                         active={"normal": active, "reduce": active})
    assert t.normal[1] == (("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2))


def test_top_k_threshold_argument():
    # With threshold 1.0 only sep(0) survives in node 0 of the normal cell.
    with raises_starting("Node 2 of the normal cell has 1 incoming edge(s) with ops below the threshold; the "
                "derivation needs 2."):
        derive_top_k(TABLES2, OPS, nodes=2, threshold=1.0)
    g = derive_top_k(TABLES2, OPS, nodes=2, threshold=1.0, k=1)
    assert g.normal == ((("sep_conv_3x3", 0),), (("skip_connect", 1),))


def test_top_k_without_exclusion_picks_none():
    g = derive_top_k(TABLES2, OPS, nodes=2, exclude=())
    assert g.normal[0] == (("none", 0), ("none", 1))
    assert g.reduce == ((("none", 0), ("none", 1)), (("none", 0), ("none", 1)))


def test_exclude_other_ops():
    g = derive_top_k({"normal": NORMAL2, "reduce": NORMAL2}, OPS, nodes=2, exclude=["none", "skip_connect"])
    # Node 1: skip(0), skip(1) excluded; best survivors sep(1)=0.0, sep(2)=-0.5.
    assert g.normal == (
        (("sep_conv_3x3", 0), ("max_pool_3x3", 1)),
        (("sep_conv_3x3", 1), ("sep_conv_3x3", 2)),
    )
    # Reduce node 1 keeps skip(0) and sep(2): without skip, one edge is left.
    with raises_starting("Node 3 of the reduce cell has 1 incoming edge(s)"):
        derive_top_k(TABLES2, OPS, nodes=2, exclude=["none", "skip_connect"])


def test_ties_are_deterministic():
    table = np.zeros((5, 4))
    for derive in (derive_top_k, derive_threshold):
        # Everything pruned: no refill.
        with raises_starting("Node 2 of the normal cell has 0 incoming edge(s)"):
            derive({"normal": table, "reduce": table}, OPS, nodes=2, threshold=-1.0)
    g = derive_top_k({"normal": table, "reduce": table}, OPS, nodes=2)
    assert g.normal == (
        (("skip_connect", 0), ("skip_connect", 1)),
        (("skip_connect", 0), ("skip_connect", 1)),
    )


def test_threshold_nodes2():
    g = derive_threshold(TABLES2, OPS, nodes=2)
    assert g == Genotype(
        normal=[
            [
                ("skip_connect", 0),
                ("sep_conv_3x3", 0),
                ("max_pool_3x3", 0),
                ("max_pool_3x3", 1),
            ],
            [
                ("skip_connect", 0),
                ("sep_conv_3x3", 0),
                ("skip_connect", 1),
                ("sep_conv_3x3", 1),
                ("max_pool_3x3", 1),
                ("skip_connect", 2),
                ("sep_conv_3x3", 2),
            ],
        ],
        normal_concat=[2, 3],
        reduce=REDUCE2_DERIVED,
        reduce_concat=[2, 3],
    )


def test_threshold_argument():
    g = derive_threshold(TABLES2, OPS, nodes=2, threshold=0.6)
    assert g.normal == (
        (("sep_conv_3x3", 0),),
        (
            ("skip_connect", 1),
            ("sep_conv_3x3", 1),
            ("skip_connect", 2),
            ("sep_conv_3x3", 2),
        ),
    )


def table4(entries):
    """A (14, 8) table, +inf except `entries[(node, input, op)] = value`."""
    table = np.full((num_edges(4), len(DARTS_OPS)), INF)
    for (node, inp, op), value in entries.items():
        table[edge_index(node, inp), DARTS_OPS.index(op)] = value
    return table


NORMAL4 = table4(
    {
        (0, 0, "sep_conv_3x3"): -2.0,
        (0, 1, "sep_conv_3x3"): -1.5,
        (0, 0, "skip_connect"): 1.0,
        (1, 0, "sep_conv_3x3"): -1.0,
        (1, 1, "sep_conv_3x3"): -0.5,
        (1, 2, "dil_conv_3x3"): 2.0,
        (2, 0, "skip_connect"): 0.1,
        (2, 1, "sep_conv_3x3"): 0.2,
        (2, 2, "max_pool_3x3"): 2.9,
        (2, 3, "avg_pool_3x3"): 3.0,
        (3, 0, "skip_connect"): 0.0,
        (3, 1, "sep_conv_5x5"): 0.5,
        (3, 2, "dil_conv_3x3"): -0.3,
        (3, 4, "none"): -10.0,
    }
)
REDUCE4 = table4(
    {
        (0, 0, "max_pool_3x3"): -1.0,
        (0, 1, "max_pool_3x3"): -1.0,
        (1, 1, "max_pool_3x3"): -0.4,
        (1, 2, "skip_connect"): -0.6,
        (1, 0, "avg_pool_3x3"): 2.0,
        (2, 0, "max_pool_3x3"): 0.0,
        (2, 2, "skip_connect"): -0.1,
        (2, 3, "none"): -5.0,
        (3, 1, "max_pool_3x3"): 1.0,
        (3, 2, "skip_connect"): 1.5,
        (3, 3, "sep_conv_3x3"): 3.5,
    }
)


def sorted_by_input(cells):
    return [sorted(node, key=lambda pair: pair[1]) for node in cells]


def test_top_k_nodes4_recovers_darts_v2():
    g = derive_top_k({"normal": NORMAL4, "reduce": REDUCE4}, DARTS_OPS, nodes=4)
    v2 = darts_v2()
    assert g == Genotype(
        normal=sorted_by_input(v2.normal),
        normal_concat=[2, 3, 4, 5],
        reduce=sorted_by_input(v2.reduce),
        reduce_concat=[2, 3, 4, 5],
    )
    assert g.op_histogram() == v2.op_histogram()


def test_threshold_nodes4():
    g = derive_threshold({"normal": NORMAL4, "reduce": REDUCE4}, DARTS_OPS, nodes=4)
    assert g.to_dict() == {
        "normal": [
            [["sep_conv_3x3", 0], ["skip_connect", 0], ["sep_conv_3x3", 1]],
            [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ["dil_conv_3x3", 2]],
            [["skip_connect", 0], ["sep_conv_3x3", 1], ["max_pool_3x3", 2]],
            [["skip_connect", 0], ["sep_conv_5x5", 1], ["dil_conv_3x3", 2]],
        ],
        "normal_concat": [2, 3, 4, 5],
        "reduce": [
            [["max_pool_3x3", 0], ["max_pool_3x3", 1]],
            [["avg_pool_3x3", 0], ["max_pool_3x3", 1], ["skip_connect", 2]],
            [["max_pool_3x3", 0], ["skip_connect", 2]],
            [["max_pool_3x3", 1], ["skip_connect", 2]],
        ],
        "reduce_concat": [2, 3, 4, 5],
    }


def test_derive_accepts_lists_and_is_pure():
    tables = {"normal": NORMAL2, "reduce": REDUCE2}
    before = json.dumps(tables)
    assert derive_top_k(tables, tuple(OPS), nodes=2) == derive_top_k(
        TABLES2, OPS, nodes=2
    )
    assert json.dumps(tables) == before


def bad_derive_cases():
    ok = dict(log_alpha=TABLES2, op_names=OPS, nodes=2)
    wrong_shape = {"normal": np.zeros((5, 3)), "reduce": np.zeros((5, 4))}
    nan = {"normal": np.zeros((5, 4)), "reduce": np.zeros((5, 4))}
    nan["reduce"][3, 2] = np.nan
    return [
        ({**ok, "nodes": 0}, "`nodes` must be a positive int. Received: nodes=0"),
        ({**ok, "op_names": []}, "`op_names` must not be empty. Received: op_names=[]"),
        (
            {**ok, "op_names": ["none", "skip_connect", "none", "max_pool_3x3"]},
            "`op_names` must not contain duplicates (found ['none']). Received: "
            "op_names=['none', 'skip_connect', 'none', 'max_pool_3x3']",
        ),
        (
            {**ok, "op_names": "none"},
            "`op_names` must be an iterable of op names (str), not a single str. "
            "Received: op_names='none'",
        ),
        (
            {**ok, "threshold": float("nan")},
            "`threshold` must be a finite number. Received: threshold=nan",
        ),
        (
            {**ok, "threshold": "3"},
            "`threshold` must be a finite number. Received: threshold='3'",
        ),
        (
            {**ok, "exclude": "none"},
            "`exclude` must be an iterable of op names (str), not a single str. "
            "Received: exclude='none'",
        ),
        (
            {**ok, "exclude": OPS},
            "`exclude` must leave at least one op of `op_names` to choose. "
            "Received: exclude=['max_pool_3x3', 'none', 'sep_conv_3x3', "
            "'skip_connect'], op_names=['none', 'skip_connect', 'sep_conv_3x3', "
            "'max_pool_3x3']",
        ),
        (
            {**ok, "log_alpha": {"normal": TABLES2["normal"]}},
            "`log_alpha` must have exactly the keys ['normal', 'reduce']. "
            "Received keys: ['normal']",
        ),
        (
            {**ok, "log_alpha": {**TABLES2, "Normal": TABLES2["normal"]}},
            "`log_alpha` must have exactly the keys ['normal', 'reduce']. "
            "Received keys: ['Normal', 'normal', 'reduce']",
        ),
        (
            {**ok, "log_alpha": [NORMAL2, REDUCE2]},
            "`log_alpha` must be a dict mapping ['normal', 'reduce'] to arrays. "
            "Received: " + repr([NORMAL2, REDUCE2])[:197] + "...",
        ),
        (
            {**ok, "log_alpha": wrong_shape},
            "`log_alpha['normal']` must have shape (5, 4) (num_edges(nodes=2), "
            "len(op_names)). Received: shape=(5, 3)",
        ),
        (
            {**ok, "nodes": 4},
            "`log_alpha['normal']` must have shape (14, 4) (num_edges(nodes=4), "
            "len(op_names)). Received: shape=(5, 4)",
        ),
        (
            {**ok, "log_alpha": {"normal": TABLES2["normal"], "reduce": "abc"}},
            "`log_alpha['reduce']` must be an array of floats. Received: 'abc'",
        ),
        (
            {**ok, "log_alpha": nan},
            "`log_alpha['reduce']` must not contain NaN. Received NaN at "
            "(edge, op) [(3, 2)]",
        ),
    ]


@pytest.mark.parametrize("kwargs, message", bad_derive_cases())
def test_derive_errors(kwargs, message):
    with raises(message):
        derive_top_k(**kwargs)
    with raises(message):
        derive_threshold(**kwargs)


@pytest.mark.parametrize("k", [0, -1, 1.5, True, None])
def test_top_k_bad_k(k):
    with raises(f"`k` must be a positive int. Received: k={k!r}"):
        derive_top_k(TABLES2, OPS, nodes=2, k=k)


def test_random_genotype_is_uniform_over_the_top_k_space():
    from tfvnas.models.derivation import random_genotype

    ops = ["none", "sep_conv_3x3", "max_pool_3x3", "skip_connect"]
    draws = [random_genotype(ops, nodes=4, rng=np.random.default_rng(s)) for s in range(600)]
    assert random_genotype(ops, nodes=4, rng=np.random.default_rng(3)) == draws[3]  # a function of the seed
    counts = {op: 0 for op in ops}
    first_inputs = np.zeros(5)
    for g in draws:
        for cell in (g.normal, g.reduce):
            assert [len(node) for node in cell] == [2, 2, 2, 2]
            for i, node in enumerate(cell):
                inputs = [j for _, j in node]
                assert len(set(inputs)) == 2 and all(0 <= j <= 1 + i for j in inputs)
            for op, _ in (p for node in cell for p in node):
                counts[op] += 1
        first_inputs[[j for _, j in g.normal[3]]] += 1
    assert counts["none"] == 0
    total = sum(counts.values())
    for op in ops[1:]:  # uniform over the three drawable ops: 1/3 each
        assert abs(counts[op] / total - 1 / 3) < 0.02
    # Node 5 (the fourth) picks 2 of its 5 inputs uniformly: each 2/5 of the time.
    np.testing.assert_allclose(first_inputs / len(draws), 0.4, atol=0.05)
