"""Datasets that stream: your own `tf.data.Dataset`, TFRecord files, TFDS and image folders.

A `StreamedDataset` is what `tfvnas.data.Dataset` is for NumPy arrays, for
data that is never held whole: each split is a reader
(`tfvnas.readers`) that decodes examples as the loop asks for them, one
worker's share at a time. `tfvnas.data.load` makes one from

- a `tf.data.Dataset` of `(image, label)` pairs, or a dict of them with
  the keys `"train"` and optionally `"val"` and `"test"` (`from_tf_data`);
- `"tfrecord:PATTERN"`: TFRecord files of `tf.train.Example` records with
  an encoded image and an int label (`TFRECORD_FEATURES`, written by
  `write_tfrecords`; `from_tfrecords`);
- `"tfds:NAME"` or a TFDS builder, where `tensorflow-datasets` is installed
  (`pip install tfvnas[tfds]`; `from_tfds`);
- a directory of class folders of images (`tfvnas.image_folders`).

What the model needs to know comes from the data or from you: the image
shape from the element spec (else the first example); the number of
classes from TFDS' features, the labels of every TFRecord (read without the
images), a Keras dataset's `class_names`, else the largest label among the
first `statistics_examples` training examples; the normalisation statistics
and the range of float pixels from a bounded pass over the first
`statistics_examples` training examples (`num_classes=`, `normalisation=`
and `input_range=` given to `from_tf_data` skip the passes).

Missing splits are carved from the training split with `seed`: a test
split of 20% when there is none, then a validation split of
`val_fraction`; stratified by label where the labels are known without
decoding (TFRecord files, image folders), else a seeded random share of
the keys. A split is held by key (the example's index in its split in
reading order), so a `tf.data.Dataset` must give its examples in the same
order every time it is iterated: shuffle through tfvnas (its seeded,
resumable shuffle), not in the dataset. Your augmentation is kept: the
loop reads your dataset as it is.
"""

import os

import numpy as np
import tensorflow as tf

from tfvnas import checks
from tfvnas import data as data_lib
from tfvnas import readers as readers_lib

__all__ = [
    "StreamedDataset", "from_tf_data", "from_tfrecords", "from_tfds", "write_tfrecords", "TFRECORD_FEATURES",
    "load",
]

SPLITS = ("train", "val", "test")
# What a TFRecord file's `tf.train.Example` records hold: the encoded image
# (png, jpeg, bmp or gif, read by `tf.io.decode_image`) and its class index.
TFRECORD_FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
}
# Examples the statistics pass reads at most, and the default shuffle buffer.
STATISTICS_EXAMPLES = 10_000
SHUFFLE_BUFFER = 10_000
# Share of a source without a test split carved off as test.
TEST_FRACTION = 0.2
_TFDS_SPLITS = {"train": ("train",), "val": ("validation", "val", "valid"), "test": ("test",)}


