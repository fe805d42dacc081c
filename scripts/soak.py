"""Soak: a 2-worker search killed with SIGKILL again and again, resumed each time, against one never killed.

    python scripts/soak.py --out /tmp/soak --results docs/results/soak.json

Both runs are `tfvnas search --preset smoke --deterministic --checkpoint-every 1`
on 2 worker processes (MultiWorkerMirroredStrategy on 127.0.0.1, one
`--out` shared as on a shared filesystem) over 8x8 digits (scikit-learn's
bundled `load_digits`, written once as a `.npz`). The killed run gets
`--kills` SIGKILLs in a row, each at a random step after the one it resumed
from: once the checkpoint of that step exists, after a random delay of up to
a second, to worker 0, worker 1 or both (drawn at random). When one worker is killed the survivor must stop
by itself (the coordination service's heartbeat timeout, `--worker-timeout`)
with exit status 75 and the `--resume` command; the script records how long
it took. Then both workers restart with `--resume`. At the end the final
checkpoint (every tensor but the save counter), the history (but times) and
both genotype files must equal the uninterrupted run's, bit for bit.

The record (`--results`, JSON) holds every kill, every stop and the verdict,
with the wall time.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np

STEPS = 8  # smoke: 2 epochs of 4 steps (256 examples, bi-level halves of 128, batch 32)
STOP_BOUND_MARGIN = 30  # seconds a survivor may take past the heartbeat timeout (a busy machine)


def digits_npz(path):
    """8x8 digits (scikit-learn's bundled copy) as a tfvnas `.npz`: uint8 images, 1,500 to train, the rest to test."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.clip(digits.images * 16, 0, 255).astype(np.uint8)[..., None]
    y = digits.target.astype(np.int64)
    np.savez(path, x_train=x[:1500], y_train=y[:1500], x_test=x[1500:], y_test=y[1500:])
    return path


class Workers:
    """Two `tfvnas search` worker processes of one cluster, with their logs."""

    def __init__(self, args, work, tag):
        from tfvnas.loops.distribute import local_cluster  # noqa: PLC0415 - TensorFlow only where workers start

        configs = local_cluster(2)
        self.logs = [os.path.join(work, f"{tag}.worker{i}.log") for i in range(2)]
        self.procs = []
        self.start = time.monotonic()
        for i in range(2):
            scratch = os.path.join(work, f"tmp{i}")
            os.makedirs(scratch, exist_ok=True)
            env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", CUDA_VISIBLE_DEVICES="",
                       TMPDIR=scratch, TF_CONFIG=configs[i])
            with open(self.logs[i], "w") as log:
                self.procs.append(subprocess.Popen([sys.executable, "-m", "tfvnas", *args], env=env, stdout=log,
                                                   stderr=subprocess.STDOUT))

    def wait(self, timeout):
        codes = []
        for proc in self.procs:
            try:
                codes.append(proc.wait(timeout=max(1.0, timeout - (time.monotonic() - self.start))))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(f"no exit after {timeout} s: killed")
        return codes

    def tail(self, i, lines=3):
        with open(self.logs[i], encoding="utf-8", errors="replace") as f:
            return f.read().strip().splitlines()[-lines:]


def search_args(data, out, worker_timeout, *extra):
    return ["search", "--dataset", data, "--preset", "smoke", "--out", out, "--quiet", "--deterministic",
            "--checkpoint-every", "1", "--strategy", "multiworker", "--worker-timeout", str(worker_timeout), *extra]


def wait_for_state(out, step, workers, timeout):
    """Waits until checkpoint `step`'s state file exists; False if a worker exits first or time runs out."""
    path = os.path.join(out, "checkpoints", f"state-{step}.json")
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if any(p.poll() is not None for p in workers.procs) or time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def checkpoint_tensors(out):
    """Every tensor of the newest checkpoint in `out` but the save counter, and its name."""
    import tensorflow as tf

    from tfvnas import runs

    number = runs.checkpoint_numbers(os.path.join(out, runs.CHECKPOINT_SUBDIR))[0]
    reader = tf.train.load_checkpoint(os.path.join(out, runs.CHECKPOINT_SUBDIR, f"ckpt-{number}"))
    return number, {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
                    if not k.startswith(("save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH"))}


def compare(reference, killed):
    """What differs between two finished searches (empty: bit-identical)."""
    differences = []
    (n_a, a), (n_b, b) = checkpoint_tensors(reference), checkpoint_tensors(killed)
    if n_a != n_b or a.keys() != b.keys():
        differences.append(f"checkpoints ckpt-{n_a} and ckpt-{n_b} hold different tensors")
    differences += [f"tensor {k}" for k in sorted(a.keys() & b.keys()) if not np.array_equal(a[k], b[k])]

    def history(out):
        with open(os.path.join(out, "search_history.json"), encoding="utf-8") as f:
            data = json.load(f)
        data["epochs"] = [{k: v for k, v in r.items() if k != "time_s"} for r in data["epochs"]]
        return data

    if history(reference) != history(killed):
        differences.append("search_history.json")
    for name in ("genotype.json", "genotype_threshold.json"):
        with open(os.path.join(reference, name), "rb") as fa, open(os.path.join(killed, name), "rb") as fb:
            if fa.read() != fb.read():
                differences.append(name)
    return differences


