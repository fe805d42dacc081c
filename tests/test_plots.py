"""Pictures: well-formed SVG, decodable PNG, a layout without overlaps, `show` and `tfvnas show`."""

import json
import os
import stat
import struct
import sys
import xml.etree.ElementTree as ET
import zlib

import numpy as np
import pytest

from tfvnas import plots
from tfvnas.genotype import Genotype, edge_list
from tfvnas.zoo import zoo_entry, zoo_names

SVG = "{http://www.w3.org/2000/svg}"
OPS = ["sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5", "max_pool_3x3", "avg_pool_3x3", "skip_connect"]

DARTS_V2 = Genotype(
    normal=[
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1)],
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1)],
        [("sep_conv_3x3", 1), ("skip_connect", 0)],
        [("skip_connect", 0), ("dil_conv_3x3", 2)],
    ],
    normal_concat=[2, 3, 4, 5],
    reduce=[
        [("max_pool_3x3", 0), ("max_pool_3x3", 1)],
        [("skip_connect", 2), ("max_pool_3x3", 1)],
        [("max_pool_3x3", 0), ("skip_connect", 2)],
        [("skip_connect", 2), ("max_pool_3x3", 1)],
    ],
    reduce_concat=[2, 3, 4, 5],
)


def _dense_cell(nodes, ops_per_edge):
    # Every node takes every earlier state, with `ops_per_edge` ops on each edge.
    return [
        [(OPS[(i + j + 3 * r) % len(OPS)], j) for j in range(2 + i) for r in range(ops_per_edge)]
        for i in range(nodes)
    ]


DENSE = Genotype(
    normal=_dense_cell(4, 2),
    normal_concat=[2, 3, 4, 5],
    reduce=_dense_cell(5, 1),
    reduce_concat=[2, 3, 4, 5, 6],
)


# ---------------------------------------------------------------------------
# Helpers.


