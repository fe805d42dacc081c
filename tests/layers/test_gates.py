"""tfvnas.layers.gates against independent references: NumPy, closed forms, Monte Carlo."""


import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.keras_config import assert_config_round_trip
from tfvnas.layers import gates as gates_lib

MODES = ("eager", "function")


def _run(mode, fn, *args):
    if mode == "function":
        fn = tf.function(fn)
    return tf.nest.map_structure(lambda t: t.numpy(), fn(*args))


PARAMETERISATIONS = gates_lib.PARAMETERISATIONS


def _gates(log_alpha, theta=None, threshold=3.0, parameterisation="positive"):
    log_alpha = np.asarray(log_alpha, "float32")
    gates = gates_lib.GaussianGates(*log_alpha.shape, threshold=threshold, parameterisation=parameterisation)
    if theta is not None:
        gates.set_theta(np.asarray(theta, "float32"))
    gates.set_log_alpha(log_alpha)
    return gates


# ---------------------------------------------------------------------------
# The table


@pytest.mark.parametrize("parameterisation, names", [("positive", {"log_theta", "log_sigma2"}),
                                                     ("log_alpha", {"theta", "log_alpha"})])
def test_initial_values_do_not_depend_on_the_number_of_ops(parameterisation, names):
    small = gates_lib.GaussianGates(2, 3, parameterisation=parameterisation)
    large = gates_lib.GaussianGates(2, 8, parameterisation=parameterisation)
    for gates in (small, large):
        assert np.all(gates.theta_value().numpy() == 1.0) and np.all(gates.raw_log_alpha().numpy() == -3.0)
        np.testing.assert_array_equal(gates.active.numpy(), 1.0)
        np.testing.assert_array_equal(gates.streak.numpy(), 0.0)
        assert {v.name for v in gates.trainable_weights} == names
        assert not gates.active.trainable and not gates.streak.trainable and not gates.pruned_log_alpha.trainable


@pytest.mark.parametrize("parameterisation", PARAMETERISATIONS)
@pytest.mark.parametrize("mode", MODES)
def test_call_gives_theta_and_alpha_theta_squared_with_pruned_gates_zero(mode, parameterisation):
    theta = np.array([[1.0, 0.5, 0.8], [2.0, 1.2, 0.3]], "float32")
    la = np.array([[0.0, -2.0, 1.0], [-4.0, 2.5, 0.5]], "float32")
    gates = _gates(la, theta, parameterisation=parameterisation)
    active = np.ones_like(theta)
    active[1, 2] = 0.0
    gates.active.assign(active)
    got_theta, got_sigma2 = _run(mode, lambda: gates(training=True))
    np.testing.assert_allclose(got_theta, theta * active, rtol=1e-6)
    np.testing.assert_allclose(got_sigma2, np.exp(la.astype("float64")) * theta.astype("float64") ** 2 * active,
                               rtol=1e-5)
    assert got_theta[1, 2] == 0.0 and got_sigma2[1, 2] == 0.0


@pytest.mark.parametrize("parameterisation", PARAMETERISATIONS)
def test_kl_is_the_closed_form_of_log_alpha_over_active_gates_times_the_weight(parameterisation):
    la = np.array([[-3.0, 0.0, 4.0], [1.0, -1.0, 7.0]], "float32")
    # theta does not enter the ARD KL
    gates = _gates(la, theta=[[0.01, 2.0, 3.0], [1.0, 0.2, 0.7]], parameterisation=parameterisation)
    gates.active.assign(np.array([[1, 1, 0], [1, 1, 1]], "float32"))
    closed = 0.5 * np.log1p(np.exp(-la.astype("float64")))
    expected = float(np.sum(closed * gates.active.numpy()))
    assert float(gates.kl()) == pytest.approx(expected, rel=1e-4)
    gates.kl_scale = 0.02
    gates(training=True)
    assert float(gates.losses[0]) == pytest.approx(0.02 * expected, rel=1e-4)


