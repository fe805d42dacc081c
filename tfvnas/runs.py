"""A run's output folder: who holds it, what it holds, the state its checkpoints saved, and the configuration a
resumed run continues with.

A search or a training writes `checkpoints/` into its output folder
(`tfvnas.loops.loop`): TensorFlow checkpoints `ckpt-N` and beside each a
`state-N.json` with the loop's position, history and configuration, the
checkpoint written first and its state last, so a state file names a complete
checkpoint. This module reads them back (newest first, skipping the ones that
do not read), and holds the folder for one run at a time (`claim`): an
exclusive `fcntl.flock` on a lock file in the folder, which the kernel
releases on any exit, SIGKILL included. It imports no TensorFlow.
"""

import contextlib
import datetime
import errno
import fcntl
import json
import os
import re
import shlex
import shutil
import socket
import sys

from tfvnas import files
from tfvnas.checks import ActionableError

CHECKPOINT_SUBDIR = "checkpoints"
LOCK_FILE = ".tfvnas-lock"
SEARCH_ARTEFACTS = ("genotype.json", "genotype_threshold.json", "search_config.json", "search_history.json")
TRAIN_ARTEFACTS = ("model.keras", "genotype.json", "train_config.json", "train_history.json")
# What makes a folder a run's: its checkpoints or any artefact a search or a training writes.
RUN_ENTRIES = tuple(dict.fromkeys((CHECKPOINT_SUBDIR,) + SEARCH_ARTEFACTS + TRAIN_ARTEFACTS))
_STATE = re.compile(r"^state-(\d+)\.json$")


class FolderInUse(ActionableError):
    """Another process holds the run folder's lock."""


class RunLock:
    """An exclusive lock on a run folder, held from `acquire` to `release` (or the process's end).

    The lock is `fcntl.flock` on `LOCK_FILE` in the folder; the file says who
    holds it (process, host, command, start), for the message another run
    gets. `release` deletes the file; a SIGKILLed holder leaves it behind,
    unlocked, and the next run takes it over.

    Args:
        out_dir: the run folder (created if missing).
        kind: what runs there ("search", "training"), for messages.
    """

    def __init__(self, out_dir, kind="run"):
        self.out_dir = os.fspath(out_dir)
        self.kind = kind
        self.path = os.path.join(self.out_dir, LOCK_FILE)
        self._fd = None
        self._created = False

    def acquire(self):
        """Takes the lock, or raises `FolderInUse` naming its holder at once (never waits)."""
        self._created = not os.path.isdir(self.out_dir)
        os.makedirs(self.out_dir, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise FolderInUse(
                    f"The output folder {self.out_dir!r} is in use by another run ({self.holder()}). Wait for it "
                    "to end or stop it, or choose another --out."
                ) from None
            # The holder before us may have deleted the file between our open and our lock: then the lock is
            # on a file nobody else sees, and we try again on the path's file.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "kind": self.kind, "command": command_line(),
                  "started": datetime.datetime.now().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(holder) + "\n").encode("utf-8"))
        self._fd = fd
        return self

    def holder(self):
        """Who holds the lock, as the lock file says."""
        try:
            with open(self.path, encoding="utf-8") as f:
                info = json.load(f)
            return (f"a {info['kind']}, process {info['pid']} on {info['host']}, started {info['started']}: "
                    f"{info['command']}")
        except (OSError, ValueError, KeyError, TypeError):
            return f"a process that holds {self.path!r}"

    def release(self):
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.remove(self.path)
        os.close(self._fd)  # closing the last descriptor releases the flock
        self._fd = None
        if self._created:  # a run that wrote nothing leaves no folder behind
            with contextlib.suppress(OSError):
                os.rmdir(self.out_dir)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def command_line():
    """This process's command line, `tfvnas ...` when it is the `tfvnas` command."""
    argv = list(sys.argv)
    if argv and os.path.basename(argv[0]) in ("tfvnas", "__main__.py", "cli.py"):
        argv[0] = "tfvnas"
    return " ".join(shlex.quote(a) for a in argv)


def run_entries(out_dir):
    """The entries of `out_dir` that belong to a search or a training run (`RUN_ENTRIES`), sorted."""
    out_dir = os.fspath(out_dir)
    if not os.path.isdir(out_dir):
        return []
    return sorted(set(os.listdir(out_dir)) & set(RUN_ENTRIES))


