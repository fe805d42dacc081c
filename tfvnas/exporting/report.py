"""The export's reports: `report.json`, `report.md` and `model_card.md`.

The two Markdown files are Jinja2 templates (`templates/*.md.j2`) filled
from the report dict, so what they say and how it is laid out are read in
one place.
"""

import os

import keras
import numpy as np
import tensorflow as tf

from tfvnas import files
from tfvnas.exporting import names
from tfvnas.exporting.names import (
    CONFIG_JSON,
    INPUT_NAME,
    INT8_TFLITE,
    MODEL_CARD,
    QAT_TFLITE,
    REPORT_JSON,
    REPORT_MD,
    SAVED_MODEL_DIR,
)


def input_report(model, dataset):
    low, high = dataset.input_range
    first = next((l for l in model.layers if not isinstance(l, keras.layers.InputLayer)), None)
    normalised = isinstance(first, keras.layers.Rescaling)
    entry = {
        "name": INPUT_NAME,
        "shape": [None, *dataset.image_shape],
        "dtype": np.dtype(dataset.x_train.dtype).name,
        "range": [low, high],
        "normalised_inside_model": normalised,
        "contract": (
            f"raw pixels as stored ({np.dtype(dataset.x_train.dtype).name}, {low:g}..{high:g}); "
            + ("the model normalises them itself (first layer "
               f"{first.name!r}: x * scale + offset)" if normalised
               else "the model has no normalisation layer")
        ),
    }
    if normalised:
        entry["normalisation"] = {
            "layer": first.name,
            "scale": files.jsonable(first.get_config()["scale"]),
            "offset": files.jsonable(first.get_config()["offset"]),
        }
    return entry


def versions():
    versions = {"tensorflow": tf.__version__, "keras": keras.__version__}
    for module, key in (("tf_keras", "tf_keras"), ("tensorflow_model_optimization", "tfmot"),
                        ("ai_edge_litert", "ai_edge_litert")):
        try:
            from importlib import metadata

            versions[key] = metadata.version(module.replace("_", "-"))
        except Exception:  # noqa: BLE001 - a version string is informative only
            versions[key] = None
    return versions


def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("tfvnas.exporting", "templates"),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # Markdown, not HTML
    )
    env.filters.update(
        kb=lambda n: f"{n / 1024:.1f} KB",
        yes=lambda flag: "yes" if flag else "no",
        g=lambda v: f"{v:g}",
        sig3=lambda v: f"{v:.3g}",
        percent=lambda v: f"{v:.1%}",
        thousands=lambda n: f"{n:,}",
        shape=lambda s: str(tuple(s)).replace("None", "N"),
    )
    return env


def report_markdown(report):
    """`report.md`: every section of the report as Markdown tables."""
    artefacts = [SAVED_MODEL_DIR] + list(report["tflite"])
    return _environment().get_template("report.md.j2").render(report=report, artefacts=artefacts)


def _limits(report):
    """The model card's known limits, from what the report measured."""
    parity = report["parity"]
    limits = [
        "Accuracy is measured on the dataset's test split only "
        f"({parity['examples']} images).",
        "Sparse weight encoding shrinks the files; LiteRT densifies the weights when it "
        "loads them, so it does not make inference faster.",
        "The int8 files take raw pixels too: their first ops (CAST, QUANTIZE) run in float, "
        "which an integer-only accelerator cannot run.",
    ]
    limits.extend(_shrink_limits(report))
    for key in ("int8", "qat"):
        entry = report.get(key)
        if entry and entry["encoding"] == "dense":
            sparse = entry["attempts"]["sparse"]
            why = ("its sparse encoding computed other logits than the dense one"
                   if sparse["loads_with_xnnpack"] and not sparse.get("matches_dense", True)
                   else "a sparse int8 model does not load with the default XNNPACK delegate")
            limits.append(f"{INT8_TFLITE if key == 'int8' else QAT_TFLITE} uses dense weight encoding: {why}.")
    if report.get("qat"):
        lost = sorted({t for key in ("zeros_by_type", "keras_zeros_by_type")
                       for t, e in report["qat"][key].items() if not e["preserved"]})
        if lost:
            limits.append(
                f"Quantization-aware fine-tuning did not keep the zeros of {', '.join(lost)} "
                "kernels.")
        moved = sorted(t for t, e in report["qat"]["zeros_moved_by_scheme"].items()
                       if not e["kept_by_scheme"])
        if moved:
            limits.append(
                "TF Model Optimization's prune-preserve scheme alone would have lost zeros of "
                f"{', '.join(moved)} kernels (it masks neither DepthwiseConv2D kernels nor "
                "kernels feeding a Concatenate or followed directly by ReLU); the export "
                "re-zeroes them after every fine-tuning step.")
    return limits


def _shrink_limits(report):
    """What dead-channel elimination gained, measured, when the report compares it."""
    rows = {(r["model"], r["file"]): r for r in report["comparison"]["rows"]}
    shrunk, unshrunk = rows.get(("shrunk", names.FLOAT_DENSE_TFLITE)), rows.get(("unshrunk", names.FLOAT_DENSE_TFLITE))
    if not report["shrink"]["enabled"]:
        return ["Dead channels were not removed (`--no-shrink`): the model computes every zero channel."]
    if shrunk is None or unshrunk is None:
        return []
    threads = str(report["comparison"]["latency"]["threads"][0])
    before, after = unshrunk["latency"][threads]["median_ms"], shrunk["latency"][threads]["median_ms"]
    return [
        f"Removing dead channels cut the MACs per image {unshrunk['macs'] / shrunk['macs']:.2f}x "
        f"and the float latency ({threads} thread{'s' if threads != '1' else ''}, median) "
        f"{before / after:.2f}x ({before:.3f} ms to {after:.3f} ms). Channels that some layer still "
        "reads stay, and LiteRT runs the remaining zeros of the kernels as dense weights.",
    ]


def model_card(report):
    """`model_card.md`: what the model takes and gives, how well it does, how to run it, its limits."""
    return _environment().get_template("model_card.md.j2").render(
        report=report, limits=_limits(report), names=names)


def write_reports(report, folder, config):
    """Writes `report.json`, `report.md`, `model_card.md` and `export_config.json` into `folder`."""
    files.write_json(os.path.join(folder, REPORT_JSON), report, indent=2)
    files.atomic_write(os.path.join(folder, REPORT_MD), report_markdown(report))
    files.atomic_write(os.path.join(folder, MODEL_CARD), model_card(report))
    config.save(os.path.join(folder, CONFIG_JSON))
