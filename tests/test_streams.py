"""Tests for `tfvnas.streams` and `tfvnas.readers`: streamed datasets, their readers and sharding."""

import re
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.streams import FakeBuilder, keyed_images, keys_of
from tfvnas import checks, data, readers, streams
from tfvnas.loops import distribute


def _raises(exc, message):
    return pytest.raises(exc, match="^" + re.escape(message) + "$")


def _context(workers, worker):
    return tf.distribute.InputContext(num_input_pipelines=workers, input_pipeline_id=worker,
                                      num_replicas_in_sync=workers)


def _batches(ds):
    return [(x, y) for x, y in ds.as_numpy_iterator()]


def _tf_data(x, y):
    return tf.data.Dataset.from_tensor_slices((x, y))


@pytest.fixture(scope="module")
def keyed():
    """60 train, 12 test keyed 6x6 grey images with labels `key % 3`."""
    x, x_test = keyed_images(60), keyed_images(12, offset=1000)
    return x, keys_of(x) % 3, x_test, keys_of(x_test) % 3


@pytest.fixture(scope="module")
def tfrecords(tmp_path_factory, keyed):
    """The keyed data as TFRecord files: train in 4 files, test in 1."""
    folder = tmp_path_factory.mktemp("tfrecords")
    x, y, x_test, y_test = keyed
    streams.write_tfrecords(folder / "train.tfrecord", x, y, files=4)
    streams.write_tfrecords(folder / "test.tfrecord", x_test, y_test)
    return str(folder / "{split}.tfrecord*")


# ---------------------------------------------------------------------------
# tf.data.Dataset


def test_tf_data_dict_keeps_the_splits_and_reads_the_facts_from_the_data(keyed):
    x, y, x_test, y_test = keyed
    ds = data.load({"train": _tf_data(x[:48], y[:48]), "val": _tf_data(x[48:], y[48:]),
                    "test": _tf_data(x_test, y_test)})
    assert isinstance(ds, streams.StreamedDataset)
    assert (ds.name, ds.image_shape, ds.dtype, ds.num_classes) == ("tf.data", (6, 6, 1), np.uint8, 3)
    assert ds.sizes() == {"train": 48, "val": 12, "test": 12}
    assert ds.input_range == (0.0, 255.0)
    # The same statistics as the arrays give, from a pass over the examples.
    arrays = data.Dataset("a", x[:48], y[:48].astype(np.int32), x[48:], y[48:].astype(np.int32), x_test,
                          y_test.astype(np.int32), 3)
    assert ds.normalisation() == arrays.normalisation()
    memory = ds.in_memory(100)
    np.testing.assert_array_equal(memory.x_test, x_test)
    np.testing.assert_array_equal(memory.y_val, y[48:])
    # Given facts are not computed.
    given = streams.from_tf_data(_tf_data(x, y), num_classes=7, normalisation=([1.0], [2.0]))
    assert given.num_classes == 7 and given.normalisation() == ([1.0], [2.0])


def test_tf_data_alone_carves_test_then_val_by_key_with_the_seed(keyed):
    x, y, _, _ = keyed
    ds = data.load(_tf_data(x, y), seed=4, val_fraction=0.25)
    assert ds.sizes() == {"train": 36, "val": 12, "test": 12}
    keys = {split: set(keys_of(getattr(ds.in_memory(100), f"x_{split}"))) for split in streams.SPLITS}
    assert set.union(*keys.values()) == set(range(60))
    assert sum(len(k) for k in keys.values()) == 60
    again = data.load(_tf_data(x, y), seed=4, val_fraction=0.25)
    np.testing.assert_array_equal(again.in_memory(100).x_test, ds.in_memory(100).x_test)
    other = data.load(_tf_data(x, y), seed=5, val_fraction=0.25)
    assert set(keys_of(other.in_memory(100).x_test)) != keys["test"]
    assert data.load(_tf_data(x, y), limit=10).sizes()["train"] == 10


def test_tf_data_batched_and_float_input(keyed):
    x, y, _, _ = keyed
    batched = _tf_data(x.astype(np.float32), y).batch(5, drop_remainder=True)
    ds = streams.from_tf_data(batched, num_classes=3)
    assert ds.dtype == np.float32 and sum(ds.sizes().values()) == 60
    low, high = ds.input_range
    assert 0.0 <= low < high <= 255.0


def test_the_user_pipeline_and_its_augmentation_are_kept(keyed):
    x, y, _, _ = keyed
    flipped = _tf_data(x, y).map(lambda image, label: (255 - image, label))
    ds = streams.from_tf_data({"train": flipped, "val": flipped.take(6), "test": flipped.take(6)})
    seen = np.concatenate([b[0] for b in _batches(ds.reader("train").evaluation(16))])
    np.testing.assert_array_equal(seen, 255.0 - x)


