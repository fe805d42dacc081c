"""Distributed, resumable and reproducible runs.

Most runs here are `tfvnas` subprocesses: a multi-worker strategy and op
determinism are process-wide, and a process has to be killed to test a
resume. A small entry (`_ENTRY`) wraps the command: with
`TFVNAS_TEST_PAUSE_AT=N` it holds the run just after the checkpoint of global
step N (until a signal arrives, or the file `TFVNAS_TEST_RELEASE` names
exists) and writes a marker file, so the test knows the run is mid-epoch
with a complete checkpoint when it sends SIGKILL, SIGTERM or SIGINT; the
pause only sleeps and changes no state. With `TFVNAS_TEST_DUMP=PATH` a
finished search also writes every model variable to PATH.npz (how the
multi-worker test sees the non-chief worker's gates, which it never saves).
With `TFVNAS_TEST_KEYS=PATH` a run saves to PATH the index of every image its
training batches held on this worker (the images of
`tests.helpers.streams.keyed_images` spell it).

The search runs use the smoke preset shrunk to 1 cell and 1 node: 2 epochs
of 4 steps (256 examples, bi-level halves of 128, global batch 32).
"""

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import mirrored
from tests.helpers.presets import TINY
from tests.helpers.streams import keyed_images, keys_of
from tfvnas import config as config_lib
from tfvnas import data as data_lib
from tfvnas import runs, streams
from tfvnas.cli import main
from tfvnas.layers import variational
from tfvnas.loops import distribute
from tfvnas.loops import loop as loop_lib
from tfvnas.loops import searching as search_lib
from tfvnas.loops.searching import search as run_search

pytestmark = pytest.mark.slow  # end-to-end runs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS_PER_EPOCH = 4  # smoke: limit 256, bi-level halves of 128, batch 32
RUN_TIMEOUT = 300  # seconds; a hang fails the test instead of blocking CI
# The searches' config file: perturbation selection (the VINNAS default outside the smoke preset) on every
# run of this module, so the workers' genotypes must agree after it and a resumed run must end as the
# uninterrupted one did.
SEARCH = {**TINY, "selection": "perturbation"}

_ENTRY = r"""
import os, sys, time
pause_at = int(os.environ.get("TFVNAS_TEST_PAUSE_AT", "0"))
if pause_at:
    from tfvnas.loops import loop
    real_save = loop.Loop.save_checkpoint

    def save_checkpoint(self):
        path = real_save(self)
        if path and self.position["step"] == pause_at:
            with open(os.environ["TFVNAS_TEST_MARKER"], "w") as f:
                f.write(path)
            release = os.environ.get("TFVNAS_TEST_RELEASE", "")
            deadline = time.monotonic() + 120
            while not (self._stop_signal or release and os.path.exists(release)) and time.monotonic() < deadline:
                time.sleep(0.05)
        return path

    loop.Loop.save_checkpoint = save_checkpoint
dump = os.environ.get("TFVNAS_TEST_DUMP")
if dump:
    import json
    import numpy as np
    from tfvnas.loops import loop
    from tfvnas.loops.searching import Searcher
    real_run = Searcher.run

    def run(self, *args, **kwargs):
        result = real_run(self, *args, **kwargs)
        np.savez(dump + ".npz", **{f"{i}:{v.path}": v.numpy() for i, v in enumerate(self.model.variables)})
        with open(dump + ".json", "w") as f:
            json.dump({"replicas": self.strategy.num_replicas_in_sync, "chief": loop.is_chief(self.strategy),
                       "genotype": result.genotype.to_json(), "out_dir": result.out_dir}, f)
        return result

    Searcher.run = run
keys = os.environ.get("TFVNAS_TEST_KEYS")
if keys:
    import atexit
    import numpy as np
    from tfvnas.loops import loop
    real_epoch_data = loop.Loop.epoch_data
    seen = []

    def epoch_data(self, epoch, skip=0):
        for batches in real_epoch_data(self, epoch, skip):
            for images, _ in batches.values():
                for local in self.strategy.experimental_local_results(images):
                    flat = local.numpy().reshape(len(local), -1).astype(np.int64)
                    seen.append(flat[:, 0] + 256 * flat[:, 1])  # tests.helpers.streams.keys_of
            yield batches

    loop.Loop.epoch_data = epoch_data
    atexit.register(lambda: np.save(keys, np.concatenate(seen) if seen else np.zeros(0, np.int64)))
from tfvnas.cli import main
sys.exit(main(sys.argv[1:]))
"""


