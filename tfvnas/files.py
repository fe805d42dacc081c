"""Writing and reading artefact files: one atomic writer, one JSON form, one way a write fails (standard library
and NumPy only).

Every artefact tfvnas writes (configs, genotypes, histories, checkpoint
states, reports) goes through `atomic_write`: the bytes go to a temporary
file in the same folder, flushed to disk, which then replaces the target, so
a reader (or a resumed run after a crash) never sees a half-written file.
`jsonable` is the one conversion of NumPy values to JSON values (non-finite
floats become `null`, as strict JSON has no NaN).

A write that fails (a full disk, a quota, a read-only folder), from Python
or from TensorFlow, becomes one `WriteError` (`writing`): the path, what was
being written, and for a full disk the space it needs and the space free.
`read_json` reads a JSON artefact or says in one line which file does not read.
"""

import contextlib
import errno
import json
import math
import os
import shutil
import uuid

import numpy as np

from tfvnas.checks import ActionableError

# errno values of a full disk or an exhausted quota.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class WriteError(ActionableError, OSError):
    """A file could not be written: a full disk, a quota, a read-only or vanished folder.

    An `OSError` too, so code that catches the system's error still catches it.

    Attributes:
        path: the file or folder being written.
        no_space: whether the disk (or quota) was full.
    """

    def __init__(self, message, path, no_space):
        super().__init__(message)
        self.path = path
        self.no_space = no_space


def free_bytes(path):
    """Free bytes on the file system of `path` (or of its nearest existing folder)."""
    path = os.path.abspath(os.fspath(path))
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return shutil.disk_usage(path).free


def size_text(n):
    """`n` bytes for people: 512 B, 1.5 KiB, 3.2 MiB, 1.1 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return None  # not reached


def is_write_failure(error):
    """Whether `error` is a failed write: an `OSError`, or a TensorFlow error of a full disk."""
    if isinstance(error, OSError):
        return True
    # TensorFlow's writers (checkpoints, SavedModel, summaries) raise an OpError; a full disk is a
    # ResourceExhaustedError from SaveV2 or an error that quotes the system's message.
    return type(error).__name__ == "ResourceExhaustedError" or "No space left on device" in str(error)


def write_error(error, path, what, needed=None):
    """The one-line `WriteError` for `error` raised while writing `what` to `path`."""
    path = os.fspath(path)
    no_space = getattr(error, "errno", None) in NO_SPACE or not isinstance(error, OSError)
    if not no_space:
        return WriteError(f"Cannot write {what} {path!r}: {error.strerror or error}.", path, False)
    need = f"needs about {size_text(needed)} free, " if needed else ""
    return WriteError(
        f"No space left on the disk writing {what} {path!r} ({need}{size_text(free_bytes(path))} free).", path, True)


@contextlib.contextmanager
def writing(path, what, needed=None):
    """Turns a failed write inside the block into one `WriteError` naming `path`, `what` and the space `needed`."""
    try:
        yield
    except WriteError:
        raise
    except Exception as error:  # noqa: BLE001 - OSError and TensorFlow's OpError alike
        if not is_write_failure(error):
            raise
        raise write_error(error, path, what, needed) from error


def atomic_write(path, data, what=None):
    """Writes `data` (str or bytes) to `path` atomically; returns the path.

    The file's directory must exist. The file mode follows the umask, as for
    a file written with `open()`. A failed write leaves the file as it was
    and raises `WriteError` naming `what` (default: the file's name).
    """
    path = os.fspath(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    directory, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
    with writing(path, what or name, needed=len(data)):
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
    return path


def jsonable(value):
    """`value` with NumPy scalars and arrays as Python values and non-finite floats as None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def write_json(path, data, *, indent=1, what=None):
    """Writes `jsonable(data)` as indented strict JSON, atomically; returns the path."""
    return atomic_write(path, json.dumps(jsonable(data), indent=indent, allow_nan=False) + "\n", what)


def read_json(path, what="file"):
    """The JSON value in `path`.

    Raises:
        ValueError: one line naming `what` and the file, when it is missing,
            truncated or not JSON.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ValueError(f"The {what} {path!r} does not exist.") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"The {what} {path!r} does not read (damaged or truncated?): {reason}") from e


def append_json_line(path, record):
    """Appends `jsonable(record)` as one line of a JSON-lines file, flushed to disk (a results log)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(jsonable(record), allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_json_lines(path):
    """The records of a JSON-lines file, in order; [] when it does not exist."""
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
