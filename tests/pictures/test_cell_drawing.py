"""Cell pictures: valid PNG and SVG files, labelled cells without overlaps, graphviz and its fallback, TensorBoard."""

import itertools
import os
import stat
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch

from tests.helpers.pictures import (
    DARTS_V2,
    DENSE,
    OPS,
    by_gid,
    check_png,
    parse_svg,
    svg_texts,
)
from tfvnas.models.genotype import Genotype
from tfvnas.models.zoo import zoo_entry, zoo_names
from tfvnas.pictures import cell_drawing

CELLS = [(name, zoo_entry(name)[0]) for name in zoo_names()] + [("dense", DENSE)]


def _ids(root):
    return [e.get("id") for e in root.iter() if e.get("id")]


# ---------------------------------------------------------------------------
# Cells.


@pytest.mark.parametrize("genotype", [DARTS_V2, DENSE], ids=["darts_v2", "dense"])
@pytest.mark.parametrize("cell_type", ["normal", "reduce"])
def test_cell_svg_names_every_op_and_state(genotype, cell_type):
    root = parse_svg(cell_drawing.cell_svg(genotype, cell_type))
    cell = getattr(genotype, cell_type)
    concat = getattr(genotype, f"{cell_type}_concat")
    texts = svg_texts(root)
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
    fig = cell_drawing.cell_figure(genotype, cell_type)
    assert isinstance(fig, Figure)
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    (ax,) = fig.axes
    labels = by_gid(ax.texts, "op:")
    states = by_gid(ax.patches, "state:")
    cell = getattr(genotype, cell_type)
    assert sorted(t.get_text() for t in labels) == sorted(op for node in cell for op, _ in node)
    assert len(states) == len(cell) + 3
    boxes = [t.get_bbox_patch().get_window_extent(renderer) for t in labels]
    boxes += [p.get_window_extent(renderer) for p in states]
    boxes += [ax.get_legend().get_window_extent(renderer), by_gid(ax.texts, "title")[0].get_window_extent(renderer)]
    for a, b in itertools.combinations(boxes, 2):
        assert not _overlap(a, b), (a, b)
    for box in boxes:
        assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1 and fig.bbox.y0 <= box.y0 and box.y1 <= fig.bbox.y1


@pytest.mark.parametrize("genotype", [DARTS_V2, DENSE], ids=["darts_v2", "dense"])
def test_arrows_run_from_source_to_target_around_other_boxes(genotype):
    fig = cell_drawing.cell_figure(genotype, "normal")
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    (ax,) = fig.axes
    states = {p.get_gid()[len("state:"):]: p.get_window_extent(renderer) for p in by_gid(ax.patches, "state:")}
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
    path = cell_drawing.cell_png(DENSE, "normal", tmp_path / "sub" / "normal.png")
    assert path == str(tmp_path / "sub" / "normal.png")
    img = check_png(path, min_colors=20)
    w, h = cell_drawing.cell_figure(DENSE, "normal").get_size_inches() * cell_drawing.DPI
    assert img.shape[0] == pytest.approx(h, abs=1) and img.shape[1] == pytest.approx(w, abs=1)


def test_draw_genotype_writes_both_cells(tmp_path, no_dot):
    for engine in ("auto", "matplotlib"):
        paths = cell_drawing.draw_genotype(DARTS_V2, tmp_path / engine, prefix="x_", engine=engine)
        assert [os.path.basename(p) for p in paths] == ["x_normal.svg", "x_normal.png", "x_reduce.svg",
                                                        "x_reduce.png"]
        for p in paths:
            if p.endswith(".png"):
                check_png(p)
            else:
                assert "c_{k-2}" in svg_texts(parse_svg(open(p, encoding="utf-8").read()))


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
        paths = cell_drawing.draw_genotype(DARTS_V2, tmp_path / engine, formats=["svg"], engine=engine)
        assert [os.path.basename(p) for p in paths] == ["normal.svg", "reduce.svg"]
        text = open(paths[0], encoding="utf-8").read()
        assert text.startswith("-Tsvg\n") and text.endswith(cell_drawing.cell_dot(DARTS_V2, "normal"))
    # engine="matplotlib" ignores it.
    (path, _) = cell_drawing.draw_genotype(DARTS_V2, tmp_path / "mpl", formats=["svg"], engine="matplotlib")
    parse_svg(open(path, encoding="utf-8").read())


