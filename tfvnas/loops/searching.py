"""The VINNAS search: a custom training loop under a `tf.distribute` strategy.

References:
    - Ferianc, Fan, Rodrigues. "VINNAS: Variational Inference-based Neural
      Network Architecture Search." arXiv:2007.06103.
    - Liu, Simonyan, Yang. "DARTS: Differentiable Architecture Search."
      ICLR 2019 (first-order bi-level optimisation).
"""

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from tfvnas import config as config_lib
from tfvnas import files, runs
from tfvnas.layers import variational
from tfvnas.loops import distribute, optim
from tfvnas.loops import loop as loop_lib
from tfvnas.loops import selection as selection_lib
from tfvnas.models import genotype as genotype_lib
from tfvnas.models import supernet as supernet_lib

ARTEFACTS = runs.SEARCH_ARTEFACTS

# What "converged" means (`SearchResult.converged`): this share of each gate
# table pruned, and the top_k genotype unchanged over this many epochs.
CONVERGED_PRUNED = 0.5
CONVERGED_STABLE = 2


@dataclasses.dataclass
class SearchResult:
    """What a search found.

    Attributes:
        genotype: the cell by the `top_k` rule.
        genotype_threshold: the cell by the `threshold` rule.
        config: the `SearchConfig` used.
        history: one dict per epoch (losses, accuracies, KL, active ops,
            pruned share per gate table, the `top_k` genotype and for how
            many epochs it has been unchanged, weight sparsity, every gate's
            log_alpha and active flag).
        out_dir: where the artefacts were written (None if not written).
        model: the trained `Supernet`.
        dataset: the data set's name.
        selection: with `selection='perturbation'`, what each decision
            measured (`tfvnas.loops.selection.perturbation_genotype`) and
            the genotype the gates gave; None otherwise.
    """

    genotype: genotype_lib.Genotype
    genotype_threshold: genotype_lib.Genotype
    config: config_lib.SearchConfig
    history: list
    out_dir: str = None
    model: supernet_lib.Supernet = None
    dataset: str = ""
    selection: dict = None

    def converged(self, min_pruned=CONVERGED_PRUNED, stable_epochs=CONVERGED_STABLE):
        """Whether the search converged: at least `min_pruned` of each gate table pruned, and the
        `top_k` genotype unchanged over the last `stable_epochs` epochs."""
        if not self.history:
            return False
        last = self.history[-1]
        if last.get("settled"):  # pruning has decided every node
            return True
        if last.get("stable_epochs") is None:  # DARTS prunes nothing: only the genotype counts
            return False
        pruned_enough = self.config.method == "darts" or min(last["pruned_share"].values()) >= min_pruned
        return pruned_enough and last["stable_epochs"] >= stable_epochs

    def convergence_line(self):
        """One line: whether the search converged, and the numbers that say so."""
        if not self.history:
            return "not converged: no epoch ran"
        last = self.history[-1]
        share = last["pruned_share"]
        facts = (
            f"pruned normal {share['normal']:.0%}, reduce {share['reduce']:.0%}; top_k genotype unchanged "
            f"for the last {last['stable_epochs']} epoch{'' if last['stable_epochs'] == 1 else 's'}"
        )
        if last.get("settled"):
            return (f"converged, settled: every node is down to {self.config.top_k} live edges with one op each, "
                    f"which pruning keeps ({facts})")
        if self.converged():
            return f"converged: {facts}"
        return (f"not converged ({facts}; converged means at least {CONVERGED_PRUNED:.0%} of each gate "
                f"table pruned and the genotype unchanged for {CONVERGED_STABLE} epochs)")

    def summary(self):
        last = self.history[-1] if self.history else {}
        lines = [
            f"search on {self.dataset}: {len(self.history)} epochs",
            f"  validation accuracy {last.get('val_accuracy', float('nan')):.4f}, "
            f"active ops normal {last.get('active_ops', {}).get('normal')} / "
            f"reduce {last.get('active_ops', {}).get('reduce')} "
            f"of {last.get('total_ops')} each",
            "  " + self.convergence_line(),
        ]
        if last.get("weight_sparsity") is not None:
            lines.append(f"  weight sparsity {last['weight_sparsity']:.3f}")
        if self.selection is not None:
            facts = []
            if self.selection.get("images") is not None:
                facts.append(f"{self.selection['images']} validation images")
            if self.selection.get("base_accuracy") is not None:
                facts.append(f"supernet accuracy {self.selection['base_accuracy']:.4f}")
            lines.append(f"  genotype.json ({self.genotype.hash()}): chosen by perturbation among the gates' "
                         f"survivors" + (f" ({', '.join(facts)})" if facts else "") + ":")
        else:
            lines.append(f"  genotype.json ({self.genotype.hash()}): the top_k genotype of the gates:")
        lines += ["    " + l for l in self.genotype.summary().splitlines()]
        lines.append("  threshold genotype (" + self.genotype_threshold.hash() + "):")
        lines += ["    " + l for l in self.genotype_threshold.summary().splitlines()]
        if self.out_dir:
            lines.append(f"  artefacts in {self.out_dir}")
        return "\n".join(lines)