@pytest.mark.parametrize("parameterisation", PARAMETERISATIONS)
def test_a_single_spike_does_not_prune_and_a_sustained_rise_does(parameterisation):
    # Constructed log_alpha trajectories, one gate each, checked 6 times with patience 3.
    trajectories = np.array([
        [-2.0, 8.0, -1.0, 9.0, 0.0, 2.0],  # spikes, never 3 in a row: kept
        [0.0, 3.0, 3.5, 4.0, 4.0, 4.0],  # sustained from check 2: pruned at check 4
        [3.0, 3.0, 2.99, 3.0, 3.0, 3.0],  # interrupted once: pruned at check 6
        [2.5, 2.9, 2.99, 2.0, 1.0, 0.0],  # close, never at the threshold: kept
    ], "float32")
    gates = _gates(trajectories[:, :1].T, parameterisation=parameterisation)
    pruned_at = {}
    for check in range(trajectories.shape[1]):
        gates.set_log_alpha(trajectories[:, check][None, :])
        before = gates.active.numpy()[0].copy()
        newly = gates.update_evidence(3.0, patience=3)
        for g in np.flatnonzero(before > gates.active.numpy()[0]):
            pruned_at[int(g)] = check + 1
        assert newly == sum(1 for at in pruned_at.values() if at == check + 1)
    assert pruned_at == {1: 4, 2: 6}
    np.testing.assert_array_equal(gates.active.numpy(), [[1, 0, 0, 1]])
    # The value at pruning is kept for the derivation; active gates read their own.
    np.testing.assert_allclose(gates.derivation_log_alpha().numpy(), [[2.0, 4.0, 3.0, 0.0]], atol=1e-6)
    # Permanent: a pruned gate does not come back, whatever its log_alpha does.
    gates.set_log_alpha(np.full((1, 4), -10.0, "float32"))
    assert gates.update_evidence(3.0, patience=3) == 0
    np.testing.assert_array_equal(gates.active.numpy(), [[1, 0, 0, 1]])
    np.testing.assert_allclose(gates.derivation_log_alpha().numpy(), [[-10.0, 4.0, 3.0, -10.0]], atol=1e-6)


def _move(gates, values):
    """Sets the current log_alpha as the optimiser would (the average is left alone)."""
    values = np.asarray(values, "float32")
    if gates.parameterisation == "positive":
        gates.log_sigma2.assign(values + 2.0 * gates.log_theta.numpy())
    else:
        gates.log_alpha.assign(values)


@pytest.mark.parametrize("parameterisation", PARAMETERISATIONS)
def test_the_derivation_reads_a_moving_average_and_pruning_the_current_value(parameterisation):
    gates = gates_lib.GaussianGates(1, 3, log_alpha_init=-1.0, parameterisation=parameterisation,
                                    average_decay=0.5)
    # Gate 0 jitters around 0, gate 1 sits at 0.2, gate 2 rises through the threshold.
    trajectory = [[-1.0, 0.2, 3.5], [1.0, 0.2, 3.5], [-1.0, 0.2, 3.5], [0.5, 0.2, 3.5]]
    average = np.full(3, -1.0)
    for check, values in enumerate(trajectory):
        _move(gates, [values])
        gates.update_evidence(3.0, patience=3)
        active = check <= 2 or np.array([True, True, False])  # gate 2 goes at check 3, after its update
        average = np.where(active, 0.5 * average + 0.5 * np.array(values), average)
        np.testing.assert_allclose(gates.averaged_log_alpha.numpy()[0], average, atol=1e-6)
    np.testing.assert_array_equal(gates.active.numpy(), [[1, 1, 0]])
    # By hand: gate 0's average -1, 0, -0.5, 0; gate 1's -0.4, -0.1, 0.05, 0.125; gate 2's
    # 1.25, 2.375, 2.9375, then frozen.
    np.testing.assert_allclose(average, [0.0, 0.125, 2.9375], atol=1e-6)
    # The derivation: the averages of the active gates, the value at pruning of the pruned one.
    # The averages rank gate 0 first; its current value (0.5, above gate 1's 0.2) would not.
    np.testing.assert_allclose(gates.derivation_log_alpha().numpy(), [[0.0, 0.125, 3.5]], atol=1e-6)
    # The history records the current values (the pruned gate's at pruning).
    np.testing.assert_allclose(gates.current_log_alpha().numpy(), [[0.5, 0.2, 3.5]], atol=1e-6)
    # Off (decay 0): the current values.
    plain = gates_lib.GaussianGates(1, 3, log_alpha_init=-1.0, parameterisation=parameterisation)
    _move(plain, [[1.0, 0.2, -1.0]])
    plain.update_evidence(3.0, patience=3)
    np.testing.assert_allclose(plain.derivation_log_alpha().numpy(), [[1.0, 0.2, -1.0]], atol=1e-6)
    for bad in (1.0, -0.1, True):
        with pytest.raises(ValueError, match=r"^`average_decay` must be in \[0, 1\)\. Received: "):
            gates_lib.GaussianGates(1, 3, average_decay=bad)


