"""Which channels of a stripped network compute something: the analysis behind `tfvnas.compress.shrinking`.

`plan_channels(model)` reads a functional model of standard Keras layers
(`model.get_config()`: layers in order, each call's inputs) and decides, per
tensor, which channels stay. `tfvnas.compress.shrinking.shrink` then builds the
smaller model from the plan.

**Constant channels** (`constant_channels`). A channel is constant when it
has the same value at every position for every input. A depthwise channel
with an all-zero kernel outputs 0; batch normalisation turns that 0 into its
shift; ReLU (also ReLU6) keeps it constant. The analysis is exact about where constancy
survives:

- A 1x1 convolution and a dense layer (also after global average pooling)
  of a constant is a constant.
- A kxk 'same' convolution or depthwise convolution pads with zeros: a
  non-zero constant into a non-zero kernel gives another value at the
  borders, so the output is not constant and the input channel must stay.
  (A kernel whose only non-zero tap is the centre, at stride 1, and
  'valid' padding keep constancy.)
- `ZeroPadding2D` of a non-zero constant is not constant (zeros at the
  padded edge); `Cropping2D`, max pooling and average pooling (which
  excludes padding) of a constant are that constant.
- `Add` of constants is a constant; of a live channel and a constant, live.
  An `Add` input that is constant on every channel (a dead edge) leaves the
  sum (`dropped_inputs`); the builder carries its value as an offset.

**Ties.** Layers that work channel by channel (batch normalisation,
activations, rescaling, pooling, depthwise convolutions, padding, cropping,
global pooling) tie each input channel to its output channel(s), `Add` ties
its inputs' channel c to its output's channel c, and `Concatenate` each input
channel to its place in the output. Tied channels stay or go together, so
channel indices stay consistent wherever tensors are summed or concatenated.

**What stays.** The logits, the model input and whatever an unknown layer
reads or writes stay; then, until nothing changes, a convolution or dense
layer keeps the input channels its kept outputs read through a non-zero
weight, unless that input is a constant it folds into its bias (1x1
kernels, or the cases above). A layer whose kept outputs read nothing keeps
one input channel (with zero weights): a layer needs an input.

**Selections.** Standard Keras has no channel gather, so a channel-wise
layer reads every kept channel of its input, also those only another reader
of that tensor needs: the first depthwise convolution of an edge reads every
kept channel of the cell state. A *selection*, a 1x1 `Conv2D` with a 0/1
kernel in front of that layer, lets it read only what it needs.
Selections are chosen greedily, one at a time, each when it lowers the
model's MACs (`tfvnas.compress.macs`, its own MACs included) by at least
`min_select_gain` of the unshrunk total.

**Opaque layers.** A layer of another kind, or with an option the analysis
does not model (an activation inside a convolution, groups, channels-first
data), keeps all its input and output channels.
"""

import dataclasses

import keras
import numpy as np

from tfvnas.compress import macs as macs_lib

# A selection is added only when it saves at least this share of the
# unshrunk model's MACs, net of its own: every selection is one more op for
# the interpreter, and on a small model a few ops cost more time than the
# MACs they save. The value was the fastest of those tried on the example
# export (docs/guide.md: the shrink measurements).
MIN_SELECT_GAIN = 0.005

CHANNELWISE = ("depthwise", "batchnorm", "relu", "linear", "rescale", "pool", "pad", "crop", "gap")
READERS = ("conv", "dense")
MAC_KINDS = {"conv": "Conv2D", "depthwise": "DepthwiseConv2D", "dense": "Dense"}


