"""Pictures of a search: cells, gate trajectories, sparsity, method comparisons.

matplotlib draws every picture (graphviz's `dot` draws the cells when it is
on `PATH`), imported inside the functions that draw so that `import tfvnas`
stays light. Each chart is a `*_figure` function returning a
`matplotlib.figure.Figure`, with `*_png(..., path)` and `*_svg(...)` writers;
SVG keeps text as text, so labels can be found in the file.

- `cell_figure`, `draw_genotype`, `cell_dot`: the cells of a `Genotype`.
- `log_alpha_figure`: every gate's `log_alpha` over the search epochs, from a
  `search_history.json`.
- `sparsity_figure`: the non-zero fraction of every layer's weights, from a
  `train_history.json`.
- `pareto_figure`: accuracy against non-zero parameters, per group.
- `collapse_figure`: parameter-free share and skip count per search epoch.
- `summary_text` and `show` (what `tfvnas show` runs).

References:
    - [Liu et al., 2019. DARTS: Differentiable Architecture Search](
      https://arxiv.org/abs/1806.09055) (its cell drawings are the model here)
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import math
import os
import pathlib
import shutil
import subprocess
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

from tfvnas.genotype import CELL_TYPES, Genotype
from tfvnas.zoo import canonical_name, load_genotype, zoo_entry, zoo_names

__all__ = [
    "cell_dot", "cell_figure", "cell_png", "cell_svg", "collapse_figure", "collapse_png", "collapse_svg",
    "draw_genotype", "log_alpha_figure", "log_alpha_png", "log_alpha_svg", "op_color", "pareto_figure",
    "pareto_png", "pareto_svg", "show", "sparsity_figure", "sparsity_png", "sparsity_svg", "summary_text",
]

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
# Groups, methods and layer types, in order of appearance (matplotlib's tab10).
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
            "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_TEXT, _GREY, _GRID = "#1b1b1b", "#7f8c8d", "#e5e8e8"
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


def _figure(width: float, height: float, *, constrained: bool = True):
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


def _svg_text(fig) -> str:
    buf = io.StringIO()
    _save(fig, buf, "svg")
    return buf.getvalue()


def _write_figure(fig, path: str | os.PathLike, fmt: str) -> str:
    """Saves `fig` at `path` (directories created, the file replaced at once); returns `path`."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    _save(fig, tmp, fmt)
    os.replace(tmp, path)
    return path


def _check_formats(formats: Any) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = (formats,)
    try:
        formats = tuple(formats)
    except TypeError:
        formats = None
    if not formats or any(f not in FORMATS for f in formats):
        raise ValueError(f"`formats` must be a non-empty subset of {list(FORMATS)}. Received: formats={formats!r}")
    return formats


