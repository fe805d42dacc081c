"""Training of the network a genotype describes, from scratch, as a sparse network.

The same custom loop as the search (`tfvnas.loops.loop.Loop`): any strategy,
checkpoints, resume, a progress bar and per-epoch history. The weights are
sparse variational by default (`TrainConfig.weight_vd`), trained on
cross-entropy + beta * KL / N_train (`tfvnas.layers.variational.elbo_loss`), with an
optional auxiliary head, drop-path (ramped linearly over the epochs, as in
DARTS) and cutout.

References:
    - Liu, Simonyan, Yang. "DARTS: Differentiable Architecture Search."
      ICLR 2019 (evaluation network and recipe).
    - Molchanov, Ashukha, Vetrov. "Variational Dropout Sparsifies Deep
      Neural Networks." ICML 2017.
    - DeVries, Taylor. "Improved Regularization of Convolutional Neural
      Networks with Cutout." arXiv:1708.04552.
"""

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from tfvnas import config as config_lib
from tfvnas import files, runs
from tfvnas.compress import counting
from tfvnas.compress import strip as strip_lib
from tfvnas.layers import channel_prior as channel_prior_lib
from tfvnas.layers import variational
from tfvnas.loops import distribute, optim
from tfvnas.loops import loop as loop_lib
from tfvnas.models import genotype as genotype_lib
from tfvnas.models import network as network_lib
from tfvnas.models import zoo

ARTEFACTS = runs.TRAIN_ARTEFACTS


@dataclasses.dataclass
class TrainResult:
    """What a training run produced.

    Attributes:
        model: the trained `tfvnas.models.network.Network`.
        genotype: the genotype it was built from.
        config: the `TrainConfig` used.
        history: one dict per epoch.
        test_loss, test_accuracy: on the dataset's test split.
        parameters: `dense` and `nonzero` counts over the trainable weights
            of the stripped network, `moving_statistics` apart, and
            `kernel_dense`, `kernel_nonzero`, `kernel_sparsity` over its
            kernels (`tfvnas.compress.counting.count_parameters`); `shrunk`: the same
            counts after dead-channel elimination (`tfvnas.compress.shrinking`),
            the weights that compute something.
        layer_sparsity: per kernel layer `{"name", "type", "weight", "shape",
            "dense", "nonzero", "sparsity"}`.
        out_dir: where the artefacts were written (None if not written).
        dataset: dataset name.
    """

    model: network_lib.Network
    genotype: genotype_lib.Genotype
    config: config_lib.TrainConfig
    history: list
    test_loss: float
    test_accuracy: float
    parameters: dict
    layer_sparsity: list
    out_dir: str = None
    dataset: str = ""

    def summary(self):
        p = self.parameters
        lines = [
            f"training on {self.dataset}: {len(self.history)} epochs, genotype {self.genotype.hash()}",
            f"  test accuracy {self.test_accuracy:.4f}  (loss {self.test_loss:.4f})",
            f"  parameters {p['nonzero']:,} non-zero of {p['dense']:,}; "
            f"kernels {p['kernel_nonzero']:,} of {p['kernel_dense']:,} "
            f"(sparsity {p['kernel_sparsity']:.1%}); "
            f"{p['shrunk']['nonzero']:,} non-zero after dead-channel elimination",
        ]
        if self.out_dir:
            lines.append(f"  artefacts in {self.out_dir}")
        return "\n".join(lines)