def test_theta_cannot_cross_zero():
    # `log_alpha`: a parameter of its own, theta at zero leaves it (and the KL) as they are.
    gates = _gates([[-1.0, -1.0]], theta=[[1e-8, -1e-8]], parameterisation="log_alpha")
    assert gates.update_evidence(3.0, patience=1) == 0
    np.testing.assert_allclose(gates.raw_log_alpha().numpy(), [[-1.0, -1.0]])
    # `positive`: theta = exp(log_theta) is positive whatever the optimiser does.
    gates = _gates([[-1.0, -1.0]], parameterisation="positive")
    gates.log_theta.assign(np.array([[-60.0, 60.0]], "float32"))
    assert np.all(gates.theta_value().numpy() >= 0.0)


def test_patience_one_is_a_plain_threshold_and_the_layer_threshold_is_the_default():
    gates = _gates([[1.5, 2.0, 2.5]], threshold=2.0)
    assert gates.update_evidence() == 2
    np.testing.assert_array_equal(gates.active.numpy(), [[1, 0, 0]])
    with pytest.raises(ValueError, match=r"^`patience` must be a positive int. Received: patience=0$"):
        gates.update_evidence(patience=0)


# ---------------------------------------------------------------------------
# The per-node floor

# nodes=2: rows are the edges (node, input) = (0,0) (0,1) (1,0) (1,1) (1,2);
# columns the ops none, skip_connect, sep_conv_3x3.
FLOOR_OPS = ("none", "skip_connect", "sep_conv_3x3")


def _floored(log_alpha, min_inputs=2, average_decay=0.0):
    gates = gates_lib.GaussianGates(5, 3, nodes=2, min_inputs=min_inputs, average_decay=average_decay,
                                    countable=[op != "none" for op in FLOOR_OPS])
    gates.set_log_alpha(np.asarray(log_alpha, "float32"))
    return gates


def _unstructured(log_alpha, threshold=3.0):
    """What pruning without the floor does: every gate at or above the threshold goes."""
    return (np.asarray(log_alpha) < threshold).astype("float32")


def test_pruning_never_takes_a_node_below_its_live_edges_where_unstructured_pruning_empties_it():
    la = np.array([
        [9.0, 5.0, 4.0],  # node 0, input 0: both countable ops due
        [9.0, 6.0, 8.0],  # node 0, input 1: both due
        [9.0, 3.5, 1.0],  # node 1, input 0: sep_conv_3x3 survives anyway
        [9.0, 7.0, 4.5],  # node 1, input 1: both due
        [9.0, 3.2, 6.5],  # node 1, input 2: both due
    ])
    # Without the floor: node 0 loses every edge, node 1 all but one.
    plain = _unstructured(la)
    assert gates_lib.live_edges(plain, [0, 0, 1, 1, 1], [False, True, True]) == [0, 1]
    gates = _floored(la)
    pruned = gates.update_evidence(3.0, patience=1)
    active = gates.active.numpy()
    assert gates.live_edges() == [2, 2]
    # Due gates go highest first: every `none`; then each edge keeps its op with
    # the lowest log_alpha; node 1 keeps input 0 (live anyway) and input 2,
    # whose last op (3.2) comes after input 1's (4.5), which went.
    np.testing.assert_array_equal(active, [
        [0, 0, 1],
        [0, 1, 0],
        [0, 0, 1],
        [0, 0, 0],
        [0, 1, 0],
    ])
    assert pruned == 15 - 4
    assert gates.settled()
    # Held gates stay active at later checks; what was pruned stays pruned.
    gates.set_log_alpha(np.full((5, 3), 20.0, "float32"))
    assert gates.update_evidence(3.0, patience=1) == 0
    np.testing.assert_array_equal(gates.active.numpy(), active)


