"""Mixed precision: the Keras dtype policy a run builds its model under.

`SearchConfig.precision` and `TrainConfig.precision` name one of Keras'
policies (`keras.mixed_precision`): `float32`, `mixed_bfloat16` or
`mixed_float16`, where layers keep float32 variables and compute in the
16-bit type. The loops build the model inside `policy_scope`, which sets
Keras' global policy for the layers created there and restores the previous
one after, so no policy leaks to models built later (a stripped, exported
network is float32 whatever the run used).

What stays float32 under a mixed policy: the gates (`GaussianGates`,
`SoftmaxGates`: their parameters, sampling and mixture weights), every
variational layer's `theta` and `log_sigma2` (read unrounded; cast to the
compute type only where a convolution uses them), the batch norms'
statistics, scale and offset, every KL term, the model's KL scale, the
logits' cross-entropy and the loss. `mixed_float16` also scales the loss
(`tfvnas.loops.optim.DynamicLossScale`); bfloat16 has float32's exponent
range and needs none.

The speed-up is for GPUs (tensor cores for float16 and bfloat16, and half
the activation memory); on these CPUs a 16-bit step is not faster, and none
was measured here (docs/BENCHMARKS.md).
"""

import contextlib

from tfvnas import choices

PRECISIONS = choices.PRECISIONS


@contextlib.contextmanager
def policy_scope(name):
    """Keras' global dtype policy set to `name` inside the block, the previous one restored after.

    Raises:
        ValueError: for a name not in `PRECISIONS`.
    """
    if name not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {', '.join(map(repr, PRECISIONS))}. Received: precision={name!r}")
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
