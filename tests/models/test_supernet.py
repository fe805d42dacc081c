"""Supernet structure, gate semantics and serialisation (tiny, eager)."""

import re

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.keras_config import assert_config_round_trip
from tests.helpers.supernets import OPS, tiny_supernet
from tfvnas.layers import registry as op_registry
from tfvnas.layers import variational as vd_lib
from tfvnas.layers.mixed_edge import MixedEdge
from tfvnas.models import derivation
from tfvnas.models import genotype as genotype_lib
from tfvnas.models.supernet import Supernet


def _model(**kwargs):
    return tiny_supernet((6, 6, 1), **kwargs)


def _images(n=4, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, 6, 6, 1)).astype("float32")


@pytest.fixture(scope="module")
def model():
    return _model()


def test_arch_and_weight_variables_are_disjoint_and_complete(model):
    arch = model.arch_variables
    weights = model.weight_variables
    assert len(arch) == 4
    assert {v.path.split("/")[-1] for v in arch} == {"log_theta", "log_sigma2"}
    arch_ids, weight_ids = {id(v) for v in arch}, {id(v) for v in weights}
    assert not arch_ids & weight_ids
    assert arch_ids | weight_ids == {id(v) for v in model.trainable_variables}
    n_edges = genotype_lib.num_edges(2)
    for gates in model.gates.values():
        assert tuple(gates.shape) == (n_edges, len(OPS))
        assert id(gates.active) not in {id(v) for v in model.trainable_variables}


def test_cells_of_one_type_share_one_gate_table(model):
    kinds = [c.plan.cell_type for c in model.cells]
    # layers=3: reductions at 3 // 3 = 1 and 2 * 3 // 3 = 2.
    assert kinds == ["normal", "reduce", "reduce"]
    # Two tables in total however many cells there are.
    gate_layers = [l for l in model._flatten_layers() if l.__class__.__name__ == "GaussianGates"]
    assert len(gate_layers) == 2


def test_inference_is_deterministic_training_is_noisy(model):
    x = _images()
    a = model(x, training=False).numpy()
    b = model(x, training=False).numpy()
    np.testing.assert_array_equal(a, b)
    c = model(x, training=True).numpy()
    d = model(x, training=True).numpy()
    assert not np.allclose(c, d)
    assert a.shape == (4, 10)


def test_losses_are_the_gate_and_weight_kl():
    model = _model(weight_vd=True, kl_scale=1.0)  # the losses are the KL itself
    model(_images(), training=True)
    total = float(tf.add_n(model.losses))
    assert total == pytest.approx(float(model.arch_kl()) + float(model.weight_kl()), rel=1e-5)
    assert float(model.weight_kl()) > 0


def test_pruned_op_contributes_exactly_zero():
    model = _model()
    x = _images()
    k = OPS.index("sep_conv_3x3")
    for gates in model.gates.values():
        active = np.ones(gates.active.shape, "float32")
        active[:, k] = 0.0
        gates.active.assign(active)
    before = model(x, training=False).numpy()
    # Scramble every trainable weight of the pruned op: the output must not move at all.
    rng = np.random.default_rng(5)
    for cell in model.cells:
        for edge in cell.edge_layers:
            for v in edge.candidates[k].trainable_weights:
                v.assign(rng.normal(0, 100, v.shape).astype("float32"))
    after = model(x, training=False).numpy()
    np.testing.assert_array_equal(before, after)


def test_a_registered_op_is_a_gated_candidate_computed_op_by_op():
    names = ("mbconv_3x3_e3", "skip_connect", "max_pool_3x3")
    edge = MixedEdge(names, 3, 1, affine=False, seed=0)
    x = tf.constant(np.random.default_rng(1).normal(size=(2, 5, 5, 3)), tf.float32)
    theta, sigma2 = tf.constant([0.7, 0.2, -1.0]), tf.constant([0.1, 0.05, 0.3])
    out = edge(x, theta, sigma2, training=False).numpy()
    assert not edge._fusable()  # the fused edge knows tfvnas' own operations only
    expected = sum(float(t) * op(x, training=False).numpy() for t, op in zip(theta.numpy(), edge.candidates))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    # A supernet of it: one gate column per op, and the derived cell names it.
    model = _model(weight_vd=True, op_names=names)
    model(_images(), training=True)
    assert model.normal_gates.shape == (5, 3)
    assert float(model.weight_kl()) > 0 and model.losses
    for gates in model.gates.values():
        la = np.full(gates.shape, 5.0, "float32")
        la[:, 0] = -3.0  # only the inverted residual stays
        gates.set_log_alpha(la)
    assert set(model.derive("top_k").op_histogram()) == {"mbconv_3x3_e3"}


