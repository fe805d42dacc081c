"""Drawings of the cells of a `Genotype` (matplotlib or graphviz), and the figure writers the charts share.

matplotlib draws the cells (`cell_figure`), or graphviz's `dot` when it is on
`PATH` (`cell_dot`, `draw_genotype`); matplotlib is imported inside the
functions that draw, so that `import tfvnas` stays light. SVG keeps text as
text, so labels can be found in the file. `new_figure`, `svg_text` and
`write_figure` make and save the figures of `tfvnas.pictures.charts` too.

References:
    - [Liu et al., 2019. DARTS: Differentiable Architecture Search](
      https://arxiv.org/abs/1806.09055) (its cell drawings are the model here)
"""

from __future__ import annotations

import collections
import hashlib
import io
import math
import os
import shutil
import subprocess
import warnings
from collections.abc import Iterable
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

from tfvnas import checks
from tfvnas.models.genotype import CELL_TYPES, Genotype

__all__ = ["cell_dot", "cell_figure", "cell_png", "cell_svg", "draw_genotype", "op_color"]

FORMATS = ("svg", "png")
ENGINES = ("auto", "dot", "matplotlib")
DPI = 120

# Convolutions in cool colours, pooling in warm ones, skip and zero in greys.
_OP_COLORS = {
    "sep_conv_3x3": "#1f77b4", "sep_conv_5x5": "#8e44ad", "dil_conv_3x3": "#2ca02c", "dil_conv_5x5": "#138d75",
    "max_pool_3x3": "#d62728", "avg_pool_3x3": "#e67e22", "skip_connect": "#616a6b", "none": "#aab7b8",
}
# Other ops: a colour chosen by a hash of the name, the same in every run.
_EXTRA_COLORS = ("#b03a2e", "#2874a6", "#1e8449", "#b7950b", "#6c3483",
                 "#117a65", "#a04000", "#5d6d7e", "#c0392b", "#7d3c98")
TEXT_COLOR, GREY_COLOR = "#1b1b1b", "#7f8c8d"
_STATE_STYLE = {"input": ("#d5ecd4", "#3d7a4a"), "node": ("#dbe7f3", "#3f5f80"), "output": ("#f6edc4", "#8a7428")}
# Text stays text in SVG; fixed ids and no date make the files reproducible.
_SAVE_RC = {"svg.fonttype": "none", "svg.hashsalt": "tfvnas"}


def op_color(name: str) -> str:
    """Returns the `#rrggbb` colour used for op `name` in every picture."""
    if name in _OP_COLORS:
        return _OP_COLORS[name]
    return _EXTRA_COLORS[hashlib.sha256(name.encode("utf-8")).digest()[0] % len(_EXTRA_COLORS)]


def _tint(color: str, amount: float = 0.82) -> str:
    """Mixes `color` with white; `amount` is the share of white."""
    rgb = [int(color[i : i + 2], 16) / 255.0 * (1 - amount) + amount for i in (1, 3, 5)]
    return "#" + "".join(f"{round(v * 255):02x}" for v in rgb)


def new_figure(width: float, height: float, *, constrained: bool = True):
    """A `Figure` on an Agg canvas: no pyplot, no global backend choice."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained" if constrained else None)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, target, fmt: str) -> None:
    import matplotlib  # noqa: PLC0415

    with matplotlib.rc_context(_SAVE_RC):
        fig.savefig(target, format=fmt, dpi=DPI, metadata={"Date": None} if fmt == "svg" else None)


def svg_text(fig) -> str:
    """Returns `fig` as SVG text."""
    buf = io.StringIO()
    _save(fig, buf, "svg")
    return buf.getvalue()


def write_figure(fig, path: str | os.PathLike, fmt: str) -> str:
    """Saves `fig` at `path` (directories created, the file replaced at once); returns `path`."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    _save(fig, tmp, fmt)
    os.replace(tmp, path)
    return path


def check_formats(formats: Any) -> tuple[str, ...]:
    """Returns `formats` as a tuple of names from `FORMATS`; raises `ValueError` otherwise."""
    if isinstance(formats, str):
        formats = (formats,)
    try:
        formats = tuple(formats)
    except TypeError:
        formats = None
    if not formats or any(f not in FORMATS for f in formats):
        raise ValueError(f"`formats` must be a non-empty subset of {list(FORMATS)}. Received: formats={formats!r}")
    return formats