class StreamedDataset:
    """An image classification dataset whose splits stream.

    Made by `from_tf_data`, `from_tfrecords`, `from_tfds` or
    `tfvnas.data.load`; accepted wherever a `tfvnas.data.Dataset` is.

    Args:
        name: the dataset's name (for a file-backed source, what
            `tfvnas.data.load` reads again).
        readers: `{"train", "val", "test"}` -> reader.
        num_classes: the number of classes; every label is smaller (checked
            as examples are read).
        image_shape: `(H, W, C)` of every image (checked as examples are read).
        dtype: `uint8` or `float32`, the images' stored dtype.
        normalisation: `(mean, std)` per channel, or None to compute it from
            the first `statistics_examples` training examples.
        input_range: `(low, high)` of the pixel values, or None: `(0, 255)`
            for uint8, else from the same pass.
        statistics_examples: the bound of that pass.
    """

    def __init__(self, name, readers, *, num_classes, image_shape, dtype, normalisation=None, input_range=None,
                 statistics_examples=STATISTICS_EXAMPLES):
        self.name = name
        self._readers = dict(readers)
        self.num_classes = int(num_classes)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.dtype = np.dtype(dtype)
        self._normalisation = normalisation
        self._input_range = input_range
        self.statistics_examples = checks.check_positive_int("statistics_examples", statistics_examples)
        self._statistics = None

    def __repr__(self):
        return f"StreamedDataset({self.summary()})"

    def reader(self, split):
        """The reader of `split` ('train', 'val' or 'test')."""
        return self._readers[split]

    def sizes(self):
        return {split: len(reader) for split, reader in self._readers.items()}

    def _statistics_pass(self):
        if self._statistics is None:
            chunk = readers_lib.statistics_chunk(self.image_shape)
            head = self.reader("train").head(self.statistics_examples)
            self._statistics = readers_lib.statistics(lambda: head.batch(chunk).map(
                lambda x, y: x).as_numpy_iterator(), self.image_shape[-1])
        return self._statistics

    def normalisation(self):
        """Per-channel `(mean, std)` as given, or of the first `statistics_examples` training images."""
        if self._normalisation is not None:
            return tuple(list(v) for v in self._normalisation)
        return self._statistics_pass()[:2]

    @property
    def input_range(self):
        """`(low, high)` of the pixel values: as given, `(0.0, 255.0)` for uint8, else from the statistics pass."""
        if self._input_range is not None:
            return tuple(float(v) for v in self._input_range)
        if self.dtype == np.uint8:
            return (0.0, 255.0)
        return tuple(self._statistics_pass()[2:])

    def resized(self, size):
        """The same data with every image resized to `size` x `size` as it is read (area interpolation).

        As `tfvnas.data.Dataset.resized`: uint8 stays uint8 (rounded).
        """
        size = checks.check_positive_int("size", size)
        if self.image_shape[:2] == (size, size):
            return self
        uint8 = self.dtype == np.uint8

        def resize(images, labels):
            out = tf.image.resize(images, (size, size), method="area")
            return (tf.cast(tf.round(out), tf.uint8) if uint8 else tf.cast(out, tf.float32)), labels

        return StreamedDataset(
            f"{self.name}@{size}x{size}", {s: r.map(resize) for s, r in self._readers.items()},
            num_classes=self.num_classes, image_shape=(size, size, self.image_shape[-1]), dtype=self.dtype,
            normalisation=None, input_range=self._input_range, statistics_examples=self.statistics_examples)

    def in_memory(self, limit):
        """A `tfvnas.data.Dataset` of the first `limit` examples of each split (what export reads)."""
        limit = checks.check_positive_int("limit", limit)
        arrays = {}
        for split in SPLITS:
            images, labels = [], []
            for x, y in self.reader(split).head(limit).batch(1024).as_numpy_iterator():
                images.append(x)
                labels.append(y)
            arrays[f"x_{split}"] = np.concatenate(images).astype(self.dtype, copy=False)
            arrays[f"y_{split}"] = np.concatenate(labels).astype(np.int32, copy=False)
        return data_lib.Dataset(name=self.name, num_classes=self.num_classes, **arrays)

    def summary(self):
        sizes = self.sizes()
        return (f"{self.name}: streamed, train {sizes['train']}, val {sizes['val']}, test {sizes['test']} "
                f"images of {self.image_shape}, {self.dtype.name}, {self.num_classes} classes")


# ---------------------------------------------------------------------------
# Any source


def load(source, *, val_fraction=0.1, seed=0, limit=None):
    """A `StreamedDataset` of `source`: a `tf.data.Dataset`, a dict of them, a TFDS builder,
    `"tfrecord:PATTERN"` or `"tfds:NAME"` (see `tfvnas.data.load`)."""
    common = dict(val_fraction=val_fraction, seed=seed, limit=limit)
    if isinstance(source, (tf.data.Dataset, dict)):
        return from_tf_data(source, **common)
    if isinstance(source, str) and source.startswith("tfrecord:"):
        return from_tfrecords(source[len("tfrecord:"):], **common)
    if isinstance(source, str) and source.startswith("tfds:"):
        return from_tfds(source[len("tfds:"):], **common)
    if _is_tfds_builder(source):
        return from_tfds(source, **common)
    raise ValueError(
        "`name_or_path` must be a known dataset name, a path (.npz file or image directory), "
        "'tfrecord:PATTERN', 'tfds:NAME', a tf.data.Dataset of (image, label) pairs, a dict of them with the "
        f"keys 'train', 'val' and 'test', or a TFDS builder. Received: name_or_path={source!r}"
    )


