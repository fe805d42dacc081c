"""Tests for tfvnas.models.genotype: edge order, Genotype data and JSON."""

import hashlib
import json
import os
import re

import numpy as np
import pytest

from tests.helpers.genotypes import DARTS_OPS, DARTS_V2, darts_v2
from tfvnas.models.genotype import Genotype, edge_index, edge_list, num_edges


def small(**overrides):
    """A valid two-node genotype, with fields replaced by `overrides`."""
    fields = dict(
        normal=[[("sep_conv_3x3", 0), ("skip_connect", 1)], [("max_pool_3x3", 2)]],
        normal_concat=[2, 3],
        reduce=[[("max_pool_3x3", 0), ("max_pool_3x3", 1)], [("skip_connect", 2)]],
        reduce_concat=[2, 3],
    )
    fields.update(overrides)
    return Genotype(**fields)


def raises(message):
    return pytest.raises(ValueError, match="^" + re.escape(message) + "$")


def raises_starting(message):
    return pytest.raises(ValueError, match="^" + re.escape(message))


# ---------------------------------------------------------------------------
# Edge enumeration.


def test_num_edges():
    assert [num_edges(n) for n in (1, 2, 3, 4, 5)] == [2, 5, 9, 14, 20]


def test_edge_index_offsets():
    assert [edge_index(i, 0) for i in range(4)] == [0, 2, 5, 9]
    assert edge_index(3, 4) == 13
    assert edge_index(np.int64(1), np.int32(2)) == 4


def test_edge_list_matches_edge_index():
    edges = edge_list(4)
    assert len(edges) == num_edges(4) == 14
    assert edges[:5] == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
    assert edges[-1] == (3, 4)
    assert [edge_index(i, j) for i, j in edges] == list(range(14))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: num_edges(0), "`nodes` must be a positive int. Received: nodes=0"),
        (
            lambda: num_edges(True),
            "`nodes` must be a positive int. Received: nodes=True",
        ),
        (lambda: edge_list(2.0), "`nodes` must be a positive int. Received: nodes=2.0"),
        (
            lambda: edge_index(-1, 0),
            "`node` must be a non-negative int. Received: node=-1",
        ),
        (
            lambda: edge_index(1, 3),
            "`input` must be an int in [0, 2] (a state before node 1). "
            "Received: input=3",
        ),
        (
            lambda: edge_index(0, -1),
            "`input` must be an int in [0, 1] (a state before node 0). "
            "Received: input=-1",
        ),
    ],
)
def test_edge_errors(call, message):
    with raises(message):
        call()


# ---------------------------------------------------------------------------
# Genotype data.


def test_darts_v2_validates():
    g = darts_v2()
    assert g.validate(DARTS_OPS) is g
    assert g.nodes == g.normal_nodes == g.reduce_nodes == 4
    assert g.normal[3] == (("skip_connect", 0), ("dil_conv_3x3", 2))
    assert g.reduce_concat == (2, 3, 4, 5)


def test_lists_become_tuples_and_hashable():
    g = darts_v2()
    assert isinstance(g.normal, tuple)
    assert all(isinstance(node, tuple) for node in g.normal)
    assert all(isinstance(pair, tuple) for node in g.reduce for pair in node)
    assert isinstance(g.normal_concat, tuple)
    from_tuples = Genotype(
        normal=tuple(tuple(tuple(p) for p in n) for n in DARTS_V2["normal"]),
        normal_concat=(2, 3, 4, 5),
        reduce=tuple(tuple(tuple(p) for p in n) for n in DARTS_V2["reduce"]),
        reduce_concat=(2, 3, 4, 5),
    )
    assert from_tuples == g
    assert len({g, from_tuples}) == 1
    with pytest.raises(AttributeError):
        g.normal = ()


def test_numpy_ints_are_converted():
    g = small(normal_concat=[np.int64(2), np.int32(3)])
    assert g.normal_concat == (2, 3)
    assert type(g.normal_concat[0]) is int


def test_nodes_differ():
    g = small(reduce=[[("max_pool_3x3", 0)]], reduce_concat=[2])
    assert (g.normal_nodes, g.reduce_nodes) == (2, 1)
    g.validate(DARTS_OPS)
    with raises(
        "`nodes` is defined only when both cells have the same number of "
        "nodes; use `normal_nodes` / `reduce_nodes`. Received: "
        "normal_nodes=2, reduce_nodes=1"
    ):
        g.nodes


