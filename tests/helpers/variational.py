"""NumPy references for the variational layers: 'same' convolutions, the ARD KL, means away from zero."""

import numpy as np


def random_theta(rng, shape):
    """Means bounded away from 0, so `log(theta^2)` needs no epsilon anywhere."""
    return (rng.choice([-1.0, 1.0], shape) * rng.uniform(0.2, 1.5, shape)).astype("float32")


def np_same_conv(x, w, strides=1, dilation=1, depthwise=False):
    """'same' convolution in NumPy (TensorFlow's SAME padding).

    `x` is (N, H, W, C). `w` is (..., k, k, C, F) (or (..., k, k, C, 1) when
    `depthwise`); leading axes of `w` (weight samples) lead the output, which
    is (..., N, Ho, Wo, F or C). A strided *dilated* convolution is, by the
    design (DESIGN.md, `conv_same` docstring), the stride-1 convolution
    subsampled every `strides` pixels.
    """
    if strides > 1 and dilation > 1:
        full = np_same_conv(x, w, 1, dilation, depthwise)
        return full[..., ::strides, ::strides, :]
    k = w.shape[-4]
    _, h, wd, _ = x.shape
    k_eff = (k - 1) * dilation + 1
    ho, wo = -(-h // strides), -(-wd // strides)
    pad_h = max((ho - 1) * strides + k_eff - h, 0)
    pad_w = max((wo - 1) * strides + k_eff - wd, 0)
    xp = np.pad(
        x.astype("float64"),
        ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)),
    )
    w = w.astype("float64")
    out = 0.0
    for i in range(k):
        for j in range(k):
            r, q = i * dilation, j * dilation
            patch = xp[:, r : r + (ho - 1) * strides + 1 : strides, q : q + (wo - 1) * strides + 1 : strides, :]
            if depthwise:
                out = out + np.einsum("nhwc,...c->...nhwc", patch, w[..., i, j, :, 0])
            else:
                out = out + np.einsum("nhwc,...cf->...nhwf", patch, w[..., i, j, :, :])
    return out


def np_kl(theta, log_sigma2):
    """The ARD KL of each weight, 0.5 * log(1 + theta^2 / sigma^2), in float64."""
    theta = np.asarray(theta, "float64")
    sigma2 = np.exp(np.asarray(log_sigma2, "float64"))
    return 0.5 * np.log1p(theta**2 / sigma2)
