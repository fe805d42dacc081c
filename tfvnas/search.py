"""The VINNAS search: a custom training loop under a `tf.distribute` strategy.

References:
    - Ferianc, Fan, Rodrigues. "VINNAS: Variational Inference-based Neural
      Network Architecture Search." arXiv:2007.06103.
    - Liu, Simonyan, Yang. "DARTS: Differentiable Architecture Search."
      ICLR 2019 (first-order bi-level optimisation).
"""

import dataclasses
import json
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from tfvnas import config as config_lib
from tfvnas import data as data_lib
from tfvnas import genotype as genotype_lib
from tfvnas import supernet as supernet_lib
from tfvnas import variational

ARTEFACTS = ("genotype.json", "genotype_threshold.json", "search_config.json", "search_history.json")


@dataclasses.dataclass
class SearchResult:
    """What a search found.

    Attributes:
        genotype: the cell by the `top_k` rule.
        genotype_threshold: the cell by the `threshold` rule.
        config: the `SearchConfig` used.
        history: one dict per epoch (losses, accuracies, KL, active ops,
            weight sparsity, every gate's log_alpha and active flag).
        out_dir: where the artefacts were written (None if not written).
        model: the trained `Supernet`.
    """

    genotype: genotype_lib.Genotype
    genotype_threshold: genotype_lib.Genotype
    config: config_lib.SearchConfig
    history: list
    out_dir: str = None
    model: supernet_lib.Supernet = None
    dataset: str = ""

    def summary(self):
        last = self.history[-1] if self.history else {}
        lines = [
            f"search on {self.dataset}: {len(self.history)} epochs",
            f"  validation accuracy {last.get('val_accuracy', float('nan')):.4f}, "
            f"active ops normal {last.get('active_ops', {}).get('normal')} / "
            f"reduce {last.get('active_ops', {}).get('reduce')} "
            f"of {last.get('total_ops')} each",
        ]
        if last.get("weight_sparsity") is not None:
            lines.append(f"  weight sparsity {last['weight_sparsity']:.3f}")
        lines.append("  top_k genotype (" + self.genotype.hash() + "):")
        lines += ["    " + l for l in self.genotype.summary().splitlines()]
        lines.append("  threshold genotype (" + self.genotype_threshold.hash() + "):")
        lines += ["    " + l for l in self.genotype_threshold.summary().splitlines()]
        if self.out_dir:
            lines.append(f"  artefacts in {self.out_dir}")
        return "\n".join(lines)


def resolve_config(preset="quick", config=None, **overrides):
    """Preset, then a config (object, dict or file path), then explicit overrides."""
    cfg = config_lib.preset(preset)
    if config is not None:
        if isinstance(config, config_lib.SearchConfig):
            cfg = config
        else:
            fields = config if isinstance(config, dict) else config_lib.read_config_file(config)
            cfg = config_lib.SearchConfig.from_dict({**cfg.to_dict(), **fields})
    return cfg.replace(**overrides)