def _decode_png(data):
    """A minimal PNG reader (8-bit RGB, any filter): returns an (H, W, 3) uint8 array."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(tag + body) & 0xFFFFFFFF == crc, tag
        chunks.append((tag, body))
        pos += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    w, h, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, color, interlace) == (8, 2, 0)
    raw = zlib.decompress(b"".join(body for tag, body in chunks if tag == b"IDAT"))
    assert len(raw) == h * (1 + 3 * w)
    rows = np.frombuffer(raw, np.uint8).reshape(h, 1 + 3 * w)
    out = np.zeros((h, 3 * w), np.int32)
    for y in range(h):
        f, line = rows[y, 0], rows[y, 1:].astype(np.int32)
        prev = out[y - 1] if y else np.zeros(3 * w, np.int32)
        if f == 0:
            out[y] = line
        elif f == 2:
            out[y] = (line + prev) % 256
        else:  # the writer never uses the other filters
            raise AssertionError(f"unexpected filter {f}")
    return out.reshape(h, w, 3).astype(np.uint8)


def _check_picture(png_path, min_colors=4):
    with open(png_path, "rb") as f:
        img = _decode_png(f.read())
    h, w, _ = img.shape
    assert h > 50 and w > 50
    ink = (img < 250).any(axis=2).mean()
    assert 0.01 < ink < 0.9, ink  # neither blank nor a solid block
    packed = (img[..., 0].astype(np.int32) << 16) | (img[..., 1].astype(np.int32) << 8) | img[..., 2]
    assert len(np.unique(packed)) >= min_colors
    return img


def _densify(points, step=1.0):
    """Points every `step` pixels along a polyline."""
    out = [points[:1]]
    for p, q in zip(points[:-1], points[1:]):
        n = max(int(np.ceil(np.hypot(*(q - p)) / step)), 1)
        out.append(p + (q - p) * np.linspace(0, 1, n + 1)[1:, None])
    return np.concatenate(out)


def _svg(text):
    root = ET.fromstring(text.encode("utf-8"))
    assert root.tag == f"{SVG}svg"
    return root


def _by_class(root, tag, cls):
    return [e for e in root.iter(f"{SVG}{tag}") if e.get("class") == cls]


def _texts(root):
    return [e.text for e in root.iter(f"{SVG}text")]


def _history(epochs=3, nodes=2, threshold=3.0):
    """A small search_history.json: gate (edge 0, op 0) climbs over the threshold at epoch 2."""
    edges = edge_list(nodes)
    rng = np.random.default_rng(0)
    base = {t: rng.uniform(-3, 2, (len(edges), len(OPS))) for t in ("normal", "reduce")}
    ever_pruned = {t: np.zeros((len(edges), len(OPS)), bool) for t in base}
    records = []
    for t in range(epochs):
        log_alpha, active = {}, {}
        for cell_type in ("normal", "reduce"):
            table = base[cell_type] + 0.1 * t
            table[0, 0] = 1.0 + 2.5 * t  # 1.0, 3.5, 6.0
            ever_pruned[cell_type] |= table >= threshold
            log_alpha[cell_type] = table.round(4).tolist()
            active[cell_type] = (~ever_pruned[cell_type]).astype(int).tolist()
        records.append(
            {
                "epoch": t + 1,
                "val_accuracy": 0.5 + 0.1 * t,
                "active_ops": {c: int(np.sum(active[c])) for c in active},
                "total_ops": len(edges) * len(OPS),
                "weight_sparsity": None,
                "log_alpha": log_alpha,
                "active": active,
            }
        )
    return {"dataset": "tiny", "op_names": OPS, "edges": [list(e) for e in edges], "threshold": threshold,
            "epochs": records}


LAYERS = [
    {"name": "stem/conv", "type": "Conv2D", "dense": 432, "nonzero": 400},
    {"name": "cell_0/sep_conv_3x3/depthwise", "type": "DepthwiseConv2D", "dense": 144, "nonzero": 20},
    {"name": "head/dense", "type": "Dense", "dense": 1000, "nonzero": 0},
]


def _search_dir(path, history=None):
    path.mkdir(parents=True, exist_ok=True)
    DARTS_V2.save(path / "genotype.json")
    DENSE.save(path / "genotype_threshold.json")
    (path / "search_config.json").write_text("{}")
    (path / "search_history.json").write_text(json.dumps(history or _history()))
    return path


# ---------------------------------------------------------------------------
# Cells.


@pytest.mark.parametrize("genotype", [DARTS_V2, DENSE], ids=["darts_v2", "dense"])
@pytest.mark.parametrize("cell_type", ["normal", "reduce"])
def test_layout_has_no_overlapping_boxes(genotype, cell_type):
    layout = plots.cell_layout(genotype, cell_type)
    boxes = layout.boxes
    cell = getattr(genotype, cell_type)
    assert sum(b.kind == "op" for b in boxes) == sum(len(node) for node in cell)
    assert sum(b.kind == "node" for b in boxes) == len(cell)
    assert [b.text for b in boxes if b.kind in ("input", "output")] == ["c_{k-2}", "c_{k-1}", "c_{k}"]
    for i, a in enumerate(boxes):
        assert 0 <= a.x and a.x + a.w <= layout.width and 0 <= a.y and a.y + a.h <= layout.height, a
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b, margin=2), (a, b)


@pytest.mark.parametrize("genotype", [DARTS_V2, DENSE], ids=["darts_v2", "dense"])
def test_edges_cross_no_box_but_their_label(genotype):
    layout = plots.cell_layout(genotype, "normal")
    states = {b.text: b for b in layout.boxes if b.kind in ("input", "node", "output")}
    assert len(layout.edges) == sum(len(n) for n in genotype.normal) + len(genotype.normal_concat)
    for edge in layout.edges:
        points = np.concatenate([_densify(line) for line in plots._flatten(edge.commands)])
        entered = set()
        for k, box in enumerate(layout.boxes):
            inside = (
                (points[:, 0] > box.x + 0.5)
                & (points[:, 0] < box.x + box.w - 0.5)
                & (points[:, 1] > box.y + 0.5)
                & (points[:, 1] < box.y + box.h - 0.5)
            )
            if inside.any():
                entered.add(k)
        if edge.op is None:
            assert not entered
        else:
            assert len(entered) == 1
            (label,) = (layout.boxes[k] for k in entered)
            assert (label.kind, label.text) == ("op", edge.op)
        # Starts on the source's right side, ends (arrow tip) on the target's left side.
        source = states[plots._state_name(edge.source)]
        target = states[plots._state_name(edge.target)]
        assert points[0, 0] == pytest.approx(source.x + source.w)
        assert source.y < points[0, 1] < source.y + source.h
        assert points[-1, 0] == pytest.approx(target.x)
        assert target.y < points[-1, 1] < target.y + target.h


@pytest.mark.parametrize("genotype", [DARTS_V2, DENSE], ids=["darts_v2", "dense"])
def test_cell_svg_is_well_formed_and_labelled(genotype):
    for cell_type in ("normal", "reduce"):
        root = _svg(plots.cell_svg(genotype, cell_type))
        cell = getattr(genotype, cell_type)
        texts = _texts(root)
        for op in {op for node in cell for op, _ in node}:
            # Once per use on an edge, once in the legend.
            assert texts.count(op) == 1 + sum(o == op for node in cell for o, _ in node)
        for name in ["c_{k-2}", "c_{k-1}", "c_{k}", *(str(2 + i) for i in range(len(cell)))]:
            assert name in texts
        assert len(_by_class(root, "rect", "op")) == sum(len(node) for node in cell)
        assert len(_by_class(root, "path", "edge")) == len(_by_class(root, "polygon", "arrow"))


def test_cell_png_decodes_and_matches_the_svg_size(tmp_path):
    path = plots.cell_png(DENSE, "normal", tmp_path / "sub" / "normal.png")
    img = _check_picture(path, min_colors=20)
    root = _svg(plots.cell_svg(DENSE, "normal"))
    assert img.shape[:2] == (int(root.get("height")), int(root.get("width")))


def test_draw_genotype_writes_both_cells(tmp_path, monkeypatch):
    monkeypatch.setattr(plots.shutil, "which", lambda name: None)
    paths = plots.draw_genotype(DARTS_V2, tmp_path, prefix="x_")
    assert [os.path.basename(p) for p in paths] == ["x_normal.svg", "x_normal.png", "x_reduce.svg", "x_reduce.png"]
    for p in paths:
        if p.endswith(".png"):
            _check_picture(p)
        else:
            _svg(open(p, encoding="utf-8").read())


def _fake_dot(tmp_path, monkeypatch, exit_code=0):
    """A `dot` on PATH that records its input and writes a marker file."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "dot"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "text = sys.stdin.read()\n"
        f"if {exit_code}:\n"
        "    sys.stderr.write('syntax error')\n"
        f"    sys.exit({exit_code})\n"
        "out = sys.argv[sys.argv.index('-o') + 1]\n"
        "open(out, 'w').write(sys.argv[1] + '\\n' + text)\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")


