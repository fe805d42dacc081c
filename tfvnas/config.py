"""Frozen configuration dataclasses with JSON/YAML round trip and presets."""

import dataclasses
import json
import math
import os
import typing

from tfvnas import choices, files
from tfvnas.layers import registry as op_registry


class _Config:
    """Shared `to_dict` / `from_dict` / file round trip with type validation."""

    def to_dict(self):
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data):
        if not isinstance(data, dict):
            raise ValueError(
                f"A {cls.__name__} must be a mapping of field names to values. "
                f"Received: {type(data).__name__}"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names, key=str)
        if unknown:
            shown = (k if isinstance(k, str) and k.isidentifier() else repr(k) for k in unknown)
            raise ValueError(
                f"Unknown {cls.__name__} field(s): {', '.join(shown)}. "
                f"Known fields: {', '.join(sorted(names))}"
            )
        return cls(**data)

    def replace(self, **changes):
        """A copy with `changes` applied. None is a value like any other (`resolution=None`: full size)."""
        return self.from_dict({**self.to_dict(), **changes})

    def override(self, **given):
        """A copy with the `given` values that are not None applied: None means "not given".

        For arguments and command-line flags whose default None leaves the
        config's value alone; `replace` sets a field to None.
        """
        return self.replace(**{k: v for k, v in given.items() if v is not None})

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def save(self, path):
        files.atomic_write(path, self.to_json() + "\n")

    @classmethod
    def load(cls, path):
        """Reads a JSON or YAML (`.yaml`/`.yml`) file of fields (a partial one is fine)."""
        return cls.from_dict(read_config_file(path))

    def __post_init__(self):
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            value = _coerce(f.name, value, hints[f.name])
            object.__setattr__(self, f.name, value)
        self.validate()

    def validate(self):
        """Subclasses check value ranges here."""


def _plain(value):
    if isinstance(value, tuple):
        return list(value)
    return value


