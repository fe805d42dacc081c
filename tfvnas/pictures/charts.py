"""Charts of searches and comparisons: gate trajectories, layer sparsity, Pareto fronts and cell collapse.

Each chart is a `*_figure` function returning a `matplotlib.figure.Figure`,
with `*_png(..., path)` and `*_svg(...)` writers (those of
`tfvnas.pictures.cell_drawing`, so SVG keeps text as text); matplotlib is imported
inside the functions that draw.

- `log_alpha_figure`: every gate's `log_alpha` over the search epochs, from a
  `search_history.json`.
- `sparsity_figure`: the non-zero fraction of every layer's weights, from a
  `train_history.json`.
- `pareto_figure`: accuracy against non-zero parameters, per group.
- `collapse_figure`: parameter-free share and skip count per search epoch.
"""

from __future__ import annotations

import collections
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tfvnas.pictures.cell_drawing import (
    GREY_COLOR,
    TEXT_COLOR,
    check_cell_type,
    new_figure,
    op_color,
    svg_text,
    write_figure,
)

__all__ = [
    "collapse_figure", "collapse_png", "collapse_svg", "log_alpha_figure", "log_alpha_png", "log_alpha_svg",
    "pareto_figure", "pareto_png", "pareto_svg", "sparsity_figure", "sparsity_png", "sparsity_svg",
]

# Groups, methods and layer types, in order of appearance (matplotlib's tab10).
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
            "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_GRID = "#e5e8e8"


