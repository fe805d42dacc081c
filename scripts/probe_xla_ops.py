#!/usr/bin/env python3
"""Which ops XLA:CPU runs slower than TensorFlow's own kernels: one op's forward and backward, with and without XLA.

For each probe (a `tf.function` of one op's forward pass and its gradients,
at the quick training shape: batch 64, 28x28, 16 channels) it times the plain
function and the same with `jit_compile=True`, alternating, and prints the
medians and their ratio, one JSON line per probe:

- `depthwise_3x3`: `tf.nn.depthwise_conv2d` (every sep and dil conv has two);
- `conv_1x1`: `tf.nn.conv2d` with a 1x1 kernel (their pointwise halves);
- `noise`: the variational layers' noise (`tfvnas.layers.noise.portable_uniform` and
  the inverse normal CDF), forward only;
- `batch_norm_relu`: a training-mode batch norm and a ReLU.

    python scripts/probe_xla_ops.py --threads 2
"""

import argparse
import json
import statistics
import sys
import time


def probes(tf):
    from tfvnas.layers import noise

    x = tf.random.stateless_normal((64, 28, 28, 16), seed=(1, 2))
    dw = tf.Variable(tf.random.stateless_normal((3, 3, 16, 1), seed=(3, 4)))
    pw = tf.Variable(tf.random.stateless_normal((1, 1, 16, 16), seed=(5, 6)))
    scale = tf.Variable(tf.ones(16))

    def grads(forward, variable):
        def run(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = forward(x)
                loss = tf.reduce_sum(y * y)
            return tape.gradient(loss, [x, variable])
        return run

    def batch_norm_relu(x):
        mean, var = tf.nn.moments(x, [0, 1, 2])
        return tf.nn.relu(tf.nn.batch_normalization(x, mean, var, 0.0, scale, 1e-3))

    return x, {
        "depthwise_3x3": grads(lambda x: tf.nn.depthwise_conv2d(x, dw, [1, 1, 1, 1], "SAME"), dw),
        "conv_1x1": grads(lambda x: tf.nn.conv2d(x, pw, 1, "SAME"), pw),
        "noise": lambda x: tf.math.ndtri(noise.portable_uniform(tf.shape(x), tf.constant([3, 4], tf.int64))),
        "batch_norm_relu": grads(batch_norm_relu, scale),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    x, table = probes(tf)
    for name, fn in table.items():
        plain, xla = tf.function(fn), tf.function(fn, jit_compile=True)
        times = {"plain": [], "xla": []}
        for f in (plain, xla):
            tf.nest.map_structure(lambda t: t.numpy(), f(x))  # trace and compile outside the timing
        for _ in range(args.repeats):
            for key, f in (("plain", plain), ("xla", xla)):
                start = time.perf_counter()
                tf.nest.map_structure(lambda t: t.numpy(), f(x))
                times[key].append(time.perf_counter() - start)
        plain_ms, xla_ms = (1e3 * statistics.median(times[k]) for k in ("plain", "xla"))
        print(json.dumps({"probe": name, "plain_ms": round(plain_ms, 2), "xla_ms": round(xla_ms, 2),
                          "xla_over_plain": round(xla_ms / plain_ms, 2), "threads": args.threads}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