def _finish(name, readers, labels, *, val_fraction, seed, limit, **dataset_args):
    """Carves the missing splits, applies `limit` and makes the `StreamedDataset`.

    `labels` holds the labels of the train split in key order where they
    are known without decoding (the carved splits are then stratified), or None.
    """
    rng = np.random.default_rng(seed)
    train = readers["train"]
    if "test" not in readers:
        readers["test"], train, labels = _carve(train, TEST_FRACTION, rng, labels, "test")
    if "val" not in readers:
        readers["val"], train, labels = _carve(train, val_fraction, rng, labels, "validation")
    if limit is not None:
        train = train.subset(np.arange(min(int(limit), len(train))))
    readers["train"] = train
    return StreamedDataset(name, readers, **dataset_args)


def _carve(reader, fraction, rng, labels, what):
    """`(held, kept, kept labels)`: a seeded share of `reader` held out (stratified when `labels` are known)."""
    n = len(reader)
    if n < 2:
        raise ValueError(
            f"The training split must hold at least 2 examples to carve a {what} split from it. "
            f"Received: {n} examples"
        )
    size = data_lib.holdout_size(n, fraction)
    if labels is not None:
        keep, held = data_lib.stratified_holdout(labels, size, rng)
    else:
        held = np.sort(rng.permutation(n)[:size])
        keep = np.setdiff1d(np.arange(n), held, assume_unique=True)
    return reader.subset(held), reader.subset(keep), None if labels is None else labels[keep]


def _decoder(parse, image_shape, dtype, num_classes, what):
    """`parse(record) -> (image, label)` with the checks of shape and label range, in `dtype`."""
    shape = tf.constant(image_shape, tf.int32)

    def decode(record):
        image, label = parse(record)
        label = tf.cast(tf.reshape(label, []), tf.int32)
        checks_ = [
            tf.debugging.assert_equal(
                tf.shape(image, out_type=tf.int32), shape,
                message=f"{readers_lib.CHECK_PREFIX}Every image of {what} must have the shape {tuple(image_shape)} "
                        "of the first training image; one has another shape"),
            tf.debugging.assert_non_negative(
                label, message=f"{readers_lib.CHECK_PREFIX}Labels of {what} must be non-negative class indices"),
            tf.debugging.assert_less(
                label, num_classes,
                message=f"{readers_lib.CHECK_PREFIX}Labels of {what} must be smaller than num_classes={num_classes}"
                        " (pass `num_classes` to tfvnas.streams.from_tf_data when the first examples do not show "
                        "every class)"),
        ]
        with tf.control_dependencies(checks_):
            image = tf.ensure_shape(tf.identity(image), image_shape)
        return tf.cast(image, dtype), label

    return decode


def _check_int(name, value, allow_none=True):
    if value is None and allow_none:
        return None
    return checks.check_positive_int(name, value)


# ---------------------------------------------------------------------------
# tf.data


