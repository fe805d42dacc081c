"""The Keras config round trip of a layer or model: its JSON config rebuilds it, with the same outputs."""

import json

import numpy as np


def assert_config_round_trip(obj, *inputs, atol=0.0, rtol=0.0):
    """Asserts that `obj` (a Keras layer or model) rebuilds from its config; returns the rebuilt object.

    `obj.get_config()` must be JSON text (`json.dumps`), and
    `type(obj).from_config` of what that text reads back (lists for tuples,
    as in a saved model) must give an object of `obj`'s type whose
    `get_config()` equals `obj.get_config()`.

    With `inputs`, the rebuilt object is built as Keras builds a loaded one
    (`build_from_config` of `obj`'s build config, or a call on `inputs` when
    `obj` has none), takes `obj`'s weights (`set_weights`), and its inference
    outputs (`training=False`) on `inputs` must equal `obj`'s within `atol`
    and `rtol` (both 0 by default: the same values).
    """
    config = obj.get_config()
    text = json.dumps(config)
    clone = type(obj).from_config(json.loads(text))
    assert type(clone) is type(obj)
    assert clone.get_config() == config
    if inputs:
        build_config = obj.get_build_config()
        if build_config:
            clone.build_from_config(build_config)
        else:
            clone(*inputs, training=False)
        clone.set_weights(obj.get_weights())
        got = np.asarray(clone(*inputs, training=False))
        want = np.asarray(obj(*inputs, training=False))
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    return clone
