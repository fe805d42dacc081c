"""Counting the parameters of a model: dense, non-zero, per kernel layer.

Training reports these counts for the stripped network and the export report
repeats them, so they live here, apart from the export (which needs LiteRT).

"Parameters" are the trainable weights: kernels, biases, batch-norm scale
and shift. Batch-norm moving statistics are weights of the model but not
parameters; they are counted apart (`moving_statistics`).
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Kernel:
    """One kernel weight of a model: its layer, the layer's type, the weight's path, its values."""

    layer: str
    layer_type: str
    path: str
    values: np.ndarray


def kernels(model):
    """The kernel weights of `model` (`kernel`, `depthwise_kernel`), in layer order."""
    found = []
    for layer in model.layers:
        for weight in layer.weights:
            if weight.name.endswith("kernel"):
                found.append(Kernel(layer.name, type(layer).__name__, weight.path, np.asarray(weight.numpy())))
    return found


def sparsity(dense, nonzero):
    """The share of zeros, `1 - nonzero / dense` (0 for an empty count)."""
    return float(1.0 - nonzero / dense) if dense else 0.0


def count_parameters(model):
    """Counts the dense and non-zero parameters of a model.

    Args:
        model: A Keras 3 model.

    Returns:
        A dict: `dense` and `nonzero` over the trainable weights of the model
        (kernels, biases, BatchNormalization scale and shift);
        `moving_statistics`, the number of non-trainable values
        (BatchNormalization moving means and variances); `kernel_dense`,
        `kernel_nonzero` and `kernel_sparsity` over the kernels only; and
        `layers`, one dict per kernel-bearing layer with `name`, `type`,
        `weight`, `shape`, `dense`, `nonzero`, `sparsity`.
    """
    rows = []
    for kernel in kernels(model):
        dense = int(kernel.values.size)
        nonzero = int(np.count_nonzero(kernel.values))
        rows.append({
            "name": kernel.layer,
            "type": kernel.layer_type,
            "weight": kernel.path,
            "shape": list(kernel.values.shape),
            "dense": dense,
            "nonzero": nonzero,
            "sparsity": sparsity(dense, nonzero),
        })
    trainable = [np.asarray(w.numpy()) for w in model.trainable_weights]
    kernel_dense = sum(r["dense"] for r in rows)
    kernel_nonzero = sum(r["nonzero"] for r in rows)
    return {
        "dense": int(sum(w.size for w in trainable)),
        "nonzero": int(sum(np.count_nonzero(w) for w in trainable)),
        "moving_statistics": int(sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)),
        "kernel_dense": kernel_dense,
        "kernel_nonzero": kernel_nonzero,
        "kernel_sparsity": sparsity(kernel_dense, kernel_nonzero),
        "layers": rows,
    }
