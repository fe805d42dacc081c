"""The fused optimizers against Keras' own SGD and Adam, step by step."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import mirrored
from tfvnas.loops import optim

SHAPES = [(3, 3, 2, 4), (4,), (5, 2)]


def _variables(seed):
    rng = np.random.default_rng(seed)
    return [keras.Variable(rng.normal(size=s).astype("float32")) for s in SHAPES]


def _grads(step, scale=1.0):
    rng = np.random.default_rng(100 + step)
    return [tf.constant(scale * rng.normal(size=s).astype("float32")) for s in SHAPES]


def _schedule():
    return keras.optimizers.schedules.CosineDecay(0.1, decay_steps=6, alpha=0.1)


CASES = {
    "sgd": (
        lambda: keras.optimizers.SGD(_schedule(), momentum=0.9, weight_decay=3e-2, global_clipnorm=2.0),
        lambda: optim.SGD(_schedule(), momentum=0.9, weight_decay=3e-2, global_clipnorm=2.0),
    ),
    "sgd_plain": (
        lambda: keras.optimizers.SGD(0.05),
        lambda: optim.SGD(0.05),
    ),
    "adam": (
        lambda: keras.optimizers.Adam(0.05, beta_1=0.5, beta_2=0.999),
        lambda: optim.Adam(0.05, beta_1=0.5, beta_2=0.999),
    ),
}


# Tolerances: float32 rounding of variables of order 1 (the fused kernels
# and Keras order the same arithmetic differently: a few ulps per step).
@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_keras_step_by_step(case):
    make_keras, make_fused = CASES[case]
    reference, fused = _variables(0), _variables(0)
    keras_opt, fused_opt = make_keras(), make_fused()
    keras_opt.build(reference)
    fused_opt.build(fused)

    @tf.function
    def fused_step(grads):
        fused_opt.apply(grads)

    for step in range(6):
        # Large gradients on odd steps, so the clip is active on some steps only.
        grads = _grads(step, scale=3.0 if step % 2 else 0.3)
        keras_opt.apply_gradients(zip(grads, reference))
        fused_step(grads)
        for r, f in zip(reference, fused):
            np.testing.assert_allclose(f.numpy(), r.numpy(), rtol=1e-5, atol=5e-6)
        assert int(fused_opt.iterations.numpy()) == step + 1
        np.testing.assert_allclose(float(fused_opt.learning_rate), float(keras_opt.learning_rate), rtol=1e-6)


def test_variables_without_gradient_are_left_alone():
    variables = _variables(1)
    before = [v.numpy() for v in variables]
    opt = optim.SGD(0.1, momentum=0.9, weight_decay=0.1)
    opt.build(variables)
    grads = _grads(0)
    opt.apply([grads[0], None, grads[2]])
    np.testing.assert_array_equal(variables[1].numpy(), before[1])
    np.testing.assert_array_equal(opt.momentums[1].numpy(), np.zeros(SHAPES[1], np.float32))
    assert not np.array_equal(variables[0].numpy(), before[0])


def test_errors():
    opt = optim.Adam(0.1)
    with pytest.raises(ValueError, match="^" + re.escape(
        "The optimizer is not built: call `build(variables)` before `apply`."
    ) + "$"):
        opt.apply(_grads(0))
    opt.build(_variables(0))
    with pytest.raises(ValueError, match="^" + re.escape(
        "Expected one gradient per built variable (3). Received: 2"
    ) + "$"):
        opt.apply(_grads(0)[:2])
    swapped = _grads(0)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    with pytest.raises(ValueError, match=r"^Gradient 0 has shape \(.*\), but built variable 0 \(.*\) has shape "
                       r"\(.*\): gradients must come in the order of the variables given to `build`.$"):
        opt.apply(swapped)


def test_checkpoint_restores_slots_and_step(tmp_path):
    variables = _variables(2)
    opt = optim.Adam(0.1)
    opt.build(variables)
    opt.apply(_grads(0))
    path = tf.train.Checkpoint(opt=opt).save(str(tmp_path / "ckpt"))
    saved = [m.numpy() for m in opt.m]
    opt.apply(_grads(1))
    tf.train.Checkpoint(opt=opt).restore(path).assert_consumed()
    assert int(opt.iterations.numpy()) == 1
    # The optimizer holds its step and slots only, not the model's weights.
    assert len(opt.variables) == 1 + 2 * len(SHAPES)
    stored = [name for name, _ in tf.train.list_variables(path) if name.startswith("opt/")]
    assert len(stored) == 1 + 2 * len(SHAPES), stored
    for m, s in zip(opt.m, saved):
        np.testing.assert_array_equal(m.numpy(), s)


def test_mirrored_sums_replica_gradients_and_keeps_copies_identical():
    # Each replica contributes its own gradient; the update uses their sum,
    # clipped as a whole, exactly as one device given the summed gradient.
    strategy = mirrored()
    with strategy.scope():
        fused = _variables(3)
    # Built outside the scope: the step counter and slots follow the variables' strategy.
    opt = optim.SGD(_schedule(), momentum=0.9, weight_decay=1e-2, global_clipnorm=1.0)
    opt.build(fused)
    reference = _variables(3)
    keras_opt = keras.optimizers.SGD(_schedule(), momentum=0.9, weight_decay=1e-2, global_clipnorm=1.0)
    keras_opt.build(reference)
    per_replica = [_grads(10), _grads(11)]

    @tf.function
    def step():
        def replica_fn():
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            grads = [tf.where(tf.equal(replica, 0), a, b) for a, b in zip(*per_replica)]
            opt.apply(grads)

        strategy.run(replica_fn)

    for _ in range(3):
        step()
        keras_opt.apply_gradients(zip([a + b for a, b in zip(*per_replica)], reference))
    for r, f in zip(reference, fused):
        copies = [c.numpy() for c in strategy.experimental_local_results(optim._tf_variable(f))]
        np.testing.assert_array_equal(copies[0], copies[1])
        np.testing.assert_allclose(copies[0], r.numpy(), rtol=1e-5, atol=5e-6)
    steps = [int(c.numpy()) for c in strategy.experimental_local_results(opt.iterations)]
    assert steps == [3, 3]



def test_mirrored_chunks_of_one_shape_update_their_own_variables():
    # TensorFlow traces a distributed-variable argument by shape and dtype and
    # captures the first one: two chunks of one shape (and a second optimizer)
    # once updated the first chunk's variables with every chunk's gradients.
    strategy = mirrored()
    count = 2 * optim.CHUNK + 1
    rng = np.random.default_rng(0)
    start = [rng.normal(size=(3, 2)).astype("float32") for _ in range(count)]
    grads = [tf.constant(rng.normal(size=(3, 2)).astype("float32")) for _ in range(count)]
    results = []
    for _ in range(2):  # a second optimizer reuses the first one's traced updates
        with strategy.scope():
            fused = [keras.Variable(v) for v in start]
        opt = optim.SGD(0.1, momentum=0.9)
        opt.build(fused)

        @tf.function
        def step():
            def replica_fn():
                factor = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group + 1, tf.float32)
                opt.apply([g * factor for g in grads])

            strategy.run(replica_fn)

        step()
        step()
        results.append(fused)
    reference = [keras.Variable(v) for v in start]
    keras_opt = keras.optimizers.SGD(0.1, momentum=0.9)
    for _ in range(2):
        keras_opt.apply_gradients(zip([3.0 * g for g in grads], reference))  # the replicas' sum: 1g + 2g
    for fused in results:
        for r, f in zip(reference, fused):
            for copy in strategy.experimental_local_results(optim._tf_variable(f)):
                np.testing.assert_allclose(copy.numpy(), r.numpy(), rtol=1e-5, atol=1e-6)


def test_weight_decay_skips_the_excluded_variables_like_keras():
    # Keras' own exclude_from_weight_decay is the reference.
    reference, fused = _variables(2), _variables(2)
    keras_opt = keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=0.5)
    keras_opt.exclude_from_weight_decay(var_list=[reference[1]])
    fused_opt = optim.SGD(0.1, momentum=0.9, weight_decay=0.5)
    fused_opt.exclude_from_weight_decay([fused[1]])
    keras_opt.build(reference)
    fused_opt.build(fused)
    for step in range(3):
        grads = _grads(step)
        keras_opt.apply_gradients(zip(grads, reference))
        fused_opt.apply(grads)
        for r, f in zip(reference, fused):
            np.testing.assert_allclose(f.numpy(), r.numpy(), rtol=1e-5, atol=5e-6)


def test_no_data_no_decay_of_log_sigma2():
    # The bug this pins: decay on every variable moved a variational layer's
    # log_sigma2 from -10 towards 0 with zero gradients (no data at all).
    from tfvnas.layers import variational

    layer = variational.VariationalConv2D(2, 3, seed=0)
    model = keras.Sequential([keras.Input((5, 5, 1)), layer])
    opt = optim.SGD(0.1, momentum=0.9, weight_decay=3e-2)
    opt.exclude_from_weight_decay(variational.weight_decay_exclusions(model))
    opt.build(model.trainable_variables)
    theta = layer.theta.numpy()
    for _ in range(50):
        opt.apply([tf.zeros_like(v) for v in model.trainable_variables])
    np.testing.assert_array_equal(layer.log_sigma2.numpy(), np.full(layer.log_sigma2.shape, -10.0))
    np.testing.assert_array_equal(layer.theta.numpy(), theta)
    # A config field asks for decay on the means: then theta decays, log_sigma2 still not.
    opt = optim.SGD(0.1, weight_decay=3e-2)
    opt.exclude_from_weight_decay(variational.weight_decay_exclusions(model, include_means=True))
    opt.build(model.trainable_variables)
    opt.apply([tf.zeros_like(v) for v in model.trainable_variables])
    np.testing.assert_allclose(layer.theta.numpy(), theta * (1 - 0.1 * 3e-2), rtol=1e-6)
    np.testing.assert_array_equal(layer.log_sigma2.numpy(), np.full(layer.log_sigma2.shape, -10.0))


def test_adam_weight_decay_is_l2_on_the_gradient():
    # torch.optim.Adam(weight_decay=wd) adds wd * w to the gradient: Keras'
    # Adam on that gradient is the reference.
    reference, fused = _variables(3), _variables(3)
    keras_opt = keras.optimizers.Adam(3e-2, beta_1=0.5, beta_2=0.999)
    fused_opt = optim.Adam(3e-2, beta_1=0.5, beta_2=0.999, weight_decay=1e-1)
    keras_opt.build(reference)
    fused_opt.build(fused)
    for step in range(4):
        grads = _grads(step)
        keras_opt.apply_gradients([(g + 1e-1 * v, v) for g, v in zip(grads, reference)])
        fused_opt.apply(grads)
        for r, f in zip(reference, fused):
            np.testing.assert_allclose(f.numpy(), r.numpy(), rtol=1e-5, atol=5e-6)


def test_the_gate_learning_rate_holds_then_falls_along_a_cosine_to_zero():
    import math

    from tfvnas.loops.searching import arch_schedule

    assert arch_schedule(0.3, 0.0, 100) == 0.3  # no anneal: a constant
    schedule = arch_schedule(0.3, 0.25, 100)
    for step in (0, 40, 75):
        assert float(schedule(step)) == pytest.approx(0.3, rel=1e-6)
    for step in (80, 90, 99):
        want = 0.3 * 0.5 * (1 + math.cos(math.pi * (step - 75) / 25))
        assert float(schedule(step)) == pytest.approx(want, rel=1e-5, abs=1e-7)
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-7)
    assert float(schedule(130)) == pytest.approx(0.0, abs=1e-7)


def test_a_clipped_update_is_not_conditional_and_lets_nan_through_as_keras():
    """Without `skip_nonfinite` the update is unconditional (no `tf.cond` in its graph, which would trace the
    whole update a second time as a branch), and a non-finite gradient reaches the weights as in Keras' SGD."""
    bad = [tf.constant(np.full(s, np.nan, "float32")) for s in SHAPES]
    reference, fused = _variables(2), _variables(2)
    keras_opt = keras.optimizers.SGD(0.1, momentum=0.9, global_clipnorm=1.0)
    fused_opt = optim.SGD(0.1, momentum=0.9, global_clipnorm=1.0)
    keras_opt.build(reference)
    fused_opt.build(fused)

    @tf.function
    def step(grads):
        return fused_opt.apply(grads)

    graph = step.get_concrete_function(bad).graph.as_graph_def()
    ops = {n.op for n in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
    assert not ops & {"If", "StatelessIf"}, sorted(ops & {"If", "StatelessIf"})
    assert step(bad) is None
    keras_opt.apply_gradients(zip(bad, reference))
    for r, f in zip(reference, fused):
        assert np.isnan(r.numpy()).all() and np.isnan(f.numpy()).all()
    assert int(fused_opt.iterations.numpy()) == 1
