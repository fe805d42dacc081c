"""`tfvnas.compress.strip`: a network as standard Keras layers.

The strip tests that read tests/models/test_network.py's module network
(inference parity on every op type, the pruned zeros kept) stay there, with
the fixture.
"""

import re

import keras
import numpy as np
import pytest

from tests.helpers.networks import network_images, scramble, small_network
from tfvnas.compress import strip as strip_lib


@pytest.fixture(scope="module")
def images():
    return network_images()


def test_strip_of_plain_weights(images):
    net = small_network(weight_vd=False)
    scramble(net, seed=3)
    stripped = strip_lib.strip(net)
    strip_lib.check_standard_layers(stripped)
    np.testing.assert_allclose(stripped(images).numpy(), net(images).numpy(), atol=1e-5, rtol=1e-5)


def test_strip_rejects_other_models():
    with pytest.raises(ValueError, match=re.escape("`network` must be a tfvnas.models.network.Network. Received: Sequential")):
        strip_lib.strip(keras.Sequential([keras.layers.Dense(2)]))