@dataclasses.dataclass
class Node:
    """One layer of the graph; its output tensor has the layer's name.

    Attributes:
        name: the layer's (and its output tensor's) name.
        kind: what the analysis knows about it (see `layer_kind`).
        layer: the Keras layer.
        inputs: the names of the tensors it reads, in call order.
        shape: its output shape without the batch axis.
    """

    name: str
    kind: str
    layer: object
    inputs: list
    shape: tuple

    @property
    def channels(self):
        return int(self.shape[-1])

    def weights(self):
        """The layer's weights as float64 arrays."""
        return [np.asarray(w, np.float64) for w in self.layer.get_weights()]

    def bias(self):
        """The bias of a convolution or dense layer (zeros without one)."""
        kernel = self.layer.kernel
        size = int(np.prod(kernel.shape[2:])) if self.kind == "depthwise" else int(kernel.shape[-1])
        return self.weights()[1] if self.layer.use_bias else np.zeros(size)

    def per_channel(self, value):
        """A scalar or per-channel value of the layer as one value per output channel."""
        return np.broadcast_to(np.asarray(value, np.float64), (self.channels,)).copy()

    @property
    def keeps_constancy(self):
        """A convolution whose output at every position reads no padding (1x1 or 'valid')."""
        return tuple(self.layer.kernel_size) == (1, 1) or self.layer.padding == "valid"


def layer_kind(layer, rank):
    """The analysis' kind of a layer: `input`, `conv`, `depthwise`, `dense`, `batchnorm`,
    `relu`, `linear`, `rescale`, `pool`, `pad`, `crop`, `gap`, `add`, `concat`, or `opaque`."""
    kind = type(layer)
    layers = keras.layers
    last_axis = lambda axis: axis in (-1, rank - 1)  # noqa: E731
    channels_last = getattr(layer, "data_format", "channels_last") == "channels_last"
    linear = getattr(layer, "activation", None) is keras.activations.linear
    plain = not getattr(layer, "lora_enabled", False)
    if kind is layers.InputLayer:
        return "input"
    if kind is layers.Conv2D and channels_last and linear and plain and layer.groups == 1:
        return "conv"
    if kind is layers.DepthwiseConv2D and channels_last and linear and plain:
        return "depthwise"
    if kind is layers.Dense and linear and plain:
        return "dense"
    if kind is layers.BatchNormalization and last_axis(layer.axis):
        return "batchnorm"
    if kind is layers.ReLU and not layer.negative_slope and not layer.threshold:
        return "relu"  # with or without `max_value` (ReLU6)
    if kind is layers.Activation and layer.activation is keras.activations.relu:
        return "relu"
    if (kind is layers.Activation and layer.activation is keras.activations.linear) or kind is layers.Identity:
        return "linear"
    if kind is layers.Rescaling:
        return "rescale"
    if kind in (layers.MaxPooling2D, layers.AveragePooling2D) and channels_last:
        return "pool"
    if kind is layers.ZeroPadding2D and channels_last:
        return "pad"
    if kind is layers.Cropping2D and channels_last:
        return "crop"
    if kind is layers.GlobalAveragePooling2D and channels_last:
        return "gap"
    if kind is layers.Add:
        return "add"
    if kind is layers.Concatenate and last_axis(layer.axis):
        return "concat"
    return "opaque"


def _tensor_names(value):
    """Producing-layer names of the Keras tensors in a serialized call argument."""
    if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
        history = value["config"]["keras_history"]
        if history[1] != 0 or history[2] != 0:
            raise ValueError(
                "`model` must call each layer once. "
                f"Received: a tensor from call {history[1]} of layer {history[0]!r}")
        return [history[0]]
    if isinstance(value, (list, tuple)):
        return [name for v in value for name in _tensor_names(v)]
    if isinstance(value, dict):
        return [name for v in value.values() for name in _tensor_names(v)]
    return []


def _endpoint(spec):
    return spec[0][0] if isinstance(spec[0], list) else spec[0]