def _short(text: str, limit: int) -> str:
    keep = limit - 3
    return text if len(text) <= limit else text[: keep // 2] + "..." + text[len(text) - (keep - keep // 2) :]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---------------------------------------------------------------------------
# Cells.

_NODE_FONT, _LABEL_FONT, _TITLE_FONT = 10, 8.5, 11
_PORT = 0.12  # inches between the edge ends on a side of a state box
_CLEAR = 0.06  # inches kept free around every label
_MARGIN = 0.15
_RADS = (0.0, -0.12, 0.12, -0.25, 0.25, -0.4, 0.4, -0.55, 0.55)  # arc3 curvatures, tried in order
_TS = sorted(np.arange(0.1, 0.91, 0.04).round(2), key=lambda t: (abs(t - 0.5), t))  # label places on an edge


def _check_cell_type(cell_type: Any) -> str:
    if cell_type not in CELL_TYPES:
        raise ValueError(f"`cell_type` must be one of {list(CELL_TYPES)}. Received: cell_type={cell_type!r}")
    return cell_type


def _check_genotype(genotype: Any) -> Genotype:
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
    return ax.text(x, y, op, ha="center", va="center", fontsize=_LABEL_FONT, color=_TEXT, zorder=3, **kwargs,
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
    placement by depth is enough: about 0.1 s for a DARTS cell and 1 s for an
    82-op threshold cell on one core (graphviz, `cell_dot`, is used when
    installed).

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
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: PLC0415

    genotype, cell_type = _check_genotype(genotype), _check_cell_type(cell_type)
    cell, concat = getattr(genotype, cell_type), getattr(genotype, f"{cell_type}_concat")
    ops, states = _ops_in(cell), [0, 1, *range(2, 2 + len(cell)), -1]
    edges = [(inp, 2 + i, op) for i, node in enumerate(cell) for op, inp in node] + [(c, -1, None) for c in concat]
    title = f"{cell_type} cell: {len(cell)} nodes, {sum(len(node) for node in cell)} ops"

    # Every text's extent in inches around its anchor, measured once.
    fig = _figure(6.4, 4.8, constrained=False)
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

    label_box = {op: extent(t.get_bbox_patch()) for op, t in texts.items()}
    state_size = {}
    for s, t in names.items():
        x0, x1, y0, y1 = extent(t)
        state_size[s] = (max(x1 - x0 + 0.28, 0.62), y1 - y0 + 0.18)
    (tx0, tx1, ty0, ty1), (lx0, lx1, ly0, ly1) = extent(heading), extent(legend)
    title_h, legend_h = ty1 - ty0, ly1 - ly0

    # Wider gaps until every label has a free place, and further while that
    # uncovers edges: a step must uncover a quarter of the labels (two at
    # least) to be worth the room.
    gap_x = max((b[1] - b[0] for b in label_box.values()), default=0.0) + 0.35
    placed, cost, price = None, math.inf, max(2.0, sum(op is not None for *_, op in edges) / 4)
    for step in range(12):
        trial = _place_cell(states, edges, state_size, label_box, gap_x * 1.2**step, 0.3 * 1.2**step)
        if trial["ok"] and trial["covered"] + price * step < cost:
            placed, cost = trial, trial["covered"] + price * step
        if placed is not None and price * step >= cost:
            break
    placed = placed or trial

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
                color=_TEXT, zorder=4)
    for k, ((src, dst, op), (p1, p2, rad), at) in enumerate(zip(edges, placed["arcs"], placed["labels"])):
        ax.add_patch(FancyArrowPatch(
            tuple(p1 + shift), tuple(p2 + shift), connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>",
            mutation_scale=11, lw=1.4, color=op_color(op) if op else _GREY, shrinkA=0, shrinkB=0, zorder=1,
            gid=f"edge:{k}:{_state_name(src)}->{_state_name(dst)}"))
        if op is not None:
            _op_label(ax, *(np.asarray(at) + shift), op, gid=f"op:{k}:{op}")
    return fig


def cell_svg(genotype: Genotype, cell_type: str) -> str:
    """Returns `cell_figure(genotype, cell_type)` as SVG text."""
    return _svg_text(cell_figure(genotype, cell_type))


def cell_png(genotype: Genotype, cell_type: str, path: str | os.PathLike) -> str:
    """Writes `cell_figure(genotype, cell_type)` as a PNG file (directories created); returns `path`."""
    return _write_figure(cell_figure(genotype, cell_type), path, "png")


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
    genotype, cell_type = _check_genotype(genotype), _check_cell_type(cell_type)
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
    lines += [f'  {_dot_id(_state_name(c))} -> {_dot_id(_state_name(-1))} [color="{_GREY}"];' for c in concat]
    rows = "".join(f'<tr><td bgcolor="{_tint(op_color(op))}" border="1" color="{op_color(op)}" width="18"></td>'
                   f'<td align="left">{escape(op)}</td></tr>' for op in _ops_in(cell))
    lines += [f'  legend [shape=plaintext, style="", label=<<table border="0" cellspacing="3">{rows}</table>>];', "}"]
    return "\n".join(lines) + "\n"


def _run_dot(dot: str, text: str, fmt: str, path: str) -> None:
    result = subprocess.run([dot, f"-T{fmt}", "-o", path], input=text, capture_output=True, text=True, timeout=120,
                            check=False)
    if result.returncode != 0 or not os.path.exists(path):
        raise RuntimeError(f"graphviz `dot -T{fmt}` failed with exit status {result.returncode}. "
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
    genotype, formats = _check_genotype(genotype), _check_formats(formats)
    if engine not in ENGINES:
        raise ValueError(f"`engine` must be one of {list(ENGINES)}. Received: engine={engine!r}")
    dot = shutil.which("dot") if engine in ("auto", "dot") else None
    if engine == "dot" and dot is None:
        raise RuntimeError("`engine='dot'` needs graphviz's `dot` on PATH. Received: no `dot` found on PATH")
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
                        raise RuntimeError(str(e)) from e
                    warnings.warn(f"graphviz failed, drawing with matplotlib instead: {e}", stacklevel=2)
                    dot = None
            fig = fig or cell_figure(genotype, cell_type)
            written.append(_write_figure(fig, path, fmt))
    return written


# ---------------------------------------------------------------------------
# log_alpha over the search epochs.


def _check_history(history: Any, cell_type: str):
    keys = "'op_names', 'edges', 'threshold' and 'epochs'"
    if not isinstance(history, Mapping):
        raise ValueError(f"`history` must be the dict of a search_history.json, with keys {keys}. "
                         f"Received: {type(history).__name__}")
    missing = [k for k in ("op_names", "edges", "threshold", "epochs") if k not in history]
    if missing:
        raise ValueError(f"`history` must have the keys {keys} of a search_history.json. "
                         f"Received keys: {sorted(history, key=str)} (missing: {missing})")
    op_names, edges, epochs, threshold = history["op_names"], history["edges"], history["epochs"], history["threshold"]
    if not isinstance(op_names, list) or not op_names or not all(isinstance(o, str) for o in op_names):
        raise ValueError(f"`history['op_names']` must be a non-empty list of str. Received: {op_names!r:.200}")
    if not isinstance(edges, list) or not edges or not all(
            isinstance(e, (list, tuple)) and len(e) == 2 and all(_is_int(v) for v in e) for e in edges):
        raise ValueError(f"`history['edges']` must be a non-empty list of [node, input] pairs. "
                         f"Received: {edges!r:.200}")
    if not _is_number(threshold):
        raise ValueError(f"`history['threshold']` must be a finite number. Received: threshold={threshold!r}")
    if not isinstance(epochs, list) or not epochs:
        raise ValueError(f"`history['epochs']` must be a non-empty list of epoch records. Received: {epochs!r:.200}")
    shape, values, active = (len(edges), len(op_names)), [], []
    for t, record in enumerate(epochs):
        where = f"history['epochs'][{t}]['log_alpha'][{cell_type!r}]"
        try:
            table = np.asarray(record["log_alpha"][cell_type], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"`{where}` must be a {shape[0]}x{shape[1]} table of floats. Received: {e!r:.200}") from e
        if table.shape != shape:
            raise ValueError(f"`{where}` must have shape {shape} (edges, op_names). Received: shape={table.shape}")
        values.append(table)
        act = record["active"].get(cell_type) if isinstance(record.get("active"), Mapping) else None
        act = np.asarray(act, dtype=bool) if act is not None else None
        active.append(act if act is not None and act.shape == shape else None)
    values = np.stack(values)
    if any(a is None for a in active):
        # Older histories: a gate counts as pruned from the first epoch it crossed the threshold.
        active = ~np.maximum.accumulate(values >= threshold, axis=0)
    else:
        active = np.stack(active)
    epoch_numbers = [r["epoch"] if _is_int(r.get("epoch")) else t + 1 for t, r in enumerate(epochs)]
    return op_names, [tuple(e) for e in edges], float(threshold), np.array(epoch_numbers, float), values, active


def log_alpha_figure(history: Mapping[str, Any], cell_type: str):
    """Plots the `log_alpha` of every gate of a cell over the search epochs.

    One line per (edge, op) gate, coloured by op (id
    `"gate:<node>,<input>:<op>"`); gates pruned by the end are thin, dashed
    and faded, with a cross at the epoch they were pruned, their first
    inactive one (`"pruned:<node>,<input>:<op>"`). The pruning threshold is a
    dashed black line (`"threshold"`).

    Args:
        history: The contents of a `search_history.json`: keys `op_names`,
            `edges`, `threshold` and `epochs`, whose records have
            `log_alpha[cell_type]`, a table of shape `(edges, op_names)`, and
            optionally `active[cell_type]`. Other keys are ignored.
        cell_type: `"normal"` or `"reduce"`.

    Returns:
        A `matplotlib.figure.Figure`.

    Raises:
        ValueError: If `cell_type` is not a cell type or `history` does not
            have the structure above.
    """
    from matplotlib.lines import Line2D  # noqa: PLC0415
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415

    cell_type = _check_cell_type(cell_type)
    op_names, edges, threshold, epochs, values, active = _check_history(history, cell_type)
    values = np.where(np.isfinite(values), values, np.nan)
    fig = _figure(10, 5.2)
    ax = fig.add_subplot()
    pruned_style = {"lw": 1.0, "ls": (0, (4, 3)), "alpha": 0.5}
    for e, (node, inp) in enumerate(edges):
        for k, op in enumerate(op_names):
            off = np.flatnonzero(~active[:, e, k])
            ax.plot(epochs, values[:, e, k], color=op_color(op), marker="o" if len(epochs) == 1 else None, ms=3,
                    gid=f"gate:{node},{inp}:{op}", **({**pruned_style, "zorder": 2} if off.size else {"lw": 1.5}))
            if off.size and not math.isnan(values[off[0], e, k]):
                ax.plot(epochs[off[:1]], values[off[:1], e, k], ls="none", marker="x", ms=7, mew=2,
                        color=op_color(op), zorder=4, gid=f"pruned:{node},{inp}:{op}")
    ax.axhline(threshold, color=_TEXT, lw=1.6, ls=(0, (8, 4)), zorder=5, gid="threshold")
    if len(epochs) == 1:
        ax.set_xlim(epochs[0] - 0.5, epochs[0] + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel="log_alpha")
    ax.grid(color=_GRID, lw=0.8)
    dataset = f"dataset {history['dataset']}, " if isinstance(history.get("dataset"), str) else ""
    ax.set_title(f"{cell_type} cell: log_alpha of {values[0].size} gates, {int((~active[-1]).sum())} pruned\n"
                 f"{dataset}threshold {threshold:g}", loc="left", fontsize=11)
    handles = [Line2D([], [], color=op_color(op), lw=2.5, label=op) for op in op_names] + [
        Line2D([], [], color=_TEXT, lw=1.6, ls=(0, (8, 4)), label="threshold"),
        Line2D([], [], color=_TEXT, lw=1.5, label="active gate"),
        Line2D([], [], color=_TEXT, label="pruned gate", **pruned_style),
        Line2D([], [], color=_TEXT, ls="none", marker="x", ms=7, mew=2, label="pruned here"),
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    return fig


def log_alpha_svg(history: Mapping[str, Any], cell_type: str) -> str:
    """Returns `log_alpha_figure(history, cell_type)` as SVG text."""
    return _svg_text(log_alpha_figure(history, cell_type))


def log_alpha_png(history: Mapping[str, Any], cell_type: str, path: str | os.PathLike) -> str:
    """Writes `log_alpha_figure(history, cell_type)` as a PNG file; returns `path`."""
    return _write_figure(log_alpha_figure(history, cell_type), path, "png")


# ---------------------------------------------------------------------------
# Weight sparsity per layer.


def _check_layer_sparsity(layer_sparsity: Any) -> list[dict[str, Any]]:
    keys = "keys 'name' (str), 'type' (str), 'dense' and 'nonzero' (ints, 0 <= nonzero <= dense)"
    if not isinstance(layer_sparsity, (list, tuple)) or not layer_sparsity:
        raise ValueError(f"`layer_sparsity` must be a non-empty list of dicts with {keys}. "
                         f"Received: {layer_sparsity!r:.200}")
    for i, r in enumerate(layer_sparsity):
        if not (isinstance(r, Mapping) and isinstance(r.get("name"), str) and isinstance(r.get("type", ""), str)
                and _is_int(r.get("dense")) and _is_int(r.get("nonzero")) and 0 <= r["nonzero"] <= r["dense"]):
            raise ValueError(f"`layer_sparsity[{i}]` must be a dict with {keys}. Received: {r!r:.200}")
    return [{"name": r["name"], "type": r.get("type", ""), "dense": r["dense"], "nonzero": r["nonzero"]}
            for r in layer_sparsity]


def sparsity_figure(layer_sparsity: Sequence[Mapping[str, Any]]):
    """Draws the non-zero fraction of every layer's weights as horizontal bars.

    One bar per layer (id `"bar:<name>"`), top to bottom in the given order,
    coloured by layer type, with the share and counts beside it; names over
    40 characters are shortened in the middle.

    Args:
        layer_sparsity: One dict per layer with `name` (str), `type` (str),
            `dense` (number of weights) and `nonzero` (weights left after
            masking), as in a `train_history.json`.

    Returns:
        A `matplotlib.figure.Figure`.

    Raises:
        ValueError: If `layer_sparsity` is empty or a record is malformed.
    """
    from matplotlib.patches import Patch  # noqa: PLC0415
    from matplotlib.ticker import PercentFormatter  # noqa: PLC0415

    rows = _check_layer_sparsity(layer_sparsity)
    dense, nonzero = sum(r["dense"] for r in rows), sum(r["nonzero"] for r in rows)
    types = list(dict.fromkeys(r["type"] for r in rows))
    color = {t: _PALETTE[i % len(_PALETTE)] for i, t in enumerate(types)}
    fig = _figure(9, 1.5 + 0.22 * len(rows))
    ax = fig.add_subplot()
    ys = np.arange(len(rows))
    ax.barh(ys, np.ones(len(rows)), height=0.72, color="#eef0f1", zorder=0.4)  # under the grid
    fractions = [r["nonzero"] / r["dense"] if r["dense"] else 0.0 for r in rows]
    bars = ax.barh(ys, fractions, height=0.72, color=[color[r["type"]] for r in rows], zorder=2)
    for bar, r, frac, y in zip(bars, rows, fractions, ys):
        bar.set_gid(f"bar:{r['name']}")
        value = f"{100 * frac:.1f}%  {r['nonzero']:,}/{r['dense']:,}" if r["dense"] else "empty"
        ax.text(1.01, y, value, va="center", fontsize=8, transform=ax.get_yaxis_transform(), clip_on=False)
    ax.set_yticks(ys, [_short(r["name"], 40) for r in rows], fontsize=8)
    ax.set(xlim=(0, 1), ylim=(len(rows) - 0.5, -0.5))
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.xaxis.tick_top()
    ax.grid(axis="x", color="#d5d8dc", lw=0.8)
    ax.spines[["right", "bottom"]].set_visible(False)
    share = 100 * nonzero / dense if dense else 0.0
    fig.suptitle(f"non-zero weights per layer: {nonzero:,} of {dense:,} ({share:.1f}%)", fontsize=11)
    fig.legend(handles=[Patch(color=color[t], label=t or "layer") for t in types], loc="outside lower center",
               ncol=min(len(types), 5), frameon=False, fontsize=9)
    return fig


def sparsity_svg(layer_sparsity: Sequence[Mapping[str, Any]]) -> str:
    """Returns `sparsity_figure(layer_sparsity)` as SVG text."""
    return _svg_text(sparsity_figure(layer_sparsity))


def sparsity_png(layer_sparsity: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> str:
    """Writes `sparsity_figure(layer_sparsity)` as a PNG file; returns `path`."""
    return _write_figure(sparsity_figure(layer_sparsity), path, "png")


# ---------------------------------------------------------------------------
# Method comparisons.


def pareto_figure(points: Sequence[Mapping[str, Any]]):
    """Plots accuracy against non-zero parameters (log scale), one marker per group.

    Every point is labelled; error bars show `accuracy_std` and `params_std`
    where given. One errorbar container per group (`ax.containers`), in order
    of first appearance, and a legend by group.

    Args:
        points: Dicts with `label` (str), `group` (str, e.g. the method),
            `nonzero_params` (int > 0), `accuracy` (number) and optionally
            `accuracy_std` and `params_std` (non-negative numbers).

    Returns:
        A `matplotlib.figure.Figure`.

    Raises:
        ValueError: If `points` is empty or a point is malformed.
    """
    keys = ("'label' (str), 'group' (str), 'nonzero_params' (a positive int), 'accuracy' (a number) and "
            "optionally 'accuracy_std' and 'params_std' (non-negative numbers)")
    if not isinstance(points, (list, tuple)) or not points:
        raise ValueError(f"`points` must be a non-empty list of dicts with {keys}. Received: points={points!r:.200}")
    for i, p in enumerate(points):
        if not (isinstance(p, Mapping) and isinstance(p.get("label"), str) and isinstance(p.get("group"), str)
                and _is_int(p.get("nonzero_params")) and p["nonzero_params"] > 0 and _is_number(p.get("accuracy"))
                and all(_is_number(p[k]) and p[k] >= 0 for k in ("accuracy_std", "params_std")
                        if p.get(k) is not None)):
            raise ValueError(f"`points[{i}]` must be a dict with {keys}. Received: {p!r:.200}")
    fig = _figure(7.5, 5)
    ax = fig.add_subplot()
    for g, group in enumerate(dict.fromkeys(p["group"] for p in points)):
        mine = [p for p in points if p["group"] == group]
        x, y = (np.array([p[k] for p in mine], float) for k in ("nonzero_params", "accuracy"))
        err = {k: np.array([np.nan if p.get(k) is None else p[k] for p in mine], float)
               for k in ("accuracy_std", "params_std") if any(p.get(k) is not None for p in mine)}
        xerr = np.stack([np.minimum(err["params_std"], 0.9 * x), err["params_std"]]) if "params_std" in err else None
        c = _PALETTE[g % len(_PALETTE)]  # the log axis has no room below zero, hence the clipped xerr
        ax.errorbar(x, y, yerr=err.get("accuracy_std"), xerr=xerr, ls="none", marker=_MARKERS[g % len(_MARKERS)],
                    ms=7, color=c, elinewidth=1.2, capsize=3, label=group, zorder=3)
        for p in mine:
            ax.annotate(p["label"], (p["nonzero_params"], p["accuracy"]), xytext=(5, 4), textcoords="offset points",
                        fontsize=8, color=_TEXT)
    ax.set(xscale="log", xlabel="non-zero parameters", ylabel="accuracy")
    ax.margins(0.08)
    ax.grid(color=_GRID, lw=0.8, which="both")
    ax.set_title("accuracy against non-zero parameters", loc="left", fontsize=11)
    ax.legend(fontsize=9)
    return fig


def pareto_svg(points: Sequence[Mapping[str, Any]]) -> str:
    """Returns `pareto_figure(points)` as SVG text."""
    return _svg_text(pareto_figure(points))


def pareto_png(points: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> str:
    """Writes `pareto_figure(points)` as a PNG file; returns `path`."""
    return _write_figure(pareto_figure(points), path, "png")


_COLLAPSE = {"parameter_free_share": "parameter-free share", "skip_count": "skip connections"}


def collapse_figure(series: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]], band: Mapping | None = None):
    """Plots the parameter-free share and the skip count of the derived cell per search epoch.

    Two panels sharing the epoch axis. Per method, the mean over its runs is
    a line (id `"mean:<method>:<key>"`) and the range from the lowest run to
    the highest a shaded area (`"range:<method>:<key>"`); an epoch counts the
    runs that reached it. `band` adds a grey band at mean ± std, labelled
    "random cells (mean ± std)".

    Args:
        series: Method name -> list of runs; a run is a list of per-epoch
            dicts with `epoch` (int), `parameter_free_share` (number, 0 to 1)
            and `skip_count` (int).
        band: None or `{"parameter_free_share": (mean, std), "skip_count":
            (mean, std)}`; either key may be left out.

    Returns:
        A `matplotlib.figure.Figure`.

    Raises:
        ValueError: If `series` or `band` is malformed.
    """
    from matplotlib.patches import Patch  # noqa: PLC0415
    from matplotlib.ticker import MaxNLocator, PercentFormatter  # noqa: PLC0415

    runs_spec = ("a non-empty list of runs, each a non-empty list of dicts with 'epoch' (int), "
                 "'parameter_free_share' (number) and 'skip_count' (int)")
    if not isinstance(series, Mapping) or not series or not all(isinstance(m, str) for m in series):
        raise ValueError(f"`series` must be a non-empty dict of method name -> {runs_spec}. "
                         f"Received: series={series!r:.200}")
    for method, runs in series.items():
        if not (isinstance(runs, (list, tuple)) and runs and all(isinstance(run, (list, tuple)) and run and all(
                isinstance(r, Mapping) and _is_int(r.get("epoch")) and _is_number(r.get("parameter_free_share"))
                and _is_int(r.get("skip_count")) for r in run) for run in runs)):
            raise ValueError(f"`series[{method!r}]` must be {runs_spec}. Received: {runs!r:.200}")
    if band is not None and not (isinstance(band, Mapping) and band and set(band) <= set(_COLLAPSE) and all(
            isinstance(v, (list, tuple)) and len(v) == 2 and all(map(_is_number, v)) for v in band.values())):
        raise ValueError(f"`band` must be None or a dict with keys among {list(_COLLAPSE)}, each a (mean, std) "
                         f"pair of numbers. Received: band={band!r:.200}")
    fig = _figure(9, 6)
    axes, handles = fig.subplots(2, 1, sharex=True), []
    for m, (method, runs) in enumerate(series.items()):
        epochs = sorted({r["epoch"] for run in runs for r in run})
        for ax, key in zip(axes, _COLLAPSE):
            per_epoch = collections.defaultdict(list)
            for r in (r for run in runs for r in run):
                per_epoch[r["epoch"]].append(float(r[key]))
            v = [np.array(per_epoch[e]) for e in epochs]
            (line,) = ax.plot(epochs, [a.mean() for a in v], color=_PALETTE[m % len(_PALETTE)], lw=2, marker="o",
                              ms=3.5, label=method, zorder=3, gid=f"mean:{method}:{key}")
            ax.fill_between(epochs, [a.min() for a in v], [a.max() for a in v], color=line.get_color(), alpha=0.2,
                            lw=0, zorder=2, gid=f"range:{method}:{key}")
        handles.append(line)
    for ax, (key, name) in zip(axes, _COLLAPSE.items()):
        if band and key in band:
            mean, std = band[key]
            ax.axhspan(mean - std, mean + std, color=_GREY, alpha=0.22, lw=0, zorder=1, gid=f"band:{key}")
            ax.axhline(mean, color=_GREY, lw=1.2, ls=(0, (4, 3)), zorder=1)
        ax.set_ylabel(name)
        ax.grid(color=_GRID, lw=0.8)
    if band:
        handles.append(Patch(color=_GREY, alpha=0.35, label="random cells (mean ± std)"))
    axes[0].set_ylim(0, 1)
    axes[0].yaxis.set_major_formatter(PercentFormatter(1.0))
    axes[1].set(ylim=(0, None), xlabel="epoch")
    for axis in (axes[1].yaxis, axes[1].xaxis):
        axis.set_major_locator(MaxNLocator(integer=True))
    axes[0].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    fig.suptitle("derived cell per search epoch: parameter-free ops and skip connections", fontsize=11)
    return fig


def collapse_svg(series: Mapping[str, Any], band: Mapping | None = None) -> str:
    """Returns `collapse_figure(series, band)` as SVG text."""
    return _svg_text(collapse_figure(series, band))


def collapse_png(series: Mapping[str, Any], path: str | os.PathLike, band: Mapping | None = None) -> str:
    """Writes `collapse_figure(series, band)` as a PNG file; returns `path`."""
    return _write_figure(collapse_figure(series, band), path, "png")


# ---------------------------------------------------------------------------
# Text and show.


def summary_text(genotype: Genotype) -> str:
    """Describes both cells, the op histogram and the share of parameter-free ops.

    Args:
        genotype: A `Genotype`.

    Returns:
        `Genotype.summary()` followed by, per cell, its op count, inputs per
        node and parameter-free share, and the op histogram of both cells.
    """
    genotype = _check_genotype(genotype)
    # The parameter-free set lives with the op registry (one place); importing
    # it here is free since `import tfvnas` already loads TensorFlow.
    from tfvnas.ops import PARAMETER_FREE  # noqa: PLC0415

    lines = [genotype.summary()]
    for cell_type in CELL_TYPES:
        cell = getattr(genotype, cell_type)
        ops = [op for node in cell for op, _ in node]
        free = sum(op in PARAMETER_FREE for op in ops)
        lines.append(f"{cell_type}: {len(ops)} ops, {free} parameter-free ({100 * free / len(ops):.0f}%); "
                     f"inputs per node: {', '.join(str(len(node)) for node in cell)}")
    hist = genotype.op_histogram()
    width = max(len(op) for op in hist)
    lines.append("op histogram (both cells):")
    for op, count in sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])):
        tag = "  (parameter-free)" if op in PARAMETER_FREE else ""
        lines.append(f"  {op:<{width}} {count:>3} {'#' * count}{tag}")
    return "\n".join(lines)