@pytest.mark.parametrize("make, message", [
    (lambda x, y: tf.data.Dataset.from_tensor_slices(x),
     "The train dataset must yield (image, label) pairs: an image tensor of shape (H, W, C), or a batch of them "
     "(N, H, W, C), and an integer label of shape () (or a batch of them). Received: element_spec="
     "TensorSpec(shape=(6, 6, 1), dtype=tf.uint8, name=None)"),
    (lambda x, y: tf.data.Dataset.from_tensor_slices({"image": x, "label": y}),
     "The train dataset must yield (image, label) pairs: an image tensor of shape (H, W, C), or a batch of them "
     "(N, H, W, C), and an integer label of shape () (or a batch of them). Received: element_spec="
     "{'image': TensorSpec(shape=(6, 6, 1), dtype=tf.uint8, name=None), "
     "'label': TensorSpec(shape=(), dtype=tf.int64, name=None)}"),
    (lambda x, y: _tf_data(x, y.astype(np.float32)),
     "The train dataset must yield (image, label) pairs: an image tensor of shape (H, W, C), or a batch of them "
     "(N, H, W, C), of a real dtype, and an integer label of shape () (or a batch of them). Received: image "
     "TensorSpec(shape=(6, 6, 1), dtype=tf.uint8, name=None), label TensorSpec(shape=(), dtype=tf.float32, "
     "name=None)"),
    (lambda x, y: _tf_data(x[..., 0, 0], y),
     "The train dataset must yield (image, label) pairs: an image tensor of shape (H, W, C), or a batch of them "
     "(N, H, W, C), of a real dtype, and an integer label of shape () (or a batch of them). Received: image "
     "TensorSpec(shape=(6,), dtype=tf.uint8, name=None), label TensorSpec(shape=(), dtype=tf.int64, name=None)"),
    (lambda x, y: _tf_data(x, y).filter(lambda image, label: label >= 0),
     "The number of examples of the train dataset must be known: the steps per epoch and the KL scale (1 / N) "
     "need it. Received: cardinality tf.data.UNKNOWN_CARDINALITY (after a `filter`, a `TFRecordDataset`, ...); "
     "tell it with `dataset.apply(tf.data.experimental.assert_cardinality(N))`"),
    (lambda x, y: _tf_data(x, y).repeat(),
     "The train dataset must be finite: tfvnas counts epochs itself. Received: a dataset that repeats forever "
     "(cardinality tf.data.INFINITE_CARDINALITY); remove its `repeat()`"),
    (lambda x, y: _tf_data(x, y).batch(7),
     "The number of examples of the batched train dataset must be known: its last batch may be smaller. "
     "Received: batches of an unknown size; pass it unbatched (`dataset.unbatch()` and `assert_cardinality(N)`), "
     "or batched with `drop_remainder=True`"),
])
def test_tf_data_errors_say_what_was_expected(keyed, make, message):
    x, y, _, _ = keyed
    with _raises(ValueError, message):
        data.load(make(x, y))


def test_unknown_cardinality_told_is_accepted(keyed):
    x, y, _, _ = keyed
    filtered = _tf_data(x, y).filter(lambda image, label: label >= 0)
    ds = data.load(filtered.apply(tf.data.experimental.assert_cardinality(60)))
    assert sum(ds.sizes().values()) == 60


def test_a_dict_needs_train():
    with _raises(ValueError, "A dict of datasets must have the key 'train' and optionally 'val' and 'test'. "
                             "Received: keys ['test', 'validation']"):
        data.load({"validation": None, "test": None})


def test_labels_out_of_range_stop_the_loop_with_a_value_error(keyed):
    x, y, _, _ = keyed
    ds = streams.from_tf_data(_tf_data(x, y), num_classes=2)  # labels go to 2
    with _raises(ValueError, "Labels of the train dataset must be smaller than num_classes=2 (pass `num_classes` "
                             "to tfvnas.streams.from_tf_data when the first examples do not show every class)"):
        with distribute.data_checks():
            _batches(ds.reader("train").epoch(8, seed=0, steps=4))


def test_an_image_of_another_shape_stops_the_loop_with_a_value_error(keyed):
    x, y, _, _ = keyed
    ragged = tf.data.Dataset.from_generator(
        lambda: ((x[i] if i else x[i, :5], y[i]) for i in range(len(x))),
        output_signature=(tf.TensorSpec((None, None, 1), tf.uint8), tf.TensorSpec((), tf.int64)),
    ).apply(tf.data.experimental.assert_cardinality(60))
    ds = streams.from_tf_data(ragged, num_classes=3)
    assert ds.image_shape == (5, 6, 1)  # the first image's
    with _raises(ValueError, "Every image of the train dataset must have the shape (5, 6, 1) of the first "
                             "training image; one has another shape"):
        with distribute.data_checks():
            _batches(ds.reader("train").evaluation(8))