def test_draw_genotype_uses_dot_when_installed(tmp_path, monkeypatch):
    _fake_dot(tmp_path, monkeypatch)
    paths = plots.draw_genotype(DARTS_V2, tmp_path / "out", formats=["svg"])
    assert [os.path.basename(p) for p in paths] == ["normal.svg", "reduce.svg"]
    text = open(paths[0], encoding="utf-8").read()
    assert text.startswith("-Tsvg\n") and text.endswith(plots.cell_dot(DARTS_V2, "normal"))


def test_failing_dot_warns_and_falls_back(tmp_path, monkeypatch):
    _fake_dot(tmp_path, monkeypatch, exit_code=3)
    with pytest.warns(UserWarning, match="graphviz failed, using the built-in renderer instead"):
        paths = plots.draw_genotype(DARTS_V2, tmp_path / "out", formats=["svg"])
    _svg(open(paths[0], encoding="utf-8").read())
    with pytest.raises(RuntimeError) as e:
        plots.draw_genotype(DARTS_V2, tmp_path / "out", formats=["svg"], engine="dot")
    assert str(e.value) == "graphviz `dot -Tsvg` failed with exit status 3. Received: stderr='syntax error'"


def test_cell_dot_lists_every_pair():
    text = plots.cell_dot(DENSE, "normal")
    assert text.startswith('digraph "normal" {') and text.rstrip().endswith("}")
    for i, node in enumerate(DENSE.normal):
        for op, inp in node:
            source = plots._state_name(inp)
            assert f'"{source}" -> "{2 + i}" [label="{op}", color="{plots.op_color(op)}"' in text
    for c in DENSE.normal_concat:
        assert f'"{c}" -> "c_{{k}}"' in text


