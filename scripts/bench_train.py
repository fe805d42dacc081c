#!/usr/bin/env python3
"""Training-step benchmark of the found network: tfvnas against the PyTorch DARTS evaluation network.

For each configuration (cells, channels, image, batch) and genotype it runs,
on this machine and in this run, each variant in its own subprocess:

- `dense`: `tfvnas.train`'s own step (`Trainer.train_step`, the
  `tf.function` the training runs: forward, backward, SGD with momentum,
  weight decay and clipping) with plain weights;
- `sparse`: the same with sparse variational weights (`weight_vd`: the
  local reparameterisation, the ARD KL);
- `*+xla`: the same step with `jit_compile` on;
- `*+bf16`: the same step under `precision="mixed_bfloat16"` (not in the
  default list: on a CPU without bf16 instructions it measures the cost of
  the casts, not the speed-up a GPU gets);
- `reference`: `shared/bench/torch_darts_eval_reference.py` (DARTS'
  `NetworkCIFAR` of the same genotype, cells, channels, batch and threads;
  SGD with momentum, weight decay, clipping), run before and after the
  tfvnas variants (the faster run is kept).

Columns, as the search table's: median step ms, images/s, the ratio to the
reference's images/s, first step (process start to the end of the first
step, imports and tracing included), peak RSS, and the floor: the step's
FLOPs (3 x the forward pass's convolutions and matmuls, from TensorFlow's
profiler) at this machine's float32 GEMM rate, and the roofline, the larger
of that and the bytes the step moves (3 x the forward ops' inputs and
outputs, from their static shapes: an estimate) at this machine's measured
memory bandwidth; each step's share of it.

    python scripts/bench_train.py                             # every configuration, the table into BENCHMARKS.md
    python scripts/bench_train.py --configs quick --variants dense,sparse --steps 10
"""

import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_search as bench  # noqa: E402  (children, reaper, GEMM rate, machine info)

ROOT = bench.ROOT
REFERENCE = os.path.normpath(os.path.join(ROOT, "..", "shared", "bench", "torch_darts_eval_reference.py"))
DOC = bench.DOC
BEGIN, END = "<!-- bench-train:begin -->", "<!-- bench-train:end -->"
RESULTS = os.path.join(ROOT, "docs", "results", "bench_train.jsonl")

CONFIGS = {
    # The quick training recipe's network on the bundled data's shape.
    "quick": dict(layers=4, channels=8, size=28, in_channels=1, batch=64),
    # A paper-like network (DARTS' CIFAR-10 evaluation at 8 cells, 16 channels).
    "paper-like": dict(layers=8, channels=16, size=32, in_channels=3, batch=64),
}
# DARTS V2, and a cell a VINNAS search found (docs/RESULTS.md).
GENOTYPES = ("darts_v2", "found")
VARIANTS = ("dense", "sparse", "dense+xla", "sparse+xla")


def found_genotype():
    """The cell of the example search that ships with the repository."""
    from tfvnas.models.genotype import Genotype

    return Genotype.load(os.path.join(ROOT, "saved_models", "example-mnist-5k", "search", "genotype.json"))


def _genotype(name):
    from tfvnas.models import zoo

    return found_genotype() if name == "found" else zoo.load_genotype(name)


def train_fields(variant, c):
    """The `TrainConfig` fields (over the quick preset) of a variant: dense or sparse, then any of +xla, +bf16."""
    base, *levers = variant.split("+")
    unknown = set(levers) - {"xla", "bf16"}
    if base not in ("dense", "sparse") or unknown:
        raise SystemExit(f"bench_train: a variant is dense or sparse, then any of +xla, +bf16; received {variant!r}")
    fields = dict(layers=c["layers"], channels=c["channels"], batch_size=c["batch"], epochs=1,
                  weight_vd=base == "sparse", auxiliary=False, drop_path=0.0, cutout=0)
    if "xla" in levers:
        fields["jit_compile"] = True
    if "bf16" in levers:
        fields["precision"] = "mixed_bfloat16"  # Keras' mixed policy; gates, log_sigma2, KL and loss stay float32
    return fields


def _trainer(spec):
    import numpy as np

    from tfvnas import config as config_lib
    from tfvnas import data as data_lib
    from tfvnas.loops.training import Trainer

    c = spec["config"]
    rng = np.random.default_rng(0)
    shape = (c["size"], c["size"], c["in_channels"])
    n = c["batch"] * 16

    def images(k):
        return rng.integers(0, 256, (k,) + shape, dtype=np.uint8)

    def labels(k):
        return rng.integers(0, 10, k).astype(np.int32)

    dataset = data_lib.Dataset("synthetic", images(n), labels(n), images(c["batch"]), labels(c["batch"]),
                               images(c["batch"]), labels(c["batch"]), 10)
    fields = train_fields(spec["variant"], c)
    cfg = config_lib.TRAIN_PRESETS["quick"].replace(**fields)
    return Trainer(_genotype(spec["genotype"]), cfg, dataset, verbose=0)


