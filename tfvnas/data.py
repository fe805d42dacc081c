"""Image classification datasets for architecture search.

`load()` returns a dataset with fixed train / validation / test splits:
a `Dataset` held as NumPy arrays (NHWC images, int32 labels) for

- `"mnist-5k"`: 5,000 real MNIST digits bundled with the package (no download).
- a path to a `.npz` file holding `x_train, y_train, x_test, y_test` (and
  optionally `x_val, y_val`).
- `"mnist"`, `"fashion_mnist"`, `"cifar10"`, `"cifar100"` through
  `keras.datasets` (needs the internet on first use);

and a `tfvnas.streams.StreamedDataset`, read as the loops need it and never
held whole, for

- a path to a directory of class sub-folders of images (`tfvnas.image_folders`);
- `"tfrecord:PATTERN"`, TFRecord files of encoded images and int labels;
- `"tfds:NAME"` or a TFDS builder (with `tensorflow-datasets` installed);
- a `tf.data.Dataset` of `(image, label)` pairs, or a dict of them with the
  keys `"train"`, `"val"` and `"test"`.

Both give each split as a reader (`Dataset.reader(split)`, see
`tfvnas.readers`), which is all the loops use.

`make_tf_dataset()` turns a split into a batched `tf.data.Dataset`.

Images are kept unnormalised (uint8 stays uint8); models that want
normalised inputs use `Dataset.normalisation()` inside the model, so exported
models take raw pixels.

Image directories are read by `tfvnas.image_folders` (through
`keras.utils.image_dataset_from_directory`, with the checks Keras lacks);
their splits are drawn here, as for arrays.
"""

import dataclasses
import importlib.resources
import os

import keras
import numpy as np
import tensorflow as tf

from tfvnas import checks, image_folders, readers

_BUNDLED = {"mnist-5k": ("tfvnas.datasets", "mnist_5k.npz")}
_KERAS = ("mnist", "fashion_mnist", "cifar10", "cifar100")
_REQUIRED_KEYS = ("x_train", "y_train", "x_test", "y_test")
_SPLITS = ("train", "val", "test")
# Share of a directory without train/ and test/ sub-folders held out as test.
_DIRECTORY_TEST_FRACTION = 0.2


