"""Faults a long run meets, in one process: a full disk while checkpointing, damaged checkpoints and artefacts.

The search is the smoke preset shrunk to 1 cell and 1 node (2 epochs of 4
steps) with a checkpoint every 2 steps. The disk is a 4 MiB tmpfs, filled up
just before the checkpoint of step 6 (root can mount one; elsewhere the
checkpoint writer is made to fail as SaveV2 does on a full disk, leaving its
`ckpt-6_temp/` folder). Its resumed folder then serves the damaged-checkpoint
tests.
"""

import contextlib
import errno
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
import tensorflow as tf

from tfvnas import config as config_lib
from tfvnas import data as data_lib
from tfvnas import files, runs
from tfvnas.cli import main
from tfvnas.exporting.saved_model import load_saved_model
from tfvnas.loops import loop as loop_lib
from tfvnas.loops import searching as search_lib
from tfvnas.loops.tensorboard import EpochSummaries

pytestmark = pytest.mark.slow  # a search and its resume

TINY = {"layers": 1, "nodes": 1, "epochs": 2}
FULL_AT = 6  # the checkpoint the full disk hits


def _config():
    return config_lib.preset("smoke").replace(**TINY)


@pytest.fixture(scope="module")
def disk(tmp_path_factory):
    """`(folder, real)`: a 4 MiB tmpfs when this process may mount one (real=True), else a plain folder."""
    path = tmp_path_factory.mktemp("disk")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)],
                             capture_output=True).returncode == 0
    yield path, mounted
    if mounted:
        subprocess.run(["umount", "--lazy", str(path)], check=False)


