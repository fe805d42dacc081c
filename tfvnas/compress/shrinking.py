"""Dead-channel elimination and constant folding: a smaller model with the same logits.

`shrink(model)` takes a functional model of standard Keras layers (what
`tfvnas.compress.strip.strip` builds) and returns a model that computes the same
logits, up to float rounding, with every channel that computes nothing
removed and every channel that computes a constant folded into the next
layer's bias. Which channels stay is decided by `tfvnas.compress.channel_plan` (dead
and constant channels, how channels are tied through sums and
concatenations, where a selection pays); this module builds the new model.

**Folding.** A convolution or dense layer that reads a constant channel it
no longer receives adds the constant times its weights to its bias (the
stripped convolutions have none: they get one, `use_bias=True`). Only 1x1
kernels (and kxk kernels whose only non-zero tap is the centre, or 'valid'
padding) fold: a kxk 'same' kernel would see the zero padding at the
borders, so such a channel is kept and computed.

**Offsets.** An `Add` input that is constant on every channel (an edge
whose ops died) leaves the sum; the sum is then the kept tensor plus a known
vector, its offset. Offsets pass through `Add`, `Concatenate`, pooling
(max, and average excluding padding), cropping, global pooling and
rescaling; a 1x1 convolution, a dense layer or a batch normalisation after
them absorbs them (bias, or moving mean). Before any other layer (ReLU, zero
padding, a kxk convolution, the logits) the offset is added inside the layer
that computes the tensor (a batch normalisation's beta, a convolution's
bias), through pooling, sums and concatenations when nothing else reads the
tensors in between; where there is no such layer, a
`Rescaling(1, offset=...)` named `<tensor>_offset` adds it.

**Selections.** A channel-wise layer that reads only some channels of a
tensor other layers read too gets them from a 1x1 `Conv2D` with a 0/1
kernel, `<layer>_select` (exact: each output is one input times 1, plus the
constant of a channel that is not there), where the plan found that this
lowers the MACs.

Layer names are kept, so per-layer reports, QAT's layer matching and the
zero-pattern checks see the same names; removed layers are gone.

Why a hand-written pass: Keras, TensorFlow Model Optimization and the
TFLite converter have no structured (channel) pruning of a trained
functional graph. The converter folds batch normalisation into the
preceding convolution but keeps every channel, and LiteRT densifies sparse
weights at load time, so a phone computes every zero: a sparse float file
can only be faster than the dense one through its smaller size, never
through fewer operations.
"""

import dataclasses

import keras
import numpy as np

from tfvnas.compress import channel_plan
from tfvnas.compress import macs as macs_lib


def shrink(model, *, select=True, min_select_gain=channel_plan.MIN_SELECT_GAIN, name=None):
    """A smaller model computing the same logits: dead channels removed, constants folded.

    See the module docstring (and `tfvnas.compress.channel_plan`'s) for what is
    removed, and why the result is exact up to float rounding.

    Args:
        model: a functional Keras model with one input and one output, each
            layer called once (a stripped network, `tfvnas.compress.strip.strip`).
        select: allow `<layer>_select` 1x1 convolutions that pick the
            channels a channel-wise layer needs (False: none).
        min_select_gain: smallest share of the model's MACs a selection must
            save, net of its own MACs, to be added.
        name: the new model's name (default: the model's).

    Returns:
        A new `keras.Model` of standard layers; `model` is left unchanged.

    Raises:
        ValueError: if `model` is not such a model, `select` is not a bool
            or `min_select_gain` is not a number in [0, 1].
    """
    plan = channel_plan.plan_channels(model, select=select, min_select_gain=min_select_gain)
    return _Builder(plan).build(name or model.name)


@dataclasses.dataclass
class _Spec:
    """A layer of the new model before it exists: class, config, weights, input spec names."""

    cls: type
    config: dict
    weights: dict
    inputs: list


def _weight_list(spec):
    """The weights of a spec in the order its layer's `set_weights` takes them."""
    w, cfg = spec.weights, spec.config
    if spec.cls is keras.layers.BatchNormalization:
        names = (["gamma"] if cfg["scale"] else []) + (["beta"] if cfg["center"] else []) + \
            ["moving_mean", "moving_variance"]
    elif "kernel" in w:
        names = ["kernel"] + (["bias"] if cfg["use_bias"] else [])
    else:
        names = list(w)
    return [np.asarray(w[n], np.float32) for n in names]