def test_failing_dot_warns_and_falls_back(tmp_path, monkeypatch):
    _fake_dot(tmp_path, monkeypatch, exit_code=3)
    with pytest.warns(UserWarning) as record:
        paths = cell_drawing.draw_genotype(DARTS_V2, tmp_path / "out", formats=["svg"])
    assert [str(w.message) for w in record] == [
        "graphviz failed, drawing with matplotlib instead: graphviz `dot -Tsvg` failed with exit status 3. "
        "Received: stderr='syntax error'"
    ]
    assert "c_{k-2}" in svg_texts(parse_svg(open(paths[0], encoding="utf-8").read()))
    with pytest.raises(RuntimeError) as e:
        cell_drawing.draw_genotype(DARTS_V2, tmp_path / "out", formats=["svg"], engine="dot")
    assert str(e.value) == "graphviz `dot -Tsvg` failed with exit status 3. Received: stderr='syntax error'"


def test_dot_engine_needs_dot(tmp_path, no_dot):
    with pytest.raises(RuntimeError) as e:
        cell_drawing.draw_genotype(DARTS_V2, tmp_path, engine="dot")
    assert str(e.value) == "`engine='dot'` needs graphviz's `dot` on PATH. Received: no `dot` found on PATH"


def test_cell_dot_lists_every_pair():
    text = cell_drawing.cell_dot(DENSE, "normal")
    assert text.startswith('digraph "normal" {') and text.rstrip().endswith("}")
    for i, node in enumerate(DENSE.normal):
        for op, inp in node:
            source = {0: "c_{k-2}", 1: "c_{k-1}"}.get(inp, str(inp))
            assert f'"{source}" -> "{2 + i}" [label="{op}", color="{cell_drawing.op_color(op)}"' in text
    for c in DENSE.normal_concat:
        assert f'"{c}" -> "c_{{k}}"' in text


def test_cell_errors(tmp_path):
    with pytest.raises(ValueError) as e:
        cell_drawing.cell_svg(DARTS_V2, "normals")
    assert str(e.value) == "`cell_type` must be one of ['normal', 'reduce']. Received: cell_type='normals'"
    bad = Genotype(normal=[[("sep_conv_3x3", 2)]], normal_concat=[2], reduce=[[("skip_connect", 0)]], reduce_concat=[2])
    with pytest.raises(ValueError) as e:
        cell_drawing.cell_figure(bad, "normal")
    assert str(e.value) == (
        "In the normal cell, the input of node 2 (`normal[0][0]`) must be an earlier state, an int in [0, 1]. "
        "Received: input=2"
    )
    with pytest.raises(ValueError) as e:
        cell_drawing.cell_png("darts_v2", "normal", tmp_path / "x.png")
    assert str(e.value) == (
        "`genotype` must be a tfvnas.Genotype (use Genotype.load(path) for a JSON file). Received: genotype='darts_v2'"
    )
    with pytest.raises(ValueError) as e:
        cell_drawing.draw_genotype(DARTS_V2, tmp_path, formats=["jpg"])
    assert str(e.value) == "`formats` must be a non-empty subset of ['svg', 'png']. Received: formats=('jpg',)"
    with pytest.raises(ValueError) as e:
        cell_drawing.draw_genotype(DARTS_V2, tmp_path, engine="builtin")
    assert str(e.value) == "`engine` must be one of ['auto', 'dot', 'matplotlib']. Received: engine='builtin'"


def test_op_colors_are_stable_and_distinct():
    colors = [cell_drawing.op_color(op) for op in OPS]
    assert len(set(colors)) == len(OPS)
    assert cell_drawing.op_color("sep_conv_3x3") == "#1f77b4" and cell_drawing.op_color("skip_connect") == "#616a6b"
    assert cell_drawing.op_color("my_new_op") == cell_drawing.op_color("my_new_op")
    # The cell drawing uses them.
    (ax,) = cell_drawing.cell_figure(DARTS_V2, "reduce").axes
    (label,) = [t for t in by_gid(ax.texts, "op:") if t.get_text() == "max_pool_3x3"][:1]
    assert label.get_bbox_patch().get_edgecolor()[:3] == pytest.approx(
        [int(cell_drawing.op_color("max_pool_3x3")[i : i + 2], 16) / 255 for i in (1, 3, 5)])


def test_unknown_ops_are_drawn():
    genotype = Genotype(normal=[[("my_op", 0), ("other_op", 1)]], normal_concat=[2],
                        reduce=[[("my_op", 1)]], reduce_concat=[2])
    texts = svg_texts(parse_svg(cell_drawing.cell_svg(genotype, "normal")))
    assert texts.count("my_op") == 2 and texts.count("other_op") == 2


# ---------------------------------------------------------------------------
# TensorBoard.


def test_tensorboard_logs_cell_images(tmp_path):
    import tensorflow as tf

    from tfvnas.loops.tensorboard import EpochSummaries

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
