"""The discrete network built from a genotype, and the strip tests that read its module network.

The strip's other tests are in tests/compress/test_strip.py.
"""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.keras_config import assert_config_round_trip
from tests.helpers.networks import (
    EVERY_OP,
    digits,
    network_images,
    scramble,
    small_network,
)
from tfvnas.compress import strip as strip_lib
from tfvnas.layers import variational
from tfvnas.models import genotype as genotype_lib
from tfvnas.models import network as network_lib
from tfvnas.models import zoo


@pytest.fixture(scope="module")
def sparse_net():
    net = small_network(auxiliary=True, drop_path=0.3)
    scramble(net)
    return net


@pytest.fixture(scope="module")
def images():
    return network_images()


def test_network_output_and_aux_shapes(sparse_net, images):
    assert sparse_net(images).shape == (5, 10)
    logits, aux = sparse_net(images, training=True, return_aux=True)
    assert logits.shape == (5, 10) and aux.shape == (5, 10)
    plain = small_network(zoo.load_genotype("darts_v2"), weight_vd=False)
    logits, aux = plain(images, return_aux=True)
    assert aux is None and logits.shape == (5, 10)
    assert not variational.variational_layers(plain)


def test_network_cells_follow_the_genotype(sparse_net):
    cells = sparse_net.cells
    assert [c.plan.cell_type for c in cells] == ["normal", "reduce", "reduce"]
    assert cells[0].edges == network_lib.genotype_edges(EVERY_OP, "normal")
    assert [e[2][0] for e in cells[1].edges] == [op for node in EVERY_OP.reduce for op, _ in node]
    assert cells[0].concat == [2, 3]


def test_network_config_round_trips_through_json(sparse_net, images):
    assert_config_round_trip(sparse_net, images)


def test_network_rejects_unknown_op():
    bad = genotype_lib.Genotype.from_dict({**EVERY_OP.to_dict(), "normal": [[["conv_9x9", 0]], [["skip_connect", 1]]]})
    with pytest.raises(ValueError, match=re.escape("`normal[0][0]` op must be one of the known ops")):
        small_network(bad)


def test_network_rejects_bad_arguments():
    with pytest.raises(ValueError, match=re.escape("`drop_path` must be in [0, 1). Received: drop_path=1.0")):
        network_lib.Network(10, EVERY_OP, drop_path=1.0)
    with pytest.raises(ValueError, match=re.escape(
        "`genotype` must be a tfvnas.Genotype or its dict. Received: genotype of type str"
    )):
        network_lib.Network(10, "darts_v2")


def test_drop_path_only_in_training_and_ramped(sparse_net, images):
    inference = sparse_net(images).numpy()
    np.testing.assert_array_equal(sparse_net(images, training=False).numpy(), inference)
    sparse_net.drop_path_progress.assign(0.0)
    # Progress 0 means rate 0: training differs from inference only by the
    # weight noise, not by dropped paths; progress 1 drops paths too.
    assert float(sparse_net.drop_path * sparse_net.drop_path_progress) == 0.0
    sparse_net.drop_path_progress.assign(1.0)
    a = sparse_net(images, training=True).numpy()
    b = sparse_net(images, training=True).numpy()
    assert not np.array_equal(a, b)
    sparse_net.drop_path_progress.assign(0.0)


@pytest.mark.parametrize("shrink", [True, False])
def test_strip_matches_inference_and_uses_standard_layers(sparse_net, images, shrink):
    stripped = strip_lib.strip(sparse_net, shrink=shrink)
    strip_lib.check_standard_layers(stripped)
    assert stripped.input.name == "images" or stripped.inputs[0].name == "images"
    kinds = {type(l).__name__ for l in stripped.layers}
    assert {"Conv2D", "DepthwiseConv2D", "BatchNormalization", "Dense", "Rescaling", "Add",
            "Concatenate", "MaxPooling2D", "AveragePooling2D", "ZeroPadding2D", "Cropping2D"} <= kinds
    expected = sparse_net(images, training=False).numpy()
    np.testing.assert_allclose(stripped(images).numpy(), expected, atol=1e-5, rtol=1e-5)
    # Also inside a tf.function.
    np.testing.assert_allclose(tf.function(stripped)(images).numpy(), expected, atol=1e-5, rtol=1e-5)


