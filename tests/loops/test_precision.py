"""Mixed precision (`precision`): bfloat16 steps track float32, float16 scales its loss, export stays float32.

CPUs compute bfloat16 (slowly): what is tested here is what the numbers do;
the speed-up is a GPU's (docs/BENCHMARKS.md).
"""

import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvnas import config as config_lib
from tfvnas import data as data_lib
from tfvnas import precision
from tfvnas.compress import strip as strip_lib
from tfvnas.layers import gates as gates_lib
from tfvnas.layers import variational
from tfvnas.loops import optim
from tfvnas.loops import searching as search_lib
from tfvnas.loops import training as train_lib
from tfvnas.models import zoo


@pytest.fixture(scope="module")
def mnist():
    return data_lib.load("mnist-5k", seed=0)


def test_policy_scope_sets_and_restores_keras_policy():
    before = keras.config.dtype_policy().name
    with precision.policy_scope("mixed_bfloat16"):
        layer = keras.layers.Dense(2)
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == before
    assert layer.dtype_policy.name == "mixed_bfloat16"
    with pytest.raises(ValueError, match=re.escape(
            "`precision` must be one of 'float32', 'mixed_bfloat16', 'mixed_float16'. Received: precision='half'")):
        with precision.policy_scope("half"):
            pass


def test_precision_is_a_checked_config_field():
    for cls in (config_lib.SearchConfig, config_lib.TrainConfig):
        assert cls().precision == "float32" and cls().jit_compile is False
        with pytest.raises(ValueError, match=re.escape("`precision` must be one of 'float32', 'mixed_bfloat16', "
                                                       "'mixed_float16'. Received: precision='float16'")):
            cls(precision="float16")


def _steps(loop, count):
    loop.model.kl_scale.assign(1e-3)
    batches = iter(loop.epoch_data(0))
    return [{k: float(v) for k, v in loop.train_step(next(batches)).items()} for _ in range(count)]


