"""Export of a stripped network: SavedModel, TFLite (float, sparse, int8, QAT), verification and a report.

One module per job:

- `names`: the serving contract and the file names of an export folder.
- `saved_model`: the SavedModel with the `serving_default` signature.
- `tflite`: conversion, running, latency, reading the weights back with LiteRT.
- `verify`: parity with the Keras model; every kernel's zeros read back.
- `qat`: pruning-preserving quantization-aware fine-tuning (tf_keras, tfmot).
- `report`: `report.json`, `report.md` and `model_card.md` (templates).
- `api`: `export()` from a training folder and `export_stripped()`.

**Input and output contract.** Every artefact has one signature,
`serving_default`, with one input `images`: shape `(None, H, W, C)`, the
dtype the dataset stores (uint8 raw pixels for MNIST/CIFAR, float32 for float
data), in the stored value range. The model casts to float32 and normalises
inside (its `Rescaling` layer), so callers feed raw pixels, never normalised
ones, and never quantization parameters, also for the int8 files (their first
ops are CAST and QUANTIZE). Outputs: `logits` and `probabilities` (softmax),
float32; int8 files give int8 outputs with a scale and zero point
(`tflite.run_tflite` dequantises them).

**Why `keras.export.ExportArchive`.** It is Keras 3's own SavedModel writer:
it tracks the model's variables under their Keras paths (so
`saved_model_weights()` can match them by name), and `add_endpoint` takes a
custom serving function with an explicit input signature: the uint8 input
named `images`, the cast, and the two named outputs. `model.export()` serves
the model's own call (its float32 input, one output named `output_0`). The
TFLite files are converted from that same SavedModel, so every artefact
shares one serving function.

**XNNPACK and sparse int8.** XNNPACK cannot delegate a sparse int8
FULLY_CONNECTED, and the interpreter then fails to load the file. When the
sparse int8 file does not load with XNNPACK, the int8 model is converted again
without sparse encoding, and the one that loads is shipped; the report says
which and why.

References:
    - Ferianc, Fan, Rodrigues. VINNAS: Variational Inference-based Neural
      Network Architecture Search. arXiv 2007.06103.
"""

from tfvnas.exporting.api import export, export_stripped, load_trained, read_report

__all__ = ["export", "export_stripped", "load_trained", "read_report"]