def known_datasets():
    """Returns the dataset names `load()` accepts besides paths.

    Returns:
        A tuple of names: the bundled `"mnist-5k"` first, then the
        `keras.datasets` ones.
    """
    return tuple(_BUNDLED) + _KERAS


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """An image classification dataset with fixed train/val/test splits.

    Args:
        name: Name of the dataset (a known name, or the file / directory name).
        x_train: Training images, shape `(N, H, W, C)`, dtype uint8 or float32.
        y_train: Training labels, shape `(N,)`, dtype int32.
        x_val: Validation images, same image shape and dtype as `x_train`.
        y_val: Validation labels.
        x_test: Test images, same image shape and dtype as `x_train`.
        y_test: Test labels.
        num_classes: Number of classes; every label is smaller.

    Raises:
        ValueError: If the arrays do not have the shapes and dtypes above.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    def __post_init__(self):
        if not isinstance(self.name, str):
            raise ValueError(
                f"`name` must be a str. Received: name={self.name!r}"
            )
        if not _is_int(self.num_classes) or self.num_classes < 1:
            raise ValueError(
                "`num_classes` must be a positive int. "
                f"Received: num_classes={self.num_classes!r}"
            )
        dtype = getattr(self.x_train, "dtype", None)
        for split in _SPLITS:
            x = getattr(self, f"x_{split}")
            y = getattr(self, f"y_{split}")
            if (
                not isinstance(x, np.ndarray)
                or x.ndim != 4
                or x.dtype not in (np.uint8, np.float32)
                or x.dtype != dtype
            ):
                raise ValueError(
                    f"`x_{split}` must be a 4-D (N, H, W, C) NumPy array of "
                    "dtype uint8 or float32, the same dtype for every split. "
                    f"Received: x_{split} of {_describe(x)}"
                )
            if x.shape[1:] != self.x_train.shape[1:]:
                raise ValueError(
                    f"`x_{split}` images must have the shape of `x_train` "
                    f"images {self.x_train.shape[1:]}. "
                    f"Received: x_{split} image shape={x.shape[1:]}"
                )
            if (
                not isinstance(y, np.ndarray)
                or y.ndim != 1
                or y.dtype != np.int32
            ):
                raise ValueError(
                    f"`y_{split}` must be a 1-D NumPy array of dtype int32. "
                    f"Received: y_{split} of {_describe(y)}"
                )
            if len(x) != len(y) or len(x) == 0:
                raise ValueError(
                    f"`x_{split}` and `y_{split}` must hold the same, "
                    f"positive number of examples. Received: len(x_{split})="
                    f"{len(x)}, len(y_{split})={len(y)}"
                )
            if y.min() < 0 or y.max() >= self.num_classes:
                raise ValueError(
                    f"`y_{split}` labels must be in [0, num_classes="
                    f"{self.num_classes}). Received: min(y_{split})={y.min()}, "
                    f"max(y_{split})={y.max()}"
                )

    def __repr__(self):
        return f"Dataset({self.summary()})"

    @property
    def image_shape(self):
        """The `(H, W, C)` shape of one image."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def input_range(self):
        """The `(low, high)` range of pixel values.

        `(0.0, 255.0)` for uint8 images; for float images, the minimum and
        maximum of `x_train`.
        """
        if self.x_train.dtype == np.uint8:
            return (0.0, 255.0)
        return (float(self.x_train.min()), float(self.x_train.max()))

    def normalisation(self):
        """Per-channel mean and standard deviation of `x_train`.

        Computed on the stored scale (0..255 for uint8 images), for models
        that normalise their inputs inside the model.

        Returns:
            A tuple `(mean, std)` of lists of `C` Python floats; each std is
            at least 1e-6 so that dividing by it is safe.
        """
        x = self.x_train
        chunk = readers.statistics_chunk(x.shape[1:])
        # Two chunked float64 passes: exact enough and never a full
        # float64 copy of the training set.
        mean, std, _, _ = readers.statistics(
            lambda: (x[start:start + chunk] for start in range(0, len(x), chunk)), x.shape[-1])
        return mean, std

    @property
    def dtype(self):
        """The images' stored dtype (uint8 or float32)."""
        return self.x_train.dtype

    def reader(self, split):
        """A `tfvnas.readers.IndexedReader` of the `split` ('train', 'val' or 'test') arrays."""
        if split not in _SPLITS:
            raise ValueError(f"`split` must be one of {_SPLITS}. Received: split={split!r}")
        cache = self.__dict__.setdefault("_readers", {})
        if split not in cache:
            cache[split] = readers.IndexedReader.from_arrays(getattr(self, f"x_{split}"), getattr(self, f"y_{split}"))
        return cache[split]

    def resized(self, size):
        """The same dataset with every image resized to `size` x `size` (area interpolation).

        A search proxy: lower resolution is the standard way to make an
        architecture search cheaper. uint8 images stay uint8 (rounded).

        Raises:
            ValueError: if `size` is not a positive int.
        """
        size = checks.check_positive_int("size", size)
        if self.image_shape[:2] == (size, size):
            return self

        def resize(x):
            out = []
            for start in range(0, len(x), 4096):
                block = tf.image.resize(x[start : start + 4096], (size, size), method="area").numpy()
                out.append(np.round(block).astype(np.uint8) if x.dtype == np.uint8 else block.astype(np.float32))
            return np.concatenate(out)

        return dataclasses.replace(
            self,
            name=f"{self.name}@{size}x{size}",
            **{f"x_{split}": resize(getattr(self, f"x_{split}")) for split in _SPLITS},
        )

    def summary(self):
        """Returns a one-line description: name, split shapes, classes."""
        return (
            f"{self.name}: x_train {self.x_train.shape}, "
            f"x_val {self.x_val.shape}, x_test {self.x_test.shape}, "
            f"{self.x_train.dtype}, {self.num_classes} classes"
        )