class Graph:
    """The functional graph of a model: one `Node` per layer, in order.

    Attributes:
        nodes: `{name: Node}` in topological order.
        input, output: the names of the input and output tensors.
        consumers: `{name: [names of the layers reading it]}`.

    Raises:
        ValueError: if `model` is not a functional model with one input and
            one output whose layers are each called once.
    """

    def __init__(self, model):
        if not isinstance(model, keras.Model) or not getattr(model, "inputs", None):
            raise ValueError(f"`model` must be a functional Keras model. Received: model={model!r}")
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ValueError(
                "`model` must have one input and one output. Received: "
                f"{len(model.inputs)} inputs, {len(model.outputs)} outputs")
        config = model.get_config()
        self.nodes = {}
        for spec in config["layers"]:
            name = spec["name"]
            if len(spec["inbound_nodes"]) > 1:
                raise ValueError(
                    f"`model` must call each layer once. Received: layer {name!r} is called "
                    f"{len(spec['inbound_nodes'])} times")
            layer = model.get_layer(name)
            inputs = [n for node in spec["inbound_nodes"] for n in _tensor_names(node)]
            shape = tuple(int(d) for d in layer.output.shape[1:])
            self.nodes[name] = Node(name, layer_kind(layer, len(shape) + 1), layer, inputs, shape)
        self.input = _endpoint(config["input_layers"])
        self.output = _endpoint(config["output_layers"])
        self.consumers = {name: [] for name in self.nodes}
        for node in self.nodes.values():
            for name in node.inputs:
                self.consumers[name].append(node.name)


def batch_norm_affine(layer):
    """`(a, b)` with `BatchNormalization(x) = a * x + b` at inference, float64."""
    values = {w.name: np.asarray(w.numpy(), np.float64) for w in layer.weights}
    channels = len(values["moving_mean"])
    gamma = values.get("gamma", np.ones(channels))
    beta = values.get("beta", np.zeros(channels))
    a = gamma / np.sqrt(values["moving_variance"] + layer.epsilon)
    return a, beta - values["moving_mean"] * a


