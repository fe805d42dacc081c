"""`tfvnas.loops.training`: the training loop's own pieces.

Its runs end to end are tested with their topic: mixed precision, XLA,
streamed data, resumes, the pipeline.
"""

import numpy as np
import tensorflow as tf

from tfvnas.loops.training import cutout


def _cutout_reference(x, centres, side, fill):
    out = x.copy()
    for i, (cy, cx) in enumerate(centres):
        top, left = cy - side // 2, cx - side // 2
        out[i, max(top, 0):max(top + side, 0), max(left, 0):max(left + side, 0), :] = fill
    return out


def test_cutout_matches_numpy_and_is_a_function_of_the_seed():
    x = np.random.default_rng(0).random((6, 9, 7, 2)).astype("float32") + 1.0
    seed = tf.constant([5, 9], tf.int64)
    out = cutout(tf.constant(x), 4, seed, fill=np.array([0.0, -1.0], np.float32)).numpy()
    np.testing.assert_array_equal(out, cutout(tf.constant(x), 4, seed, fill=np.array([0.0, -1.0], np.float32)).numpy())
    centres = tf.random.stateless_uniform([6, 2], seed=seed, minval=0, maxval=tf.int32.max, dtype=tf.int32).numpy()
    centres = np.stack([centres[:, 0] % 9, centres[:, 1] % 7], axis=1)
    expected = _cutout_reference(x, centres, 4, np.array([0.0, -1.0], np.float32))
    np.testing.assert_array_equal(out, expected)
    assert (out != x).any()