def test_strip_keeps_exactly_the_pruned_zeros(sparse_net):
    stripped = strip_lib.strip(sparse_net, shrink=False)
    pruned, total = variational.weight_sparsity(sparse_net)
    assert 0 < pruned < total
    kernels = [w.numpy() for l in stripped.layers for w in l.weights if w.path.endswith("kernel")]
    assert sum(k.size for k in kernels) == total
    # theta itself is never exactly zero at init: every zero is a pruned weight.
    assert sum(int(np.sum(k == 0)) for k in kernels) == pruned


def test_synchronize_batch_norm_reaches_every_batch_norm(images):
    from tfvnas.layers import batch_normalization as bn_lib

    net = small_network(zoo.load_genotype("darts_v2"), weight_vd=False)
    before = net(images).numpy()
    n = bn_lib.synchronize_batch_norm(net)
    bns = [l for l in net._flatten_layers() if isinstance(l, bn_lib.BatchNorm)]
    assert n == len(bns) > 10 and all(l.synchronized and l.get_config()["synchronized"] for l in bns)
    # Inference (moving statistics) is unchanged; without replicas training is too.
    np.testing.assert_array_equal(net(images).numpy(), before)


def test_keras_fit_trains_the_elbo_tfvnas_trains():
    # The KL a variational layer adds is already scaled (the model's
    # kl_scale, beta / N): Keras' compiled loss plus the model's losses is
    # tfvnas' ELBO on the same batch.
    x, y = digits(64)
    net = small_network(kl_scale=1.0 / 512)
    scramble(net)
    net.compile(optimizer=keras.optimizers.SGD(0.01),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    logits = net(x, training=False)
    elbo, ce, kl_term = variational.elbo_loss(y, logits, tf.add_n(net.losses), global_batch_size=len(x))
    assert float(kl_term) == pytest.approx(
        sum(float(l.kl()) for l in variational.kl_layers(net)) / 512, rel=1e-5)
    keras_loss = net.evaluate(x, y, batch_size=len(x), verbose=0, return_dict=True)["loss"]
    assert keras_loss == pytest.approx(float(elbo), rel=1e-5)


@pytest.mark.slow
def test_keras_fit_with_the_kl_schedule_learns_and_sparsifies():
    x, y = digits(512)
    net = small_network()
    net.compile(optimizer=keras.optimizers.Adam(3e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    schedule = variational.KLSchedule(n_train=len(x), warmup_steps=8)
    history = net.fit(x, y, batch_size=32, epochs=4, verbose=0, callbacks=[schedule])
    assert float(net.kl_scale.numpy()) == pytest.approx(1.0 / len(x))
    # With the KL scaled as the ELBO needs (beta / N), the network learns
    # (unscaled, the KL of ~10k weights crushed it), and its weights sparsify.
    assert history.history["accuracy"][-1] > 0.6
    pruned, total = variational.weight_sparsity(net)
    assert pruned > 0


def test_saved_network_predicts_the_shapes_the_loaders_give(tmp_path):
    net = small_network(weight_vd=False)
    path = tmp_path / "net.keras"
    net.save(path)
    loaded = keras.models.load_model(path)
    x, _ = digits(4)
    nhwc = loaded.predict(x, verbose=0)
    np.testing.assert_allclose(loaded.predict(x[..., 0], verbose=0), nhwc, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nhwc, net(x, training=False), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=re.escape(
            "The model takes images of shape (batch, 12, 12, 1) or, for one channel, (batch, H, W). "
            "Received: images of shape (4, 12)")):
        loaded(x[:, :, :, 0][:, :, 0], training=False)
