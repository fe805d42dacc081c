"""How a loop reads one split of a dataset: by index or in sequence, one worker's share at a time.

A reader yields batches of `(images, labels)` (float32 NHWC images,
unnormalised; int32 labels) of one split, for one worker, described by a
`tf.distribute.InputContext` (`num_input_pipelines` workers, this one
`input_pipeline_id`): what `strategy.distribute_datasets_from_function`
would give, built here without its multi-device iterator (see
`tfvnas.loops.distribute.HostBatches`). Two kinds:

- `IndexedReader`: examples addressable by position (NumPy arrays; the
  files of an image folder, through `tf.data.experimental.at` on Keras'
  dataset). An epoch is a seeded permutation of the positions, batched
  (`Dataset.range(n).shuffle(n, seed)`); each worker loads and decodes only
  its rows of every global batch, so the global batches are the same on any
  number of workers, and a resumed epoch skips batches of positions.
- `SequentialReader`: examples read in order from a stream (a user's
  `tf.data.Dataset`, TFRecord files, TFDS). Each example carries its key,
  its index in the split in a fixed reading order. Each worker reads only
  its share: whole files when there are at least as many files as workers,
  else every W-th example; records are decoded after the subset filter, the
  shuffle and the batches a resumed epoch skips, so each worker decodes only
  the examples it trains on. An epoch is a seeded buffer shuffle of the
  worker's share: with a buffer at least as large as the share, it is the
  permutation `IndexedReader` draws from the same seed (tf.data's shuffle
  does not look at the values), so both readers give the same batches.

Both take subsets of their examples by position among them (the bi-level
halves, a carved validation split, `limit`): for a sequential reader a
filter on the key, applied before decoding.
"""

import numpy as np
import tensorflow as tf

__all__ = ["IndexedReader", "SequentialReader", "CHECK_PREFIX", "single_worker"]

# Messages of the checks that run inside a pipeline start with this; the
# loop turns such an error into a `ValueError` with the message alone.
CHECK_PREFIX = "tfvnas data check: "
# Examples per block when statistics are computed (4M pixel values, as
# `tfvnas.data.Dataset.normalisation` does), so both give the same floats.
_STATISTICS_VALUES = 1 << 22


def single_worker():
    """The `InputContext` of a single worker with one replica."""
    return tf.distribute.InputContext(num_input_pipelines=1, input_pipeline_id=0, num_replicas_in_sync=1)


def _share(context):
    context = context or single_worker()
    return context.num_input_pipelines, context.input_pipeline_id


def _per_worker(batch_size, workers):
    if batch_size % workers:
        raise ValueError(
            f"`batch_size` (the global batch) must be divisible by the number of workers ({workers}). "
            f"Received: batch_size={batch_size}"
        )
    return batch_size // workers


def _as_float(images, labels):
    return tf.cast(images, tf.float32), labels


def statistics(blocks, channels):
    """Per-channel `(mean, std, low, high)` over NumPy image blocks.

    Args:
        blocks: a callable returning an iterable of `(N, H, W, C)` blocks;
            called twice (mean first, then the squared deviations).
        channels: C.

    Returns:
        `(mean, std)` as lists of C floats (each std at least 1e-6), and the
        smallest and largest value as floats.
    """
    total, count, low, high = np.zeros(channels), 0, np.inf, -np.inf
    for block in blocks():
        total += block.sum(axis=(0, 1, 2), dtype=np.float64)
        count += block.shape[0] * block.shape[1] * block.shape[2]
        if block.size:
            low, high = min(low, float(block.min())), max(high, float(block.max()))
    mean = total / max(count, 1)
    squares = np.zeros(channels)
    for block in blocks():
        squares += np.square(block.astype(np.float64) - mean).sum(axis=(0, 1, 2))
    std = np.maximum(np.sqrt(squares / max(count, 1)), 1e-6)
    return [float(m) for m in mean], [float(s) for s in std], low, high


