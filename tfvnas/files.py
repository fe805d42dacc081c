"""Writing artefact files: one atomic writer and one JSON form (standard library and NumPy only).

Every artefact tfvnas writes (configs, genotypes, histories, checkpoint
states, reports) goes through `atomic_write`: the bytes go to a temporary
file in the same folder, flushed to disk, which then replaces the target, so
a reader (or a resumed run after a crash) never sees a half-written file.
`jsonable` is the one conversion of NumPy values to JSON values (non-finite
floats become `null`, as strict JSON has no NaN).
"""

import json
import math
import os
import uuid

import numpy as np


def atomic_write(path, data):
    """Writes `data` (str or bytes) to `path` atomically; returns the path.

    The file's directory must exist. The file mode follows the umask, as for
    a file written with `open()`.
    """
    path = os.fspath(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    directory, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
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


def write_json(path, data, *, indent=1):
    """Writes `jsonable(data)` as indented strict JSON, atomically; returns the path."""
    return atomic_write(path, json.dumps(jsonable(data), indent=indent, allow_nan=False) + "\n")


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
