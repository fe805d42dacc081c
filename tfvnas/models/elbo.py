"""The KL scale a tfvnas model owns, and a `fit` that sets it from the data it is given.

A `Network` or `Supernet` holds one non-trainable variable, `kl_scale`,
that every layer with a KL term multiplies its KL by
(`tfvnas.layers.variational.bind_kl_scale`). For the ELBO it is
`beta / N_train`: the KL is one term per data set, the cross-entropy a
mean over examples. tfvnas' loops set it every step (`beta` warmed up,
`tfvnas.layers.variational.warmed_up_beta`). Under Keras' own `fit`, a model
built with `kl_scale=None` (the default) sets it to `1 / N` for the `N`
training examples that `fit` is given (`training_examples`), so the plain

    net.compile(optimizer, loss)
    net.fit(x, y, epochs=8)

trains the ELBO. An explicit `kl_scale` is kept, and a `KLSchedule` among
the callbacks sets the scale itself. When `N` cannot be known (a Python
generator, a data set of unknown size without `steps_per_epoch`), `fit`
says so in a warning that names what to pass, and the scale keeps its value.
"""

import inspect
import math
import warnings

import keras

from tfvnas.layers import variational


def check_kl_scale(kl_scale):
    """`None` (automatic) or a non-negative float; raises `ValueError` otherwise."""
    if kl_scale is None:
        return None
    if isinstance(kl_scale, bool) or not isinstance(kl_scale, (int, float)) or not kl_scale >= 0:
        raise ValueError(
            "`kl_scale` must be None (set by `fit` to 1 / N_train) or a non-negative number. "
            f"Received: kl_scale={kl_scale!r}"
        )
    return float(kl_scale)


def own_kl_scale(model, kl_scale):
    """Creates `model`'s `kl_scale` variable and binds every KL layer of the model to it.

    The variable starts at `kl_scale`, or at 1 (the KL unscaled) when it is
    None, until a loop, `fit` or `KLSchedule` sets it.
    """
    value = 1.0 if kl_scale is None else kl_scale
    variable = model.add_weight(
        name="kl_scale", shape=(), initializer=keras.initializers.Constant(value), trainable=False,
        autocast=False,  # float32 under a mixed precision policy, as the KL it scales
    )
    variational.bind_kl_scale(model, variable)
    return variable


def _batch_size_of(batch):
    """The leading size of the first array in a batch `(x, y, ...)` or `x`."""
    for leaf in keras.tree.flatten(batch):
        if leaf is not None and getattr(leaf, "shape", None) is not None and len(leaf.shape):
            size = leaf.shape[0]
            return None if size is None else int(size)
    return None


def _dataset_examples(dataset, steps_per_epoch):
    import tensorflow as tf

    cardinality = int(dataset.cardinality())
    if cardinality < 0:  # infinite or unknown
        if steps_per_epoch is None:
            what = "infinite" if cardinality == tf.data.INFINITE_CARDINALITY else "unknown"
            return None, f"a tf.data.Dataset of {what} cardinality, without `steps_per_epoch`"
        cardinality = int(steps_per_epoch)
    if cardinality == 0:
        return None, "an empty tf.data.Dataset"
    size = _batch_size_of(dataset.element_spec)
    if size is None:  # batched without drop_remainder: the first batch's size
        size = _batch_size_of(next(iter(dataset.take(1))))
    return cardinality * size, None


def _py_dataset_examples(dataset, steps_per_epoch):
    try:
        batches = dataset.num_batches
    except NotImplementedError:
        batches = None
    if batches is None:
        if steps_per_epoch is None:
            return None, "a PyDataset of unknown length, without `steps_per_epoch`"
        return int(steps_per_epoch) * _batch_size_of(dataset[0]), None
    if batches == 0:
        return None, "an empty PyDataset"
    # Random access: the last batch may be smaller than the others.
    return (batches - 1) * _batch_size_of(dataset[0]) + _batch_size_of(dataset[batches - 1]), None


