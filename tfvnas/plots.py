"""Pictures of what a search found: cells, gate trajectories, weight sparsity.

Everything here is pure Python and NumPy, so pictures can be drawn on a
machine without TensorFlow, matplotlib, PIL or graphviz:

- `cell_svg` / `cell_png` / `draw_genotype`: the normal and reduction cells
  of a `Genotype`. Inputs `c_{k-2}`, `c_{k-1}` on the left, intermediate nodes
  in columns by dependency, the output `c_{k}` on the right; every
  `(op, input)` pair is an arrow carrying a label box with the op name,
  coloured per op, with a legend. `draw_genotype` uses graphviz's `dot` when
  it is on `PATH` (see `cell_dot`) and the built-in renderer otherwise.
- `log_alpha_svg` / `log_alpha_png`: `log_alpha` of every architecture gate
  over the search epochs, the pruning threshold and the epoch each gate was
  pruned, from a `search_history.json`.
- `sparsity_svg` / `sparsity_png`: the non-zero fraction of every layer's
  weights, from the `layer_sparsity` records of a `train_history.json`.
- `summary_text`: the cells as text, with an op histogram and the share of
  parameter-free ops.
- `show`: all of the above for a genotype file or an output directory; what
  `tfvnas show` runs.

The built-in renderer lays a cell out as a layered graph (Sugiyama style):
states sit in node columns, op labels in the columns between them, and edges
that skip columns pass through reserved slots. Each column is a vertical stack
whose items never overlap by construction, and edges run only in the gaps
between columns, so no edge crosses a box it does not belong to. The same
drawing is written as SVG (text in a monospace font, stretched to the layout's
text width) or rasterised to PNG with an anti-aliased NumPy rasteriser and a
built-in 5x7 bitmap font.

References:
    - [Sugiyama et al., 1981. Methods for visual understanding of
      hierarchical system structures](https://doi.org/10.1109/TSMC.1981.4308636)
    - [Liu et al., 2019. DARTS: Differentiable Architecture Search](
      https://arxiv.org/abs/1806.09055) (its cell drawings are the model here)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pathlib
import shutil
import struct
import subprocess
import warnings
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from tfvnas.genotype import CELL_TYPES, Genotype
from tfvnas.zoo import canonical_name, load_genotype, zoo_entry, zoo_names

__all__ = [
    "Box",
    "CellEdge",
    "CellLayout",
    "cell_dot",
    "cell_layout",
    "cell_png",
    "cell_svg",
    "draw_genotype",
    "log_alpha_png",
    "log_alpha_svg",
    "op_color",
    "show",
    "sparsity_png",
    "sparsity_svg",
    "summary_text",
]

FORMATS = ("svg", "png")
ENGINES = ("auto", "builtin", "dot")

# ---------------------------------------------------------------------------
# Colours.

# Convolutions in cool colours, pooling in warm ones, skip and zero in greys.
_OP_COLORS = {
    "sep_conv_3x3": "#1f77b4",
    "sep_conv_5x5": "#8e44ad",
    "dil_conv_3x3": "#2ca02c",
    "dil_conv_5x5": "#138d75",
    "max_pool_3x3": "#d62728",
    "avg_pool_3x3": "#e67e22",
    "skip_connect": "#616a6b",
    "none": "#aab7b8",
}
# Ops outside the table get a colour from this list, chosen by a hash of the
# name so that it is the same in every picture and every run.
_EXTRA_COLORS = (
    "#b03a2e", "#2874a6", "#1e8449", "#b7950b", "#6c3483",
    "#117a65", "#a04000", "#5d6d7e", "#c0392b", "#7d3c98",
)
_TEXT = "#1b1b1b"
_GREY = "#7f8c8d"
_STATE_STYLE = {  # fill, stroke
    "input": ("#d5ecd4", "#3d7a4a"),
    "node": ("#dbe7f3", "#3f5f80"),
    "output": ("#f6edc4", "#8a7428"),
}


def op_color(name: str) -> str:
    """Returns the `#rrggbb` colour used for op `name` in every picture."""
    if name in _OP_COLORS:
        return _OP_COLORS[name]
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return _EXTRA_COLORS[digest[0] % len(_EXTRA_COLORS)]


def _rgb(color: str) -> np.ndarray:
    return np.array([int(color[i : i + 2], 16) / 255.0 for i in (1, 3, 5)])


def _tint(color: str, amount: float = 0.82) -> str:
    """Mixes `color` with white; `amount` is the share of white."""
    rgb = _rgb(color) * (1 - amount) + amount
    return "#" + "".join(f"{round(v * 255):02x}" for v in rgb)


# ---------------------------------------------------------------------------
# Built-in bitmap font: 5x7 glyphs, with two descender rows below the
# baseline. Rows are top to bottom, "#" is ink; missing rows are blank.

_GLYPHS = {
    " ": "",
    "!": "..#..|..#..|..#..|..#..|..#..|.....|..#..",
    '"': ".#.#.|.#.#.|.#.#.",
    "#": ".#.#.|.#.#.|#####|.#.#.|#####|.#.#.|.#.#.",
    "$": "..#..|.####|#.#..|.###.|..#.#|####.|..#..",
    "%": "##...|##..#|...#.|..#..|.#...|#..##|...##",
    "&": ".##..|#..#.|#.#..|.#...|#.#.#|#..#.|.##.#",
    "'": "..#..|..#..|.#...",
    "(": "...#.|..#..|.#...|.#...|.#...|..#..|...#.",
    ")": ".#...|..#..|...#.|...#.|...#.|..#..|.#...",
    "*": ".....|..#..|#.#.#|.###.|#.#.#|..#..",
    "+": ".....|..#..|..#..|#####|..#..|..#..",
    ",": ".....|.....|.....|.....|.....|.##..|..#..|.#...",
    "-": ".....|.....|.....|.###.",
    ".": ".....|.....|.....|.....|.....|.##..|.##..",
    "/": ".....|....#|...#.|..#..|.#...|#....",
    "0": ".###.|#...#|#..##|#.#.#|##..#|#...#|.###.",
    "1": "..#..|.##..|..#..|..#..|..#..|..#..|.###.",
    "2": ".###.|#...#|....#|...#.|..#..|.#...|#####",
    "3": "#####|...#.|..#..|...#.|....#|#...#|.###.",
    "4": "...#.|..##.|.#.#.|#..#.|#####|...#.|...#.",
    "5": "#####|#....|####.|....#|....#|#...#|.###.",
    "6": "..##.|.#...|#....|####.|#...#|#...#|.###.",
    "7": "#####|....#|...#.|..#..|.#...|.#...|.#...",
    "8": ".###.|#...#|#...#|.###.|#...#|#...#|.###.",
    "9": ".###.|#...#|#...#|.####|....#|...#.|.##..",
    ":": ".....|.##..|.##..|.....|.##..|.##..",
    ";": ".....|.##..|.##..|.....|.....|.##..|..#..|.#...",
    "<": "...#.|..#..|.#...|#....|.#...|..#..|...#.",
    "=": ".....|.....|#####|.....|#####",
    ">": ".#...|..#..|...#.|....#|...#.|..#..|.#...",
    "?": ".###.|#...#|....#|...#.|..#..|.....|..#..",
    "@": ".###.|#...#|....#|.##.#|#.#.#|#.#.#|.###.",
    "A": ".###.|#...#|#...#|#####|#...#|#...#|#...#",
    "B": "####.|#...#|#...#|####.|#...#|#...#|####.",
    "C": ".###.|#...#|#....|#....|#....|#...#|.###.",
    "D": "###..|#..#.|#...#|#...#|#...#|#..#.|###..",
    "E": "#####|#....|#....|####.|#....|#....|#####",
    "F": "#####|#....|#....|####.|#....|#....|#....",
    "G": ".###.|#...#|#....|#.###|#...#|#...#|.####",
    "H": "#...#|#...#|#...#|#####|#...#|#...#|#...#",
    "I": ".###.|..#..|..#..|..#..|..#..|..#..|.###.",
    "J": "..###|...#.|...#.|...#.|...#.|#..#.|.##..",
    "K": "#...#|#..#.|#.#..|##...|#.#..|#..#.|#...#",
    "L": "#....|#....|#....|#....|#....|#....|#####",
    "M": "#...#|##.##|#.#.#|#.#.#|#...#|#...#|#...#",
    "N": "#...#|#...#|##..#|#.#.#|#..##|#...#|#...#",
    "O": ".###.|#...#|#...#|#...#|#...#|#...#|.###.",
    "P": "####.|#...#|#...#|####.|#....|#....|#....",
    "Q": ".###.|#...#|#...#|#...#|#.#.#|#..#.|.##.#",
    "R": "####.|#...#|#...#|####.|#.#..|#..#.|#...#",
    "S": ".####|#....|#....|.###.|....#|....#|####.",
    "T": "#####|..#..|..#..|..#..|..#..|..#..|..#..",
    "U": "#...#|#...#|#...#|#...#|#...#|#...#|.###.",
    "V": "#...#|#...#|#...#|#...#|#...#|.#.#.|..#..",
    "W": "#...#|#...#|#...#|#.#.#|#.#.#|#.#.#|.#.#.",
    "X": "#...#|#...#|.#.#.|..#..|.#.#.|#...#|#...#",
    "Y": "#...#|#...#|.#.#.|..#..|..#..|..#..|..#..",
    "Z": "#####|....#|...#.|..#..|.#...|#....|#####",
    "[": ".###.|.#...|.#...|.#...|.#...|.#...|.###.",
    "\\": ".....|#....|.#...|..#..|...#.|....#",
    "]": ".###.|...#.|...#.|...#.|...#.|...#.|.###.",
    "^": "..#..|.#.#.|#...#",
    "_": ".....|.....|.....|.....|.....|.....|.....|#####",
    "`": ".#...|..#..|...#.",
    "a": ".....|.....|.###.|....#|.####|#...#|.####",
    "b": "#....|#....|#.##.|##..#|#...#|#...#|####.",
    "c": ".....|.....|.###.|#....|#....|#...#|.###.",
    "d": "....#|....#|.##.#|#..##|#...#|#...#|.####",
    "e": ".....|.....|.###.|#...#|#####|#....|.###.",
    "f": "..##.|.#..#|.#...|###..|.#...|.#...|.#...",
    "g": ".....|.....|.####|#...#|#...#|#...#|.####|....#|.###.",
    "h": "#....|#....|#.##.|##..#|#...#|#...#|#...#",
    "i": "..#..|.....|.##..|..#..|..#..|..#..|.###.",
    "j": "...#.|.....|..##.|...#.|...#.|...#.|...#.|#..#.|.##..",
    "k": "#....|#....|#..#.|#.#..|##...|#.#..|#..#.",
    "l": ".##..|..#..|..#..|..#..|..#..|..#..|.###.",
    "m": ".....|.....|##.#.|#.#.#|#.#.#|#...#|#...#",
    "n": ".....|.....|#.##.|##..#|#...#|#...#|#...#",
    "o": ".....|.....|.###.|#...#|#...#|#...#|.###.",
    "p": ".....|.....|####.|#...#|#...#|#...#|####.|#....|#....",
    "q": ".....|.....|.####|#...#|#...#|#...#|.####|....#|....#",
    "r": ".....|.....|#.##.|##..#|#....|#....|#....",
    "s": ".....|.....|.####|#....|.###.|....#|####.",
    "t": ".#...|.#...|###..|.#...|.#...|.#..#|..##.",
    "u": ".....|.....|#...#|#...#|#...#|#..##|.##.#",
    "v": ".....|.....|#...#|#...#|#...#|.#.#.|..#..",
    "w": ".....|.....|#...#|#...#|#.#.#|#.#.#|.#.#.",
    "x": ".....|.....|#...#|.#.#.|..#..|.#.#.|#...#",
    "y": ".....|.....|#...#|#...#|#...#|#...#|.####|....#|.###.",
    "z": ".....|.....|#####|...#.|..#..|.#...|#####",
    "{": "...#.|..#..|..#..|.#...|..#..|..#..|...#.",
    "|": "..#..|..#..|..#..|..#..|..#..|..#..|..#..",
    "}": ".#...|..#..|..#..|...#.|..#..|..#..|.#...",
    "~": ".....|.....|.#...|#.#.#|...#.",
}
_GLYPH_W, _GLYPH_H, _ASCENT = 5, 9, 7  # ink box; rows 7-8 are descenders
_ADVANCE = _GLYPH_W + 1
_UNKNOWN_GLYPH = "#####|#...#|#...#|#...#|#...#|#...#|#####"
_glyph_cache: dict[str, np.ndarray] = {}


def _glyph(char: str) -> np.ndarray:
    if char not in _glyph_cache:
        rows = _GLYPHS.get(char, _UNKNOWN_GLYPH).split("|") if char != " " else []
        bitmap = np.zeros((_GLYPH_H, _GLYPH_W), np.float32)
        for r, row in enumerate(rows):
            bitmap[r] = [c == "#" for c in row]
        _glyph_cache[char] = bitmap
    return _glyph_cache[char]


def _text_width(text: str, scale: int) -> float:
    """Width of `text` at `scale` (the bitmap's pixel size), without the last gap."""
    return max(len(text) * _ADVANCE - 1, 0) * scale


def _text_height(scale: int) -> float:
    return _GLYPH_H * scale


# ---------------------------------------------------------------------------
# Scene: drawing primitives in pixel coordinates, written as SVG or PNG.


class _Scene:
    """A list of primitives that can be written as SVG text or PNG bytes."""

    def __init__(self, width: float, height: float, title: str = ""):
        self.width = int(math.ceil(width))
        self.height = int(math.ceil(height))
        self.title = title
        self.items: list[dict[str, Any]] = []

    def _add(self, kind, attrs, **fields):
        self.items.append({"kind": kind, "attrs": dict(attrs or {}), **fields})

    def rect(self, x, y, w, h, *, fill=None, stroke=None, width=1.0, radius=0.0, attrs=None):
        self._add("rect", attrs, x=x, y=y, w=w, h=h, fill=fill, stroke=stroke, width=width, radius=radius)

    def path(self, commands, *, stroke, width=1.5, dash=None, opacity=1.0, attrs=None):
        """`commands`: ("M", x, y), ("L", x, y) or ("C", x1, y1, x2, y2, x, y)."""
        self._add("path", attrs, commands=list(commands), stroke=stroke, width=width, dash=dash, opacity=opacity)

    def polyline(self, points, *, stroke, width=1.5, dash=None, opacity=1.0, attrs=None):
        self._add("polyline", attrs, points=[tuple(p) for p in points], stroke=stroke, width=width, dash=dash,
                  opacity=opacity)

    def polygon(self, points, *, fill, attrs=None):
        self._add("polygon", attrs, points=[tuple(p) for p in points], fill=fill)

    def circle(self, cx, cy, r, *, fill=None, stroke=None, width=1.0, attrs=None):
        self._add("circle", attrs, cx=cx, cy=cy, r=r, fill=fill, stroke=stroke, width=width)

    def text(self, x, y, text, *, scale=2, color=_TEXT, anchor="start", attrs=None):
        """Text whose ink box starts at (x, y); `anchor` moves it to end or centre on x."""
        w = _text_width(text, scale)
        if anchor == "end":
            x -= w
        elif anchor == "middle":
            x -= w / 2
        self._add("text", attrs, x=x, y=y, text=text, scale=scale, color=color, w=w)
        return x, y, w, _text_height(scale)

    # -- SVG ---------------------------------------------------------------

    def to_svg(self) -> str:
        out = [
            '<?xml version="1.0" encoding="UTF-8"?>',
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" height="{self.height}" '
            f'viewBox="0 0 {self.width} {self.height}">',
        ]
        if self.title:
            out.append(f"<title>{escape(self.title)}</title>")
        out.append(f'<rect class="background" x="0" y="0" width="{self.width}" height="{self.height}" fill="white"/>')
        for item in self.items:
            out.append(_svg_element(item))
        out.append("</svg>")
        return "\n".join(out) + "\n"

    # -- PNG ---------------------------------------------------------------

    def to_png(self) -> bytes:
        raster = _Raster(self.width, self.height)
        for item in self.items:
            raster.draw(item)
        return _png_bytes(raster.pixels())


def _f(v: float) -> str:
    return f"{v:.2f}".rstrip("0").rstrip(".")


def _svg_attrs(attrs: Mapping[str, Any]) -> str:
    return "".join(f" {k}={quoteattr(str(v))}" for k, v in attrs.items())


def _svg_element(item: dict[str, Any]) -> str:
    kind, extra = item["kind"], _svg_attrs(item["attrs"])
    if kind == "rect":
        fill = item["fill"] or "none"
        stroke = f' stroke="{item["stroke"]}" stroke-width="{_f(item["width"])}"' if item["stroke"] else ""
        radius = f' rx="{_f(item["radius"])}"' if item["radius"] else ""
        return (f'<rect{extra} x="{_f(item["x"])}" y="{_f(item["y"])}" width="{_f(item["w"])}" '
                f'height="{_f(item["h"])}"{radius} fill="{fill}"{stroke}/>')
    if kind in ("path", "polyline"):
        style = f' fill="none" stroke="{item["stroke"]}" stroke-width="{_f(item["width"])}"'
        if item["dash"]:
            style += f' stroke-dasharray="{" ".join(_f(d) for d in item["dash"])}"'
        if item["opacity"] < 1:
            style += f' stroke-opacity="{_f(item["opacity"])}"'
        if kind == "polyline":
            points = " ".join(f"{_f(x)},{_f(y)}" for x, y in item["points"])
            return f'<polyline{extra} points="{points}"{style} stroke-linejoin="round"/>'
        d = " ".join(c[0] + " " + " ".join(_f(v) for v in c[1:]) for c in item["commands"])
        return f'<path{extra} d="{d}"{style}/>'
    if kind == "polygon":
        points = " ".join(f"{_f(x)},{_f(y)}" for x, y in item["points"])
        return f'<polygon{extra} points="{points}" fill="{item["fill"]}"/>'
    if kind == "circle":
        fill = item["fill"] or "none"
        stroke = f' stroke="{item["stroke"]}" stroke-width="{_f(item["width"])}"' if item["stroke"] else ""
        return f'<circle{extra} cx="{_f(item["cx"])}" cy="{_f(item["cy"])}" r="{_f(item["r"])}" fill="{fill}"{stroke}/>'
    if kind == "text":
        s = item["scale"]
        # A monospace font at 10 px per scale unit has the bitmap font's 6 px
        # advance; textLength pins the width to the layout's in any font.
        length = f' textLength="{_f(item["w"])}" lengthAdjust="spacingAndGlyphs"' if item["text"].strip() else ""
        return (f'<text{extra} x="{_f(item["x"])}" y="{_f(item["y"] + _ASCENT * s)}" font-size="{10 * s}" '
                f'font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" fill="{item["color"]}"'
                f'{length} xml:space="preserve">{escape(item["text"])}</text>')
    raise AssertionError(kind)


def _cubic(p0, p1, p2, p3, n=20):
    t = np.linspace(0.0, 1.0, n + 1)[:, None]
    p0, p1, p2, p3 = (np.asarray(p, float) for p in (p0, p1, p2, p3))
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3


def _flatten(commands) -> list[np.ndarray]:
    """Turns path commands into polylines (one per "M")."""
    lines, current = [], []
    for c in commands:
        if c[0] == "M":
            if len(current) > 1:
                lines.append(np.array(current))
            current = [(c[1], c[2])]
        elif c[0] == "L":
            current.append((c[1], c[2]))
        elif c[0] == "C":
            current.extend(map(tuple, _cubic(current[-1], c[1:3], c[3:5], c[5:7])[1:]))
    if len(current) > 1:
        lines.append(np.array(current))
    return lines


def _dashes(points: np.ndarray, pattern: Sequence[float]) -> list[np.ndarray]:
    """Splits a polyline into the "on" pieces of a dash pattern."""
    seg = np.diff(points, axis=0)
    lengths = np.hypot(seg[:, 0], seg[:, 1])
    cum = np.concatenate([[0.0], np.cumsum(lengths)])
    period = float(sum(pattern))
    pieces, start = [], 0.0
    while start < cum[-1]:
        for k in range(0, len(pattern), 2):
            a, b = start, min(start + pattern[k], cum[-1])
            if a < b:
                ts = np.concatenate([[a], cum[(cum > a) & (cum < b)], [b]])
                pieces.append(np.stack([np.interp(ts, cum, points[:, 0]), np.interp(ts, cum, points[:, 1])], 1))
            start += pattern[k] + (pattern[k + 1] if k + 1 < len(pattern) else 0.0)
        if period <= 0:
            break
    return pieces


class _Raster:
    """An RGB float canvas with anti-aliased shapes drawn from distance fields."""

    def __init__(self, width: int, height: int):
        self.w, self.h = width, height
        self.img = np.ones((height, width, 3), np.float32)

    def pixels(self) -> np.ndarray:
        return np.clip(np.round(self.img * 255), 0, 255).astype(np.uint8)

    def _grid(self, x0, y0, x1, y1):
        ix0, iy0 = max(int(math.floor(x0)), 0), max(int(math.floor(y0)), 0)
        ix1, iy1 = min(int(math.ceil(x1)), self.w), min(int(math.ceil(y1)), self.h)
        if ix0 >= ix1 or iy0 >= iy1:
            return None
        xs = np.arange(ix0, ix1, dtype=np.float32) + 0.5
        ys = np.arange(iy0, iy1, dtype=np.float32) + 0.5
        return ix0, iy0, xs[None, :], ys[:, None]

    def _blend(self, ix0, iy0, coverage, color, opacity=1.0):
        a = (coverage * opacity)[..., None]
        region = self.img[iy0 : iy0 + coverage.shape[0], ix0 : ix0 + coverage.shape[1]]
        region *= 1 - a
        region += a * _rgb(color).astype(np.float32)

    def _stroke(self, lines: list[np.ndarray], width, color, opacity=1.0):
        lines = [np.asarray(p, np.float32) for p in lines if len(p)]
        if not lines:
            return
        allp = np.concatenate(lines)
        pad = width / 2 + 1.5
        g = self._grid(allp[:, 0].min() - pad, allp[:, 1].min() - pad, allp[:, 0].max() + pad, allp[:, 1].max() + pad)
        if g is None:
            return
        ix0, iy0, xs, ys = g
        # Max of per-segment coverage, blended once: joints are not drawn twice.
        cov = np.zeros((ys.shape[0], xs.shape[1]), np.float32)
        for pts in lines:
            if len(pts) == 1:
                pts = np.concatenate([pts, pts])
            for p, q in zip(pts[:-1], pts[1:]):
                lo, hi = np.minimum(p, q) - pad, np.maximum(p, q) + pad
                cx0 = max(int(math.floor(lo[0])) - ix0, 0)
                cx1 = min(int(math.ceil(hi[0])) - ix0, xs.shape[1])
                cy0 = max(int(math.floor(lo[1])) - iy0, 0)
                cy1 = min(int(math.ceil(hi[1])) - iy0, ys.shape[0])
                if cx0 >= cx1 or cy0 >= cy1:
                    continue
                px, py = xs[:, cx0:cx1], ys[cy0:cy1, :]
                d = q - p
                dd = float(d @ d)
                if dd == 0:
                    t = np.zeros(1, np.float32)
                else:
                    t = np.clip(((px - p[0]) * d[0] + (py - p[1]) * d[1]) / dd, 0, 1)
                dist = np.hypot(px - (p[0] + t * d[0]), py - (p[1] + t * d[1]))
                seg = np.clip(width / 2 + 0.5 - dist, 0, 1)
                np.maximum(cov[cy0:cy1, cx0:cx1], seg, out=cov[cy0:cy1, cx0:cx1])
        self._blend(ix0, iy0, cov, color, opacity)

    def _lines(self, lines, item):
        if item["dash"]:
            lines = [piece for line in lines for piece in _dashes(line, item["dash"])]
        self._stroke(lines, item["width"], item["stroke"], item["opacity"])

    def draw(self, item):
        kind = item["kind"]
        if kind == "rect":
            self._rect(item)
        elif kind == "path":
            self._lines(_flatten(item["commands"]), item)
        elif kind == "polyline":
            self._lines([np.array(item["points"], float)], item)
        elif kind == "polygon":
            self._polygon(np.array(item["points"], float), item["fill"])
        elif kind == "circle":
            self._circle(item)
        elif kind == "text":
            self._text(item)

    def _rect(self, item):
        x, y, w, h, r, sw = item["x"], item["y"], item["w"], item["h"], item["radius"], item["width"]
        pad = sw + 1
        g = self._grid(x - pad, y - pad, x + w + pad, y + h + pad)
        if g is None:
            return
        ix0, iy0, xs, ys = g
        r = min(r, w / 2, h / 2)
        qx = np.abs(xs - (x + w / 2)) - (w / 2 - r)
        qy = np.abs(ys - (y + h / 2)) - (h / 2 - r)
        sd = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0) - r
        if item["fill"]:
            self._blend(ix0, iy0, np.clip(0.5 - sd, 0, 1), item["fill"])
        if item["stroke"]:
            self._blend(ix0, iy0, np.clip(sw / 2 + 0.5 - np.abs(sd), 0, 1), item["stroke"])

    def _polygon(self, pts, fill):
        # Convex polygons only (arrowheads, markers): signed distance = max
        # over the edges of the distance to the edge's line.
        if len(pts) < 3:
            return
        x, y = pts[:, 0], pts[:, 1]
        area = np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)
        if area < 0:
            pts = pts[::-1]
        g = self._grid(pts[:, 0].min() - 1, pts[:, 1].min() - 1, pts[:, 0].max() + 1, pts[:, 1].max() + 1)
        if g is None:
            return
        ix0, iy0, xs, ys = g
        sd = np.full((ys.shape[0], xs.shape[1]), -np.inf, np.float32)
        for a, b in zip(pts, np.roll(pts, -1, axis=0)):
            d = b - a
            n = np.hypot(*d)
            if n == 0:
                continue
            # Outward normal of a counter-clockwise polygon in y-down coordinates.
            sd = np.maximum(sd, ((xs - a[0]) * -d[1] + (ys - a[1]) * d[0]) / -n)
        self._blend(ix0, iy0, np.clip(0.5 - sd, 0, 1), fill)

    def _circle(self, item):
        cx, cy, r, sw = item["cx"], item["cy"], item["r"], item["width"]
        g = self._grid(cx - r - sw - 1, cy - r - sw - 1, cx + r + sw + 1, cy + r + sw + 1)
        if g is None:
            return
        ix0, iy0, xs, ys = g
        sd = np.hypot(xs - cx, ys - cy) - r
        if item["fill"]:
            self._blend(ix0, iy0, np.clip(0.5 - sd, 0, 1), item["fill"])
        if item["stroke"]:
            self._blend(ix0, iy0, np.clip(sw / 2 + 0.5 - np.abs(sd), 0, 1), item["stroke"])

    def _text(self, item):
        s = int(item["scale"])
        x0, y0 = int(round(item["x"])), int(round(item["y"]))
        block = np.ones((s, s), np.float32)
        for i, char in enumerate(item["text"]):
            if char == " ":
                continue
            bitmap = np.kron(_glyph(char), block)
            gx, gy = x0 + i * _ADVANCE * s, y0
            cx0, cy0 = max(-gx, 0), max(-gy, 0)
            cx1 = min(bitmap.shape[1], self.w - gx)
            cy1 = min(bitmap.shape[0], self.h - gy)
            if cx0 < cx1 and cy0 < cy1:
                self._blend(gx + cx0, gy + cy0, bitmap[cy0:cy1, cx0:cx1], item["color"])