def from_tf_data(dataset, *, val=None, test=None, name="tf.data", num_classes=None, normalisation=None,
                 input_range=None, val_fraction=0.1, seed=0, limit=None, shuffle_buffer=SHUFFLE_BUFFER,
                 statistics_examples=STATISTICS_EXAMPLES):
    """A `StreamedDataset` of `tf.data.Dataset`s of `(image, label)` pairs.

    Each dataset gives examples, `(image, label)` with an image of shape
    `(H, W, C)` (uint8, or any real dtype, kept as float32) and an integer
    label of shape `()` or `(1,)`; or batches of them, whose number of
    examples must then be known (a static batch dimension, as with
    `drop_remainder=True`, or Keras' `image_dataset_from_directory`). Its
    cardinality must be known and finite (`dataset.cardinality()`;
    `dataset.apply(tf.data.experimental.assert_cardinality(N))` tells it
    when tf.data cannot), and its order the same on every iteration. Its
    own maps (decoding, augmentation) run as tfvnas reads it.

    Under several workers every worker iterates the dataset and keeps every
    W-th example (tf.data's DATA sharding): give TFRecord files, a TFDS
    name or an image folder for each worker to read only its own files.
    The shuffle buffer holds examples as your dataset yields them (decoded
    images): `shuffle_buffer` times the bytes of one.

    Args:
        dataset: the training split, or a dict `{"train": ..., "val": ...,
            "test": ...}` ("val" and "test" optional).
        val, test: the validation and test splits (or in the dict); missing
            ones are carved from the training split (see the module).
        name: the dataset's name in reports.
        num_classes: the number of classes (default: `class_names` of a
            Keras dataset, else the largest label of the first
            `statistics_examples` training examples + 1).
        normalisation: per-channel `(mean, std)` (default: from the first
            `statistics_examples` training examples).
        input_range: `(low, high)` of the pixel values (default: (0, 255)
            for uint8, else from the same pass).
        val_fraction, seed: the carved validation share and the seed of the carving.
        limit: keep only the first `limit` training examples.
        shuffle_buffer: examples in the epoch shuffle's buffer.
        statistics_examples: the bound of the statistics passes.

    Returns:
        A `StreamedDataset`.

    Raises:
        ValueError: for an element structure other than `(image, label)`,
            an unknown or infinite cardinality, or bad arguments.
    """
    if isinstance(dataset, dict):
        unknown = sorted(set(dataset) - set(SPLITS))
        if unknown or "train" not in dataset:
            raise ValueError(
                "A dict of datasets must have the key 'train' and optionally 'val' and 'test'. "
                f"Received: keys {sorted(dataset)}"
            )
        if val is not None or test is not None:
            raise ValueError("Give `val` and `test` in the dict or as arguments, not both.")
        given = dict(dataset)
    else:
        given = {"train": dataset, "val": val, "test": test}
    given = {split: ds for split, ds in given.items() if ds is not None}
    limit = _check_int("limit", limit)
    shuffle_buffer = checks.check_positive_int("shuffle_buffer", shuffle_buffer)
    statistics_examples = checks.check_positive_int("statistics_examples", statistics_examples)
    elements = {split: _examples(ds, split) for split, ds in given.items()}
    image_spec = elements["train"][0].element_spec[0]
    image_shape = tuple(image_spec.shape)
    if not image_spec.shape.is_fully_defined():
        first = next(iter(elements["train"][0].take(1)), None)
        if first is None:
            raise ValueError("The training dataset must hold at least one example. Received: an empty dataset")
        image_shape = tuple(int(d) for d in first[0].shape)
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise ValueError(
            f"Images must have a positive (H, W, C) shape. Received: {image_shape} for the first training image")
    dtype = np.uint8 if image_spec.dtype == tf.uint8 else np.float32
    if num_classes is None:
        class_names = getattr(dataset if not isinstance(dataset, dict) else dataset["train"], "class_names", None)
        if class_names:
            num_classes = len(class_names)
    raw = {split: _tf_data_reader(ds, count, lambda r: r, shuffle_buffer) for split, (ds, count) in elements.items()}
    if num_classes is None:
        labels = [int(y) for _, y in raw["train"].head(statistics_examples).map(
            lambda x, y: (0, tf.reshape(y, [])))]
        if not labels:
            raise ValueError("The training dataset must hold at least one example. Received: an empty dataset")
        num_classes = max(labels) + 1
    num_classes = checks.check_positive_int("num_classes", num_classes)
    readers = {}
    for split, reader in raw.items():
        decode = _decoder(lambda r: r, image_shape, tf.as_dtype(dtype), num_classes, f"the {split} dataset")
        readers[split] = reader.with_decode(decode)
    return _finish(name, readers, None, val_fraction=val_fraction, seed=seed, limit=limit,
                   num_classes=num_classes, image_shape=image_shape, dtype=dtype, normalisation=normalisation,
                   input_range=input_range, statistics_examples=statistics_examples)


