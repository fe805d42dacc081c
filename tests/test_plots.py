"""Pictures: valid PNG and SVG files, labelled cells without overlaps, charts, `show` and `tfvnas show`."""

import itertools
import json
import os
import stat
import sys
import xml.etree.ElementTree as ET

import matplotlib.image
import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch

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
CELLS = [(name, zoo_entry(name)[0]) for name in zoo_names()] + [("dense", DENSE)]


# ---------------------------------------------------------------------------
# Helpers.


def _check_png(path, min_colors=4):
    """A real PNG (by its magic and matplotlib's reader), neither blank nor a solid block."""
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    img = matplotlib.image.imread(path)
    h, w = img.shape[:2]
    assert h > 50 and w > 50
    rgb = img[..., :3]
    ink = (rgb < 0.98).any(axis=2).mean()
    assert 0.01 < ink < 0.9, ink
    packed = (np.round(rgb * 255).astype(np.uint32) * np.array([1 << 16, 1 << 8, 1], np.uint32)).sum(axis=2)
    assert len(np.unique(packed)) >= min_colors
    return img


def _svg(text):
    root = ET.fromstring(text.encode("utf-8"))
    assert root.tag == f"{SVG}svg"
    return root


def _texts(root):
    return ["".join(e.itertext()) for e in root.iter(f"{SVG}text")]


def _ids(root):
    return [e.get("id") for e in root.iter() if e.get("id")]


def _by_gid(artists, prefix):
    return [a for a in artists if (a.get_gid() or "").startswith(prefix)]


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
                # Keys the plots do not use.
                "pruned_at": {"normal": [], "reduce": []},
                "genotype": DARTS_V2.to_dict(),
            }
        )
    return {"dataset": "tiny", "op_names": OPS, "edges": [list(e) for e in edges], "threshold": threshold,
            "epochs": records}


LAYERS = [
    {"name": "stem/conv", "type": "Conv2D", "dense": 432, "nonzero": 400},
    {"name": "cell_0/a_rather_long_layer_name/sep_conv_3x3/depthwise", "type": "DepthwiseConv2D", "dense": 144,
     "nonzero": 20},
    {"name": "head/dense", "type": "Dense", "dense": 1000, "nonzero": 0},
]

POINTS = [
    {"label": "vinnas seed 0", "group": "vinnas", "nonzero_params": 61_000, "accuracy": 0.91,
     "accuracy_std": 0.01, "params_std": 4_000.0},
    {"label": "vinnas seed 1", "group": "vinnas", "nonzero_params": 70_000, "accuracy": 0.92},
    {"label": "darts seed 0", "group": "darts", "nonzero_params": 150_000, "accuracy": 0.90},
    {"label": "DARTS V2", "group": "zoo", "nonzero_params": 300_000, "accuracy": 0.93},
]


def _run(shares, skips):
    return [{"epoch": e + 1, "parameter_free_share": s, "skip_count": k} for e, (s, k) in enumerate(zip(shares, skips))]


SERIES = {
    "vinnas": [_run([0.3, 0.35, 0.4], [0, 1, 1]), _run([0.25, 0.3, 0.3], [0, 0, 1])],
    "darts": [_run([0.4, 0.7, 0.9], [1, 3, 5]), _run([0.5, 0.6], [1, 2])],
}
BAND = {"parameter_free_share": (0.43, 0.1), "skip_count": (1.2, 0.9)}


def _search_dir(path, history=None):
    path.mkdir(parents=True, exist_ok=True)
    DARTS_V2.save(path / "genotype.json")
    DENSE.save(path / "genotype_threshold.json")
    (path / "search_config.json").write_text("{}")
    (path / "search_history.json").write_text(json.dumps(history or _history()))
    return path


@pytest.fixture
def no_dot(monkeypatch):
    monkeypatch.setattr(plots.shutil, "which", lambda name: None)


# ---------------------------------------------------------------------------
# Cells.