def arch_schedule(lr, anneal, total_steps):
    """The gates' learning rate: `lr`, then over the last `anneal` share of the steps a cosine to 0.

    A float when `anneal` is 0 (constant), else a Keras schedule (a
    `CosineDecay` whose warm-up holds `lr`).
    """
    decay_steps = int(round(anneal * total_steps))
    if decay_steps < 1:
        return lr
    return keras.optimizers.schedules.CosineDecay(
        lr, decay_steps=decay_steps, alpha=0.0, warmup_target=lr, warmup_steps=max(total_steps - decay_steps, 0)
    )


class Searcher(loop_lib.Loop):
    """Runs a VINNAS search of one dataset under a strategy.

    Args:
        config: a `SearchConfig`.
        dataset: a `tfvnas.data.Dataset` or `tfvnas.streams.StreamedDataset`.
        strategy: a `tf.distribute.Strategy`; default the current one.
        verbose: 0 silent, 1 progress bar and summary lines.
        checkpoint_every: also checkpoint every this many steps (0: only at
            the end of each epoch).
    """

    kind = "search"
    nan_hint = "Lower `weight_lr` or `arch_lr`, or check the data."
    progress_names = ("loss", "acc", "kl", "beta", "active_ops", "w_sparsity")

    def __init__(self, config, dataset, **kwargs):
        if config.resolution is not None:
            dataset = dataset.resized(config.resolution)
        # Read when the step is traced: during `arch_warmup` the step updates
        # the weights only (`begin_epoch` traces it anew when that ends).
        self.arch_frozen = config.arch_warmup > 0
        super().__init__(config, dataset, **kwargs)

    def training_parts(self):
        """The training examples, or for the bi-level search its two halves.

        The halves are a seeded permutation of the training examples' positions
        (`SearchConfig.seed`), cut in two and each kept in its order: for
        arrays and image folders a choice of positions, for a stream a
        filter on each example's key (its index), applied before decoding.
        The same halves every epoch, on any number of workers, and on resume.
        """
        cfg = self.config
        train = self.dataset.reader("train")
        if cfg.limit is not None:
            train = train.subset(np.arange(min(cfg.limit, len(train))))
        self.n_train = len(train)
        if cfg.optimization != "bilevel":
            return {"weights": train}
        order = np.random.default_rng(cfg.seed).permutation(len(train))
        half = len(train) // 2
        # Each half is the data its parameters are fit on (the gates on one,
        # the weights on the other): the KL is per example of that half.
        self.n_train = half
        return {"weights": train.subset(np.sort(order[:half])), "arch": train.subset(np.sort(order[half:]))}

    def build_model(self):
        cfg, ds = self.config, self.dataset
        model = supernet_lib.Supernet(
            ds.num_classes,
            layers=cfg.layers,
            channels=cfg.channels,
            nodes=cfg.nodes,
            op_names=cfg.op_names,
            stem_multiplier=cfg.stem_multiplier,
            weight_vd=cfg.weight_vd,
            threshold=cfg.threshold,
            gate_theta_init=cfg.gate_theta_init,
            gate_log_alpha_init=cfg.gate_log_alpha_init,
            gate_parameterisation=cfg.gate_parameterisation,
            gate_average_decay=cfg.gate_average_decay,
            normalisation=ds.normalisation(),
            seed=cfg.seed,
            method=cfg.method,
            skip_dropout=cfg.skip_dropout,
            top_k=cfg.top_k,
            skip_bn=cfg.skip_bn,
            aux_skip=cfg.aux_skip,
            shared_edge_functions=cfg.edges_shared,
            fused=cfg.fused_edges,
        )
        model.build((None,) + tuple(ds.image_shape))
        # The op set the first trace computes: every op. Pruning between
        # traces masks ops to zero; `end_epoch` decides when to trace anew.
        model.step_ops = model.computed_ops()
        return model

    def build_optimizers(self, total_steps):
        cfg, model = self.config, self.model
        self.weight_optimizer = optim.SGD(
            keras.optimizers.schedules.CosineDecay(
                cfg.weight_lr, decay_steps=max(total_steps, 1), alpha=cfg.weight_lr_min / cfg.weight_lr
            ),
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay or None,
            global_clipnorm=cfg.grad_clip,
        )
        self.weight_optimizer.exclude_from_weight_decay(
            variational.weight_decay_exclusions(model, include_means=cfg.decay_variational_means)
        )
        arch = cfg.arch_optimizer
        rate = arch_schedule(arch["lr"], cfg.arch_lr_anneal, total_steps)
        if cfg.arch_algorithm == "sgd":
            # Steps in proportion to the gradient, where Adam's are about the
            # learning rate whatever the gradient's size.
            self.arch_optimizer = optim.SGD(rate, momentum=arch["beta_1"], weight_decay=arch["weight_decay"] or None)
        else:
            self.arch_optimizer = optim.Adam(rate, beta_1=arch["beta_1"], beta_2=0.999,
                                             weight_decay=arch["weight_decay"])
        return {
            "weight_optimizer": (self.weight_optimizer, model.weight_variables),
            "arch_optimizer": (self.arch_optimizer, model.arch_variables),
        }

    # -- step -------------------------------------------------------------

    def _loss(self, x, y):
        logits = self.model(x, training=True)
        losses = self.model.losses
        kl = tf.add_n(losses) if losses else tf.constant(0.0)
        loss, _, _ = variational.elbo_loss(y, logits, kl, global_batch_size=self.config.batch_size)
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), y), tf.float32))
        return loss, {"loss": loss, "correct": correct, "kl": kl}

    def _update(self, optimizers, variables, x, y):
        """One gradient step of `variables` (split among `optimizers` in order)."""
        stats, grads = self.loss_and_gradients(self._loss, [v for vs in variables for v in vs], x, y)
        split = []
        for optimizer, vs in zip(optimizers, variables):
            split.append((optimizer, grads[: len(vs)]))
            grads = grads[len(vs):]
        self.apply_gradients(split)
        return stats

    def replica_step(self, batches):
        model = self.model
        if "arch" not in batches:
            x, y = batches["weights"]
            return self._update(
                [self.weight_optimizer, self.arch_optimizer],
                [model.weight_variables, model.arch_variables], x, y,
            )
        if self.arch_frozen:  # `arch_warmup`: the weights alone, on their half
            x, y = batches["weights"]
            return self._update([self.weight_optimizer], [model.weight_variables], x, y)
        # First-order bi-level: the gates step on their half, then the weights on theirs.
        xa, ya = batches["arch"]
        arch = self._update([self.arch_optimizer], [model.arch_variables], xa, ya)
        x, y = batches["weights"]
        stats = self._update([self.weight_optimizer], [model.weight_variables], x, y)
        stats.update({"arch_" + k: v for k, v in arch.items()})
        return stats

    # -- epochs -----------------------------------------------------------

    def progress_status(self):
        # Active gates change only at pruning events and weight sparsity is
        # measured once per epoch: the bar shows the latest values.
        status = [("active_ops", sum(self.model.active_ops().values()))]
        if self.history and self.history[-1]["weight_sparsity"] is not None:
            status.append(("w_sparsity", self.history[-1]["weight_sparsity"]))
        return status

    def begin_epoch(self, epoch):
        frozen = epoch < self.config.arch_warmup
        if frozen != self.arch_frozen:
            self.arch_frozen = frozen
            self._build_steps()

    def before_step(self, step):
        # DARTS-' auxiliary skip: its weight falls linearly to 0 over the search.
        if self.model.aux_skip_weight is not None:
            self.model.aux_skip_weight.assign(self.config.aux_skip * max(0.0, 1.0 - step / max(self.total_steps, 1)))

    def after_step(self, sums):
        # A pruning check every `prune_every` steps of the whole search (the
        # same steps on every worker, rerun and resume); none while the gates
        # are frozen (`arch_warmup`).
        if not self.arch_frozen and self.position["step"] % self.config.prune_every == 0:
            sums["pruned"] = sums.get("pruned", 0) + self.model.update_evidence(
                self.config.threshold, self.config.prune_patience
            )

    def end_epoch(self, epoch):
        model = self.model
        traced = model.step_ops
        current = model.computed_ops()
        if current != traced:
            # Pruned ops leave the computation when the steps are traced anew
            # without them; that pays when the share of traced ops gone times
            # the steps left outweighs the cost of a trace. The decision
            # depends on counts only, so every worker and every rerun (or
            # resumed run) makes the same one.
            count = lambda ops: sum(len(row) for rows in ops.values() for row in rows)  # noqa: E731
            gone = 1.0 - count(current) / max(count(traced), 1)
            steps_left = self.total_steps - self.position["step"]
            if gone * steps_left >= self.config.retrace_cost_steps:
                self.trace_live_ops()
        return {}

    def trace_live_ops(self):
        """Traces the steps anew with the ops still live, where pruning has removed any since the last trace.

        A pruned op contributes an exact zero, so the traced computation
        without it gives the same values at less cost. The perturbation
        selection evaluates the supernet once per decision it measures:
        traced with the live ops, masking one of them changes a value of the
        computation, and the pruned ones are not computed at all.
        """
        current = self.model.computed_ops()
        if current != self.model.step_ops:
            self.model.step_ops = current
            self._build_steps()

    def finished(self):
        patience = self.config.stop_when_stable
        if patience and self.history and self.history[-1]["stable_epochs"] >= patience:
            return True
        # Pruning has decided every node: nothing is left to search.
        return bool(self.config.stop_when_settled and self.history and self.history[-1].get("settled"))

    def checkpoint_state(self):
        ops = self.model.step_ops
        return {"step_ops": None if ops is None else {t: [list(r) for r in rows] for t, rows in ops.items()}}

    def restore_checkpoint_state(self, state):
        ops = state.get("step_ops")
        self.model.step_ops = None if ops is None else {t: tuple(tuple(r) for r in rows) for t, rows in ops.items()}

    def epoch_record(self, record, sums):
        model, cfg = self.model, self.config
        pruned_w, total_w = variational.weight_sparsity(model)
        arch_seen = sums["seen"] if cfg.optimization == "bilevel" and not self.arch_frozen else 0
        genotype = model.derive("top_k", k=cfg.top_k)
        previous = self.history[-1] if self.history else None
        # Frozen gates (`arch_warmup`) keep the genotype by construction: not stability.
        stable = (previous["stable_epochs"] + 1
                  if previous and previous["genotype_hash"] == genotype.hash() and not self.arch_frozen else 0)
        record.update(
            weight_lr=float(self.weight_optimizer.learning_rate),
            arch_loss=sums["arch_loss"] / arch_seen if arch_seen else None,
            arch_accuracy=sums["arch_correct"] / arch_seen if arch_seen else None,
            kl_gates=float(model.arch_kl()),
            kl_network_weights=float(model.weight_kl()),
            active_ops=model.active_ops(),
            total_ops=self.total_ops,
            pruned_this_epoch=int(sums.get("pruned", 0)),
            pruned_share=model.pruned_share(),
            genotype=genotype.to_dict(),
            genotype_hash=genotype.hash(),
            stable_epochs=stable,
            settled=model.settled(),
            live_edges={t: g.live_edges() for t, g in model.gates.items()} if cfg.method == "vinnas" else None,
            weight_sparsity=pruned_w / total_w if total_w else None,
            # Every gate's log_alpha now (a pruned gate's at the value it was pruned at).
            log_alpha={t: g.current_log_alpha().numpy().round(4).tolist() for t, g in model.gates.items()},
            active={t: g.active.numpy().astype(int).tolist() for t, g in model.gates.items()},
        )
        if any(getattr(g, "average_decay", 0.0) for g in model.gates.values()):
            # What the derivation read (the averages of the active gates), so
            # that every epoch's genotype can be derived again from the history.
            record["derivation_log_alpha"] = {
                t: g.derivation_log_alpha().numpy().round(4).tolist() for t, g in model.gates.items()}
        return record

    @property
    def total_ops(self):
        return len(self.config.op_names) * len(genotype_lib.edge_list(self.config.nodes))

    def epoch_line(self, record):
        sparsity = record["weight_sparsity"]
        share = record["pruned_share"]
        return (
            f"val_acc {record['val_accuracy']:.4f}  pruned normal {share['normal']:.0%} reduce {share['reduce']:.0%}"
            f" (+{record['pruned_this_epoch']})  top_k {record['genotype_hash'][:8]} "
            f"unchanged for {record['stable_epochs']} epoch{'' if record['stable_epochs'] == 1 else 's'}"
            + (f"  weight sparsity {sparsity:.3f}" if sparsity is not None else "")
        )

    def write_summaries(self, record):
        super().write_summaries(record)
        step = record["epoch"]
        for cell_type, gates in self.model.gates.items():
            active = gates.active.numpy() > 0  # the gates still searched
            self.summaries.histogram(f"log_alpha/{cell_type}", gates.raw_log_alpha().numpy()[active], step)
        self.summaries.genotype_images(self.model.derive("top_k", k=self.config.top_k), step)

    def run(self, out_dir=None, resume=False, tensorboard_dir=None):
        """Runs the search; writes the artefacts (and checkpoints) to `out_dir` when given.

        Args:
            out_dir: output folder (None: nothing written, no checkpoints).
            resume: continue from the latest checkpoint in `out_dir`.
            tensorboard_dir: TensorBoard log folder (None: no summaries).

        Returns:
            A `SearchResult`.
        """
        checkpoint_dir = None if out_dir is None else os.path.join(out_dir, runs.CHECKPOINT_SUBDIR)
        if resume:
            if checkpoint_dir is None:
                raise ValueError("`resume` needs the `out_dir` of the run to continue.")
            path = self.restore(checkpoint_dir)
            if self.verbose:
                print(f"Resuming from {path} (epoch {self.position['epoch'] + 1}, step {self.position['step']})")
        self.train(checkpoint_dir, tensorboard_dir)
        model, cfg = self.model, self.config
        genotype = model.derive("top_k", k=cfg.top_k)
        selection = None
        if cfg.selection == "perturbation":
            self.trace_live_ops()
            val = self.dataset.reader("val")
            val = val.subset(np.arange(min(cfg.selection_images, len(val))))
            with self.faults():
                perturbed, selection = selection_lib.perturbation_genotype(
                    model, lambda: self.evaluate_reader(val)[1], k=cfg.top_k)
            selection.update(images=int(len(val)), gates_genotype=genotype.to_dict())
            genotype = perturbed
        result = SearchResult(
            genotype=genotype,
            genotype_threshold=model.derive("threshold"),
            config=cfg,
            history=self.history,
            model=model,
            dataset=self.dataset.name,
            selection=selection,
        )
        if out_dir is not None and distribute.is_chief(self.strategy):
            with self.faults():
                write_artefacts(result, out_dir)
            result.out_dir = os.fspath(out_dir)
        return result


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
    if result.selection is not None:
        history["selection"] = result.selection
    files.write_json(os.path.join(out_dir, "search_history.json"), history)