def _examples(dataset, split):
    """`(unbatched dataset, number of examples)` of one split, or a Keras-style error."""
    if not isinstance(dataset, tf.data.Dataset):
        raise ValueError(f"The {split} split must be a tf.data.Dataset. Received: {type(dataset).__name__}")
    spec = dataset.element_spec
    if not (isinstance(spec, (tuple, list)) and len(spec) == 2
            and all(isinstance(s, tf.TensorSpec) for s in spec)):
        raise ValueError(
            f"The {split} dataset must yield (image, label) pairs: an image tensor of shape (H, W, C), or a "
            "batch of them (N, H, W, C), and an integer label of shape () (or a batch of them). "
            f"Received: element_spec={spec!r}"
        )
    image, label = spec
    batched = image.shape.rank == 4
    label_rank = label.shape.rank
    good_image = image.shape.rank in (3, 4) and (image.dtype.is_integer or image.dtype.is_floating)
    good_label = label.dtype.is_integer and label_rank is not None and (
        label_rank in (1, 2) and label.shape[1:].num_elements() == 1 if batched
        else label_rank <= 1 and label.shape.num_elements() == 1)
    if not (good_image and good_label and image.dtype != tf.bool):
        raise ValueError(
            f"The {split} dataset must yield (image, label) pairs: an image tensor of shape (H, W, C), or a "
            "batch of them (N, H, W, C), of a real dtype, and an integer label of shape () (or a batch of "
            f"them). Received: image {image}, label {label}"
        )
    cardinality = int(dataset.cardinality())
    if cardinality == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            f"The {split} dataset must be finite: tfvnas counts epochs itself. Received: a dataset that "
            "repeats forever (cardinality tf.data.INFINITE_CARDINALITY); remove its `repeat()`"
        )
    if cardinality == tf.data.UNKNOWN_CARDINALITY:
        raise ValueError(
            f"The number of examples of the {split} dataset must be known: the steps per epoch and the KL "
            "scale (1 / N) need it. Received: cardinality tf.data.UNKNOWN_CARDINALITY (after a `filter`, "
            "a `TFRecordDataset`, ...); tell it with `dataset.apply(tf.data.experimental.assert_cardinality(N))`"
        )
    if not batched:
        return dataset, cardinality
    batch = image.shape[0]
    if batch is not None:
        count = cardinality * batch
    elif getattr(dataset, "file_paths", None) is not None:  # keras.utils.image_dataset_from_directory
        count = len(dataset.file_paths)
    else:
        raise ValueError(
            f"The number of examples of the batched {split} dataset must be known: its last batch may be "
            "smaller. Received: batches of an unknown size; pass it unbatched (`dataset.unbatch()` and "
            "`assert_cardinality(N)`), or batched with `drop_remainder=True`"
        )
    unbatched = dataset.unbatch().apply(tf.data.experimental.assert_cardinality(count))
    return unbatched, count


def _tf_data_reader(dataset, count, decode, shuffle_buffer):
    def read(workers, worker):
        ds = dataset.enumerate()
        return ds.shard(workers, worker) if workers > 1 else ds

    return readers_lib.SequentialReader(read, decode, count, owner=lambda keys, workers: keys % workers,
                                        shuffle_buffer=shuffle_buffer)


# ---------------------------------------------------------------------------
# TFRecord files


def write_tfrecords(path, images, labels, *, files=1, image_format="png"):
    """Writes images and labels as TFRecord files of `TFRECORD_FEATURES` records.

    Args:
        path: the file name; with `files > 1`, `-00000-of-0000N` is added to
            each file's name.
        images: uint8 images `(N, H, W, C)`.
        labels: int labels `(N,)`.
        files: how many files to spread the examples over (in order).
        image_format: 'png' or 'jpeg' (lossy).

    Returns:
        The list of files written.
    """
    images = np.asarray(images)
    labels = np.asarray(labels).reshape(-1)
    if images.ndim != 4 or images.dtype != np.uint8 or len(images) != len(labels):
        raise ValueError(
            "`images` must be uint8 (N, H, W, C) and `labels` (N,). "
            f"Received: images {images.shape} {images.dtype}, labels {labels.shape}"
        )
    if image_format not in ("png", "jpeg"):
        raise ValueError(f"`image_format` must be 'png' or 'jpeg'. Received: image_format={image_format!r}")
    files = checks.check_positive_int("files", files)
    encode = tf.io.encode_png if image_format == "png" else tf.io.encode_jpeg
    path = os.fspath(path)
    names = [path] if files == 1 else [f"{path}-{i:05d}-of-{files:05d}" for i in range(files)]
    bounds = np.linspace(0, len(images), files + 1).astype(int)
    for name, start, stop in zip(names, bounds[:-1], bounds[1:]):
        with tf.io.TFRecordWriter(name) as writer:
            for image, label in zip(images[start:stop], labels[start:stop]):
                example = tf.train.Example(features=tf.train.Features(feature={
                    "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encode(image).numpy()])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
                }))
                writer.write(example.SerializeToString())
    return names


