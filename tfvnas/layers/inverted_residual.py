"""MobileNetV2's inverted residual block as a candidate operation (`mbconv_3x3_e3`).

Registered in `tfvnas.layers.registry` as a user's operation would be
(`tfvnas.register_op`), so it is both a mobile-minded candidate and the
example of one: another expansion is one line,

    tfvnas.register_op("mbconv_3x3_e6", lambda c, s, **kw: InvertedResidual(c, s, expansion=6, **kw))

References:
    - Sandler, Howard, Zhu, Zhmoginov, Chen. "MobileNetV2: Inverted
      Residuals and Linear Bottlenecks." CVPR 2018.
    - Cai, Zhu, Han. "ProxylessNAS: Direct Neural Architecture Search on
      Target Task and Hardware." ICLR 2019 (MBConv candidates without the
      residual, which the cell provides).
"""

import keras

from tfvnas import checks
from tfvnas.layers import batch_normalization as bn_lib
from tfvnas.layers import ops


@keras.saving.register_keras_serializable(package="tfvnas")
class InvertedResidual(ops.Op):
    """1x1 expansion, BN, ReLU6, depthwise kxk (strided), BN, ReLU6, 1x1 projection, BN.

    MobileNetV2's block without its identity: a DARTS cell sums its edges
    and has `skip_connect` as a candidate of its own. Every convolution is
    variational with `weight_vd` (`tfvnas.layers.ops.conv2d`,
    `depthwise_conv2d`), so its weights sparsify, and strip turns it into
    `Conv2D`, `BatchNormalization`, `ReLU(max_value=6)` and
    `DepthwiseConv2D`, which TFLite runs natively (ReLU6 fused).

    Args:
        channels: input and output channels.
        strides: 1 or 2 (the depthwise convolution's).
        expansion: the hidden width is `expansion * channels`.
        kernel_size: the depthwise kernel's side.
        weight_vd, affine, seed: as every operation (`tfvnas.layers.ops.Op`).
    """

    def __init__(self, channels, strides, expansion=3, kernel_size=3, **kwargs):
        self.expansion = checks.check_positive_int("expansion", expansion)
        self.kernel_size = checks.check_positive_int("kernel_size", kernel_size)
        super().__init__(channels, strides, **kwargs)
        c, vd, s = self.channels, self.weight_vd, self.seed
        self.steps = [
            ops.conv2d(self.expansion * c, 1, weight_vd=vd, seed=ops.offset_seed(s, 1)),
            bn_lib.batch_norm(self.affine),
            keras.layers.ReLU(max_value=6.0),
            *ops.depthwise_conv2d(self.kernel_size, self.strides, weight_vd=vd, seed=ops.offset_seed(s, 2)),
            bn_lib.batch_norm(self.affine),
            keras.layers.ReLU(max_value=6.0),
            ops.conv2d(c, 1, weight_vd=vd, seed=ops.offset_seed(s, 3)),
            bn_lib.batch_norm(self.affine),
        ]

    def get_config(self):
        return {**super().get_config(), "expansion": self.expansion, "kernel_size": self.kernel_size}
