"""Noise for the variational layers and the gates: per-replica seeds, and the same numbers with and without XLA.

Each layer owns a `keras.random.SeedGenerator` (its state a checkpointed
variable); every draw takes the generator's next seed, folds in the
replica id (`replica_seed`), and turns Philox bits into floats the way
TensorFlow's kernels and XLA both do (`portable_uniform`), so a
`jit_compile` step draws the noise the plain step draws.
"""

import tensorflow as tf

from tfvnas import replicas


class GeneratorState:
    """A `keras.random.SeedGenerator` seen through its state variable, on a given replica.

    A traced function that draws noise takes the generator's state variable
    as an argument, so that one trace serves every layer; `next()` advances
    the state as `SeedGenerator.next` does, and `replica_seed` folds in
    `replica` (an int or a tensor) instead of reading the replica context.
    """

    def __init__(self, state, replica):
        self.state = state
        self.replica = replica

    def next(self):
        seed = tf.identity(self.state.read_value())
        self.state.assign_add(tf.constant([0, 1], self.state.dtype))
        return seed


def replica_seed(seed_generator):
    """Next seed of `seed_generator`, folded with the replica id.

    Every replica draws different noise while the generator state (a
    variable of the layer, so it is checkpointed) stays identical on all.
    `seed_generator` is a `keras.random.SeedGenerator` or a `GeneratorState`.
    """
    seed = seed_generator.next()
    rid = seed_generator.replica if isinstance(seed_generator, GeneratorState) else replicas.replica_id()
    return tf.random.experimental.stateless_fold_in(
        tf.cast(seed, tf.int64), tf.cast(rid, tf.int64)
    )


def portable_uniform(shape, seed):
    """float32 U(0, 1) noise of `shape` from a stateless `seed`: the same numbers with and without XLA.

    `tf.random.stateless_uniform` and `stateless_normal` give other numbers
    in a `jit_compile` step: XLA derives Philox's key and counter from a
    seed outside 32 bits, and turns bits into floats, in its own way. Here
    the seed's two int64 are the key and the counter themselves, and the
    float is the top 23 of the 32 bits, centred in their interval, which
    TensorFlow's kernel and XLA compute alike. With 23 bits `k + 0.5` is
    exact in float32, so the draws lie in [2^-24, 1 - 2^-24]: 0 and 1 are
    never drawn (with 24 bits the largest rounded up to 1.0, whose inverse
    normal CDF is infinite).
    """
    seed = tf.cast(seed, tf.int64)
    key = tf.bitcast(seed[:1], tf.uint64)
    counter = tf.concat([tf.bitcast(seed[1:], tf.uint64), tf.zeros([1], tf.uint64)], 0)
    bits = tf.raw_ops.StatelessRandomUniformFullIntV2(shape=shape, key=key, counter=counter, alg=1, dtype=tf.uint32)
    return unit_floats(bits)


def unit_floats(bits):
    """uint32 random bits to float32 in (0, 1): the top 23 bits, centred in their interval (`portable_uniform`)."""
    return (tf.cast(tf.bitwise.right_shift(bits, 9), tf.float32) + 0.5) * (2.0**-23)


def standard_normal(shape, seed_generator, dtype):
    """N(0, 1) noise of `shape` from the next seed of `seed_generator` (`replica_seed`).

    The inverse normal CDF of `portable_uniform` noise, so a step computes
    the same noise with and without XLA (`jit_compile`); drawn in float32
    and cast to `dtype`.
    """
    z = tf.math.ndtri(portable_uniform(shape, replica_seed(seed_generator)))
    return tf.cast(z, dtype)


def uniform(shape, seed_generator, dtype):
    """U(0, 1) noise of `shape` from the next seed of `seed_generator` (`replica_seed`; `portable_uniform`)."""
    return tf.cast(portable_uniform(shape, replica_seed(seed_generator)), dtype)
