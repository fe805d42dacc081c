#!/usr/bin/env python3
"""Search-step benchmark: tfvnas (VINNAS) against the PyTorch DARTS reference.

For each configuration in `CONFIGS` it runs, on this machine and in this run,
every variant in its own subprocess (so memory and first-step time are
measured from a clean process):

- `vinnas`: the tfvnas search step (`Searcher.train_step`, the
  `tf.function` the search runs; first-order bi-level: a gate update on one
  batch, a weight update on another), `weight_vd` off;
- `vinnas+weight_vd`: the same with sparse variational weights;
- `vinnas+xla`: `vinnas` with `SearchConfig.jit_compile` (each update's
  forward and backward pass one XLA cluster, the optimizers outside), run
  right after `vinnas`, so the pair sees the same load;
- `reference`: `shared/bench/torch_darts_reference.py` with the same cells,
  channels, batch, input and threads, run before and after the tfvnas
  variants (the faster run is kept; `step_ms_runs` has both).

- `darts`: the tfvnas DARTS baseline in the same supernet (`--method darts`:
  softmax mixing over the `darts_none` set, no noise, no KL), the closest
  like-for-like to the reference.

Every variant prints one JSON line (once the configuration is done) with `config`, `variant`, `step_ms`
(median), `images_per_s` (2 x batch per step: both halves of the bi-level
step, as the reference counts), `ratio_vs_reference` (images/s over the
reference's), `first_step_s` (process start to the end of the first step,
imports and tracing included) and `peak_rss_mb` (the child's peak RSS from
`wait4`). The tfvnas rows also carry `data_wait_ms` (median time the step
waited for its input batch), and the pruning fields `step_ms_start`,
`step_ms_half_pruned` and `prune_speedup`: half of the gates of each cell
type are pruned through the search's own end-of-epoch path, and the step
traced before pruning and the one traced after are timed alternately.

The table goes to docs/BENCHMARKS.md between the `bench:begin` and
`bench:end` markers (the rest of the file is kept).

Usage:
    python scripts/bench_search.py                   # every configuration
    python scripts/bench_search.py --configs 0,2 --steps 10 --warmup 3
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
REFERENCE = os.path.normpath(os.path.join(ROOT, "..", "shared", "bench", "torch_darts_reference.py"))
DOC = os.path.join(ROOT, "docs", "BENCHMARKS.md")
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

# (name, cells, channels, batch, height/width, input channels, dataset)
CONFIGS = [
    dict(name="3c-4ch-b32-8x8x1", layers=3, channels=4, batch=32, size=8, in_channels=1, data="synthetic"),
    dict(name="3c-8ch-b64-16x16x1", layers=3, channels=8, batch=64, size=16, in_channels=1, data="synthetic"),
    dict(name="5c-8ch-b64-28x28x1", layers=5, channels=8, batch=64, size=28, in_channels=1, data="synthetic"),
    # The `quick` preset as `tfvnas search` runs it (4 cells, 8 channels,
    # batch 64, the bundled mnist-5k resized to its 14x14 proxy, weight_vd
    # off): the first-step target is set on it.
    dict(name="quick-4c-8ch-b64-14x14x1", layers=4, channels=8, batch=64, size=14, in_channels=1, data="mnist-5k",
         only=("vinnas", "vinnas+xla")),
]
VARIANTS = ("vinnas", "vinnas+xla", "vinnas+weight_vd", "darts", "reference")
# `--sweep`: how cost grows toward the `paper` preset (8 cells, 16 channels);
# synthetic 16x16x1 images, `vinnas` and the reference.
SWEEP = dict(layers=(3, 5, 8), channels=(4, 8, 16), batch=(32, 64), size=16, in_channels=1)
SWEEP_RESULTS = os.path.join(ROOT, "docs", "results", "bench_sweep.jsonl")
SWEEP_PLOT = os.path.join(ROOT, "docs", "results", "bench_sweep.png")
SWEEP_BEGIN, SWEEP_END = "<!-- bench-sweep:begin -->", "<!-- bench-sweep:end -->"


def sweep_configs():
    return [dict(name=f"{l}c-{ch}ch-b{b}-{SWEEP['size']}x{SWEEP['size']}x{SWEEP['in_channels']}", layers=l,
                 channels=ch, batch=b, size=SWEEP["size"], in_channels=SWEEP["in_channels"], data="synthetic")
            for l in SWEEP["layers"] for ch in SWEEP["channels"] for b in SWEEP["batch"]]


# ---------------------------------------------------------------------------
# Children
# ---------------------------------------------------------------------------


def _median(values):
    values = sorted(values)
    n = len(values)
    return values[n // 2] if n % 2 else 0.5 * (values[n // 2 - 1] + values[n // 2])


def build_searcher(spec):
    """The `Searcher` of one tfvnas variant (`spec`: config, variant, threads, fuse, shared, grappler).

    Sets TensorFlow's thread counts (and, for `grappler="off"`, switches
    Grappler off for the process), so call it before anything else runs
    TensorFlow (a fresh process). `scripts/profile_step.py` uses it too.
    """
    threads = spec.get("threads")
    import numpy as np
    import tensorflow as tf

    if threads:  # None: TensorFlow's own (already running: a test)
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    if spec.get("grappler", "on") == "off":
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    from tfvnas import config as config_lib
    from tfvnas import data as data_lib
    from tfvnas.loops import searching as search_lib

    c = spec["config"]
    weight_vd = spec["variant"] == "vinnas+weight_vd"
    # Re-trace at every pruning event: the pruning measurement times the step
    # traced without the pruned ops.
    # The bi-level step, whatever the preset's optimisation: the reference's step is one.
    cfg = config_lib.preset("quick").replace(retrace_cost_steps=0, optimization="bilevel")
    if spec["variant"] == "darts":
        cfg = cfg.replace(method="darts", op_set="darts_none")
    if c["data"] == "mnist-5k":
        dataset = data_lib.load("mnist-5k", seed=cfg.seed)
        # The configuration's batch, whatever the preset's is now (it was 64 until 2026-12-07).
        cfg = cfg.replace(weight_vd=weight_vd, batch_size=c["batch"])
    else:
        rng = np.random.default_rng(0)
        shape = (c["size"], c["size"], c["in_channels"])
        n_train = 2 * c["batch"] * 16  # 16 bi-level steps per epoch

        def images(n):
            return rng.integers(0, 256, (n,) + shape, dtype=np.uint8)

        def labels(n):
            return rng.integers(0, 10, n).astype(np.int32)

        dataset = data_lib.Dataset(
            "synthetic", images(n_train), labels(n_train), images(c["batch"]), labels(c["batch"]),
            images(c["batch"]), labels(c["batch"]), 10,
        )
        # The synthetic images are searched at their own size (the `quick`
        # preset's 14x14 proxy is for the bundled data).
        cfg = cfg.replace(layers=c["layers"], channels=c["channels"], batch_size=c["batch"], weight_vd=weight_vd)
        # No resize and no limit: the whole synthetic set at its own size.
        cfg = cfg.replace(resolution=None, limit=None)
    if not spec.get("shared", True):  # every edge traced inline (`SearchConfig.shared_edge_functions`)
        cfg = cfg.replace(shared_edge_functions=False)
    if spec["variant"] == "vinnas+xla":
        cfg = cfg.replace(jit_compile=True)
    if spec.get("skip_bn") is not None:  # the stride-1 identity with or without its batch norm
        cfg = cfg.replace(skip_bn=spec["skip_bn"])
    if not spec.get("fuse", True):  # every candidate op by op (`SearchConfig.fused_edges`)
        cfg = cfg.replace(fused_edges=False)
    searcher = search_lib.Searcher(cfg, dataset, verbose=0)
    size = cfg.resolution or dataset.image_shape[0]
    if c["data"] != "mnist-5k" and size != c["size"]:
        raise RuntimeError(f"{c['name']}: the search runs at {size}x{size}, not at the configuration's {c['size']}")
    return searcher


def searched_image(searcher):
    """`(height, width, channels)` of the images the search step takes (after the proxy's resize)."""
    shape = tuple(searcher.dataset.image_shape)
    r = searcher.config.resolution
    return (r, r) + shape[2:] if r else shape


def _tfvnas_child(spec):
    """One tfvnas variant; returns its result dict (runs in a fresh process)."""
    searcher = build_searcher(spec)
    c = spec["config"]

    def batches():
        epoch = 0
        while True:
            for b in searcher.epoch_data(epoch):
                yield b
            epoch += 1

    stream = batches()

    def timed(step_fn):
        t0 = time.perf_counter()
        b = next(stream)
        t1 = time.perf_counter()
        out = step_fn(b)
        float(out["loss"])  # waits for the step, as the loop does
        t2 = time.perf_counter()
        return t2 - t1, t1 - t0

    timed(searcher.train_step)
    first_step_at = time.time()
    for _ in range(spec["warmup"]):
        timed(searcher.train_step)
    steps, waits = [], []
    for _ in range(spec["steps"]):
        s, w = timed(searcher.train_step)
        steps.append(s)
        waits.append(w)
    import resource

    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    step = _median(steps)
    result = {
        "step_ms": round(step * 1e3, 2),
        "images_per_s": round(2 * c["batch"] / step, 1),
        "first_step_at": first_step_at,
        "data_wait_ms": round(_median(waits) * 1e3, 3),
        "searched_image": "x".join(str(d) for d in searched_image(searcher)),
        "peak_rss_mb_before_pruning": round(rss_mb, 1),
    }
    if spec["prune"]:
        result.update(_prune_half(searcher, timed, spec))
    return result


def _prune_half(searcher, timed, spec):
    """Prunes half the gates of each cell type; times the old and new steps alternately."""
    import numpy as np

    model = searcher.model
    rng = np.random.default_rng(1)
    for gates in model.gates.values():
        log_alpha = gates.raw_log_alpha().numpy().reshape(-1)
        log_alpha[rng.permutation(log_alpha.size)[: log_alpha.size // 2]] = 30.0  # far above any threshold
        gates.set_log_alpha(log_alpha.reshape(gates.shape))
    start_step = searcher.train_step
    t0 = time.perf_counter()
    # The search's own path: a pruning check (the per-node floor may hold some
    # of the chosen gates), then the end-of-epoch decision to trace anew.
    pruned = model.update_evidence(patience=1)
    searcher.end_epoch(0)
    pruned_step = searcher.train_step
    timed(pruned_step)  # (re-)trace
    retrace_s = time.perf_counter() - t0
    for _ in range(spec["warmup"]):
        timed(start_step)
        timed(pruned_step)
    before, after = [], []
    for _ in range(spec["steps"]):
        before.append(timed(start_step)[0])
        after.append(timed(pruned_step)[0])
    b, a = _median(before), _median(after)
    return {
        "pruned_gates": pruned,
        "active_gates": sum(model.active_ops().values()),
        "step_ms_start": round(b * 1e3, 2),
        "step_ms_half_pruned": round(a * 1e3, 2),
        "prune_speedup": round(b / a, 3),
        "retrace_after_pruning_s": round(retrace_s, 2),
        "retraced": pruned_step is not start_step,
    }


def _flops_child(spec):
    """FLOPs of one training forward pass of the supernet on a batch, op by op (TensorFlow's profiler).

    The useful work: every candidate op's own convolutions (and the
    classifier), traced inline and unfused, so that neither the
    block-diagonal pointwise kernels of the fused edge (zeros multiplied)
    nor the function calls hide any of it from the profiler, which counts
    `Conv2D`, `DepthwiseConv2dNative` and `MatMul` from their static shapes.
    """
    import tensorflow as tf

    searcher = build_searcher({**spec, "fuse": False, "shared": False})
    model, c = searcher.model, spec["config"]
    shape = (c["batch"],) + searched_image(searcher)
    fn = tf.function(lambda x: model(x, training=True))
    graph = fn.get_concrete_function(tf.TensorSpec(shape, tf.float32)).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    options["account_type_regexes"] = ["Conv2D", "DepthwiseConv2dNative", "MatMul"]  # not the element-wise ops
    profile = tf.compat.v1.profiler.profile(graph, options=options)
    kinds = {}
    for op in graph.get_operations():
        if op.type in ("Conv2D", "DepthwiseConv2dNative", "MatMul"):
            kinds[op.type] = kinds.get(op.type, 0) + 1
    return {"forward_flops": int(profile.total_float_ops), "counted_ops": kinds}


def _gemm_child(spec):
    """The CPU's float32 GEMM rate at `threads` threads: median GFLOP/s of n x n x n `tf.linalg.matmul`."""
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(spec["threads"])
    tf.config.threading.set_inter_op_parallelism_threads(spec["threads"])
    n = spec.get("n", 1024)
    rng = np.random.default_rng(0)
    a = tf.constant(rng.normal(size=(n, n)), tf.float32)
    b = tf.constant(rng.normal(size=(n, n)), tf.float32)
    matmul = tf.function(lambda x, y: tf.linalg.matmul(x, y))
    matmul(a, b).numpy()
    times = []
    for _ in range(spec.get("repeats", 20)):
        t0 = time.perf_counter()
        matmul(a, b).numpy()
        times.append(time.perf_counter() - t0)
    return {"gemm_gflops": round(2 * n ** 3 / _median(times) / 1e9, 2), "gemm_n": n}


def _child_main(spec):
    mode = spec.get("mode", "step")
    result = {"step": _tfvnas_child, "flops": _flops_child, "gemm": _gemm_child}[mode](spec)
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------
# Parent
# ---------------------------------------------------------------------------


class _Reaper:
    """Runs a child and reads its own peak RSS with `os.wait4`."""

    @staticmethod
    def run(cmd, env=None):
        t0 = time.time()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        out = proc.stdout.read()
        err = proc.stderr.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.time() - t0
        return out, err, proc.returncode, usage.ru_maxrss / 1024, wall, t0


def _child_env(threads):
    env = dict(os.environ)
    # This checkout's tfvnas, after any PYTHONPATH the caller set.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), ROOT) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def _run_child(spec, what):
    """Runs one `--child` in a fresh process; returns `(result, peak RSS MB, start time)`."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]
    out, err, code, rss, wall, t0 = _Reaper.run(cmd, _child_env(spec["threads"]))
    line = next((l for l in out.splitlines() if l.startswith("RESULT ")), None)
    if code != 0 or line is None:
        raise RuntimeError(f"{what} failed (exit {code}):\n{err[-4000:]}")
    return json.loads(line[len("RESULT "):]), rss, t0


def run_tfvnas(config, variant, args, prune=None):
    if prune is None:
        prune = not args.no_prune and (variant == "vinnas" or args.prune_all)
    spec = dict(config=config, variant=variant, steps=args.steps, warmup=args.warmup,
                threads=args.threads, prune=prune, fuse=not args.no_fuse, grappler=args.grappler)
    r, rss, t0 = _run_child(spec, f"{variant} on {config['name']}")
    r["first_step_s"] = round(r.pop("first_step_at") - t0, 2)
    r["peak_rss_mb"] = round(rss, 1)
    return r


def step_flops(config, threads):
    """`(FLOPs of one bi-level step, details)`: 5 forward passes' worth on one batch.

    The weight half is a forward and a backward pass (input and weight
    gradients: about twice the forward's FLOPs), 3F; the first-order gate
    half needs no weight gradients, 2F.
    """
    r, _, _ = _run_child(dict(mode="flops", config=config, variant="vinnas", threads=threads),
                         f"FLOPs of {config['name']}")
    return 5 * r["forward_flops"], r


def gemm_rate(threads):
    r, _, _ = _run_child(dict(mode="gemm", threads=threads), "the GEMM rate")
    return r["gemm_gflops"]


def floor_fraction(step_ms, flops, gflops):
    """The share of the compute floor a step reaches: (FLOPs / GEMM rate) / step time."""
    return round(flops / (gflops * 1e9) / (step_ms / 1e3), 4)


def run_reference(config, args):
    base = [sys.executable, REFERENCE, "--layers", str(config["layers"]), "--channels", str(config["channels"]),
            "--batch", str(config["batch"]), "--size", str(config["size"]),
            "--in-channels", str(config["in_channels"]), "--threads", str(args.threads)]
    env = _child_env(args.threads)
    out, err, code, rss, wall, _ = _Reaper.run(base + ["--steps", str(args.steps), "--warmup", str(args.warmup)], env)
    if code != 0:
        raise RuntimeError(f"reference on {config['name']} failed (exit {code}):\n{err[-4000:]}")
    r = json.loads(out.strip().splitlines()[-1])
    # Start to first finished step: a separate process that runs one step and exits.
    _, err1, code1, _, wall1, _ = _Reaper.run(base + ["--steps", "1", "--warmup", "0"], env)
    if code1 != 0:
        raise RuntimeError(f"reference first step on {config['name']} failed:\n{err1[-4000:]}")
    return {"step_ms": r["step_ms"], "images_per_s": r["images_per_s"], "first_step_s": round(wall1, 2),
            "peak_rss_mb": round(rss, 1), "threads": r["threads"]}


def machine_info(threads):
    info = {"python": platform.python_version(), "platform": platform.platform(), "cores": os.cpu_count()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = re.search(r"model name\s*:\s*(.*)", f.read())
        info["cpu"] = model.group(1).strip() if model else platform.processor()
    except OSError:
        info["cpu"] = platform.processor()
    code = ("import json, tensorflow as tf, keras, tensorflow_probability as tfp, torch; "
            "print(json.dumps({'tensorflow': tf.__version__, 'keras': keras.__version__, "
            "'tfp': tfp.__version__, 'torch': torch.__version__}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_child_env(threads))
    try:
        info.update(json.loads(out.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError):
        info["versions_error"] = out.stderr[-500:]
    info["threads"] = (f"TF intra_op={threads}, inter_op={threads}; torch.set_num_threads({threads}); "
                       f"OMP_NUM_THREADS={threads}; TF_ENABLE_ONEDNN_OPTS="
                       f"{os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'unset (default on)')}")
    return info


def _load():
    return "%.2f %.2f %.2f" % os.getloadavg()


def _fmt(v, spec="{:.2f}"):
    if v is None or v == "":
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return spec.format(v)
    return str(v)


def render(rows, info, command, started, finished, loads):
    lines = [
        BEGIN,
        "",
        f"Generated by `{command}` (started {started}, finished {finished}; "
        f"load average at start / end: {loads[0]} / {loads[-1]}).",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items() if k not in ("threads",)) + ".",
        "",
        "Threads: " + info.get("threads", "") + ".",
        "",
        f"Compute floor: {info.get('gemm_gflops', '-')} GFLOP/s, this CPU's float32 GEMM rate "
        "(1024 x 1024 x 1024 `tf.linalg.matmul`, median of 20, same threads); a step's floor is its "
        "FLOPs (5 training forward passes of the batch, op by op, counted by TensorFlow's profiler: "
        "`step_flops`) at that rate, and \"floor\" is that time over the measured step.",
        "",
        "| config | variant | step ms | images/s | x reference | first step s | peak RSS MB "
        "| data wait ms | step ms start / half pruned | prune speed-up | step GFLOP | floor |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        pruned = ""
        if r.get("step_ms_start") is not None:
            pruned = f"{r['step_ms_start']:.0f} / {r['step_ms_half_pruned']:.0f}"
        lines.append(
            f"| {r['config']} | {r['variant']} | {_fmt(r['step_ms'], '{:.1f}')} | {_fmt(r['images_per_s'], '{:.1f}')} "
            f"| {_fmt(r['ratio_vs_reference'])} | {_fmt(r['first_step_s'], '{:.1f}')} "
            f"| {_fmt(r['peak_rss_mb'], '{:.0f}')} | {_fmt(r.get('data_wait_ms'), '{:.2f}')} "
            f"| {pruned or '-'} | {_fmt(r.get('prune_speedup'))} "
            f"| {_fmt(r.get('step_gflop'), '{:.3f}')} | {_fmt(r.get('floor_fraction'), '{:.1%}')} |"
        )
    lines += ["", END]
    return "\n".join(lines)


def write_doc(path, block, begin=BEGIN, end=END):
    """Writes `block` (which starts with `begin` and ends with `end`) between those markers of the
    Markdown file `path`, or at its end when it has none (a new file holds the block alone)."""
    text = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            text = f.read()
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = (text.rstrip() + "\n\n" if text.strip() else "") + block + "\n"
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default=None,
                    help=f"comma-separated indices into CONFIGS (0..{len(CONFIGS) - 1}); default all")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ", ".join(VARIANTS))
    ap.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps after the first")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads of both frameworks")
    ap.add_argument("--no-prune", action="store_true", help="skip the half-pruned timing")
    ap.add_argument("--prune-all", action="store_true",
                    help="half-pruned timing for every tfvnas variant (default: `vinnas` only)")
    ap.add_argument("--no-fuse", action="store_true",
                    help="ablation: compute every edge op by op (no fused edge)")
    ap.add_argument("--grappler", choices=("on", "off"), default="on",
                    help="ablation: TensorFlow's graph optimiser on (as `tfvnas search` runs) or off")
    ap.add_argument("--sweep", action="store_true",
                    help="the cost sweep over cells x channels x batch (`SWEEP`) instead of `CONFIGS`; resumes "
                         "from its results file")
    ap.add_argument("--sweep-points", default=None,
                    help="comma-separated indices into the sweep's points (default all; see `sweep_configs`)")
    ap.add_argument("--sweep-results", default=SWEEP_RESULTS, help="the sweep's JSON lines (resumable)")
    ap.add_argument("--doc", default=DOC, help="Markdown file to write the table into")
    ap.add_argument("--no-doc", action="store_true", help="print the JSON lines only")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        _child_main(json.loads(args.child))
        return 0
    indices = list(range(len(CONFIGS))) if args.configs is None else [int(i) for i in args.configs.split(",")]
    for i in indices:
        if not 0 <= i < len(CONFIGS):
            raise SystemExit(f"--configs: index {i} is not in 0..{len(CONFIGS) - 1}")
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            raise SystemExit(f"--variants: unknown variant {v!r}; known: {', '.join(VARIANTS)}")
    command = "python scripts/bench_search.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    loads = [_load()]
    info = machine_info(args.threads)
    info["gemm_gflops"] = gemm_rate(args.threads)
    if args.sweep:
        run_sweep(args, info)
        return 0
    rows = []
    for i in indices:
        config = CONFIGS[i]
        flops, _ = step_flops(config, args.threads)
        results = {}
        tf_variants = [v for v in variants if v != "reference" and not (config.get("only") and v not in config["only"])]
        # The reference runs before and after the tfvnas variants and the
        # faster of its two runs is kept: its OpenMP threads suffer more
        # than TensorFlow's from other processes on the two cores, and the
        # faster run is the conservative baseline for the ratios.
        order = (["reference"] if "reference" in variants else []) + tf_variants
        for variant in order:
            r = run_reference(config, args) if variant == "reference" else run_tfvnas(config, variant, args)
            results[variant] = r
            ref = results.get("reference")
            row = {"config": config["name"], "variant": variant, "step_ms": r["step_ms"],
                   "images_per_s": r["images_per_s"],
                   "ratio_vs_reference": round(r["images_per_s"] / ref["images_per_s"], 3) if ref else None,
                   "first_step_s": r["first_step_s"], "peak_rss_mb": r["peak_rss_mb"]}
            row.update({k: v for k, v in r.items() if k not in row})
            row["load"] = _load()
            rows.append(row)
        if "reference" in results and tf_variants:
            second = run_reference(config, args)
            first = results["reference"]
            best = min((first, second), key=lambda r: r["step_ms"])
            ref_row = next(r for r in rows if r["config"] == config["name"] and r["variant"] == "reference")
            ref_row.update({k: v for k, v in best.items()})
            ref_row["step_ms_runs"] = [first["step_ms"], second["step_ms"]]
            ref_row["first_step_s"] = min(first["first_step_s"], second["first_step_s"])
            ref_row["peak_rss_mb"] = max(first["peak_rss_mb"], second["peak_rss_mb"])
            for row in rows:
                if row["config"] == config["name"] and row["variant"] != "reference":
                    row["ratio_vs_reference"] = round(row["images_per_s"] / best["images_per_s"], 3)
        for row in rows:
            if row["config"] == config["name"]:
                row["step_gflop"] = round(flops / 1e9, 4)
                row["floor_fraction"] = floor_fraction(row["step_ms"], flops, info["gemm_gflops"])
                print(json.dumps(row), flush=True)  # once the ratios are final
        loads.append(_load())
    if not args.no_doc:
        finished = time.strftime("%Y-%m-%d %H:%M:%S")
        write_doc(args.doc, render(rows, info, command, started, finished, loads))
    return 0


def run_sweep(args, info):
    """Every `sweep_configs()` point, `vinnas` and the reference; skips points already in the results file."""
    from tfvnas import files

    done = {(r["config"], r["variant"]) for r in files.read_json_lines(args.sweep_results)}
    os.makedirs(os.path.dirname(os.path.abspath(args.sweep_results)), exist_ok=True)
    points = sweep_configs()
    if args.sweep_points is not None:
        chosen = [int(i) for i in args.sweep_points.split(",") if i]
        bad = [i for i in chosen if not 0 <= i < len(points)]
        if bad:
            raise SystemExit(f"--sweep-points: {bad} not in 0..{len(points) - 1}")
        points = [points[i] for i in chosen]
    for config in points:
        if {(config["name"], "vinnas"), (config["name"], "reference")} <= done:
            continue
        flops, _ = step_flops(config, args.threads)
        ref = run_reference(config, args)
        mine = run_tfvnas(config, "vinnas", args, prune=False)
        for variant, r in (("reference", ref), ("vinnas", mine)):
            row = {"config": config["name"], "variant": variant, "layers": config["layers"],
                   "channels": config["channels"], "batch": config["batch"], "step_ms": r["step_ms"],
                   "images_per_s": r["images_per_s"], "first_step_s": r["first_step_s"],
                   "peak_rss_mb": r["peak_rss_mb"], "ratio_vs_reference": round(r["images_per_s"] / ref["images_per_s"], 3),
                   "step_gflop": round(flops / 1e9, 4),
                   "floor_fraction": floor_fraction(r["step_ms"], flops, info["gemm_gflops"]),
                   "gemm_gflops": info["gemm_gflops"], "threads": args.threads, "load": _load(),
                   "date": time.strftime("%Y-%m-%d %H:%M:%S")}
            files.append_json_line(args.sweep_results, row)
            print(json.dumps(row), flush=True)
    rows = files.read_json_lines(args.sweep_results)
    if rows and not args.no_doc:
        sweep_plot(rows, SWEEP_PLOT)
        write_sweep_doc(args.doc, render_sweep(rows, info))


def render_sweep(rows, info):
    lines = [SWEEP_BEGIN, "",
             f"Generated by `python scripts/bench_search.py --sweep` (results: `docs/results/bench_sweep.jsonl`, "
             f"dates {min(r['date'] for r in rows)} to {max(r['date'] for r in rows)}; machine: "
             f"{info.get('cpu', '?')}, {rows[0]['threads']} threads; GEMM floor {rows[0]['gemm_gflops']} GFLOP/s).",
             "", "![step and first-step time against cells, channels and batch](results/bench_sweep.png)", "",
             "| cells | channels | batch | step ms: tfvnas / reference | x reference | first step s: tfvnas / reference "
             "| peak RSS MB: tfvnas / reference | step GFLOP | floor: tfvnas / reference |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    by = {}
    for r in rows:
        by.setdefault((r["layers"], r["channels"], r["batch"]), {})[r["variant"]] = r
    for key in sorted(by):
        pair = by[key]
        if set(pair) != {"vinnas", "reference"}:
            continue
        v, ref = pair["vinnas"], pair["reference"]
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {v['step_ms']:.0f} / {ref['step_ms']:.0f} | "
                     f"{v['ratio_vs_reference']:.2f} | {v['first_step_s']:.1f} / {ref['first_step_s']:.1f} | "
                     f"{v['peak_rss_mb']:.0f} / {ref['peak_rss_mb']:.0f} | {v['step_gflop']:.3f} | "
                     f"{v['floor_fraction']:.1%} / {ref['floor_fraction']:.1%} |")
    lines += ["", SWEEP_END]
    return "\n".join(lines)


def write_sweep_doc(path, block):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if SWEEP_BEGIN in text and SWEEP_END in text:
        head, rest = text.split(SWEEP_BEGIN, 1)
        text = head + block + rest.split(SWEEP_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## How cost grows: the sweep\n\n" + block + "\n"
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def sweep_plot(rows, path):
    """Step and first-step time against cells, one line per (channels, batch), tfvnas solid, reference dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = plt.get_cmap("tab10")
    keys = sorted({(r["channels"], r["batch"]) for r in rows})
    for i, (channels, batch) in enumerate(keys):
        for variant, style in (("vinnas", "-"), ("reference", "--")):
            pts = sorted((r["layers"], r) for r in rows
                         if r["channels"] == channels and r["batch"] == batch and r["variant"] == variant)
            if not pts:
                continue
            label = f"{channels} ch, batch {batch}" if variant == "vinnas" else None
            cells = [p[0] for p in pts]
            axes[0].plot(cells, [p[1]["step_ms"] for p in pts], style, marker="o", color=colours(i), label=label)
            axes[1].plot(cells, [p[1]["first_step_s"] for p in pts], style, marker="o", color=colours(i))
    for ax, title, unit in ((axes[0], "search step", "ms"), (axes[1], "process start to first finished step", "s")):
        ax.set_yscale("log")
        ax.set_xlabel("cells")
        ax.set_xticks(SWEEP["layers"])
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].plot([], [], "k-", label="tfvnas (vinnas)")
    axes[0].plot([], [], "k--", label="PyTorch reference")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