def test_to_dict_schema():
    assert darts_v2().to_dict() == DARTS_V2
    d = small().to_dict()
    assert d == {
        "normal": [[["sep_conv_3x3", 0], ["skip_connect", 1]], [["max_pool_3x3", 2]]],
        "normal_concat": [2, 3],
        "reduce": [[["max_pool_3x3", 0], ["max_pool_3x3", 1]], [["skip_connect", 2]]],
        "reduce_concat": [2, 3],
    }


def test_json_round_trip():
    g = darts_v2()
    text = g.to_json()
    assert json.loads(text) == DARTS_V2
    assert "\n  " in text
    back = Genotype.from_json(text)
    assert back == g
    assert back.to_dict() == g.to_dict()
    assert Genotype.from_json(g.to_json(indent=None)) == g
    assert Genotype.from_json(text.encode("utf-8")) == g


def test_save_load_round_trip(tmp_path):
    g = darts_v2()
    path = tmp_path / "genotype.json"
    g.save(path)
    assert Genotype.load(path) == g
    assert Genotype.load(str(path)).to_dict() == DARTS_V2
    assert json.loads(path.read_text()) == DARTS_V2
    # Overwrites in place and leaves no temporary file behind.
    small().save(str(path))
    assert Genotype.load(path) == small()
    assert os.listdir(tmp_path) == ["genotype.json"]


def test_save_failure_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "genotype.json"
    darts_v2().save(path)

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        small().save(path)
    assert Genotype.load(path) == darts_v2()
    assert os.listdir(tmp_path) == ["genotype.json"]


def test_canonical_json_and_hash():
    g = darts_v2()
    canonical = g.canonical_json()
    assert " " not in canonical and "\n" not in canonical
    assert canonical == json.dumps(DARTS_V2, sort_keys=True, separators=(",", ":"))
    expected = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    assert g.hash() == expected[:12]
    assert g.hash(64) == expected
    assert g.hash(4) == expected[:4]
    # Pinned: artefact folders are named by this value across runs and versions.
    assert g.hash() == "35b9e8b69b36"
    assert Genotype.from_json(g.to_json()).hash() == g.hash()


def test_hash_changes_with_an_op():
    d = json.loads(json.dumps(DARTS_V2))
    d["reduce"][1][0][0] = "avg_pool_3x3"
    assert Genotype.from_dict(d).hash() != darts_v2().hash()
    d = json.loads(json.dumps(DARTS_V2))
    d["normal"][0][1][1] = 0
    assert Genotype.from_dict(d).hash() != darts_v2().hash()


@pytest.mark.parametrize("length", [0, 65, 2.0, True])
def test_hash_length_error(length):
    with raises(f"`length` must be an int in [1, 64]. Received: length={length!r}"):
        darts_v2().hash(length)


def test_op_histogram():
    assert darts_v2().op_histogram() == {
        "dil_conv_3x3": 1,
        "max_pool_3x3": 5,
        "sep_conv_3x3": 5,
        "skip_connect": 5,
    }
    assert list(darts_v2().op_histogram()) == sorted(darts_v2().op_histogram())


def test_summary():
    g = darts_v2()
    assert g.summary() == "\n".join(
        [
            f"Genotype {g.hash()}",
            "normal cell (4 nodes):",
            "  node 2 <- sep_conv_3x3(0), sep_conv_3x3(1)",
            "  node 3 <- sep_conv_3x3(0), sep_conv_3x3(1)",
            "  node 4 <- sep_conv_3x3(1), skip_connect(0)",
            "  node 5 <- skip_connect(0), dil_conv_3x3(2)",
            "  concat: 2, 3, 4, 5",
            "reduce cell (4 nodes):",
            "  node 2 <- max_pool_3x3(0), max_pool_3x3(1)",
            "  node 3 <- skip_connect(2), max_pool_3x3(1)",
            "  node 4 <- max_pool_3x3(0), skip_connect(2)",
            "  node 5 <- skip_connect(2), max_pool_3x3(1)",
            "  concat: 2, 3, 4, 5",
        ]
    )


# ---------------------------------------------------------------------------
# Structure errors (from_dict / from_json / constructor).

KEYS = "['normal', 'normal_concat', 'reduce', 'reduce_concat']"


def with_field(key, value):
    d = json.loads(json.dumps(DARTS_V2))
    d[key] = value
    return d


