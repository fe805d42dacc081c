"""Tests for the genotype zoo: bundled published cells and `load_genotype`."""

import importlib.resources
import json
import os
import pathlib
import re

import pytest

from tfvnas.layers import registry as op_registry
from tfvnas.models.genotype import Genotype
from tfvnas.models.zoo import load_genotype, zoo_entry, zoo_names

DARTS_OPS = op_registry.OP_SETS["darts"]

# Independent transcription of the DARTS (second order) CIFAR-10 cells of
# Liu et al. 2019 (the figures of the paper; `DARTS_V2` in quark0/darts
# cnn/genotypes.py), node by node: state 0 = c_{k-2}, 1 = c_{k-1}, 2 + i =
# node i.
DARTS_V2_NORMAL = (
    (("sep_conv_3x3", 0), ("sep_conv_3x3", 1)),
    (("sep_conv_3x3", 0), ("sep_conv_3x3", 1)),
    (("sep_conv_3x3", 1), ("skip_connect", 0)),
    (("skip_connect", 0), ("dil_conv_3x3", 2)),
)
DARTS_V2_REDUCE = (
    (("max_pool_3x3", 0), ("max_pool_3x3", 1)),
    (("skip_connect", 2), ("max_pool_3x3", 1)),
    (("max_pool_3x3", 0), ("skip_connect", 2)),
    (("skip_connect", 2), ("max_pool_3x3", 1)),
)

SOURCE_TYPES = {
    "paper": str,
    "authors": list,
    "year": int,
    "arxiv": str,
    "url": str,
    "repository": str,
    "file": str,
    "variable": str,
    "dataset": str,
    "test_error_percent": float,
    "params_millions": float,
}

KNOWN = "['darts_v1', 'darts_v2', 'drnas', 'pc_darts']"
SPELLING = "case-insensitive; '-' and '_' are interchangeable"


def raw_zoo_file(name):
    text = (
        importlib.resources.files("tfvnas.genotypes")
        .joinpath(f"{name}.json")
        .read_text(encoding="utf-8")
    )
    return json.loads(text)


def assert_message(excinfo, expected):
    assert str(excinfo.value) == expected


# -- the bundled cells --------------------------------------------------------


def test_zoo_names():
    names = zoo_names()
    assert names == sorted(names)
    assert {"darts_v1", "darts_v2", "pc_darts", "drnas"} <= set(names)
    for name in names:
        # File stems are already in the normalised spelling.
        assert re.fullmatch(r"[a-z0-9_]+", name), name


@pytest.mark.parametrize("name", zoo_names())
def test_entry_is_a_darts_cell(name):
    genotype, _ = zoo_entry(name)
    assert genotype.validate(DARTS_OPS) is genotype
    assert genotype.nodes == 4
    for cell in (genotype.normal, genotype.reduce):
        assert [len(node) for node in cell] == [2, 2, 2, 2]
        for node in cell:
            # A DARTS cell takes its two inputs from two different states.
            assert node[0][1] != node[1][1]
    assert genotype.normal_concat == (2, 3, 4, 5)
    assert genotype.reduce_concat == (2, 3, 4, 5)
    assert "none" not in genotype.op_histogram()


@pytest.mark.parametrize("name", zoo_names())
def test_entry_source_is_complete(name):
    _, source = zoo_entry(name)
    for key, kind in SOURCE_TYPES.items():
        assert isinstance(source.get(key), kind), (key, source.get(key))
        if kind is str:
            assert source[key].strip(), key
    assert source["authors"] and all(
        isinstance(a, str) and a.strip() for a in source["authors"]
    )
    assert 2018 <= source["year"] <= 2030
    assert re.fullmatch(r"\d{4}\.\d{4,5}", source["arxiv"])
    assert source["url"] == f"https://arxiv.org/abs/{source['arxiv']}"
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", source["repository"])
    assert source["file"].endswith("genotypes.py")
    assert source["dataset"] == "CIFAR-10"
    assert 0.0 < source["test_error_percent"] < 10.0
    assert 0.0 < source["params_millions"] < 10.0


@pytest.mark.parametrize("name", zoo_names())
def test_entry_file_is_canonical(name):
    # The genotype part of the file is exactly what `to_dict` writes, so the
    # files and the hashes of their genotypes stay in step.
    data = raw_zoo_file(name)
    source = data.pop("source")
    genotype, loaded_source = zoo_entry(name)
    assert genotype.to_dict() == data
    assert loaded_source == source


@pytest.mark.parametrize("name", zoo_names())
def test_entry_json_round_trip(name, tmp_path):
    genotype, _ = zoo_entry(name)
    assert Genotype.from_json(genotype.to_json()) == genotype
    path = tmp_path / "genotype.json"
    genotype.save(path)
    assert load_genotype(path) == genotype
    assert load_genotype(path).hash() == genotype.hash()


def test_darts_v2_pinned():
    genotype = load_genotype("darts_v2")
    assert genotype.normal == DARTS_V2_NORMAL
    assert genotype.reduce == DARTS_V2_REDUCE
    assert genotype.normal_concat == (2, 3, 4, 5)
    assert genotype.reduce_concat == (2, 3, 4, 5)
    _, source = zoo_entry("darts_v2")
    assert source["arxiv"] == "1806.09055"
    assert source["repository"] == "https://github.com/quark0/darts"
    assert source["variable"] == "DARTS_V2"
    assert source["test_error_percent"] == 2.76
    assert source["params_millions"] == 3.3