def test_derive_uses_the_gates(model):
    rng = np.random.default_rng(2)
    for gates in model.gates.values():
        gates.set_theta(rng.uniform(0.05, 1.0, gates.shape).astype("float32"))
        gates.set_log_alpha(rng.uniform(-6, 5, gates.shape).astype("float32"))
        gates.active.assign(np.ones(gates.active.shape, "float32"))
    la = model.log_alpha()
    for t, gates in model.gates.items():
        np.testing.assert_array_equal(la[t], gates.raw_log_alpha().numpy())
        np.testing.assert_allclose(la[t], gates.log_sigma2.numpy() - 2 * gates.log_theta.numpy(), rtol=1e-6)
    # Every gate is active (none pruned): the derivation reads the active tables, not the threshold.
    active = {t: np.ones_like(v) for t, v in la.items()}
    expected = derivation.derive_top_k(la, OPS, nodes=2, threshold=model.threshold, k=2, active=active)
    assert model.derive("top_k") == expected
    expected_thr = derivation.derive_threshold(la, OPS, nodes=2, active=active, k=2)
    assert model.derive("threshold") == expected_thr
    assert all(len(node) == len(OPS) * (2 + i) for i, node in enumerate(expected_thr.normal))
    # Pruned gates leave both; a held gate (active, above the threshold) stays.
    for gates in model.gates.values():
        pruned = np.ones(gates.shape, "float32")
        pruned[:, 0] = 0.0
        gates.active.assign(pruned)
    assert all(op != OPS[0] for node in model.derive("threshold").normal for op, _ in node)
    with pytest.raises(ValueError, match="`rule` must be 'top_k' or 'threshold'. Received: rule='best'"):
        model.derive("best")


def test_prune_counts_and_is_permanent():
    model = _model()
    gates = model.normal_gates
    la = np.full(gates.shape, -6.0, "float32")
    la[0, 0] = 10.0
    gates.set_log_alpha(la)
    assert model.update_evidence() == 1
    assert model.active_ops()["normal"] == gates.shape[0] * gates.shape[1] - 1
    assert model.pruned_share() == {"normal": pytest.approx(1 / la.size), "reduce": 0.0}
    gates.set_log_alpha(np.full(gates.shape, -6.0, "float32"))
    assert model.update_evidence() == 0
    assert model.log_alpha()["normal"][0, 0] == 10.0  # the value at pruning


def test_variational_weights_take_the_supernet_threshold():
    model = _model(weight_vd=True, threshold=1.5)
    layers = vd_lib.variational_layers(model)
    assert layers and {layer.threshold for layer in layers} == {1.5}
    assert {g.threshold for g in model.gates.values()} == {1.5}


def test_the_kl_scale_is_one_model_variable_every_kl_layer_reads():
    model = _model(weight_vd=True, kl_scale=0.0)
    model(_images(), training=True)
    assert float(tf.add_n(model.losses)) == 0.0
    model.kl_scale.assign(0.5)
    model(_images(), training=True)
    total = float(tf.add_n(model.losses))
    assert total == pytest.approx(0.5 * (float(model.arch_kl()) + float(model.weight_kl())), rel=1e-5)
    assert {id(layer._bound_kl_scale.variable) for layer in vd_lib.kl_layers(model)} == {id(model.kl_scale)}


def test_one_channel_images_may_come_without_a_channel_axis(model):
    x = _images()
    np.testing.assert_allclose(model(x[..., 0], training=False), model(x, training=False), rtol=1e-6)
    with pytest.raises(ValueError, match=re.escape(
            "The model takes images of shape (batch, 6, 6, 1) or, for one channel, (batch, H, W). "
            "Received: images of shape (4, 6)")):
        model(x[:, :, 0, 0], training=False)


def test_config_round_trip_gives_the_same_network(model):
    clone = assert_config_round_trip(model, _images(seed=3), rtol=1e-5, atol=1e-6)
    assert [tuple(v.shape) for v in clone.weights] == [tuple(v.shape) for v in model.weights]


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"^`channels` must be a positive int. Received: channels=-3$"):
        Supernet(10, channels=-3)
    with pytest.raises(ValueError, match=r"^Unknown operation 'conv_9x9'. Known operations: "):
        Supernet(10, op_names=("conv_9x9",))
    with pytest.raises(ValueError, match=r"^`num_classes` must be a positive int. Received: num_classes=0$"):
        Supernet(0)