def _png_bytes(pixels: np.ndarray) -> bytes:
    """Encodes an (H, W, 3) uint8 array as a PNG (8-bit RGB, no filtering)."""
    h, w, _ = pixels.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), pixels.reshape(h, w * 3)], axis=1).tobytes()

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )


def _write(path: str | os.PathLike, data: str | bytes) -> str:
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------
# Cell layout.

_S = 2  # text scale of the cell pictures: 12 px per character, 18 px line
_PAD_X, _PAD_Y = 7, 5  # text padding inside label boxes
_MARGIN = 20
_COLUMN_GAP = 46  # horizontal room for the curves between two columns
_PORT_GAP = 11  # vertical distance between edge ends on a state box
_SLOT = {"input": 22, "node": 22, "output": 22, "op": 8, "dummy": 5}  # clearance above/below items


@dataclasses.dataclass(frozen=True)
class Box:
    """An axis-aligned box of a picture: a state, an op label, the title or a legend entry.

    Attributes:
        kind: `"input"`, `"node"`, `"output"`, `"op"`, `"title"` or `"legend"`.
        text: The text written in (or for) the box.
        x, y: Top-left corner, in pixels (y grows downwards).
        w, h: Width and height, in pixels.
    """

    kind: str
    text: str
    x: float
    y: float
    w: float
    h: float

    def overlaps(self, other: Box, margin: float = 0.0) -> bool:
        """True if the boxes, grown by `margin` on every side, intersect."""
        return (
            self.x - margin < other.x + other.w
            and other.x - margin < self.x + self.w
            and self.y - margin < other.y + other.h
            and other.y - margin < self.y + self.h
        )