# ---------------------------------------------------------------------------
# Cells.

_NODE_FONT, _LABEL_FONT, _TITLE_FONT = 10, 8.5, 11
_PORT = 0.12  # inches between the edge ends on a side of a state box
_CLEAR = 0.06  # inches kept free around every label
_MARGIN = 0.15
_RADS = (0.0, -0.12, 0.12, -0.25, 0.25, -0.4, 0.4, -0.55, 0.55)  # arc3 curvatures, tried in order
_TS = sorted(np.arange(0.1, 0.91, 0.04).round(2), key=lambda t: (abs(t - 0.5), t))  # label places on an edge


def check_cell_type(cell_type: Any) -> str:
    """Returns `cell_type` if it is one of `CELL_TYPES`; raises `ValueError` otherwise."""
    if cell_type not in CELL_TYPES:
        raise ValueError(f"`cell_type` must be one of {list(CELL_TYPES)}. Received: cell_type={cell_type!r}")
    return cell_type


def check_genotype(genotype: Any) -> Genotype:
    """Returns `genotype`, validated for drawing (any op names); raises `ValueError` otherwise."""
    if not isinstance(genotype, Genotype):
        raise ValueError(
            f"`genotype` must be a tfvnas.Genotype (use Genotype.load(path) for a JSON file). "
            f"Received: genotype={genotype!r:.200}"
        )
    # Any op name is drawable; indices must still make a DAG.
    return genotype.validate(sorted({op for c in CELL_TYPES for node in getattr(genotype, c) for op, _ in node}))


def _state_name(state: int) -> str:
    return {0: "c_{k-2}", 1: "c_{k-1}", -1: "c_{k}"}.get(state, str(state))


def _state_kind(state: int) -> str:
    return "input" if state in (0, 1) else "output" if state == -1 else "node"


def _ops_in(cell) -> tuple[str, ...]:
    seen = {op for node in cell for op, _ in node}
    return tuple([op for op in _OP_COLORS if op in seen] + sorted(seen - set(_OP_COLORS)))


def _bezier(p1, p2, rad: float, ts) -> np.ndarray:
    """Points at parameters `ts` of matplotlib's `arc3` connection, a quadratic Bezier."""
    p1, p2 = np.asarray(p1, float), np.asarray(p2, float)
    (dx, dy), t = p2 - p1, np.asarray(ts, float)[:, None]
    control = (p1 + p2) / 2 + rad * np.array([dy, -dx])
    return (1 - t) ** 2 * p1 + 2 * (1 - t) * t * control + t**2 * p2


def _inside(points: np.ndarray, box, grow: float = 0.0) -> np.ndarray:
    x0, x1, y0, y1 = box
    return ((points[..., 0] > x0 - grow) & (points[..., 0] < x1 + grow)
            & (points[..., 1] > y0 - grow) & (points[..., 1] < y1 + grow))


