"""Charts: log_alpha trajectories, layer sparsity, Pareto fronts and collapse, as figures, SVG and PNG files."""

import pytest

from tests.helpers.pictures import (
    LAYERS,
    OPS,
    by_gid,
    check_png,
    parse_svg,
    search_history,
    svg_texts,
)
from tfvnas.pictures import cell_drawing, charts

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


# ---------------------------------------------------------------------------
# log_alpha over epochs.


def test_log_alpha_plot_has_a_line_per_gate_and_the_threshold():
    history = search_history()
    fig = charts.log_alpha_figure(history, "normal")
    (ax,) = fig.axes
    gates = by_gid(ax.lines, "gate:")
    assert {g.get_gid() for g in gates} == {f"gate:{node},{inp}:{op}" for node, inp in history["edges"] for op in OPS}
    assert len(gates) == len(history["edges"]) * len(OPS)
    assert all(list(g.get_xdata()) == [1, 2, 3] for g in gates)
    for g in gates:
        assert g.get_color() == cell_drawing.op_color(g.get_gid().rsplit(":", 1)[1])
    (threshold,) = by_gid(ax.lines, "threshold")
    assert list(threshold.get_ydata()) == [3.0, 3.0] and threshold.get_linestyle() == "--"
    # The climbing gate is marked at epoch 2, where it first became inactive.
    pruned = by_gid(ax.lines, "pruned:")
    expected = sum(not a for row in history["epochs"][-1]["active"]["normal"] for a in row)
    assert len(pruned) == expected >= 1
    (mark,) = [p for p in pruned if p.get_gid() == f"pruned:0,0:{OPS[0]}"]
    assert list(mark.get_xdata()) == [2.0] and list(mark.get_ydata()) == [3.5]
    (climber,) = [g for g in gates if g.get_gid() == f"gate:0,0:{OPS[0]}"]
    assert climber.get_linestyle() == "--"
    texts = svg_texts(parse_svg(charts.log_alpha_svg(history, "normal")))
    assert {"epoch", "log_alpha", "threshold", "pruned here", *OPS} <= set(texts)
    assert "normal cell: log_alpha of 35 gates, 1 pruned" in texts and "dataset tiny, threshold 3" in texts


def test_log_alpha_without_active_uses_the_threshold(tmp_path):
    history = search_history(epochs=1)
    for record in history["epochs"]:
        del record["active"]
    (ax,) = charts.log_alpha_figure(history, "reduce").axes
    assert len(by_gid(ax.lines, "gate:")) == len(history["edges"]) * len(OPS)
    path = charts.log_alpha_png(search_history(), "reduce", tmp_path / "la.png")
    check_png(path, min_colors=10)


def test_log_alpha_errors():
    with pytest.raises(ValueError) as e:
        charts.log_alpha_svg({"epochs": []}, "normal")
    assert str(e.value) == (
        "`history` must have the keys 'op_names', 'edges', 'threshold' and 'epochs' of a search_history.json. "
        "Received keys: ['epochs'] (missing: ['op_names', 'edges', 'threshold'])"
    )
    history = search_history()
    history["epochs"][1]["log_alpha"]["normal"] = [[0.0]]
    with pytest.raises(ValueError) as e:
        charts.log_alpha_figure(history, "normal")
    assert str(e.value) == (
        "`history['epochs'][1]['log_alpha']['normal']` must have shape (5, 7) (edges, op_names). "
        "Received: shape=(1, 1)"
    )
    history = search_history()
    history["threshold"] = "3"
    with pytest.raises(ValueError) as e:
        charts.log_alpha_figure(history, "normal")
    assert str(e.value) == "`history['threshold']` must be a finite number. Received: threshold='3'"
    with pytest.raises(ValueError) as e:
        charts.log_alpha_figure(search_history(), "both")
    assert str(e.value) == "`cell_type` must be one of ['normal', 'reduce']. Received: cell_type='both'"


# ---------------------------------------------------------------------------
# Sparsity.


def test_sparsity_bars(tmp_path):
    fig = charts.sparsity_figure(LAYERS)
    ax = fig.axes[0]
    bars = by_gid(ax.patches, "bar:")
    assert [b.get_gid() for b in bars] == [f"bar:{r['name']}" for r in LAYERS]
    assert [b.get_width() for b in bars] == pytest.approx([400 / 432, 20 / 144, 0.0])
    names = [t.get_text() for t in ax.get_yticklabels()]
    assert names[0] == "stem/conv" and len(names[1]) == 40 and "..." in names[1]
    texts = svg_texts(parse_svg(charts.sparsity_svg(LAYERS)))
    assert "non-zero weights per layer: 420 of 1,576 (26.6%)" in texts
    assert {"92.6%  400/432", "Conv2D", "DepthwiseConv2D", "Dense", names[1]} <= set(texts)
    check_png(charts.sparsity_png(LAYERS, tmp_path / "s.png"))


