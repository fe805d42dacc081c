"""TensorBoard summaries of a search or a training run, written once per epoch.

Scalars: every numeric field of the epoch record (losses, accuracies, KL
terms, beta, learning rate, weight sparsity; `active_ops/normal` and
`active_ops/reduce` for a search). A search also writes a histogram of every
cell type's `log_alpha` (the gates not yet pruned) and a picture of the cell
derived so far (`tfvnas.pictures.cell_drawing`), so the cell can be watched as it forms.

    tfvnas search --preset quick --out runs/q --tensorboard runs/q/tb
    tensorboard --logdir runs/q/tb
"""

import math
import os
import tempfile

import numpy as np
import tensorflow as tf

from tfvnas import files


class EpochSummaries:
    """Writes one step of summaries per epoch into `log_dir`.

    Args:
        log_dir: the TensorBoard log folder (created if missing).
    """

    def __init__(self, log_dir):
        self.log_dir = os.fspath(log_dir)
        with self.writing():
            self.writer = tf.summary.create_file_writer(self.log_dir)

    def writing(self):
        """A failed write (a full disk) as one `tfvnas.files.WriteError` naming the log folder."""
        return files.writing(self.log_dir, "TensorBoard summaries")

    def scalars(self, record, step):
        """Every finite number in `record` (and one level of nested dicts)."""
        with self.writing():
            with self.writer.as_default(step=step):
                for key, value in sorted(_scalars(record)):
                    tf.summary.scalar(key, value)
            self.writer.flush()

    def histogram(self, name, values, step):
        values = np.asarray(values, np.float64)
        values = values[np.isfinite(values)]
        if values.size:
            with self.writing():
                with self.writer.as_default(step=step):
                    tf.summary.histogram(name, values)
                self.writer.flush()

    def genotype_images(self, genotype, step, prefix="cell"):
        """A PNG drawing of each cell of `genotype` (`tfvnas.pictures.cell_drawing.cell_png`, matplotlib)."""
        from tfvnas.pictures import cell_drawing

        with tempfile.TemporaryDirectory() as tmp:
            for cell_type in ("normal", "reduce"):
                path = cell_drawing.cell_png(genotype, cell_type, os.path.join(tmp, f"{cell_type}.png"))
                image = tf.io.decode_png(tf.io.read_file(path), channels=3)
                with self.writing(), self.writer.as_default(step=step):
                    tf.summary.image(f"{prefix}/{cell_type}", image[None])
        with self.writing():
            self.writer.flush()

    def close(self):
        self.writer.close()


def _scalars(record):
    for key, value in record.items():
        if isinstance(value, dict):
            for sub, v in value.items():
                if _is_number(v):
                    yield f"{key}/{sub}", float(v)
        elif _is_number(value):
            yield key, float(value)


def _is_number(value):
    return (
        isinstance(value, (int, float, np.integer, np.floating))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )
