"""MobileNetV2's inverted residual, the operation registered as a user's would be (`mbconv_3x3_e3`).

Its layers against standard Keras layers are in tests/layers/test_ops.py
(`CHAIN_CASES`); here: its config, its variational weights, a network of it
stripped, shrunk and counted, and (slow) a search, a training and an
export with it, the TFLite file checked against the trained network.
"""

import json
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.keras_config import assert_config_round_trip
from tfvnas.compress import macs as macs_lib
from tfvnas.compress import shrinking
from tfvnas.compress import strip as strip_lib
from tfvnas.layers import registry as op_registry
from tfvnas.layers import variational
from tfvnas.layers.inverted_residual import InvertedResidual
from tfvnas.models import genotype as genotype_lib
from tfvnas.models import network as network_lib

MB = "mbconv_3x3_e3"
# Inverted residuals on stride-1 and stride-2 edges of both cells.
GENOTYPE = genotype_lib.Genotype(
    normal=[[(MB, 0), ("skip_connect", 1)], [(MB, 2), ("max_pool_3x3", 0)]],
    normal_concat=[2, 3],
    reduce=[[(MB, 0), ("sep_conv_3x3", 1)], [(MB, 2), ("skip_connect", 0)]],
    reduce_concat=[2, 3],
)


def test_its_config_rebuilds_it_through_json():
    layer = InvertedResidual(4, 2, expansion=6, kernel_size=5, weight_vd=True, affine=False, seed=3, name="ir")
    config = json.loads(json.dumps(layer.get_config()))
    assert {k: config[k] for k in ("channels", "strides", "expansion", "kernel_size", "weight_vd", "affine", "seed")} \
        == {"channels": 4, "strides": 2, "expansion": 6, "kernel_size": 5, "weight_vd": True, "affine": False,
            "seed": 3}
    again = assert_config_round_trip(layer)
    x = tf.random.stateless_normal((2, 6, 6, 4), seed=[1, 2])
    assert tuple(again(x).shape) == (2, 3, 3, 4)
    # Keras' own serialisation finds it by its registered name.
    copy = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(copy) is InvertedResidual and copy.get_config() == layer.get_config()
    # The registry's check (what `register` runs) passes at both strides.
    for strides in (1, 2):
        op_registry.check_op_layer(MB, op_registry.OPS[MB], strides)


def test_its_arguments_are_checked():
    with pytest.raises(ValueError, match=re.escape("`expansion` must be a positive int. Received: expansion=0")):
        InvertedResidual(4, 1, expansion=0)
    with pytest.raises(ValueError, match=re.escape("`strides` must be 1 or 2. Received: strides=3")):
        InvertedResidual(4, 3)


def test_weight_vd_makes_every_convolution_variational():
    layer = op_registry.make_op(MB, 4, 2, weight_vd=True, seed=10)
    convs = [s for s in layer.steps if isinstance(s, variational.VariationalLayer)]
    assert [type(s).__name__ for s in convs] == [
        "VariationalConv2D", "VariationalDepthwiseConv2D", "VariationalConv2D"]
    assert [s.seed for s in convs] == [11, 12, 13]
    assert (convs[0].filters, convs[1].strides, convs[2].filters) == (12, 2, 4)
    layer(tf.zeros((1, 6, 6, 4)), training=True)
    assert len(layer.losses) == 3  # each adds its KL


def _scramble(model, seed=0):
    rng = np.random.default_rng(seed)
    for v in model.variables:
        if v.path.endswith("log_sigma2"):
            v.assign(rng.normal(-3.0, 4.0, v.shape).astype("float32"))
        elif v.path.endswith("moving_variance"):
            v.assign(rng.uniform(0.5, 2.0, v.shape).astype("float32"))
        elif v.path.endswith(("moving_mean", "gamma", "beta")):
            v.assign(rng.normal(0.3, 0.3, v.shape).astype("float32"))


def _network():
    net = network_lib.Network(10, GENOTYPE, layers=3, channels=4, normalisation=((33.0,), (78.0,)))
    net.build((None, 12, 12, 1))
    _scramble(net)
    return net


def _images(n=4):
    return np.random.default_rng(1).uniform(0, 255, (n, 12, 12, 1)).astype("float32")


