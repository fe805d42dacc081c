"""What the supernet and mixed-edge tests share."""

# A small op set: a convolution, a pool and the identity.
OPS = ("sep_conv_3x3", "max_pool_3x3", "skip_connect")


def tiny_supernet(input_shape, **kwargs):
    """A built 10-class `Supernet` over `OPS` (3 cells, 2 channels, 2 nodes unless given)."""
    from tfvnas.models.supernet import Supernet

    kw = dict(layers=3, channels=2, nodes=2, op_names=OPS, seed=1)
    kw.update(kwargs)
    model = Supernet(10, **kw)
    model.build((None, *input_shape))
    return model