_GENOTYPE_FILES = (("genotype.json", ""), ("genotype_threshold.json", "threshold_"))
_SEARCH_HISTORY, _TRAIN_HISTORY = "search_history.json", "train_history.json"


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path!r} must be valid JSON. Received: {e.msg} at line {e.lineno}, column {e.colno}") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{path!r} must be UTF-8 JSON text. Received: undecodable bytes ({e.reason})") from e


def _find_layer_sparsity(data: Any) -> Any:
    """The `layer_sparsity` list of a train history: top level or last epoch record."""
    if isinstance(data, Mapping) and "layer_sparsity" in data:
        return data["layer_sparsity"]
    candidates = [data] if isinstance(data, list) else []
    if isinstance(data, Mapping):
        candidates += [data[k] for k in ("epochs", "history", "records") if isinstance(data.get(k), list)]
    for records in candidates:
        if records and isinstance(records[-1], Mapping) and "layer_sparsity" in records[-1]:
            return records[-1]["layer_sparsity"]
    return None


def _show_inputs(target, out_dir):
    """What `show` draws of `target`: (genotypes, search history, train history, out_dir)."""
    if isinstance(target, str) and canonical_name(target) in zoo_names():
        key = canonical_name(target)
        genotype, source = zoo_entry(key)
        out = os.fspath(out_dir) if out_dir is not None else os.path.join("pictures", key)
        return [(f"zoo genotype {key}", genotype, source, "", f"zoo genotype {key!r}")], None, None, out
    path = os.fspath(target)
    expected = (f"a zoo genotype name (one of {zoo_names()}), a genotype JSON file, or an output directory "
                f"with genotype.json, genotype_threshold.json, {_SEARCH_HISTORY} or {_TRAIN_HISTORY}")
    if not os.path.exists(path):
        raise ValueError(f"`target` must be {expected}. Received: target={path!r} (no such file or directory)")
    search_history = train_history = None
    if os.path.isdir(path):
        base = path
        files = [(os.path.join(path, n), p) for n, p in _GENOTYPE_FILES if os.path.isfile(os.path.join(path, n))]
        if os.path.isfile(os.path.join(path, _SEARCH_HISTORY)):
            search_history = os.path.join(path, _SEARCH_HISTORY)
        if os.path.isfile(os.path.join(path, _TRAIN_HISTORY)):
            train_history = os.path.join(path, _TRAIN_HISTORY)
        if not (files or search_history or train_history):
            found = sorted(os.listdir(path))
            raise ValueError(f"`target` must be {expected}. Received: target={path!r}, a directory with none of them "
                             f"(it holds {_short(', '.join(found), 200) if found else 'nothing'})")
    else:
        base, name, files = os.path.dirname(os.path.abspath(path)), os.path.basename(path), []
        if name == _SEARCH_HISTORY:
            search_history = path
        elif name == _TRAIN_HISTORY:
            train_history = path
        else:
            files = [(path, "")]
    # Given a pathlib.Path, load_genotype reads the file, never the zoo;
    # unlike Genotype.load it accepts the `source` block of zoo files.
    genotypes = [(os.path.basename(g), load_genotype(pathlib.Path(g)), None, prefix, f"genotype file {g!r}")
                 for g, prefix in files]
    out = os.fspath(out_dir) if out_dir is not None else os.path.join(base, "pictures")
    return genotypes, search_history, train_history, out


