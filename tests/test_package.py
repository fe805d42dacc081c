"""`import tfvnas`: light, and enough for `keras.models.load_model` to find every tfvnas class."""

import importlib
import os
import pkgutil
import subprocess
import sys

import numpy as np

import tfvnas

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "saved_models", "example-mnist-5k", "train", "model.keras")

LOAD = """
import sys
{first}
import numpy as np
heavy = [m for m in ("tensorflow", "ai_edge_litert", "tf_keras", "tensorflow_model_optimization", "keras_tuner")
         if m in sys.modules]
import keras
model = keras.models.load_model({path!r})
x = np.load({images!r})
print(type(model).__module__ + "." + type(model).__name__, repr(heavy), repr(np.asarray(model(x)).round(5).tolist()))
"""


def _load_in_fresh_process(first, images, tmp_path):
    out = subprocess.run([sys.executable, "-c", LOAD.format(first=first, path=EXAMPLE, images=str(images))],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    kind, heavy, logits = out.stdout.strip().splitlines()[-1].split(" ", 2)
    return kind, eval(heavy), np.array(eval(logits))  # noqa: S307 - our own repr of lists


def test_the_committed_example_model_loads_after_a_plain_import_tfvnas(tmp_path):
    images = tmp_path / "x.npy"
    np.save(images, np.random.default_rng(0).integers(0, 256, (3, 28, 28, 1)).astype("uint8"))
    # `import tfvnas` before Keras (the stand-ins are registered when Keras is imported) and after it.
    kind, heavy, before = _load_in_fresh_process("import tfvnas", images, tmp_path)
    assert kind == "tfvnas.models.network.Network" and heavy == []
    kind, _, after = _load_in_fresh_process("import keras, tfvnas", images, tmp_path)
    assert kind == "tfvnas.models.network.Network"
    # The same model as loading with its module imported by hand.
    _, _, by_hand = _load_in_fresh_process("import tfvnas.models.network", images, tmp_path)
    np.testing.assert_allclose(before, by_hand, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(after, by_hand, rtol=1e-5, atol=1e-5)
    assert np.isfinite(before).all() and before.shape == (3, 10)


def test_every_registered_class_has_a_stand_in():
    # Import every module of the package: the registry then holds every tfvnas class.
    for module in pkgutil.walk_packages(tfvnas.__path__, "tfvnas."):
        if module.name != "tfvnas.__main__":
            importlib.import_module(module.name)
    import keras

    registered = {name.split(">", 1)[1]: type(obj).__module__ if not isinstance(obj, type) else obj.__module__
                  for name, obj in keras.saving.get_custom_objects().items() if name.startswith("tfvnas>")}
    assert registered == tfvnas._SERIALIZABLE