@pytest.mark.parametrize(
    "data, message",
    [
        (
            [1, 2],
            f"A genotype must be a JSON object (dict) with keys {KEYS}. "
            "Received: [1, 2]",
        ),
        (
            {k: v for k, v in DARTS_V2.items() if k != "reduce_concat"},
            f"A genotype must have exactly the keys {KEYS}. Received keys: "
            "['normal', 'normal_concat', 'reduce'] (missing: ['reduce_concat'])",
        ),
        (
            {**DARTS_V2, "extra": 1},
            f"A genotype must have exactly the keys {KEYS}. Received keys: "
            "['extra', 'normal', 'normal_concat', 'reduce', 'reduce_concat'] "
            "(unknown: ['extra'])",
        ),
        (
            {
                **{k: v for k, v in DARTS_V2.items() if k != "reduce_concat"},
                "reduce_concats": [2],
            },
            f"A genotype must have exactly the keys {KEYS}. Received keys: "
            "['normal', 'normal_concat', 'reduce', 'reduce_concats'] "
            "(missing: ['reduce_concat']; unknown: ['reduce_concats'])",
        ),
        (
            with_field("normal", "sep_conv_3x3"),
            "`normal` must be a list of nodes, each a list of [op, input] "
            "pairs. Received: normal='sep_conv_3x3'",
        ),
        (
            with_field("reduce", {"a": 1}),
            "`reduce` must be a list of nodes, each a list of [op, input] "
            "pairs. Received: reduce={'a': 1}",
        ),
        (
            with_field("reduce", []),
            "`reduce` must have at least one node. Received: reduce=[]",
        ),
        (
            with_field("normal", [[["sep_conv_3x3", 0]], []]),
            "`normal[1]` must be a non-empty list of [op, input] pairs. "
            "Received: normal[1]=[]",
        ),
        (
            with_field("normal", [["sep_conv_3x3", 0]]),
            "`normal[0][0]` must be an [op, input] pair of a str and an int. "
            "Received: normal[0][0]='sep_conv_3x3'",
        ),
        (
            with_field("normal", [[["sep_conv_3x3", 0, 1]]]),
            "`normal[0][0]` must be an [op, input] pair of a str and an int. "
            "Received: normal[0][0]=['sep_conv_3x3', 0, 1]",
        ),
        (
            with_field("normal", [[["sep_conv_3x3", 0], ["skip_connect", True]]]),
            "`normal[0][1]` must be an [op, input] pair of a str and an int. "
            "Received: normal[0][1]=['skip_connect', True]",
        ),
        (
            with_field("reduce", [[["max_pool_3x3", 1.0]]]),
            "`reduce[0][0]` must be an [op, input] pair of a str and an int. "
            "Received: reduce[0][0]=['max_pool_3x3', 1.0]",
        ),
        (
            with_field("reduce", [[[3, 0]]]),
            "`reduce[0][0]` must be an [op, input] pair of a str and an int. "
            "Received: reduce[0][0]=[3, 0]",
        ),
        (
            with_field("normal_concat", []),
            "`normal_concat` must be a non-empty list of int node states. "
            "Received: normal_concat=[]",
        ),
        (
            with_field("reduce_concat", [2, "3"]),
            "`reduce_concat` must be a non-empty list of int node states. "
            "Received: reduce_concat=[2, '3']",
        ),
        (
            with_field("reduce_concat", 5),
            "`reduce_concat` must be a non-empty list of int node states. "
            "Received: reduce_concat=5",
        ),
        (
            with_field("normal_concat", [2, False]),
            "`normal_concat` must be a non-empty list of int node states. "
            "Received: normal_concat=[2, False]",
        ),
    ],
)
def test_structure_errors(data, message):
    with raises(message):
        Genotype.from_dict(data)
    # The same checks apply to JSON text.
    with raises(message):
        Genotype.from_json(json.dumps(data))


def test_constructor_checks_structure():
    with raises(
        "`normal[0][0]` must be an [op, input] pair of a str and an int. "
        "Received: normal[0][0]=('sep_conv_3x3',)"
    ):
        small(normal=[[("sep_conv_3x3",)]])


def test_long_values_are_shortened():
    with pytest.raises(ValueError) as info:
        Genotype.from_dict(with_field("normal", "x" * 500))
    assert str(info.value).endswith("...")
    assert len(str(info.value)) < 300


def test_invalid_json_text():
    with raises(
        "`text` must be valid JSON. Received: Expecting value at line 1, "
        "column 13 (char 12), near '{\"normal\": [}'"
    ):
        Genotype.from_json('{"normal": [}')


