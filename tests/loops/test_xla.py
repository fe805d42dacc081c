"""XLA (`jit_compile`): the compiled update computes the loss and gradients the plain one does.

The noise is the same with and without XLA (`tfvnas.layers.noise.portable_uniform`),
so two loops built from one configuration, one compiled, compute the same
numbers on the same batch up to float rounding.
"""

import re

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import mirrored
from tfvnas import config as config_lib
from tfvnas import data as data_lib
from tfvnas.loops import searching as search_lib
from tfvnas.loops import training as train_lib
from tfvnas.models import zoo

pytestmark = pytest.mark.slow  # XLA compiles a supernet step in minutes on two busy cores


@pytest.fixture(scope="module")
def mnist():
    return data_lib.load("mnist-5k", seed=0)


def _loss_and_gradients(loop, variables, x, y):
    """`({stat: float}, [gradient array or None])` of one update of `variables` on `(x, y)`."""
    loop.model.kl_scale.assign(1e-3)  # a KL the size of a real run's, so its gradients count

    @tf.function
    def run(x, y):
        return loop.loss_and_gradients(loop._loss, variables, x, y)

    stats, grads = run(x, y)
    return {k: float(v) for k, v in stats.items()}, [None if g is None else g.numpy() for g in grads]


def _assert_same_update(plain, compiled):
    (stats, grads), (xla_stats, xla_grads) = plain, compiled
    assert stats.keys() == xla_stats.keys()
    for key in stats:
        assert xla_stats[key] == pytest.approx(stats[key], rel=1e-5, abs=1e-6), key
    assert [g is None for g in grads] == [g is None for g in xla_grads]
    for g, h in zip(grads, xla_grads):
        if g is not None:
            np.testing.assert_allclose(h, g, rtol=1e-3, atol=1e-4 * float(np.abs(g).max()) + 1e-9)


def test_xla_search_update_computes_the_plain_loss_and_gradients(mnist):
    # Gate noise and the weights' local reparameterisation noise (weight_vd) both drawn.
    updates = []
    for jit in (False, True):
        cfg = config_lib.preset("smoke").replace(layers=1, nodes=1, weight_vd=True, jit_compile=jit)
        searcher = search_lib.Searcher(cfg, mnist, verbose=0)
        # Under XLA every edge is traced inline: a shared edge function's variable arguments would be compiled
        # in as constants, and the step compiled anew at every call.
        assert searcher.model.shared_edge_functions is (not jit)
        x, y = next(iter(searcher.epoch_data(0)))["weights"]
        variables = searcher.model.weight_variables + searcher.model.arch_variables
        updates.append(_loss_and_gradients(searcher, variables, x, y))
    _assert_same_update(*updates)


def _trainer(mnist, strategy=None, **fields):
    cfg = config_lib.TRAIN_PRESETS["smoke"].replace(layers=1, drop_path=0.2, **fields)
    trainer = train_lib.Trainer(zoo.load_genotype("darts_v2"), cfg, mnist, verbose=0, strategy=strategy)
    trainer.model.drop_path_progress.assign(0.5)  # drop-path's noise drawn too
    return trainer


def _steps(trainer, count):
    """The statistics of `count` training steps, then every model variable."""
    trainer.model.kl_scale.assign(1e-3)
    before = [v.numpy() for v in trainer.model.trainable_variables]
    batches = iter(trainer.epoch_data(0))
    stats = [{k: float(v) for k, v in trainer.train_step(next(batches)).items()} for _ in range(count)]
    assert not all(np.array_equal(a, v.numpy()) for a, v in zip(before, trainer.model.trainable_variables))
    return stats, [v.numpy() for v in trainer.model.variables]


def _assert_same_steps(plain, compiled):
    (stats, variables), (xla_stats, xla_variables) = plain, compiled
    for a, b in zip(stats, xla_stats):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), key
    for a, b in zip(variables, xla_variables):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


def test_xla_training_update_and_steps_compute_the_plain_ones(mnist):
    trainers = [_trainer(mnist, jit_compile=jit) for jit in (False, True)]
    x, y = next(iter(trainers[0].epoch_data(0)))["train"]
    _assert_same_update(*[_loss_and_gradients(t, t.model.trainable_variables, x, y) for t in trainers])
    _assert_same_steps(*[_steps(t, 2) for t in trainers])


def test_xla_training_steps_on_two_replicas_compute_the_plain_ones(mnist):
    # The cluster holds no collective: the batch norms' mirrored moving
    # statistics are returned and assigned after it, the optimizer
    # all-reduces outside.
    strategy = mirrored()
    trainers = [_trainer(mnist, strategy, jit_compile=jit) for jit in (False, True)]
    _assert_same_steps(*[_steps(t, 2) for t in trainers])


def test_xla_with_synchronised_batch_norm_on_two_replicas_is_refused(mnist):
    with pytest.raises(ValueError, match=re.escape(
            "`jit_compile` cannot be combined with `sync_bn` on several replicas")):
        _trainer(mnist, mirrored(), jit_compile=True, sync_bn=True)
