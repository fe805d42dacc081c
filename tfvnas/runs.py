"""A run's output folder: the state its latest checkpoint saved, and the configuration a resumed run continues with.

A search or a training writes `checkpoints/` into its output folder
(`tfvnas.loops.loop`): TensorFlow checkpoints `ckpt-N` and beside each a
`state-N.json` with the loop's position, history and configuration. This
module reads them back; it imports TensorFlow only to find the latest
checkpoint.
"""

import json
import os

CHECKPOINT_SUBDIR = "checkpoints"


def latest_state(out_dir, kind="run"):
    """The state (`position`, `history`, `config`, `extra`) a run in `out_dir` saved with its latest checkpoint.

    Raises:
        ValueError: when there is no checkpoint or its state does not read.
    """
    import tensorflow as tf  # noqa: PLC0415 - only a resumed run needs it

    if out_dir is None:
        raise ValueError(f"Resuming a {kind} needs the output folder of the run to continue. Received: None")
    checkpoint_dir = os.path.join(os.fspath(out_dir), CHECKPOINT_SUBDIR)
    path = tf.train.latest_checkpoint(checkpoint_dir) if os.path.isdir(checkpoint_dir) else None
    if path is None:
        raise ValueError(
            f"No checkpoint to resume from in {checkpoint_dir!r} "
            f"(expected the output folder of an interrupted {kind})."
        )
    state = os.path.join(checkpoint_dir, "state-" + path.rsplit("-", 1)[-1] + ".json")
    try:
        with open(state, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"Cannot read the checkpoint state {state!r}: {e}") from e


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