# ---------------------------------------------------------------------------
# Readers


def test_a_stream_gives_the_batches_of_the_arrays_when_its_buffer_holds_the_data(keyed):
    x, y, _, _ = keyed
    indexed = readers.IndexedReader.from_arrays(x, y)
    stream = streams.from_tf_data(_tf_data(x, y), num_classes=3, val_fraction=0.1).reader("train")
    half = np.sort(np.random.default_rng(0).permutation(len(stream))[:20])
    keys = stream.keys[half]
    a = _batches(indexed.subset(keys).epoch(8, seed=11, steps=2))
    b = _batches(stream.subset(half).epoch(8, seed=11, steps=2))
    assert len(a) == len(b) == 2
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert set(keys_of(np.concatenate([xb for xb, _ in b]))) <= set(keys)


def test_skipping_gives_the_rest_of_the_epoch(tfrecords):
    reader = data.load(f"tfrecord:{tfrecords}").reader("train")
    full = _batches(reader.epoch(8, seed=3, steps=5))
    rest = _batches(reader.epoch(8, seed=3, steps=5, skip=2))
    assert len(rest) == 3
    for (xa, _), (xb, _) in zip(full[2:], rest):
        np.testing.assert_array_equal(xa, xb)


@pytest.mark.parametrize("source", ["tfrecord_files", "tfrecord_records", "tf_data"])
def test_two_workers_read_disjoint_shares(source, keyed, tfrecords, tmp_path):
    x, y, _, _ = keyed
    if source == "tfrecord_files":  # 4 files: each worker reads 2 whole files
        reader = streams.from_tfrecords(tfrecords.replace("{split}", "train")).reader("train")
    elif source == "tfrecord_records":  # 1 file: each worker decodes every other record
        streams.write_tfrecords(tmp_path / "one.tfrecord", x, y)
        reader = streams.from_tfrecords(str(tmp_path / "one.tfrecord")).reader("train")
    else:
        reader = streams.from_tf_data(_tf_data(x, y), num_classes=3).reader("train")
    seen = []
    for worker in range(2):
        context = _context(2, worker)
        steps = reader.steps(8, context)
        epoch = _batches(reader.epoch(8, seed=5, steps=steps, context=context))
        assert len(epoch) == steps and all(len(b[1]) == 4 for b in epoch)  # 8 / 2 workers
        evaluation = _batches(reader.evaluation(8, context))
        seen.append(set(keys_of(np.concatenate([b[0] for b in evaluation]))))
        assert seen[-1] >= set(keys_of(np.concatenate([b[0] for b in epoch])))
    # Every example once, on one worker; as many evaluation steps on both.
    assert not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) == len(reader)
    assert len(_batches(reader.evaluation(8, _context(2, 0)))) == len(_batches(reader.evaluation(8, _context(2, 1))))


def test_indexed_workers_split_the_global_batches(keyed):
    # Arrays and image files: each worker loads its rows of the global
    # batches, which are those of one worker.
    x, y, _, _ = keyed
    reader = readers.IndexedReader.from_arrays(x, y)
    whole = _batches(reader.epoch(8, seed=2, steps=3))
    parts = [_batches(reader.epoch(8, seed=2, steps=3, context=_context(2, w))) for w in range(2)]
    for step, (xw, _) in enumerate(whole):
        np.testing.assert_array_equal(np.concatenate([parts[0][step][0], parts[1][step][0]]), xw)
    evaluation = [_batches(reader.evaluation(16, _context(2, w))) for w in range(2)]
    assert [len(e) for e in evaluation] == [4, 4]  # 60 examples: the last global batch of 12 split 6 + 6
    keys = [set(keys_of(np.concatenate([b[0] for b in e]))) for e in evaluation]
    assert not keys[0] & keys[1] and keys[0] | keys[1] == set(range(60))


# ---------------------------------------------------------------------------
# TFRecord files


