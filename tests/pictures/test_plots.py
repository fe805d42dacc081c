"""`show` and `tfvnas show`: the text summary and the pictures of a zoo name, genotype file or output folder."""

import json
import os

import pytest

from tests.helpers.pictures import (
    DARTS_V2,
    DENSE,
    LAYERS,
    check_png,
    parse_svg,
    search_history,
)
from tfvnas.models.zoo import zoo_entry, zoo_names
from tfvnas.pictures import plots


def _search_dir(path, history=None):
    path.mkdir(parents=True, exist_ok=True)
    DARTS_V2.save(path / "genotype.json")
    DENSE.save(path / "genotype_threshold.json")
    (path / "search_config.json").write_text("{}")
    (path / "search_history.json").write_text(json.dumps(history or search_history()))
    return path


# ---------------------------------------------------------------------------
# Text.


def test_summary_text():
    text = plots.summary_text(DARTS_V2)
    assert text.startswith(DARTS_V2.summary())
    assert "normal: 8 ops, 2 parameter-free (25%); inputs per node: 2, 2, 2, 2" in text
    assert "reduce: 8 ops, 8 parameter-free (100%); inputs per node: 2, 2, 2, 2" in text
    assert "  max_pool_3x3   5 #####  (parameter-free)" in text
    assert "  sep_conv_3x3   5 #####\n" in text


# ---------------------------------------------------------------------------
# show and the CLI.


def test_show_search_dir(tmp_path, no_dot, capsys):
    run = _search_dir(tmp_path / "run")
    result = plots.show(run)
    names = [os.path.relpath(p, run) for p in result["files"]]
    assert names == [
        os.path.join("pictures", f"{prefix}{name}.{fmt}")
        for prefix, name in [("", "normal"), ("", "reduce"), ("threshold_", "normal"), ("threshold_", "reduce"),
                             ("log_alpha_", "normal"), ("log_alpha_", "reduce")]
        for fmt in ("svg", "png")
    ]
    assert result["out_dir"] == str(run / "pictures") and result["skipped"] == {}
    out = capsys.readouterr().out
    assert DARTS_V2.summary() in out and DENSE.summary() in out
    assert "3 epochs; val_accuracy 0.7000" in out
    for p in result["files"]:
        if p.endswith(".png"):
            check_png(p)
        else:
            parse_svg(open(p, encoding="utf-8").read())


def test_show_train_history(tmp_path, no_dot):
    (tmp_path / "train_history.json").write_text(json.dumps({"epochs": [{"epoch": 1}, {"layer_sparsity": LAYERS}]}))
    result = plots.show(tmp_path, tmp_path / "pics", verbose=False)
    assert [os.path.basename(p) for p in result["files"]] == ["sparsity.svg", "sparsity.png"]
    assert result["summary"] == "== train_history.json ==\n3 layers, 420 of 1,576 weights non-zero (26.6%)"
    # No layer sparsity yet: nothing to draw, and said so.
    (tmp_path / "train_history.json").write_text(json.dumps([{"epoch": 1, "loss": 2.0}]))
    DARTS_V2.save(tmp_path / "genotype.json")
    result = plots.show(tmp_path, tmp_path / "pics", formats=["svg"], verbose=False)
    assert [os.path.basename(p) for p in result["files"]] == ["normal.svg", "reduce.svg"]
    history = str(tmp_path / "train_history.json")
    assert result["skipped"] == {"sparsity": f"{history!r} has no 'layer_sparsity' records"}


def test_show_genotype_file(tmp_path, no_dot):
    path = tmp_path / "zoo" / "darts_v2.json"
    path.parent.mkdir()
    DENSE.save(path)
    result = plots.show(path, verbose=False)
    assert result["files"] == [str(tmp_path / "zoo" / "pictures" / f"{c}.{f}") for c in ("normal", "reduce")
                               for f in ("svg", "png")]


def test_show_zoo_name_and_zoo_file(tmp_path, no_dot, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    genotype, source = zoo_entry("pc_darts")
    result = plots.show("PC-DARTS", formats=["svg"])
    assert result["files"] == [os.path.join("pictures", "pc_darts", f"{c}.svg") for c in ("normal", "reduce")]
    out = capsys.readouterr().out
    assert f"{source['paper']} ({source['year']})" in out and genotype.summary() in out
    # A zoo file (with its `source` block) given as a path.
    path = tmp_path / "copy.json"
    path.write_text(json.dumps({**genotype.to_dict(), "source": source}))
    result = plots.show(path, tmp_path / "p", formats=["svg"], verbose=False)
    assert len(result["files"]) == 2


def test_show_errors(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(ValueError) as e:
        plots.show(missing)
    assert str(e.value) == (
        f"`target` must be a zoo genotype name (one of {zoo_names()}), a genotype JSON file, or an output "
        "directory with genotype.json, genotype_threshold.json, search_history.json or train_history.json. "
        f"Received: target={str(missing)!r} (no such file or directory)"
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hi")
    with pytest.raises(ValueError) as e:
        plots.show(empty)
    assert str(e.value).endswith(f"Received: target={str(empty)!r}, a directory with none of them (it holds notes.txt)")
    broken = tmp_path / "broken.json"
    broken.write_text('{"normal": [')
    with pytest.raises(ValueError) as e:
        plots.show(broken)
    assert str(e.value) == (
        f"Genotype file {str(broken)!r} must be valid JSON. Received: Expecting value at line 1, column 13 "
        """(char 12), near '{"normal": ['"""
    )
    bad = tmp_path / "bad_index.json"
    bad.write_text(json.dumps({"normal": [[["skip_connect", 2]]], "normal_concat": [2],
                               "reduce": [[["skip_connect", 0]]], "reduce_concat": [2]}))
    with pytest.raises(ValueError) as e:
        plots.show(bad, verbose=False)
    assert str(e.value) == (
        f"Invalid genotype file {str(bad)!r}: In the normal cell, the input of node 2 (`normal[0][0]`) must be "
        "an earlier state, an int in [0, 1]. Received: input=2"
    )
    run = _search_dir(tmp_path / "run")
    (run / "search_history.json").write_text('{"epochs": 3}')
    with pytest.raises(ValueError) as e:
        plots.show(run, verbose=False)
    assert str(e.value) == (
        f"Invalid search history {str(run / 'search_history.json')!r}: `history` must have the keys 'op_names', "
        "'edges', 'threshold' and 'epochs' of a search_history.json. Received keys: ['epochs'] "
        "(missing: ['op_names', 'edges', 'threshold'])"
    )


def test_cli_show(tmp_path, no_dot, capsys):
    from tfvnas.cli import main

    run = _search_dir(tmp_path / "run")
    assert main(["show", str(run), "--out", str(tmp_path / "pics")]) == 0
    out = capsys.readouterr().out
    assert f"wrote 12 files to {tmp_path / 'pics'}" in out
    assert (tmp_path / "pics" / "log_alpha_reduce.png").is_file()

    assert main(["show", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"tfvnas: error: `target` must be a zoo genotype name (one of {zoo_names()}), a genotype JSON file, "
        "or an output directory with genotype.json, genotype_threshold.json, search_history.json or "
        f"train_history.json. Received: target={str(tmp_path / 'missing')!r} (no such file or directory)\n"
    )