def _place_cell(states, edges, state_size, label_box, gap_x, gap_y) -> dict[str, Any]:
    """Places a cell, in inches: states in columns by depth, arcs, labels along them.

    `edges` are `(source, target, op)` (`op=None` for concat edges);
    `state_size` maps a state to its box size before ports, `label_box` an op
    to its label's `(x0, x1, y0, y1)` around the anchor. Returns `boxes`
    (state -> `(x0, x1, y0, y1)`), `arcs` (per edge: start, end, curvature),
    `labels` (per edge: anchor or None), `ok` (every label has a free place)
    and `covered` (how many other edges the labels cover).
    """
    depth = {0: 0, 1: 0}
    for s in states[2:-1]:
        depth[s] = 1 + max(depth[src] for src, dst, _ in edges if dst == s)
    depth[-1] = 1 + max(depth.values())
    # A busy state gets a tall box: its edges spread out, and so do their labels.
    ends = collections.Counter([e[0] for e in edges] + [e[1] for e in edges])
    size = {s: (state_size[s][0], max(state_size[s][1], _PORT * (ends[s] + 1))) for s in states}
    x, y, left = {}, {}, 0.0
    for d in range(depth[-1] + 1):
        column = [s for s in states if depth[s] == d]
        top = (sum(size[s][1] for s in column) + gap_y * (len(column) - 1)) / 2
        width = max(size[s][0] for s in column)
        for s in column:
            x[s], y[s] = left + width / 2, top - size[s][1] / 2
            top -= size[s][1] + gap_y
        left += width + gap_x
    boxes = {s: (x[s] - size[s][0] / 2, x[s] + size[s][0] / 2, y[s] - size[s][1] / 2, y[s] + size[s][1] / 2)
             for s in states}

    # Edge ends spread over the box sides, the steepest on top, so that edges
    # leaving or entering the same box do not cross there.
    port: dict[tuple[int, int], float] = {}
    for s in states:
        for side, other in ((0, 1), (1, 0)):
            ks = sorted((k for k, e in enumerate(edges) if e[side] == s),
                        key=lambda k: ((y[s] - y[edges[k][other]]) / abs(x[edges[k][other]] - x[s]), k))
            for j, k in enumerate(ks):
                port[(k, side)] = boxes[s][3] - (j + 1) * size[s][1] / (len(ks) + 1)

    # The first curvature whose arc passes clear of every other box.
    arcs, samples = [], np.linspace(0.02, 0.98, 40)
    for k, (src, dst, _) in enumerate(edges):
        p1, p2 = (boxes[src][1], port[(k, 0)]), (boxes[dst][0], port[(k, 1)])
        rad = next((r for r in _RADS if not any(
            _inside(_bezier(p1, p2, r, samples), boxes[s], -0.01 if s in (src, dst) else 0.05).any()
            for s in states)), 0.0)
        arcs.append((p1, p2, rad))

    # A label must clear the boxes and the other labels; of the places that
    # do, the one covering the fewest other edges, nearest the middle, wins.
    # Short edges have the least room, so they choose first.
    curves = np.stack([_bezier(*arc, np.linspace(0, 1, 150)) for arc in arcs])
    taken, labels, ok, covered = list(boxes.values()), [None] * len(edges), True, 0
    labelled = [k for k, e in enumerate(edges) if e[2] is not None]
    for k in sorted(labelled, key=lambda k: (math.dist(arcs[k][0], arcs[k][1]), k)):
        ext, best = label_box[edges[k][2]], None
        for rank, (px, py) in enumerate(_bezier(*arcs[k], _TS)):
            box = (px + ext[0], px + ext[1], py + ext[2], py + ext[3])
            if any(b[0] - _CLEAR < box[1] and box[0] - _CLEAR < b[1] and b[2] - _CLEAR < box[3]
                   and box[2] - _CLEAR < b[3] for b in taken):
                continue
            score = (int(_inside(curves, box).any(axis=1).sum()) - 1, rank)
            if best is None or score < best[0]:
                best = (score, (px, py), box)
        if best is None:
            (px, py), ok = _bezier(*arcs[k], [0.5])[0], False
            best = ((len(edges), 0), (px, py), (px + ext[0], px + ext[1], py + ext[2], py + ext[3]))
        labels[k] = best[1]
        taken.append(best[2])
        covered += best[0][0]
    return {"boxes": boxes, "arcs": arcs, "labels": labels, "ok": ok, "covered": covered}


def _op_label(ax, x, y, op, **kwargs):
    return ax.text(x, y, op, ha="center", va="center", fontsize=_LABEL_FONT, color=TEXT_COLOR, zorder=3, **kwargs,
                   bbox={"boxstyle": "round,pad=0.25", "fc": _tint(op_color(op)), "ec": op_color(op), "lw": 1.0})


def _cell_legend(ax, ops, **kwargs):
    from matplotlib.lines import Line2D  # noqa: PLC0415

    return ax.legend(handles=[Line2D([], [], color=op_color(op), lw=2.5, label=op) for op in ops],
                     ncol=min(len(ops), 4), frameon=False, fontsize=_LABEL_FONT, borderaxespad=0.0,
                     handlelength=1.8, columnspacing=1.4, **kwargs)


def _inch_axes(fig, width: float, height: float):
    """Axes filling `fig` whose data unit is an inch, so arcs keep their shape."""
    fig.set_size_inches(width, height)
    ax = fig.add_axes((0, 0, 1, 1), xlim=(0, width), ylim=(0, height))
    ax.set_axis_off()
    return ax