class _Builder:
    """Makes the new layers in graph order, tracking each tensor's kept channels and offset."""

    def __init__(self, plan):
        self.graph, self.const, self.dropped, self.plan = plan.graph, plan.const, plan.dropped, plan
        self.kept = plan.kept
        self.specs = {}
        self.tensor = {}  # original tensor -> spec name of its kept channels
        self.offset = {}  # original tensor -> offset on its kept channels (value = tensor + offset)
        self.select_names = {}  # channel-wise layer -> the name of its selection

    def build(self, name):
        for node in self.graph.nodes.values():
            if not len(self.kept[node.name]):
                continue
            getattr(self, f"_{node.kind}")(node)
            self.offset.setdefault(node.name, np.zeros(len(self.kept[node.name])))
            if self.offset[node.name].any() and self._needs_exact(node.name):
                self._materialise(node.name)
        return self._instantiate(name)

    # -- offsets -------------------------------------------------------------

    def _readers(self, tensor):
        """The built layers that read `tensor` (a selection reads it for its layer)."""
        for consumer in self.graph.consumers[tensor]:
            node = self.graph.nodes[consumer]
            if not len(self.kept[consumer]):
                continue
            if node.kind == "add" and all(
                    i in self.dropped[consumer] for i, n in enumerate(node.inputs) if n == tensor):
                continue
            yield "select" if (tensor, consumer) in self.plan.selects else node.kind, node

    def _needs_exact(self, tensor):
        if tensor == self.graph.output:
            return True
        for kind, node in self._readers(tensor):
            if kind in ("relu", "pad", "opaque"):
                return True
            if kind in ("conv", "depthwise") and not node.keeps_constancy:
                return True
        return False

    def _materialise(self, tensor):
        rest = self._push(tensor, self.offset[tensor])
        if rest.any():
            name = self._unique(f"{tensor}_offset")
            self.specs[name] = _Spec(keras.layers.Rescaling, {"name": name, "scale": 1.0,
                                                              "offset": [float(v) for v in rest]},
                                     {}, [self.tensor[tensor]])
            self.tensor[tensor] = name
        self.offset[tensor] = np.zeros(len(self.kept[tensor]))

    def _push(self, tensor, delta):
        """Adds `delta` to the kept channels of `tensor` inside the layers computing it.

        Returns what could not be added (zeros when all of it was). A layer
        is changed only when nothing else reads what it computes.
        """
        node = self.graph.nodes[tensor]
        if node.kind in ("conv", "depthwise", "dense") or (node.kind == "batchnorm"):
            spec = self.specs[tensor]
            key = "beta" if node.kind == "batchnorm" else "bias"
            spec.weights[key] = spec.weights.get(key, 0.0) + delta
            spec.config["center" if node.kind == "batchnorm" else "use_bias"] = True
            return np.zeros_like(delta)
        if node.kind in ("linear", "pool", "crop", "gap", "rescale"):
            source = self.plan.source(node)
            if isinstance(source, tuple):  # a selection: a 1x1 convolution of its own
                spec = self.specs[self._select_name(node)]
                spec.weights["bias"] = spec.weights["bias"] + delta
                spec.config["use_bias"] = True
                return np.zeros_like(delta)
            if len(self.graph.consumers[source]) != 1:
                return delta
            if node.kind == "rescale":
                scale = node.per_channel(node.layer.scale)[self.kept[tensor]]
                if not np.all(scale != 0):
                    return delta
                return self._push(source, delta / scale) * scale
            return self._push(source, delta)
        if node.kind == "add":
            for i, source in enumerate(node.inputs):
                if i in self.dropped[tensor] or len(self.graph.consumers[source]) != 1:
                    continue
                rest = self._push(source, delta)
                if not rest.any():
                    return rest
            return delta
        if node.kind == "concat":
            rest, start = [], 0
            for source in node.inputs:
                part = delta[start : start + len(self.kept[source])]
                start += len(self.kept[source])
                if part.any() and len(self.graph.consumers[source]) == 1:
                    part = self._push(source, part)
                rest.append(part)
            return np.concatenate(rest) if rest else delta
        return delta

    # -- one method per kind ---------------------------------------------------

    def _input(self, node):
        self.specs[node.name] = _Spec(None, {"name": node.name, "shape": node.shape,
                                             "dtype": node.layer.output.dtype}, {}, [])
        self.tensor[node.name] = node.name

    def _copy(self, node, weights=None, config=None, source=None):
        cfg = dict(node.layer.get_config(), **(config or {}))
        inputs = [self.tensor[n] for n in node.inputs] if source is None else [source]
        self.specs[node.name] = _Spec(type(node.layer), cfg, weights or {}, inputs)
        self.tensor[node.name] = node.name

    def _opaque(self, node):
        # Its inputs carry no offset: `_needs_exact` added them when they were built.
        self._copy(node, weights={f"w{i}": w for i, w in enumerate(node.layer.get_weights())})

    def _source(self, node):
        """The spec a channel-wise layer reads: its input, or a new selection."""
        source = self.plan.source(node)
        if not isinstance(source, tuple):
            return self.tensor[source], self.offset[source]
        tensor = node.inputs[0]
        kept_in, kept_out = self.kept[tensor], self.kept[source]
        index = {c: i for i, c in enumerate(kept_in)}
        kernel = np.zeros((1, 1, len(kept_in), len(kept_out)))
        bias = np.zeros(len(kept_out))
        for k, c in enumerate(kept_out):
            if c in index:
                kernel[0, 0, index[c], k] = 1.0
                bias[k] = self.offset[tensor][index[c]]
            else:
                bias[k] = self.const[tensor][c]
        name = self._select_name(node)
        config = {"name": name, "filters": len(kept_out), "kernel_size": 1, "padding": "same",
                  "use_bias": bool(bias.any())}
        self.specs[name] = _Spec(keras.layers.Conv2D, config, {"kernel": kernel, "bias": bias},
                                 [self.tensor[tensor]])
        return name, np.zeros(len(kept_out))

    def _select_name(self, node):
        if node.name not in self.select_names:
            self.select_names[node.name] = self._unique(f"{node.name}_select")
        return self.select_names[node.name]

    def _conv(self, node):
        self._reader(node, "filters")

    def _dense(self, node):
        self._reader(node, "units")

    def _reader(self, node, size_key):
        source = node.inputs[0]
        kernel = node.weights()[0]
        kept_in, kept_out = self.kept[source], self.kept[node.name]
        bias = node.bias()[kept_out]
        taps = kernel if node.kind == "dense" else kernel.sum(axis=(0, 1))
        values = np.nan_to_num(self.const[source])
        values[kept_in] = self.offset[source]  # kept: only the offset is not in the tensor
        bias = bias + values @ taps[:, kept_out]
        kernel = kernel[..., kept_in, :][..., kept_out]
        config = {size_key: len(kept_out), "use_bias": bool(node.layer.use_bias or bias.any())}
        self._copy(node, {"kernel": kernel, "bias": bias}, config)

    def _depthwise(self, node):
        source, offset = self._source(node)
        kernel = node.weights()[0]
        channels, multiplier = kernel.shape[2:]
        kept_in = self.kept[self.plan.source(node)]
        bias = node.bias().reshape(channels, multiplier)[kept_in]
        kernel = kernel[:, :, kept_in, :]
        bias = bias + offset[:, None] * kernel.sum(axis=(0, 1))  # zero unless 1x1 (else added before)
        config = {"use_bias": bool(node.layer.use_bias or bias.any())}
        self._copy(node, {"kernel": kernel, "bias": bias.reshape(-1)}, config, source)

    def _batchnorm(self, node):
        source, offset = self._source(node)
        layer = node.layer
        values = dict(zip([w.name for w in layer.weights], node.weights()))
        kept = self.kept[node.name]
        weights = {k: v[kept] for k, v in values.items()}
        weights["moving_mean"] = weights["moving_mean"] - offset
        self._copy(node, weights, source=source)

    def _channelwise(self, node):
        source, offset = self._source(node)
        self._copy(node, source=source)
        self.offset[node.name] = offset if node.kind in ("linear", "pool", "crop", "gap") else \
            np.zeros(len(self.kept[node.name]))

    _relu = _linear = _pool = _pad = _crop = _gap = _channelwise

    def _rescale(self, node):
        source, offset = self._source(node)
        kept = self.kept[node.name]
        config = {}
        scale, shift = node.layer.scale, node.layer.offset
        if np.ndim(scale):
            config["scale"] = [float(s) for s in np.asarray(scale).reshape(-1)[kept]]
        if np.ndim(shift):
            config["offset"] = [float(s) for s in np.asarray(shift).reshape(-1)[kept]]
        self._copy(node, config=config, source=source)
        self.offset[node.name] = offset * node.per_channel(scale)[kept]

    def _add(self, node):
        kept = [n for i, n in enumerate(node.inputs) if i not in self.dropped[node.name]]
        offset = sum(self.offset[n] for n in kept)
        for i in self.dropped[node.name]:
            offset = offset + self.const[node.inputs[i]][self.kept[node.name]]
        if len(kept) == 1:
            self.tensor[node.name] = self.tensor[kept[0]]
        else:
            self.specs[node.name] = _Spec(keras.layers.Add, {"name": node.name}, {},
                                          [self.tensor[n] for n in kept])
            self.tensor[node.name] = node.name
        self.offset[node.name] = offset

    def _concat(self, node):
        kept = [n for n in node.inputs if len(self.kept[n])]
        if len(kept) == 1:
            self.tensor[node.name] = self.tensor[kept[0]]
        else:
            self.specs[node.name] = _Spec(keras.layers.Concatenate, node.layer.get_config(), {},
                                          [self.tensor[n] for n in kept])
            self.tensor[node.name] = node.name
        self.offset[node.name] = np.concatenate([self.offset[n] for n in kept])

    # -- the Keras model ---------------------------------------------------------

    def _unique(self, name):
        taken = set(self.specs) | set(self.graph.nodes)
        candidate, k = name, 1
        while candidate in taken:
            candidate, k = f"{name}_{k}", k + 1
        return candidate

    def _instantiate(self, name):
        tensors = {}
        for spec_name, spec in self.specs.items():
            if spec.cls is None:
                cfg = spec.config
                tensors[spec_name] = keras.Input(cfg["shape"], dtype=cfg["dtype"], name=cfg["name"])
                continue
            layer = spec.cls.from_config(spec.config)
            inputs = [tensors[n] for n in spec.inputs]
            tensors[spec_name] = layer(inputs if spec.cls in (keras.layers.Add, keras.layers.Concatenate)
                                       else inputs[0])
            weights = _weight_list(spec)
            if weights:
                layer.set_weights(weights)
        inputs = tensors[self.tensor[self.graph.input]]
        return keras.Model(inputs, tensors[self.tensor[self.graph.output]], name=name)