def _coerce(name, value, hint):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"`{name}` must be a bool. Received: {name}={value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"`{name}` must be an int. Received: {name}={value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"`{name}` must be a finite number. Received: {name}={value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"`{name}` must be a string. Received: {name}={value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ValueError(f"`{name}` must be a list. Received: {name}={value!r}")
        return tuple(_coerce(name, v, args[0]) for v in value)
    return value


def _positive(name, value):
    if value <= 0:
        raise ValueError(f"`{name}` must be positive. Received: {name}={value!r}")


def _non_negative(name, value):
    if value < 0:
        raise ValueError(f"`{name}` must be non-negative. Received: {name}={value!r}")


def _one_of(name, value, allowed):
    if value not in allowed:
        raise ValueError(
            f"`{name}` must be one of {', '.join(repr(a) for a in allowed)}. "
            f"Received: {name}={value!r}"
        )


@dataclasses.dataclass(frozen=True)
class SearchConfig(_Config):
    """Everything a search needs besides the data.

    Attributes:
        layers, channels, nodes, stem_multiplier: supernet size.
        op_set: named operation set (`tfvnas.layers.registry.OP_SETS`); `ops` overrides it.
        weight_vd: sparse variational convolution weights during search.
        epochs, batch_size: the global batch size, split over replicas.
        optimization: 'bilevel' (first-order, weights and gates on two halves
            of the training data, alternating) or 'joint' (all data, both at once).
        weight_lr, weight_lr_min, momentum, weight_decay: SGD with cosine decay.
        decay_variational_means: weight decay also on the means (`theta`) of
            variational weights (never on their `log_sigma2`).
        arch_lr, arch_beta1, arch_weight_decay: Adam for the gates (weight
            decay as an L2 term on the gradient, as in DARTS). None: the
            method's own (`ARCH_OPTIMIZERS`; DARTS: 3e-4, 0.5, 1e-3).
        arch_lr_anneal: the share of the search, at its end, over which the
            gates' learning rate falls along a cosine to zero (0: constant
            throughout). Adam moves every gate by about its learning rate at
            every step, so near-tied gates keep swapping places until the
            rate falls; the `top_k` genotype settles as it does.
        arch_warmup: epochs at the start of a bi-level search that train the
            weights only: the gates keep their initial values and nothing is
            pruned, so the parameterised ops have trained weights before their
            gates are judged (PC-DARTS and DrNAS warm up for 15 of 50 epochs).
            The KL warm-up (`kl_warmup`) still counts from the first step.
        skip_dropout: during the search, every example drops each stride-1
            `skip_connect` as a whole with this probability (kept ones are
            scaled by 1 / (1 - rate)); the operation-level dropout with which
            P-DARTS counters the drift toward parameter-free cells. 0: none.
            Not used by the training of the found cell.
        skip_bn: the supernet's stride-1 `skip_connect` ends in a
            parameter-free batch norm like every other candidate, so that its
            gate is judged on what it is worth, not on the energy of the
            state it passes on (docs/search.md). On by default for VINNAS;
            `method='darts'` runs DARTS' plain identity unless it is chosen.
        aux_skip: DARTS-' auxiliary skip connection (Chu et al., 2021):
            every stride-1 edge of the supernet adds its input times a weight
            that falls linearly from this value to 0 over the search; 0: none.
        selection: how the result's cell is chosen: 'gates' (the `top_k` rule
            on the gates' `log_alpha`) or 'perturbation' (Wang et al., 2021:
            on every edge the op whose masking costs the supernet the most
            validation accuracy, then per node the `top_k` edges whose
            masking costs the most; `tfvnas.loops.selection`), among the
            ops the gates kept. 'perturbation' by default for VINNAS (chosen
            on a validation split, docs/search.md); `method='darts'` keeps
            DARTS' own 'gates' unless it is chosen; the `smoke` preset uses
            'gates' to stay a matter of seconds.
        selection_images: the validation images perturbation selection
            measures accuracy on (the first ones of the split).
        arch_algorithm: the gates' optimiser: 'adam' or 'sgd' (with
            momentum `arch_beta1`).
        grad_clip: global gradient-norm clip for the weights.
        kl_warmup: fraction of the search over which beta goes from 0 to `kl_weight`.
        kl_weight: beta, the weight of the KL in the ELBO after the warm-up
            (the objective is cross-entropy + beta * KL / N_train; the
            models' variable `kl_scale` holds beta / N_train).
        threshold: a gate is pruned when its `log_alpha` is at or above this
            at `prune_patience` consecutive checks, one every `prune_every`
            steps (and one at the end of every epoch).
        prune_every, prune_patience: see `threshold`.
        gate_theta_init: initial gate mean, the same whatever the op set.
        gate_log_alpha_init: initial gate log dropout rate.
        gate_parameterisation: 'positive' (theta = exp(log_theta), and
            log_sigma2) or 'log_alpha' (theta and log_alpha); see
            `tfvnas.layers.gates`.
        gate_average_decay: the derivation (the `top_k` genotype of every
            epoch and the result) reads an exponential moving average of each
            active gate's `log_alpha`, updated at every pruning check with
            this decay (0: the current values). Adam moves every gate by
            about its learning rate at every step, so gates of similar
            strength swap places from step to step; the average is where
            they settle. Pruning reads the current values.
        stop_when_stable: stop once the `top_k` genotype has not changed for
            this many epochs (0: run every epoch).
        stop_when_settled: stop once pruning has decided every node (each
            at `top_k` live edges with one op each; the per-node floor keeps
            them): nothing is left to search.
        resolution: search on images resized to `resolution` x
            `resolution` (area interpolation; a proxy, as lower resolution is
            the field's standard one); None: the data's own size.
        top_k: inputs per node of the `top_k` genotype.
        seed: seed of initialisation, data order and noise.
        limit: use only the first `limit` training examples (None: all).
        sync_bn: batch-norm statistics over the global batch (all replicas)
            instead of each replica's share.
        method: 'vinnas' (Gaussian ARD gates) or 'darts' (the DARTS baseline:
            softmax mixing, no noise, no KL, no pruning; use it with the
            `darts_none` op set, as DARTS does).
        shared_edge_functions: every edge with the same plan and input shape
            calls one traced, non-inlined function (a small graph, a fast
            first step), or, False, every edge is traced inline (a large
            graph and a slow first step, but no per-call cost in every step).
            Short searches, tuning trials and tests gain from sharing; a
            search of many hundred steps at small maps may not (the
            benchmarks measure both). Under `jit_compile` every edge is
            traced inline whatever this says (`edges_shared`): XLA compiles
            the variables a shared function takes as arguments into
            constants, so the step would compile anew at every call.
        fused_edges: compute each edge's candidates together where the op
            set allows (`tfvnas.layers.mixed_edge.edge_outputs`, the same
            result as op by op); False: op by op (a reference for tests and
            benchmarks).
        retrace_cost_steps: what re-tracing the step costs, in steps. Pruned
            ops leave the computation only when the step is traced anew; that
            happens at the end of an epoch when (share of the traced ops
            pruned since) x (steps left in the search) reaches this, so a
            short search does not spend its time re-tracing for a few pruned
            ops and a long one sheds them early. 0: at every pruning event.
        jit_compile: compile each update's forward and backward pass with
            XLA (`tfvnas.loops.loop.Loop.loss_and_gradients`; the
            optimizers' all-reduce and update stay outside). Off by default:
            on these CPUs it did not pay (docs/BENCHMARKS.md); a GPU is
            where it may.
        precision: Keras' dtype policy the supernet is built under:
            'float32', 'mixed_bfloat16' or 'mixed_float16' (the gates,
            `log_sigma2`, the KL and the loss stay float32; float16 scales
            the loss). For GPUs: `tfvnas.precision`.
    """

    layers: int = 5
    channels: int = 8
    nodes: int = 4
    stem_multiplier: int = 3
    op_set: str = op_registry.DEFAULT_OP_SET
    ops: typing.Optional[typing.Tuple[str, ...]] = None
    weight_vd: bool = False
    epochs: int = 10
    batch_size: int = 64
    optimization: str = "bilevel"
    weight_lr: float = 0.025
    weight_lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    decay_variational_means: bool = False
    arch_lr: typing.Optional[float] = None
    arch_beta1: typing.Optional[float] = None
    arch_weight_decay: typing.Optional[float] = None
    arch_lr_anneal: float = 0.0
    arch_warmup: int = 0
    skip_dropout: float = 0.0
    skip_bn: bool = True
    aux_skip: float = 0.0
    selection: str = "perturbation"
    selection_images: int = 1000
    arch_algorithm: str = "adam"
    grad_clip: float = 5.0
    kl_warmup: float = 0.3
    kl_weight: float = 1.0
    threshold: float = 3.0
    prune_every: int = 10
    prune_patience: int = 3
    gate_theta_init: float = 1.0
    gate_log_alpha_init: float = -3.0
    gate_parameterisation: str = "positive"
    gate_average_decay: float = 0.9
    stop_when_stable: int = 0
    stop_when_settled: bool = True
    resolution: typing.Optional[int] = None
    top_k: int = 2
    seed: int = 0
    limit: typing.Optional[int] = None
    method: str = "vinnas"
    sync_bn: bool = False
    retrace_cost_steps: int = 100
    shared_edge_functions: bool = True
    fused_edges: bool = True
    jit_compile: bool = False
    precision: str = "float32"

    def validate(self):
        _one_of("precision", self.precision, choices.PRECISIONS)
        _non_negative("retrace_cost_steps", self.retrace_cost_steps)
        for name in ("layers", "channels", "nodes", "stem_multiplier", "epochs", "batch_size", "top_k",
                     "prune_every", "prune_patience", "selection_images"):
            _positive(name, getattr(self, name))
        for name in ("weight_lr", "grad_clip", "gate_theta_init"):
            _positive(name, getattr(self, name))
        for name in ("weight_lr_min", "momentum", "weight_decay", "kl_weight", "stop_when_stable"):
            _non_negative(name, getattr(self, name))
        for name in ("arch_lr", "arch_beta1", "arch_weight_decay", "resolution"):
            if getattr(self, name) is not None:
                (_non_negative if name == "arch_weight_decay" else _positive)(name, getattr(self, name))
        if self.arch_beta1 is not None and not self.arch_beta1 < 1:
            raise ValueError(f"`arch_beta1` must be below 1. Received: arch_beta1={self.arch_beta1!r}")
        if not 0 <= self.arch_lr_anneal <= 1:
            raise ValueError(f"`arch_lr_anneal` must be in [0, 1]. Received: arch_lr_anneal={self.arch_lr_anneal!r}")
        if not (isinstance(self.arch_warmup, int) and 0 <= self.arch_warmup < self.epochs):
            raise ValueError(f"`arch_warmup` must be a whole number of epochs from 0 to epochs - 1 ({self.epochs - 1}). "
                             f"Received: arch_warmup={self.arch_warmup!r}")
        if self.arch_warmup and self.optimization != "bilevel":
            raise ValueError("`arch_warmup` needs optimization='bilevel' (a joint search updates the gates and the "
                             f"weights in one step). Received: arch_warmup={self.arch_warmup!r}, "
                             f"optimization={self.optimization!r}")
        if not 0 <= self.kl_warmup <= 1:
            raise ValueError(f"`kl_warmup` must be in [0, 1]. Received: kl_warmup={self.kl_warmup!r}")
        if not 0 <= self.skip_dropout < 1:
            raise ValueError(f"`skip_dropout` must be a rate in [0, 1). Received: skip_dropout={self.skip_dropout!r}")
        if self.limit is not None:
            _positive("limit", self.limit)
        _one_of("optimization", self.optimization, ("bilevel", "joint"))
        _one_of("selection", self.selection, ("gates", "perturbation"))
        _one_of("arch_algorithm", self.arch_algorithm, ("adam", "sgd"))
        _non_negative("aux_skip", self.aux_skip)
        _one_of("method", self.method, choices.METHODS)
        _one_of("gate_parameterisation", self.gate_parameterisation, ("positive", "log_alpha"))
        if not 0 <= self.gate_average_decay < 1:
            raise ValueError(
                f"`gate_average_decay` must be in [0, 1). Received: gate_average_decay={self.gate_average_decay!r}")
        op_registry.resolve_op_set(self.op_set, self.ops)

    @property
    def op_names(self):
        return op_registry.resolve_op_set(self.op_set, self.ops)

    @property
    def edges_shared(self):
        """Whether the supernet's edges call shared traced functions: `shared_edge_functions`, off under
        `jit_compile` (see that field)."""
        return self.shared_edge_functions and not self.jit_compile

    @property
    def arch_optimizer(self):
        """`{"lr", "beta_1", "weight_decay"}` of the gates' Adam: the fields, or the method's own."""
        own = ARCH_OPTIMIZERS[self.method]
        return {
            "lr": own["lr"] if self.arch_lr is None else self.arch_lr,
            "beta_1": own["beta_1"] if self.arch_beta1 is None else self.arch_beta1,
            "weight_decay": own["weight_decay"] if self.arch_weight_decay is None else self.arch_weight_decay,
        }


# Each method's architecture optimiser (Adam, beta_2 = 0.999), used where a
# SearchConfig leaves `arch_lr`, `arch_beta1`, `arch_weight_decay` unset.
ARCH_OPTIMIZERS = {
    # From the study in docs/search.md (validation split of mnist-5k).
    "vinnas": {"lr": 0.3, "beta_1": 0.5, "weight_decay": 0.0},
    # DARTS' own (Liu et al., 2019): Adam 3e-4, betas (0.5, 0.999), weight decay 1e-3.
    "darts": {"lr": 3e-4, "beta_1": 0.5, "weight_decay": 1e-3},
}


PRESETS = {
    # Seconds: for tests and a first look; tiny supernet, little data.
    "smoke": SearchConfig(
        layers=3, channels=4, nodes=2, epochs=2, batch_size=32, limit=256, kl_warmup=0.0,
        prune_every=2, prune_patience=1, gate_log_alpha_init=2.9, selection="gates",
    ),
    # Minutes on a 2-core CPU: the newcomer's default on the bundled data. A
    # proxy (14x14 images, 1,600 training images) given the updates a search
    # needs to converge (300: 6 epochs of 50 joint steps of batch 32, one
    # forward and backward pass each, half the passes of 12 bi-level epochs);
    # docs/search.md has the study behind every field and the budget.
    "quick": SearchConfig(
        layers=4, channels=8, nodes=4, epochs=6, batch_size=32, limit=1600, resolution=14, optimization="joint",
        kl_warmup=0.2, kl_weight=16.0, gate_log_alpha_init=-1.0,
    ),
    # The DARTS-scale setting (meant for a GPU).
    "paper": SearchConfig(layers=8, channels=16, nodes=4, epochs=50, batch_size=64),
}


def preset(name):
    """The `SearchConfig` of a named preset."""
    return _preset(PRESETS, name)


def settle(config_class, *, preset="quick", config=None, out_dir=None, resume=False, **overrides):
    """The configuration a search or a training runs with: the one place a run's settings are decided.

    The preset, then `config`, then `overrides` (`resolve`); for a search
    with `method='darts'`, DARTS' own settings where they were not chosen:
    its op set with `none` (`darts_none`), the plain identity, the gates'
    cell, and the first-order bi-level optimisation: a preset's joint search
    becomes bi-level with twice its epochs (unless they were chosen), since a
    bi-level epoch has half the steps, so the gate updates stay the same.
    With `resume`, the configuration the run in
    `out_dir` saved with its latest checkpoint, which any `config` or
    override given must resolve to.

    Args:
        config_class: `SearchConfig` or `TrainConfig`.
        preset: a preset name of the class's table (`PRESETS`, `TRAIN_PRESETS`).
        config: a config object, a dict of fields, or a JSON/YAML path.
        out_dir: the run's output folder (read with `resume`).
        resume: continue the run saved in `out_dir`.
        **overrides: fields; None means not given.

    Raises:
        ValueError: an unknown preset or field, a bad value, no checkpoint to
            resume, or a configuration that differs from the saved one.
    """
    from tfvnas import runs

    if config_class not in (SearchConfig, TrainConfig):
        raise ValueError(f"`config_class` must be SearchConfig or TrainConfig. Received: {config_class!r}")
    search = config_class is SearchConfig
    table, kind = (PRESETS, "search") if search else (TRAIN_PRESETS, "training")

    def requested():
        cfg = resolve(config_class, table, preset, config, **overrides)
        if search and cfg.method == "darts":  # DARTS' own defaults, unless chosen
            if not _chooses(config, overrides, ("op_set", "ops")):
                cfg = cfg.replace(op_set="darts_none")
            if not _chooses(config, overrides, ("skip_bn",)):
                cfg = cfg.replace(skip_bn=False)
            if not _chooses(config, overrides, ("selection",)):
                cfg = cfg.replace(selection="gates")
            if cfg.optimization == "joint" and not _chooses(config, overrides, ("optimization",)):
                cfg = cfg.replace(optimization="bilevel")
                if not _chooses(config, overrides, ("epochs",)):
                    cfg = cfg.replace(epochs=2 * cfg.epochs)
        return cfg

    if not resume:
        return requested()
    saved = runs.saved_config(out_dir, config_class, kind)
    if config is not None or any(v is not None for v in overrides.values()):
        runs.check_resume_config(saved, requested(), os.path.join(os.fspath(out_dir), runs.CHECKPOINT_SUBDIR))
    return saved


def _chooses(config, overrides, names):
    """Whether a config (object, dict or file) or the overrides choose any of the fields `names`."""
    if isinstance(config, _Config):  # an object carries every field: it chooses where it departs from the default
        defaults = {f.name: f.default for f in dataclasses.fields(config)}
        return any(getattr(config, n) != defaults[n] for n in names)
    fields = {} if config is None else config if isinstance(config, dict) else read_config_file(config)
    given = {k for k, v in overrides.items() if v is not None}
    return bool(set(names) & (set(fields) | given))


def resolve(config_class, table, preset="quick", config=None, **overrides):
    """Preset `preset` of `table`, then a config (object, dict or file path), then overrides.

    An override left None is not given (the config's value stays); a None in
    `config` is a value (`{"resolution": None}` searches at full size).
    """
    cfg = _preset(table, preset)
    if config is not None and not isinstance(config, (config_class, dict, str, os.PathLike)):
        raise ValueError(f"`config` must be a {config_class.__name__}, a dict of its fields, a JSON or YAML file path "
                         f"or None. Received: config={config!r}")
    if config is not None:
        if isinstance(config, config_class):
            cfg = config
        else:
            fields = config if isinstance(config, dict) else read_config_file(config)
            cfg = config_class.from_dict({**cfg.to_dict(), **fields})
    return cfg.override(**overrides)


def _preset(table, name):
    if not isinstance(name, str) or name not in table:
        raise ValueError(
            f"Unknown preset {name!r}. Known presets: {', '.join(table)}"
        )
    return table[name]


@dataclasses.dataclass(frozen=True)
class TrainConfig(_Config):
    """Training of the network a genotype describes, from scratch.

    Attributes:
        layers, channels, stem_multiplier: network size (cells, initial channels).
        weight_vd: sparse variational weights (the default: the network is
            trained sparse); False trains plain weights.
        auxiliary: auxiliary classifier head after the second reduction.
        auxiliary_weight: weight of its loss.
        drop_path: probability of dropping a cell edge (ramped up linearly
            over training, as in DARTS).
        cutout: side of the square cut out of each training image (0: off).
        epochs, batch_size: the global batch size, split over replicas.
        lr, lr_min, momentum, weight_decay, grad_clip: SGD with cosine decay.
        decay_variational_means: weight decay also on the means (`theta`) of
            variational weights (never on their `log_sigma2`).
        kl_warmup, kl_weight: the KL schedule of the variational weights:
            beta warms up from 0 to `kl_weight` over the `kl_warmup` share of
            the steps (as `SearchConfig`'s).
        threshold: a weight is zero at `log_alpha >= threshold`.
        seed: seed of initialisation, data order and noise.
        limit: use only the first `limit` training examples (None: all).
        sync_bn: batch-norm statistics over the global batch (all replicas).
        channel_prior: a scale with its own ARD prior per output channel of
            every variational convolution, so whole channels are pruned in
            training and dead-channel elimination removes them
            (`tfvnas.layers.channel_prior`); needs `weight_vd`.
        channel_log_alpha_init, channel_scale_init: initial log dropout rate
            and mean of those scales.
        jit_compile: compile the step's forward and backward pass with XLA
            (as `SearchConfig.jit_compile`).
        precision: Keras' dtype policy the network is built under
            (as `SearchConfig.precision`); export is float32 whatever it is.
    """

    layers: int = 8
    channels: int = 16
    stem_multiplier: int = 3
    weight_vd: bool = True
    auxiliary: bool = False
    auxiliary_weight: float = 0.4
    drop_path: float = 0.0
    cutout: int = 0
    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.025
    lr_min: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 3e-4
    decay_variational_means: bool = False
    grad_clip: float = 5.0
    kl_warmup: float = 0.3
    kl_weight: float = 1.0
    threshold: float = 3.0
    seed: int = 0
    limit: typing.Optional[int] = None
    sync_bn: bool = False
    channel_prior: bool = False
    channel_log_alpha_init: float = -4.0
    channel_scale_init: float = 0.1
    jit_compile: bool = False
    precision: str = "float32"

    def validate(self):
        _one_of("precision", self.precision, choices.PRECISIONS)
        for name in ("layers", "channels", "stem_multiplier", "epochs", "batch_size", "lr", "grad_clip"):
            _positive(name, getattr(self, name))
        for name in ("lr_min", "momentum", "weight_decay", "kl_weight", "auxiliary_weight", "cutout"):
            _non_negative(name, getattr(self, name))
        for name in ("kl_warmup", "drop_path"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise ValueError(f"`{name}` must be in [0, 1]. Received: {name}={value!r}")
        if self.drop_path >= 1:
            raise ValueError(f"`drop_path` must be below 1. Received: drop_path={self.drop_path!r}")
        if self.limit is not None:
            _positive("limit", self.limit)
        _positive("channel_scale_init", self.channel_scale_init)
        if self.channel_prior and not self.weight_vd:
            raise ValueError("`channel_prior` needs `weight_vd`. Received: channel_prior=True, weight_vd=False")


TRAIN_PRESETS = {
    "smoke": TrainConfig(layers=3, channels=4, epochs=1, batch_size=32, limit=256, kl_warmup=0.5),
    # Minutes on a 2-core CPU; reaches about 70% zero weights on mnist-5k (4
    # epochs reach 58%: the budget study of docs/search.md keeps 8).
    "quick": TrainConfig(layers=4, channels=8, epochs=8, batch_size=64, kl_warmup=0.1, lr=0.05),
    # The DARTS evaluation setting on CIFAR-10 (meant for a GPU).
    "paper": TrainConfig(
        layers=20, channels=36, epochs=600, batch_size=96, auxiliary=True, drop_path=0.2,
        cutout=16,
    ),
}


@dataclasses.dataclass(frozen=True)
class ExportConfig(_Config):
    """Export of a trained network to SavedModel and TFLite.

    Attributes:
        int8: also write an int8 post-training-quantized .tflite.
        qat: also write an int8 .tflite after pruning-preserving
            quantization-aware fine-tuning (tensorflow-model-optimization).
        qat_epochs, qat_lr, qat_batch_size: that fine-tuning.
        representative_samples: training images used to calibrate int8.
        latency_runs: timed single-image interpreter runs per .tflite.
        eval_batch_size: batch for the parity and accuracy checks.
        int8_tolerance: largest accepted accuracy drop of an int8 model
            against the float one on the test split.
        seed: seed of the sample choice.
        shrink: remove dead channels and fold the constants they leave
            before exporting (`tfvnas.compress.shrinking.shrink`).
        compare_unshrunk: also convert the unshrunk network (float, and
            int8 with `int8`) to report what shrinking changed; those files
            are measured, not shipped.
        latency_rounds: rounds of `latency_runs` timed runs per file,
            interleaved across files (the runs of all rounds are pooled).
        latency_threads: interpreter thread counts the latency is measured
            with.
    """

    int8: bool = False
    qat: bool = False
    qat_epochs: int = 1
    qat_lr: float = 1e-4
    qat_batch_size: int = 64
    representative_samples: int = 200
    latency_runs: int = 50
    eval_batch_size: int = 256
    int8_tolerance: float = 0.03
    seed: int = 0
    shrink: bool = True
    compare_unshrunk: bool = True
    latency_rounds: int = 4
    latency_threads: typing.Tuple[int, ...] = (1, 2)

    def validate(self):
        for name in ("qat_epochs", "qat_lr", "qat_batch_size", "representative_samples",
                     "latency_runs", "eval_batch_size"):
            _positive(name, getattr(self, name))
        if not 0 <= self.int8_tolerance <= 1:
            raise ValueError(
                f"`int8_tolerance` must be in [0, 1]. Received: int8_tolerance={self.int8_tolerance!r}"
            )
        _positive("latency_rounds", self.latency_rounds)
        if not self.latency_threads or any(t <= 0 for t in self.latency_threads) \
                or len(set(self.latency_threads)) != len(self.latency_threads):
            raise ValueError(
                "`latency_threads` must be distinct positive thread counts. "
                f"Received: latency_threads={list(self.latency_threads)!r}"
            )


def read_config_file(path):
    """Reads a JSON or YAML mapping from `path` with a clear error on failure."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"Config file not found. Received: {path!r}")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if path.endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # noqa: BLE001 - OSError, JSON's ValueError and yaml.YAMLError alike
        # One line: YAML's messages span several, with the place of the fault.
        raise ValueError(f"Could not read config file {path!r}: {' '.join(str(e).split())}") from e
    if not isinstance(data, dict):
        raise ValueError(
            f"Config file {path!r} must hold a mapping of field names to values. "
            f"Received: {type(data).__name__}"
        )
    return data