def test_json_not_text():
    with raises("`text` must be JSON text (str). Received: {'normal': []}"):
        Genotype.from_json({"normal": []})


def test_load_invalid_json_names_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{\n  "normal": \n}\n')
    with raises(
        f"Genotype file {str(path)!r} must be valid JSON. Received: Expecting "
        "value at line 3, column 1 (char 15), near '{\\n  \"normal\": \\n}\\n'"
    ):
        Genotype.load(path)


def test_load_invalid_structure_names_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(with_field("reduce", [])))
    with raises(
        f"Invalid genotype file {str(path)!r}: `reduce` must have at least one "
        "node. Received: reduce=[]"
    ):
        Genotype.load(path)


# ---------------------------------------------------------------------------
# Validation errors (validate).


def test_unknown_op():
    d = json.loads(json.dumps(DARTS_V2))
    d["reduce"][2][1][0] = "conv_7x7"
    with raises(
        f"`reduce[2][1]` op must be one of the known ops {sorted(DARTS_OPS)}. "
        "Received: op='conv_7x7'"
    ):
        Genotype.from_dict(d).validate(DARTS_OPS)


def test_an_unregistered_op_is_told_how_to_register():
    # By default the ops are the registry's, and a network is built from it.
    from tfvnas.layers import registry as op_registry
    from tfvnas.models.network import Network

    d = json.loads(json.dumps(DARTS_V2))
    d["normal"][0][0][0] = "conv_7x7"
    message = (
        f"`normal[0][0]` op must be one of the known ops {sorted(op_registry.OPS)}. Received: op='conv_7x7'. To use an "
        "operation of your own, register it first: `tfvnas.register_op('conv_7x7', factory)`, with "
        "`factory(channels, strides)` returning a keras.layers.Layer, in the process that builds the model."
    )
    with raises(message):
        Genotype.from_dict(d).validate()
    with raises(message):
        Network(10, d)


def test_known_ops_restrict():
    with raises(
        "`normal[0][0]` op must be one of the known ops ['max_pool_3x3', "
        "'skip_connect']. Received: op='sep_conv_3x3'"
    ):
        small().validate(("skip_connect", "max_pool_3x3"))


def test_known_ops_single_string():
    with raises(
        "`known_ops` must be an iterable of op names (str), not a single str. "
        "Received: known_ops='sep_conv_3x3'"
    ):
        small().validate("sep_conv_3x3")


@pytest.mark.parametrize(
    "cell, message",
    [
        (
            [[("sep_conv_3x3", 0), ("skip_connect", 2)]],
            "In the normal cell, the input of node 2 (`normal[0][1]`) must be "
            "an earlier state, an int in [0, 1]. Received: input=2",
        ),
        (
            [[("sep_conv_3x3", 0)], [("skip_connect", -1)]],
            "In the normal cell, the input of node 3 (`normal[1][0]`) must be "
            "an earlier state, an int in [0, 2]. Received: input=-1",
        ),
        (
            [[("sep_conv_3x3", 0)], [("skip_connect", 2), ("skip_connect", 3)]],
            "In the normal cell, the input of node 3 (`normal[1][1]`) must be "
            "an earlier state, an int in [0, 2]. Received: input=3",
        ),
    ],
)
def test_bad_input_index(cell, message):
    with raises(message):
        small(normal=cell).validate(DARTS_OPS)


def test_bad_input_index_reduce():
    with raises(
        "In the reduce cell, the input of node 3 (`reduce[1][0]`) must be an "
        "earlier state, an int in [0, 2]. Received: input=5"
    ):
        small(reduce=[[("max_pool_3x3", 0)], [("skip_connect", 5)]]).validate(
            DARTS_OPS
        )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"normal_concat": [2, 3, 4]},
            "`normal_concat` must list intermediate nodes of the normal cell, "
            "ints in [2, 3]. Received: normal_concat=[2, 3, 4]",
        ),
        (
            {"reduce_concat": [1, 2]},
            "`reduce_concat` must list intermediate nodes of the reduce cell, "
            "ints in [2, 3]. Received: reduce_concat=[1, 2]",
        ),
        (
            {"reduce_concat": [3, 2, 3]},
            "`reduce_concat` must not repeat a node. "
            "Received: reduce_concat=[3, 2, 3]",
        ),
    ],
)
def test_bad_concat(overrides, message):
    with raises(message):
        small(**overrides).validate(DARTS_OPS)
