"""What `tfvnas show` runs: `show`, which draws a genotype or an output folder, and `summary_text`.

`show` takes a zoo name, a genotype file, a history or an output folder and
writes the cells (`tfvnas.pictures.cell_drawing`), the gate trajectories and the
weight sparsity (`tfvnas.pictures.charts`) as SVG and PNG files; `summary_text`
describes a genotype's cells in text.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterable, Mapping
from typing import Any

from tfvnas.files import read_json
from tfvnas.models.genotype import CELL_TYPES, Genotype
from tfvnas.models.zoo import canonical_name, load_genotype, zoo_entry, zoo_names
from tfvnas.pictures.cell_drawing import (
    FORMATS,
    check_formats,
    check_genotype,
    draw_genotype,
    write_figure,
)
from tfvnas.pictures.charts import (
    check_layer_sparsity,
    is_number,
    log_alpha_figure,
    shorten,
    sparsity_figure,
)

__all__ = ["show", "summary_text"]


def summary_text(genotype: Genotype) -> str:
    """Describes both cells, the op histogram and the share of parameter-free ops.

    A reduction cell's `skip_connect` from a cell input is a FactorizedReduce
    (two 1x1 convolutions), so it does not count as parameter-free there; the
    histogram tags an op parameter-free when it is at stride 1.

    Args:
        genotype: A `Genotype`.

    Returns:
        `Genotype.summary()` followed by, per cell, its op count, inputs per
        node and parameter-free share, and the op histogram of both cells.
    """
    genotype = check_genotype(genotype)
    # The parameter-free rule lives with the op registry (one place).
    from tfvnas.layers import registry as op_registry  # noqa: PLC0415

    lines = [genotype.summary()]
    for cell_type in CELL_TYPES:
        cell = getattr(genotype, cell_type)
        free, _, total = op_registry.cell_op_counts(genotype, cell_type)
        lines.append(f"{cell_type}: {total} ops, {free} parameter-free ({100 * free / total:.0f}%); "
                     f"inputs per node: {', '.join(str(len(node)) for node in cell)}")
    hist = genotype.op_histogram()
    width = max(len(op) for op in hist)
    lines.append("op histogram (both cells):")
    for op, count in sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])):
        tag = "  (parameter-free)" if op_registry.is_parameter_free(op) else ""
        lines.append(f"  {op:<{width}} {count:>3} {'#' * count}{tag}")
    return "\n".join(lines)


_GENOTYPE_FILES = (("genotype.json", ""), ("genotype_threshold.json", "threshold_"))
_SEARCH_HISTORY, _TRAIN_HISTORY = "search_history.json", "train_history.json"


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
                             f"(it holds {shorten(', '.join(found), 200) if found else 'nothing'})")
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

    `target` is a zoo name (see `tfvnas.models.zoo.zoo_names()`; a zoo name wins
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
    formats = check_formats(formats)
    genotypes, search_history, train_history, out = _show_inputs(target, out_dir)
    files, skipped, text = [], {}, []
    for heading, genotype, source, prefix, where in genotypes:
        try:
            genotype = check_genotype(genotype)
        except ValueError as e:
            raise ValueError(f"Invalid {where}: {e}") from e
        header = f"== {heading} =="
        if source:
            header += (f"\n{source['paper']} ({source['year']}); {source['dataset']} test error "
                       f"{source['test_error_percent']}%, {source['params_millions']}M parameters")
        text.append(f"{header}\n{summary_text(genotype)}")
        files += draw_genotype(genotype, out, formats, engine=engine, prefix=prefix)

    if search_history is not None:
        history = read_json(search_history, "search history")
        for cell_type in CELL_TYPES:
            try:
                fig = log_alpha_figure(history, cell_type)
            except ValueError as e:
                raise ValueError(f"Invalid search history {search_history!r}: {e}") from e
            files += [write_figure(fig, os.path.join(out, f"log_alpha_{cell_type}.{fmt}"), fmt) for fmt in formats]
        last = history["epochs"][-1]
        parts = [f"{len(history['epochs'])} epochs"]
        if is_number(last.get("val_accuracy")):
            parts.append(f"val_accuracy {last['val_accuracy']:.4f}")
        if isinstance(last.get("active_ops"), Mapping):
            total = last.get("total_ops", "?")
            parts.append(", ".join(f"active {t} {last['active_ops'].get(t)}/{total}" for t in CELL_TYPES))
        text.append(f"== {_SEARCH_HISTORY} ==\n" + "; ".join(parts))

    if train_history is not None:
        layer_sparsity = _find_layer_sparsity(read_json(train_history, "training history"))
        if layer_sparsity is None:
            skipped["sparsity"] = f"{train_history!r} has no 'layer_sparsity' records"
        else:
            try:
                fig, rows = sparsity_figure(layer_sparsity), check_layer_sparsity(layer_sparsity)
            except ValueError as e:
                raise ValueError(f"Invalid train history {train_history!r}: {e}") from e
            files += [write_figure(fig, os.path.join(out, f"sparsity.{fmt}"), fmt) for fmt in formats]
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
