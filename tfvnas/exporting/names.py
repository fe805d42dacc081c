"""The serving contract and the file names of an export folder (constants only)."""

SIGNATURE_KEY = "serving_default"
INPUT_NAME = "images"
OUTPUT_NAMES = ("logits", "probabilities")
NORMALISATION_LAYER = "normalise"

SAVED_MODEL_DIR = "saved_model"
FLOAT_TFLITE = "model_float.tflite"
FLOAT_DENSE_TFLITE = "model_float_dense.tflite"
INT8_TFLITE = "model_int8.tflite"
QAT_TFLITE = "model_qat_int8.tflite"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
MODEL_CARD = "model_card.md"
CONFIG_JSON = "export_config.json"

# What `tfvnas export` reads from a training folder.
TRAIN_MODEL = "model.keras"
TRAIN_HISTORY = "train_history.json"
