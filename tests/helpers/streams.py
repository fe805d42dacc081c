"""Small streamed datasets for the tests: images that carry their index, and a TFDS stand-in."""

import os
import types

import numpy as np
import tensorflow as tf

from tfvnas import streams


def keyed_images(n, shape=(6, 6, 1), offset=0):
    """uint8 images whose first two pixels spell their index (`offset + i`): `keys_of` reads it back."""
    x = np.random.default_rng(n).integers(0, 256, (n,) + tuple(shape), dtype=np.uint8)
    keys = np.arange(offset, offset + n)
    flat = x.reshape(n, -1)
    flat[:, 0], flat[:, 1] = keys % 256, keys // 256
    return x


def keys_of(images):
    """The indices `keyed_images` wrote into (float or uint8) images `(N, H, W, C)`."""
    flat = np.asarray(images).reshape(len(images), -1).astype(np.int64)
    return flat[:, 0] + 256 * flat[:, 1]


class FakeBuilder:
    """What `tfvnas.streams.from_tfds` reads of a TFDS builder, without `tensorflow-datasets`.

    Its splits are TFRecord files of `tfvnas.streams.TFRECORD_FEATURES`
    records (`write_tfrecords`) with their counts, as a prepared TFDS
    dataset has them in its metadata.
    """

    def __init__(self, folder, splits, shape, num_classes, *, files=2):
        self.data_dir = os.fspath(folder)
        features = _FakeFeatures(shape, num_classes)
        split_infos = {}
        for split, (images, labels) in splits.items():
            names = streams.write_tfrecords(os.path.join(self.data_dir, f"fake-{split}.tfrecord"), images, labels,
                                            files=files)
            counts = [int(n) for n in np.diff(np.linspace(0, len(images), files + 1).astype(int))]
            split_infos[split] = types.SimpleNamespace(
                filenames=[os.path.basename(n) for n in names], shard_lengths=counts, num_examples=len(images))
        self.info = types.SimpleNamespace(name="fake", supervised_keys=("image", "label"), features=features,
                                          splits=split_infos, file_format="tfrecord")

    def as_dataset(self, **kwargs):  # not read for TFRecord files
        raise AssertionError("from_tfds reads the files of a TFRecord dataset itself")


class _FakeFeatures(dict):
    def __init__(self, shape, num_classes):
        super().__init__(image=types.SimpleNamespace(shape=tuple(shape), tf_dtype=tf.uint8),
                         label=types.SimpleNamespace(num_classes=num_classes))
        self.channels = shape[-1]

    def deserialize_example(self, record):
        example = tf.io.parse_single_example(record, streams.TFRECORD_FEATURES)
        image = tf.io.decode_png(example["image"], channels=self.channels)
        return {"image": image, "label": example["label"]}