def training_examples(x, *, validation_split=0.0, validation_data=None, steps_per_epoch=None):
    """How many training examples `fit(x, ...)` sees per epoch, when that can be known.

    - arrays (NumPy, tensors, or a list or dict of them): their length, less
      the share `validation_split` holds out (as Keras splits it: the first
      `floor(n * (1 - validation_split))` examples train);
    - a `tf.data.Dataset` of batches: its cardinality (or `steps_per_epoch`,
      for an infinite one) times the batch size (static, or the first
      batch's). A smaller last batch counts as a full one: at most one batch
      too many, against an exact count that would read the whole data set;
    - a `keras.utils.PyDataset`: the sum of its batch sizes (the first and
      the last batch are read), or `steps_per_epoch` times the first
      batch's size for one of unknown length.

    Returns:
        `(n, None)`, or `(None, reason)` when `x` does not tell (a Python
        generator, a data set of unknown size without `steps_per_epoch`).
    """
    import tensorflow as tf

    if isinstance(x, tf.data.Dataset):
        return _dataset_examples(x, steps_per_epoch)
    if isinstance(x, keras.utils.PyDataset):
        return _py_dataset_examples(x, steps_per_epoch)
    n = _batch_size_of(x)
    if n is None:
        return None, f"training data of type {type(x).__name__}"
    if validation_split and validation_data is None:
        n = int(math.floor(n * (1.0 - validation_split)))
    return n, None


def _has_kl_schedule(callbacks):
    if isinstance(callbacks, keras.callbacks.CallbackList):
        callbacks = callbacks.callbacks
    return any(isinstance(c, variational.KLSchedule) for c in callbacks or ())


class ELBOModel:
    """Mixin of the tfvnas models that own the KL scale (`Network`, `Supernet`).

    The model calls `init_kl_scale(kl_scale)` at the end of its `__init__`
    (every KL layer exists by then) and returns `kl_scale_argument` as
    `kl_scale` in its config. With `kl_scale=None`, `fit` sets the scale to
    `1 / N` for the `N` training examples it is given (module docstring).
    """

    def init_kl_scale(self, kl_scale):
        self.kl_scale_argument = check_kl_scale(kl_scale)
        self.kl_scale = own_kl_scale(self, self.kl_scale_argument)

    def fit(self, *args, **kwargs):
        if self.kl_scale_argument is None:
            self._set_kl_scale_for_fit(args, kwargs)
        return super().fit(*args, **kwargs)

    def _set_kl_scale_for_fit(self, args, kwargs):
        try:
            bound = inspect.signature(keras.Model.fit).bind(self, *args, **kwargs)
        except TypeError:
            return  # Keras' own `fit` names the wrong argument
        bound.apply_defaults()
        a = bound.arguments
        if _has_kl_schedule(a["callbacks"]):
            return  # the schedule sets the scale itself
        n, reason = training_examples(
            a["x"], validation_split=a["validation_split"], validation_data=a["validation_data"],
            steps_per_epoch=a["steps_per_epoch"])
        if n is None:
            warnings.warn(
                f"`fit` cannot tell how many examples it trains on ({reason}), so the KL scale of "
                f"{type(self).__name__} {self.name!r} (1 / N_train for the ELBO) stays at "
                f"{float(self.kl_scale.numpy()):g}. Pass `kl_scale=1 / N` to the model's constructor, or "
                "`tfvnas.layers.variational.KLSchedule(n_train=N)` in `callbacks`.",
                stacklevel=3,
            )
            return
        self.kl_scale.assign(variational.kl_scale(1.0, n))

    def load_own_variables(self, store):
        # A model.keras written before the model owned its KL scale holds
        # every variable but that one, the last: the scale keeps its value
        # (the loops, `fit` and KLSchedule set it before any training step).
        own = self._trainable_variables + self._non_trainable_variables
        if len(store.keys()) == len(own) - 1 and own[-1] is self.kl_scale:
            for i, v in enumerate(own[:-1]):
                v.assign(store[f"{i}"])
            return
        super().load_own_variables(store)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Configs written before `kl_scale` hold `kl_weight`, the value the
        # variable had when saved (not an argument given): the weights file
        # holds that value, and the model is automatic again.
        config = {k: v for k, v in config.items() if k != "kl_weight"}
        return super().from_config(config, custom_objects=custom_objects)