class Searcher:
    """Runs a VINNAS search of one dataset under a strategy.

    Args:
        config: a `SearchConfig`.
        dataset: a `tfvnas.data.Dataset`.
        strategy: a `tf.distribute.Strategy`; default the current one.
        verbose: 0 silent, 1 progress bar and summary lines.
    """

    def __init__(self, config, dataset, *, strategy=None, verbose=1):
        self.config = config
        self.dataset = dataset
        self.strategy = strategy or tf.distribute.get_strategy()
        self.verbose = verbose
        self._prepare_data()
        with self.strategy.scope():
            keras.utils.set_random_seed(config.seed)
            n_ops = len(config.op_names)
            self.model = supernet_lib.Supernet(
                dataset.num_classes,
                layers=config.layers,
                channels=config.channels,
                nodes=config.nodes,
                op_names=config.op_names,
                stem_multiplier=config.stem_multiplier,
                weight_vd=config.weight_vd,
                threshold=config.threshold,
                gate_theta_init=config.gate_theta_init or 1.0 / n_ops,
                gate_log_sigma2_init=config.gate_log_sigma2_init,
                normalisation=dataset.normalisation(),
                seed=config.seed,
            )
            self.model.build((None,) + tuple(dataset.image_shape))
            total = config.epochs * self.steps_per_epoch
            self.weight_optimizer = keras.optimizers.SGD(
                learning_rate=keras.optimizers.schedules.CosineDecay(
                    config.weight_lr,
                    decay_steps=max(total, 1),
                    alpha=config.weight_lr_min / config.weight_lr,
                ),
                momentum=config.momentum,
                weight_decay=config.weight_decay or None,
                global_clipnorm=config.grad_clip,
            )
            self.arch_optimizer = keras.optimizers.Adam(
                learning_rate=config.arch_lr, beta_1=config.arch_beta1, beta_2=0.999
            )
            # Built under the scope before the first step (else the first
            # distributed step fails with a placeholder error).
            self.weight_optimizer.build(self.model.weight_variables)
            self.arch_optimizer.build(self.model.arch_variables)
        self._total_steps = total
        self._build_steps()

    # -- data -------------------------------------------------------------

    def _prepare_data(self):
        cfg, ds = self.config, self.dataset
        x, y = ds.x_train, ds.y_train
        if cfg.limit is not None:
            x, y = x[: cfg.limit], y[: cfg.limit]
        self.n_train = len(x)
        rng = np.random.default_rng(cfg.seed)
        if cfg.optimization == "bilevel":
            order = rng.permutation(len(x))
            half = len(x) // 2
            w_idx, a_idx = np.sort(order[:half]), np.sort(order[half:])
            parts = {"weights": (x[w_idx], y[w_idx]), "arch": (x[a_idx], y[a_idx])}
        else:
            parts = {"weights": (x, y)}
        smallest = min(len(p[0]) for p in parts.values())
        if cfg.batch_size > smallest:
            what = "half of the training data" if cfg.optimization == "bilevel" else "the training data"
            raise ValueError(
                f"`batch_size` must be at most the size of {what} ({smallest} examples). "
                f"Received: batch_size={cfg.batch_size}"
            )
        n_replicas = self.strategy.num_replicas_in_sync
        if cfg.batch_size % n_replicas:
            raise ValueError(
                f"`batch_size` (the global batch) must be divisible by the number of replicas "
                f"({n_replicas}). Received: batch_size={cfg.batch_size}"
            )
        self.steps_per_epoch = len(parts["weights"][0]) // cfg.batch_size
        dist = self.strategy.experimental_distribute_dataset
        self._weights_data = dist(
            data_lib.make_tf_dataset(
                *parts["weights"], cfg.batch_size, shuffle=True, seed=cfg.seed, drop_remainder=True
            )
        )
        self._arch_data = None
        if "arch" in parts:
            self._arch_data = dist(
                data_lib.make_tf_dataset(
                    *parts["arch"], cfg.batch_size, shuffle=True, seed=cfg.seed + 1,
                    drop_remainder=True, repeat=True,
                )
            )
        self._val_data = dist(
            data_lib.make_tf_dataset(ds.x_val, ds.y_val, cfg.batch_size, shuffle=False)
        )

    # -- steps ------------------------------------------------------------

    def _loss(self, x, y, beta):
        logits = self.model(x, training=True)
        kl = tf.add_n(self.model.losses)
        loss, ce, _ = variational.elbo_loss(
            y, logits, kl, n_train=self.n_train, beta=beta, global_batch_size=self.config.batch_size
        )
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), y), tf.float32))
        return loss, {"loss": loss, "correct": correct, "kl": kl}

    def _update(self, optimizer, variables, x, y, beta):
        with tf.GradientTape() as tape:
            loss, stats = self._loss(x, y, beta)
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
        return stats

    def _build_steps(self):
        strategy, model = self.strategy, self.model

        def reduce(per_replica):
            out = {}
            for key, value in per_replica.items():
                op = tf.distribute.ReduceOp.MEAN if key.endswith("kl") else tf.distribute.ReduceOp.SUM
                out[key] = strategy.reduce(op, value, axis=None)
            return out

        def weight_replica(batch, beta):
            x, y = batch
            return self._update(self.weight_optimizer, model.weight_variables, x, y, beta)

        def bilevel_replica(batch, arch_batch, beta):
            xa, ya = arch_batch
            arch = self._update(self.arch_optimizer, model.arch_variables, xa, ya, beta)
            stats = weight_replica(batch, beta)
            stats.update({"arch_" + k: v for k, v in arch.items()})
            return stats

        def joint_replica(batch, beta):
            x, y = batch
            variables = model.weight_variables + model.arch_variables
            n_w = len(model.weight_variables)
            with tf.GradientTape() as tape:
                loss, stats = self._loss(x, y, beta)
            grads = tape.gradient(loss, variables)
            self.weight_optimizer.apply_gradients(zip(grads[:n_w], variables[:n_w]))
            self.arch_optimizer.apply_gradients(zip(grads[n_w:], variables[n_w:]))
            return stats

        if self._arch_data is not None:
            @tf.function
            def train_step(batch, arch_batch, beta):
                return reduce(strategy.run(bilevel_replica, args=(batch, arch_batch, beta)))
        else:
            @tf.function
            def train_step(batch, beta):
                return reduce(strategy.run(joint_replica, args=(batch, beta)))

        def eval_replica(batch):
            x, y = batch
            logits = model(x, training=False)
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            pred = tf.argmax(logits, -1, output_type=tf.int32)
            return {
                "loss_sum": tf.reduce_sum(ce),
                "correct": tf.reduce_sum(tf.cast(tf.equal(pred, y), tf.float32)),
                "count": tf.cast(tf.shape(y)[0], tf.float32),
            }

        @tf.function(input_signature=[self._val_data.element_spec])
        def eval_step(batch):
            per = strategy.run(eval_replica, args=(batch,))
            return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per.items()}

        self._train_step = train_step
        self._eval_step = eval_step

    # -- loop -------------------------------------------------------------

    def beta(self, step):
        """KL weight at global step `step`: linear warm-up to `kl_weight`."""
        warm = self.config.kl_warmup * self._total_steps
        if warm <= 0:
            return self.config.kl_weight
        return self.config.kl_weight * min(1.0, step / warm)

    def evaluate(self):
        """`(loss, accuracy)` of the supernet's inference path on the validation split."""
        totals = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
        for batch in self._val_data:
            for k, v in self._eval_step(batch).items():
                totals[k] += float(v)
        n = max(totals["count"], 1.0)
        return totals["loss_sum"] / n, totals["correct"] / n

    def run(self, out_dir=None):
        """Runs the search; writes the artefacts to `out_dir` when given.

        Returns:
            A `SearchResult`.
        """
        cfg, model = self.config, self.model
        history = []
        step = 0
        arch_iter = iter(self._arch_data) if self._arch_data is not None else None
        total_ops = len(cfg.op_names) * len(genotype_lib.edge_list(cfg.nodes))
        for epoch in range(cfg.epochs):
            start = time.perf_counter()
            bar = None
            if self.verbose:
                print(f"Epoch {epoch + 1}/{cfg.epochs}")
                bar = keras.utils.Progbar(
                    self.steps_per_epoch,
                    stateful_metrics=["loss", "acc", "kl", "beta", "active_ops", "w_sparsity"],
                )
            # Active gates change only at pruning events and weight sparsity
            # is measured once per epoch: the bar shows the latest values.
            status = [("active_ops", sum(model.active_ops().values()))]
            if history and history[-1]["weight_sparsity"] is not None:
                status.append(("w_sparsity", history[-1]["weight_sparsity"]))
            sums = {"loss": 0.0, "correct": 0.0, "arch_loss": 0.0, "arch_correct": 0.0, "kl": 0.0}
            seen = 0
            for i, batch in enumerate(self._weights_data):
                beta = self.beta(step)
                beta_t = tf.constant(beta, tf.float32)
                if arch_iter is not None:
                    stats = self._train_step(batch, next(arch_iter), beta_t)
                else:
                    stats = self._train_step(batch, beta_t)
                stats = {k: float(v) for k, v in stats.items()}
                if not math.isfinite(stats["loss"]):
                    raise FloatingPointError(
                        f"The search loss became {stats['loss']} at epoch {epoch + 1}, step {i + 1} "
                        f"(global step {step + 1}). Lower `weight_lr` or `arch_lr`, or check the data."
                    )
                step += 1
                seen += cfg.batch_size
                for k in sums:
                    if k in stats:
                        sums[k] += stats[k] * (cfg.batch_size if k.endswith("loss") else 1)
                sums["kl"] = stats["kl"]
                if bar is not None:
                    bar.update(
                        i + 1,
                        values=[
                            ("loss", sums["loss"] / seen),
                            ("acc", sums["correct"] / seen),
                            ("kl", stats["kl"]),
                            ("beta", beta),
                            *status,
                        ],
                    )
            pruned_now = model.prune(cfg.threshold)
            val_loss, val_acc = self.evaluate()
            record = self._epoch_record(epoch, step, sums, seen, val_loss, val_acc, pruned_now, total_ops)
            record["time_s"] = round(time.perf_counter() - start, 3)
            history.append(record)
            if self.verbose:
                sparsity = record["weight_sparsity"]
                print(
                    f"  val_acc {val_acc:.4f}  active ops normal {record['active_ops']['normal']}"
                    f"/{total_ops} reduce {record['active_ops']['reduce']}/{total_ops}"
                    f"  pruned {pruned_now}"
                    + (f"  weight sparsity {sparsity:.3f}" if sparsity is not None else "")
                )
        result = SearchResult(
            genotype=model.derive("top_k", k=cfg.top_k),
            genotype_threshold=model.derive("threshold"),
            config=cfg,
            history=history,
            model=model,
            dataset=self.dataset.name,
        )
        if out_dir is not None and _is_chief(self.strategy):
            write_artefacts(result, out_dir)
            result.out_dir = os.fspath(out_dir)
        return result

    def _epoch_record(self, epoch, step, sums, seen, val_loss, val_acc, pruned_now, total_ops):
        model = self.model
        pruned_w, total_w = variational.weight_sparsity(model)
        arch_seen = seen if self._arch_data is not None else 0
        return {
            "epoch": epoch + 1,
            "step": step,
            "beta": self.beta(step),
            "weight_lr": float(self.weight_optimizer.learning_rate),
            "train_loss": sums["loss"] / seen,
            "train_accuracy": sums["correct"] / seen,
            "arch_loss": sums["arch_loss"] / arch_seen if arch_seen else None,
            "arch_accuracy": sums["arch_correct"] / arch_seen if arch_seen else None,
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "kl_arch": float(model.arch_kl()),
            "kl_weights": float(model.weight_kl()),
            "active_ops": model.active_ops(),
            "total_ops": total_ops,
            "pruned_this_epoch": pruned_now,
            "weight_sparsity": pruned_w / total_w if total_w else None,
            "log_alpha": {t: g.raw_log_alpha().numpy().round(4).tolist() for t, g in model.gates.items()},
            "active": {t: g.active.numpy().astype(int).tolist() for t, g in model.gates.items()},
        }