@pytest.mark.parametrize("genotype", [DARTS_V2, DENSE], ids=["darts_v2", "dense"])
@pytest.mark.parametrize("cell_type", ["normal", "reduce"])
def test_cell_svg_names_every_op_and_state(genotype, cell_type):
    root = _svg(plots.cell_svg(genotype, cell_type))
    cell = getattr(genotype, cell_type)
    concat = getattr(genotype, f"{cell_type}_concat")
    texts = _texts(root)
    for op in {op for node in cell for op, _ in node}:
        # Once per use on an edge, once in the legend.
        assert texts.count(op) == 1 + sum(o == op for node in cell for o, _ in node)
    states = ["c_{k-2}", "c_{k-1}", *(str(2 + i) for i in range(len(cell))), "c_{k}"]
    for name in states:
        assert texts.count(name) == 1
    ids = _ids(root)
    assert [i for i in ids if i.startswith("state:")] == [f"state:{name}" for name in states]
    assert sum(i.startswith("edge:") for i in ids) == sum(len(node) for node in cell) + len(concat)
    assert f"{cell_type} cell: {len(cell)} nodes, {sum(len(node) for node in cell)} ops" in texts


def _overlap(a, b):
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


@pytest.mark.parametrize("name,genotype", CELLS, ids=[name for name, _ in CELLS])
@pytest.mark.parametrize("cell_type", ["normal", "reduce"])
def test_labels_and_boxes_do_not_overlap(name, genotype, cell_type):
    fig = plots.cell_figure(genotype, cell_type)
    assert isinstance(fig, Figure)
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    (ax,) = fig.axes
    labels = _by_gid(ax.texts, "op:")
    states = _by_gid(ax.patches, "state:")
    cell = getattr(genotype, cell_type)
    assert sorted(t.get_text() for t in labels) == sorted(op for node in cell for op, _ in node)
    assert len(states) == len(cell) + 3
    boxes = [t.get_bbox_patch().get_window_extent(renderer) for t in labels]
    boxes += [p.get_window_extent(renderer) for p in states]
    boxes += [ax.get_legend().get_window_extent(renderer), _by_gid(ax.texts, "title")[0].get_window_extent(renderer)]
    for a, b in itertools.combinations(boxes, 2):
        assert not _overlap(a, b), (a, b)
    for box in boxes:
        assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 and fig.bbox.y0 <= box.y0 and box.y1 <= fig.bbox.y1


@pytest.mark.parametrize("genotype", [DARTS_V2, DENSE], ids=["darts_v2", "dense"])
def test_arrows_run_from_source_to_target_around_other_boxes(genotype):
    fig = plots.cell_figure(genotype, "normal")
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    (ax,) = fig.axes
    states = {p.get_gid()[len("state:"):]: p.get_window_extent(renderer) for p in _by_gid(ax.patches, "state:")}
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(arrows) == sum(len(n) for n in genotype.normal) + len(genotype.normal_concat)
    for arrow in arrows:
        source, target = arrow.get_gid().split(":", 2)[2].split("->")
        points = np.concatenate(arrow.get_path().transformed(arrow.get_transform()).to_polygons(closed_only=False))
        src, dst = states[source], states[target]
        assert points[0, 0] == pytest.approx(src.x1, abs=1) and src.y0 < points[0, 1] < src.y1
        # The arrowhead's stroke, not its outline, reaches the box.
        assert points[:, 0].max() == pytest.approx(dst.x0, abs=4) and points[:, 0].max() <= dst.x0
        for name, box in states.items():
            if name not in (source, target):
                inside = (points[:, 0] > box.x0) & (points[:, 0] < box.x1) & (points[:, 1] > box.y0) & (
                    points[:, 1] < box.y1)
                assert not inside.any(), (arrow.get_gid(), name)


def test_cell_png_is_an_image_of_the_figure_size(tmp_path):
    path = plots.cell_png(DENSE, "normal", tmp_path / "sub" / "normal.png")
    assert path == str(tmp_path / "sub" / "normal.png")
    img = _check_png(path, min_colors=20)
    w, h = plots.cell_figure(DENSE, "normal").get_size_inches() * plots.DPI
    assert img.shape[0] == pytest.approx(h, abs=1) and img.shape[1] == pytest.approx(w, abs=1)


