"""Run a computation eagerly and under `tf.function`, as every layer test does."""

import tensorflow as tf

MODES = ("eager", "function")


def run_in_mode(mode, fn, *args):
    """`fn(*args)` eagerly or through a fresh `tf.function`, as NumPy."""
    if mode == "function":
        fn = tf.function(fn)
    return tf.nest.map_structure(lambda t: t.numpy(), fn(*args))