def load(name_or_path, *, val_fraction=0.1, seed=0, limit=None):
    """Loads a dataset with train, validation and test splits.

    Sources:

    - `"mnist-5k"`: 5,000 MNIST digits bundled with the package, split
      3500 / 500 / 1000 (stratified, fixed; see `tfvnas/datasets/README.md`).
    - A path to a `.npz` file with the arrays `x_train, y_train, x_test,
      y_test` and optionally `x_val, y_val`. Images are `(N, H, W, C)` or
      `(N, H, W)` (given a channel axis); labels are integers of shape `(N,)`
      or `(N, 1)`.
    - A path to a directory with one sub-folder of images (png, jpg, jpeg,
      bmp, gif) per class, streamed through
      `keras.utils.image_dataset_from_directory` (so images in sub-folders
      of a class folder count too); class names sorted alphabetically give
      the label indices. If it has `train/` and `test/` sub-folders (and
      optionally `val/`), each holding class folders, those are the splits;
      otherwise a seeded stratified 20% of the images is the test split.
      Every image is decoded once here, in parallel, to check its shape.
    - `"mnist"`, `"fashion_mnist"`, `"cifar10"`, `"cifar100"` through
      `keras.datasets` (downloaded on first use).
    - `"tfrecord:PATTERN"` (`tfvnas.streams.from_tfrecords`), `"tfds:NAME"`
      or a TFDS builder (`tfvnas.streams.from_tfds`), a `tf.data.Dataset` of
      `(image, label)` pairs or a dict of them (`tfvnas.streams.from_tf_data`).
    - A `Dataset` or `tfvnas.streams.StreamedDataset`, returned as it is.

    When the source has no validation split, a seeded, stratified (by
    `sklearn.model_selection.train_test_split`, as far as class counts allow)
    `val_fraction` of the training examples, at least one, becomes the
    validation split; the remaining training examples keep their order.

    Images are returned as stored: uint8 stays uint8, other integer images
    with values in [0, 255] become uint8, everything else float32.
    `num_classes` is `max(y_train) + 1`, taken before any validation split
    is carved and before `limit`.

    Args:
        name_or_path: A name from `known_datasets()`, a path (str or
            `os.PathLike`) to a `.npz` file or an image directory, or one
            of the streamed sources above.
        val_fraction: Float in (0, 1), the share of the training examples
            held out for validation when the source has no validation split.
        seed: Non-negative int seeding the splits carved here.
        limit: Optional positive int; keep only the first `limit` training
            examples (after the splits), for tests and smoke runs.

    Returns:
        A `Dataset` (arrays) or a `tfvnas.streams.StreamedDataset` (an image
        directory and the streamed sources).

    Raises:
        ValueError: If an argument is invalid, the name is unknown and not an
            existing path, or the data is unreadable, empty or inconsistent.
        RuntimeError: If a `keras.datasets` dataset cannot be downloaded.
    """
    if isinstance(val_fraction, bool) or not isinstance(
        val_fraction, (int, float, np.integer, np.floating)
    ) or not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(
            "`val_fraction` must be a float in (0, 1). "
            f"Received: val_fraction={val_fraction!r}"
        )
    if not _is_int(seed) or seed < 0:
        raise ValueError(
            f"`seed` must be a non-negative int. Received: seed={seed!r}"
        )
    if limit is not None and (not _is_int(limit) or limit < 1):
        raise ValueError(
            "`limit` must be a positive int or None. "
            f"Received: limit={limit!r}"
        )
    from tfvnas import streams  # noqa: PLC0415 - streams imports this module

    if isinstance(name_or_path, (Dataset, streams.StreamedDataset)):
        return name_or_path
    if not isinstance(name_or_path, (str, os.PathLike)) or isinstance(name_or_path, str) and (
        name_or_path.startswith(("tfrecord:", "tfds:"))
    ):
        return streams.load(name_or_path, val_fraction=val_fraction, seed=seed, limit=limit)
    rng = np.random.default_rng(seed)

    if isinstance(name_or_path, str) and name_or_path in _BUNDLED:
        package, resource = _BUNDLED[name_or_path]
        name = name_or_path
        try:
            with importlib.resources.files(package).joinpath(
                resource
            ).open("rb") as handle:
                arrays = _read_npz(handle, display=f"{package}/{resource}")
        except (FileNotFoundError, ModuleNotFoundError) as error:
            raise checks.ActionableError(
                f"The bundled dataset file {package}/{resource} is missing; "
                "reinstall tfvnas with its package data."
            ) from error
    elif isinstance(name_or_path, str) and name_or_path in _KERAS:
        name = name_or_path
        arrays = _load_keras(name_or_path)
    else:
        path = os.path.expanduser(os.fspath(name_or_path))
        if os.path.isdir(path):
            return _load_directory(path, os.path.basename(os.path.normpath(path)), rng, val_fraction, limit)
        elif os.path.isfile(path) and path.lower().endswith(".npz"):
            name = os.path.splitext(os.path.basename(path))[0]
            arrays = _read_npz(path, display=path)
        elif os.path.isfile(path):
            raise ValueError(
                "`name_or_path` must be a known dataset name, a path to a "
                ".npz file or a path to an image directory. "
                f"Received: name_or_path={os.fspath(name_or_path)!r}, a file "
                "without the .npz suffix"
            )
        else:
            raise ValueError(
                f"`name_or_path` must be one of {known_datasets()}, or a path "
                "to a .npz file or to a directory of class sub-folders of "
                f"images. Received: name_or_path={os.fspath(name_or_path)!r}, "
                "which is neither a known name nor an existing path"
            )
    return _build(name, arrays, val_fraction, rng, limit)