def statistics_chunk(image_shape):
    """Images per block of `statistics`: about 4M values, at least one image."""
    return max(1, _STATISTICS_VALUES // max(1, int(np.prod(image_shape))))


class IndexedReader:
    """Examples addressable by position.

    Args:
        load: a function of an int64 vector of positions (of the source)
            returning `(images, labels)` for them: images `(n, H, W, C)` in
            their stored dtype, int32 labels `(n,)`; traced inside `tf.data`.
        size: the number of positions of the source.
        positions: the source positions this reader holds, in order (default
            all of them).
    """

    def __init__(self, load, size, positions=None):
        self._load = load
        self._size = int(size)
        self.positions = np.arange(self._size, dtype=np.int64) if positions is None else np.asarray(
            positions, np.int64)

    @classmethod
    def from_arrays(cls, x, y):
        """A reader of NumPy images `x` (N, H, W, C) and int labels `y` (N,)."""
        images, labels = tf.convert_to_tensor(x), tf.convert_to_tensor(np.asarray(y, np.int32))
        return cls(lambda p: (tf.gather(images, p), tf.gather(labels, p)), len(x))

    def __len__(self):
        return len(self.positions)

    def subset(self, index):
        """The examples at `index` (positions among this reader's, in that order)."""
        return IndexedReader(self._load, self._size, self.positions[np.asarray(index, np.int64)])

    def map(self, fn):
        """The same examples with `fn(images, labels) -> (images, labels)` applied to every batch (a resize)."""
        load = self._load
        return IndexedReader(lambda positions: fn(*load(positions)), self._size, self.positions)

    def steps(self, batch_size, context=None):
        """Full global batches per epoch: the same on every worker."""
        return len(self) // batch_size

    def smallest_share(self, context=None):
        return len(self)

    def epoch(self, batch_size, *, seed, steps, skip=0, context=None):
        """This worker's rows of the epoch's global batches `skip` to `steps`.

        The batches are a seeded permutation of the positions, cut into
        `batch_size` ones (the last partial one dropped); the positions are
        permuted, never the images.
        """
        n = len(self)
        ds = tf.data.Dataset.range(n).shuffle(n, seed=int(seed), reshuffle_each_iteration=True)
        ds = ds.batch(batch_size, drop_remainder=True).take(steps).skip(skip)
        return self._rows(ds, context)

    def evaluation(self, batch_size, context=None):
        """This worker's rows of every global batch, in order (the last one partial)."""
        return self._rows(tf.data.Dataset.range(len(self)).batch(batch_size), context)

    def head(self, count):
        """The first `count` examples, unbatched, images in their stored dtype."""
        index = tf.data.Dataset.range(min(int(count), len(self))).batch(256)
        positions = tf.constant(self.positions)
        return index.map(lambda i: self._load(tf.gather(positions, i)), num_parallel_calls=tf.data.AUTOTUNE,
                         deterministic=True).unbatch()

    def _rows(self, index_batches, context):
        workers, worker = _share(context)
        positions = tf.constant(self.positions)

        def load(index):
            if workers > 1:
                n = tf.shape(index, out_type=tf.int64)[0]
                index = index[worker * n // workers:(worker + 1) * n // workers]
            return _as_float(*self._load(tf.gather(positions, index)))

        return index_batches.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


class SequentialReader:
    """Examples read in sequence, each with its key (its index in the split).

    Args:
        read: a function `(workers, worker)` returning a `tf.data.Dataset`
            of `(key, record)` pairs: that worker's share of the split, in a
            fixed order (int64 keys in `[0, size)`).
        decode: a function of a record returning `(image, label)`: the image
            with a static shape in its stored dtype, an int32 scalar label.
        size: the number of examples of the split.
        owner: a function `(keys, workers)` of a NumPy int64 array returning
            the worker that reads each key (what `read` does).
        keep: a bool mask over the keys: the examples this reader holds
            (default all).
        shuffle_buffer: examples in the shuffle buffer (records as `read`
            gives them: encoded bytes for files, decoded images for a
            `tf.data.Dataset`).
    """

    def __init__(self, read, decode, size, *, owner, keep=None, shuffle_buffer=10_000):
        self._read, self._decode, self._size, self._owner = read, decode, int(size), owner
        self._keep = keep
        self.shuffle_buffer = int(shuffle_buffer)
        self._counts = {}

    def _replace(self, **changes):
        fields = dict(read=self._read, decode=self._decode, size=self._size, owner=self._owner, keep=self._keep,
                      shuffle_buffer=self.shuffle_buffer)
        fields.update(changes)
        return SequentialReader(fields.pop("read"), fields.pop("decode"), fields.pop("size"), **fields)

    @property
    def keys(self):
        """The keys of the examples held, ascending."""
        return np.arange(self._size, dtype=np.int64) if self._keep is None else np.flatnonzero(self._keep)

    def __len__(self):
        return self._size if self._keep is None else int(self._keep.sum())

    def subset(self, index):
        """The examples at `index` (positions among this reader's, ascending by key)."""
        keep = np.zeros(self._size, dtype=bool)
        keep[self.keys[np.asarray(index, np.int64)]] = True
        return self._replace(keep=keep)

    def map(self, fn):
        """The same examples with `fn(images, labels) -> (images, labels)` applied to each after decoding,
        as a batch of one (a resize)."""
        decode = self._decode

        def mapped(record):
            images, labels = fn(*(t[tf.newaxis] for t in decode(record)))
            return images[0], labels[0]

        return self._replace(decode=mapped)

    def with_decode(self, decode):
        """The same examples decoded by `decode(record) -> (image, label)`."""
        return self._replace(decode=decode)

    def with_shuffle_buffer(self, size):
        return self._replace(shuffle_buffer=size)

    def shares(self, workers):
        """How many of the held examples each of `workers` workers reads."""
        if workers not in self._counts:
            owner = self._owner(self.keys, workers) if workers > 1 else np.zeros(len(self), np.int64)
            self._counts[workers] = np.bincount(owner, minlength=workers)
        return self._counts[workers]

    def smallest_share(self, context=None):
        return int(self.shares(_share(context)[0]).min())

    def steps(self, batch_size, context=None):
        """Full batches per epoch that every worker has: `min(share) // (batch_size / workers)`."""
        workers, _ = _share(context)
        return self.smallest_share(context) // _per_worker(batch_size, workers)

    def _records(self, workers, worker):
        ds = self._read(workers, worker)
        if self._keep is not None:
            keep = tf.constant(self._keep)
            ds = ds.filter(lambda key, record: tf.gather(keep, key))
        # A one-element tuple: tf.data hands a tuple record (an image and a
        # label) to the next function as one argument.
        return ds.map(lambda key, record: (record,))

    def _decoded(self, ds):
        return ds.map(lambda record: self._decode(record), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def epoch(self, batch_size, *, seed, steps, skip=0, context=None):
        """This worker's batches `skip` to `steps` of the epoch (`batch_size / workers` examples each).

        The worker's share is shuffled with a buffer of `shuffle_buffer`
        records (at most the share) and `seed`; the records of the batches
        skipped are skipped before they are decoded.
        """
        workers, worker = _share(context)
        per_worker = _per_worker(batch_size, workers)
        share = int(self.shares(workers)[worker])
        ds = self._records(workers, worker)
        ds = ds.shuffle(max(1, min(self.shuffle_buffer, share)), seed=int(seed), reshuffle_each_iteration=True)
        ds = self._decoded(ds.skip(skip * per_worker)).batch(per_worker, drop_remainder=True)
        return ds.take(steps - skip).map(_as_float)

    def evaluation(self, batch_size, context=None):
        """This worker's share in order, in batches of `batch_size / workers`.

        Every worker gets as many batches as the worker with the largest
        share: the others end with empty batches, so that all take part in
        the same number of evaluation steps (each is a collective operation).
        """
        workers, worker = _share(context)
        per_worker = _per_worker(batch_size, workers)
        ds = self._decoded(self._records(workers, worker)).batch(per_worker).map(_as_float)
        counts = self.shares(workers)
        missing = int(-(-counts.max() // per_worker) - -(-counts[worker] // per_worker))
        if missing:
            image_spec, label_spec = ds.element_spec
            empty = (tf.zeros([0, *image_spec.shape[1:]], tf.float32), tf.zeros([0], label_spec.dtype))
            ds = ds.concatenate(tf.data.Dataset.from_tensors(empty).repeat(missing))
        return ds

    def head(self, count):
        """The first `count` examples in reading order, unbatched, images in their stored dtype."""
        return self._decoded(self._records(1, 0).take(int(count)))
