"""Searches and trainings on streamed data: a `tf.data.Dataset` against the same arrays, and replicas' slices.

The runs use the smoke presets shrunk to 1 cell (and 1 node for the
search). For the same data and seed, the tf.data path gives the arrays'
batches (its shuffle buffer holds each half; tf.data's shuffle does not look
at the values, `tfvnas.readers`), the same halves, the same statistics, so
the searches and trainings are the same computation: the same genotypes,
and histories equal up to the last bits that TensorFlow's CPU kernels leave
free without op determinism (a training after a search in the same process
once differed there from the same training run first, arrays and tf.data
alike; `tests/test_streams.py` compares the batches bit for bit).
"""

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import mirrored
from tests.helpers.streams import keyed_images, keys_of
from tfvnas import config as config_lib
from tfvnas import data as data_lib
from tfvnas import streams
from tfvnas.loops import searching as search_lib
from tfvnas.loops import training as train_lib

pytestmark = pytest.mark.slow  # end-to-end runs

TINY_SEARCH = {"layers": 1, "nodes": 1, "epochs": 2}
TINY_TRAIN = {"layers": 1, "epochs": 1, "cutout": 8}


@pytest.fixture(scope="module")
def mnist():
    arrays = data_lib.load("mnist-5k")
    stream = {split: tf.data.Dataset.from_tensor_slices((getattr(arrays, f"x_{split}"), getattr(arrays, f"y_{split}")))
              for split in ("train", "val", "test")}
    return arrays, stream


def _same_history(a, b):
    assert len(a) == len(b)
    for ra, rb in zip(a, b):
        ra, rb = ({k: v for k, v in r.items() if k != "time_s"} for r in (ra, rb))
        assert ra.keys() == rb.keys()
        for key, value in ra.items():
            if isinstance(value, float):
                assert rb[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
            elif key not in ("log_alpha", "derivation_log_alpha"):
                assert rb[key] == value, key


def test_a_tf_data_search_is_the_arrays_search(mnist):
    arrays, stream = mnist
    a = search_lib.search(arrays, preset="smoke", config=TINY_SEARCH, verbose=0)
    b = search_lib.search(stream, preset="smoke", config=TINY_SEARCH, verbose=0)
    assert b.dataset == "tf.data"
    assert a.genotype == b.genotype and a.genotype_threshold == b.genotype_threshold
    _same_history(a.history, b.history)


def test_a_tf_data_training_is_the_arrays_training(mnist):
    arrays, stream = mnist
    runs = [train_lib.train("darts_v2", ds, preset="smoke", config=TINY_TRAIN, verbose=0) for ds in (arrays, stream)]
    _same_history(runs[0].history, runs[1].history)
    assert runs[0].test_accuracy == pytest.approx(runs[1].test_accuracy, abs=1e-3)
    for va, vb in zip(runs[0].model.variables, runs[1].model.variables):
        np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=1e-4, atol=1e-5, err_msg=va.path)


def test_errors_come_before_any_step():
    x = keyed_images(64)
    unknown = tf.data.Dataset.from_tensor_slices((x, keys_of(x) % 2)).filter(lambda image, label: True)
    with pytest.raises(ValueError, match="^The number of examples of the train dataset must be known"):
        search_lib.search(unknown, preset="smoke", config=TINY_SEARCH, verbose=0)
    with pytest.raises(ValueError, match=r"^The train dataset must yield \(image, label\) pairs"):
        train_lib.train("darts_v2", tf.data.Dataset.from_tensor_slices(x), preset="smoke", verbose=0)


def test_two_replicas_take_disjoint_slices_of_a_streamed_batch(tmp_path):
    x = keyed_images(256, shape=(8, 8, 1))
    streams.write_tfrecords(tmp_path / "train", x, keys_of(x) % 4, files=2)
    dataset = data_lib.load(f"tfrecord:{tmp_path}/train*")
    cfg = config_lib.preset("smoke").replace(**TINY_SEARCH, limit=None)
    searcher = search_lib.Searcher(cfg, dataset, strategy=mirrored(), verbose=0)
    steps = 0
    for batches in searcher.epoch_data(0, skip=1):
        for name, (images, labels) in batches.items():
            local = [keys_of(t.numpy()) for t in mirrored().experimental_local_results(images)]
            assert [len(k) for k in local] == [16, 16]  # the global batch of 32 over 2 replicas
            assert not set(local[0]) & set(local[1])
        steps += 1
    assert steps == searcher.steps_per_epoch - 1
