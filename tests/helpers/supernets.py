"""What the supernet and mixed-edge tests share."""

# A small op set: a convolution, a pool and the identity.
OPS = ("sep_conv_3x3", "max_pool_3x3", "skip_connect")
