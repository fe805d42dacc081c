"""Streaming a directory of class sub-folders of images through Keras.

`read_class_folders()` reads the images of `path/<class>/` as
`keras.utils.image_dataset_from_directory` does (its file list, labels in
sorted class-folder order, every image at its own size, uint8) as an
indexed reader (`tfvnas.readers.IndexedReader`): an image is decoded when a
batch asks for it, so nothing is held whole and a worker decodes only its
rows. `class_folders()` lists the class folders the way Keras infers them.
`tfvnas.data.load()` uses both for an image directory and draws the splits
itself, from the labels Keras infers (the class folder of each file).

Keras lists the files; a file is decoded with the call Keras' dataset
makes (`tf.io.decode_image` with the channels of its `color_mode`; Keras'
resize to `image_size` is the identity here, every image having that
size). Reading Keras' dataset itself by position
(`tf.data.experimental.at` inside the pipeline) crashed the process with a
segmentation fault on the second pass over it (TensorFlow 2.21), and
reading it in order would decode every image of a split for each half of
the bi-level search and on every worker.

What Keras lists is what is read: images in sub-folders of a class folder
count, and so do files whose names start with a dot. The checks and
workarounds written here exist because Keras does not make them:

- Shapes: Keras resizes every image to one `image_size` without a word, so
  the shape of every image is decoded first and images of different shapes
  are refused, naming two of the files (across the split folders of one
  dataset too).
- Empty class folders: Keras reads a class folder without images as a class
  without examples, which is refused too. A folder without any image at all
  Keras refuses itself, without naming a class folder; the error raised here
  names it.
- Unreadable files: a file TensorFlow cannot decode would stop Keras' read
  with an error that does not name it; the shape pass skips it, and the
  error raised here names it.
- Two channels: Keras has no two-channel colour mode, so grey + alpha images
  are read as RGBA and cut back to their red (grey) and alpha channels.
- Grey BMPs: TensorFlow will not decode a BMP to one channel when asked, so
  grey images are read as RGB when any of them is a BMP, and cut back to one
  channel.
"""

import os

import keras
import numpy as np
import tensorflow as tf

from tfvnas import readers

__all__ = ["class_folders", "read_class_folders"]

# The formats keras.utils.image_dataset_from_directory reads.
_IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
# Image channels -> the Keras `color_mode` that reads them, and the channels
# of its result to keep. Keras has no two-channel mode: grey + alpha images
# are read as RGBA, whose red and alpha channels are the grey and alpha ones.
# The channels Keras' dataset decodes each `color_mode` to.
_KERAS_CHANNELS = {"grayscale": 1, "rgb": 3, "rgba": 4}
_COLOR_MODES = {
    1: ("grayscale", None),
    2: ("rgba", [0, 3]),
    3: ("rgb", None),
    4: ("rgba", None),
}


def class_folders(path):
    """Returns the class folders of `path` as Keras infers them.

    Needed before Keras reads anything, to tell split folders from classes.

    Args:
        path: A directory.

    Returns:
        The names of the sub-folders of `path` whose names do not start with
        a dot, sorted.
    """
    return sorted(
        entry.name
        for entry in os.scandir(path)
        if entry.is_dir() and not entry.name.startswith(".")
    )


