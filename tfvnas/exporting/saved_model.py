"""SavedModel: writing the serving signature, reading variables and logits back."""

import os

import keras
import numpy as np
import tensorflow as tf

from tfvnas.exporting.names import INPUT_NAME, SIGNATURE_KEY


def input_dtype_name(dtype):
    """`"uint8"` or `"float32"` for `dtype`; raises `ValueError` for any other dtype."""
    try:
        name = np.dtype(tf.as_dtype(dtype).as_numpy_dtype).name
    except TypeError:
        name = None
    if name not in ("uint8", "float32"):
        raise ValueError(
            f"`input_dtype` must be 'uint8' or 'float32'. Received: input_dtype={dtype!r}"
        )
    return name


def image_shape(model):
    """`(H, W, C)` of a functional model's one input."""
    shape = model.inputs[0].shape
    return tuple(int(d) for d in shape[1:])


def write_saved_model(model, path, *, input_dtype="float32"):
    """Writes a SavedModel with the `serving_default` signature.

    The signature takes `images` (`(None,) + model input shape`, dtype
    `input_dtype`), casts it to float32, runs the model in inference mode and
    returns `{"logits": ..., "probabilities": softmax(logits)}`.

    Args:
        model: A Keras 3 model (written with `keras.export.ExportArchive`) or
            a tf_keras model (written with `tf.saved_model.save` of a
            `tf.Module`; used for the quantization-aware model).
        path: Directory to write; must not exist yet.
        input_dtype: `"uint8"` or `"float32"`, the dtype of `images`.

    Raises:
        ValueError: If `input_dtype` is not uint8 or float32.
    """
    dtype = input_dtype_name(input_dtype)
    spec = tf.TensorSpec((None,) + image_shape(model), tf.as_dtype(dtype), name=INPUT_NAME)

    def serve(images):
        logits = model(tf.cast(images, tf.float32), training=False)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits)}

    path = os.fspath(path)
    if isinstance(model, keras.Model):
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(SIGNATURE_KEY, serve, input_signature=[spec])
        archive.write_out(path, verbose=False)
    else:
        module = tf.Module()
        # Track the variables, not the model: saving a tf_keras model object
        # also traces and stores every layer's call (seconds, unused here).
        module.model_variables = list(model.variables)
        module.serve = tf.function(serve, input_signature=[spec])
        tf.saved_model.save(module, path, signatures={SIGNATURE_KEY: module.serve})


def saved_model_weights(path):
    """Reads the variables of a SavedModel.

    Args:
        path: A SavedModel directory.

    Returns:
        A dict, in the SavedModel's variable order, from variable name
        (without the `:0` suffix; for a Keras 3 model the weight's `path`,
        e.g. `"stem_conv/kernel"`) to its value as a NumPy array. A repeated
        name gets a `#k` suffix.
    """
    loaded = load_saved_model(path)
    weights = {}
    for variable in loaded.variables:
        name = variable.name[:-2] if variable.name.endswith(":0") else variable.name
        key, k = name, 1
        while key in weights:
            key, k = f"{name}#{k}", k + 1
        weights[key] = variable.numpy()
    return weights


def saved_model_logits(path, x, batch_size):
    signature = load_saved_model(path).signatures[SIGNATURE_KEY]
    out = [
        signature(**{INPUT_NAME: tf.constant(x[i : i + batch_size])})["logits"].numpy()
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(out)


def load_saved_model(path):
    """`tf.saved_model.load(path)`, or one line naming the folder when it does not load.

    Raises:
        ValueError: the SavedModel is missing, truncated or damaged.
    """
    path = os.fspath(path)
    try:
        return tf.saved_model.load(path)
    except Exception as error:  # noqa: BLE001 - protobuf, OpError and OSError alike
        reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
        raise ValueError(f"The SavedModel {path!r} does not load (damaged or truncated?): {reason}") from error