def cell_figure(genotype: Genotype, cell_type: str):
    """Draws a cell with matplotlib.

    Inputs `c_{k-2}` and `c_{k-1}` sit on the left, each node in the column
    of its dependency depth, the output `c_{k}` on the right. Every
    `(op, input)` pair is an arrow coloured by op and labelled with its name;
    grey arrows are the concat. Text is measured with the figure's renderer;
    labels slide along their arrow until they clear every box and label, and
    the gaps grow until they all do. A cell has a dozen states at most, so a
    placement by depth is enough, and fast even for a threshold cell of
    dozens of ops (graphviz, `cell_dot`, is used when installed).

    Artists carry ids (`gid`, kept in SVG): `"state:<name>"` for state boxes,
    `"op:<k>:<op>"` for op labels and `"edge:<k>:<source>-><target>"` for
    arrows, `k` counting the `(op, input)` pairs, then the concat.

    Args:
        genotype: A `Genotype`; any op names are accepted.
        cell_type: `"normal"` or `"reduce"`.

    Returns:
        A `matplotlib.figure.Figure` sized to the drawing.

    Raises:
        ValueError: If `cell_type` is not a cell type, `genotype` is not a
            `Genotype`, or an input or concat index does not point to an
            allowed state.
    """
    genotype, cell_type = check_genotype(genotype), check_cell_type(cell_type)
    cell, concat = getattr(genotype, cell_type), getattr(genotype, f"{cell_type}_concat")
    ops, states = _ops_in(cell), [0, 1, *range(2, 2 + len(cell)), -1]
    edges = [(inp, 2 + i, op) for i, node in enumerate(cell) for op, inp in node] + [(c, -1, None) for c in concat]
    title = f"{cell_type} cell: {len(cell)} nodes, {sum(len(node) for node in cell)} ops"
    fig = new_figure(6.4, 4.8, constrained=False)
    sizes = _measure(fig, ops, states, title)
    placed = _placement(states, edges, sizes)
    _draw(fig, ops, edges, title, sizes, placed)
    return fig


def _measure(fig, ops, states, title):
    """Every text's extent in inches around its anchor, measured once with the figure's renderer."""
    ax, anchor = _inch_axes(fig, 6.4, 4.8), (1.0, 1.0)
    texts = {op: _op_label(ax, *anchor, op) for op in ops}
    names = {s: ax.text(*anchor, _state_name(s), ha="center", va="center", fontsize=_NODE_FONT) for s in states}
    heading, legend = ax.text(*anchor, title, fontsize=_TITLE_FONT), _cell_legend(ax, ops)
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    origin = ax.transData.transform(anchor)

    def extent(artist):
        b = artist.get_window_extent(renderer)
        return (b.x0 - origin[0]) / DPI, (b.x1 - origin[0]) / DPI, (b.y0 - origin[1]) / DPI, (b.y1 - origin[1]) / DPI

    state_size = {}
    for s, t in names.items():
        x0, x1, y0, y1 = extent(t)
        state_size[s] = (max(x1 - x0 + 0.28, 0.62), y1 - y0 + 0.18)
    return {"label_box": {op: extent(t.get_bbox_patch()) for op, t in texts.items()}, "state_size": state_size,
            "title": extent(heading), "legend": extent(legend)}


def _placement(states, edges, sizes):
    """Wider gaps until every label has a free place, and further while that uncovers edges.

    A step must uncover a quarter of the labels (two at least) to be worth the room.
    """
    label_box = sizes["label_box"]
    gap_x = max((b[1] - b[0] for b in label_box.values()), default=0.0) + 0.35
    placed, cost, price = None, math.inf, max(2.0, sum(op is not None for *_, op in edges) / 4)
    for step in range(12):
        trial = _place_cell(states, edges, sizes["state_size"], label_box, gap_x * 1.2**step, 0.3 * 1.2**step)
        if trial["ok"] and trial["covered"] + price * step < cost:
            placed, cost = trial, trial["covered"] + price * step
        if placed is not None and price * step >= cost:
            break
    return placed or trial