def make_tf_dataset(
    x, y, batch_size, *, shuffle, seed=0, drop_remainder=False, repeat=False
):
    """Makes a batched `tf.data.Dataset` of one split.

    Args:
        x: Images, `(N, H, W, C)` or `(N, H, W)`, any real dtype.
        y: Integer labels, `(N,)` or `(N, 1)`.
        batch_size: Positive int.
        shuffle: Bool; shuffle the whole split with `seed`, in a new order
            on every iteration (epoch).
        seed: Int seed of the shuffle.
        drop_remainder: Bool; drop the last batch if it is smaller than
            `batch_size`.
        repeat: Bool; repeat forever (each epoch reshuffled).

    Returns:
        A `tf.data.Dataset` yielding `(images, labels)` batches: float32
        NHWC images, unnormalised, and int32 labels of shape `(batch,)`.

    Raises:
        ValueError: If an argument is invalid or `x` and `y` do not match.
    """
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(
            "`batch_size` must be a positive int. "
            f"Received: batch_size={batch_size!r}"
        )
    for arg, value in (
        ("shuffle", shuffle),
        ("drop_remainder", drop_remainder),
        ("repeat", repeat),
    ):
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(
                f"`{arg}` must be a bool. Received: {arg}={value!r}"
            )
    if not _is_int(seed):
        raise ValueError(f"`seed` must be an int. Received: seed={seed!r}")
    x = _as_images(np.asarray(x), "x")
    y = _as_labels(np.asarray(y), "y")
    _check_lengths(x, y, "x", "y")
    if drop_remainder and batch_size > len(x):
        raise ValueError(
            "`batch_size` must not exceed the number of examples when "
            f"drop_remainder=True. Received: batch_size={batch_size}, "
            f"number of examples={len(x)}"
        )
    images = tf.convert_to_tensor(x)
    labels = tf.convert_to_tensor(y)
    # Shuffle indices, not images: the shuffle buffer stays small.
    ds = tf.data.Dataset.range(len(x))
    if shuffle:
        ds = ds.shuffle(
            len(x), seed=int(seed), reshuffle_each_iteration=True
        )
    ds = ds.batch(batch_size, drop_remainder=bool(drop_remainder))
    ds = ds.map(
        lambda idx: (
            tf.cast(tf.gather(images, idx), tf.float32),
            tf.gather(labels, idx),
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if repeat:
        ds = ds.repeat()
    return ds.prefetch(tf.data.AUTOTUNE)


# ---------------------------------------------------------------------------
# Sources


def _read_npz(source, display):
    """Reads the split arrays of an .npz file (path or binary file object)."""
    unreadable = (
        f"Could not read {display} as a .npz file (a zip of NumPy arrays "
        "written by np.savez or np.savez_compressed). "
        f"Received: name_or_path={display}"
    )
    try:
        archive = np.load(source, allow_pickle=False)
    except Exception as error:
        raise ValueError(unreadable) from error
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(unreadable)
    with archive:
        keys = sorted(archive.files)
        missing = [k for k in _REQUIRED_KEYS if k not in keys]
        if missing:
            raise ValueError(
                f"The .npz file must hold the arrays {list(_REQUIRED_KEYS)} "
                "(and optionally x_val, y_val). Received: missing keys "
                f"{missing} in {display}, keys found {keys}"
            )
        if ("x_val" in keys) != ("y_val" in keys):
            raise ValueError(
                "The .npz file must hold both `x_val` and `y_val` or "
                f"neither. Received: keys found {keys} in {display}"
            )
        wanted = [k for k in _REQUIRED_KEYS + ("x_val", "y_val") if k in keys]
        try:
            return {k: archive[k] for k in wanted}
        except Exception as error:
            raise ValueError(unreadable) from error


def _load_keras(name):
    """Loads one of `keras.datasets`, turning download failures into advice."""
    module = getattr(keras.datasets, name)
    try:
        (x_train, y_train), (x_test, y_test) = module.load_data()
    except Exception as error:
        raise checks.ActionableError(
            f"The `{name}` dataset could not be downloaded through "
            f"`keras.datasets.{name}.load_data()` (no internet?). "
            "Alternatively, save the arrays to an .npz file with keys "
            "x_train, y_train, x_test, y_test (np.savez) and pass its path "
            f"to `tfvnas.data.load()`. Received: {type(error).__name__}: "
            f"{error}"
        ) from error
    return {
        "x_train": x_train,
        "y_train": y_train,
        "x_test": x_test,
        "y_test": y_test,
    }


def _load_directory(path, name, rng, val_fraction, limit):
    """A `StreamedDataset` of a directory of class folders, with or without split folders.

    The splits are drawn from the labels as they were when the images were
    decoded whole into arrays, with the same seeded draws: the same
    examples in the same order.
    """
    from tfvnas import streams  # noqa: PLC0415 - streams imports this module

    train_dir = os.path.join(path, "train")
    test_dir = os.path.join(path, "test")
    has_splits = (
        os.path.isdir(train_dir)
        and os.path.isdir(test_dir)
        and bool(image_folders.class_folders(train_dir))
        and bool(image_folders.class_folders(test_dir))
    )
    reference = {}  # first image's shape and file, for every split
    splits = {}  # split -> (reader, labels)
    if has_splits:
        class_names = image_folders.class_folders(train_dir)
        split_dirs = {"train": train_dir, "test": test_dir}
        val_dir = os.path.join(path, "val")
        if os.path.isdir(val_dir) and image_folders.class_folders(val_dir):
            split_dirs["val"] = val_dir
        for split, split_dir in split_dirs.items():
            unknown = sorted(
                set(image_folders.class_folders(split_dir)) - set(class_names)
            )
            if unknown:
                raise ValueError(
                    f"Class folders of {split}/ must also exist in train/ "
                    f"(which has {class_names}). Received: {unknown} in "
                    f"{split_dir}"
                )
            reader, y = image_folders.read_class_folders(
                split_dir, class_names, reference
            )
            order = rng.permutation(len(y))
            splits[split] = (reader.subset(order), y[order])
    else:
        class_names = image_folders.class_folders(path)
        if not class_names:
            raise ValueError(
                "An image directory must hold one sub-folder of images per class "
                "(or train/ and test/ sub-folders of those). Received: no class "
                f"sub-folders in {path}"
            )
        reader, y = image_folders.read_class_folders(path, class_names, reference)
        if len(y) < 3:
            raise ValueError(
                "An image directory without train/ and test/ sub-folders must "
                "hold at least 3 images, to split off test and validation "
                f"examples. Received: {len(y)} images in {path}"
            )
        order = rng.permutation(len(y))
        reader, y = reader.subset(order), y[order]
        keep, held = stratified_holdout(y, holdout_size(len(y), _DIRECTORY_TEST_FRACTION), rng)
        splits["train"] = (reader.subset(keep), y[keep])
        splits["test"] = (reader.subset(held), y[held])
    train, y_train = splits["train"]
    num_classes = int(y_train.max()) + 1
    if "val" not in splits:
        if len(y_train) < 2:
            raise ValueError(
                "`x_train` must hold at least 2 examples to carve a "
                f"validation split from it. Received: len(x_train)={len(y_train)}"
            )
        keep, held = stratified_holdout(y_train, holdout_size(len(y_train), val_fraction), rng)
        splits["val"] = (train.subset(held), y_train[held])
        train = train.subset(keep)
    if limit is not None:
        train = train.subset(np.arange(min(limit, len(train))))
    readers_ = {"train": train, "val": splits["val"][0], "test": splits["test"][0]}
    return streams.StreamedDataset(name, readers_, num_classes=num_classes, image_shape=reference["shape"],
                                   dtype=np.uint8)


# Validation and splitting


def _build(name, arrays, val_fraction, rng, limit):
    """Validates and normalises raw split arrays into a `Dataset`."""
    x_train = _as_images(arrays["x_train"], "x_train")
    y_train = _as_labels(arrays["y_train"], "y_train")
    _check_lengths(x_train, y_train, "x_train", "y_train")
    num_classes = int(y_train.max()) + 1
    splits = {"train": (x_train, y_train)}
    for split in ("val", "test"):
        if f"x_{split}" not in arrays:
            continue
        x = _as_images(arrays[f"x_{split}"], f"x_{split}")
        y = _as_labels(arrays[f"y_{split}"], f"y_{split}")
        _check_lengths(x, y, f"x_{split}", f"y_{split}")
        if x.shape[1:] != x_train.shape[1:]:
            raise ValueError(
                f"`x_{split}` images must have the same (H, W, C) shape as "
                f"`x_train` images {x_train.shape[1:]}. "
                f"Received: x_{split} image shape={x.shape[1:]}"
            )
        if y.max() >= num_classes:
            raise ValueError(
                f"`y_{split}` labels must be smaller than num_classes="
                f"{num_classes} (max(y_train) + 1). "
                f"Received: max(y_{split})={int(y.max())}"
            )
        splits[split] = (x, y)

    if "val" not in splits:
        if len(x_train) < 2:
            raise ValueError(
                "`x_train` must hold at least 2 examples to carve a "
                f"validation split from it. Received: len(x_train)="
                f"{len(x_train)}"
            )
        keep, held = stratified_holdout(
            y_train, holdout_size(len(x_train), val_fraction), rng
        )
        splits["val"] = (x_train[held], y_train[held])
        splits["train"] = (x_train[keep], y_train[keep])
    if limit is not None:
        x, y = splits["train"]
        splits["train"] = (x[:limit], y[:limit])

    # Mixed storage (say uint8 train, float test) is unified losslessly.
    dtypes = {splits[s][0].dtype for s in _SPLITS}
    if len(dtypes) > 1:
        splits = {
            s: (x.astype(np.float32), y) for s, (x, y) in splits.items()
        }
    return Dataset(
        name=name,
        x_train=splits["train"][0],
        y_train=splits["train"][1],
        x_val=splits["val"][0],
        y_val=splits["val"][1],
        x_test=splits["test"][0],
        y_test=splits["test"][1],
        num_classes=num_classes,
    )


def _as_images(x, arg):
    """Returns `x` as a 4-D uint8 or float32 array, or raises."""
    if not isinstance(x, np.ndarray) or x.ndim not in (3, 4):
        raise ValueError(
            f"`{arg}` must be a 3-D (N, H, W) or 4-D (N, H, W, C) array of "
            f"images. Received: {arg} of {_describe(x)}"
        )
    if x.dtype == np.bool_ or not (
        np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)
    ):
        raise ValueError(
            f"`{arg}` must hold integer or float pixel values. "
            f"Received: {arg}.dtype={x.dtype}"
        )
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.shape[0] == 0:
        raise ValueError(
            f"`{arg}` must hold at least one example. "
            f"Received: {arg}.shape={x.shape}"
        )
    if min(x.shape[1:]) == 0:
        raise ValueError(
            f"`{arg}` images must have a positive height, width and number "
            f"of channels. Received: {arg}.shape={x.shape}"
        )
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.integer) and x.min() >= 0 and x.max() <= 255:
        return x.astype(np.uint8)
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError(
            f"`{arg}` must hold finite pixel values (as float32). "
            f"Received: {arg} with NaN or infinite values"
        )
    return x