def test_cell_errors():
    with pytest.raises(ValueError) as e:
        plots.cell_svg(DARTS_V2, "normals")
    assert str(e.value) == "`cell_type` must be one of ['normal', 'reduce']. Received: cell_type='normals'"
    bad = Genotype(normal=[[("sep_conv_3x3", 2)]], normal_concat=[2], reduce=[[("skip_connect", 0)]], reduce_concat=[2])
    with pytest.raises(ValueError, match=r"the input of node 2 .* must be an earlier state"):
        plots.cell_svg(bad, "normal")
    with pytest.raises(ValueError) as e:
        plots.draw_genotype(DARTS_V2, "unused", formats=["jpg"])
    assert str(e.value) == "`formats` must be a non-empty subset of ['svg', 'png']. Received: formats=('jpg',)"


def test_op_colors_are_stable_and_distinct():
    colors = [plots.op_color(op) for op in OPS]
    assert len(set(colors)) == len(OPS)
    assert plots.op_color("my_new_op") == plots.op_color("my_new_op")


# ---------------------------------------------------------------------------
# log_alpha over epochs.


def test_log_alpha_plot_has_a_line_per_gate_and_the_threshold():
    history = _history()
    root = _svg(plots.log_alpha_svg(history, "normal"))
    gates = _by_class(root, "polyline", "gate")
    n_edges = len(history["edges"])
    assert len(gates) == n_edges * len(OPS)
    assert {(g.get("data-edge"), g.get("data-op")) for g in gates} == {
        (f"{node},{inp}", op) for node, inp in history["edges"] for op in OPS
    }
    assert all(len(g.get("points").split()) == 3 for g in gates)
    (threshold,) = _by_class(root, "polyline", "threshold")
    assert threshold.get("data-value") == "3" and threshold.get("stroke-dasharray")
    # The climbing gate is marked at epoch 2, where it first became inactive.
    pruned = _by_class(root, "path", "pruned")
    expected = sum(
        1 for e in range(n_edges) for k in range(len(OPS)) if not history["epochs"][-1]["active"]["normal"][e][k]
    )
    assert len(pruned) == expected >= 1
    marks = [p for p in pruned if (p.get("data-edge"), p.get("data-op")) == ("0,0", OPS[0])]
    assert [m.get("data-epoch") for m in marks] == ["2"]
    (climber,) = [g for g in gates if (g.get("data-edge"), g.get("data-op")) == ("0,0", OPS[0])]
    assert climber.get("data-pruned") == "2" and climber.get("stroke-dasharray")
    assert {"epoch", "log_alpha", "threshold", *OPS} <= set(_texts(root))


def test_log_alpha_without_active_uses_the_threshold(tmp_path):
    history = _history(epochs=1)
    for record in history["epochs"]:
        del record["active"]
    root = _svg(plots.log_alpha_svg(history, "reduce"))
    assert len(_by_class(root, "polyline", "gate")) == len(history["edges"]) * len(OPS)
    path = plots.log_alpha_png(_history(), "reduce", tmp_path / "la.png")
    _check_picture(path, min_colors=10)


def test_log_alpha_errors():
    with pytest.raises(ValueError) as e:
        plots.log_alpha_svg({"epochs": []}, "normal")
    assert str(e.value) == (
        "`history` must have the keys 'op_names', 'edges', 'threshold' and 'epochs' of a search_history.json. "
        "Received keys: ['epochs'] (missing: ['op_names', 'edges', 'threshold'])"
    )
    history = _history()
    history["epochs"][1]["log_alpha"]["normal"] = [[0.0]]
    with pytest.raises(ValueError) as e:
        plots.log_alpha_svg(history, "normal")
    assert str(e.value) == (
        "`history['epochs'][1]['log_alpha']['normal']` must have shape (5, 7) (edges, op_names). "
        "Received: shape=(1, 1)"
    )