def _draw(fig, ops, edges, title, sizes, placed):
    """The figure sized to the placed graph, its title and legend: boxes, arrows and op labels."""
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: PLC0415

    label_box = sizes["label_box"]
    (tx0, tx1, ty0, ty1), (lx0, lx1, ly0, ly1) = sizes["title"], sizes["legend"]
    title_h, legend_h = ty1 - ty0, ly1 - ly0
    # Bounds of the graph: boxes, labels and the arcs' bulges.
    corners = [b for b in placed["boxes"].values()]
    corners += [(p[0] + label_box[e[2]][0], p[0] + label_box[e[2]][1], p[1] + label_box[e[2]][2],
                 p[1] + label_box[e[2]][3]) for e, p in zip(edges, placed["labels"]) if e[2] is not None]
    points = np.concatenate([np.array([[b[0], b[2]], [b[1], b[3]]]) for b in corners]
                            + [_bezier(*arc, np.linspace(0, 1, 21)) for arc in placed["arcs"]])
    (gx0, gy0), (gx1, gy1) = points.min(axis=0), points.max(axis=0)
    width = max(gx1 - gx0, tx1 - tx0, lx1 - lx0) + 2 * _MARGIN
    height = 2 * _MARGIN + title_h + 0.2 + (gy1 - gy0) + (0.25 + legend_h if ops else 0.0)
    shift = np.array([(width - (gx1 - gx0)) / 2 - gx0, height - _MARGIN - title_h - 0.2 - gy1])

    fig.clear()
    ax = _inch_axes(fig, width, height)
    ax.text(_MARGIN, height - _MARGIN, title, fontsize=_TITLE_FONT, ha="left", va="top", gid="title")
    if ops:
        _cell_legend(ax, ops, loc="lower center", bbox_to_anchor=(width / 2, _MARGIN), bbox_transform=ax.transData)
    for s, (x0, x1, y0, y1) in placed["boxes"].items():
        (x0, y0), (x1, y1), (fill, stroke) = (x0, y0) + shift, (x1, y1) + shift, _STATE_STYLE[_state_kind(s)]
        ax.add_patch(FancyBboxPatch((x0, y0), x1 - x0, y1 - y0, boxstyle="round,pad=0,rounding_size=0.08",
                                    fc=fill, ec=stroke, lw=1.4, zorder=2, gid=f"state:{_state_name(s)}"))
        ax.text((x0 + x1) / 2, (y0 + y1) / 2, _state_name(s), ha="center", va="center", fontsize=_NODE_FONT,
                color=TEXT_COLOR, zorder=4)
    for k, ((src, dst, op), (p1, p2, rad), at) in enumerate(zip(edges, placed["arcs"], placed["labels"])):
        ax.add_patch(FancyArrowPatch(
            tuple(p1 + shift), tuple(p2 + shift), connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>",
            mutation_scale=11, lw=1.4, color=op_color(op) if op else GREY_COLOR, shrinkA=0, shrinkB=0, zorder=1,
            gid=f"edge:{k}:{_state_name(src)}->{_state_name(dst)}"))
        if op is not None:
            _op_label(ax, *(np.asarray(at) + shift), op, gid=f"op:{k}:{op}")


def cell_svg(genotype: Genotype, cell_type: str) -> str:
    """Returns `cell_figure(genotype, cell_type)` as SVG text."""
    return svg_text(cell_figure(genotype, cell_type))


def cell_png(genotype: Genotype, cell_type: str, path: str | os.PathLike) -> str:
    """Writes `cell_figure(genotype, cell_type)` as a PNG file (directories created); returns `path`."""
    return write_figure(cell_figure(genotype, cell_type), path, "png")