def search(
    dataset="mnist-5k",
    *,
    preset="quick",
    config=None,
    out_dir=None,
    strategy=None,
    epochs=None,
    seed=None,
    method=None,
    resume=False,
    overwrite=False,
    checkpoint_every=0,
    deterministic=False,
    tensorboard_dir=None,
    worker_timeout=None,
    collective_timeout=None,
    verbose=1,
):
    """Searches a cell with VINNAS.

    Args:
        dataset: a dataset name, a path (.npz or image directory),
            'tfrecord:PATTERN', 'tfds:NAME', a `tf.data.Dataset` of
            `(image, label)` pairs or a dict of them (`{"train", "val",
            "test"}`), or a `tfvnas.data.Dataset` / `StreamedDataset`
            (see `tfvnas.data.load`).
        preset: 'smoke', 'quick' or 'paper'.
        config: a `SearchConfig`, a dict of fields, or a JSON/YAML file path;
            its fields override the preset's.
        out_dir: where to write genotype.json, genotype_threshold.json,
            search_config.json, search_history.json and checkpoints/ (None:
            nothing written).
        strategy: a `tf.distribute.Strategy` or a name ('auto', 'default',
            'mirrored', 'multiworker'); default the current strategy.
        epochs: overrides the number of epochs.
        seed: overrides the seed.
        method: overrides the method: 'vinnas', or 'darts' for the DARTS
            baseline (which also switches the default op set to `darts_none`).
        resume: continue the run whose checkpoints are in `out_dir`; its
            saved configuration is used (`config`, `epochs`, `seed` and `method`, if
            given, must resolve with `preset` to that same configuration).
        overwrite: replace the run `out_dir` holds (without it, and without
            `resume`, a folder that holds a run is refused).
        checkpoint_every: also checkpoint every this many steps.
        tensorboard_dir: TensorBoard log folder: scalars per epoch (and, for a
            search, log_alpha histograms and a drawing of the cell so far).
        deterministic: seeds and op determinism (bit-identical reruns on one
            machine; slower).
        worker_timeout, collective_timeout: with a strategy given by name,
            how soon a multi-worker run notices a lost worker
            (`tfvnas.loops.distribute.make_strategy`).
        verbose: 0 silent, 1 progress bar and summary.

    Returns:
        A `SearchResult`.

    Raises:
        ValueError: for a bad dataset, config, size or resume folder, or a
            folder that holds a run (without `resume` or `overwrite`).
        FloatingPointError: when the loss stops being finite.
        tfvnas.runs.FolderInUse: another process runs in `out_dir`.
        tfvnas.files.WriteError: a write failed (a full disk).
        tfvnas.checks.WorkerLost: another worker of a multi-worker run stopped.
        tfvnas.loops.loop.Interrupted: after SIGTERM/SIGINT (a checkpoint is saved).
    """
    runs.check_resume_overwrite(resume, overwrite)
    strategy, cfg, dataset = loop_lib.open_run(
        config_lib.SearchConfig, dataset, preset=preset, config=config, out_dir=out_dir, resume=resume,
        strategy=strategy, deterministic=deterministic, worker_timeout=worker_timeout,
        collective_timeout=collective_timeout, epochs=epochs, seed=seed, method=method)
    with runs.claim(out_dir, "search", resume=resume, overwrite=overwrite, chief=distribute.is_chief(strategy)):
        searcher = Searcher(cfg, dataset, strategy=strategy, verbose=verbose, checkpoint_every=checkpoint_every)
        result = searcher.run(out_dir, resume=resume, tensorboard_dir=tensorboard_dir)
    if verbose:
        print(result.summary())
    return result