def test_draw_genotype_writes_both_cells(tmp_path, no_dot):
    for engine in ("auto", "matplotlib"):
        paths = plots.draw_genotype(DARTS_V2, tmp_path / engine, prefix="x_", engine=engine)
        assert [os.path.basename(p) for p in paths] == ["x_normal.svg", "x_normal.png", "x_reduce.svg",
                                                        "x_reduce.png"]
        for p in paths:
            if p.endswith(".png"):
                _check_png(p)
            else:
                assert "c_{k-2}" in _texts(_svg(open(p, encoding="utf-8").read()))


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
    for engine in ("auto", "dot"):
        paths = plots.draw_genotype(DARTS_V2, tmp_path / engine, formats=["svg"], engine=engine)
        assert [os.path.basename(p) for p in paths] == ["normal.svg", "reduce.svg"]
        text = open(paths[0], encoding="utf-8").read()
        assert text.startswith("-Tsvg\n") and text.endswith(plots.cell_dot(DARTS_V2, "normal"))
    # engine="matplotlib" ignores it.
    (path, _) = plots.draw_genotype(DARTS_V2, tmp_path / "mpl", formats=["svg"], engine="matplotlib")
    _svg(open(path, encoding="utf-8").read())


def test_failing_dot_warns_and_falls_back(tmp_path, monkeypatch):
    _fake_dot(tmp_path, monkeypatch, exit_code=3)
    with pytest.warns(UserWarning) as record:
        paths = plots.draw_genotype(DARTS_V2, tmp_path / "out", formats=["svg"])
    assert [str(w.message) for w in record] == [
        "graphviz failed, drawing with matplotlib instead: graphviz `dot -Tsvg` failed with exit status 3. "
        "Received: stderr='syntax error'"
    ]
    assert "c_{k-2}" in _texts(_svg(open(paths[0], encoding="utf-8").read()))
    with pytest.raises(RuntimeError) as e:
        plots.draw_genotype(DARTS_V2, tmp_path / "out", formats=["svg"], engine="dot")
    assert str(e.value) == "graphviz `dot -Tsvg` failed with exit status 3. Received: stderr='syntax error'"


def test_dot_engine_needs_dot(tmp_path, no_dot):
    with pytest.raises(RuntimeError) as e:
        plots.draw_genotype(DARTS_V2, tmp_path, engine="dot")
    assert str(e.value) == "`engine='dot'` needs graphviz's `dot` on PATH. Received: no `dot` found on PATH"


def test_cell_dot_lists_every_pair():
    text = plots.cell_dot(DENSE, "normal")
    assert text.startswith('digraph "normal" {') and text.rstrip().endswith("}")
    for i, node in enumerate(DENSE.normal):
        for op, inp in node:
            source = {0: "c_{k-2}", 1: "c_{k-1}"}.get(inp, str(inp))
            assert f'"{source}" -> "{2 + i}" [label="{op}", color="{plots.op_color(op)}"' in text
    for c in DENSE.normal_concat:
        assert f'"{c}" -> "c_{{k}}"' in text


def test_cell_errors(tmp_path):
    with pytest.raises(ValueError) as e:
        plots.cell_svg(DARTS_V2, "normals")
    assert str(e.value) == "`cell_type` must be one of ['normal', 'reduce']. Received: cell_type='normals'"
    bad = Genotype(normal=[[("sep_conv_3x3", 2)]], normal_concat=[2], reduce=[[("skip_connect", 0)]], reduce_concat=[2])
    with pytest.raises(ValueError) as e:
        plots.cell_figure(bad, "normal")
    assert str(e.value) == (
        "In the normal cell, the input of node 2 (`normal[0][0]`) must be an earlier state, an int in [0, 1]. "
        "Received: input=2"
    )
    with pytest.raises(ValueError) as e:
        plots.cell_png("darts_v2", "normal", tmp_path / "x.png")
    assert str(e.value) == (
        "`genotype` must be a tfvnas.Genotype (use Genotype.load(path) for a JSON file). Received: genotype='darts_v2'"
    )
    with pytest.raises(ValueError) as e:
        plots.draw_genotype(DARTS_V2, tmp_path, formats=["jpg"])
    assert str(e.value) == "`formats` must be a non-empty subset of ['svg', 'png']. Received: formats=('jpg',)"
    with pytest.raises(ValueError) as e:
        plots.draw_genotype(DARTS_V2, tmp_path, engine="builtin")
    assert str(e.value) == "`engine` must be one of ['auto', 'dot', 'matplotlib']. Received: engine='builtin'"


