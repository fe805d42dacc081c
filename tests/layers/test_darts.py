"""The DARTS baseline: softmax gates, noise-free mixing, DARTS derivation, a search end to end."""

import json
import re

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.keras_config import assert_config_round_trip
from tfvnas import config as config_lib
from tfvnas.layers import darts
from tfvnas.layers import registry as op_registry
from tfvnas.layers.mixed_edge import MixedEdge
from tfvnas.loops.searching import search
from tfvnas.models.supernet import Supernet


def test_softmax_gates_are_a_softmax_with_the_gate_interface():
    gates = darts.SoftmaxGates(3, 4, alpha_init_scale=0.5, seed=1)
    weights, var = gates()
    alpha = gates.alpha.numpy()
    expected = np.exp(alpha) / np.exp(alpha).sum(-1, keepdims=True)
    np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-6)
    np.testing.assert_array_equal(var.numpy(), np.zeros((3, 4)))
    np.testing.assert_allclose(gates.derivation_log_alpha().numpy(), -expected, rtol=1e-6)
    assert gates.update_evidence(-10.0, patience=1) == 0 and float(gates.kl()) == 0.0
    assert [v.path for v in gates.trainable_weights] == [gates.alpha.path]
    assert_config_round_trip(gates)


def test_darts_edge_is_the_plain_softmax_mixture():
    edge = MixedEdge(op_registry.OP_SETS["darts_none"], 4, 1, seed=3)
    edge.noisy = False
    x = tf.random.stateless_normal((2, 6, 6, 4), seed=[1, 2])
    edge(x, tf.ones(8) / 8, tf.zeros(8), training=False)  # builds every op
    w = tf.nn.softmax(tf.range(8, dtype=tf.float32) / 4.0)
    out = edge(x, w, tf.zeros(8), training=True).numpy()
    reference = sum(float(w[k]) * op(x, training=True).numpy() for k, op in enumerate(edge.candidates))
    np.testing.assert_allclose(out, reference, atol=1e-5, rtol=1e-5)
    # No noise: the same batch gives the same output twice.
    np.testing.assert_array_equal(edge(x, w, tf.zeros(8), training=True).numpy(), out)


def test_darts_supernet_derives_the_strongest_non_none_ops():
    names = op_registry.OP_SETS["darts_none"]
    net = Supernet(10, layers=2, channels=4, nodes=2, op_names=names, method="darts")
    net.build((None, 8, 8, 1))
    assert [v.path for v in net.arch_variables] == ["normal_gates/alpha", "reduce_gates/alpha"]
    alpha = np.zeros((5, 8), np.float32)
    alpha[:, names.index("none")] = 5.0  # `none` is never chosen
    alpha[0, names.index("sep_conv_5x5")] = 3.0
    alpha[1, names.index("skip_connect")] = 2.0
    alpha[2, names.index("max_pool_3x3")] = 4.0
    alpha[4, names.index("dil_conv_3x3")] = 1.0
    net.normal_gates.alpha.assign(alpha)
    genotype = net.derive("top_k", k=2)
    # Node 0 has edges 0 and 1; node 1 has edges 2, 3, 4 and keeps the two strongest (2 and 4).
    assert [list(map(tuple, n)) for n in genotype.normal] == [
        [("sep_conv_5x5", 0), ("skip_connect", 1)],
        [("max_pool_3x3", 0), ("dil_conv_3x3", 2)],
    ]
    assert net.get_config()["method"] == "darts"


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match=re.escape("`method` must be one of vinnas, darts. Received: method='enas'")):
        Supernet(10, layers=1, nodes=1, method="enas")
    with pytest.raises(ValueError, match=re.escape("`method` must be one of 'vinnas', 'darts'. Received: method='enas'")):
        config_lib.SearchConfig(method="enas")


@pytest.mark.slow
def test_darts_search_runs_end_to_end(tmp_path):
    cfg = config_lib.preset("smoke").replace(layers=1, nodes=2, epochs=1, limit=128)
    result = search("mnist-5k", config=cfg, method="darts", out_dir=tmp_path / "darts", verbose=0)
    assert result.config.method == "darts" and result.config.op_set == "darts_none"
    last = result.history[-1]
    assert last["kl_gates"] == 0.0 and last["pruned_this_epoch"] == 0
    assert last["active_ops"] == {"normal": last["total_ops"], "reduce": last["total_ops"]}
    for cell in (result.genotype.normal, result.genotype.reduce):
        assert all(len(node) == 2 for node in cell)
        assert all(op != "none" for node in cell for op, _ in node)
    saved = json.loads((tmp_path / "darts" / "search_config.json").read_text())
    assert saved["method"] == "darts"
    # DARTS' own architecture optimiser: Adam 3e-4, betas (0.5, 0.999), weight decay 1e-3.
    assert result.config.arch_optimizer == {"lr": 3e-4, "beta_1": 0.5, "weight_decay": 1e-3}


def test_darts_gets_its_own_architecture_optimiser_by_default():
    for preset in ("smoke", "quick", "paper"):
        cfg = config_lib.preset(preset).replace(method="darts")
        assert cfg.arch_optimizer == {"lr": 3e-4, "beta_1": 0.5, "weight_decay": 1e-3}, preset
    # Fields the user sets win over the method's own.
    cfg = config_lib.SearchConfig(method="darts", arch_lr=1e-3, arch_weight_decay=0.0)
    assert cfg.arch_optimizer == {"lr": 1e-3, "beta_1": 0.5, "weight_decay": 0.0}
    assert config_lib.SearchConfig().arch_optimizer == config_lib.ARCH_OPTIMIZERS["vinnas"]
