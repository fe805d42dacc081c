"""Verification of an export: parity with the Keras model, and every kernel's zeros read back.

What is verified:

- **SavedModel**: each kernel variable is found by its Keras path
  (`"stem_conv/kernel"`), or else the next unused variable of the same
  shape in order; its zero positions are compared element by element with
  the model kernel's, and `values_equal` says whether the values are
  bit-identical.
- **.tflite**: every constant tensor is read back through LiteRT
  (`tflite.tflite_weights`, sparse ones densified by the runtime); the model
  kernel is put into the TFLite layout and compared position by position
  with the tensor of that shape that matches it.
- **QAT**: the float kernels of the quantization-aware tf_keras model.
"""

import re

import numpy as np
import tensorflow as tf

from tfvnas.compress import counting
from tfvnas.exporting import qat
from tfvnas.exporting.saved_model import saved_model_weights
from tfvnas.exporting.tflite import tflite_weights

# Keras kernel -> TFLite constant layout. TFLite stores Conv2D as OHWI,
# DepthwiseConv2D as 1HW(C*M), FULLY_CONNECTED as (out, in).
_TFLITE_LAYOUTS = {
    "Conv2D": lambda k: np.transpose(k, (3, 0, 1, 2)),
    "DepthwiseConv2D": lambda k: k.reshape((1,) + k.shape[:2] + (-1,)),
    "Dense": lambda k: np.transpose(k),
}


def keras_logits(model, x, batch_size):
    predict = tf.function(lambda images: model(tf.cast(images, tf.float32), training=False))
    return np.concatenate([
        np.asarray(predict(tf.constant(x[i : i + batch_size])))
        for i in range(0, len(x), batch_size)
    ])


def parity(reference, logits, labels):
    return {
        "max_abs_diff": float(np.max(np.abs(reference - logits))),
        "top1_agreement": float(np.mean(reference.argmax(1) == logits.argmax(1))),
        "accuracy": float(np.mean(logits.argmax(1) == labels)),
    }




def _mask_counts(expected, found):
    """(lost, new) zeros of `found` against `expected`, same shape."""
    expected_zero = expected == 0
    found_zero = found == 0
    return int(np.sum(expected_zero & ~found_zero)), int(np.sum(~expected_zero & found_zero))


def _summarise_pattern(rows):
    by_type = {}
    for row in rows:
        entry = by_type.setdefault(row["type"], {
            "kernels": 0, "zeros_expected": 0, "lost_zeros": 0, "new_zeros": 0,
            "missing": 0,
        })
        entry["kernels"] += 1
        entry["zeros_expected"] += row["zeros_expected"]
        entry["lost_zeros"] += row["lost_zeros"] or 0
        entry["new_zeros"] += row["new_zeros"] or 0
        entry["missing"] += row["status"] == "missing"
    for entry in by_type.values():
        entry["preserved"] = entry["lost_zeros"] == 0 and entry["missing"] == 0
    lost = sum(e["lost_zeros"] for e in by_type.values())
    new = sum(e["new_zeros"] for e in by_type.values())
    missing = sum(e["missing"] for e in by_type.values())
    return {
        "preserved": lost == 0 and missing == 0,
        "identical_masks": lost == 0 and new == 0 and missing == 0,
        "mismatches": lost + new,
        "lost_zeros": lost,
        "new_zeros": new,
        "missing_kernels": missing,
        "by_type": by_type,
        "kernels": rows,
    }


def zero_pattern(model, *, saved_model=None, tflite=None):
    """Compares the zero mask of every kernel of `model` with an artefact's.

    What is verified:

    - **SavedModel** (`saved_model`: a directory): each kernel variable is
      found by its Keras path (`"stem_conv/kernel"`), or else the next unused
      variable of the same shape in order; its zero positions are compared
      element by element with the model kernel's, and `values_equal` says
      whether the values are bit-identical.
    - **.tflite** (`tflite`: a path): every constant tensor is read back and
      densified (`tflite_weights`); the model kernel is put into the TFLite
      layout (Conv2D `HWIO -> OHWI`, DepthwiseConv2D `HWCM -> 1HW(C*M)`,
      Dense `(in, out) -> (out, in)`) and compared position by position
      with the tensor of that shape that matches it. Matching: tensors whose
      name holds the layer's scope (`<layer>/`, `<layer>_N/`, `quant_<layer>/`)
      first, then the fewest mask differences, each tensor used once. Only
      zero *positions* are compared, not values: the converter folds
      BatchNormalization into the preceding convolution (scaling each
      output channel, which keeps zeros) and quantization rounds. A kernel
      of only zeros that the converter folded away counts as `folded`.

    Per kernel: `zeros_expected` (zeros in the model), `lost_zeros` (zero in
    the model, non-zero in the artefact), `new_zeros` (non-zero in the model,
    zero in the artefact, e.g. int8 rounding). The artefact *preserves* the
    zeros when every kernel is found and no zero is lost.

    Args:
        model: The stripped Keras 3 model (the reference masks).
        saved_model: A SavedModel directory, or None.
        tflite: A `.tflite` path, or None. Exactly one of the two.

    Returns:
        A dict: `preserved`, `identical_masks`, `mismatches` (lost + new),
        `lost_zeros`, `new_zeros`, `missing_kernels`, `by_type` (the same
        totals per layer type) and `kernels` (one row per kernel).

    Raises:
        ValueError: If not exactly one artefact is given.
    """
    if (saved_model is None) == (tflite is None):
        raise ValueError(
            "Pass exactly one of `saved_model` and `tflite`. "
            f"Received: saved_model={saved_model!r}, tflite={tflite!r}"
        )
    kernels = counting.kernels(model)
    if saved_model is not None:
        return _summarise_pattern(_saved_model_rows(kernels, saved_weights=saved_model_weights(saved_model)))
    return _summarise_pattern(_tflite_rows(kernels, tflite_weights(tflite)))