# ---------------------------------------------------------------------------
# Sparsity and text.


def test_sparsity_bars(tmp_path):
    root = _svg(plots.sparsity_svg(LAYERS))
    bars = _by_class(root, "rect", "bar")
    assert [b.get("data-layer") for b in bars] == [r["name"] for r in LAYERS]
    fractions = [float(b.get("data-fraction")) for b in bars]
    assert fractions == pytest.approx([400 / 432, 20 / 144, 0.0])
    tracks = _by_class(root, "rect", "track")
    assert float(bars[0].get("width")) == pytest.approx(400 / 432 * float(tracks[0].get("width")), abs=0.01)
    assert "non-zero weights per layer: 420 of 1,576 (26.6%)" in _texts(root)
    _check_picture(plots.sparsity_png(LAYERS, tmp_path / "s.png"))


def test_sparsity_errors():
    with pytest.raises(ValueError) as e:
        plots.sparsity_svg([{"name": "a", "type": "Dense", "dense": 3, "nonzero": 5}])
    assert str(e.value) == (
        "`layer_sparsity[0]` must be a dict with keys 'name' (str), 'type' (str), "
        "'dense' and 'nonzero' (ints, 0 <= nonzero <= dense). "
        "Received: {'name': 'a', 'type': 'Dense', 'dense': 3, 'nonzero': 5}"
    )
    with pytest.raises(ValueError, match=r"^`layer_sparsity` must be a non-empty list"):
        plots.sparsity_svg([])


def test_summary_text():
    text = plots.summary_text(DARTS_V2)
    assert text.startswith(DARTS_V2.summary())
    assert "normal: 8 ops, 2 parameter-free (25%); inputs per node: 2, 2, 2, 2" in text
    assert "reduce: 8 ops, 8 parameter-free (100%); inputs per node: 2, 2, 2, 2" in text
    assert "  max_pool_3x3   5 #####  (parameter-free)" in text
    assert "  sep_conv_3x3   5 #####\n" in text


# ---------------------------------------------------------------------------
# show and the CLI.


def test_show_search_dir(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(plots.shutil, "which", lambda name: None)
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
            _check_picture(p)


def test_show_train_history(tmp_path, monkeypatch):
    monkeypatch.setattr(plots.shutil, "which", lambda name: None)
    (tmp_path / "train_history.json").write_text(json.dumps({"epochs": [{"epoch": 1}, {"layer_sparsity": LAYERS}]}))
    result = plots.show(tmp_path, tmp_path / "pics", verbose=False)
    assert [os.path.basename(p) for p in result["files"]] == ["sparsity.svg", "sparsity.png"]
    # No layer sparsity yet: nothing to draw, and said so.
    (tmp_path / "train_history.json").write_text(json.dumps([{"epoch": 1, "loss": 2.0}]))
    DARTS_V2.save(tmp_path / "genotype.json")
    result = plots.show(tmp_path, tmp_path / "pics", formats=["svg"], verbose=False)
    assert [os.path.basename(p) for p in result["files"]] == ["normal.svg", "reduce.svg"]
    history = str(tmp_path / "train_history.json")
    assert result["skipped"] == {"sparsity": f"{history!r} has no 'layer_sparsity' records"}


def test_show_genotype_file(tmp_path, monkeypatch):
    monkeypatch.setattr(plots.shutil, "which", lambda name: None)
    path = tmp_path / "zoo" / "darts_v2.json"
    path.parent.mkdir()
    DENSE.save(path)
    result = plots.show(path, verbose=False)
    assert result["files"] == [str(tmp_path / "zoo" / "pictures" / f"{c}.{f}") for c in ("normal", "reduce")
                               for f in ("svg", "png")]


def test_show_zoo_name_and_zoo_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(plots.shutil, "which", lambda name: None)
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
    assert str(e.value).startswith(f"Invalid search history {str(run / 'search_history.json')!r}: `history` must")


def test_cli_show(tmp_path, monkeypatch, capsys):
    from tfvnas.cli import main

    monkeypatch.setattr(plots.shutil, "which", lambda name: None)
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