@contextlib.contextmanager
def claim(out_dir, kind, *, resume=False, overwrite=False, chief=True):
    """Holds `out_dir` for one run, for the life of the `with` block.

    The chief process locks the folder (`RunLock`). A new run (not `resume`)
    into a folder that holds a run, finished or not, of any kind, is refused
    unless `overwrite`, which deletes that run's entries (`RUN_ENTRIES`;
    other files stay). Other workers of a multi-worker run (`chief=False`)
    take no lock, delete nothing and write nothing there; they only refuse a
    folder that holds a run when the chief would.

    Raises:
        ValueError: `resume` and `overwrite` together, or a folder that holds a
            run without either.
        FolderInUse: another process holds the folder.
    """
    check_resume_overwrite(resume, overwrite)
    if out_dir is None:
        yield None
        return
    out_dir = os.fspath(out_dir)
    if not chief:
        if not (resume or overwrite):
            _refuse_a_run(out_dir, kind)
        yield None
        return
    with RunLock(out_dir, kind) as lock:
        if not resume:
            if overwrite:
                for name in run_entries(out_dir):
                    path = os.path.join(out_dir, name)
                    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
            else:
                _refuse_a_run(out_dir, kind)
        yield lock


def check_resume_overwrite(resume, overwrite):
    """Refuses `resume` or `overwrite` that are not bools, or both at once.

    Raises:
        ValueError: in the Keras form.
    """
    for name, value in (("resume", resume), ("overwrite", overwrite)):
        if not isinstance(value, bool):
            raise ValueError(f"`{name}` must be a bool. Received: {name}={value!r}")
    if resume and overwrite:
        raise ValueError("`resume` and `overwrite` exclude each other: continue the run in `out_dir`, or replace "
                         "it. Received: resume=True, overwrite=True")


def _refuse_a_run(out_dir, kind):
    held = run_entries(out_dir)
    if held:
        raise ValueError(
            f"The output folder {out_dir!r} already holds a run ({', '.join(held)}). Pass --resume "
            f"(resume=True) to continue it, --overwrite (overwrite=True) to replace it with a new {kind}, or "
            "choose another --out."
        )


def checkpoint_numbers(checkpoint_dir):
    """The numbers N of the checkpoints in `checkpoint_dir` with a state file, newest first.

    A state file is written after its checkpoint (`tfvnas.loops.loop`), so
    each names a checkpoint that was complete when it was saved; whether it
    still reads is for `read_state` and the restore to find out.
    """
    checkpoint_dir = os.fspath(checkpoint_dir)
    names = os.listdir(checkpoint_dir) if os.path.isdir(checkpoint_dir) else []
    return sorted((int(m.group(1)) for m in map(_STATE.match, names) if m), reverse=True)


def read_state(checkpoint_dir, number):
    """The state saved with checkpoint `number` (`position`, `history`, `config`, `extra`).

    Raises:
        ValueError: one line naming the file, when it or its checkpoint's
            index is missing or it does not read as a state.
    """
    path = os.path.join(os.fspath(checkpoint_dir), f"state-{number}.json")
    if not os.path.isfile(os.path.join(os.fspath(checkpoint_dir), f"ckpt-{number}.index")):
        raise ValueError(f"The checkpoint state {path!r} has no checkpoint (ckpt-{number}.index is missing).")
    state = files.read_json(path, "checkpoint state")
    missing = [key for key in ("position", "history", "config") if not isinstance(state, dict) or key not in state]
    if missing:
        raise ValueError(f"The checkpoint state {path!r} is damaged: no {', '.join(missing)}.")
    return state


def latest_state(out_dir, kind="run"):
    """The state (`position`, `history`, `config`, `extra`) of the newest checkpoint in `out_dir` whose state reads.

    Raises:
        ValueError: when there is no checkpoint, or no state reads.
    """
    if out_dir is None:
        raise ValueError(f"Resuming a {kind} needs the output folder of the run to continue. Received: None")
    checkpoint_dir = os.path.join(os.fspath(out_dir), CHECKPOINT_SUBDIR)
    numbers = checkpoint_numbers(checkpoint_dir)
    if not numbers:
        raise ValueError(
            f"No checkpoint to resume from in {checkpoint_dir!r} "
            f"(expected the output folder of an interrupted {kind})."
        )
    errors = []
    for number in numbers:
        try:
            return read_state(checkpoint_dir, number)
        except ValueError as e:
            errors.append(str(e))
    raise ValueError(f"No checkpoint state in {checkpoint_dir!r} reads: {' '.join(errors)}")


def saved_config(out_dir, config_cls, kind):
    """The configuration a run in `out_dir` saved with its latest checkpoint.

    Raises:
        ValueError: when there is no checkpoint or its state does not read.
    """
    state = latest_state(out_dir, kind)
    try:
        return config_cls.from_dict(state["config"])
    except KeyError as e:
        raise ValueError(f"Cannot read the checkpoint state of {out_dir!r}: no {e}") from e


def check_resume_config(saved, requested, checkpoint_dir):
    """Checks that a resumed run asks for the configuration its checkpoint holds.

    Raises:
        ValueError: naming the fields that differ.
    """
    if saved != requested:
        requested = requested.to_dict()
        diff = sorted(k for k, v in saved.to_dict().items() if requested.get(k) != v)
        raise ValueError(
            f"The checkpoint in {os.fspath(checkpoint_dir)!r} was written with a different configuration "
            f"(fields differ: {', '.join(diff)}). Resume with the configuration it was saved with."
        )
