#!/usr/bin/env python3
"""Export benchmark: a training folder exported with and without dead-channel elimination.

Exports `--train` twice with `tfvnas.exporting.export` (float and int8 files;
no QAT), once with `shrink` off and once on, then times every `.tflite` file
of both exports together with LiteRT (XNNPACK, one image): interleaved, file
after file, for `--rounds` rounds of `--runs` timed invocations, at each
thread count (the runs of all rounds are pooled: on a shared machine the
speed drifts between seconds, and interleaving puts the drift on every file
alike). For each file it reports MACs per image and parameters (of the Keras
model the file holds), size raw and gzipped, latency median and p90 per
thread count, and accuracy on the test split; and it checks that the two
exports' float files give the same top-1 on every test image.

With `--per-cell` it also times models cut after the stem and after each
cell (float, dense encoding), for both networks, to show where the time goes;
with `--channel-sweep`, one 5x5 depthwise and one 1x1 convolution at 28x28
for several channel counts (a chain of four, per op), to show how XNNPACK's
time follows the channel count on this machine.

Writes `bench_export.json` and `bench_export.md` into `--out` and prints the
Markdown. Nothing is timed in the test suite: this is the place for numbers.

Usage:
    python scripts/bench_export.py --train saved_models/example-mnist-5k/train --out runs/bench
    python scripts/bench_export.py --train runs/train --out runs/bench --rounds 8 --per-cell
"""

import argparse
import os
import platform
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

FILES = ("model_float.tflite", "model_float_dense.tflite", "model_int8.tflite")


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", required=True, help="a `tfvnas train` output folder")
    parser.add_argument("--out", required=True, help="folder for both exports and the tables")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per file, thread count and round")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds (default 8: 400 runs)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="interpreter threads")
    parser.add_argument("--per-cell", action="store_true", help="also time the network cut after each cell")
    parser.add_argument("--channel-sweep", action="store_true",
                        help="also time single ops at 28x28 over channel counts")
    parser.add_argument("--overwrite", action="store_true", help="replace the exports in --out")
    return parser.parse_args(argv)


def _export(train, out, shrink, args):
    from tfvnas import config as config_lib
    from tfvnas.exporting import export

    config = config_lib.ExportConfig(
        int8=True, qat=False, shrink=shrink, compare_unshrunk=False, latency_runs=5, latency_rounds=1,
        latency_threads=(1,))
    return export(train, out, config=config, overwrite=args.overwrite, verbose=1)


def _models(train):
    from tfvnas.compress import shrinking
    from tfvnas.compress import strip as strip_lib
    from tfvnas.exporting import load_trained

    network, _ = load_trained(train)
    unshrunk = strip_lib.strip(network, shrink=False)
    return {"unshrunk": unshrunk, "shrunk": shrinking.shrink(unshrunk)}


def _per_cell(models, image, args):
    """Median latency of each model cut after the stem and after every cell (float, dense)."""
    import keras

    from tfvnas.compress import macs as macs_lib
    from tfvnas.exporting import tflite

    tmp = tempfile.mkdtemp(prefix="tfvnas-bench-cells-")
    try:
        cuts = {}
        for variant, model in models.items():
            names = [l.name for l in model.layers]
            ends = ["stem_1"] + sorted({n.split("_n")[0] for n in names if n.startswith("cell_") and "_n" in n},
                                       key=lambda c: int(c.split("_")[1]))
            for end in ends:
                layer = end if end in names else f"{end}_concat"
                if layer not in names:
                    continue
                path = os.path.join(tmp, f"{variant}-{end}.tflite")
                with open(path, "wb") as f:
                    # Pooled, so the serving softmax runs over a vector, not a feature map.
                    pooled = keras.layers.GlobalAveragePooling2D()(model.get_layer(layer).output)
                    cut = keras.Model(model.inputs, pooled)
                    f.write(tflite.tflite_convert(cut, sparse=False, input_dtype="uint8"))
                cuts[(variant, end)] = (path, macs_lib.count_macs(cut)["total"])
        timed = tflite.tflite_latencies([p for p, _ in cuts.values()], image, runs=args.runs,
                                        rounds=args.rounds, threads=(1,))
        rows = []
        for (variant, end), (path, total) in cuts.items():
            rows.append({"model": variant, "up_to": end, "macs": total,
                         "median_ms": timed[path][1]["median_ms"]})
        return rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


