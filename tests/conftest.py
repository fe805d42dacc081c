"""Test session setup: two logical CPU devices, so MirroredStrategy runs here.

The logical devices must be configured before TensorFlow initialises its
context, hence at import time of this conftest, before any test module.
oneDNN is switched on (TensorFlow does so by default on Intel CPUs only),
so the suite computes the same kernels on every x86 CPU. The `no_dot`
fixture hides graphviz's `dot` from the picture tests.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# oneDNN's kernels, which TensorFlow enables by default on Intel CPUs only:
# on AMD ones a search step is 1.3x faster with them (docs/BENCHMARKS.md).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)
LOGICAL_CPUS = [d.name for d in tf.config.list_logical_devices("CPU")]


def mirrored():
    """The session's one MirroredStrategy over the two logical CPUs.

    A second MirroredStrategy over the same devices in one process reuses the
    first one's collective keys (see `tfvnas.loops.loop.check_strategy`).
    """
    from tfvnas.loops.distribute import mirrored_strategy

    return mirrored_strategy(LOGICAL_CPUS)


def summary_events(log_dir):
    """`{tag: [(step, plugin, value)]}` of every summary in `log_dir`."""
    found = {}
    for name in sorted(os.listdir(log_dir)):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(log_dir, name)):
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                found.setdefault(value.tag, []).append((event.step, plugin, tf.make_ndarray(value.tensor)))
    return found


@pytest.fixture
def no_dot(monkeypatch):
    """`shutil.which` finds no `dot`, so the cells are drawn with matplotlib."""
    from tfvnas.pictures import cell_drawing

    monkeypatch.setattr(cell_drawing.shutil, "which", lambda name: None)