def soak(work, kills, seed, worker_timeout, run_timeout):
    rng = random.Random(seed)
    os.makedirs(work, exist_ok=True)
    data = digits_npz(os.path.join(work, "digits8x8.npz"))
    reference, killed = os.path.join(work, "reference"), os.path.join(work, "killed")
    started = time.monotonic()
    record = {"kills": [], "steps": STEPS, "seed": seed, "worker_timeout_s": worker_timeout}

    ref = Workers(search_args(data, reference, worker_timeout), work, "reference")
    record["reference_exit"] = ref.wait(run_timeout)
    record["reference_s"] = round(time.monotonic() - ref.start, 1)
    print(f"reference: exit {record['reference_exit']} in {record['reference_s']} s", flush=True)

    from tfvnas import runs

    for k in range(kills):
        # A step after the checkpoint this launch resumes from, leaving a step for each kill still to come.
        newest = max(runs.checkpoint_numbers(os.path.join(killed, runs.CHECKPOINT_SUBDIR)), default=0)
        step = rng.randint(newest + 1, max(newest + 1, STEPS - (kills - k)))
        victim = rng.choice(["worker 0", "worker 1", "both"])
        delay = round(rng.uniform(0.0, 1.0), 2)
        workers = Workers(search_args(data, killed, worker_timeout, *(["--resume"] if k else [])), work, f"kill{k}")
        entry = {"kill": k + 1, "after_checkpoint": step, "delay_s": delay, "victim": victim}
        if not wait_for_state(killed, step, workers, run_timeout):
            entry["missed"] = {"exits": [p.poll() for p in workers.procs], "tails": [workers.tail(i) for i in (0, 1)]}
            for p in workers.procs:
                if p.poll() is None:
                    p.kill()
            record["kills"].append(entry)
            print(f"kill {k + 1}: missed (the run ended or failed first)", flush=True)
            continue
        time.sleep(delay)
        targets = [0, 1] if victim == "both" else [int(victim[-1])]
        killed_at = time.monotonic()
        for i in targets:
            workers.procs[i].send_signal(signal.SIGKILL)
        if victim != "both":
            survivor = 1 - targets[0]
            try:
                code = workers.procs[survivor].wait(timeout=worker_timeout + STOP_BOUND_MARGIN + 60)
            except subprocess.TimeoutExpired:
                workers.procs[survivor].kill()
                code = "did not stop: killed"
            entry["survivor"] = {"worker": survivor, "exit": code,
                                 "stopped_after_s": round(time.monotonic() - killed_at, 1),
                                 "message": workers.tail(survivor, 1)[0] if workers.tail(survivor, 1) else ""}
        for p in workers.procs:
            p.wait()
        record["kills"].append(entry)
        print(f"kill {k + 1}: {json.dumps(entry)}", flush=True)

    final = Workers(search_args(data, killed, worker_timeout, "--resume"), work, "final")
    record["final_exit"] = final.wait(run_timeout)
    record["wall_s"] = round(time.monotonic() - started, 1)
    differences = compare(reference, killed) if record["final_exit"] == [0, 0] == record["reference_exit"] else [
        "a run did not finish"]
    stops = [e["survivor"] for e in record["kills"] if "survivor" in e]
    record.update(
        differences=differences,
        bit_identical=not differences,
        survivors_stopped_with_75=all(s["exit"] == 75 for s in stops),
        slowest_stop_s=max((s["stopped_after_s"] for s in stops), default=None),
        passed=not differences and all(s["exit"] == 75 for s in stops) and not any(
            "missed" in e for e in record["kills"]),
    )
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="work folder (data, both runs, logs)")
    parser.add_argument("--results", help="write the record here (JSON)")
    parser.add_argument("--kills", type=int, default=5, help=f"SIGKILLs in a row (at most {STEPS - 1}; default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill schedule (default 0)")
    parser.add_argument("--worker-timeout", type=float, default=10.0, help="heartbeat timeout, seconds (default 10)")
    parser.add_argument("--run-timeout", type=float, default=1800.0, help="seconds one launch may take")
    args = parser.parse_args(argv)
    if not 1 <= args.kills < STEPS:
        parser.error(f"--kills must be from 1 to {STEPS - 1}")
    record = soak(args.out, args.kills, args.seed, args.worker_timeout, args.run_timeout)
    text = json.dumps(record, indent=1)
    print(text)
    if args.results:
        with open(args.results, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return 0 if record["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