def _first_inverted_residual(net):
    return net.cells[0].edge_layers[0]


def test_a_network_of_it_strips_to_standard_layers_and_counts_its_macs():
    net = _network()
    x = _images()
    stripped = strip_lib.strip(net, shrink=False)
    strip_lib.check_standard_layers(stripped)
    np.testing.assert_allclose(stripped(x).numpy(), net(x, training=False).numpy(), rtol=1e-4, atol=1e-4)
    relu6 = [l for l in stripped.layers if isinstance(l, keras.layers.ReLU) and l.max_value == 6.0]
    assert len(relu6) == 2 * 2 * 3  # two per inverted residual, two of them in each of the 3 cells
    # The first edge of cell 0 (12x12, 4 channels): expansion 1x1 to 12 channels, depthwise 3x3, projection.
    rows = {r["name"]: r["macs"] for r in macs_lib.count_macs(stripped)["layers"]}
    prefix = f"cell_0_n0_in0_{MB}"
    assert rows[f"{prefix}_0"] == 12 * 12 * 4 * 12
    assert rows[f"{prefix}_3"] == 12 * 12 * 3 * 3 * 12
    assert rows[f"{prefix}_6"] == 12 * 12 * 12 * 4


def test_dead_channel_elimination_removes_a_dead_hidden_channel_through_relu6():
    net = _network()
    op = _first_inverted_residual(net)
    expand, depthwise = op.steps[0], op.steps[3]
    # Hidden channel 5 dies: its expansion column and its depthwise kernel are pruned.
    for layer, index in ((expand, (..., 5)), (depthwise, (..., 5, 0))):
        log_sigma2 = layer.log_sigma2.numpy()
        log_sigma2[index] = 30.0
        layer.log_sigma2.assign(log_sigma2)
    unshrunk = strip_lib.strip(net, shrink=False)
    shrunk = shrinking.shrink(unshrunk)
    prefix = f"cell_0_n0_in0_{MB}"
    widths = {l.name: int(l.output.shape[-1]) for l in shrunk.layers}
    assert widths[f"{prefix}_0"] == widths[f"{prefix}_3"] == 11  # 12 hidden channels, one gone
    assert widths[f"{prefix}_2"] == 11  # the ReLU6 between them too
    x = _images()
    np.testing.assert_allclose(shrunk(x).numpy(), net(x, training=False).numpy(), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------
# Search, train, export (smoke preset)
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_search_train_and_export_with_the_inverted_residual(tmp_path):
    import tfvnas
    from tfvnas import data as data_lib
    from tfvnas.exporting import tflite
    from tfvnas.pictures.plots import show

    dataset = data_lib.load("mnist-5k")
    # `none` beside it: the derivation leaves `none` out, so every edge of the cell is an inverted residual.
    # One node and one epoch: the op's path through every step, not a search's quality.
    found = tfvnas.search(dataset, preset="smoke", config={"ops": ["none", MB], "nodes": 1, "epochs": 1},
                          out_dir=tmp_path / "search", verbose=0)
    assert found.model.normal_gates.shape == (2, 2)
    assert not any(edge._fusable() for cell in found.model.cells for edge in cell.edge_layers)
    assert set(found.genotype.op_histogram()) == {MB}
    drawn = show(tmp_path / "search", formats=["svg"], verbose=False)
    assert f"{MB}" in drawn["summary"] and any(f.endswith("normal.svg") for f in drawn["files"])

    trained = tfvnas.train(tmp_path / "search", dataset, preset="smoke", config={"epochs": 1},
                           out_dir=tmp_path / "train", verbose=0)
    assert trained.genotype == found.genotype
    assert trained.history[-1]["weight_sparsity"] is not None
    report = tfvnas.export(tmp_path / "train", tmp_path / "export")
    assert report["parity"]["model_float.tflite"]["top1_agreement"] == 1.0
    # The TFLite file against the trained network itself (not its strip).
    x = dataset.x_test[:64]
    expected = trained.model(x.astype("float32"), training=False).numpy()
    got = tflite.run_tflite(str(tmp_path / "export" / "model_float.tflite"), x)["logits"]
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)
    assert (got.argmax(1) == expected.argmax(1)).all()