def test_the_floor_prunes_the_weakest_by_the_derivations_average_first():
    # The last ops of node 1's inputs 1 and 2 are due at the same check and only
    # one can go. Now, input 2's reads weaker (8 against 4); on the average the
    # derivation reads (decay 0.5), input 1's is weaker (6 against 3.5): it goes.
    gates = _floored(np.full((5, 3), -1.0), average_decay=0.5)
    average = np.full((5, 3), -1.0, "float32")
    current = np.full((5, 3), -1.0, "float32")
    current[:, 0] = average[:, 0] = 9.0  # every `none` due
    current[3, 1] = current[4, 1] = average[3, 1] = average[4, 1] = 9.0  # both skips due
    current[3, 2], average[3, 2] = 4.0, 8.0
    current[4, 2], average[4, 2] = 8.0, -1.0
    gates.averaged_log_alpha.assign(average)
    _move(gates, current)
    gates.update_evidence(3.0, patience=1)
    np.testing.assert_allclose(gates.averaged_log_alpha.numpy()[3:, 2], [6.0, 3.5])
    np.testing.assert_array_equal(gates.active.numpy()[:, 1:], [[1, 1], [1, 1], [1, 1], [0, 0], [0, 1]])
    assert gates.live_edges() == [2, 2]


def test_node_floor_against_a_brute_force_search():
    # For random due sets, the floor's result keeps every node at its floor,
    # prunes every due gate it can, and never prunes a gate that was not due.
    rng = np.random.default_rng(0)
    node_of_edge = np.array([i for i in range(3) for _ in range(2 + i)])
    countable = np.array([False, True, True, True])
    for _ in range(300):
        active = rng.random((9, 4)) < 0.7
        for n in range(3):  # start at or above the floor
            for e in np.flatnonzero(node_of_edge == n)[:2]:
                active[e, 1 + rng.integers(3)] = True
        due = active & (rng.random((9, 4)) < 0.6)
        order = rng.normal(size=(9, 4))
        prune, held = gates_lib.node_floor(due, active, order, node_of_edge, countable, 2)
        assert not (prune & ~due).any() and not (held & ~due).any() and not (prune & held).any()
        after = active & ~prune
        live = gates_lib.live_edges(after, node_of_edge, countable)
        assert all(l >= 2 for l in live)
        for e, o in np.argwhere(held):  # a held gate could not go without breaking the floor
            trial = after.copy()
            trial[e, o] = False
            assert min(gates_lib.live_edges(trial, node_of_edge, countable)) < 2


def test_floor_arguments_are_checked_and_saved():
    with pytest.raises(ValueError, match=r"^`min_inputs` needs `nodes` \(which edge enters which node\)\. "):
        gates_lib.GaussianGates(5, 3, min_inputs=2)
    with pytest.raises(ValueError, match=r"^A cell of 2 nodes has 5 edges\. Received: nodes=2, num_edges=4$"):
        gates_lib.GaussianGates(4, 3, nodes=2)
    with pytest.raises(ValueError, match=r"^`countable` must hold one flag per op \(3\)\. "):
        gates_lib.GaussianGates(5, 3, nodes=2, countable=[True])
    gates = _floored(np.zeros((5, 3)))
    again = assert_config_round_trip(gates)
    assert (again.nodes, again.min_inputs, again.countable) == (2, 2, [False, True, True])


@pytest.mark.parametrize("parameterisation", PARAMETERISATIONS)
def test_config_round_trip(parameterisation):
    gates = gates_lib.GaussianGates(3, 2, theta_init=0.5, log_alpha_init=-4.0, threshold=2.5, kl_scale=0.1,
                                    parameterisation=parameterisation, average_decay=0.9)
    clone = assert_config_round_trip(gates)
    np.testing.assert_allclose(clone.raw_log_alpha().numpy(), np.full((3, 2), -4.0), rtol=1e-6)
    np.testing.assert_allclose(clone.theta_value().numpy(), np.full((3, 2), 0.5), rtol=1e-6)


def test_bad_parameterisation():
    with pytest.raises(ValueError, match=r"^`parameterisation` must be one of 'positive', 'log_alpha'. "
                                         r"Received: parameterisation='additive'$"):
        gates_lib.GaussianGates(2, 2, parameterisation="additive")


# ---------------------------------------------------------------------------
# The per-example mixture against Monte Carlo


def _mixture_samples(outputs, theta, sigma2, draws, seed=0):
    rng = np.random.default_rng(seed)
    eps = rng.normal(size=(draws, outputs.shape[1], len(theta))).astype("float32")
    fn = tf.function(lambda e: gates_lib.gate_mixture(tf.constant(outputs), tf.constant(theta), tf.constant(sigma2), e))
    return np.stack([fn(tf.constant(e)).numpy() for e in eps]).astype("float64")