def shorten(text: str, limit: int) -> str:
    """Returns `text`, or, when longer than `limit`, its two ends around "..." in `limit` characters."""
    keep = limit - 3
    return text if len(text) <= limit else text[: keep // 2] + "..." + text[len(text) - (keep - keep // 2) :]


def is_number(value: Any) -> bool:
    """Whether `value` is a finite int or float (a bool is not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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
    if not is_number(threshold):
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

    cell_type = check_cell_type(cell_type)
    op_names, edges, threshold, epochs, values, active = _check_history(history, cell_type)
    values = np.where(np.isfinite(values), values, np.nan)
    fig = new_figure(10, 5.2)
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
    ax.axhline(threshold, color=TEXT_COLOR, lw=1.6, ls=(0, (8, 4)), zorder=5, gid="threshold")
    if len(epochs) == 1:
        ax.set_xlim(epochs[0] - 0.5, epochs[0] + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch", ylabel="log_alpha")
    ax.grid(color=_GRID, lw=0.8)
    dataset = f"dataset {history['dataset']}, " if isinstance(history.get("dataset"), str) else ""
    ax.set_title(f"{cell_type} cell: log_alpha of {values[0].size} gates, {int((~active[-1]).sum())} pruned\n"
                 f"{dataset}threshold {threshold:g}", loc="left", fontsize=11)
    handles = [Line2D([], [], color=op_color(op), lw=2.5, label=op) for op in op_names] + [
        Line2D([], [], color=TEXT_COLOR, lw=1.6, ls=(0, (8, 4)), label="threshold"),
        Line2D([], [], color=TEXT_COLOR, lw=1.5, label="active gate"),
        Line2D([], [], color=TEXT_COLOR, label="pruned gate", **pruned_style),
        Line2D([], [], color=TEXT_COLOR, ls="none", marker="x", ms=7, mew=2, label="pruned here"),
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=9)
    return fig


def log_alpha_svg(history: Mapping[str, Any], cell_type: str) -> str:
    """Returns `log_alpha_figure(history, cell_type)` as SVG text."""
    return svg_text(log_alpha_figure(history, cell_type))


def log_alpha_png(history: Mapping[str, Any], cell_type: str, path: str | os.PathLike) -> str:
    """Writes `log_alpha_figure(history, cell_type)` as a PNG file; returns `path`."""
    return write_figure(log_alpha_figure(history, cell_type), path, "png")


# ---------------------------------------------------------------------------
# Weight sparsity per layer.


def check_layer_sparsity(layer_sparsity: Any) -> list[dict[str, Any]]:
    """Returns the `layer_sparsity` records of a train history as plain dicts; raises `ValueError` if malformed."""
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

    rows = check_layer_sparsity(layer_sparsity)
    dense, nonzero = sum(r["dense"] for r in rows), sum(r["nonzero"] for r in rows)
    types = list(dict.fromkeys(r["type"] for r in rows))
    color = {t: _PALETTE[i % len(_PALETTE)] for i, t in enumerate(types)}
    fig = new_figure(9, 1.5 + 0.22 * len(rows))
    ax = fig.add_subplot()
    ys = np.arange(len(rows))
    ax.barh(ys, np.ones(len(rows)), height=0.72, color="#eef0f1", zorder=0.4)  # under the grid
    fractions = [r["nonzero"] / r["dense"] if r["dense"] else 0.0 for r in rows]
    bars = ax.barh(ys, fractions, height=0.72, color=[color[r["type"]] for r in rows], zorder=2)
    for bar, r, frac, y in zip(bars, rows, fractions, ys):
        bar.set_gid(f"bar:{r['name']}")
        value = f"{100 * frac:.1f}%  {r['nonzero']:,}/{r['dense']:,}" if r["dense"] else "empty"
        ax.text(1.01, y, value, va="center", fontsize=8, transform=ax.get_yaxis_transform(), clip_on=False)
    ax.set_yticks(ys, [shorten(r["name"], 40) for r in rows], fontsize=8)
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
    return svg_text(sparsity_figure(layer_sparsity))


def sparsity_png(layer_sparsity: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> str:
    """Writes `sparsity_figure(layer_sparsity)` as a PNG file; returns `path`."""
    return write_figure(sparsity_figure(layer_sparsity), path, "png")


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
                and _is_int(p.get("nonzero_params")) and p["nonzero_params"] > 0 and is_number(p.get("accuracy"))
                and all(is_number(p[k]) and p[k] >= 0 for k in ("accuracy_std", "params_std")
                        if p.get(k) is not None)):
            raise ValueError(f"`points[{i}]` must be a dict with {keys}. Received: {p!r:.200}")
    fig = new_figure(7.5, 5)
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
                        fontsize=8, color=TEXT_COLOR)
    ax.set(xscale="log", xlabel="non-zero parameters", ylabel="accuracy")
    ax.margins(0.08)
    ax.grid(color=_GRID, lw=0.8, which="both")
    ax.set_title("accuracy against non-zero parameters", loc="left", fontsize=11)
    ax.legend(fontsize=9)
    return fig


def pareto_svg(points: Sequence[Mapping[str, Any]]) -> str:
    """Returns `pareto_figure(points)` as SVG text."""
    return svg_text(pareto_figure(points))


def pareto_png(points: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> str:
    """Writes `pareto_figure(points)` as a PNG file; returns `path`."""
    return write_figure(pareto_figure(points), path, "png")


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
                isinstance(r, Mapping) and _is_int(r.get("epoch")) and is_number(r.get("parameter_free_share"))
                and _is_int(r.get("skip_count")) for r in run) for run in runs)):
            raise ValueError(f"`series[{method!r}]` must be {runs_spec}. Received: {runs!r:.200}")
    if band is not None and not (isinstance(band, Mapping) and band and set(band) <= set(_COLLAPSE) and all(
            isinstance(v, (list, tuple)) and len(v) == 2 and all(map(is_number, v)) for v in band.values())):
        raise ValueError(f"`band` must be None or a dict with keys among {list(_COLLAPSE)}, each a (mean, std) "
                         f"pair of numbers. Received: band={band!r:.200}")
    fig = new_figure(9, 6)
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
            ax.axhspan(mean - std, mean + std, color=GREY_COLOR, alpha=0.22, lw=0, zorder=1, gid=f"band:{key}")
            ax.axhline(mean, color=GREY_COLOR, lw=1.2, ls=(0, (4, 3)), zorder=1)
        ax.set_ylabel(name)
        ax.grid(color=_GRID, lw=0.8)
    if band:
        handles.append(Patch(color=GREY_COLOR, alpha=0.35, label="random cells (mean ± std)"))
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
    return svg_text(collapse_figure(series, band))


def collapse_png(series: Mapping[str, Any], path: str | os.PathLike, band: Mapping | None = None) -> str:
    """Writes `collapse_figure(series, band)` as a PNG file; returns `path`."""
    return write_figure(collapse_figure(series, band), path, "png")