def test_stride_two_dilated_op_shapes():
    # Reduction edges run dilated convs strided: check the output grid.
    for name in ("dil_conv_3x3", "dil_conv_5x5"):
        op = op_registry.make_op(name, 2, 2, affine=False)
        assert tuple(op(tf.zeros((1, 7, 7, 2))).shape) == (1, 4, 4, 2)


def ops_run_per_call(graph_def, op_type):
    """How many `op_type` ops one run of `graph_def` executes, through the functions it calls."""
    library = {f.signature.name: f for f in graph_def.library.function}

    def count(nodes):
        total = 0
        for node in nodes:
            if node.op == op_type:
                total += 1
            elif node.op in ("PartitionedCall", "StatefulPartitionedCall"):
                total += count(library[node.attr["f"].func.name].node_def)
        return total

    return count(graph_def.node)


def test_pruned_ops_leave_the_computation_with_the_same_outputs():
    model = _model(op_names=("sep_conv_3x3", "dil_conv_3x3", "max_pool_3x3", "skip_connect"))
    x = _images()
    for gates in model.gates.values():
        active = np.ones(gates.active.shape, "float32")
        active[::2, 0] = 0.0
        active[1, :] = 0.0  # a whole edge
        gates.active.assign(active)
    computed = model.computed_ops()
    assert computed["normal"][1] == () and 0 not in computed["normal"][0]

    def depthwise_convs(m):
        graph = tf.function(lambda t: m(t, training=True)).get_concrete_function(tf.constant(x)).graph
        return ops_run_per_call(graph.as_graph_def(), "DepthwiseConv2dNative")

    pruned_convs = depthwise_convs(model)
    skipped = model(x, training=False).numpy()
    every_op = {t: tuple(tuple(range(4)) for _ in rows) for t, rows in computed.items()}
    model.computed_ops = lambda: every_op  # compute every op and mask the pruned ones
    masked = model(x, training=False).numpy()
    np.testing.assert_allclose(skipped, masked, rtol=1e-5, atol=1e-6)
    assert depthwise_convs(model) > pruned_convs


def test_a_node_whose_gates_all_cross_the_threshold_keeps_top_k_live_edges():
    model = _model()
    for gates in model.gates.values():
        la = np.full(gates.shape, -2.0, "float32")
        la[2:5] = 6.0  # node 1 (edges 2, 3, 4): every gate due ...
        la[4, OPS.index("skip_connect")] = 3.2  # ... this one the least
        la[3, OPS.index("sep_conv_3x3")] = 4.0  # ... and this one next
        gates.set_log_alpha(la)
        gates.active.assign(np.ones(gates.active.shape, "float32"))
    model.update_evidence(patience=1)
    # Unstructured pruning would empty node 1; the floor keeps its two
    # strongest edges, each with its strongest op, and prunes the rest.
    for gates in model.gates.values():
        assert gates.live_edges() == [2, 2]
        active = gates.active.numpy()
        assert active[2].sum() == 0 and active[3].sum() == 1 and active[4].sum() == 1
    genotype = model.derive("top_k")
    assert genotype.normal[1] == (("sep_conv_3x3", 1), ("skip_connect", 2))
    assert model.derive("threshold").normal[1] == (("sep_conv_3x3", 1), ("skip_connect", 2))
    assert model.settled() is False  # node 0 still has every op


def test_skip_dropout_in_a_traced_step_is_the_eager_draw_and_only_in_training():
    model = _model(skip_dropout=0.5, seed=2)
    assert {e.skip_dropout for c in model.cells for e in c.edge_layers} == {0.5}
    assert assert_config_round_trip(model).skip_dropout == 0.5
    x = tf.constant(_images(n=8, seed=4))
    state = [v.numpy() for v in model.non_trainable_variables]
    eager = model(x, training=True).numpy()
    for v, value in zip(model.non_trainable_variables, state):
        v.assign(value)
    traced = tf.function(lambda images: model(images, training=True))(x).numpy()  # the shared edge functions
    np.testing.assert_allclose(traced, eager, rtol=1e-4, atol=1e-4)
    again = model(x, training=True).numpy()  # the stream moved on: other draws
    assert np.abs(again - eager).max() > 1e-4
    np.testing.assert_array_equal(model(x, training=False), model(x, training=False))
    with pytest.raises(ValueError, match=re.escape("`skip_dropout` must be a rate in [0, 1). Received: skip_dropout=1.0")):
        Supernet(10, skip_dropout=1.0)