def test_op_colors_are_stable_and_distinct():
    colors = [plots.op_color(op) for op in OPS]
    assert len(set(colors)) == len(OPS)
    assert plots.op_color("sep_conv_3x3") == "#1f77b4" and plots.op_color("skip_connect") == "#616a6b"
    assert plots.op_color("my_new_op") == plots.op_color("my_new_op")
    # The cell drawing uses them.
    (ax,) = plots.cell_figure(DARTS_V2, "reduce").axes
    (label,) = [t for t in _by_gid(ax.texts, "op:") if t.get_text() == "max_pool_3x3"][:1]
    assert label.get_bbox_patch().get_edgecolor()[:3] == pytest.approx(
        [int(plots.op_color("max_pool_3x3")[i : i + 2], 16) / 255 for i in (1, 3, 5)])


def test_unknown_ops_are_drawn():
    genotype = Genotype(normal=[[("my_op", 0), ("other_op", 1)]], normal_concat=[2],
                        reduce=[[("my_op", 1)]], reduce_concat=[2])
    texts = _texts(_svg(plots.cell_svg(genotype, "normal")))
    assert texts.count("my_op") == 2 and texts.count("other_op") == 2


# ---------------------------------------------------------------------------
# log_alpha over epochs.


def test_log_alpha_plot_has_a_line_per_gate_and_the_threshold():
    history = _history()
    fig = plots.log_alpha_figure(history, "normal")
    (ax,) = fig.axes
    gates = _by_gid(ax.lines, "gate:")
    assert {g.get_gid() for g in gates} == {f"gate:{node},{inp}:{op}" for node, inp in history["edges"] for op in OPS}
    assert len(gates) == len(history["edges"]) * len(OPS)
    assert all(list(g.get_xdata()) == [1, 2, 3] for g in gates)
    for g in gates:
        assert g.get_color() == plots.op_color(g.get_gid().rsplit(":", 1)[1])
    (threshold,) = _by_gid(ax.lines, "threshold")
    assert list(threshold.get_ydata()) == [3.0, 3.0] and threshold.get_linestyle() == "--"
    # The climbing gate is marked at epoch 2, where it first became inactive.
    pruned = _by_gid(ax.lines, "pruned:")
    expected = sum(not a for row in history["epochs"][-1]["active"]["normal"] for a in row)
    assert len(pruned) == expected >= 1
    (mark,) = [p for p in pruned if p.get_gid() == f"pruned:0,0:{OPS[0]}"]
    assert list(mark.get_xdata()) == [2.0] and list(mark.get_ydata()) == [3.5]
    (climber,) = [g for g in gates if g.get_gid() == f"gate:0,0:{OPS[0]}"]
    assert climber.get_linestyle() == "--"
    texts = _texts(_svg(plots.log_alpha_svg(history, "normal")))
    assert {"epoch", "log_alpha", "threshold", "pruned here", *OPS} <= set(texts)
    assert "normal cell: log_alpha of 35 gates, 1 pruned" in texts and "dataset tiny, threshold 3" in texts