def from_tfrecords(pattern, *, name=None, num_classes=None, normalisation=None, val_fraction=0.1, seed=0,
                   limit=None, shuffle_buffer=SHUFFLE_BUFFER, statistics_examples=STATISTICS_EXAMPLES):
    """A `StreamedDataset` of TFRecord files of `TFRECORD_FEATURES` records.

    `pattern` is a glob (`tf.io.gfile.glob`; files ending in `.gz` are read
    as GZIP). With `{split}` in it, `pattern.format(split=s)` for `train`,
    `val` and `test` gives each split's files (train's must exist);
    without it, every file is training data. The records are counted and
    their labels read once, without decoding the images (a pass over the
    bytes): the steps per epoch, the number of classes and stratified carved
    splits come from it. Every image must decode to the shape of the first.

    Under several workers each worker reads whole files, every W-th one,
    when there are at least as many files as workers (else every W-th
    record, decoding only its own).

    Args:
        pattern: the glob.
        name: the name in reports (default `"tfrecord:" + pattern`, which
            `tfvnas.data.load` reads again).
        num_classes: default the largest training label + 1.
        normalisation, val_fraction, seed, limit, shuffle_buffer,
        statistics_examples: as for `from_tf_data`.

    Raises:
        ValueError: when no file matches, or a record is not such an example.
    """
    if not isinstance(pattern, (str, os.PathLike)) or not os.fspath(pattern):
        raise ValueError(f"`pattern` must be a non-empty glob. Received: pattern={pattern!r}")
    pattern = os.fspath(pattern)
    limit = _check_int("limit", limit)
    if "{split}" in pattern:
        globs = {split: pattern.format(split=split) for split in SPLITS}
    else:
        globs = {"train": pattern}
    files = {split: sorted(tf.io.gfile.glob(glob)) for split, glob in globs.items()}
    files = {split: f for split, f in files.items() if f}
    if "train" not in files:
        raise ValueError(
            f"No TFRecord files match the training pattern {globs['train']!r}. Received: pattern={pattern!r}")
    tables = {split: _tfrecord_table(f) for split, f in files.items()}
    first = _first_image(files["train"][0])
    image_shape = tuple(int(d) for d in first.shape)
    train_labels = np.concatenate(tables["train"]["labels"])
    if num_classes is None:
        num_classes = int(train_labels.max()) + 1
    num_classes = checks.check_positive_int("num_classes", num_classes)
    for split, table in tables.items():
        labels = np.concatenate(table["labels"])
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(
                f"The labels of the {split} TFRecord files must be in [0, num_classes={num_classes}). "
                f"Received: min {int(labels.min())}, max {int(labels.max())} in {globs[split]!r}"
            )
    channels = image_shape[-1]

    def parse(record):
        example = tf.io.parse_single_example(record, TFRECORD_FEATURES)
        return tf.io.decode_image(example["image"], channels=channels, expand_animations=False), example["label"]

    readers = {}
    for split, table in tables.items():
        decode = _decoder(parse, image_shape, tf.uint8, num_classes, f"the {split} TFRecord files")
        readers[split] = _file_reader(table, decode, shuffle_buffer)
    return _finish(name or f"tfrecord:{pattern}", readers, train_labels, val_fraction=val_fraction, seed=seed,
                   limit=limit, num_classes=num_classes, image_shape=image_shape, dtype=np.uint8,
                   normalisation=normalisation, statistics_examples=statistics_examples)


