#!/usr/bin/env python3
"""Where a search step's time goes: per-op profile, or the first step split up.

Builds the step exactly as `scripts/bench_search.py` does (its `build_searcher`)
and either

- `--mode ops` (default): runs 5 steps, then profiles 3 with the TensorFlow
  profiler and prints, per op type, the time per step summed over the threads,
  the calls per step and the time per call (the numbers of docs/BENCHMARKS.md's
  profiles); `--names TYPE,...` also breaks those types down by op name;
- `--mode first`: times imports, data and model build, tracing
  (`get_concrete_function`), the first call (graph optimisation, instantiation,
  the run) and the median of 5 more steps, as one JSON line, with the
  process's CPU seconds of each part and the load average;
  `--grappler-options '{"disable_meta_optimizer": true}'` sets
  `tf.config.optimizer.set_experimental_options` first;
- `--half` (either mode): traces the step with the gates frozen, so it is one
  forward/backward (the weights' half) instead of the bi-level step's two; the
  difference bounds what one traced forward/backward shared by both halves
  could save;
- `--train NAME` (either mode): the found network's training step instead, as
  `scripts/bench_train.py` builds it (its configuration NAME, `--genotype`,
  `--variant dense|sparse|...`).

Usage:
    python scripts/profile_step.py --config 1
    python scripts/profile_step.py --config 3 --mode first --grappler-options '{"remapping": false}'
    python scripts/profile_step.py --config 3 --mode first --half
    python scripts/profile_step.py --train quick --genotype darts_v2 --variant sparse
"""

import argparse
import collections
import glob
import json
import os
import re
import sys
import tempfile
import time

T0, C0 = time.time(), time.process_time()
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # bench_search
sys.path.append(os.path.dirname(HERE))  # this checkout's tfvnas, after any PYTHONPATH (as the benchmark)
import bench_search  # noqa: E402
import bench_train  # noqa: E402


def _op_times(logdir, steps, names):
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    path = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)[0]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    by_type, calls = collections.Counter(), collections.Counter()
    by_name = collections.defaultdict(collections.Counter)
    for plane in space.planes:
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" not in name:
                    continue
                op, kind = name.rsplit(":", 1)
                ms = event.duration_ps / 1e9 / steps
                by_type[kind] += ms
                calls[kind] += 1 / steps
                if kind in names:
                    key = "/".join(re.sub(r"_\d+", "", op).split("/")[-4:])
                    by_name[kind][key] += ms
    return by_type, calls, by_name


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=int, default=1, help="index into bench_search.CONFIGS")
    ap.add_argument("--variant", default=None,
                    help=f"search: {', '.join(bench_search.VARIANTS[:-1])} (default vinnas); --train: "
                         f"{', '.join(bench_train.VARIANTS)} (default sparse)")
    ap.add_argument("--train", choices=tuple(bench_train.CONFIGS), help="profile the found network's training step")
    ap.add_argument("--genotype", default="darts_v2", help="with --train: a zoo name or 'found'")
    ap.add_argument("--mode", default="ops", choices=("ops", "first"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--skip-bn", choices=("default", "on", "off"), default="default",
                    help="the search's `skip_bn` (a batch norm on the stride-1 identity); default: the preset's")
    ap.add_argument("--grappler-options", default="{}", help="JSON for tf.config.optimizer.set_experimental_options")
    ap.add_argument("--half", action="store_true",
                    help="one forward/backward per step (the gates frozen) instead of the bi-level two")
    ap.add_argument("--names", default="", help="op types to break down by op name (ops mode)")
    ap.add_argument("--top", type=int, default=30, help="op types to print (ops mode)")
    args = ap.parse_args(argv)
    if not 0 <= args.config < len(bench_search.CONFIGS):
        ap.error(f"--config must be in 0..{len(bench_search.CONFIGS) - 1}. Received: {args.config}")
    options = json.loads(args.grappler_options)
    import tensorflow as tf

    t_imports, c_imports = time.time(), time.process_time()
    if args.train:
        args.variant = args.variant or "sparse"
        spec = dict(config=bench_train.CONFIGS[args.train], genotype=args.genotype, variant=args.variant,
                    threads=args.threads)
        spec["config"] = {**spec["config"], "name": f"{args.train} {args.genotype}"}
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
        loop = bench_train._trainer(spec)
    else:
        args.variant = args.variant or "vinnas"
        spec = dict(config=bench_search.CONFIGS[args.config], variant=args.variant, threads=args.threads,
                    skip_bn={"on": True, "off": False, "default": None}[args.skip_bn])
        loop = bench_search.build_searcher(spec)
        if args.half:
            loop.arch_frozen = True  # read when the step is traced
    if options:
        tf.config.optimizer.set_experimental_options(options)
    batches = iter(loop.epoch_data(0))
    step = loop.train_step
    batch = next(batches)
    t_build, c_build = time.time(), time.process_time()
    nodes = len(step.get_concrete_function(batch).graph.as_graph_def().node)
    t_trace, c_trace = time.time(), time.process_time()
    float(step(batch)["loss"])
    t_first, c_first = time.time(), time.process_time()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        float(step(next(batches))["loss"])
        times.append(time.perf_counter() - start)
    if args.mode == "first":
        print(json.dumps({
            "config": spec["config"]["name"], "variant": args.variant, "skip_bn": args.skip_bn, "half": args.half,
            "grappler_options": options,
            "imports_s": round(t_imports - T0, 1), "build_s": round(t_build - t_imports, 1),
            "trace_s": round(t_trace - t_build, 1), "first_call_s": round(t_first - t_trace, 1),
            "first_step_s": round(t_first - T0, 1), "graph_nodes": nodes,
            "step_ms": round(1e3 * sorted(times)[len(times) // 2], 1),
            # CPU seconds of the process (all threads): less sensitive to other
            # processes on the machine than the wall times above.
            "cpu_s": {"imports": round(c_imports - C0, 1), "build": round(c_build - c_imports, 1),
                      "trace": round(c_trace - c_build, 1), "first_call": round(c_first - c_trace, 1)},
            "load": "%.2f %.2f %.2f" % os.getloadavg(),
        }), flush=True)
        return 0
    steps = 3
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(steps):
            float(step(next(batches))["loss"])
        tf.profiler.experimental.stop()
        names = set(filter(None, args.names.split(",")))
        by_type, calls, by_name = _op_times(logdir, steps, names)
    print(f"{spec['config']['name']} {args.variant}: step {1e3 * sorted(times)[2]:.0f} ms unprofiled; "
          f"op time per step, summed over threads (executor wrappers included):")
    for kind, ms in by_type.most_common(args.top):
        print(f"  {kind:48s} {ms:9.1f} ms {calls[kind]:7.0f} calls {1e3 * ms / max(calls[kind], 1e-9):9.1f} us/call")
    for kind in sorted(by_name):
        print(f"{kind} by op name:")
        for key, ms in by_name[kind].most_common(10):
            print(f"  {ms:9.1f} ms  {key}")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)