def _fill(folder):
    """Writes a file that takes every free byte of `folder`'s file system."""
    try:
        with open(os.path.join(folder, "filler"), "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError as e:
        assert e.errno == errno.ENOSPC
    print(f"filled: {shutil.disk_usage(folder)}")


def _failing_write(self, file_prefix, options=None):
    """What SaveV2 does on a full disk: a temporary folder, then ResourceExhaustedError."""
    os.makedirs(file_prefix + "_temp", exist_ok=True)
    raise tf.errors.ResourceExhaustedError(
        None, None, f"{file_prefix}_temp/part-00000-of-00001.data-00000-of-00001.tempstate1; No space left on device")


@pytest.fixture(scope="module")
def full_disk(disk):
    """A search that meets a full disk at the checkpoint of step 6, then, once space is freed, its resume."""
    folder, real = disk
    out = str(folder / "search")
    real_save = loop_lib.Loop.save_checkpoint
    patch = pytest.MonkeyPatch()

    def save(self):
        if self.position["step"] == FULL_AT:
            if real:
                _fill(folder)
            else:
                patch.setattr(tf.train.Checkpoint, "write", _failing_write)
        return real_save(self)

    patch.setattr(loop_lib.Loop, "save_checkpoint", save)
    try:
        with pytest.raises(files.WriteError) as info:
            search_lib.search("mnist-5k", config=_config(), out_dir=out, checkpoint_every=2, verbose=0)
    finally:
        patch.undo()
    stopped = {"error": info.value, "listing": sorted(os.listdir(out)),
               "checkpoints": sorted(os.listdir(os.path.join(out, runs.CHECKPOINT_SUBDIR)))}
    if real:
        os.remove(folder / "filler")
    result = search_lib.search("mnist-5k", config=_config(), out_dir=out, resume=True, checkpoint_every=2, verbose=0)
    return {"out": out, "real": real, "stopped": stopped, "result": result}


def test_a_full_disk_stops_the_run_in_one_line_naming_what_and_where(full_disk):
    out, error = full_disk["out"], full_disk["stopped"]["error"]
    checkpoints = os.path.join(out, runs.CHECKPOINT_SUBDIR)
    message = str(error)
    print(f"\nfull disk ({'tmpfs' if full_disk['real'] else 'injected'}): {message}")
    assert "\n" not in message and error.no_space
    assert re.fullmatch(
        re.escape(f"No space left on the disk writing the checkpoint {os.path.join(checkpoints, 'ckpt-6')!r} "
                  "(needs about ") + r"\d+\.\d KiB" + re.escape(" free, ") + r"\d+(\.\d)? (B|KiB)" + re.escape(
            f" free). Free space, then resume. The newest complete checkpoint is {os.path.join(checkpoints, 'ckpt-4')}"
            " (epoch 2, step 4); --resume (resume=True) continues from it."), message), message
    # The failed save left nothing: no ckpt-6 files, no ckpt-6_temp/ folder, no state-6.json.
    assert full_disk["stopped"]["checkpoints"] == [
        "checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index", "ckpt-4.data-00000-of-00001", "ckpt-4.index",
        "state-2.json", "state-4.json"]
    assert full_disk["stopped"]["listing"] == ["checkpoints"]  # no artefact, and the lock released


def test_the_command_exits_74_with_that_line(full_disk, monkeypatch, capsys):
    def fail(*args, **kwargs):
        raise full_disk["stopped"]["error"]

    monkeypatch.setattr(search_lib, "search", fail)
    assert main(["search", "--out", full_disk["out"], "--resume"]) == 74
    assert capsys.readouterr().err == f"tfvnas: error: {full_disk['stopped']['error']}\n"


def test_after_space_is_freed_resume_continues_from_the_newest_complete_checkpoint(full_disk):
    result, out = full_disk["result"], full_disk["out"]
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert sorted(os.listdir(os.path.join(out, runs.CHECKPOINT_SUBDIR))) == [
        "checkpoint", "ckpt-6.data-00000-of-00001", "ckpt-6.index", "ckpt-8.data-00000-of-00001", "ckpt-8.index",
        "state-6.json", "state-8.json"]
    assert sorted(os.listdir(out)) == sorted(search_lib.ARTEFACTS + (runs.CHECKPOINT_SUBDIR,))


# -- damaged checkpoints -------------------------------------------------


@pytest.fixture(scope="module")
def searcher():
    cfg = _config()
    return search_lib.Searcher(cfg, data_lib.load("mnist-5k", seed=cfg.seed), verbose=0)


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _scribble(path):
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        f.write(b"\xa5" * 64)


DAMAGE = {
    "truncated state": ("state-8.json", _truncate),
    "damaged index": ("ckpt-8.index", _scribble),
    "truncated data": ("ckpt-8.data-00000-of-00001", _truncate),
    "damaged data": ("ckpt-8.data-00000-of-00001", _scribble),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_resume_skips_a_damaged_checkpoint_and_says_so(full_disk, searcher, tmp_path, capsys, damage):
    folder = tmp_path / "checkpoints"
    shutil.copytree(os.path.join(full_disk["out"], runs.CHECKPOINT_SUBDIR), folder)
    name, spoil = DAMAGE[damage]
    spoil(folder / name)
    assert searcher.restore(folder) == str(folder / "ckpt-6")
    assert searcher.position["step"] == 6
    [(path, why)] = searcher.skipped_checkpoints
    assert path == str(folder / "ckpt-8") and why and "\n" not in why
    if name.startswith("state"):
        assert why.startswith(f"The checkpoint state {str(folder / name)!r} does not read (damaged or truncated?): ")
    assert capsys.readouterr().err == f"tfvnas: skipped the checkpoint {path}, which does not restore: {why}\n"


def test_a_damaged_checkpoint_index_file_does_not_matter(full_disk, searcher, tmp_path):
    folder = tmp_path / "checkpoints"
    shutil.copytree(os.path.join(full_disk["out"], runs.CHECKPOINT_SUBDIR), folder)
    (folder / "checkpoint").write_bytes(b"\x00garbage")
    assert searcher.restore(folder) == str(folder / "ckpt-8") and searcher.skipped_checkpoints == []


def test_no_checkpoint_that_restores_is_one_line_naming_each(full_disk, searcher, tmp_path):
    folder = tmp_path / "checkpoints"
    shutil.copytree(os.path.join(full_disk["out"], runs.CHECKPOINT_SUBDIR), folder)
    _truncate(folder / "state-8.json")
    _scribble(folder / "ckpt-6.data-00000-of-00001")
    with pytest.raises(ValueError) as info:
        searcher.restore(folder)
    message = str(info.value)
    assert message.startswith(f"No checkpoint in {str(folder)!r} restores: ckpt-8: The checkpoint state ")
    assert "; ckpt-6: " in message and "\n" not in message


# -- damaged artefacts ---------------------------------------------------


def test_a_damaged_genotype_is_one_line_naming_it(tmp_path, capsys):
    path = tmp_path / "genotype.json"
    for content, reason in ((b'{"normal": [[["sep_conv_3x3", 0', "must be valid JSON. Received: Expecting "),
                            (b"\x89PNG\r\n\x1a\n", "must be UTF-8 JSON text. Received: undecodable bytes")):
        path.write_bytes(content)
        assert main(["train", "--genotype", str(tmp_path), "--out", str(tmp_path / "train")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"tfvnas: error: Genotype file {str(path)!r} {reason}") and err.count("\n") == 1
    assert not (tmp_path / "train").exists()


def test_a_damaged_history_is_one_line_naming_it(tmp_path, capsys):
    shutil.copy(os.path.join(os.path.dirname(search_lib.__file__), "..", "genotypes", "darts_v2.json"),
                tmp_path / "genotype.json")
    (tmp_path / "search_history.json").write_bytes(b'{"epochs": [{"epoch": 1, "log_al')
    assert main(["show", str(tmp_path), "--out", str(tmp_path / "pictures")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tfvnas: error: The search history {str(tmp_path / 'search_history.json')!r} does not "
                          "read (damaged or truncated?): ") and err.count("\n") == 1


def test_a_damaged_config_file_is_one_line_naming_it(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text("layers: 1\nnodes: [1, 2\n")
    assert main(["search", "--config", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tfvnas: error: Could not read config file {str(path)!r}: ") and err.count("\n") == 1


def test_a_damaged_saved_model_is_one_line_naming_it(tmp_path):
    module = tf.Module()
    module.f = tf.function(lambda x: 2 * x, input_signature=[tf.TensorSpec([None], tf.float32)])
    path = str(tmp_path / "saved_model")
    tf.saved_model.save(module, path)
    np.testing.assert_array_equal(load_saved_model(path).f(tf.constant([1.0])), [2.0])
    _truncate(os.path.join(path, "saved_model.pb"))
    with pytest.raises(ValueError, match="^" + re.escape(
            f"The SavedModel {path!r} does not load (damaged or truncated?): ") + r"[^\n]+$"):
        load_saved_model(path)


# -- TensorBoard on a full disk -------------------------------------------


def test_tensorboard_on_a_full_disk_is_one_line_naming_the_folder(disk):
    folder, real = disk
    if not real:
        pytest.skip("no tmpfs: mounting one needs root")
    summaries = EpochSummaries(folder / "tb")
    summaries.scalars({"loss": 1.0}, 0)
    _fill(folder)
    try:
        with pytest.raises(files.WriteError, match="^" + re.escape(
                f"No space left on the disk writing TensorBoard summaries {str(folder / 'tb')!r} (") + r"[^\n]+$"):
            # More than the free end of the events file's last page.
            summaries.scalars({f"loss_{i}": 1.0 for i in range(5000)}, 1)
    finally:
        os.remove(folder / "filler")
        with contextlib.suppress(Exception):
            summaries.close()