def test_sparsity_errors():
    with pytest.raises(ValueError) as e:
        charts.sparsity_svg([{"name": "a", "type": "Dense", "dense": 3, "nonzero": 5}])
    assert str(e.value) == (
        "`layer_sparsity[0]` must be a dict with keys 'name' (str), 'type' (str), "
        "'dense' and 'nonzero' (ints, 0 <= nonzero <= dense). "
        "Received: {'name': 'a', 'type': 'Dense', 'dense': 3, 'nonzero': 5}"
    )
    with pytest.raises(ValueError) as e:
        charts.sparsity_figure([])
    assert str(e.value) == (
        "`layer_sparsity` must be a non-empty list of dicts with keys 'name' (str), 'type' (str), "
        "'dense' and 'nonzero' (ints, 0 <= nonzero <= dense). Received: []"
    )


# ---------------------------------------------------------------------------
# Pareto and collapse charts.


def test_pareto_has_a_marker_style_per_group(tmp_path):
    fig = charts.pareto_figure(POINTS)
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
    texts = svg_texts(parse_svg(charts.pareto_svg(POINTS)))
    assert {"vinnas seed 0", "darts seed 0", "DARTS V2", "non-zero parameters", "accuracy"} <= set(texts)
    check_png(charts.pareto_png(POINTS, tmp_path / "p.png"))


def test_pareto_errors():
    with pytest.raises(ValueError) as e:
        charts.pareto_figure([{**POINTS[0], "nonzero_params": 0}])
    assert str(e.value) == (
        "`points[0]` must be a dict with 'label' (str), 'group' (str), 'nonzero_params' (a positive int), "
        "'accuracy' (a number) and optionally 'accuracy_std' and 'params_std' (non-negative numbers). "
        f"Received: {dict(POINTS[0], nonzero_params=0)!r}"
    )
    with pytest.raises(ValueError, match=r"^`points` must be a non-empty list of dicts with .* Received: points=\[\]$"):
        charts.pareto_figure([])


def test_collapse_has_mean_and_range_per_method_and_the_band(tmp_path):
    fig = charts.collapse_figure(SERIES, BAND)
    top, bottom = fig.axes
    for ax, key in ((top, "parameter_free_share"), (bottom, "skip_count")):
        assert [line.get_gid() for line in by_gid(ax.lines, "mean:")] == [f"mean:vinnas:{key}", f"mean:darts:{key}"]
        assert len(by_gid(ax.collections, "range:")) == 2
        assert len(by_gid(ax.patches, "band:")) == 1
    (vinnas, darts) = by_gid(top.lines, "mean:")
    assert list(vinnas.get_ydata()) == pytest.approx([0.275, 0.325, 0.35])
    # Epoch 3 has one darts run only.
    assert list(darts.get_xdata()) == [1, 2, 3] and list(darts.get_ydata()) == pytest.approx([0.45, 0.65, 0.9])
    assert [t.get_text() for t in top.get_legend().get_texts()] == ["vinnas", "darts", "random cells (mean ± std)"]
    assert bottom.get_legend() is None and top.get_shared_x_axes().joined(top, bottom)
    texts = svg_texts(parse_svg(charts.collapse_svg(SERIES, BAND)))
    assert {"vinnas", "darts", "random cells (mean ± std)", "epoch", "skip connections"} <= set(texts)
    check_png(charts.collapse_png(SERIES, tmp_path / "c.png", band=BAND))
    # Without a band: no band, no legend entry for it.
    (top, bottom) = charts.collapse_figure(SERIES).axes
    assert not by_gid(top.patches, "band:") and len(top.get_legend().get_texts()) == 2


def test_collapse_errors():
    with pytest.raises(ValueError) as e:
        charts.collapse_figure({"vinnas": [[{"epoch": 1, "parameter_free_share": 0.5}]]})
    assert str(e.value) == (
        "`series['vinnas']` must be a non-empty list of runs, each a non-empty list of dicts with 'epoch' (int), "
        "'parameter_free_share' (number) and 'skip_count' (int). "
        "Received: [[{'epoch': 1, 'parameter_free_share': 0.5}]]"
    )
    with pytest.raises(ValueError) as e:
        charts.collapse_figure(SERIES, {"skips": (1, 1)})
    assert str(e.value) == (
        "`band` must be None or a dict with keys among ['parameter_free_share', 'skip_count'], each a (mean, std) "
        "pair of numbers. Received: band={'skips': (1, 1)}"
    )
    with pytest.raises(ValueError, match=r"^`series` must be a non-empty dict of method name -> "):
        charts.collapse_figure({})