def test_entries_are_distinct():
    hashes = {zoo_entry(name)[0].hash() for name in zoo_names()}
    assert len(hashes) == len(zoo_names())


def test_source_is_a_copy():
    _, source = zoo_entry("drnas")
    source["paper"] = "changed"
    assert zoo_entry("drnas")[1]["paper"] != "changed"


# -- names --------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling, name",
    [
        ("darts_v2", "darts_v2"),
        ("DARTS_V2", "darts_v2"),
        ("Darts-V2", "darts_v2"),
        ("pc-darts", "pc_darts"),
        ("PC-DARTS", "pc_darts"),
        ("pc_darts", "pc_darts"),
        ("DrNAS", "drnas"),
    ],
)
def test_name_normalisation(spelling, name):
    expected = zoo_entry(name)
    assert zoo_entry(spelling) == expected
    assert load_genotype(spelling) == expected[0]


def test_zoo_entry_unknown_name():
    with pytest.raises(ValueError) as excinfo:
        zoo_entry("darts_v3")
    assert_message(
        excinfo,
        f"`name` must be the name of a zoo genotype, one of {KNOWN} ({SPELLING}). "
        "Received: name='darts_v3'",
    )


def test_zoo_entry_rejects_non_str():
    with pytest.raises(ValueError) as excinfo:
        zoo_entry(2)
    assert_message(
        excinfo,
        f"`name` must be the name of a zoo genotype, one of {KNOWN} ({SPELLING}). "
        "Received: name=2",
    )


# -- paths --------------------------------------------------------------------


def test_load_file_and_directory(tmp_path):
    genotype = zoo_entry("pc_darts")[0]
    genotype.save(tmp_path / "genotype.json")
    for value in (
        tmp_path / "genotype.json",
        str(tmp_path / "genotype.json"),
        tmp_path,
        str(tmp_path),
    ):
        assert load_genotype(value) == genotype


def test_load_zoo_format_file(tmp_path):
    # A copy of a zoo file loads as a path; its `source` is ignored.
    path = tmp_path / "cell.json"
    path.write_text(json.dumps(raw_zoo_file("drnas")), encoding="utf-8")
    assert load_genotype(path) == zoo_entry("drnas")[0]


def test_zoo_name_wins_over_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.mkdir("darts_v2")
    zoo_entry("darts_v1")[0].save(pathlib.Path("darts_v2", "genotype.json"))
    assert load_genotype("darts_v2") == zoo_entry("darts_v2")[0]
    assert load_genotype("./darts_v2") == zoo_entry("darts_v1")[0]


def test_unknown_name_and_missing_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as excinfo:
        load_genotype("darts_v3")
    assert_message(
        excinfo,
        f"`name_or_path` must be a zoo genotype name, one of {KNOWN} ({SPELLING}), "
        "or the path of a genotype JSON file or of a directory holding "
        "genotype.json. Received: name_or_path='darts_v3', which is not a zoo "
        "name, and that path does not exist",
    )


def test_missing_path_object(tmp_path):
    path = tmp_path / "runs" / "genotype.json"
    with pytest.raises(ValueError) as excinfo:
        load_genotype(path)
    assert_message(
        excinfo,
        f"`name_or_path` must be a zoo genotype name, one of {KNOWN} ({SPELLING}), "
        "or the path of a genotype JSON file or of a directory holding "
        f"genotype.json. Received: name_or_path={str(path)!r}, which is not a zoo "
        "name, and that path does not exist",
    )


def test_directory_without_genotype(tmp_path):
    with pytest.raises(ValueError) as excinfo:
        load_genotype(tmp_path)
    assert_message(
        excinfo,
        "`name_or_path` is a directory, so it must hold a genotype.json file. "
        f"Received: name_or_path={str(tmp_path)!r}, which has no genotype.json",
    )


def test_rejects_non_path():
    with pytest.raises(ValueError) as excinfo:
        load_genotype(None)
    assert_message(
        excinfo,
        "`name_or_path` must be a zoo genotype name or a path (str or "
        "os.PathLike). Received: name_or_path=None",
    )


def test_file_genotype_keys_stay_strict(tmp_path):
    data = raw_zoo_file("darts_v1")
    data["extra"] = 1
    path = tmp_path / "cell.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError) as excinfo:
        load_genotype(path)
    assert_message(
        excinfo,
        f"Invalid genotype file {str(path)!r}: A genotype must have exactly the "
        "keys ['normal', 'normal_concat', 'reduce', 'reduce_concat']. Received "
        "keys: ['extra', 'normal', 'normal_concat', 'reduce', 'reduce_concat'] "
        "(unknown: ['extra'])",
    )


def test_file_source_must_be_object(tmp_path):
    data = zoo_entry("darts_v1")[0].to_dict()
    data["source"] = "DARTS"
    path = tmp_path / "cell.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError) as excinfo:
        load_genotype(path)
    assert_message(
        excinfo,
        f"In Genotype file {str(path)!r}, `source` must be a JSON object. "
        "Received: source='DARTS'",
    )


def test_file_invalid_json(tmp_path):
    path = tmp_path / "genotype.json"
    path.write_text("{", encoding="utf-8")
    with pytest.raises(ValueError) as excinfo:
        load_genotype(tmp_path)
    assert_message(
        excinfo,
        f"Genotype file {str(path)!r} must be valid JSON. Received: Expecting "
        "property name enclosed in double quotes at line 1, column 2 (char 1), "
        "near '{'",
    )