def test_log_alpha_without_active_uses_the_threshold(tmp_path):
    history = _history(epochs=1)
    for record in history["epochs"]:
        del record["active"]
    (ax,) = plots.log_alpha_figure(history, "reduce").axes
    assert len(_by_gid(ax.lines, "gate:")) == len(history["edges"]) * len(OPS)
    path = plots.log_alpha_png(_history(), "reduce", tmp_path / "la.png")
    _check_png(path, min_colors=10)


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
        plots.log_alpha_figure(history, "normal")
    assert str(e.value) == (
        "`history['epochs'][1]['log_alpha']['normal']` must have shape (5, 7) (edges, op_names). "
        "Received: shape=(1, 1)"
    )
    history = _history()
    history["threshold"] = "3"
    with pytest.raises(ValueError) as e:
        plots.log_alpha_figure(history, "normal")
    assert str(e.value) == "`history['threshold']` must be a finite number. Received: threshold='3'"
    with pytest.raises(ValueError) as e:
        plots.log_alpha_figure(_history(), "both")
    assert str(e.value) == "`cell_type` must be one of ['normal', 'reduce']. Received: cell_type='both'"


# ---------------------------------------------------------------------------
# Sparsity and text.


def test_sparsity_bars(tmp_path):
    fig = plots.sparsity_figure(LAYERS)
    ax = fig.axes[0]
    bars = _by_gid(ax.patches, "bar:")
    assert [b.get_gid() for b in bars] == [f"bar:{r['name']}" for r in LAYERS]
    assert [b.get_width() for b in bars] == pytest.approx([400 / 432, 20 / 144, 0.0])
    names = [t.get_text() for t in ax.get_yticklabels()]
    assert names[0] == "stem/conv" and len(names[1]) == 40 and "..." in names[1]
    texts = _texts(_svg(plots.sparsity_svg(LAYERS)))
    assert "non-zero weights per layer: 420 of 1,576 (26.6%)" in texts
    assert {"92.6%  400/432", "Conv2D", "DepthwiseConv2D", "Dense", names[1]} <= set(texts)
    _check_png(plots.sparsity_png(LAYERS, tmp_path / "s.png"))


def test_sparsity_errors():
    with pytest.raises(ValueError) as e:
        plots.sparsity_svg([{"name": "a", "type": "Dense", "dense": 3, "nonzero": 5}])
    assert str(e.value) == (
        "`layer_sparsity[0]` must be a dict with keys 'name' (str), 'type' (str), "
        "'dense' and 'nonzero' (ints, 0 <= nonzero <= dense). "
        "Received: {'name': 'a', 'type': 'Dense', 'dense': 3, 'nonzero': 5}"
    )
    with pytest.raises(ValueError) as e:
        plots.sparsity_figure([])
    assert str(e.value) == (
        "`layer_sparsity` must be a non-empty list of dicts with keys 'name' (str), 'type' (str), "
        "'dense' and 'nonzero' (ints, 0 <= nonzero <= dense). Received: []"
    )


def test_summary_text():
    text = plots.summary_text(DARTS_V2)
    assert text.startswith(DARTS_V2.summary())
    assert "normal: 8 ops, 2 parameter-free (25%); inputs per node: 2, 2, 2, 2" in text
    assert "reduce: 8 ops, 8 parameter-free (100%); inputs per node: 2, 2, 2, 2" in text
    assert "  max_pool_3x3   5 #####  (parameter-free)" in text
    assert "  sep_conv_3x3   5 #####\n" in text


# ---------------------------------------------------------------------------
# Pareto and collapse charts.


def test_pareto_has_a_marker_style_per_group(tmp_path):
    fig = plots.pareto_figure(POINTS)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    assert len(ax.containers) == 3
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["vinnas", "darts", "zoo"]
    markers = [c.lines[0].get_marker() for c in ax.containers]
    colors = [c.lines[0].get_color() for c in ax.containers]
    assert len(set(markers)) == 3 and len(set(colors)) == 3
    vinnas, darts, _ = ax.containers
    assert vinnas.has_xerr and vinnas.has_yerr and not darts.has_xerr and not darts.has_yerr
    assert list(vinnas.lines[0].get_xdata()) == [61_000, 70_000]
    texts = _texts(_svg(plots.pareto_svg(POINTS)))
    assert {"vinnas seed 0", "darts seed 0", "DARTS V2", "non-zero parameters", "accuracy"} <= set(texts)
    _check_png(plots.pareto_png(POINTS, tmp_path / "p.png"))