class Trainer(loop_lib.Loop):
    """Trains a `Network` built from a genotype under a strategy.

    Args:
        genotype: a `tfvnas.Genotype`.
        config: a `TrainConfig`.
        dataset: a `tfvnas.data.Dataset` or `tfvnas.streams.StreamedDataset`.
        strategy: a `tf.distribute.Strategy`; default the current one.
        verbose: 0 silent, 1 progress bar and summary lines.
        checkpoint_every: also checkpoint every this many steps.
    """

    kind = "training"
    nan_hint = "Lower `lr`, or check the data."
    progress_names = ("loss", "acc", "kl", "beta")

    def __init__(self, genotype, config, dataset, **kwargs):
        self.genotype = genotype
        super().__init__(config, dataset, **kwargs)

    def training_parts(self):
        cfg, ds = self.config, self.dataset
        train = ds.reader("train")
        if cfg.limit is not None:
            train = train.subset(np.arange(min(cfg.limit, len(train))))
        self.n_train = len(train)
        self._pixel_mean = np.asarray(ds.normalisation()[0], np.float32)
        return {"train": train}

    def build_model(self):
        cfg, ds = self.config, self.dataset
        model = network_lib.Network(
            ds.num_classes,
            self.genotype,
            layers=cfg.layers,
            channels=cfg.channels,
            stem_multiplier=cfg.stem_multiplier,
            weight_vd=cfg.weight_vd,
            auxiliary=cfg.auxiliary,
            drop_path=cfg.drop_path,
            threshold=cfg.threshold,
            normalisation=ds.normalisation(),
            seed=cfg.seed,
            channel_prior=cfg.channel_prior,
            channel_log_alpha_init=cfg.channel_log_alpha_init,
            channel_scale_init=cfg.channel_scale_init,
        )
        model.build((None,) + tuple(ds.image_shape))
        return model

    def build_optimizers(self, total_steps):
        cfg = self.config
        self.optimizer = optim.SGD(
            keras.optimizers.schedules.CosineDecay(
                cfg.lr, decay_steps=max(total_steps, 1), alpha=cfg.lr_min / cfg.lr
            ),
            momentum=cfg.momentum,
            weight_decay=cfg.weight_decay or None,
            global_clipnorm=cfg.grad_clip,
        )
        self.optimizer.exclude_from_weight_decay(
            variational.weight_decay_exclusions(self.model, include_means=cfg.decay_variational_means)
            + channel_prior_lib.decay_exclusions(self.model)
        )
        return {"optimizer": (self.optimizer, self.model.trainable_variables)}

    def augment(self, batch, seed):
        side = self.config.cutout
        if not side:
            return batch
        x, y = batch
        return cutout(x, side, seed, fill=self._pixel_mean), y

    def _loss(self, x, y):
        cfg, model = self.config, self.model
        logits, aux = model(x, training=True, return_aux=True)
        kl = tf.add_n(model.losses) if model.losses else tf.constant(0.0)
        loss, _, _ = variational.elbo_loss(y, logits, kl, global_batch_size=cfg.batch_size)
        if aux is not None:
            aux_ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=tf.cast(aux, tf.float32))
            loss += cfg.auxiliary_weight * tf.nn.compute_average_loss(aux_ce, global_batch_size=cfg.batch_size)
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), y), tf.float32))
        return loss, {"loss": loss, "correct": correct, "kl": kl}

    def replica_step(self, batches):
        x, y = batches["train"]
        stats, grads = self.loss_and_gradients(self._loss, self.model.trainable_variables, x, y)
        self.apply_gradients([(self.optimizer, grads)])
        return stats

    def begin_epoch(self, epoch):
        # DARTS ramps the drop-path rate linearly with the epoch.
        self.model.drop_path_progress.assign(epoch / self.config.epochs)

    def epoch_record(self, record, sums):
        pruned, total = variational.weight_sparsity(self.model)
        record.update(
            lr=float(self.optimizer.learning_rate),
            kl_network_weights=float(tf.add_n([l.kl() for l in variational.variational_layers(self.model)]))
            if total else 0.0,
            weight_sparsity=pruned / total if total else None,
        )
        pruned, total = channel_prior_lib.channel_sparsity(self.model)
        if total:
            record["channel_sparsity"] = pruned / total
        return record

    def epoch_line(self, record):
        line = f"val_loss {record['val_loss']:.4f}  val_acc {record['val_accuracy']:.4f}"
        if record["weight_sparsity"] is not None:
            line += f"  weight sparsity {record['weight_sparsity']:.3f}"
        if "channel_sparsity" in record:
            line += f"  channel sparsity {record['channel_sparsity']:.3f}"
        return line

    def run(self, out_dir=None, resume=False, tensorboard_dir=None):
        """Trains; writes the artefacts (and checkpoints) to `out_dir` when given.

        Returns:
            A `TrainResult`.
        """
        checkpoint_dir = None if out_dir is None else os.path.join(out_dir, runs.CHECKPOINT_SUBDIR)
        if resume:
            path = self.restore(checkpoint_dir)
            if self.verbose:
                print(f"Resuming from {path} (epoch {self.position['epoch'] + 1}, step {self.position['step']})")
        self.train(checkpoint_dir, tensorboard_dir)
        with self.faults():
            test_loss, test_acc = self.evaluate("test")
        # The trained network as it is (every weight the sparse training kept),
        # and after dead-channel elimination (only weights that compute).
        counts = counting.count_parameters(strip_lib.strip(self.model, shrink=False))
        layers = counts.pop("layers")
        shrunk = counting.count_parameters(strip_lib.strip(self.model))
        parameters = {**counts, "shrunk": {k: v for k, v in shrunk.items() if k != "layers"}}
        result = TrainResult(
            model=self.model,
            genotype=self.genotype,
            config=self.config,
            history=self.history,
            test_loss=test_loss,
            test_accuracy=test_acc,
            parameters=parameters,
            layer_sparsity=layers,
            dataset=self.dataset.name,
        )
        if out_dir is not None and distribute.is_chief(self.strategy):
            with self.faults():
                write_artefacts(result, self.dataset, out_dir)
            result.out_dir = os.fspath(out_dir)
        return result