@dataclasses.dataclass(frozen=True)
class CellEdge:
    """One drawn edge: an `(op, input)` pair of a node, or a concat edge (`op=None`)."""

    source: int
    target: int  # the output is state -1
    op: str | None
    commands: tuple  # SVG-style path commands, from source to arrow tip
    color: str


@dataclasses.dataclass(frozen=True)
class CellLayout:
    """Where everything of a cell picture goes.

    Attributes:
        cell_type: `"normal"` or `"reduce"`.
        width, height: Size of the picture, in pixels.
        boxes: Every box (states, op labels, title, legend entries); no two
            overlap.
        edges: Every edge, as path commands ending at the target's border.
        ops: The op names used in the cell, in legend order.
    """

    cell_type: str
    width: float
    height: float
    boxes: tuple[Box, ...]
    edges: tuple[CellEdge, ...]
    ops: tuple[str, ...]


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
    ops = {op for cell_type in CELL_TYPES for node in getattr(genotype, cell_type) for op, _ in node}
    return genotype.validate(sorted(ops))


def _state_name(state: int) -> str:
    return {0: "c_{k-2}", 1: "c_{k-1}", -1: "c_{k}"}.get(state, str(state))


def _ops_in(cell) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for node in cell:
        for op, _ in node:
            seen.setdefault(op, None)
    known = [op for op in _OP_COLORS if op in seen]
    return tuple(known + sorted(op for op in seen if op not in _OP_COLORS))