def test_gate_mixture_moments_and_the_correlation_across_positions_match_the_model():
    rng = np.random.default_rng(3)
    outputs = rng.normal(size=(3, 2, 2, 2, 1)).astype("float32")  # K=3 ops, B=2, 2x2 positions, 1 channel
    theta = np.array([0.7, -1.2, 0.3], "float32")
    sigma2 = np.array([0.4, 0.1, 0.9], "float32")
    samples = _mixture_samples(outputs, theta, sigma2, draws=4000)  # (S, B, 2, 2, 1)
    o = outputs.astype("float64")
    mean = np.tensordot(theta.astype("float64"), o, axes=1)
    var = np.tensordot(sigma2.astype("float64"), o**2, axes=1)
    se = np.sqrt(var / len(samples))
    assert np.all(np.abs(samples.mean(0) - mean) < 5 * se + 1e-6)
    np.testing.assert_allclose(samples.var(0), var, rtol=0.15, atol=1e-3)
    # One gate per example: positions p, q of one example covary by
    # sum_k sigma2_k o_k[p] o_k[q] (per-element noise would give 0).
    flat = samples.reshape(len(samples), 2, -1) - mean.reshape(1, 2, -1)
    for b in range(2):
        cov = flat[:, b].T @ flat[:, b] / len(samples)
        ob = o[:, b].reshape(3, -1)
        expected = np.einsum("k,kp,kq->pq", sigma2.astype("float64"), ob, ob)
        np.testing.assert_allclose(cov, expected, rtol=0.2, atol=0.03)
        assert np.max(np.abs(expected[~np.eye(4, dtype=bool)])) > 0.3  # per-element noise would fail it
    # Different examples draw independent gates.
    across = (flat[:, 0, 0] * flat[:, 1, 0]).mean()
    assert abs(across) < 5 * np.sqrt(var[0, 0, 0, 0] * var[1, 0, 0, 0] / len(samples))


def test_gate_mixture_without_noise_is_the_mean():
    rng = np.random.default_rng(4)
    outputs = rng.normal(size=(3, 2, 4, 4, 2)).astype("float32")
    theta = np.array([0.5, 0.0, -2.0], "float32")
    got = gates_lib.gate_mixture(outputs, theta, np.ones(3, "float32"), None).numpy()
    np.testing.assert_allclose(got, np.tensordot(theta, outputs, axes=1), rtol=1e-5, atol=1e-6)


def test_skip_dropout_drops_the_identity_per_example_and_keeps_the_mean():
    rate, batch = 0.4, 4000
    identity = [False, True, False]
    rng = np.random.default_rng(6)
    outputs = rng.normal(size=(3, batch, 2, 2, 1)).astype("float32")
    outputs[1] = 1.0  # the identity's output: ones, so each example's share of it is visible
    theta = np.array([0.5, 0.8, 0.3], "float32")
    keep = gates_lib.skip_keep(batch, identity, rate, keras.random.SeedGenerator(3), tf.float32).numpy()
    assert keep.shape == (batch, 3)
    np.testing.assert_array_equal(keep[:, [0, 2]], 1.0)
    np.testing.assert_allclose(np.unique(keep[:, 1]), [0.0, 1 / (1 - rate)], rtol=1e-6)
    dropped = keep[:, 1] == 0
    # Binomial share of dropped examples: within 4 standard errors of the rate.
    assert abs(dropped.mean() - rate) < 4 * np.sqrt(rate * (1 - rate) / batch)
    got = gates_lib.gate_mixture(outputs, theta, np.zeros(3, "float32"), None, keep).numpy()
    others = np.tensordot(theta[[0, 2]], outputs[[0, 2]], axes=1)
    # Per example, the identity is there at every position (scaled) or nowhere.
    np.testing.assert_allclose(got[dropped], others[dropped], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[~dropped], others[~dropped] + theta[1] / (1 - rate), rtol=1e-5, atol=1e-5)
    # The mixture's mean is the mean without dropout (Monte-Carlo over the batch).
    mean_identity = (got - others).mean()
    se = theta[1] * np.sqrt(rate / (1 - rate) / batch)
    assert abs(mean_identity - theta[1]) < 4 * se
    # With gate noise, the factors multiply each example's sampled gates.
    eps = rng.normal(size=(batch, 3)).astype("float32")
    sigma2 = np.array([0.1, 0.2, 0.05], "float32")
    z = (theta + np.sqrt(sigma2) * eps) * keep
    want = np.einsum("bk,kbr->br", z, outputs.reshape(3, batch, -1)).reshape(outputs.shape[1:])
    np.testing.assert_allclose(gates_lib.gate_mixture(outputs, theta, sigma2, eps, keep), want, rtol=1e-5, atol=1e-5)