def _compression(file):
    return "GZIP" if file.endswith(".gz") else ""


def _tfrecord_table(files):
    """`{"files", "counts", "labels"}`: each file's number of records and labels, read without the images."""

    def labels_of(file):
        records = tf.data.TFRecordDataset(file, compression_type=_compression_tensor(file))
        parsed = records.map(lambda r: tf.io.parse_single_example(r, TFRECORD_FEATURES)["label"])
        return parsed.batch(1 << 16).reduce(tf.zeros([0], tf.int64), lambda a, b: tf.concat([a, b], 0))

    try:
        labels = list(tf.data.Dataset.from_tensor_slices(files).map(
            labels_of, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).as_numpy_iterator())
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as error:
        for file in files:  # which one: read them one by one
            try:
                labels_of(tf.constant(file))
            except (tf.errors.InvalidArgumentError, tf.errors.DataLossError):
                raise ValueError(
                    "Every TFRecord file must hold tf.train.Example records with the features 'image' (bytes: an "
                    "encoded png, jpeg, bmp or gif image) and 'label' (int64: the class index). "
                    f"Received: {file}, which does not"
                ) from error
        raise
    counts = np.array([len(l) for l in labels], np.int64)
    if counts.sum() == 0:
        raise ValueError(f"TFRecord files must hold at least one record. Received: no records in {files}")
    return {"files": list(files), "counts": counts, "labels": labels}


def _compression_tensor(file):
    return tf.where(tf.strings.regex_full_match(file, r".*\.gz"), "GZIP", "")


def _first_image(file):
    record = next(iter(tf.data.TFRecordDataset(file, compression_type=_compression(file)).take(1)))
    example = tf.io.parse_single_example(record, TFRECORD_FEATURES)
    try:
        return tf.io.decode_image(example["image"], expand_animations=False)
    except tf.errors.InvalidArgumentError as error:
        raise ValueError(
            "The 'image' feature of a TFRecord example must be an encoded png, jpeg, bmp or gif image. "
            f"Received: the first record of {file}, which does not decode"
        ) from error


