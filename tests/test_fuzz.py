"""Bad input through the Python API, fuzzed: a one-line `ValueError` or `TypeError`, never anything else.

Property-based (hypothesis): genotype dicts and JSON text, config dicts of
every config class (a preset's fields with some replaced by any JSON value),
and `.npz` data sets whose arrays have any shape, dtype and values. Each
either works or raises `ValueError`/`TypeError` with a message of one line;
any other exception fails the test. Example counts are small, so the module
runs in seconds.
"""

import dataclasses
import io
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tfvnas import config as config_lib
from tfvnas import data as data_lib
from tfvnas.layers import registry as op_registry
from tfvnas.models import genotype as genotype_lib
from tfvnas.models import zoo

FUZZ = settings(max_examples=30, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10**12) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def works_or_says_why(call):
    """`call()`'s value, or None after a one-line ValueError/TypeError; any other exception propagates."""
    try:
        return call()
    except (ValueError, TypeError) as error:
        message = str(error)
        assert message.strip() and "\n" not in message, f"{type(error).__name__}: {message!r}"
        return None


# -- genotypes -------------------------------------------------------------

OPS = list(op_registry.op_names())
EDGE = st.one_of(
    st.tuples(st.sampled_from(OPS + ["conv_9x9", ""]), st.integers(-2, 7)).map(list),
    st.lists(st.sampled_from(OPS) | st.integers(-2, 7) | st.none(), max_size=3),
    JSON,
)
CELL = st.lists(st.lists(EDGE, max_size=3), max_size=5) | JSON
CONCAT = st.lists(st.integers(-1, 7), max_size=5) | JSON


@st.composite
def genotype_dicts(draw):
    d = {key: draw(CONCAT if key.endswith("concat") else CELL) for key in genotype_lib.GENOTYPE_KEYS}
    for key in draw(st.lists(st.sampled_from(genotype_lib.GENOTYPE_KEYS), max_size=2)):
        d.pop(key, None)
    if draw(st.booleans()):
        d[draw(st.text(max_size=5))] = draw(JSON)
    return d


@FUZZ
@given(genotype_dicts())
def test_genotype_dicts(d):
    genotype = works_or_says_why(lambda: genotype_lib.Genotype.from_dict(d))
    if genotype is not None:
        works_or_says_why(lambda: genotype.validate(OPS))


@FUZZ
@given(st.text(max_size=40) | JSON.map(str) | st.binary(max_size=20) | JSON)
def test_genotype_text(text):
    works_or_says_why(lambda: genotype_lib.Genotype.from_json(text))


def test_a_valid_genotype_passes():
    genotype = zoo.load_genotype("darts_v2")
    assert works_or_says_why(lambda: genotype_lib.Genotype.from_dict(genotype.to_dict()).validate(OPS)) == genotype


# -- configs ---------------------------------------------------------------

CONFIGS = [
    (config_lib.SearchConfig, config_lib.preset("smoke").to_dict()),
    (config_lib.TrainConfig, config_lib.TRAIN_PRESETS["smoke"].to_dict()),
    (config_lib.ExportConfig, config_lib.ExportConfig().to_dict()),
]


@pytest.mark.parametrize("config_class, base", CONFIGS, ids=[c.__name__ for c, _ in CONFIGS])
@FUZZ
@given(data=st.data())
def test_config_dicts(config_class, base, data):
    names = [f.name for f in dataclasses.fields(config_class)]
    changes = data.draw(st.dictionaries(st.sampled_from(names + ["no_such_field"]), JSON, max_size=3))
    works_or_says_why(lambda: config_class.from_dict({**base, **changes}))
    if config_class is not config_lib.ExportConfig:
        works_or_says_why(lambda: config_lib.settle(config_class, preset="smoke", config=changes))


@FUZZ
@given(JSON)
def test_config_that_is_not_a_mapping(value):
    works_or_says_why(lambda: config_lib.SearchConfig.from_dict(value))


# -- data sets -------------------------------------------------------------

DTYPES = st.sampled_from(["uint8", "int64", "float32", "float64", "bool", "int8", "<U2", "complex64"])


def arrays():
    return DTYPES.flatmap(lambda dtype: hnp.arrays(
        dtype, hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=4),
        elements=None if dtype in ("<U2",) else hnp.from_dtype(np.dtype(dtype), allow_nan=True)
        if dtype.startswith("float") else None))