def shrink_summary(original, shrunk):
    """What `shrink` changed, from the two models: MACs, parameters, layers, channels.

    Args:
        original: the model given to `shrink`.
        shrunk: the model it returned.

    Returns:
        A dict: `macs` (`before`, `after`, `ratio` = before / after, per
        image, `tfvnas.compress.macs`); `parameters` (`before`, `after`: `dense` and
        `nonzero`, `tfvnas.compress.counting`); `layers` (`before`, `after` counts,
        `removed` and `added` names); `channels`, per layer type with
        channels (`Conv2D`, `DepthwiseConv2D`, `Dense`,
        `BatchNormalization`), the output channels of the original's layers
        `before` and of those left `after`; `biases_added`, the layers that
        gained a bias by folding.
    """
    from tfvnas.compress import counting

    macs = {key: macs_lib.count_macs(m)["total"] for key, m in (("before", original), ("after", shrunk))}
    params = {key: counting.count_parameters(m) for key, m in (("before", original), ("after", shrunk))}
    names = {key: [l.name for l in m.layers if not isinstance(l, keras.layers.InputLayer)]
             for key, m in (("before", original), ("after", shrunk))}
    left = {layer.name: layer for layer in shrunk.layers}
    channels = {}
    for layer in original.layers:
        kind = type(layer).__name__
        if kind not in ("Conv2D", "DepthwiseConv2D", "Dense", "BatchNormalization"):
            continue
        entry = channels.setdefault(kind, {"before": 0, "after": 0})
        entry["before"] += int(layer.output.shape[-1])
        if layer.name in left:
            entry["after"] += int(left[layer.name].output.shape[-1])
    biases = [
        layer.name for layer in original.layers
        if getattr(layer, "use_bias", None) is False and getattr(left.get(layer.name), "use_bias", False)
    ]
    return {
        "macs": {**macs, "ratio": macs["before"] / macs["after"] if macs["after"] else None},
        "parameters": {key: {"dense": p["dense"], "nonzero": p["nonzero"]} for key, p in params.items()},
        "layers": {
            "before": len(names["before"]),
            "after": len(names["after"]),
            "removed": [n for n in names["before"] if n not in left],
            "added": [n for n in names["after"] if n not in set(names["before"])],
        },
        "channels": channels,
        "biases_added": biases,
    }