@pytest.mark.slow
def test_bfloat16_search_steps_track_float32(mnist):
    runs = {}
    for name in ("float32", "mixed_bfloat16"):
        cfg = config_lib.preset("smoke").replace(layers=1, nodes=1, weight_vd=True, precision=name)
        searcher = search_lib.Searcher(cfg, mnist, verbose=0)
        assert keras.config.dtype_policy().name == "float32"  # no policy leaks out of the build
        runs[name] = (searcher, _steps(searcher, 3))
    searcher, steps = runs["mixed_bfloat16"]
    model = searcher.model
    # float32: the gates, every variational layer's theta and log_sigma2, the KL and the loss.
    assert all(g.dtype_policy.name == "float32" for g in model.gates.values())
    assert all(isinstance(g, gates_lib.GaussianGates) for g in model.gates.values())
    assert {v.dtype for v in model.variables if v.dtype != "int64"} == {"float32"}
    assert {l.dtype_policy.name for l in variational.variational_layers(model)} == {"mixed_bfloat16"}
    for a, b in zip(runs["float32"][1], steps):
        assert {k: type(v) for k, v in b.items()} == {k: float for k in a}
        # bfloat16 keeps 8 bits of mantissa: the loss within 1%, the KL (float32 throughout) within 1e-4.
        for key in ("loss", "arch_loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-2), key
        for key in ("kl", "arch_kl"):
            assert b[key] == pytest.approx(a[key], rel=1e-4), key


@pytest.mark.slow
def test_bfloat16_training_learns_and_exports_a_float32_model(mnist, tmp_path):
    from tfvnas.exporting import tflite

    cfg = config_lib.TRAIN_PRESETS["smoke"].replace(layers=2, epochs=3, limit=512, kl_warmup=0.0,
                                                   precision="mixed_bfloat16")
    trainer = train_lib.Trainer(zoo.load_genotype("darts_v2"), cfg, mnist, verbose=0)
    history = trainer.train()
    assert history[-1]["train_loss"] < 0.8 * history[0]["train_loss"]
    assert history[-1]["val_accuracy"] > 0.2  # ten classes: chance is 0.1 (0.23 here)
    network = trainer.model
    assert network.compute_dtype == "bfloat16"
    stripped = strip_lib.strip(network, shrink=False)
    assert {l.dtype_policy.name for l in stripped.layers if hasattr(l, "dtype_policy")} == {"float32"}
    assert {w.dtype for w in stripped.weights} == {"float32"}
    x = mnist.x_test[:64].astype("float32")
    y = stripped(x).numpy()
    assert y.dtype == np.float32
    # The stripped float32 network computes what the bfloat16 one does, to bfloat16's precision.
    reference = tf.cast(network(x, training=False), tf.float32).numpy()
    assert np.mean(np.argmax(y, -1) == np.argmax(reference, -1)) > 0.9
    path = os.path.join(tmp_path, "model.tflite")
    with open(path, "wb") as f:
        f.write(tflite.tflite_convert(stripped, sparse=False))
    io = tflite.tflite_io(path)
    assert io["input"]["dtype"] == "float32"
    assert {o["dtype"] for o in io["outputs"].values()} == {"float32"}
    from ai_edge_litert.interpreter import Interpreter

    types = {np.dtype(t["dtype"]).name for t in Interpreter(model_path=path).get_tensor_details()}
    assert not types & {"bfloat16", "float16"}, types


def test_dynamic_loss_scale_skips_non_finite_updates_and_follows_keras_rule():
    variables = [keras.Variable(np.ones((2, 3), "float32")), keras.Variable(np.zeros(4, "float32"))]
    opt = optim.SGD(0.1, momentum=0.9)
    opt.build(variables)
    scale = optim.DynamicLossScale(initial_scale=8.0, growth_steps=2)
    good = [tf.ones((2, 3)), tf.ones(4)]
    bad = [tf.ones((2, 3)), tf.constant([1.0, np.inf, 0.0, 0.0])]
    before = [v.numpy() for v in variables]
    finite = opt.apply(bad, skip_nonfinite=True)
    scale.update(finite)
    # Skipped: weights, momentum and step counter as they were; the scale halves.
    assert not bool(finite)
    for v, b in zip(variables, before):
        np.testing.assert_array_equal(v.numpy(), b)
    assert int(opt.iterations.numpy()) == 0 and all(not m.numpy().any() for m in opt.momentums)
    assert float(scale.scale.numpy()) == 4.0
    for expected in (4.0, 8.0, 8.0, 16.0):  # doubles after every 2 finite updates
        scale.update(opt.apply(good, skip_nonfinite=True))
        assert float(scale.scale.numpy()) == expected
    assert int(opt.iterations.numpy()) == 4
    np.testing.assert_allclose(variables[1].numpy(), -0.1 * (1 + 1.9 + 2.71 + 3.439), rtol=1e-5)


@pytest.mark.slow
def test_float16_training_scales_its_loss_and_checkpoints_the_scale(mnist, tmp_path):
    cfg = config_lib.TRAIN_PRESETS["smoke"].replace(layers=2, precision="mixed_float16")
    trainer = train_lib.Trainer(zoo.load_genotype("darts_v2"), cfg, mnist, verbose=0)
    assert isinstance(trainer.loss_scale, optim.DynamicLossScale)
    steps = _steps(trainer, 6)
    assert all(np.isfinite(s["loss"]) for s in steps)  # the loss is float32, unscaled
    # 2**15 overflows float16 gradients here: each such update is skipped and
    # halves the scale, until one fits; the updates after it are applied.
    applied = int(trainer.optimizer.iterations.numpy())
    assert 1 <= applied < 6
    assert float(trainer.loss_scale.scale.numpy()) == 2.0**15 / 2.0 ** (6 - applied)
    assert 1 <= int(trainer.loss_scale.good_steps.numpy()) <= applied
    trainer.checkpoint_dir = str(tmp_path)
    path = trainer.save_checkpoint()
    assert any(name.startswith("loss_scale/") for name, _ in tf.train.list_variables(path))