class _Item:
    """An entry of a layout column: a state, an op label or an edge's pass-through slot."""

    __slots__ = ("kind", "text", "w", "h", "col", "y", "key", "state", "left", "right", "order_key")

    def __init__(self, kind, text, w, h, col, key, state=None):
        self.kind, self.text, self.w, self.h, self.col = kind, text, w, h, col
        self.key, self.state = key, state
        self.y = 0.0  # centre
        self.left: list[_Item] = []
        self.right: list[_Item] = []
        self.order_key = key


def _place_column(items: list[_Item], desired: list[float]) -> None:
    """Sets centres closest (least squares) to `desired`, keeping order and clearances.

    With offsets o_i (the tightest packing), z_i = y_i - o_i must be
    non-decreasing: isotonic regression, solved by pooling adjacent violators.
    """
    offsets = [0.0]
    for a, b in zip(items[:-1], items[1:]):
        offsets.append(offsets[-1] + (a.h + b.h) / 2 + max(_SLOT[a.kind], _SLOT[b.kind]))
    blocks: list[list[float]] = []  # [mean, weight, count]
    for d, o in zip(desired, offsets):
        blocks.append([d - o, 1.0, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, n2 = blocks.pop()
            m1, w1, n1 = blocks[-1]
            blocks[-1] = [(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, n1 + n2]
    i = 0
    for mean, _, count in blocks:
        for _ in range(count):
            items[i].y = mean + offsets[i]
            i += 1


def _crossings(columns: list[list[_Item]]) -> int:
    """Number of pairwise crossings of the edges between adjacent columns."""
    total = 0
    for col, nxt in zip(columns[:-1], columns[1:]):
        npos = {id(it): k for k, it in enumerate(nxt)}
        pairs = [(k, npos[id(b)]) for k, a in enumerate(col) for b in a.right]
        for i, (a1, b1) in enumerate(pairs):
            for a2, b2 in pairs[i + 1 :]:
                if (a1 - a2) * (b1 - b2) < 0:
                    total += 1
    return total


def _order_columns(columns: list[list[_Item]]) -> None:
    """Barycentre sweeps to reduce crossings; keeps the best ordering seen.

    The two cell inputs stay on top, in order, so every picture reads alike.
    """

    def sort_by(col, side):
        index = {id(it): k for other in columns for k, it in enumerate(other)}

        def barycentre(it):
            nbrs = it.left if side == "left" else it.right
            if not nbrs:
                return index[id(it)]
            return sum(index[id(nb)] for nb in nbrs) / len(nbrs)

        fixed = [it for it in col if it.kind == "input"]
        movable = sorted((it for it in col if it.kind != "input"), key=lambda it: (barycentre(it), it.order_key))
        col[:] = fixed + movable

    best, best_cost = [list(c) for c in columns], _crossings(columns)
    for _ in range(6):
        for col in columns[1:]:
            sort_by(col, "left")
        for col in columns[-2::-1]:
            sort_by(col, "right")
        cost = _crossings(columns)
        if cost < best_cost:
            best, best_cost = [list(c) for c in columns], cost
    columns[:] = best


def cell_layout(genotype: Genotype, cell_type: str) -> CellLayout:
    """Lays out a cell for drawing.

    States get a rank: the inputs 0, a node one more than its highest input,
    the output one more than every node. Rank r is node column 2r; the op
    labels of the edges into a rank-r node sit in column 2r - 1, next to
    their target; an edge that spans more columns passes through a reserved
    slot in each. Columns are ordered by barycentre sweeps and placed by
    isotonic regression towards their neighbours, so boxes never overlap
    and edges run only between columns.

    Args:
        genotype: A `Genotype`; any op names are accepted.
        cell_type: `"normal"` or `"reduce"`.

    Returns:
        A `CellLayout` with pixel coordinates.

    Raises:
        ValueError: If `cell_type` is not a cell type, `genotype` is not a
            `Genotype`, or an input or concat index does not point to an
            allowed state.
    """
    genotype = _check_genotype(genotype)
    cell_type = _check_cell_type(cell_type)
    cell = getattr(genotype, cell_type)
    concat = getattr(genotype, f"{cell_type}_concat")
    n = len(cell)

    rank = {0: 0, 1: 0}
    for i, node in enumerate(cell):
        rank[2 + i] = 1 + max(rank[inp] for _, inp in node)
    out_rank = 1 + max(rank.values())
    rank[-1] = out_rank
    columns: list[list[_Item]] = [[] for _ in range(2 * out_rank + 1)]

    def box_size(text):
        return _text_width(text, _S) + 2 * _PAD_X, _text_height(_S) + 2 * _PAD_Y

    states: dict[int, _Item] = {}
    for state in [0, 1, *range(2, 2 + n), -1]:
        kind = "input" if state in (0, 1) else "output" if state == -1 else "node"
        text = _state_name(state)
        w, h = box_size(text)
        w = max(w, 56)
        item = _Item(kind, text, w, h, 2 * rank[state], (0, state if state >= 0 else 10**6), state)
        states[state] = item
        columns[item.col].append(item)

    # Each chain: (source state, target state, op, [items from source to target]).
    chains = []
    for i, node in enumerate(cell):
        for p, (op, inp) in enumerate(node):
            target = 2 + i
            chains.append((inp, target, op, p))
    for c in concat:
        chains.append((c, -1, None, 0))

    drawn = []
    for inp, target, op, p in chains:
        src, dst = states[inp], states[target]
        path = [src]
        for col in range(src.col + 1, dst.col):
            key = (1, target if target >= 0 else 10**6, inp, p)
            if op is not None and col == dst.col - 1:
                w, h = box_size(op)
                item = _Item("op", op, w, h, col, key)
            else:
                item = _Item("dummy", "", 0.0, 0.0, col, key)
            columns[col].append(item)
            path.append(item)
        path.append(dst)
        for a, b in zip(path[:-1], path[1:]):
            a.right.append(b)
            b.left.append(a)
        drawn.append((inp, target, op, path))

    for col in columns:
        col.sort(key=lambda it: it.order_key)
    _order_columns(columns)

    # Vertical placement: start stacked, then relax towards the neighbours.
    for col in columns:
        _place_column(col, [0.0] * len(col))
    # A state with many edges gets a taller box so their ends are spread out.
    for item in states.values():
        item.h = max(item.h, _PORT_GAP * (max(len(item.left), len(item.right)) + 1))
    for _ in range(40):
        for seq in (columns, columns[::-1]):
            for col in seq:
                desired = []
                for it in col:
                    nbrs = it.left + it.right
                    desired.append(sum(nb.y for nb in nbrs) / len(nbrs) if nbrs else it.y)
                _place_column(col, desired)

    # Horizontal placement.
    widths = [max([it.w for it in col] + [0.0]) for col in columns]
    title = f"{cell_type} cell: {n} nodes, {sum(len(node) for node in cell)} ops"
    title_w, title_h = _text_width(title, _S), _text_height(_S)
    top = _MARGIN + title_h + 18
    lo = min(it.y - it.h / 2 for col in columns for it in col)
    hi = max(it.y + it.h / 2 for col in columns for it in col)
    shift = top - lo
    x = float(_MARGIN)
    col_x = []
    for wdt in widths:
        col_x.append((x, x + wdt))
        x += wdt + _COLUMN_GAP
    graph_w = x - _COLUMN_GAP - _MARGIN

    boxes: list[Box] = [Box("title", title, _MARGIN, _MARGIN, title_w, title_h)]
    item_box: dict[int, Box] = {}
    for c, col in enumerate(columns):
        x0, x1 = col_x[c]
        for it in col:
            it.y += shift
            if it.kind != "dummy":
                box = Box(it.kind, it.text, (x0 + x1 - it.w) / 2, it.y - it.h / 2, it.w, it.h)
                boxes.append(box)
                item_box[id(it)] = box

    # Edge ends on states: ordered by where the edge comes from (or goes to),
    # evenly spread over the box height.
    ports: dict[tuple[int, int, str], float] = {}
    for it in states.values():
        box = item_box[id(it)]
        for side, nbrs in (("left", it.left), ("right", it.right)):
            order = sorted(range(len(nbrs)), key=lambda k: (nbrs[k].y, k))
            for rank_k, k in enumerate(order):
                ports[(id(it), id(nbrs[k]), side)] = box.y + box.h * (rank_k + 1) / (len(nbrs) + 1)

    edges = []
    for inp, target, op, path in drawn:
        color = op_color(op) if op else _GREY
        src = path[0]
        sbox = item_box[id(src)]
        y = ports[(id(src), id(path[1]), "right")]
        commands = [("M", sbox.x + sbox.w, y), ("L", col_x[src.col][1], y)]
        for prev, it in zip(path[:-1], path[1:]):
            x_prev = col_x[prev.col][1]
            x0, x1 = col_x[it.col]
            y_prev = commands[-1][2]
            if it is path[-1]:
                tbox = item_box[id(it)]
                y_new = ports[(id(it), id(prev), "left")]
            else:
                y_new = it.y
            mid = (x_prev + x0) / 2
            commands.append(("C", mid, y_prev, mid, y_new, x0, y_new))
            if it is path[-1]:
                commands.append(("L", tbox.x, y_new))
            else:
                commands.append(("L", x1, y_new))
        edges.append(CellEdge(inp, target, op, tuple(commands), color))

    # Legend under the graph, wrapped to the picture width.
    ops = _ops_in(cell)
    graph_bottom = hi + shift
    legend_y = graph_bottom + 24
    width = max(graph_w, title_w, 360) + 2 * _MARGIN
    lx, ly = float(_MARGIN), legend_y
    line_h = _text_height(_S) + 10
    for op in ops:
        w = 18 + 8 + _text_width(op, _S)
        if lx > _MARGIN and lx + w > width - _MARGIN:
            lx, ly = float(_MARGIN), ly + line_h
        boxes.append(Box("legend", op, lx, ly, w, _text_height(_S)))
        lx += w + 22
    height = (ly + _text_height(_S) if ops else graph_bottom) + _MARGIN
    return CellLayout(cell_type, width, height, tuple(boxes), tuple(edges), ops)


def _cell_scene(layout: CellLayout) -> _Scene:
    scene = _Scene(layout.width, layout.height, title=f"{layout.cell_type} cell")
    for edge in layout.edges:
        attrs = {"class": "edge", "data-source": _state_name(edge.source), "data-target": _state_name(edge.target)}
        if edge.op:
            attrs["data-op"] = edge.op
        scene.path(edge.commands, stroke=edge.color, width=1.8, attrs=attrs)
        tip_x, tip_y = edge.commands[-1][1], edge.commands[-1][2]
        scene.polygon([(tip_x, tip_y), (tip_x - 9, tip_y - 4.5), (tip_x - 9, tip_y + 4.5)], fill=edge.color,
                      attrs={"class": "arrow"})
    for box in layout.boxes:
        tx = box.x + (box.w - _text_width(box.text, _S)) / 2
        ty = box.y + (box.h - _text_height(_S)) / 2
        if box.kind in _STATE_STYLE:
            fill, stroke = _STATE_STYLE[box.kind]
            scene.rect(box.x, box.y, box.w, box.h, fill=fill, stroke=stroke, width=1.5, radius=8,
                       attrs={"class": box.kind, "data-name": box.text})
            scene.text(tx, ty, box.text, scale=_S, attrs={"class": f"{box.kind}-label"})
        elif box.kind == "op":
            color = op_color(box.text)
            scene.rect(box.x, box.y, box.w, box.h, fill=_tint(color), stroke=color, width=1.5, radius=5,
                       attrs={"class": "op", "data-op": box.text})
            scene.text(tx, ty, box.text, scale=_S, attrs={"class": "op-label"})
        elif box.kind == "title":
            scene.text(box.x, box.y, box.text, scale=_S, attrs={"class": "title"})
        elif box.kind == "legend":
            color = op_color(box.text)
            scene.rect(box.x, box.y, 18, box.h, fill=_tint(color), stroke=color, width=1.5, radius=3,
                       attrs={"class": "legend-swatch"})
            scene.text(box.x + 26, box.y, box.text, scale=_S, attrs={"class": "legend-label"})
    return scene


def cell_svg(genotype: Genotype, cell_type: str) -> str:
    """Draws a cell as SVG with the built-in renderer.

    Args:
        genotype: A `Genotype`.
        cell_type: `"normal"` or `"reduce"`.

    Returns:
        The SVG document, as text.

    Raises:
        ValueError: See `cell_layout`.
    """
    return _cell_scene(cell_layout(genotype, cell_type)).to_svg()


def cell_png(genotype: Genotype, cell_type: str, path: str | os.PathLike) -> str:
    """Draws a cell as a PNG file with the built-in renderer.

    Args:
        genotype: A `Genotype`.
        cell_type: `"normal"` or `"reduce"`.
        path: The file to write; its directory is created if needed.

    Returns:
        `path`, as a str.

    Raises:
        ValueError: See `cell_layout`.
    """
    return _write(path, _cell_scene(cell_layout(genotype, cell_type)).to_png())


def _dot_id(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cell_dot(genotype: Genotype, cell_type: str) -> str:
    """Describes a cell in graphviz's DOT language (for `dot -Tsvg` or `-Tpng`).

    Same content as the built-in drawing: inputs, nodes and output as rounded
    boxes, one edge per `(op, input)` pair labelled and coloured by op, and a
    legend.

    Args:
        genotype: A `Genotype`.
        cell_type: `"normal"` or `"reduce"`.

    Returns:
        DOT text.

    Raises:
        ValueError: See `cell_layout`.
    """
    genotype = _check_genotype(genotype)
    cell_type = _check_cell_type(cell_type)
    cell = getattr(genotype, cell_type)
    concat = getattr(genotype, f"{cell_type}_concat")
    lines = [
        f"digraph {_dot_id(cell_type)} {{",
        "  rankdir=LR;",
        f"  label={_dot_id(f'{cell_type} cell: {len(cell)} nodes, {sum(len(x) for x in cell)} ops')};",
        '  labelloc=t; fontname="Helvetica"; fontsize=16;',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=14, penwidth=1.5];',
        '  edge [fontname="Helvetica", fontsize=12, penwidth=1.5, arrowsize=0.8];',
    ]
    for state in [0, 1, *range(2, 2 + len(cell)), -1]:
        kind = "input" if state in (0, 1) else "output" if state == -1 else "node"
        fill, stroke = _STATE_STYLE[kind]
        lines.append(f'  {_dot_id(_state_name(state))} [fillcolor="{fill}", color="{stroke}"];')
    lines.append(f"  {{ rank=same; {_dot_id(_state_name(0))}; {_dot_id(_state_name(1))}; }}")
    for i, node in enumerate(cell):
        for op, inp in node:
            color = op_color(op)
            lines.append(
                f"  {_dot_id(_state_name(inp))} -> {_dot_id(_state_name(2 + i))} "
                f'[label={_dot_id(op)}, color="{color}", fontcolor="{color}"];'
            )
    for c in concat:
        lines.append(f'  {_dot_id(_state_name(c))} -> {_dot_id(_state_name(-1))} [color="{_GREY}"];')
    rows = "".join(
        f'<tr><td bgcolor="{_tint(op_color(op))}" border="1" color="{op_color(op)}" width="18"></td>'
        f'<td align="left">{escape(op)}</td></tr>'
        for op in _ops_in(cell)
    )
    lines.append(
        f'  legend [shape=plaintext, style="", label=<<table border="0" cellspacing="3">{rows}</table>>];'
    )
    lines.append("}")
    return "\n".join(lines) + "\n"


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


def _run_dot(dot: str, text: str, fmt: str, path: str) -> None:
    result = subprocess.run(
        [dot, f"-T{fmt}", "-o", path], input=text, capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0 or not os.path.exists(path):
        raise RuntimeError(
            f"graphviz `dot -T{fmt}` failed with exit status {result.returncode}. "
            f"Received: stderr={result.stderr.strip()[:500]!r}"
        )


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
        engine: `"dot"` (graphviz; must be on PATH), `"builtin"` (the pure
            Python renderer) or `"auto"`: `dot` when `shutil.which("dot")`
            finds it, else built-in. With `"auto"`, a failing `dot` warns and
            falls back to the built-in renderer.
        prefix: Prepended to the file names (`"threshold_"` for the threshold
            genotype of a search).

    Returns:
        The paths written, in order.

    Raises:
        ValueError: If `formats` or `engine` is not allowed, or the genotype
            is invalid (see `cell_layout`).
        RuntimeError: If `engine="dot"` and `dot` is missing or fails.
    """
    genotype = _check_genotype(genotype)
    formats = _check_formats(formats)
    if engine not in ENGINES:
        raise ValueError(f"`engine` must be one of {list(ENGINES)}. Received: engine={engine!r}")
    dot = shutil.which("dot") if engine in ("auto", "dot") else None
    if engine == "dot" and dot is None:
        raise RuntimeError("`engine='dot'` needs graphviz's `dot` on PATH. Received: no `dot` found on PATH")
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for cell_type in CELL_TYPES:
        scene = None
        for fmt in formats:
            path = os.path.join(out_dir, f"{prefix}{cell_type}.{fmt}")
            if dot is not None:
                try:
                    _run_dot(dot, cell_dot(genotype, cell_type), fmt, path)
                    written.append(path)
                    continue
                except (OSError, RuntimeError, subprocess.SubprocessError) as e:
                    if engine == "dot":
                        raise RuntimeError(str(e)) from e
                    warnings.warn(f"graphviz failed, using the built-in renderer instead: {e}", stacklevel=2)
                    dot = None
            scene = scene or _cell_scene(cell_layout(genotype, cell_type))
            written.append(_write(path, scene.to_svg() if fmt == "svg" else scene.to_png()))
    return written


# ---------------------------------------------------------------------------
# Charts: shared axis helpers.


def _nice_ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    if not hi > lo:
        lo, hi = lo - 1, hi + 1
    raw = (hi - lo) / max(target - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    ticks = []
    v = start
    while v <= hi + 1e-9 * step:
        ticks.append(round(v, 10))
        v += step
    return ticks


def _fmt_tick(v: float) -> str:
    if v == int(v):
        return str(int(v))
    return f"{v:g}"


_CHART_S = 2  # text scale of the charts


# ---------------------------------------------------------------------------
# log_alpha over the search epochs.


def _check_history(history: Any, cell_type: str):
    if not isinstance(history, Mapping):
        raise ValueError(
            "`history` must be the dict of a search_history.json, with keys 'op_names', 'edges', "
            f"'threshold' and 'epochs'. Received: {type(history).__name__}"
        )
    missing = [k for k in ("op_names", "edges", "threshold", "epochs") if k not in history]
    if missing:
        raise ValueError(
            "`history` must have the keys 'op_names', 'edges', 'threshold' and 'epochs' of a "
            f"search_history.json. Received keys: {sorted(history, key=str)} (missing: {missing})"
        )
    op_names, edges, epochs, threshold = history["op_names"], history["edges"], history["epochs"], history["threshold"]
    if not isinstance(op_names, list) or not op_names or not all(isinstance(o, str) for o in op_names):
        raise ValueError(f"`history['op_names']` must be a non-empty list of str. Received: {op_names!r:.200}")
    if not isinstance(edges, list) or not edges or not all(
        isinstance(e, (list, tuple)) and len(e) == 2 and all(isinstance(v, int) for v in e) for e in edges
    ):
        raise ValueError(
            f"`history['edges']` must be a non-empty list of [node, input] pairs. Received: {edges!r:.200}"
        )
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise ValueError(f"`history['threshold']` must be a finite number. Received: threshold={threshold!r}")
    if not isinstance(epochs, list) or not epochs:
        raise ValueError(f"`history['epochs']` must be a non-empty list of epoch records. Received: {epochs!r:.200}")
    shape = (len(edges), len(op_names))
    values, active = [], []
    for t, record in enumerate(epochs):
        where = f"history['epochs'][{t}]['log_alpha'][{cell_type!r}]"
        try:
            table = np.asarray(record["log_alpha"][cell_type], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"`{where}` must be a {shape[0]}x{shape[1]} table of floats. Received: {e!r:.200}") from e
        if table.shape != shape:
            raise ValueError(f"`{where}` must have shape {shape} (edges, op_names). Received: shape={table.shape}")
        values.append(table)
        act = record.get("active", {}).get(cell_type) if isinstance(record.get("active"), Mapping) else None
        act = np.asarray(act, dtype=bool) if act is not None else None
        active.append(act if act is not None and act.shape == shape else None)
    values = np.stack(values)
    if any(a is None for a in active):
        # Older histories: a gate counts as pruned from the first epoch it crossed the threshold.
        active = ~np.maximum.accumulate(values >= threshold, axis=0)
    else:
        active = np.stack(active)
    epoch_numbers = [r.get("epoch", t + 1) if isinstance(r.get("epoch"), int) else t + 1 for t, r in enumerate(epochs)]
    return op_names, [tuple(e) for e in edges], float(threshold), np.array(epoch_numbers, float), values, active


def _log_alpha_scene(history, cell_type) -> _Scene:
    cell_type = _check_cell_type(cell_type)
    op_names, edges, threshold, epochs, values, active = _check_history(history, cell_type)
    s = _CHART_S
    th = _text_height(s)
    finite = values[np.isfinite(values)]
    lo = min(float(finite.min()) if finite.size else threshold, threshold)
    hi = max(float(finite.max()) if finite.size else threshold, threshold)
    pad = 0.06 * (hi - lo or 1.0)
    yticks = _nice_ticks(lo - pad, hi + pad)
    y_lo, y_hi = min(yticks[0], lo - pad), max(yticks[-1], hi + pad)
    x_lo, x_hi = (epochs[0] - 0.5, epochs[0] + 0.5) if len(epochs) == 1 else (epochs[0], epochs[-1])
    xticks = [float(e) for e in epochs]
    if len(xticks) > 12:
        xticks = [t for t in _nice_ticks(x_lo, x_hi, 10) if float(t).is_integer() and x_lo <= t <= x_hi]

    pruned_total = int((~active[-1]).sum())
    title = f"{cell_type} cell: log_alpha of {len(edges) * len(op_names)} gates, {pruned_total} pruned"
    dataset = history.get("dataset")
    subtitle = f"dataset {dataset}, threshold {threshold:g}" if isinstance(dataset, str) else f"threshold {threshold:g}"
    tick_w = max(_text_width(_fmt_tick(v), s) for v in yticks)
    left = _MARGIN + tick_w + 12
    top = _MARGIN + 3 * th + 44
    plot_w, plot_h = 760.0, 440.0
    legend_x = left + plot_w + 30
    legend_entries = [*op_names, "threshold", "active gate", "pruned gate", "pruned here"]
    legend_w = 40 + max(_text_width(e, s) for e in legend_entries)
    width = max(legend_x + legend_w + _MARGIN, _MARGIN + _text_width(title, s) + _MARGIN)
    height = top + plot_h + 2 * th + 30 + _MARGIN

    def px(e):
        return left + (e - x_lo) / (x_hi - x_lo) * plot_w

    def py(v):
        v = min(max(v, y_lo), y_hi)
        return top + (y_hi - v) / (y_hi - y_lo) * plot_h

    scene = _Scene(width, height, title=title)
    scene.text(_MARGIN, _MARGIN, title, scale=s, attrs={"class": "title"})
    scene.text(_MARGIN, _MARGIN + th + 10, subtitle, scale=s, color=_GREY, attrs={"class": "subtitle"})
    scene.text(_MARGIN, top - th - 12, "log_alpha", scale=s, attrs={"class": "axis-label"})
    for v in yticks:
        y = py(v)
        scene.polyline([(left, y), (left + plot_w, y)], stroke="#e5e8e8", width=1, attrs={"class": "grid"})
        scene.polyline([(left - 5, y), (left, y)], stroke=_TEXT, width=1, attrs={"class": "tick"})
        scene.text(left - 9, y - th / 2 + 1, _fmt_tick(v), scale=s, anchor="end", attrs={"class": "tick-label"})
    for e in xticks:
        x = px(e)
        scene.polyline([(x, top + plot_h), (x, top + plot_h + 5)], stroke=_TEXT, width=1, attrs={"class": "tick"})
        scene.text(x, top + plot_h + 10, _fmt_tick(e), scale=s, anchor="middle", attrs={"class": "tick-label"})
    scene.text(left + plot_w / 2, top + plot_h + th + 20, "epoch", scale=s, anchor="middle",
               attrs={"class": "axis-label"})
    scene.rect(left, top, plot_w, plot_h, stroke=_TEXT, width=1, attrs={"class": "frame"})

    xs = [px(e) for e in epochs]
    # Gates pruned by the end are thin, dashed and faded, behind the survivors.
    gates, markers = [], []
    for e, (node, inp) in enumerate(edges):
        for k, op in enumerate(op_names):
            series = values[:, e, k]
            points = [(x, py(v)) for x, v in zip(xs, series) if not math.isnan(v)]
            if not points:
                continue
            if len(points) == 1:
                points = [(points[0][0] - 4, points[0][1]), (points[0][0] + 4, points[0][1])]
            off = np.flatnonzero(~active[:, e, k])
            pruned = bool(off.size)
            attrs = {"class": "gate", "data-edge": f"{node},{inp}", "data-op": op, "data-cell": cell_type,
                     "data-pruned": _fmt_tick(epochs[off[0]]) if pruned else "no"}
            gates.append((not pruned, points, op_color(op), attrs))
            if pruned and not math.isnan(series[off[0]]):
                markers.append((xs[off[0]], py(series[off[0]]), op_color(op), off[0], node, inp, op))
    for alive, points, color, attrs in sorted(gates, key=lambda g: g[0]):
        if alive:
            scene.polyline(points, stroke=color, width=2.2, opacity=0.9, attrs=attrs)
        else:
            scene.polyline(points, stroke=color, width=1.3, dash=(5, 4), opacity=0.55, attrs=attrs)
    scene.polyline([(left, py(threshold)), (left + plot_w, py(threshold))], stroke=_TEXT, width=1.6,
                   dash=(10, 5), attrs={"class": "threshold", "data-value": f"{threshold:g}"})
    for x, y, color, t, node, inp, op in markers:
        r = 4.5
        attrs = {"class": "pruned", "data-edge": f"{node},{inp}", "data-op": op, "data-epoch": _fmt_tick(epochs[t])}
        scene.path([("M", x - r, y - r), ("L", x + r, y + r), ("M", x - r, y + r), ("L", x + r, y - r)],
                   stroke=color, width=2.0, attrs=attrs)

    ly = top
    for op in op_names:
        scene.polyline([(legend_x, ly + th / 2), (legend_x + 28, ly + th / 2)], stroke=op_color(op), width=3,
                       attrs={"class": "legend-line"})
        scene.text(legend_x + 38, ly, op, scale=s, attrs={"class": "legend-label"})
        ly += th + 12
    ly += 6
    scene.polyline([(legend_x, ly + th / 2), (legend_x + 28, ly + th / 2)], stroke=_TEXT, width=1.6, dash=(10, 5),
                   attrs={"class": "legend-line"})
    scene.text(legend_x + 38, ly, "threshold", scale=s, attrs={"class": "legend-label"})
    ly += th + 12
    scene.polyline([(legend_x, ly + th / 2), (legend_x + 28, ly + th / 2)], stroke=_TEXT, width=2.2,
                   attrs={"class": "legend-line"})
    scene.text(legend_x + 38, ly, "active gate", scale=s, attrs={"class": "legend-label"})
    ly += th + 12
    scene.polyline([(legend_x, ly + th / 2), (legend_x + 28, ly + th / 2)], stroke=_TEXT, width=1.3, dash=(5, 4),
                   opacity=0.55, attrs={"class": "legend-line"})
    scene.text(legend_x + 38, ly, "pruned gate", scale=s, attrs={"class": "legend-label"})
    ly += th + 12
    cx, cy, r = legend_x + 14, ly + th / 2, 4.5
    scene.path([("M", cx - r, cy - r), ("L", cx + r, cy + r), ("M", cx - r, cy + r), ("L", cx + r, cy - r)],
               stroke=_TEXT, width=2.0, attrs={"class": "legend-marker"})
    scene.text(legend_x + 38, ly, "pruned here", scale=s, attrs={"class": "legend-label"})
    return scene


def log_alpha_svg(history: Mapping[str, Any], cell_type: str) -> str:
    """Plots the `log_alpha` of every gate of a cell over the search epochs, as SVG.

    One polyline per (edge, op) gate, coloured by op; the pruning threshold
    as a dashed line; a cross where a gate was pruned (its first inactive
    epoch). Values are the raw `log_alpha` the history stores, so a pruned
    gate keeps its trajectory; values beyond the axis are clipped to it.

    Args:
        history: The contents of a `search_history.json` (keys `op_names`,
            `edges`, `threshold`, `epochs`; every epoch record has
            `log_alpha[cell_type]`, a table of shape `(edges, op_names)`,
            and optionally `active[cell_type]`).
        cell_type: `"normal"` or `"reduce"`.

    Returns:
        The SVG document, as text.

    Raises:
        ValueError: If `cell_type` is not a cell type or `history` does not
            have the structure above.
    """
    return _log_alpha_scene(history, cell_type).to_svg()


def log_alpha_png(history: Mapping[str, Any], cell_type: str, path: str | os.PathLike) -> str:
    """Writes `log_alpha_svg`'s plot as a PNG file; returns `path`."""
    return _write(path, _log_alpha_scene(history, cell_type).to_png())


# ---------------------------------------------------------------------------
# Weight sparsity per layer.

_MAX_NAME = 40


def _check_layer_sparsity(layer_sparsity: Any) -> list[dict[str, Any]]:
    keys = "keys 'name' (str), 'type' (str), 'dense' and 'nonzero' (ints, 0 <= nonzero <= dense)"
    if not isinstance(layer_sparsity, (list, tuple)) or not layer_sparsity:
        raise ValueError(
            f"`layer_sparsity` must be a non-empty list of dicts with {keys}. Received: {layer_sparsity!r:.200}"
        )
    rows = []
    for i, rec in enumerate(layer_sparsity):
        ok = (
            isinstance(rec, Mapping)
            and isinstance(rec.get("name"), str)
            and isinstance(rec.get("type", ""), str)
            and all(isinstance(rec.get(k), int) and not isinstance(rec.get(k), bool) for k in ("dense", "nonzero"))
            and 0 <= rec["nonzero"] <= rec["dense"]
        )
        if not ok:
            raise ValueError(f"`layer_sparsity[{i}]` must be a dict with {keys}. Received: {rec!r:.200}")
        rows.append(
            {"name": rec["name"], "type": rec.get("type", ""), "dense": rec["dense"], "nonzero": rec["nonzero"]}
        )
    return rows


def _short(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    keep = limit - 3
    return text[: keep // 2] + "..." + text[len(text) - (keep - keep // 2) :]


def _sparsity_scene(layer_sparsity) -> _Scene:
    rows = _check_layer_sparsity(layer_sparsity)
    s = _CHART_S
    th = _text_height(s)
    total_dense = sum(r["dense"] for r in rows)
    total_nz = sum(r["nonzero"] for r in rows)
    share = total_nz / total_dense if total_dense else 0.0
    title = f"non-zero weights per layer: {total_nz:,} of {total_dense:,} ({100 * share:.1f}%)"
    names = [_short(r["name"], _MAX_NAME) for r in rows]
    name_w = max(_text_width(n, s) for n in names)
    types = list(dict.fromkeys(r["type"] for r in rows))
    bar_x = _MARGIN + name_w + 14
    bar_w = 420.0
    row_h = th + 10
    top = _MARGIN + th + 20 + th + 14
    values = [f"{100 * r['nonzero'] / r['dense']:.1f}%  {r['nonzero']:,}/{r['dense']:,}" if r["dense"] else "empty"
              for r in rows]
    value_w = max(_text_width(v, s) for v in values)
    legend_x = bar_x + bar_w + 14 + value_w + 30
    legend_w = 40 + max(_text_width(t or "layer", s) for t in types)
    width = max(legend_x + legend_w + _MARGIN, _MARGIN + _text_width(title, s) + _MARGIN)
    height = max(top + len(rows) * row_h, top + len(types) * (th + 12)) + _MARGIN
    scene = _Scene(width, height, title=title)
    scene.text(_MARGIN, _MARGIN, title, scale=s, attrs={"class": "title"})
    for f in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = bar_x + f * bar_w
        scene.polyline([(x, top - 6), (x, top + len(rows) * row_h)], stroke="#e5e8e8", width=1, attrs={"class": "grid"})
        scene.text(x, top - th - 10, f"{int(f * 100)}%", scale=s, anchor="middle", color=_GREY,
                   attrs={"class": "tick-label"})
    palette = [op_color(t) if t in _OP_COLORS else _EXTRA_COLORS[i % len(_EXTRA_COLORS)] for i, t in enumerate(types)]
    type_color = dict(zip(types, palette))
    for i, (r, name, value) in enumerate(zip(rows, names, values)):
        y = top + i * row_h
        frac = r["nonzero"] / r["dense"] if r["dense"] else 0.0
        scene.text(bar_x - 14, y + 5, name, scale=s, anchor="end", attrs={"class": "layer-name"})
        scene.rect(bar_x, y + 2, bar_w, row_h - 4, fill="#f2f3f4", attrs={"class": "track"})
        color = type_color[r["type"]]
        scene.rect(bar_x, y + 2, frac * bar_w, row_h - 4, fill=color,
                   attrs={"class": "bar", "data-layer": r["name"], "data-fraction": f"{frac:.6f}"})
        scene.text(bar_x + bar_w + 14, y + 5, value, scale=s, attrs={"class": "value"})
    ly = top
    for t in types:
        scene.rect(legend_x, ly, 18, th, fill=type_color[t], attrs={"class": "legend-swatch"})
        scene.text(legend_x + 28, ly, t or "layer", scale=s, attrs={"class": "legend-label"})
        ly += th + 12
    return scene


def sparsity_svg(layer_sparsity: Sequence[Mapping[str, Any]]) -> str:
    """Draws the non-zero fraction of every layer's weights as horizontal bars (SVG).

    Args:
        layer_sparsity: One dict per layer with `name` (str), `type` (str),
            `dense` (number of weights) and `nonzero` (weights left after
            masking), as in a `train_history.json`.

    Returns:
        The SVG document, as text.

    Raises:
        ValueError: If `layer_sparsity` is empty or a record is malformed.
    """
    return _sparsity_scene(layer_sparsity).to_svg()


def sparsity_png(layer_sparsity: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> str:
    """Writes `sparsity_svg`'s chart as a PNG file; returns `path`."""
    return _write(path, _sparsity_scene(layer_sparsity).to_png())


# ---------------------------------------------------------------------------
# Text.


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
        inputs = ", ".join(str(len(node)) for node in cell)
        lines.append(
            f"{cell_type}: {len(ops)} ops, {free} parameter-free ({100 * free / len(ops):.0f}%); "
            f"inputs per node: {inputs}"
        )
    hist = genotype.op_histogram()
    width = max(len(op) for op in hist)
    lines.append("op histogram (both cells):")
    for op, count in sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])):
        tag = "  (parameter-free)" if op in PARAMETER_FREE else ""
        lines.append(f"  {op:<{width}} {count:>3} {'#' * count}{tag}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# show.

_GENOTYPE_FILES = (("genotype.json", ""), ("genotype_threshold.json", "threshold_"))
_SEARCH_HISTORY = "search_history.json"
_TRAIN_HISTORY = "train_history.json"


def _read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path!r} must be valid JSON. Received: {e.msg} at line {e.lineno}, column {e.colno}"
        ) from e
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


def show(
    target: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    formats: Iterable[str] = FORMATS,
    engine: str = "auto",
    verbose: bool = True,
) -> dict[str, Any]:
    """Draws everything that can be drawn of a genotype or an output directory.

    `target` is a zoo name (see `tfvnas.zoo.zoo_names()`; a zoo name
    wins over a relative path spelled the same, as in `load_genotype`), a
    genotype JSON file, a `search_history.json` or `train_history.json`, or a
    directory holding any of `genotype.json`, `genotype_threshold.json`,
    `search_history.json` and `train_history.json` (what `tfvnas search` and
    training write). Pictures:

    - `normal.*`, `reduce.*`: the cells of the genotype (`threshold_normal.*`
      and `threshold_reduce.*` for `genotype_threshold.json`);
    - `log_alpha_normal.*`, `log_alpha_reduce.*`: gate trajectories, from a
      search history;
    - `sparsity.*`: non-zero weights per layer, from a train history with
      `layer_sparsity` (skipped, and said so, when it has none).

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
    # (heading, genotype, source or None, picture prefix, where it is from)
    genotypes: list[tuple[str, Genotype, Any, str, str]] = []
    search_history = train_history = None
    if isinstance(target, str) and canonical_name(target) in zoo_names():
        key = canonical_name(target)
        genotype, source = zoo_entry(key)
        genotypes = [(f"zoo genotype {key}", genotype, source, "", f"zoo genotype {key!r}")]
        base = os.path.join("pictures", key)
        out = os.fspath(out_dir) if out_dir is not None else base
    else:
        path = os.fspath(target)
        expected = (
            f"a zoo genotype name (one of {zoo_names()}), a genotype JSON file, or an output directory "
            f"with genotype.json, genotype_threshold.json, {_SEARCH_HISTORY} or {_TRAIN_HISTORY}"
        )
        if not os.path.exists(path):
            raise ValueError(f"`target` must be {expected}. Received: target={path!r} (no such file or directory)")
        files_here: list[tuple[str, str]] = []
        if os.path.isdir(path):
            base = path
            files_here = [
                (os.path.join(path, n), p) for n, p in _GENOTYPE_FILES if os.path.isfile(os.path.join(path, n))
            ]
            if os.path.isfile(os.path.join(path, _SEARCH_HISTORY)):
                search_history = os.path.join(path, _SEARCH_HISTORY)
            if os.path.isfile(os.path.join(path, _TRAIN_HISTORY)):
                train_history = os.path.join(path, _TRAIN_HISTORY)
            if not (files_here or search_history or train_history):
                found = sorted(os.listdir(path))
                raise ValueError(
                    f"`target` must be {expected}. Received: target={path!r}, a directory with none of them "
                    f"(it holds {_short(', '.join(found), 200) if found else 'nothing'})"
                )
        else:
            base = os.path.dirname(os.path.abspath(path))
            name = os.path.basename(path)
            if name == _SEARCH_HISTORY:
                search_history = path
            elif name == _TRAIN_HISTORY:
                train_history = path
            else:
                files_here = [(path, "")]
        # Given a pathlib.Path, load_genotype reads the file, never the zoo;
        # unlike Genotype.load it accepts the `source` block of zoo files.
        genotypes = [
            (os.path.basename(g), load_genotype(pathlib.Path(g)), None, prefix, f"genotype file {g!r}")
            for g, prefix in files_here
        ]
        out = os.fspath(out_dir) if out_dir is not None else os.path.join(base, "pictures")

    files: list[str] = []
    skipped: dict[str, str] = {}
    text: list[str] = []
    for heading, genotype, source, prefix, where in genotypes:
        try:
            genotype = _check_genotype(genotype)
        except ValueError as e:
            raise ValueError(f"Invalid {where}: {e}") from e
        header = f"== {heading} =="
        if source:
            header += (
                f"\n{source['paper']} ({source['year']}); {source['dataset']} test error "
                f"{source['test_error_percent']}%, {source['params_millions']}M parameters"
            )
        text.append(f"{header}\n{summary_text(genotype)}")
        files += draw_genotype(genotype, out, formats, engine=engine, prefix=prefix)

    if search_history is not None:
        history = _read_json(search_history)
        for cell_type in CELL_TYPES:
            try:
                scene = _log_alpha_scene(history, cell_type)
            except ValueError as e:
                raise ValueError(f"Invalid search history {search_history!r}: {e}") from e
            for fmt in formats:
                p = os.path.join(out, f"log_alpha_{cell_type}.{fmt}")
                files.append(_write(p, scene.to_svg() if fmt == "svg" else scene.to_png()))
        last = history["epochs"][-1]
        parts = [f"{len(history['epochs'])} epochs"]
        if isinstance(last.get("val_accuracy"), (int, float)):
            parts.append(f"val_accuracy {last['val_accuracy']:.4f}")
        if isinstance(last.get("active_ops"), Mapping):
            total = last.get("total_ops", "?")
            parts.append(", ".join(f"active {t} {last['active_ops'].get(t)}/{total}" for t in CELL_TYPES))
        text.append(f"== {_SEARCH_HISTORY} ==\n" + "; ".join(parts))

    if train_history is not None:
        data = _read_json(train_history)
        layer_sparsity = _find_layer_sparsity(data)
        if layer_sparsity is None:
            skipped["sparsity"] = f"{train_history!r} has no 'layer_sparsity' records"
        else:
            try:
                scene = _sparsity_scene(layer_sparsity)
            except ValueError as e:
                raise ValueError(f"Invalid train history {train_history!r}: {e}") from e
            for fmt in formats:
                data = scene.to_svg() if fmt == "svg" else scene.to_png()
                files.append(_write(os.path.join(out, f"sparsity.{fmt}"), data))
            rows = _check_layer_sparsity(layer_sparsity)
            dense, nz = sum(r["dense"] for r in rows), sum(r["nonzero"] for r in rows)
            text.append(
                f"== {_TRAIN_HISTORY} ==\n{len(rows)} layers, {nz:,} of {dense:,} weights non-zero "
                f"({100 * nz / dense if dense else 0:.1f}%)"
            )

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