def _as_labels(y, arg):
    """Returns `y` as a 1-D int32 array of non-negative labels, or raises."""
    if not isinstance(y, np.ndarray) or not (
        y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1)
    ):
        raise ValueError(
            f"`{arg}` must be a 1-D array of class indices (or of shape "
            f"(N, 1)). Received: {arg} of {_describe(y)}"
        )
    if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"`{arg}` must hold integer class indices. "
            f"Received: {arg}.dtype={y.dtype}"
        )
    y = y.reshape(-1)
    if y.size == 0:
        raise ValueError(
            f"`{arg}` must hold at least one label. "
            f"Received: {arg}.shape={y.shape}"
        )
    if y.min() < 0:
        raise ValueError(
            f"`{arg}` must hold non-negative class indices. "
            f"Received: min({arg})={int(y.min())}"
        )
    if y.max() > np.iinfo(np.int32).max:
        raise ValueError(
            f"`{arg}` class indices must fit in int32. "
            f"Received: max({arg})={int(y.max())}"
        )
    return y.astype(np.int32)


def _check_lengths(x, y, x_arg, y_arg):
    if len(x) != len(y):
        raise ValueError(
            f"`{x_arg}` and `{y_arg}` must hold the same number of examples. "
            f"Received: len({x_arg})={len(x)}, len({y_arg})={len(y)}"
        )