# -- helpers ------------------------------------------------------------


_STARTED = []


@pytest.fixture(autouse=True, scope="module")
def _no_process_left():
    """Kills what a failed test left running (by process id, only ours)."""
    yield
    for proc in _STARTED:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG" and not k.startswith("TFVNAS_TEST_")}
    env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", PYTHONPATH=REPO, PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


class Run:
    """A `tfvnas` subprocess with its log."""

    def __init__(self, args, log, *, pause_at=None, **env):
        self.log = log
        self.marker = f"{log}.paused"
        if pause_at:
            env.update(TFVNAS_TEST_PAUSE_AT=str(pause_at), TFVNAS_TEST_MARKER=self.marker)
        self.start = time.monotonic()
        with open(log, "w") as f:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _ENTRY, *map(str, args)],
                cwd=REPO, env=_env(**env), stdout=f, stderr=subprocess.STDOUT,
            )
        _STARTED.append(self.proc)
        self.seconds = None

    def output(self):
        with open(self.log, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait(self, timeout=RUN_TIMEOUT):
        try:
            code = self.proc.wait(timeout=max(timeout - (time.monotonic() - self.start), 1))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"{self.log}: no exit after {timeout} s\n{self.output()[-3000:]}")
        self.seconds = round(time.monotonic() - self.start, 1)
        return code

    def wait_paused(self, timeout=RUN_TIMEOUT):
        """Waits for the pause marker: a complete checkpoint at the pause step exists."""
        while not os.path.exists(self.marker):
            if self.proc.poll() is not None:
                pytest.fail(f"{self.log}: exited ({self.proc.returncode}) before the pause\n{self.output()[-3000:]}")
            if time.monotonic() - self.start > timeout:
                self.proc.kill()
                pytest.fail(f"{self.log}: no pause after {timeout} s\n{self.output()[-3000:]}")
            time.sleep(0.05)
        with open(self.marker) as f:
            return f.read()


def _ok(run, *runs):
    for r in (run, *runs):
        code = r.wait()
        assert code == 0, f"{r.log}: exit {code}\n{r.output()[-3000:]}"


def _search_args(out, config_file, *extra):
    return ["search", "--dataset", "mnist-5k", "--preset", "smoke", "--config", config_file,
            "--out", out, "--quiet", "--deterministic", *extra]