def read_class_folders(path, class_names, reference):
    """Reads `path/<class>/` images with Keras, after the checks it lacks.

    Args:
        path: A directory of class folders of images.
        class_names: The class names the labels index (the train split's);
            the class folders of `path` must be among them, and may be
            fewer.
        reference: A dict holding the first image's `shape` and `file`,
            shared across the splits of one dataset so that they all have
            one image shape; an empty dict is filled on first use.

    Returns:
        A tuple `(reader, y)`: a `tfvnas.readers.IndexedReader` of the uint8
        images of shape `(H, W, C)` in Keras' order (class by class, files
        sorted) with their labels, and those int32 labels (indexing
        `class_names`) as a NumPy array.

    Raises:
        ValueError: If a class folder holds no image, a file cannot be
            decoded, or an image's shape differs from `reference["shape"]`.
    """
    try:
        # Keras lists the files when it makes the dataset and decodes them
        # only when it is iterated: this first call just lists them.
        files = _image_dataset(path, (1, 1), "rgb").file_paths
    except ValueError as error:
        # It refuses a folder without any image; the check below names it.
        if not str(error).startswith("No images found"):
            raise
        files = []
    found = {os.path.relpath(file, path).split(os.sep)[0] for file in files}
    for class_name in class_folders(path):
        if class_name not in found:
            raise ValueError(
                "Every class folder must hold at least one image "
                f"({', '.join(_IMAGE_EXTENSIONS)}). Received: no images in "
                f"{os.path.join(path, class_name)}"
            )
    shapes, is_bmp = _image_shapes(files)
    if not reference:
        reference.update(shape=tuple(shapes[0].tolist()), file=files[0])
    differ = np.flatnonzero(np.any(shapes != reference["shape"], axis=1))
    if differ.size:
        raise ValueError(
            "All images must have the same (H, W, C) shape. "
            f"Received: {tuple(shapes[differ[0]].tolist())} for "
            f"{files[differ[0]]}, but "
            f"{reference['shape']} for {reference['file']}"
        )
    height, width, channels = reference["shape"]
    color_mode, keep = _COLOR_MODES[channels]
    if channels == 1 and is_bmp.any():
        # TensorFlow decodes a BMP to 3 or 4 channels when asked for a
        # number of them; the three channels of a grey BMP are equal.
        color_mode, keep = "rgb", [0]
    # Keras labels a file by the index of its class folder among this
    # folder's classes; `class_names` may hold more (a test split's subset).
    labels = np.array([class_names.index(os.path.relpath(file, path).split(os.sep)[0]) for file in files],
                      dtype=np.int32)
    paths, label_table = tf.constant(files), tf.constant(labels)
    read_channels = _KERAS_CHANNELS[color_mode]
    spec = tf.TensorSpec((height, width, read_channels), tf.uint8)

    def decode(file):
        image = tf.io.decode_image(tf.io.read_file(file), channels=read_channels, expand_animations=False)
        return tf.ensure_shape(image, spec.shape)

    def load(positions):
        images = tf.map_fn(decode, tf.gather(paths, positions), fn_output_signature=spec)
        if keep is not None:
            images = tf.gather(images, keep, axis=-1)
        return images, tf.gather(label_table, positions)

    return readers.IndexedReader(load, len(files)), labels


def _image_dataset(path, image_size, color_mode):
    """Keras' `image_dataset_from_directory` of `path`, one image at a time."""
    return keras.utils.image_dataset_from_directory(
        path,
        labels="inferred",
        label_mode="int",
        color_mode=color_mode,
        batch_size=None,
        image_size=image_size,
        shuffle=False,
        # Every image already has `image_size`, so nothing is resized;
        # "nearest" also keeps the decoded uint8.
        interpolation="nearest",
        data_format="channels_last",
        verbose=False,
    )


def _image_shapes(files):
    """Returns the `(N, 3)` shapes `tf.io.decode_image` gives `files`, and
    an `(N,)` bool array of which are BMPs; raises for an unreadable file.

    A check of our own: Keras decodes with the same function but resizes
    every image to one `image_size` without a word. It decodes every image
    once when the folder is loaded, in a parallel `tf.data` pass that keeps
    only the shapes (the loop decodes them again as it reads them).
    """

    def describe(index, file):
        contents = tf.io.read_file(file)
        image = tf.io.decode_image(contents, expand_animations=False)
        # The signature tf.io.decode_image tells BMPs by.
        bmp = tf.strings.substr(contents, 0, 2) == "BM"
        return index, tf.shape(image), bmp

    dataset = (
        tf.data.Dataset.from_tensor_slices((np.arange(len(files)), files))
        .map(describe, num_parallel_calls=tf.data.AUTOTUNE)
        # An unreadable file drops out; its missing index names it below.
        .ignore_errors()
    )
    shapes = np.full((len(files), 3), -1, dtype=np.int64)
    is_bmp = np.zeros(len(files), dtype=bool)
    for index, shape, bmp in dataset.batch(4096).as_numpy_iterator():
        shapes[index], is_bmp[index] = shape, bmp
    unreadable = np.flatnonzero(shapes[:, 0] < 0)
    if unreadable.size:
        raise ValueError(
            "Every image file must be a readable png, jpeg, bmp or gif "
            f"image. Received: {files[unreadable[0]]}, which could not be "
            "decoded"
        )
    return shapes, is_bmp