SWEEP_CHANNELS = (8, 12, 13, 16, 20, 24, 32)


def _channel_sweep(args):
    """Per-op median latency of a 5x5 depthwise and a 1x1 convolution at 28x28, by channel count."""
    import keras
    import numpy as np

    from tfvnas.exporting import tflite

    layers = keras.layers
    tmp = tempfile.mkdtemp(prefix="tfvnas-bench-sweep-")
    try:
        paths = {}
        for op in ("depthwise_5x5", "conv_1x1"):
            for c in SWEEP_CHANNELS:
                inputs = keras.Input((28, 28, c))
                x = inputs
                for _ in range(4):
                    x = (layers.DepthwiseConv2D(5, padding="same", use_bias=False) if op == "depthwise_5x5"
                         else layers.Conv2D(c, 1, use_bias=False))(x)
                path = os.path.join(tmp, f"{op}-{c}.tflite")
                with open(path, "wb") as f:
                    f.write(tflite.tflite_convert(keras.Model(inputs, layers.GlobalAveragePooling2D()(x)),
                                                  sparse=False))
                paths[(op, c)] = path
        image = np.random.default_rng(0).random((28, 28, max(SWEEP_CHANNELS))).astype(np.float32)
        timed = {}
        for (op, c), path in paths.items():  # one input shape per file: time each with its own image
            timed[(op, c)] = tflite.tflite_latencies([path], image[..., :c], runs=args.runs,
                                                     rounds=args.rounds, threads=(1,))[path][1]
        return [{"op": op, "channels": c, "per_op_us": 1e3 * t["median_ms"] / 4} for (op, c), t in timed.items()]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _markdown(result):
    threads = result["latency"]["threads"]
    head = "| model | file | MACs | parameters (non-zero) | size | gzip -9 |"
    head += "".join(f" median ms, {t} thr. | p90 ms, {t} thr. |" for t in threads) + " test accuracy |"
    lines = [head, "|" + "---|" * (7 + 2 * len(threads))]
    for r in result["rows"]:
        line = (f"| {r['model']} | {r['file']} | {r['macs']:,} | {r['parameters']['dense']:,} "
                f"({r['parameters']['nonzero']:,}) | {r['bytes'] / 1024:.1f} KB | {r['gzip_bytes'] / 1024:.1f} KB |")
        line += "".join(f" {r['latency'][str(t)]['median_ms']:.3f} | {r['latency'][str(t)]['p90_ms']:.3f} |"
                        for t in threads)
        lines.append(line + f" {r['accuracy']:.4f} |")
    s = result["summary"]
    lines += [
        "",
        f"Shrunk / unshrunk: {s['macs_ratio']:.2f}x fewer MACs; float latency (dense encoding, median) "
        + ", ".join(f"{s['latency_ratio'][str(t)]:.2f}x at {t} thread{'s' if t > 1 else ''}" for t in threads)
        + f"; top-1 of the float files agrees on {s['top1_agreement']:.4f} of the {s['test_examples']} "
        f"test images. Latency: LiteRT {result['versions']['ai_edge_litert']}, XNNPACK, one image, "
        f"{result['latency']['runs']} runs per file and thread count in {result['latency']['rounds']} "
        "interleaved rounds.",
    ]
    if result.get("per_cell"):
        lines += ["", "| up to | MACs unshrunk | MACs shrunk | median ms unshrunk | median ms shrunk |",
                  "|---|---|---|---|---|"]
        cells = {}
        for r in result["per_cell"]:
            cells.setdefault(r["up_to"], {})[r["model"]] = r
        for end, pair in cells.items():
            if len(pair) == 2:
                u, s_ = pair["unshrunk"], pair["shrunk"]
                lines.append(f"| {end} | {u['macs']:,} | {s_['macs']:,} | {u['median_ms']:.3f} | "
                             f"{s_['median_ms']:.3f} |")
    if result.get("channel_sweep"):
        lines += ["", "| op at 28x28 |" + "".join(f" {c} ch. |" for c in SWEEP_CHANNELS),
                  "|---|" + "---|" * len(SWEEP_CHANNELS)]
        for op in ("depthwise_5x5", "conv_1x1"):
            us = {r["channels"]: r["per_op_us"] for r in result["channel_sweep"] if r["op"] == op}
            lines.append(f"| {op}, us per op |" + "".join(f" {us[c]:.1f} |" for c in SWEEP_CHANNELS))
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = _parse(argv)
    import numpy as np

    from tfvnas import files
    from tfvnas.compress import counting
    from tfvnas.compress import macs as macs_lib
    from tfvnas.exporting import report as report_lib
    from tfvnas.exporting import tflite
    from tfvnas.exporting.api import read_report

    os.makedirs(args.out, exist_ok=True)
    exports = {}
    for variant, shrink in (("unshrunk", False), ("shrunk", True)):
        folder = os.path.join(args.out, f"export-{variant}")
        if os.path.isfile(os.path.join(folder, "report.json")) and not args.overwrite:
            exports[variant] = (folder, read_report(folder))
        else:
            exports[variant] = (folder, _export(args.train, folder, shrink, args))
    models = _models(args.train)
    from tfvnas import data as data_lib

    dataset = data_lib.load(exports["shrunk"][1]["dataset"]["name"])
    image = dataset.x_test[0]
    paths = {(v, name): os.path.join(folder, name) for v, (folder, _) in exports.items() for name in FILES}
    delegates = {p: "xnnpack" if tflite.load_error(p, "xnnpack") is None else "none" for p in paths.values()}
    timed = tflite.tflite_latencies(list(paths.values()), image, runs=args.runs, rounds=args.rounds,
                                    threads=tuple(args.threads), delegates=delegates)
    rows = []
    for variant in ("shrunk", "unshrunk"):
        folder, report = exports[variant]
        params = counting.count_parameters(models[variant])
        for name in FILES:
            path = paths[(variant, name)]
            rows.append({
                "model": variant,
                "file": name,
                "encoding": report["tflite"][name]["encoding"],
                "macs": macs_lib.count_macs(models[variant])["total"],
                "parameters": {"dense": params["dense"], "nonzero": params["nonzero"]},
                **report["files"][name],
                "latency": {str(t): {k: v[k] for k in ("median_ms", "p90_ms")} for t, v in timed[path].items()},
                "delegate": delegates[path],
                "accuracy": report["parity"][name]["accuracy"],
            })
    x = dataset.x_test
    logits = {v: tflite.run_tflite(paths[(v, "model_float_dense.tflite")], x)["logits"] for v in exports}
    by = {(r["model"], r["file"]): r for r in rows}
    result = {
        "train": os.path.relpath(os.path.abspath(args.train), os.getcwd()),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count()},
        "versions": report_lib.versions(),
        "latency": {"runs": args.runs * args.rounds, "rounds": args.rounds, "threads": args.threads},
        "rows": rows,
        "summary": {
            "macs_ratio": by[("unshrunk", FILES[1])]["macs"] / by[("shrunk", FILES[1])]["macs"],
            "latency_ratio": {str(t): by[("unshrunk", FILES[1])]["latency"][str(t)]["median_ms"]
                              / by[("shrunk", FILES[1])]["latency"][str(t)]["median_ms"] for t in args.threads},
            "top1_agreement": float(np.mean(logits["shrunk"].argmax(1) == logits["unshrunk"].argmax(1))),
            "test_examples": int(len(x)),
            "shrink": exports["shrunk"][1]["shrink"],
        },
    }
    if args.per_cell:
        result["per_cell"] = _per_cell(models, image, args)
    if args.channel_sweep:
        result["channel_sweep"] = _channel_sweep(args)
    files.write_json(os.path.join(args.out, "bench_export.json"), files.jsonable(result), indent=2)
    text = _markdown(result)
    files.atomic_write(os.path.join(args.out, "bench_export.md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