def _foldable(node, kernel):
    """`(in, out)` bool: a constant input channel gives a constant output channel exactly.

    True for 1x1 kernels and 'valid' padding; at stride 1, where the only
    non-zero tap is the centre (it never reads padding); else False.
    """
    kh, kw = kernel.shape[:2]
    if node.keeps_constancy:
        return np.ones(kernel.shape[2:], bool)
    if tuple(node.layer.strides) != (1, 1) or kh % 2 == 0 or kw % 2 == 0:
        return np.zeros(kernel.shape[2:], bool)
    off_centre = kernel.copy()
    off_centre[kh // 2, kw // 2] = 0
    return ~np.any(off_centre != 0, axis=(0, 1))


def _needed(node, kernel, v):
    """`(in, out)` bool: output j needs input i (a non-zero weight, and not a foldable constant)."""
    live = np.isnan(v)
    if node.kind == "dense":
        return (kernel != 0) & live[:, None]
    nonzero = np.any(kernel != 0, axis=(0, 1))
    return nonzero & (live[:, None] | ((np.nan_to_num(v) != 0)[:, None] & ~_foldable(node, kernel)))


def _kernel_constant(node, v):
    kernel, *_ = node.weights()
    values = np.nan_to_num(v)
    live = np.any(_needed(node, kernel, v), axis=0)
    if node.kind == "dense":
        value = values @ kernel
    elif node.kind == "conv":
        value = values @ kernel.sum(axis=(0, 1))
    else:
        value = (values[:, None] * kernel.sum(axis=(0, 1))).reshape(-1)
        live = _needed(node, kernel, v).reshape(-1)
    return np.where(live, np.nan, value + node.bias())


def constant_channels(graph):
    """`{tensor: values}`: each channel's value where it is constant, NaN where it varies."""
    const = {}
    for node in graph.nodes.values():
        ins = [const[n] for n in node.inputs]
        kind = node.kind
        if kind in ("input", "opaque"):
            value = np.full(node.channels, np.nan)
        elif kind in ("conv", "depthwise", "dense"):
            value = _kernel_constant(node, ins[0])
        elif kind == "batchnorm":
            a, b = batch_norm_affine(node.layer)
            value = ins[0] * a + b
        elif kind == "relu":
            value = np.maximum(ins[0], 0.0)  # NaN stays NaN
            if getattr(node.layer, "max_value", None) is not None:
                value = np.minimum(value, float(node.layer.max_value))
        elif kind in ("linear", "pool", "crop", "gap"):
            value = ins[0].copy()
        elif kind == "rescale":
            scale, offset = node.per_channel(node.layer.scale), node.per_channel(node.layer.offset)
            value = np.where(scale == 0, offset, ins[0] * scale + offset)
        elif kind == "pad":
            value = np.where(ins[0] == 0, 0.0, np.nan)
        elif kind == "add":
            value = np.sum(ins, axis=0)
        else:  # concat
            value = np.concatenate(ins)
        const[node.name] = value
    return const


def dropped_inputs(graph, const):
    """`{add layer: positions}`: the `Add` inputs constant on every channel, left out of the sum.

    An `Add` of constants only keeps its first input, to compute it from.
    """
    dropped = {}
    for node in graph.nodes.values():
        if node.kind == "add":
            positions = {i for i, n in enumerate(node.inputs) if not np.isnan(const[n]).any()}
            if len(positions) == len(node.inputs):
                positions.discard(0)
            dropped[node.name] = positions
    return dropped


@dataclasses.dataclass
class _Ties:
    """Tied channels as `(input, layer, input channels, output channels)` links, and fixed facts."""

    sizes: dict
    links: list
    always: list
    readers: list

    @classmethod
    def of(cls, graph, const, dropped):
        links = []
        for node in graph.nodes.values():
            if node.kind in CHANNELWISE:
                c = graph.nodes[node.inputs[0]].channels
                m = node.layer.depth_multiplier if node.kind == "depthwise" else 1
                links.append((node.inputs[0], node.name, np.repeat(np.arange(c), m), np.arange(c * m)))
            elif node.kind == "add":
                for i, name in enumerate(node.inputs):
                    if i not in dropped[node.name]:
                        links.append((name, node.name, np.arange(node.channels), np.arange(node.channels)))
            elif node.kind == "concat":
                start = 0
                for name in node.inputs:
                    c = graph.nodes[name].channels
                    links.append((name, node.name, np.arange(c), start + np.arange(c)))
                    start += c
        always = [graph.input, graph.output]
        for node in graph.nodes.values():
            if node.kind == "opaque":
                always += [node.name, *node.inputs]
        readers = [
            (node.name, node.inputs[0], _needed(node, node.weights()[0], const[node.inputs[0]]))
            for node in graph.nodes.values() if node.kind in READERS
        ]
        sizes = {name: node.channels for name, node in graph.nodes.items()}
        return cls(sizes, links, always, readers)


class Plan:
    """Which channels of every tensor stay, with a given set of selections.

    Attributes:
        graph, const, dropped: the `Graph`, `constant_channels` and
            `dropped_inputs` it was made from.
        selects: frozenset of `(tensor, layer)`: the channel-wise layers
            that read a selection of `tensor` instead of all of it.
        kept: `{tensor: sorted channel indices}`, also for each selection
            (key `(tensor, layer)`).
    """

    def __init__(self, graph, const, dropped, ties, selects=()):
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        self.graph, self.const, self.dropped = graph, const, dropped
        self.selects = frozenset(selects)
        sizes = dict(ties.sizes)
        for tensor, consumer in self.selects:
            sizes[(tensor, consumer)] = sizes[tensor]
        base, total = {}, 0
        for key, size in sizes.items():
            base[key] = total
            total += size
        rows, cols = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for source, layer, src, dst in ties.links:
            if (source, layer) in self.selects:
                source = (source, layer)
            rows.append(base[source] + src)
            cols.append(base[layer] + dst)
        rows, cols = np.concatenate(rows), np.concatenate(cols)
        links = coo_matrix((np.ones(len(rows), bool), (rows, cols)), shape=(total, total))
        _, labels = connected_components(links, directed=False)
        roots = {key: labels[base[key] : base[key] + size] for key, size in sizes.items()}
        kept = np.zeros(total, bool)
        for key in ties.always:
            kept[roots[key]] = True
        readers = ties.readers + [((t, c), t, np.diag(np.isnan(const[t]))) for t, c in self.selects]
        _keep_what_is_read(kept, roots, readers)
        self.kept = {key: np.flatnonzero(kept[r]) for key, r in roots.items()}

    def source(self, node):
        """What a channel-wise layer reads: its input's name, or the key of its selection."""
        key = (node.inputs[0], node.name)
        return key if key in self.selects else node.inputs[0]

    def macs(self):
        """MACs per image of the planned model (`tfvnas.compress.macs`), selections included."""
        total = 0
        for node in self.graph.nodes.values():
            out = len(self.kept[node.name])
            if not out or node.kind not in MAC_KINDS:
                continue
            kernel = tuple(node.layer.kernel.shape)
            if node.kind == "depthwise":
                kernel = kernel[:2] + (out,)
            else:
                kernel = kernel[:-2] + (len(self.kept[node.inputs[0]]), out)
            total += macs_lib.kernel_macs(MAC_KINDS[node.kind], node.shape[:-1] + (out,), kernel)
        for tensor, consumer in self.selects:
            out = len(self.kept[(tensor, consumer)])
            if out:
                shape = self.graph.nodes[tensor].shape[:-1] + (out,)
                total += macs_lib.kernel_macs("Conv2D", shape, (1, 1, len(self.kept[tensor]), out))
        return total


def _keep_what_is_read(kept, roots, readers):
    """Marks, until nothing changes, the inputs the kept outputs of every reader need."""
    changed = True
    while changed:
        changed = False
        for out, source, matrix in reversed(readers):
            outputs = kept[roots[out]]
            if not outputs.any():
                continue
            need = np.any(matrix[:, outputs], axis=1)
            if not need.any():  # a layer needs an input: a kept one if there is one
                present = np.flatnonzero(kept[roots[source]])
                need[present[0] if len(present) else 0] = True
            new = need & ~kept[roots[source]]
            if new.any():
                kept[roots[source][new]] = True
                changed = True


def plan_channels(model, *, select=True, min_select_gain=MIN_SELECT_GAIN):
    """The `Plan` of `model`: which channels stay, and the selections chosen.

    Args:
        model: a functional Keras model, one input, one output, each layer
            called once.
        select: allow selections (see the module docstring).
        min_select_gain: smallest share of the model's MACs a selection must
            save, net of its own MACs.

    Returns:
        A `Plan`.

    Raises:
        ValueError: if `model` is not such a model or `min_select_gain` is
            not a number in [0, 1].
    """
    if isinstance(min_select_gain, bool) or not isinstance(min_select_gain, (int, float)) \
            or not 0 <= min_select_gain <= 1:
        raise ValueError(
            f"`min_select_gain` must be a number in [0, 1]. Received: min_select_gain={min_select_gain!r}")
    if not isinstance(select, bool):
        raise ValueError(f"`select` must be a bool. Received: select={select!r}")
    graph = Graph(model)
    const = constant_channels(graph)
    dropped = dropped_inputs(graph, const)
    ties = _Ties.of(graph, const, dropped)
    best = Plan(graph, const, dropped, ties)
    if not select:
        return best
    min_gain = min_select_gain * macs_lib.count_macs(model)["total"]
    candidates = [
        (node.inputs[0], node.name) for node in graph.nodes.values()
        if node.kind in CHANNELWISE and len(node.shape) == 3 and len(graph.consumers[node.inputs[0]]) > 1
    ]
    best_macs = best.macs()
    while True:
        trials = []
        for candidate in candidates:
            if candidate not in best.selects:
                plan = Plan(graph, const, dropped, ties, best.selects | {candidate})
                trials.append((plan.macs(), plan))
        if not trials:
            return best
        macs, plan = min(trials, key=lambda t: t[0])
        if best_macs - macs < min_gain:
            return best
        best, best_macs = plan, macs
