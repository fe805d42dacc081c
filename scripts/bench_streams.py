#!/usr/bin/env python3
"""Streamed data against arrays: peak memory, images decoded per worker, step time.

Writes synthetic 32x32x3 images (a class-dependent colour plus noise, 10
classes) as TFRecord files of `tfvnas.streams.TFRECORD_FEATURES` records and
as one `.npz`, at `--examples` training images ("1x") and ten times as many
("10x"), with fixed validation and test splits; then runs one search per
case, each in a fresh process (peak RSS is the process's `VmHWM`: Linux
carries `ru_maxrss` over an exec, so a child would report its parent's peak):

- `arrays-1x`, `arrays-10x`: the `.npz` files (held in memory);
- `stream-1x`, `stream-10x`: the TFRecord files (`tfrecord:` source);
- `workers`: `stream-1x` on 2 worker processes (MultiWorkerMirroredStrategy on
  127.0.0.1), against `stream-1x` on one.

The search is the smoke preset shrunk to 1 cell of 1 node, every example
used (`limit: null`), 2 epochs; the step time is the second epoch's (the
first one traces the step) divided by its steps, evaluation included. `tf.io.decode_image` is wrapped with a
counter, so each process reports how many images it decoded: in the loop
(training and evaluation) and in the bounded statistics pass before it.

Usage:
    python scripts/bench_streams.py --out runs/bench-streams            # every case, a JSON line each
    python scripts/bench_streams.py --out runs/bench-streams --cases stream-1x workers
"""

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

CASES = ("arrays-1x", "stream-1x", "arrays-10x", "stream-10x", "workers")
CONFIG = {"layers": 1, "nodes": 1, "epochs": 2, "limit": None}
SHAPE = (32, 32, 3)
CLASSES = 10


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for the data and the results")
    parser.add_argument("--examples", type=int, default=5000, help="training images of the 1x data (default 5000)")
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--run", help=argparse.SUPPRESS)  # one case in this process (internal)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--strategy", default="default", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _images(n, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    colours = np.random.default_rng(0).integers(0, 256, (CLASSES, 1, 1, 3), dtype=np.int16)
    images = np.empty((n,) + SHAPE, np.uint8)
    for start in range(0, n, 1000):  # in blocks: the noise in int16 of every image at once is large
        stop = min(start + 1000, n)
        noise = rng.integers(-40, 41, (stop - start,) + SHAPE, dtype=np.int16)
        images[start:stop] = np.clip(colours[labels[start:stop]] + noise, 0, 255)
    return images, labels.astype(np.int32)


def _peak_rss_mb():
    """The process's peak resident memory (`VmHWM`), in MB."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


def make_data(out, examples):
    """The 1x and 10x data as TFRecord files (16 per training split) and `.npz`; returns their sources."""
    import numpy as np

    from tfvnas import streams

    sources = {}
    x_val, y_val = _images(500, 1)
    x_test, y_test = _images(500, 2)
    for scale in (1, 10):
        folder = os.path.join(out, f"data-{scale}x")
        npz = os.path.join(folder, "arrays.npz")
        if not os.path.exists(npz):
            os.makedirs(folder, exist_ok=True)
            x, y = _images(examples * scale, 10 + scale)
            streams.write_tfrecords(os.path.join(folder, "train.tfrecord"), x, y, files=16)
            streams.write_tfrecords(os.path.join(folder, "val.tfrecord"), x_val, y_val)
            streams.write_tfrecords(os.path.join(folder, "test.tfrecord"), x_test, y_test)
            np.savez(npz, x_train=x, y_train=y, x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test)
        sources[f"arrays-{scale}x"] = npz
        sources[f"stream-{scale}x"] = f"tfrecord:{folder}/{{split}}.tfrecord*"
    return sources


def run_case(source, strategy):
    """One search in this process; prints a JSON line of what it measured."""
    import tensorflow as tf

    from tfvnas.loops import distribute, searching

    strategy = distribute.make_strategy(strategy)  # a multi-worker strategy before any other TensorFlow work
    counter = tf.Variable(0, dtype=tf.int64, trainable=False)
    decode = tf.io.decode_image

    def counted(*args, **kwargs):
        with tf.control_dependencies([counter.assign_add(1)]):
            return tf.identity(decode(*args, **kwargs))

    tf.io.decode_image = counted
    marks = {}
    real_train = searching.Searcher.train

    def train(self, *args, **kwargs):
        marks["before_loop"] = int(counter.numpy())
        marks["start"] = time.perf_counter()
        try:
            return real_train(self, *args, **kwargs)
        finally:
            marks["loop_s"] = time.perf_counter() - marks["start"]
            marks["after_loop"] = int(counter.numpy())

    searching.Searcher.train = train
    start = time.perf_counter()
    result = searching.search(source, preset="smoke", config=CONFIG, strategy=strategy, verbose=0)
    record = result.history[-1]
    steps = record["step"] - result.history[0]["step"]
    print(json.dumps({
        "source": source,
        "workers": distribute.num_workers(strategy),
        "worker": distribute.input_context(strategy).input_pipeline_id,
        "peak_rss_mb": _peak_rss_mb(),
        "seconds": round(time.perf_counter() - start, 1),
        "epoch_s": record["time_s"],
        "steps_per_epoch": steps,
        "step_s": round(record["time_s"] / steps, 4),
        "decoded_before_loop": marks["before_loop"],
        "decoded_in_loop": marks["after_loop"] - marks["before_loop"],
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }), flush=True)


def _subprocess(args, env=None):
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), *args], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)


def _last_json(proc):
    out, _ = proc.communicate()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(f"a case failed (exit {proc.returncode}): {out[-2000:]}")
    return json.loads(lines[-1])


def main(argv=None):
    args = _parse(argv)
    if args.run:
        run_case(args.source, args.strategy)
        return 0
    os.makedirs(args.out, exist_ok=True)
    sources = make_data(args.out, args.examples)
    results = []
    for case in args.cases:
        if case == "workers":
            from tfvnas.loops import distribute

            procs = [_subprocess(["--out", args.out, "--run", case, "--source", sources["stream-1x"],
                                  "--strategy", "multiworker"], {"TF_CONFIG": config})
                     for config in distribute.local_cluster(2)]
            records = [dict(_last_json(p), case=case) for p in procs]
        else:
            records = [dict(_last_json(_subprocess(["--out", args.out, "--run", case, "--source", sources[case]])),
                            case=case)]
        for record in records:
            print(json.dumps(record), flush=True)
            results.append(record)
    with open(os.path.join(args.out, "results.jsonl"), "a", encoding="utf-8") as f:
        for record in results:
            f.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