def test_tfrecord_splits_counts_labels_and_stratified_val(tfrecords, keyed):
    x, y, x_test, _ = keyed
    ds = data.load(f"tfrecord:{tfrecords}", seed=2, val_fraction=0.2)
    assert ds.name == f"tfrecord:{tfrecords}"
    assert (ds.image_shape, ds.dtype, ds.num_classes) == ((6, 6, 1), np.uint8, 3)
    assert ds.sizes() == {"train": 48, "val": 12, "test": 12}
    memory = ds.in_memory(100)
    np.testing.assert_array_equal(np.bincount(memory.y_val), [4, 4, 4])  # stratified
    np.testing.assert_array_equal(keys_of(memory.x_test), keys_of(x_test))
    assert set(keys_of(memory.x_train)) | set(keys_of(memory.x_val)) == set(range(60))
    np.testing.assert_array_equal(memory.y_train, keys_of(memory.x_train) % 3)
    # Images round-trip through png.
    np.testing.assert_array_equal(memory.x_test, x_test)


def test_tfrecord_errors(tmp_path, keyed):
    x, y, _, _ = keyed
    with _raises(ValueError, f"No TFRecord files match the training pattern '{tmp_path}/none-train*'. "
                             f"Received: pattern='{tmp_path}/none-{{split}}*'"):
        data.load(f"tfrecord:{tmp_path}/none-{{split}}*")
    (tmp_path / "junk-train").write_bytes(b"not a record")
    with _raises(ValueError, "Every TFRecord file must hold tf.train.Example records with the features 'image' "
                             "(bytes: an encoded png, jpeg, bmp or gif image) and 'label' (int64: the class index). "
                             f"Received: {tmp_path}/junk-train, which does not"):
        data.load(f"tfrecord:{tmp_path}/junk-{{split}}*")
    streams.write_tfrecords(tmp_path / "bad-train", x[:6], y[:6])
    streams.write_tfrecords(tmp_path / "bad-test", x[:2], np.array([0, 9]))
    with _raises(ValueError, "The labels of the test TFRecord files must be in [0, num_classes=3). "
                             f"Received: min 0, max 9 in '{tmp_path}/bad-test*'"):
        data.load(f"tfrecord:{tmp_path}/bad-{{split}}*")


# ---------------------------------------------------------------------------
# TFDS


def test_tfds_adapter_reads_a_builders_files_and_metadata(tmp_path, keyed):
    # A stand-in builder (what from_tfds reads of one), so this runs without tensorflow-datasets.
    x, y, x_test, y_test = keyed
    builder = FakeBuilder(tmp_path, {"train": (x, y), "test": (x_test, y_test)}, (6, 6, 1), 3)
    ds = data.load(builder, seed=1)
    assert (ds.name, ds.image_shape, ds.num_classes, ds.dtype) == ("tfds:fake", (6, 6, 1), 3, np.uint8)
    assert ds.sizes() == {"train": 54, "val": 6, "test": 12}
    memory = ds.in_memory(100)
    # Read in turns from the split's two files.
    assert sorted(keys_of(memory.x_test)) == sorted(keys_of(x_test))
    assert set(keys_of(memory.x_train)) | set(keys_of(memory.x_val)) == set(range(60))
    # Two workers read one file each.
    reader = ds.reader("train")
    shares = [set(keys_of(np.concatenate([b[0] for b in _batches(reader.evaluation(8, _context(2, w)))])))
              for w in range(2)]
    assert not shares[0] & shares[1] and shares[0] | shares[1] == set(keys_of(memory.x_train))


def test_tfds_name_without_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with _raises(checks.ActionableError,
                 "TFDS datasets need the `tensorflow-datasets` package: pip install 'tfvnas[tfds]'. "
                 "Received: dataset 'tfds:mnist'"):
        data.load("tfds:mnist")


def test_tfds_dataset_built_here(tmp_path):
    """A real TFDS dataset, built from a generator (no download): by builder and by name."""
    tfds = pytest.importorskip("tensorflow_datasets")

    class TfvnasTiny(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, supervised_keys=("image", "label"), features=tfds.features.
                                         FeaturesDict({"image": tfds.features.Image(shape=(6, 6, 1)),
                                                       "label": tfds.features.ClassLabel(num_classes=3)}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(40, 0), "test": self._generate_examples(9, 1000)}

        def _generate_examples(self, n, offset):
            for i, image in enumerate(keyed_images(n, offset=offset)):
                yield i, {"image": image, "label": (offset + i) % 3}

    builder = TfvnasTiny(data_dir=str(tmp_path))
    builder.download_and_prepare()
    by_builder = data.load(builder)
    by_name = streams.from_tfds("tfvnas_tiny", data_dir=str(tmp_path))
    for ds in (by_builder, by_name):
        assert (ds.image_shape, ds.num_classes) == ((6, 6, 1), 3)
        assert ds.sizes() == {"train": 36, "val": 4, "test": 9}
        memory = ds.in_memory(100)
        np.testing.assert_array_equal(memory.y_train, keys_of(memory.x_train) % 3)
        assert set(keys_of(memory.x_test)) == set(range(1000, 1009))