def _step_child(spec):
    import tensorflow as tf

    threads = spec["threads"]
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    trainer = _trainer(spec)

    def batches():
        epoch = 0
        while True:
            yield from trainer.epoch_data(epoch)
            epoch += 1

    stream = batches()

    def timed():
        b = next(stream)
        t = time.perf_counter()
        float(trainer.train_step(b)["loss"])  # waits for the step, as the loop does
        return time.perf_counter() - t

    timed()
    first_step_at = time.time()
    for _ in range(spec["warmup"]):
        timed()
    step = bench._median([timed() for _ in range(spec["steps"])])
    return {"step_ms": round(step * 1e3, 2), "images_per_s": round(spec["config"]["batch"] / step, 1),
            "first_step_at": first_step_at, "params": int(sum(v.shape.num_elements()
                                                               for v in trainer.model.trainable_variables))}


def _cost_child(spec):
    """FLOPs and an estimate of the bytes moved by one training forward pass (TensorFlow's profiler, static shapes)."""
    import tensorflow as tf

    trainer = _trainer({**spec, "variant": "dense"})
    model, c = trainer.model, spec["config"]
    shape = (c["batch"], c["size"], c["size"], c["in_channels"])
    fn = tf.function(lambda x: model(x, training=True))
    graph = fn.get_concrete_function(tf.TensorSpec(shape, tf.float32)).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    options["account_type_regexes"] = ["Conv2D", "DepthwiseConv2dNative", "MatMul"]
    flops = tf.compat.v1.profiler.profile(graph, options=options).total_float_ops
    moved = 0
    for op in graph.get_operations():
        if op.type in ("Placeholder", "Const", "ReadVariableOp", "VarHandleOp", "NoOp", "Identity"):
            continue
        for t in list(op.inputs) + list(op.outputs):
            if t.dtype.is_floating and t.shape.is_fully_defined():
                moved += t.shape.num_elements() * t.dtype.size
    return {"forward_flops": int(flops), "forward_bytes": int(moved)}


def _bandwidth_child(spec):
    """This machine's memory bandwidth: median GB/s of copying a 256 MB float32 array (read + write)."""
    import numpy as np

    a = np.ones(64 * 2**20, np.float32)
    b = np.empty_like(a)
    times = []
    for _ in range(spec.get("repeats", 15)):
        t = time.perf_counter()
        np.copyto(b, a)
        times.append(time.perf_counter() - t)
    return {"bandwidth_gbs": round(2 * a.nbytes / bench._median(times) / 1e9, 2)}


CHILDREN = {"step": _step_child, "cost": _cost_child, "bandwidth": _bandwidth_child}


def _child(spec, what):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]
    out, err, code, rss, _, t0 = bench._Reaper.run(cmd, bench._child_env(spec.get("threads", 2)))
    line = next((l for l in out.splitlines() if l.startswith("RESULT ")), None)
    if code != 0 or line is None:
        raise RuntimeError(f"{what} failed (exit {code}):\n{err[-4000:]}")
    return json.loads(line[len("RESULT "):]), rss, t0


def run_tfvnas(name, genotype, variant, args):
    spec = dict(config=CONFIGS[name], genotype=genotype, variant=variant, steps=args.steps, warmup=args.warmup,
                threads=args.threads)
    r, rss, t0 = _child(spec, f"{variant} {genotype} on {name}")
    r["first_step_s"] = round(r.pop("first_step_at") - t0, 2)
    r["peak_rss_mb"] = round(rss, 1)
    return r


def run_reference(name, genotype, args):
    c = CONFIGS[name]
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        f.write(_genotype(genotype).to_json())
        path = f.name
    try:
        base = [sys.executable, REFERENCE, path, "--layers", str(c["layers"]), "--channels", str(c["channels"]),
                "--batch", str(c["batch"]), "--size", str(c["size"]), "--in-channels", str(c["in_channels"]),
                "--threads", str(args.threads)]
        env = bench._child_env(args.threads)
        out, err, code, rss, _, _ = bench._Reaper.run(base + ["--steps", str(args.steps), "--warmup",
                                                               str(args.warmup)], env)
        if code != 0:
            raise RuntimeError(f"reference {genotype} on {name} failed (exit {code}):\n{err[-4000:]}")
        r = json.loads(out.strip().splitlines()[-1])
        _, err1, code1, _, wall1, _ = bench._Reaper.run(base + ["--steps", "1", "--warmup", "0"], env)
        if code1 != 0:
            raise RuntimeError(f"reference first step failed:\n{err1[-4000:]}")
    finally:
        os.remove(path)
    return {"step_ms": r["step_ms"], "images_per_s": r["images_per_s"], "first_step_s": round(wall1, 2),
            "peak_rss_mb": round(rss, 1), "params": r["params"]}