def show(
    target: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    formats: Iterable[str] = FORMATS,
    engine: str = "auto",
    verbose: bool = True,
) -> dict[str, Any]:
    """Draws everything that can be drawn of a genotype or an output directory.

    `target` is a zoo name (see `tfvnas.zoo.zoo_names()`; a zoo name wins
    over a relative path spelled the same, as in `load_genotype`), a genotype
    JSON file, a `search_history.json` or `train_history.json`, or a
    directory holding any of `genotype.json`, `genotype_threshold.json`,
    `search_history.json` and `train_history.json` (what `tfvnas search` and
    training write). Pictures: `normal.*` and `reduce.*`, the cells
    (`threshold_normal.*` and `threshold_reduce.*` for
    `genotype_threshold.json`); `log_alpha_normal.*` and
    `log_alpha_reduce.*` from a search history; `sparsity.*` from a train
    history with `layer_sparsity` (skipped, and said so, when it has none).

    Args:
        target: A zoo name, file or directory, as above.
        out_dir: Where to write; default `<target's directory>/pictures`, or
            `pictures/<name>` in the working directory for a zoo name.
        formats: Any of `"svg"` and `"png"`.
        engine: For the cells; see `draw_genotype`.
        verbose: Print the text summary and the files written.

    Returns:
        A dict with `"files"` (paths written, in order), `"summary"` (the
        text printed), `"out_dir"` and `"skipped"` (picture name -> reason).

    Raises:
        ValueError: If `target` is not a zoo name and does not exist, is a
            directory without any of those files, or holds malformed JSON, a
            malformed genotype or history.
    """
    formats = _check_formats(formats)
    genotypes, search_history, train_history, out = _show_inputs(target, out_dir)
    files, skipped, text = [], {}, []
    for heading, genotype, source, prefix, where in genotypes:
        try:
            genotype = _check_genotype(genotype)
        except ValueError as e:
            raise ValueError(f"Invalid {where}: {e}") from e
        header = f"== {heading} =="
        if source:
            header += (f"\n{source['paper']} ({source['year']}); {source['dataset']} test error "
                       f"{source['test_error_percent']}%, {source['params_millions']}M parameters")
        text.append(f"{header}\n{summary_text(genotype)}")
        files += draw_genotype(genotype, out, formats, engine=engine, prefix=prefix)

    if search_history is not None:
        history = _read_json(search_history)
        for cell_type in CELL_TYPES:
            try:
                fig = log_alpha_figure(history, cell_type)
            except ValueError as e:
                raise ValueError(f"Invalid search history {search_history!r}: {e}") from e
            files += [_write_figure(fig, os.path.join(out, f"log_alpha_{cell_type}.{fmt}"), fmt) for fmt in formats]
        last = history["epochs"][-1]
        parts = [f"{len(history['epochs'])} epochs"]
        if _is_number(last.get("val_accuracy")):
            parts.append(f"val_accuracy {last['val_accuracy']:.4f}")
        if isinstance(last.get("active_ops"), Mapping):
            total = last.get("total_ops", "?")
            parts.append(", ".join(f"active {t} {last['active_ops'].get(t)}/{total}" for t in CELL_TYPES))
        text.append(f"== {_SEARCH_HISTORY} ==\n" + "; ".join(parts))

    if train_history is not None:
        layer_sparsity = _find_layer_sparsity(_read_json(train_history))
        if layer_sparsity is None:
            skipped["sparsity"] = f"{train_history!r} has no 'layer_sparsity' records"
        else:
            try:
                fig, rows = sparsity_figure(layer_sparsity), _check_layer_sparsity(layer_sparsity)
            except ValueError as e:
                raise ValueError(f"Invalid train history {train_history!r}: {e}") from e
            files += [_write_figure(fig, os.path.join(out, f"sparsity.{fmt}"), fmt) for fmt in formats]
            dense, nz = sum(r["dense"] for r in rows), sum(r["nonzero"] for r in rows)
            text.append(f"== {_TRAIN_HISTORY} ==\n{len(rows)} layers, {nz:,} of {dense:,} weights non-zero "
                        f"({100 * nz / dense if dense else 0:.1f}%)")

    summary = "\n\n".join(text)
    if verbose:
        if summary:
            print(summary)
        for name, reason in skipped.items():
            print(f"skipped {name}: {reason}")
        print(f"wrote {len(files)} files to {out}")
        for f in files:
            print(f"  {f}")
    return {"files": files, "summary": summary, "out_dir": out, "skipped": skipped}
