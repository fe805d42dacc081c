"""A run folder's lock, what makes a folder a run's, its saved states, and the writers' one-line failures."""

import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from tfvnas import files, runs
from tfvnas.checks import ActionableError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_HOLDER = """
import sys, time
from tfvnas.runs import RunLock
RunLock(sys.argv[1], "search").acquire()
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process that holds the lock on `tmp_path / "out"` until it is killed."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": REPO})
    assert proc.stdout.readline() == "held\n"
    yield out, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_a_second_run_is_refused_at_once_naming_the_holder(holder):
    out, proc = holder
    start = time.monotonic()
    with pytest.raises(runs.FolderInUse) as info:
        runs.RunLock(out, "search").acquire()
    assert time.monotonic() - start < 1
    message = str(info.value)
    assert re.fullmatch(
        re.escape(f"The output folder {str(out)!r} is in use by another run (a search, process {proc.pid} on "
                  f"{socket.gethostname()}, started ") + r"[0-9T:-]+" + re.escape(": ")
        + r".+" + re.escape("). Wait for it to end or stop it, or choose another --out."), message)
    assert isinstance(info.value, ActionableError) and "\n" not in message


def test_the_lock_of_a_killed_holder_is_taken_over(holder):
    out, proc = holder
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert os.listdir(out) == [runs.LOCK_FILE]  # left behind, unlocked
    with runs.RunLock(out, "search") as lock:
        with open(lock.path) as f:
            assert json.load(f)["pid"] == os.getpid()
        with pytest.raises(runs.FolderInUse, match=f"process {os.getpid()} "):
            runs.RunLock(out, "training").acquire()  # a second lock in the same process is refused too
    assert os.listdir(out) == []  # released: the lock file goes


def test_claim_refuses_a_folder_that_holds_a_run_unless_resumed_or_overwritten(tmp_path):
    out = tmp_path / "out"
    (out / runs.CHECKPOINT_SUBDIR).mkdir(parents=True)
    (out / "search_config.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    message = (
        f"The output folder {str(out)!r} already holds a run (checkpoints, search_config.json). Pass --resume "
        "(resume=True) to continue it, --overwrite (overwrite=True) to replace it with a new training, or "
        "choose another --out."
    )
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        with runs.claim(out, "training"):
            pass
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        with runs.claim(out, "training", chief=False):  # a worker refuses what its chief would
            pass
    with runs.claim(out, "search", resume=True) as lock:
        assert os.path.isfile(lock.path)
    with runs.claim(out, "search", overwrite=True):
        assert sorted(os.listdir(out)) == [runs.LOCK_FILE, "notes.txt"]  # the run's entries only
    assert os.listdir(out) == ["notes.txt"]
    with pytest.raises(ValueError, match="^" + re.escape(
        "`resume` and `overwrite` exclude each other: continue the run in `out_dir`, or replace it. "
        "Received: resume=True, overwrite=True") + "$"):
        with runs.claim(out, "search", resume=True, overwrite=True):
            pass
    with runs.claim(None, "search") as nothing:
        assert nothing is None


def _checkpoint(folder, number, state="{\"position\": {}, \"history\": [], \"config\": {}}"):
    (folder / f"ckpt-{number}.index").write_bytes(b"index")
    if state is not None:
        (folder / f"state-{number}.json").write_text(state)


def test_states_are_read_newest_first_skipping_the_ones_that_do_not_read(tmp_path):
    folder = tmp_path / runs.CHECKPOINT_SUBDIR
    folder.mkdir()
    _checkpoint(folder, 4)
    _checkpoint(folder, 8, state='{"position": {"ste')  # truncated
    _checkpoint(folder, 12, state=None)  # a checkpoint whose state was never written: not a checkpoint
    (folder / "state-16.json").write_text("{}")  # a state without its checkpoint
    assert runs.checkpoint_numbers(folder) == [16, 8, 4]
    with pytest.raises(ValueError, match="^" + re.escape(
        f"The checkpoint state {str(folder / 'state-16.json')!r} has no checkpoint (ckpt-16.index is missing).")):
        runs.read_state(folder, 16)
    with pytest.raises(ValueError, match="^" + re.escape(
        f"The checkpoint state {str(folder / 'state-8.json')!r} does not read (damaged or truncated?): ")):
        runs.read_state(folder, 8)
    assert runs.latest_state(tmp_path) == {"position": {}, "history": [], "config": {}}
    (folder / "state-4.json").write_text("[]")
    with pytest.raises(ValueError, match="^" + re.escape(
        f"No checkpoint state in {str(folder)!r} reads: ") + ".*" + re.escape(
        f"The checkpoint state {str(folder / 'state-4.json')!r} is damaged: no position, history, config.")):
        runs.latest_state(tmp_path)


def test_read_json_names_the_file_in_one_line(tmp_path):
    path = tmp_path / "search_history.json"
    path.write_bytes(b'{"epochs": [1, 2')
    with pytest.raises(ValueError, match="^" + re.escape(
        f"The search history {str(path)!r} does not read (damaged or truncated?): Expecting ") + r"[^\n]+$"):
        files.read_json(path, "search history")
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match=r"^The search history .* does not read \(damaged or truncated\?\): "
                                         r"'utf-8' codec can't decode [^\n]+$"):
        files.read_json(path, "search history")
    with pytest.raises(ValueError, match="^" + re.escape(f"The file {str(tmp_path / 'none.json')!r} does not exist.")):
        files.read_json(tmp_path / "none.json")


def _full_disk_error(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _permission_error(*args, **kwargs):
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))


def test_a_failed_atomic_write_says_what_and_how_much_and_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "genotype.json"
    path.write_text("old")
    monkeypatch.setattr(os, "fsync", _full_disk_error)
    monkeypatch.setattr(files, "free_bytes", lambda path: 3)
    with pytest.raises(files.WriteError) as info:
        files.write_json(path, {"a": 1}, what="the genotype")
    assert str(info.value) == (
        f"No space left on the disk writing the genotype {str(path)!r} (needs about 12 B free, 3 B free).")
    assert info.value.no_space and info.value.path == str(path)
    assert os.listdir(tmp_path) == ["genotype.json"] and path.read_text() == "old"
    monkeypatch.undo()
    monkeypatch.setattr(os, "replace", _permission_error)
    with pytest.raises(files.WriteError, match="^" + re.escape(
        f"Cannot write genotype.json {str(path)!r}: Permission denied.") + "$"):
        files.atomic_write(path, "new")


def test_sizes_read_as_people_write_them():
    assert [files.size_text(n) for n in (0, 512, 1536, 3 << 20, 5 << 30)] == [
        "0 B", "512 B", "1.5 KiB", "3.0 MiB", "5.0 GiB"]