def _file_reader(table, decode, shuffle_buffer):
    """A sequential reader of record files with known counts: keys run through the files in order."""
    files = np.array(table["files"])
    counts = np.asarray(table["counts"], np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    size = int(counts.sum())
    compression = _compression(table["files"][0])

    def interleaved(chosen):
        pairs = tf.data.Dataset.from_tensor_slices((files[chosen], offsets[chosen]))
        return pairs.interleave(
            lambda file, offset: tf.data.TFRecordDataset(file, compression_type=compression).enumerate().map(
                lambda j, record: (offset + j, record)),
            cycle_length=max(1, min(len(chosen), 8)), block_length=1, num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True)

    def read(workers, worker):
        if workers == 1:
            return interleaved(np.arange(len(files)))
        if len(files) >= workers:  # each worker reads whole files
            return interleaved(np.arange(worker, len(files), workers))
        return interleaved(np.arange(len(files))).filter(lambda key, record: key % workers == worker)

    def owner(keys, workers):
        if len(files) >= workers:
            return (np.searchsorted(offsets, keys, side="right") - 1) % workers
        return keys % workers

    return readers_lib.SequentialReader(read, decode, size, owner=owner, shuffle_buffer=shuffle_buffer)


# ---------------------------------------------------------------------------
# TFDS


def _is_tfds_builder(source):
    return hasattr(source, "info") and hasattr(source, "as_dataset") and hasattr(source, "data_dir")


def from_tfds(name_or_builder, *, data_dir=None, val_fraction=0.1, seed=0, limit=None, shuffle_buffer=SHUFFLE_BUFFER,
              normalisation=None, statistics_examples=STATISTICS_EXAMPLES):
    """A `StreamedDataset` of a TFDS dataset (`tensorflow-datasets`, the `tfds` extra).

    Args:
        name_or_builder: a TFDS name (`"mnist"`, `"cifar10:3.0.2"`; prepared
            on first use by TFDS itself, which downloads) or a builder
            object. Its `supervised_keys` (or the features `image` and
            `label`) are the image and the label; its splits `train`,
            `validation` (or `val`) and `test` are used, the missing ones
            carved from `train`.
        data_dir: TFDS' data folder for a name (default TFDS' own).
        val_fraction, seed, limit, shuffle_buffer, normalisation,
        statistics_examples: as for `from_tf_data`.

    The splits are read from the prepared TFRecord files with their
    counts from TFDS' metadata, so each worker reads whole files; a
    dataset in another file format is read through `builder.as_dataset`
    (every worker reads it whole).

    Raises:
        tfvnas.checks.ActionableError: without `tensorflow-datasets`, or when
            a named dataset cannot be prepared.
        ValueError: for a dataset without an image and a label.
    """
    builder = name_or_builder
    if not _is_tfds_builder(builder):
        try:
            import tensorflow_datasets as tfds  # noqa: PLC0415 - an optional extra
        except ImportError as error:
            raise checks.ActionableError(
                "TFDS datasets need the `tensorflow-datasets` package: pip install 'tfvnas[tfds]'. "
                f"Received: dataset 'tfds:{name_or_builder}'"
            ) from error
        try:
            builder = tfds.builder(name_or_builder, data_dir=data_dir)
            if not os.path.isdir(builder.data_dir) or not builder.info.splits:
                builder.download_and_prepare()
        except Exception as error:  # noqa: BLE001 - TFDS raises many kinds; all mean "not available"
            raise checks.ActionableError(
                f"The TFDS dataset {name_or_builder!r} could not be loaded or prepared ({type(error).__name__}: "
                f"{error}). Prepare it where there is internet (`tfds build {name_or_builder}`) and point "
                "TFDS_DATA_DIR (or `data_dir`) at it."
            ) from error
    info = builder.info
    image_key, label_key = info.supervised_keys or ("image", "label")
    features = info.features
    if image_key not in features or label_key not in features:
        raise ValueError(
            f"A TFDS dataset must have an image and a label feature (its supervised_keys, or 'image' and "
            f"'label'). Received: features {sorted(features.keys())} of {info.name}"
        )
    image_shape = tuple(features[image_key].shape)
    if None in image_shape:
        raise ValueError(
            f"The images of a TFDS dataset must all have one shape. Received: {image_shape} for {info.name}")
    num_classes = int(features[label_key].num_classes)
    image_feature = features[image_key]
    dtype = getattr(image_feature, "tf_dtype", None) or image_feature.dtype
    dtype = np.uint8 if tf.as_dtype(dtype) == tf.uint8 else np.float32
    limit = _check_int("limit", limit)
    file_format = str(getattr(info, "file_format", "tfrecord")).lower()

    def parse(record):
        example = features.deserialize_example(record)
        return example[image_key], example[label_key]

    readers = {}
    for split, names in _TFDS_SPLITS.items():
        found = next((n for n in names if n in info.splits), None)
        if found is None:
            continue
        what = f"the TFDS split {found!r}"
        decode = _decoder(parse, image_shape, tf.as_dtype(dtype), num_classes, what)
        if "tfrecord" in file_format:
            split_info = info.splits[found]
            table = {"files": [os.path.join(builder.data_dir, f) for f in split_info.filenames],
                     "counts": list(split_info.shard_lengths)}
            readers[split] = _file_reader(table, decode, shuffle_buffer)
        else:
            ds = builder.as_dataset(split=found, as_supervised=True, shuffle_files=False)
            decode = _decoder(lambda r: r, image_shape, tf.as_dtype(dtype), num_classes, what)
            readers[split] = _tf_data_reader(ds, int(info.splits[found].num_examples), decode, shuffle_buffer)
    if "train" not in readers:
        raise ValueError(f"A TFDS dataset must have a 'train' split. Received: splits {sorted(info.splits)}")
    name = name_or_builder if isinstance(name_or_builder, str) else info.name
    return _finish(f"tfds:{name}", readers, None, val_fraction=val_fraction, seed=seed, limit=limit,
                   num_classes=num_classes, image_shape=image_shape, dtype=dtype, normalisation=normalisation,
                   statistics_examples=statistics_examples)