def roofline_ms(flops, moved, gflops, bandwidth):
    """The larger of the step's FLOPs at the GEMM rate and its bytes at the memory bandwidth, in ms."""
    return 1e3 * max(flops / (gflops * 1e9), moved / (bandwidth * 1e9))


def render(rows, info, command):
    lines = [BEGIN, "", f"Measured with `{command}` on {info.get('cpu', '?')}, {info['threads']}; "
             f"TensorFlow {info.get('tensorflow')}, PyTorch {info.get('torch')}; float32 GEMM rate "
             f"{info['gemm_gflops']} GFLOP/s, memory bandwidth {info['bandwidth_gbs']} GB/s (copy). "
             f"Load averages before the run: {info['load']}.", "",
             "| configuration | genotype | variant | step ms | images/s | ratio to reference | first step s | "
             "peak RSS MB | step GFLOP | roofline ms | share of the roofline |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['genotype']} | {r['variant']} | {r['step_ms']:.1f} | {r['images_per_s']:.0f} | "
            f"{bench._fmt(r.get('ratio_vs_reference'))} | {r['first_step_s']:.1f} | {r['peak_rss_mb']:.0f} | "
            f"{r['step_gflop']:.3f} | {r['roofline_ms']:.2f} | {100 * r['roofline_share']:.1f}% |")
    lines += ["", END]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"of {', '.join(CONFIGS)}")
    ap.add_argument("--genotypes", default=",".join(GENOTYPES), help="zoo names or 'found'")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"of {', '.join(VARIANTS)}")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-reference", action="store_true",
                    help="skip the PyTorch reference (an A/B of tfvnas variants only)")
    ap.add_argument("--results", default=RESULTS, help="a JSON line per row is appended here")
    ap.add_argument("--doc", default=DOC, help="the table goes between the bench-train markers")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        print("RESULT " + json.dumps(CHILDREN[spec.get("mode", "step")](spec)), flush=True)
        return 0
    for variant in args.variants.split(","):
        train_fields(variant, CONFIGS["quick"])  # a misspelt variant fails here, not after the reference ran
    info = bench.machine_info(args.threads)
    info["load"] = bench._load()
    info["gemm_gflops"] = bench.gemm_rate(args.threads)
    info["bandwidth_gbs"] = _child(dict(mode="bandwidth", threads=args.threads), "the bandwidth")[0]["bandwidth_gbs"]
    command = "python scripts/bench_train.py " + " ".join(argv if argv is not None else sys.argv[1:])
    rows = []
    for name in args.configs.split(","):
        for genotype in args.genotypes.split(","):
            cost = _child(dict(mode="cost", config=CONFIGS[name], genotype=genotype, threads=args.threads),
                          f"the cost of {genotype} on {name}")[0]
            flops, moved = 3 * cost["forward_flops"], 3 * cost["forward_bytes"]
            roof = roofline_ms(flops, moved, info["gemm_gflops"], info["bandwidth_gbs"])
            def emit(variant, r, best):
                row = {"config": name, "genotype": genotype, "variant": variant, "load": bench._load(), **r,
                       "ratio_vs_reference": None if variant == "reference" or best is None else
                       round(r["images_per_s"] / best["images_per_s"], 3),
                       "step_gflop": flops / 1e9, "step_bytes": moved, "roofline_ms": roof,
                       "roofline_share": roof / r["step_ms"], "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                       "threads": args.threads}
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.results:
                    os.makedirs(os.path.dirname(args.results), exist_ok=True)
                    with open(args.results, "a", encoding="utf-8") as f:
                        f.write(json.dumps(row) + "\n")

            if args.no_reference:  # each row as soon as its variant is measured (its load with it)
                for v in args.variants.split(","):
                    emit(v, run_tfvnas(name, genotype, v, args), None)
                continue
            reference = [run_reference(name, genotype, args)]
            measured = [(v, run_tfvnas(name, genotype, v, args) | {"load": bench._load()})
                        for v in args.variants.split(",")]
            reference.append(run_reference(name, genotype, args))
            best = min(reference, key=lambda r: r["step_ms"])
            for variant, r in [("reference", best)] + measured:
                emit(variant, r, best)
    if args.doc:
        bench.write_doc(args.doc, render(rows, info, command), BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
