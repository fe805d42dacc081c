"""Argument checks shared by every module (standard library and NumPy only)."""

import numpy as np


def is_int(value):
    """An int or NumPy integer, and not a bool (`True` as a size is a mistake)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_positive_int(name, value):
    """Returns `value` as an int, or raises the Keras-style `ValueError`."""
    if not is_int(value) or value < 1:
        raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}")
    return int(value)


def check_non_negative_int(name, value):
    """Returns `value` as an int, or raises the Keras-style `ValueError`."""
    if not is_int(value) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative int. Received: {name}={value!r}")
    return int(value)


class ActionableError(RuntimeError):
    """A failure the user can act on (a missing tool or file, a download that failed, a study that stopped).

    Its message says what happened and what to do; the `tfvnas` command
    prints it as one line. Any other `RuntimeError` is a bug and keeps its
    traceback.
    """


class WorkerLost(ActionableError):
    """A worker of a multi-worker run stopped (killed, out of memory, its machine gone); this one stopped too.

    Its message names the worker, the last complete checkpoint, and that every
    worker restarts with `--resume`. The `tfvnas` command exits with status 75.
    """