def holdout_size(n, fraction):
    """`round(fraction * n)` examples, at least one held out and one kept.

    Passed to scikit-learn as a count: given the fraction itself, it rounds
    the held-out size up (`ceil`), which gives other sizes (10 of 91 rather
    than 9 at 0.1).
    """
    return int(min(max(1, round(fraction * n)), n - 1))


def stratified_holdout(y, n_holdout, rng):
    """Splits the indices of `y` into kept and held-out ones, by class.

    `sklearn.model_selection.train_test_split(..., stratify=...)` draws the
    split, with a `random_state` drawn from `rng`: each class gives its share
    of the `n_holdout` examples, within one. A class with a single example
    cannot be stratified; its example stays kept. Where scikit-learn cannot
    stratify the other classes either (fewer held-out or kept examples than
    classes), the hold-out is drawn at random, except that one example of
    each class is held out only when no other is left, so every class keeps
    an example while the sizes allow (our own rule: scikit-learn refuses
    these cases).

    Returns:
        A tuple `(keep, held)` of index arrays in ascending order, so the
        kept examples keep their order.
    """
    from sklearn.model_selection import train_test_split

    index = np.arange(len(y))
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    shared = index[counts[inverse] > 1]
    n_shared_classes = int(np.sum(counts > 1))
    # scikit-learn's conditions for a stratified split.
    if 0 < n_shared_classes <= min(n_holdout, len(shared) - n_holdout):
        _, held = train_test_split(
            shared,
            test_size=n_holdout,
            random_state=int(rng.integers(2**32)),
            stratify=y[shared],
        )
    else:
        order = rng.permutation(len(y))
        last = np.zeros(len(y), dtype=bool)
        last[np.unique(y[order], return_index=True)[1]] = True
        held = np.concatenate([order[~last], order[last]])[:n_holdout]
    held = np.sort(held)
    return np.setdiff1d(index, held, assume_unique=True), held


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(
        value, (bool, np.bool_)
    )


def _describe(value):
    shape = getattr(value, "shape", None)
    if shape is None:
        return f"type {type(value).__name__}"
    return f"shape={tuple(shape)}, dtype={getattr(value, 'dtype', None)}"
