"""`tfvnas.loops.loop`, the loop under searches and trainings: strategies, batch checks, the KL weight, epoch data.

The loop is driven through a smoke `Searcher`. Its faults, resumes and
several-process runs are in tests/loops/test_faults.py and
tests/loops/test_distributed.py.
"""

import re

import pytest
import tensorflow as tf

from tests.conftest import LOGICAL_CPUS, mirrored
from tests.helpers.presets import TINY
from tfvnas import config as config_lib
from tfvnas import data as data_lib
from tfvnas.loops import distribute
from tfvnas.loops import searching as search_lib

pytestmark = pytest.mark.slow  # smoke searchers and strategies


def test_make_strategy_names_and_auto(monkeypatch):
    with pytest.raises(ValueError, match="^" + re.escape(
        "`strategy` must be one of auto, default, mirrored, multiworker. Received: strategy='tpu'"
    ) + "$"):
        distribute.make_strategy("tpu")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    if len(tf.config.list_logical_devices("GPU")) < 2:
        # Without TF_CONFIG and several GPUs, auto is the default strategy.
        assert distribute.make_strategy("auto") is tf.distribute.get_strategy()
    assert distribute.make_strategy("default").num_replicas_in_sync == 1
    assert distribute.is_chief(tf.distribute.get_strategy())


def test_one_mirrored_strategy_per_device_set():
    # A second collective MirroredStrategy over the same devices would reuse
    # the first one's collective keys; tfvnas hands out one and refuses others.
    strategy = mirrored()
    assert distribute.mirrored_strategy(LOGICAL_CPUS) is strategy
    # Other spellings of the same devices get the same strategy.
    short = [f"/cpu:{tf.DeviceSpec.from_string(d).device_index}" for d in LOGICAL_CPUS]
    assert distribute.mirrored_strategy(short) is strategy
    assert distribute.make_strategy("mirrored") is distribute.make_strategy("mirrored")
    distribute.check_strategy(strategy)
    second = tf.distribute.MirroredStrategy(LOGICAL_CPUS)
    with pytest.raises(ValueError, match="^" + re.escape(
        f"This process already ran a MirroredStrategy over {', '.join(strategy.extended.worker_devices)}; "
        "a second one over the same devices would reuse its collective keys and fail in its first "
        "all-reduce (a TensorFlow limitation). Create one strategy and pass it to every call, e.g. "
        '`tfvnas.loops.distribute.mirrored_strategy(devices)`, or pass `strategy="mirrored"`. '
        "Received: a new MirroredStrategy object"
    ) + "$"):
        search_lib.Searcher(config_lib.preset("smoke").replace(**TINY), data_lib.load("mnist-5k", seed=0),
                            strategy=second, verbose=0)
    # Strategies without collective keys are not affected.
    distribute.check_strategy(tf.distribute.MirroredStrategy(
        LOGICAL_CPUS, cross_device_ops=tf.distribute.ReductionToOneDevice()))


def test_batch_size_must_split_over_replicas():
    strategy = mirrored()
    cfg = config_lib.preset("smoke").replace(batch_size=31, **TINY)
    with pytest.raises(ValueError, match="^" + re.escape(
        "`batch_size` (the global batch) must be divisible by the number of replicas (2). "
        "Received: batch_size=31"
    ) + "$"):
        search_lib.Searcher(cfg, data_lib.load("mnist-5k", seed=0), strategy=strategy, verbose=0)


def test_batch_larger_than_data_half():
    cfg = config_lib.preset("smoke").replace(batch_size=200)
    with pytest.raises(ValueError, match=re.escape(
        "`batch_size` must be at most the size of half of the training data (128 examples). "
        "Received: batch_size=200"
    )):
        search_lib.search("mnist-5k", config=cfg, verbose=0)


def test_beta_warms_up_linearly():
    cfg = config_lib.preset("smoke").replace(kl_warmup=0.5, epochs=2, kl_weight=2.0)
    searcher = search_lib.Searcher.__new__(search_lib.Searcher)
    searcher.config = cfg
    searcher.total_steps = 8
    assert [searcher.beta(s) for s in (0, 2, 4, 8)] == [0.0, 1.0, 2.0, 2.0]


def test_the_epoch_pipeline_runs_without_the_tf_data_autotuner():
    # With the autotuner on, destroying an epoch's iterator blocked for about
    # 10 s in most epochs of the `quick` search (tfvnas.loops.loop).
    searcher = search_lib.Searcher(config_lib.PRESETS["smoke"], data_lib.load("mnist-5k"), verbose=0)
    batches = searcher.epoch_data(0)
    assert batches.dataset.options().autotune.enabled is False
    assert sum(1 for _ in batches) == searcher.steps_per_epoch