def _dot_id(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cell_dot(genotype: Genotype, cell_type: str) -> str:
    """Describes a cell in graphviz's DOT language (for `dot -Tsvg` or `-Tpng`).

    Same content as `cell_figure`: inputs, nodes and output as rounded boxes,
    one edge per `(op, input)` pair labelled and coloured by op, and a legend.

    Args:
        genotype: A `Genotype`.
        cell_type: `"normal"` or `"reduce"`.

    Returns:
        DOT text.

    Raises:
        ValueError: See `cell_figure`.
    """
    genotype, cell_type = check_genotype(genotype), check_cell_type(cell_type)
    cell, concat = getattr(genotype, cell_type), getattr(genotype, f"{cell_type}_concat")
    lines = [
        f"digraph {_dot_id(cell_type)} {{",
        "  rankdir=LR;",
        f"  label={_dot_id(f'{cell_type} cell: {len(cell)} nodes, {sum(len(x) for x in cell)} ops')};",
        '  labelloc=t; fontname="Helvetica"; fontsize=16;',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=14, penwidth=1.5];',
        '  edge [fontname="Helvetica", fontsize=12, penwidth=1.5, arrowsize=0.8];',
    ]
    for state in [0, 1, *range(2, 2 + len(cell)), -1]:
        fill, stroke = _STATE_STYLE[_state_kind(state)]
        lines.append(f'  {_dot_id(_state_name(state))} [fillcolor="{fill}", color="{stroke}"];')
    lines.append(f"  {{ rank=same; {_dot_id(_state_name(0))}; {_dot_id(_state_name(1))}; }}")
    for i, node in enumerate(cell):
        for op, inp in node:
            lines.append(f"  {_dot_id(_state_name(inp))} -> {_dot_id(_state_name(2 + i))} "
                         f'[label={_dot_id(op)}, color="{op_color(op)}", fontcolor="{op_color(op)}"];')
    lines += [f'  {_dot_id(_state_name(c))} -> {_dot_id(_state_name(-1))} [color="{GREY_COLOR}"];' for c in concat]
    rows = "".join(f'<tr><td bgcolor="{_tint(op_color(op))}" border="1" color="{op_color(op)}" width="18"></td>'
                   f'<td align="left">{escape(op)}</td></tr>' for op in _ops_in(cell))
    lines += [f'  legend [shape=plaintext, style="", label=<<table border="0" cellspacing="3">{rows}</table>>];', "}"]
    return "\n".join(lines) + "\n"


def _run_dot(dot: str, text: str, fmt: str, path: str) -> None:
    result = subprocess.run([dot, f"-T{fmt}", "-o", path], input=text, capture_output=True, text=True, timeout=120,
                            check=False)
    if result.returncode != 0 or not os.path.exists(path):
        raise checks.ActionableError(f"graphviz `dot -T{fmt}` failed with exit status {result.returncode}. "
                           f"Received: stderr={result.stderr.strip()[:500]!r}")


def draw_genotype(
    genotype: Genotype,
    out_dir: str | os.PathLike,
    formats: Iterable[str] = FORMATS,
    *,
    engine: str = "auto",
    prefix: str = "",
) -> list[str]:
    """Draws both cells of a genotype into `out_dir`.

    Writes `<prefix>normal.<fmt>` and `<prefix>reduce.<fmt>` for every format.

    Args:
        genotype: A `Genotype`.
        out_dir: Output directory, created if needed.
        formats: Any of `"svg"` and `"png"`.
        engine: `"dot"` (graphviz; must be on PATH), `"matplotlib"`
            (`cell_figure`) or `"auto"`: `dot` when `shutil.which("dot")`
            finds it, else matplotlib. With `"auto"`, a failing `dot` warns
            and falls back to matplotlib.
        prefix: Prepended to the file names (`"threshold_"` for the threshold
            genotype of a search).

    Returns:
        The paths written, in order.

    Raises:
        ValueError: If `formats` or `engine` is not allowed, or the genotype
            is invalid (see `cell_figure`).
        RuntimeError: If `engine="dot"` and `dot` is missing or fails.
    """
    genotype, formats = check_genotype(genotype), check_formats(formats)
    if engine not in ENGINES:
        raise ValueError(f"`engine` must be one of {list(ENGINES)}. Received: engine={engine!r}")
    dot = shutil.which("dot") if engine in ("auto", "dot") else None
    if engine == "dot" and dot is None:
        raise checks.ActionableError("`engine='dot'` needs graphviz's `dot` on PATH. Received: no `dot` found on PATH")
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for cell_type in CELL_TYPES:
        fig = None
        for fmt in formats:
            path = os.path.join(os.fspath(out_dir), f"{prefix}{cell_type}.{fmt}")
            if dot is not None:
                try:
                    _run_dot(dot, cell_dot(genotype, cell_type), fmt, path)
                    written.append(path)
                    continue
                except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                    if engine == "dot":
                        raise checks.ActionableError(str(e)) from e
                    warnings.warn(f"graphviz failed, drawing with matplotlib instead: {e}", stacklevel=2)
                    dot = None
            fig = fig or cell_figure(genotype, cell_type)
            written.append(write_figure(fig, path, fmt))
    return written