@st.composite
def npz_files(draw):
    names = ["x_train", "y_train", "x_test", "y_test", "x_val", "y_val"]
    keep = draw(st.lists(st.sampled_from(names), min_size=3, max_size=6, unique=True))
    buffer = io.BytesIO()
    np.savez(buffer, **{name: draw(arrays()) for name in keep})
    return buffer.getvalue()


@FUZZ
@given(npz_files())
def test_npz_contents(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("npz") / "data.npz"
    path.write_bytes(content)
    works_or_says_why(lambda: data_lib.load(str(path)))


@FUZZ
@given(st.integers(1, 12), st.integers(1, 3), st.integers(0, 12), st.booleans(),
       st.sampled_from([0.0, np.nan, np.inf, -1.0, 300.0]))
def test_shaped_npz(tmp_path_factory, n, channels, classes, rank3, poison):
    """Near-valid data sets: a few images, any number of classes, a NaN or an out-of-range pixel."""
    rng = np.random.default_rng(n)
    shape = (n, 4, 4) if rank3 else (n, 4, 4, channels)
    x = rng.random(shape).astype(np.float32)
    x.flat[0] = poison or x.flat[0]
    y = rng.integers(0, max(classes, 1), n)
    path = tmp_path_factory.mktemp("npz") / "near.npz"
    np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y)
    works_or_says_why(lambda: data_lib.load(str(path)))


# -- the public functions ----------------------------------------------------


def _api():
    from tfvnas.exporting import export
    from tfvnas.loops.searching import search
    from tfvnas.loops.training import train
    from tfvnas.loops.tuning import tune
    from tfvnas.pipeline import run

    return search, train, run, tune, export


BAD_CALLS = {
    "unknown data set": (lambda f: f[0]("no_such_data", verbose=0), "`name_or_path` must be one of ("),
    "unknown preset": (lambda f: f[0]("mnist-5k", preset="huge", verbose=0),
                       "Unknown preset 'huge'. Known presets: smoke, quick, paper"),
    "config of the wrong type": (lambda f: f[0]("mnist-5k", config=3, verbose=0),
                                 "`config` must be a SearchConfig, a dict of its fields, a JSON or YAML file path or "
                                 "None. Received: config=3"),
    "field of the wrong type": (lambda f: f[0]("mnist-5k", config={"layers": "3"}, verbose=0),
                                "`layers` must be an int. Received: layers='3'"),
    "strategy of the wrong type": (lambda f: f[0]("mnist-5k", strategy=3, verbose=0),
                                   "`strategy` must be a tf.distribute.Strategy, one of auto, default, mirrored, "
                                   "multiworker, or None. Received: strategy=3"),
    "worker timeout": (lambda f: f[0]("mnist-5k", strategy="default", worker_timeout=0, verbose=0),
                       "`worker_timeout` must be a positive number of seconds or None. Received: worker_timeout=0"),
    "overwrite not a bool": (lambda f: f[0]("mnist-5k", overwrite="yes", verbose=0),
                             "`overwrite` must be a bool. Received: overwrite='yes'"),
    "None as a genotype": (lambda f: f[1](None, verbose=0), "`name_or_path` must be a zoo genotype name or a path"),
    "unknown zoo name": (lambda f: f[1]("darts_v9", verbose=0), "`name_or_path` must be a zoo genotype name, one of"),
    "run: resume and overwrite": (lambda f: f[2]("mnist-5k", out_dir="x", resume=True, overwrite=True, verbose=0),
                                  "`resume` and `overwrite` exclude each other"),
    "run: unknown preset": (lambda f: f[2]("mnist-5k", preset="huge", out_dir="x", verbose=0),
                            "Unknown preset 'huge'."),
    "tune: no genotype": (lambda f: f[3](None, "mnist-5k", out_dir="x", verbose=0),
                          "`genotype` is required with mode='train'"),
    "tune: bad trials": (lambda f: f[3]("darts_v2", "mnist-5k", max_trials=0, out_dir="x", verbose=0),
                         "`max_trials` must be a positive int. Received: max_trials=0"),
    "export: None": (lambda f: f[4](None, "x", verbose=0), "`model_dir` must be a path. Received: model_dir=None"),
    "export: missing folder": (lambda f: f[4]("no/such/run", "x", verbose=0),
                               "`model` must be the output folder of `tfvnas train`"),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_arguments_are_one_keras_style_line(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # "x": a folder nothing may create
    call, start = BAD_CALLS[case]
    with pytest.raises(ValueError) as info:
        call(_api())
    assert str(info.value).startswith(start) and "\n" not in str(info.value)
    assert os.listdir(tmp_path) == []