def test_pareto_errors():
    with pytest.raises(ValueError) as e:
        plots.pareto_figure([{**POINTS[0], "nonzero_params": 0}])
    assert str(e.value) == (
        "`points[0]` must be a dict with 'label' (str), 'group' (str), 'nonzero_params' (a positive int), "
        "'accuracy' (a number) and optionally 'accuracy_std' and 'params_std' (non-negative numbers). "
        f"Received: {dict(POINTS[0], nonzero_params=0)!r}"
    )
    with pytest.raises(ValueError, match=r"^`points` must be a non-empty list of dicts with .* Received: points=\[\]$"):
        plots.pareto_figure([])


def test_collapse_has_mean_and_range_per_method_and_the_band(tmp_path):
    fig = plots.collapse_figure(SERIES, BAND)
    top, bottom = fig.axes
    for ax, key in ((top, "parameter_free_share"), (bottom, "skip_count")):
        assert [line.get_gid() for line in _by_gid(ax.lines, "mean:")] == [f"mean:vinnas:{key}", f"mean:darts:{key}"]
        assert len(_by_gid(ax.collections, "range:")) == 2
        assert len(_by_gid(ax.patches, "band:")) == 1
    (vinnas, darts) = _by_gid(top.lines, "mean:")
    assert list(vinnas.get_ydata()) == pytest.approx([0.275, 0.325, 0.35])
    # Epoch 3 has one darts run only.
    assert list(darts.get_xdata()) == [1, 2, 3] and list(darts.get_ydata()) == pytest.approx([0.45, 0.65, 0.9])
    assert [t.get_text() for t in top.get_legend().get_texts()] == ["vinnas", "darts", "random cells (mean ± std)"]
    assert bottom.get_legend() is None and top.get_shared_x_axes().joined(top, bottom)
    texts = _texts(_svg(plots.collapse_svg(SERIES, BAND)))
    assert {"vinnas", "darts", "random cells (mean ± std)", "epoch", "skip connections"} <= set(texts)
    _check_png(plots.collapse_png(SERIES, tmp_path / "c.png", band=BAND))
    # Without a band: no band, no legend entry for it.
    (top, bottom) = plots.collapse_figure(SERIES).axes
    assert not _by_gid(top.patches, "band:") and len(top.get_legend().get_texts()) == 2


def test_collapse_errors():
    with pytest.raises(ValueError) as e:
        plots.collapse_figure({"vinnas": [[{"epoch": 1, "parameter_free_share": 0.5}]]})
    assert str(e.value) == (
        "`series['vinnas']` must be a non-empty list of runs, each a non-empty list of dicts with 'epoch' (int), "
        "'parameter_free_share' (number) and 'skip_count' (int). "
        "Received: [[{'epoch': 1, 'parameter_free_share': 0.5}]]"
    )
    with pytest.raises(ValueError) as e:
        plots.collapse_figure(SERIES, {"skips": (1, 1)})
    assert str(e.value) == (
        "`band` must be None or a dict with keys among ['parameter_free_share', 'skip_count'], each a (mean, std) "
        "pair of numbers. Received: band={'skips': (1, 1)}"
    )
    with pytest.raises(ValueError, match=r"^`series` must be a non-empty dict of method name -> "):
        plots.collapse_figure({})


# ---------------------------------------------------------------------------
# show, TensorBoard and the CLI.


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
            _check_png(p)
        else:
            _svg(open(p, encoding="utf-8").read())


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


def test_tensorboard_logs_cell_images(tmp_path):
    import tensorflow as tf

    from tfvnas.tensorboard import EpochSummaries

    summaries = EpochSummaries(tmp_path)
    summaries.genotype_images(DARTS_V2, step=3)
    summaries.close()
    (event_file,) = tmp_path.iterdir()
    tags = {}
    for event in tf.compat.v1.train.summary_iterator(str(event_file)):
        for value in event.summary.value:
            tags[value.tag] = tf.make_ndarray(value.tensor)
    assert sorted(tags) == ["cell/normal", "cell/reduce"]
    width, height, png = tags["cell/normal"]
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int(width) > 300 and int(height) > 100


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
