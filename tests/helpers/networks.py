"""Small discrete networks of every op type, their images and digits, for the network, strip and prior tests."""

import numpy as np

from tfvnas.models import genotype as genotype_lib
from tfvnas.models import network as network_lib

SHAPE = (12, 12, 1)

# Every op type, a `none` edge, and dilated convolutions on the strided
# inputs of the reduction cell (the stride-1-then-subsample path).
EVERY_OP = genotype_lib.Genotype(
    normal=[
        [("sep_conv_3x3", 0), ("skip_connect", 1)],
        [("dil_conv_5x5", 2), ("max_pool_3x3", 0), ("none", 1)],
    ],
    normal_concat=[2, 3],
    reduce=[
        [("dil_conv_3x3", 0), ("avg_pool_3x3", 1)],
        [("sep_conv_5x5", 2), ("skip_connect", 0), ("dil_conv_5x5", 1)],
    ],
    reduce_concat=[2, 3],
)


def scramble(model, seed=0):
    """Random gamma/beta/statistics and log_sigma2 spread across the threshold."""
    rng = np.random.default_rng(seed)
    for v in model.variables:
        path = v.path
        if path.endswith("log_sigma2"):
            v.assign(rng.normal(-3.0, 4.0, v.shape).astype("float32"))
        elif path.endswith("moving_variance"):
            v.assign(rng.uniform(0.5, 2.0, v.shape).astype("float32"))
        elif path.endswith(("moving_mean", "gamma", "beta")):
            v.assign(rng.normal(0.3, 0.3, v.shape).astype("float32"))


def small_network(genotype=EVERY_OP, **kwargs):
    """A built 3-cell, 4-channel `Network` of `genotype` on `SHAPE` images (10 classes)."""
    kwargs = {"layers": 3, "channels": 4, "normalisation": ((33.0,), (78.0,)), **kwargs}
    net = network_lib.Network(10, genotype, **kwargs)
    net.build((None,) + SHAPE)
    return net


def network_images():
    """Five random `SHAPE` images with values in [0, 255)."""
    return (np.random.default_rng(1).random((5,) + SHAPE) * 255).astype("float32")


def digits(n, seed=0):
    """The first `n` training images of mnist-5k at 12x12, and their labels."""
    from tfvnas import data as data_lib

    ds = data_lib.load("mnist-5k").resized(12)
    return ds.x_train[:n], ds.y_train[:n]