def _is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "cluster_spec", None):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type in (None, "chief") or (task_type == "worker" and task_id == 0)


def write_artefacts(result, out_dir):
    """Writes the four search artefacts to `out_dir` (each atomically)."""
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    result.genotype.save(os.path.join(out_dir, "genotype.json"))
    result.genotype_threshold.save(os.path.join(out_dir, "genotype_threshold.json"))
    result.config.save(os.path.join(out_dir, "search_config.json"))
    history = {
        "dataset": result.dataset,
        "op_names": list(result.config.op_names),
        "edges": [list(e) for e in genotype_lib.edge_list(result.config.nodes)],
        "threshold": result.config.threshold,
        "epochs": result.history,
    }
    config_lib._atomic_write(
        os.path.join(out_dir, "search_history.json"), json.dumps(history, indent=1) + "\n"
    )


def search(
    dataset="mnist-5k",
    *,
    preset="quick",
    config=None,
    out_dir=None,
    strategy=None,
    epochs=None,
    seed=None,
    verbose=1,
):
    """Searches a cell with VINNAS.

    Args:
        dataset: a dataset name, a path (.npz or image directory), or a
            `tfvnas.data.Dataset`.
        preset: 'smoke', 'quick' or 'paper'.
        config: a `SearchConfig`, a dict of fields, or a JSON/YAML file path;
            its fields override the preset's.
        out_dir: where to write genotype.json, genotype_threshold.json,
            search_config.json and search_history.json (None: nothing written).
        strategy: a `tf.distribute.Strategy`; default the current one.
        epochs: overrides the number of epochs.
        seed: overrides the seed.
        verbose: 0 silent, 1 progress bar and summary.

    Returns:
        A `SearchResult`.

    Raises:
        ValueError: for a bad dataset, config or size.
        FloatingPointError: when the loss stops being finite.
    """
    cfg = resolve_config(preset, config, epochs=epochs, seed=seed)
    if not isinstance(dataset, data_lib.Dataset):
        dataset = data_lib.load(dataset, seed=cfg.seed)
    result = Searcher(cfg, dataset, strategy=strategy, verbose=verbose).run(out_dir)
    if verbose:
        print(result.summary())
    return result
