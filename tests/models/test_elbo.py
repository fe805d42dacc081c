"""`fit` sets a tfvnas model's KL scale to 1 / N from the data it is given (`tfvnas.models.elbo`).

The N that `training_examples` infers is checked against what Keras itself
trains on: a `fit` with one example per step counts them in its `steps`.
"""

import re
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvnas.layers import variational
from tfvnas.models import elbo, zoo
from tfvnas.models import network as network_lib
from tfvnas.models import supernet as supernet_lib


def _arrays(n, shape=(8, 8, 1), seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n,) + shape).astype("float32"), rng.integers(0, 10, n)


def _keras_steps(x, y=None, **fit_kwargs):
    """How many steps one epoch of Keras' `fit` runs on a one-weight model (one example a step: N)."""
    model = keras.Sequential([keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    model.compile(keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    steps = []

    class Count(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append(batch)

    model.fit(x, y, epochs=1, verbose=0, callbacks=[Count()], **fit_kwargs)
    return len(steps)


class _Batches(keras.utils.PyDataset):
    """A PyDataset of `n` examples in batches of `batch` (the last one smaller)."""

    def __init__(self, n, batch):
        super().__init__()
        self.x, self.y = _arrays(n)
        self.batch = batch

    def __len__(self):
        return -(-len(self.x) // self.batch)

    def __getitem__(self, i):
        s = slice(i * self.batch, (i + 1) * self.batch)
        return self.x[s], self.y[s]


@pytest.mark.parametrize("n, split", [(50, 0.0), (50, 0.25), (37, 0.3)])
def test_arrays_give_the_examples_fit_trains_on(n, split):
    x, y = _arrays(n)
    got, reason = elbo.training_examples(x, validation_split=split)
    assert reason is None
    assert got == _keras_steps(x, y, batch_size=1, validation_split=split)
    # Given validation data, Keras ignores the split, and so does the count.
    assert elbo.training_examples(x, validation_split=split, validation_data=(x, y)) == (n, None)
    # Several inputs: the length of the first.
    assert elbo.training_examples({"a": x, "b": x[:, 0, 0]}) == (n, None)


def test_a_tf_data_dataset_gives_cardinality_times_batch_size():
    x, y = _arrays(96)
    batched = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    assert elbo.training_examples(batched) == (96, None)
    # Through map, shuffle and prefetch; with a static batch size too.
    piped = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(96).batch(16, drop_remainder=True).map(
        lambda a, b: (a * 2, b)).prefetch(2)
    assert elbo.training_examples(piped) == (96, None)
    # An infinite one: `steps_per_epoch` batches.
    assert elbo.training_examples(batched.repeat(), steps_per_epoch=4) == (64, None)
    # A smaller last batch counts as a full one (at most one batch too many).
    n = 100
    x, y = _arrays(n)
    partial = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    got, _ = elbo.training_examples(partial)
    assert got == 112 and n <= got < n + 16
    assert _keras_steps(tf.data.Dataset.from_tensor_slices((x, y)).batch(1)) == n


def test_a_py_dataset_gives_the_sum_of_its_batches():
    data = _Batches(100, 16)
    assert elbo.training_examples(data) == (100, None)
    assert _keras_steps(_Batches(100, 1)) == 100


def test_unknown_sizes_say_why():
    x, y = _arrays(32)
    unknown = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda a, b: b >= 0).batch(8)
    assert elbo.training_examples(unknown) == (
        None, "a tf.data.Dataset of unknown cardinality, without `steps_per_epoch`")
    assert elbo.training_examples(unknown.repeat()) == (
        None, "a tf.data.Dataset of infinite cardinality, without `steps_per_epoch`")
    assert elbo.training_examples(unknown, steps_per_epoch=3) == (24, None)
    assert elbo.training_examples(iter([(x, y)])) == (None, "training data of type list_iterator")


def test_kl_scale_must_be_none_or_a_non_negative_number():
    for bad in (-1.0, "1/N", True, float("nan")):
        with pytest.raises(ValueError, match=re.escape(
                "`kl_scale` must be None (set by `fit` to 1 / N_train) or a non-negative number. "
                f"Received: kl_scale={bad!r}")):
            elbo.check_kl_scale(bad)
    assert elbo.check_kl_scale(None) is None and elbo.check_kl_scale(0) == 0.0


# -- fit ---------------------------------------------------------------------


def _tiny_network(**kwargs):
    # One (reduction) cell of two channels: a quick trace.
    net = network_lib.Network(10, zoo.load_genotype("darts_v2"), layers=1, channels=2, **kwargs)
    net.compile(keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return net


class _Seen(keras.callbacks.Callback):
    """The model's KL scale when training begins."""

    def on_train_begin(self, logs=None):
        self.value = float(self.model.kl_scale.numpy())


def test_fit_sets_the_kl_scale_to_one_over_n_before_training():
    net = _tiny_network()
    assert net.kl_scale_argument is None and float(net.kl_scale.numpy()) == 1.0
    x, y = _arrays(40)
    seen = _Seen()
    net.fit(x, y, batch_size=20, epochs=1, verbose=0, validation_split=0.25, callbacks=[seen])
    assert seen.value == pytest.approx(1.0 / 30)
    # Every KL layer reads it: the model's losses are the KL over 30.
    net(x[:2], training=True)
    kl = sum(float(layer.kl()) for layer in variational.kl_layers(net))
    assert float(tf.add_n(net.losses)) == pytest.approx(kl / 30, rel=1e-5)
    # A second fit on other data: that data's N.
    net.fit(tf.data.Dataset.from_tensor_slices(_arrays(24)).batch(8), epochs=1, verbose=0, callbacks=[seen])
    assert seen.value == pytest.approx(1.0 / 24)


def test_an_explicit_kl_scale_and_a_kl_schedule_win():
    x, y = _arrays(40)
    net = _tiny_network(kl_scale=0.5)
    seen = _Seen()
    net.fit(x, y, batch_size=20, epochs=1, verbose=0, callbacks=[seen])
    assert seen.value == 0.5 and float(net.kl_scale.numpy()) == 0.5
    assert net.get_config()["kl_scale"] == 0.5
    net = _tiny_network()
    schedule = variational.KLSchedule(n_train=1000)
    net.fit(x, y, batch_size=20, epochs=1, verbose=0, callbacks=[schedule])
    assert float(net.kl_scale.numpy()) == pytest.approx(1.0 / 1000)


def test_fit_says_when_it_cannot_know_n():
    x, y = _arrays(16)

    def batches():
        while True:
            yield x[:8], y[:8]

    net = _tiny_network()
    message = (
        "`fit` cannot tell how many examples it trains on (training data of type generator), so the KL "
        f"scale of Network {net.name!r} (1 / N_train for the ELBO) stays at 1. Pass `kl_scale=1 / N` to the "
        "model's constructor, or `tfvnas.layers.variational.KLSchedule(n_train=N)` in `callbacks`."
    )
    with pytest.warns(UserWarning, match=re.escape(message)) as caught:
        net.fit(batches(), steps_per_epoch=2, epochs=1, verbose=0)
    assert len([w for w in caught if "KL scale" in str(w.message)]) == 1
    assert caught[0].filename == __file__  # points at the caller's `fit`
    assert float(net.kl_scale.numpy()) == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when N is known
        net.fit(x, y, batch_size=8, epochs=1, verbose=0)


def test_a_supernet_is_fit_with_its_kl_scale_too():
    model = supernet_lib.Supernet(10, layers=1, channels=2, nodes=1, op_names=("skip_connect", "max_pool_3x3"))
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _arrays(32)
    seen = _Seen()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[seen])
    assert seen.value == pytest.approx(1.0 / 32)
    assert model.get_config()["kl_scale"] is None


def test_old_configs_and_files_load():
    # Configs of models saved before `kl_scale` hold the variable's value as `kl_weight`.
    net = _tiny_network()
    config = dict(net.get_config(), kl_weight=0.003)
    del config["kl_scale"]
    again = network_lib.Network.from_config(config)
    assert again.kl_scale_argument is None
    layer = variational.VariationalDense.from_config(
        {**variational.VariationalDense(3, kl_scale=0.25).get_config(), "kl_weight": 0.125})
    assert layer.kl_scale == 0.125 and "kl_weight" not in layer.get_config()


# -- the plain call ------------------------------------------------------------


@pytest.mark.slow
def test_the_plain_keras_fit_learns_held_out_digits():
    # scikit-learn's 8x8 digits: 1,000 to train on, 797 held out (docs/guide.md:
    # with the KL unscaled, the old default, such a call ends at chance).
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = digits.images.astype("float32")[..., None], digits.target
    keras.utils.set_random_seed(0)
    net = network_lib.Network(10, zoo.load_genotype("darts_v2"), layers=3, channels=8)
    net.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
    net.fit(x[:1000], y[:1000], epochs=5, verbose=0)
    assert float(net.kl_scale.numpy()) == pytest.approx(1.0 / 1000)
    assert net.evaluate(x[1000:], y[1000:], verbose=0, return_dict=True)["accuracy"] > 0.8