def _read(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _state(out):
    """`(prefix, contents of state-N.json)` of the latest checkpoint in `out`."""
    path = tf.train.latest_checkpoint(os.path.join(out, runs.CHECKPOINT_SUBDIR))
    number = path.rsplit("-", 1)[-1]
    return path, _read(os.path.join(out, runs.CHECKPOINT_SUBDIR, f"state-{number}.json"))


def _checkpoint_tensors(path):
    """Every saved tensor (model variables, optimizer slots, iterations) but the save counter."""
    reader = tf.train.load_checkpoint(path)
    return {
        key: reader.get_tensor(key)
        for key in reader.get_variable_to_shape_map()
        if not key.startswith(("save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH"))
    }


def _assert_bit_identical(
    out_a, out_b, *, history="search_history.json", files=("genotype.json", "genotype_threshold.json")
):
    """Final checkpoints equal bit for bit, the same history (but times), the same files."""
    path_a, state_a = _state(out_a)
    path_b, state_b = _state(out_b)
    assert os.path.basename(path_a) == os.path.basename(path_b)
    tensors_a, tensors_b = _checkpoint_tensors(path_a), _checkpoint_tensors(path_b)
    assert tensors_a.keys() == tensors_b.keys()
    assert len(tensors_a) > 40
    different = [k for k in tensors_a if not np.array_equal(tensors_a[k], tensors_b[k])]
    assert different == []
    assert state_a["position"] == state_b["position"]

    def strip_times(records):
        return [{k: v for k, v in r.items() if k != "time_s"} for r in records]

    hist_a, hist_b = _read(os.path.join(out_a, history)), _read(os.path.join(out_b, history))
    assert strip_times(hist_a.pop("epochs")) == strip_times(hist_b.pop("epochs"))
    assert hist_a == hist_b
    for name in files:
        with open(os.path.join(out_a, name)) as fa, open(os.path.join(out_b, name)) as fb:
            assert fa.read() == fb.read(), name


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny.json"
    path.write_text(json.dumps(SEARCH))
    return str(path)


@pytest.fixture(scope="module")
def searches(tmp_path_factory, config_file):
    """Two uninterrupted `--deterministic` searches and, beside them, one interrupted twice.

    The interrupted one gets SIGTERM at step 3 (epoch 1), is resumed, gets
    SIGKILL at step 6 (epoch 2, just after the mid-epoch checkpoint), and is
    resumed to the end.
    """
    base = tmp_path_factory.mktemp("searches")
    a, b, c = str(base / "a"), str(base / "b"), str(base / "interrupted")
    every = ("--checkpoint-every", "2")
    reference = [Run(_search_args(out, config_file, *every), f"{out}.log") for out in (a, b)]
    info = {"reference": a, "rerun": b, "interrupted": c}

    term = Run(_search_args(c, config_file, *every), f"{c}.term.log", pause_at=2)
    term.wait_paused()
    # A second search into the folder the first one holds (another seed): refused at once.
    second = Run(["search", "--preset", "smoke", "--config", config_file, "--seed", "2", "--out", c, "--quiet"],
                 f"{c}.second.log")
    info["second"] = {"code": second.wait(), "log": second.output(), "holder": term.proc.pid}
    term.proc.send_signal(signal.SIGTERM)
    info["term"] = {"code": term.wait(), "log": term.output(), "listing": sorted(os.listdir(c)), "state": _state(c)}

    # Not --quiet: the resumed runs print where they continue.
    resume = ["search", "--resume", "--out", c, "--deterministic"]
    kill = Run(resume + list(every), f"{c}.kill.log", pause_at=STEPS_PER_EPOCH + 2)
    paused = kill.wait_paused()
    info["kill"] = {"paused": paused, "state": _state(c), "log": kill.output()}
    kill.proc.send_signal(signal.SIGKILL)
    info["kill"].update(code=kill.wait(), listing=sorted(os.listdir(c)))

    final = Run(resume, f"{c}.final.log")
    _ok(final, *reference)
    info["final"] = {"log": final.output()}
    print(f"\nsearches: uninterrupted {[r.seconds for r in reference]} s; interrupted: to SIGTERM {term.seconds} s, "
          f"resume to SIGKILL {kill.seconds} s, resume to the end {final.seconds} s")
    return info


# -- replicas -----------------------------------------------------------


def test_replicas_draw_different_noise_from_one_generator_state():
    strategy = mirrored()
    with strategy.scope():
        layer = variational.VariationalConv2D(2, 3, seed=5)
        layer.build((None, 4, 4, 1))

    @tf.function
    def draw():
        def replica_fn():
            return variational.sample_lrt(tf.zeros([8]), tf.ones([8]), layer.seed_generator)

        return strategy.run(replica_fn)

    noise = [v.numpy() for v in strategy.experimental_local_results(draw())]
    assert len(noise) == 2 and not np.array_equal(noise[0], noise[1])
    states = [v.numpy() for v in strategy.experimental_local_results(layer.seed_generator.state.value)]
    np.testing.assert_array_equal(states[0], states[1])


# -- multi-worker -------------------------------------------------------


def _workers(tmp_path, tag, args_of, env_of=lambda i: {}, **kwargs):
    """`(cluster, [Run of worker 0, Run of worker 1])`: one `tfvnas` cluster on 127.0.0.1, a TMPDIR each."""
    configs = distribute.local_cluster(2)
    for i in range(2):
        (tmp_path / f"tmp{i}").mkdir(exist_ok=True)
    return json.loads(configs[0])["cluster"], [
        Run(args_of(i), str(tmp_path / f"{tag}{i}.log"), TMPDIR=str(tmp_path / f"tmp{i}"), TF_CONFIG=configs[i],
            **env_of(i), **kwargs)
        for i in range(2)
    ]


WORKER_TIMEOUT = 5  # seconds: the heartbeat timeout of the lost-worker test
STOP_MARGIN = 45  # seconds a survivor may take past it on a busy machine (measured: 5 to 16)


def test_a_lost_worker_stops_the_survivor_within_the_timeout(tmp_path, config_file):
    """2 workers on 127.0.0.1 sharing --out: worker 1 SIGKILLed after the checkpoint of step 2; worker 0 stops."""
    out = tmp_path / "out"
    release = tmp_path / "release"
    args = _search_args(out, config_file, "--checkpoint-every", "2", "--strategy", "multiworker",
                        "--worker-timeout", str(WORKER_TIMEOUT))
    cluster, (chief, worker) = _workers(tmp_path, "lost", lambda i: args, pause_at=2,
                                        TFVNAS_TEST_RELEASE=str(release))
    for run in (chief, worker):
        run.wait_paused()
    worker.proc.send_signal(signal.SIGKILL)
    assert worker.wait() == -signal.SIGKILL
    killed = time.monotonic()
    release.touch()  # worker 0 goes on into step 3, whose collectives wait for worker 1
    code = chief.wait()
    seconds = time.monotonic() - killed
    print(f"\nlost worker: the survivor stopped {seconds:.1f} s after the kill (heartbeat timeout {WORKER_TIMEOUT} s)")
    assert code == 75, chief.output()[-3000:]
    assert seconds < WORKER_TIMEOUT + STOP_MARGIN
    checkpoint = os.path.join(out, "checkpoints", "ckpt-2")
    assert chief.output().strip().splitlines()[-1] == (
        f"tfvnas: error: Lost worker 1 ({cluster['worker'][1]}): it stopped sending heartbeats. This worker "
        f"(worker 0) stopped. The newest complete checkpoint is {checkpoint} (epoch 1, step 2); --resume "
        "(resume=True) continues from it. Restart every worker with --resume. Command: tfvnas "
        + shlex.join([str(a) for a in args]) + " --resume"
    )
    path, state = _state(str(out))
    assert path == checkpoint and state["position"]["step"] == 2


def test_two_workers_stop_together_resume_and_end_identical(tmp_path, config_file):
    """2 workers on 127.0.0.1: SIGTERM to worker 1 only, in epoch 2; both resume; compare.

    In the first part each worker has its own --out, to show that worker 1
    writes nothing there; on resume both read the chief's folder, as
    workers on a shared filesystem do.
    """
    outs = [tmp_path / "out0", tmp_path / "out1"]
    scratch = [tmp_path / "tmp0", tmp_path / "tmp1"]

    def workers(tag, args_of, env_of=lambda i: {}, **kwargs):
        return _workers(tmp_path, tag, args_of, env_of, **kwargs)[1]

    release = tmp_path / "release"
    first = workers(
        "first", lambda i: _search_args(outs[i], config_file, "--checkpoint-every", "2", "--strategy", "multiworker"),
        pause_at=STEPS_PER_EPOCH + 2, TFVNAS_TEST_RELEASE=str(release),
    )
    for run in first:
        run.wait_paused()
    first[1].proc.send_signal(signal.SIGTERM)
    release.touch()  # worker 0 goes on without a signal of its own
    assert [run.wait() for run in first] == [130, 130], first[0].output()[-3000:] + first[1].output()[-3000:]
    # Both stopped after the same step; each names the checkpoint as found
    # under its own --out (the same folder when --out is shared).
    for run, by, out in zip(first, ("a signal to another worker", "SIGTERM"), outs):
        assert run.output().rstrip().endswith(
            f"tfvnas: interrupted. Stopped by {by} at epoch 2, step 3. "
            f"Checkpoint saved: {os.path.join(out, 'checkpoints', 'ckpt-7')}; continue with --resume."
        )
    checkpoint = os.path.join(outs[0], "checkpoints", "ckpt-7")
    path, state = _state(str(outs[0]))
    assert path == checkpoint and state["position"]["step"] == 7
    assert sorted(os.listdir(outs[0])) == ["checkpoints"]
    assert not outs[1].exists()

    resumed = workers(
        "resumed", lambda i: ["search", "--resume", "--out", outs[0], "--quiet", "--deterministic",
                              "--strategy", "multiworker"],
        env_of=lambda i: {"TFVNAS_TEST_DUMP": str(tmp_path / f"final{i}")},
    )
    _ok(*resumed)
    print(f"\nmulti-worker: to SIGTERM {[r.seconds for r in first]} s, resumed {[r.seconds for r in resumed]} s")

    # Every variable (gates, weights, BN statistics, noise generator states)
    # is identical on the two workers; one replica each, two in sync.
    final = [np.load(tmp_path / f"final{i}.npz") for i in range(2)]
    assert final[0].files == final[1].files and len(final[0].files) > 40
    names = {k.split(":", 1)[1] for k in final[0].files}
    assert {f"{t}_gates/{v}" for t in ("normal", "reduce") for v in ("log_theta", "log_sigma2", "streak", "pruned_log_alpha")} <= names
    for key in final[0].files:
        np.testing.assert_array_equal(final[0][key], final[1][key], err_msg=key)
    info = [_read(tmp_path / f"final{i}.json") for i in range(2)]
    assert [i["replicas"] for i in info] == [2, 2] and [i["chief"] for i in info] == [True, False]
    assert info[0]["genotype"] == info[1]["genotype"]
    assert info[0]["out_dir"] == str(outs[0]) and info[1]["out_dir"] is None

    # Only the chief wrote: its artefacts and checkpoints; nothing from
    # worker 1 in its --out or (its temporary checkpoints) in its TMPDIR.
    assert sorted(os.listdir(outs[0])) == sorted(search_lib.ARTEFACTS + ("checkpoints",))
    assert sorted(os.listdir(outs[0] / "checkpoints")) == [
        "checkpoint", "ckpt-7.data-00000-of-00001", "ckpt-7.index",
        "ckpt-8.data-00000-of-00001", "ckpt-8.index", "state-7.json", "state-8.json",
    ]
    assert not outs[1].exists()
    assert os.listdir(scratch[0]) == os.listdir(scratch[1]) == []
    # Global steps count global batches: 2 epochs of 4, as on one replica.
    path, state = _state(str(outs[0]))
    assert state["position"]["step"] == 2 * STEPS_PER_EPOCH
    history = _read(outs[0] / "search_history.json")["epochs"]
    assert [r["epoch"] for r in history] == [1, 2]
    gates = {k.split(":", 1)[1]: final[0][k] for k in final[0].files if "_gates/" in k}
    for t in ("normal", "reduce"):
        active = gates[f"{t}_gates/active"] > 0
        log_alpha = gates[f"{t}_gates/log_sigma2"] - 2 * gates[f"{t}_gates/log_theta"]
        expected = np.where(active, log_alpha, gates[f"{t}_gates/pruned_log_alpha"])
        np.testing.assert_array_equal(history[-1]["log_alpha"][t], np.round(expected, 4))
# -- determinism --------------------------------------------------------


def test_deterministic_reruns_are_bit_identical(searches):
    _assert_bit_identical(searches["reference"], searches["rerun"])


# -- interruption and resume -------------------------------------------


def test_sigterm_saves_a_checkpoint_and_exits_130(searches):
    out, term = searches["interrupted"], searches["term"]
    assert term["code"] == 130, term["log"][-3000:]
    checkpoint = os.path.join(out, "checkpoints", "ckpt-3")
    assert term["log"].rstrip().endswith(
        f"tfvnas: interrupted. Stopped by SIGTERM at epoch 1, step 3. "
        f"Checkpoint saved: {checkpoint}; continue with --resume."
    )
    path, state = term["state"]
    assert path == checkpoint
    assert {k: state["position"][k] for k in ("epoch", "step_in_epoch", "step")} == {
        "epoch": 0, "step_in_epoch": 3, "step": 3,
    }
    assert state["history"] == []
    assert term["listing"] == ["checkpoints"]  # artefacts only at the end


def test_sigkill_mid_epoch_then_resume_matches_the_uninterrupted_run(searches):
    out, kill = searches["interrupted"], searches["kill"]
    assert kill["code"] == -signal.SIGKILL
    # The resumed run said where it continued, and was killed in epoch 2
    # with a complete mid-epoch checkpoint (step 6 of 8) on disk.
    assert f"Resuming from {os.path.join(out, 'checkpoints', 'ckpt-3')} (epoch 1, step 3)" in kill["log"]
    path, state = kill["state"]
    assert path == kill["paused"] == os.path.join(out, "checkpoints", "ckpt-6")
    assert {k: state["position"][k] for k in ("epoch", "step_in_epoch", "step")} == {
        "epoch": 1, "step_in_epoch": 2, "step": 6,
    }
    assert [r["epoch"] for r in state["history"]] == [1]
    # The killed run's lock file stays behind, unlocked: the resume took it over.
    assert kill["listing"] == [runs.LOCK_FILE, "checkpoints"]
    assert f"Resuming from {path} (epoch 2, step 6)" in searches["final"]["log"]
    # Resumed to the end: every saved tensor (gates, weights, BN statistics,
    # noise generator states, optimizer slots), the history and both
    # genotypes equal those of the run that was never interrupted.
    _assert_bit_identical(searches["reference"], out)


def test_a_second_run_on_a_held_folder_is_refused_naming_the_holder(searches):
    second = searches["second"]
    out = searches["interrupted"]
    assert second["code"] == 2, second["log"][-3000:]
    line = second["log"].strip().splitlines()[-1]
    assert line.startswith(
        f"tfvnas: error: The output folder {out!r} is in use by another run (a search, process {second['holder']} "
        f"on {socket.gethostname()}, started ")
    assert line.endswith("). Wait for it to end or stop it, or choose another --out.")
    # It wrote nothing: the holder's first checkpoints are all the folder holds.
    assert searches["term"]["state"][0] == os.path.join(out, "checkpoints", "ckpt-3")


def test_a_new_run_into_a_finished_one_is_refused_unless_overwritten(searches, capsys):
    out = searches["rerun"]
    assert main(["search", "--preset", "smoke", "--seed", "5", "--out", out, "--quiet"]) == 2
    assert capsys.readouterr().err == (
        f"tfvnas: error: The output folder {out!r} already holds a run (checkpoints, genotype.json, "
        "genotype_threshold.json, search_config.json, search_history.json). Pass --resume (resume=True) to "
        "continue it, --overwrite (overwrite=True) to replace it with a new search, or choose another --out.\n"
    )
    assert main(["search", "--out", out, "--resume", "--overwrite"]) == 2
    assert "`resume` and `overwrite` exclude each other" in capsys.readouterr().err


def test_resume_with_a_different_configuration_is_refused(searches, config_file, capsys):
    out = searches["reference"]
    checkpoints = os.path.join(out, "checkpoints")
    with pytest.raises(ValueError, match="^" + re.escape(
        f"The checkpoint in {checkpoints!r} was written with a different configuration "
        "(fields differ: arch_lr). Resume with the configuration it was saved with."
    ) + "$"):
        run_search("mnist-5k", preset="smoke", config={**SEARCH, "arch_lr": 0.1}, out_dir=out, resume=True, verbose=0)
    # The command line: the same options plus --resume continue; others are refused.
    code = main(["search", "--preset", "smoke", "--config", config_file, "--epochs", "3", "--out", out, "--resume"])
    assert code == 2
    assert capsys.readouterr().err == (
        f"tfvnas: error: The checkpoint in {checkpoints!r} was written with a different configuration "
        "(fields differ: epochs). Resume with the configuration it was saved with.\n"
    )
    # The loop itself checks too (a Searcher built with another configuration).
    cfg = config_lib.preset("smoke").replace(**SEARCH, seed=1)
    searcher = search_lib.Searcher(cfg, data_lib.load("mnist-5k", seed=1), verbose=0)
    with pytest.raises(ValueError, match=re.escape("(fields differ: seed)")):
        searcher.restore(checkpoints)


def test_resume_without_a_checkpoint_is_refused(tmp_path, capsys):
    missing = os.path.join(tmp_path, "none", "checkpoints")
    assert main(["search", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert capsys.readouterr().err == (
        f"tfvnas: error: No checkpoint to resume from in {missing!r} "
        "(expected the output folder of an interrupted search).\n"
    )
    assert main(["train", "--genotype", "darts_v2", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert capsys.readouterr().err == (
        f"tfvnas: error: No checkpoint to resume from in {missing!r} "
        "(expected the output folder of an interrupted training).\n"
    )
    with pytest.raises(ValueError, match="^" + re.escape(
        "Resuming a search needs the output folder of the run to continue. Received: None"
    ) + "$"):
        run_search("mnist-5k", resume=True, verbose=0)
    assert not (tmp_path / "none").exists()


# -- numerical faults ---------------------------------------------------


def test_non_finite_loss_keeps_the_last_good_checkpoint(monkeypatch, tmp_path):
    poison = tf.Variable(1.0)
    real_loss = variational.elbo_loss

    def poisoned(*args, **kwargs):
        loss, ce, kl_term = real_loss(*args, **kwargs)
        return loss * poison, ce, kl_term

    real_save = loop_lib.Loop.save_checkpoint

    def save_then_poison(self):
        path = real_save(self)
        if self.position["step"] == 2:
            poison.assign(float("nan"))  # every step from step 3 on
        return path

    monkeypatch.setattr(search_lib.variational, "elbo_loss", poisoned)
    monkeypatch.setattr(loop_lib.Loop, "save_checkpoint", save_then_poison)
    cfg = config_lib.preset("smoke").replace(**TINY)
    out = tmp_path / "out"
    last = os.path.join(out, "checkpoints", "ckpt-2")
    with pytest.raises(FloatingPointError, match="^" + re.escape(
        "The search loss became nan at epoch 1, step 3 (global step 3). "
        f"Lower `weight_lr` or `arch_lr`, or check the data. The last good checkpoint is {last}."
    ) + "$"):
        run_search("mnist-5k", config=cfg, out_dir=out, checkpoint_every=2, verbose=0)
    assert sorted(os.listdir(out)) == ["checkpoints"]
    assert tf.train.latest_checkpoint(out / "checkpoints") == last

    # The checkpoint restores, finite, into a fresh searcher.
    searcher = search_lib.Searcher(cfg, data_lib.load("mnist-5k", seed=cfg.seed), verbose=0)
    assert searcher.restore(out / "checkpoints") == last
    assert searcher.position["step"] == 2 and searcher.position["step_in_epoch"] == 2
    saved = _checkpoint_tensors(last)
    for i, variable in enumerate(searcher.model.variables):
        value = saved[f"model_variables/{i}/.ATTRIBUTES/VARIABLE_VALUE"]
        np.testing.assert_array_equal(variable.numpy(), value)
        if np.issubdtype(value.dtype, np.floating):
            assert np.isfinite(value).all()


# -- training -----------------------------------------------------------


def test_training_interrupted_by_sigint_resumes_to_the_same_weights(tmp_path):
    """`tfvnas train` (smoke, 1 cell: 1 epoch of 8 steps): SIGINT at step 5, resume, compare."""
    ref, stopped = str(tmp_path / "ref"), str(tmp_path / "stopped")
    config = tmp_path / "train.json"
    config.write_text(json.dumps({"layers": 1}))

    def args(out):
        return ["train", "--genotype", "darts_v2", "--dataset", "mnist-5k", "--preset", "smoke",
                "--config", config, "--out", out, "--quiet", "--deterministic", "--checkpoint-every", "2"]

    runs = [Run(args(ref), f"{ref}.log"), Run(args(stopped), f"{stopped}.log", pause_at=4)]
    assert runs[1].wait_paused() == os.path.join(stopped, "checkpoints", "ckpt-4")
    runs[1].proc.send_signal(signal.SIGINT)
    assert runs[1].wait() == 130, runs[1].output()[-3000:]
    assert runs[1].output().rstrip().endswith(
        "tfvnas: interrupted. Stopped by SIGINT at epoch 1, step 5. "
        f"Checkpoint saved: {os.path.join(stopped, 'checkpoints', 'ckpt-5')}; continue with --resume."
    )
    assert sorted(os.listdir(stopped)) == ["checkpoints"]
    resumed = Run(["train", "--genotype", "darts_v2", "--out", stopped, "--resume", "--quiet", "--deterministic"],
                  f"{stopped}.resume.log")
    _ok(runs[0], resumed)
    print(f"training: {runs[0].seconds} s, interrupted {runs[1].seconds} s, resumed {resumed.seconds} s")
    _assert_bit_identical(ref, stopped, history="train_history.json", files=("genotype.json", "train_config.json"))


# -- streamed data ------------------------------------------------------


@pytest.fixture(scope="module")
def tfrecord_pattern(tmp_path_factory):
    """Keyed 8x8 images as TFRecord files: train (256) in 4 files, val (32) and test (32) in one each."""
    folder = tmp_path_factory.mktemp("tfrecords")
    for split, n, offset, files in (("train", 256, 0, 4), ("val", 32, 1000, 1), ("test", 32, 2000, 1)):
        x = keyed_images(n, shape=(8, 8, 1), offset=offset)
        streams.write_tfrecords(folder / f"{split}.tfrecord", x, keys_of(x) % 4, files=files)
    return f"tfrecord:{folder}/{{split}}.tfrecord*"


def test_two_workers_each_read_their_own_files(tmp_path, config_file, tfrecord_pattern):
    """2 workers on TFRecord files: each trains on examples of its own 2 files only, and they end identical."""
    configs = distribute.local_cluster(2)
    workers = []
    for i in range(2):
        args = ["search", "--dataset", tfrecord_pattern, "--preset", "smoke", "--config", config_file,
                "--out", tmp_path / f"out{i}", "--quiet", "--deterministic", "--strategy", "multiworker"]
        workers.append(Run(args, str(tmp_path / f"worker{i}.log"), TMPDIR=str(tmp_path),
                           TF_CONFIG=configs[i], TFVNAS_TEST_KEYS=str(tmp_path / f"keys{i}.npy"),
                           TFVNAS_TEST_DUMP=str(tmp_path / f"final{i}")))
    _ok(*workers)
    print(f"\nmulti-worker on TFRecord files: {[w.seconds for w in workers]} s")
    keys = [np.load(tmp_path / f"keys{i}.npy") for i in range(2)]
    # Files hold keys [0, 64), [64, 128), ...: worker w reads files w and w + 2.
    for worker, seen in enumerate(keys):
        assert set(seen // 64 % 2) == {worker}, worker
    assert not set(keys[0]) & set(keys[1])
    # Each decoded half the images of every global batch: 16 of 32 per step for each half.
    steps = _read(tmp_path / "out0" / "search_history.json")["epochs"][-1]["step"]
    assert steps >= 4 and [len(k) for k in keys] == [steps * 2 * 16] * 2
    final = [np.load(tmp_path / f"final{i}.npz") for i in range(2)]
    for key in final[0].files:
        np.testing.assert_array_equal(final[0][key], final[1][key], err_msg=key)


def test_a_streamed_search_killed_mid_epoch_resumes_to_the_same_end(tmp_path, config_file, tfrecord_pattern):
    """SIGKILL in epoch 2 (just after the checkpoint of step 6), resume: bit-identical to the run never stopped."""
    reference, stopped = str(tmp_path / "reference"), str(tmp_path / "stopped")

    def args(out, *extra):
        return ["search", "--dataset", tfrecord_pattern, "--out", out, "--quiet", "--deterministic", *extra]

    first = args(reference, "--preset", "smoke", "--config", config_file)
    runs_ = [Run(first, f"{reference}.log"),
             Run(args(stopped, "--preset", "smoke", "--config", config_file, "--checkpoint-every", "2"),
                 f"{stopped}.log", pause_at=STEPS_PER_EPOCH + 2)]
    runs_[1].wait_paused()
    runs_[1].proc.send_signal(signal.SIGKILL)
    assert runs_[1].wait() == -signal.SIGKILL
    _, state = _state(stopped)
    assert {k: state["position"][k] for k in ("epoch", "step_in_epoch", "step")} == {
        "epoch": 1, "step_in_epoch": 2, "step": 6}
    assert state["dataset"] == tfrecord_pattern
    # Resuming on other data is refused.
    assert main(["search", "--out", stopped, "--resume", "--quiet"]) == 2
    resumed = Run(args(stopped, "--resume"), f"{stopped}.resume.log")
    _ok(runs_[0], resumed)
    print(f"streamed resume: reference {runs_[0].seconds} s, killed {runs_[1].seconds} s, resumed {resumed.seconds} s")
    _assert_bit_identical(reference, stopped)