def _row(kernel, status, artefact_name, expected, found):
    lost, new = _mask_counts(expected, found) if found is not None else (None, None)
    return {
        "layer": kernel.layer,
        "type": kernel.layer_type,
        "shape": list(kernel.values.shape),
        "artefact_tensor": artefact_name,
        "status": status,
        "zeros_expected": int(np.sum(kernel.values == 0)),
        "lost_zeros": lost if found is not None else (
            0 if status == "folded" else int(np.sum(kernel.values == 0))),
        "new_zeros": new if found is not None else 0,
    }


def _saved_model_rows(kernels, saved_weights):
    used = set()
    rows = []
    for kernel in kernels:
        name = kernel.path
        value = saved_weights.get(name)
        status = "name"
        if value is None or value.shape != kernel.values.shape or name in used:
            name = next(
                (n for n, v in saved_weights.items()
                 if n not in used and v.shape == kernel.values.shape), None)
            value = saved_weights.get(name) if name is not None else None
            status = "order"
        if value is None:
            rows.append(_row(kernel, "missing", None, kernel.values, None))
            continue
        used.add(name)
        row = _row(kernel, status, name, kernel.values, value)
        row["values_equal"] = bool(np.array_equal(kernel.values, value))
        rows.append(row)
    return rows


def _name_hint(layer, tensor_name):
    pattern = rf"(^|[/;])(quant_)?{re.escape(layer)}(_\d+)?/"
    return re.search(pattern, tensor_name) is not None


def _tflite_rows(kernels, constants):
    layouts = [
        (i, _TFLITE_LAYOUTS[k.layer_type](k.values)) for i, k in enumerate(kernels)
        if k.layer_type in _TFLITE_LAYOUTS
    ]
    candidates = [c for c in constants if np.issubdtype(c.values.dtype, np.floating)]
    scored = []
    for i, expected in layouts:
        for j, constant in enumerate(candidates):
            if constant.shape != expected.shape:
                continue
            lost, new = _mask_counts(expected, constant.values)
            hint = _name_hint(kernels[i].layer, constant.name)
            scored.append(((not hint, lost + new), i, j))
    scored.sort(key=lambda s: s[0])
    match, taken = {}, set()
    for _, i, j in scored:
        if i not in match and j not in taken:
            match[i] = j
            taken.add(j)
    rows = []
    for i, expected in layouts:
        kernel = kernels[i]
        if i in match:
            constant = candidates[match[i]]
            rows.append(_row(kernel, "found", constant.name, expected, constant.values))
        else:
            status = "folded" if not np.any(kernel.values) else "missing"
            rows.append(_row(kernel, status, None, expected, None))
    return rows


def qat_zero_pattern(model, qat_model):
    """Compares the stripped model's kernel zeros with a QAT model's kernels.

    Reads the float kernel variables of the quantization-aware tf_keras model,
    matched by layer name, and compares zero positions as `zero_pattern`
    does. This sees zeros lost in fine-tuning even when int8 rounding hides
    them in the converted file.

    Args:
        model: The stripped Keras 3 model.
        qat_model: Its quantization-aware tf_keras model.

    Returns:
        A dict like `zero_pattern`'s.
    """
    rows = []
    for kernel, variable in qat.qat_kernel_variables(model, qat_model):
        if variable is None:
            rows.append(_row(kernel, "missing", None, kernel.values, None))
        else:
            rows.append(_row(kernel, "found", variable.name, kernel.values, variable.numpy()))
    return _summarise_pattern(rows)