def cutout(x, side, seed, fill=0.0):
    """Replaces a `side` x `side` square per image (clipped at the border) with `fill`.

    The square's centre is uniform over the image (DeVries & Taylor); the
    draw is a pure function of `seed` (shape `(2,)`).
    """
    shape = tf.shape(x)
    b, h, w = shape[0], shape[1], shape[2]
    centres = tf.random.stateless_uniform([b, 2], seed=seed, minval=0, maxval=tf.int32.max, dtype=tf.int32)
    cy = centres[:, 0] % h
    cx = centres[:, 1] % w
    top = cy - side // 2
    left = cx - side // 2
    rows = tf.range(h)[None, :, None]
    cols = tf.range(w)[None, None, :]
    inside_y = (rows >= top[:, None, None]) & (rows < top[:, None, None] + side)
    inside_x = (cols >= left[:, None, None]) & (cols < left[:, None, None] + side)
    mask = tf.cast(inside_y & inside_x, x.dtype)[..., None]
    fill = tf.cast(tf.reshape(fill, [1, 1, 1, -1]), x.dtype)
    return x * (1.0 - mask) + fill * mask


def write_artefacts(result, dataset, out_dir):
    """Writes model.keras, genotype.json, train_config.json and train_history.json."""
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    model_path = os.path.join(out_dir, "model.keras")
    tmp = os.path.join(out_dir, f".model-{os.getpid()}.keras")
    try:
        with files.writing(model_path, "the trained model"):
            result.model.save(tmp)
            os.replace(tmp, model_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    result.genotype.save(os.path.join(out_dir, "genotype.json"))
    result.config.save(os.path.join(out_dir, "train_config.json"))
    files.write_json(
        os.path.join(out_dir, "train_history.json"),
        {
            "dataset": dataset_info(dataset),
            "genotype_hash": result.genotype.hash(),
            "test_loss": result.test_loss,
            "test_accuracy": result.test_accuracy,
            "parameters": result.parameters,
            "layer_sparsity": result.layer_sparsity,
            "epochs": result.history,
        },
    )


def dataset_info(dataset):
    """What an exported model needs to know about its data."""
    return {
        "name": dataset.name,
        "image_shape": list(dataset.image_shape),
        "dtype": str(dataset.dtype),
        "input_range": list(dataset.input_range),
        "num_classes": int(dataset.num_classes),
    }


def train(
    genotype,
    dataset="mnist-5k",
    *,
    preset="quick",
    config=None,
    out_dir=None,
    strategy=None,
    epochs=None,
    seed=None,
    resume=False,
    overwrite=False,
    checkpoint_every=0,
    deterministic=False,
    tensorboard_dir=None,
    worker_timeout=None,
    collective_timeout=None,
    verbose=1,
):
    """Trains the network of `genotype` from scratch.

    Args:
        genotype: a `Genotype`, a zoo name (`tfvnas.models.zoo.zoo_names()`),
            a genotype JSON path, or a search output folder.
        dataset: a dataset name, a path (.npz or image directory),
            'tfrecord:PATTERN', 'tfds:NAME', a `tf.data.Dataset` of
            `(image, label)` pairs or a dict of them (`{"train", "val",
            "test"}`), or a `tfvnas.data.Dataset` / `StreamedDataset`
            (see `tfvnas.data.load`).
        preset: 'smoke', 'quick' or 'paper' (`tfvnas.config.TRAIN_PRESETS`).
        config: a `TrainConfig`, a dict of fields, or a JSON/YAML file path;
            its fields override the preset's.
        out_dir: where to write model.keras, genotype.json,
            train_config.json, train_history.json and checkpoints/.
        strategy: a `tf.distribute.Strategy` or a name ('auto', 'default',
            'mirrored', 'multiworker'); default the current strategy.
        epochs: overrides the number of epochs.
        seed: overrides the seed.
        resume: continue the run whose checkpoints are in `out_dir`; its
            saved configuration is used (`config`, `epochs` and `seed`, if
            given, must resolve with `preset` to that same configuration).
        overwrite: replace the run `out_dir` holds (without it, and without
            `resume`, a folder that holds a run is refused).
        checkpoint_every: also checkpoint every this many steps.
        tensorboard_dir: TensorBoard log folder: scalars per epoch (and, for a
            search, log_alpha histograms and a drawing of the cell so far).
        deterministic: seeds and op determinism.
        worker_timeout, collective_timeout: with a strategy given by name,
            how soon a multi-worker run notices a lost worker
            (`tfvnas.loops.distribute.make_strategy`).
        verbose: 0 silent, 1 progress bar and summary.

    Returns:
        A `TrainResult`.

    Raises:
        ValueError: for a bad genotype, dataset, config or resume folder, or
            a folder that holds a run (without `resume` or `overwrite`).
        FloatingPointError: when the loss stops being finite.
        tfvnas.runs.FolderInUse: another process runs in `out_dir`.
        tfvnas.files.WriteError: a write failed (a full disk).
        tfvnas.checks.WorkerLost: another worker of a multi-worker run stopped.
        tfvnas.loops.loop.Interrupted: after SIGTERM/SIGINT (a checkpoint is saved).
    """
    if not isinstance(genotype, genotype_lib.Genotype):
        genotype = zoo.load_genotype(genotype)
    genotype.validate()  # against the op registry
    runs.check_resume_overwrite(resume, overwrite)
    strategy, cfg, dataset = loop_lib.open_run(
        config_lib.TrainConfig, dataset, preset=preset, config=config, out_dir=out_dir, resume=resume,
        strategy=strategy, deterministic=deterministic, worker_timeout=worker_timeout,
        collective_timeout=collective_timeout, epochs=epochs, seed=seed)
    with runs.claim(out_dir, "training", resume=resume, overwrite=overwrite, chief=distribute.is_chief(strategy)):
        trainer = Trainer(genotype, cfg, dataset, strategy=strategy, verbose=verbose,
                          checkpoint_every=checkpoint_every)
        result = trainer.run(out_dir, resume=resume, tensorboard_dir=tensorboard_dir)
    if verbose:
        print(result.summary())
    return result
