"""The custom training loop shared by the search and the training of a network.

`Loop` owns what both have in common: the strategy, the per-epoch
distributed datasets, one `tf.function` step run through `strategy.run`,
the progress bar, the per-epoch history, the non-finite-loss stop,
checkpoints and resume, and SIGTERM/SIGINT handling. A subclass builds the
model and its optimizers and defines the per-replica step.

Checkpoints (`tf.train.CheckpointManager`, in `<out_dir>/checkpoints`) hold
the model (weights, gate state, batch-norm statistics and the state of every
`SeedGenerator`, so the noise continues where it stopped) and the
optimizers. Beside each checkpoint `ckpt-N`, `state-N.json` holds the
position (epoch, step) and the history so far. The checkpoint is written
first, its state second and the checkpoint index last, so a state file
always names a complete checkpoint, and a save that fails (a full disk, a
kill) leaves the previous checkpoint as the newest complete one; a failed
save removes what it wrote. A resume restores the newest checkpoint that
restores and says which ones it skipped. Data order is a pure function of
`(seed, epoch)`, so a resumed run sees the batches the uninterrupted run
would have seen.

Faults become one line each (`Loop.faults`): a worker of a multi-worker run
that stops (TensorFlow's coordination service notices the missing
heartbeats, `make_strategy`'s `worker_timeout`) is `WorkerLost`, a write that
fails is `tfvnas.files.WriteError`, and both name the newest complete
checkpoint to resume from.

Input: each split is a reader (`tfvnas.readers`) that builds this worker's
pipeline from a `tf.distribute.InputContext` (`input_context`): on several
workers each reads and decodes only its own share. Data order is a pure
function of `(seed, epoch)` and of the number of workers.
"""

import contextlib
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time

import keras
import numpy as np
import tensorflow as tf

from tfvnas import config as config_lib
from tfvnas import data as data_lib
from tfvnas import files, precision, readers, runs
from tfvnas.checks import WorkerLost
from tfvnas.layers import batch_normalization as bn_lib
from tfvnas.layers import variational
from tfvnas.loops import optim
from tfvnas.loops.distribute import (
    STRATEGIES,
    HostBatches,
    check_strategy,
    checked_batches,
    data_checks,
    enable_determinism,
    input_context,
    is_chief,
    make_strategy,
    num_workers,
)


class Interrupted(KeyboardInterrupt):
    """Raised after a SIGTERM or SIGINT once a checkpoint has been saved."""


def open_run(config_class, dataset, *, preset="quick", config=None, out_dir=None, resume=False, strategy=None,
             deterministic=False, worker_timeout=None, collective_timeout=None, **overrides):
    """What every run does first: `(strategy, config, dataset)` for a search, a training, `run` or `tune`.

    The strategy from its name (`make_strategy`) or as given (None: the
    current one); the configuration settled in one place
    (`tfvnas.config.settle`); determinism when asked for, seeded by that
    configuration; and the data set, loaded when named, its validation split
    drawn with the configuration's seed, so that every command given the
    same configuration sees the same splits.
    """
    if isinstance(strategy, str):
        strategy = make_strategy(strategy, worker_timeout=worker_timeout, collective_timeout=collective_timeout)
    elif strategy is not None and not isinstance(strategy, tf.distribute.Strategy):
        raise ValueError(f"`strategy` must be a tf.distribute.Strategy, one of {', '.join(STRATEGIES)}, or None. "
                         f"Received: strategy={strategy!r}")
    cfg = config_lib.settle(config_class, preset=preset, config=config, out_dir=out_dir, resume=resume, **overrides)
    if deterministic:
        enable_determinism(cfg.seed)
    dataset = data_lib.load(dataset, seed=cfg.seed)  # a dataset object is returned as it is
    return strategy, cfg, dataset


_EPOCH_DATA_OPTIONS = tf.data.Options()
_EPOCH_DATA_OPTIONS.autotune.enabled = False


class Loop:
    """Base of `Searcher` and `Trainer`.

    Subclasses implement `build_model()`, `build_optimizers(total_steps)`
    (returning `{name: (optimizer, variables)}`), `training_parts()`
    (returning `{name: reader}`, the readers (`tfvnas.readers`) each step
    draws one batch from) and `replica_step(batches)`; they may override
    `end_epoch(epoch)`, `epoch_record(record)` and `augment(batch, seed)`.

    Args:
        config: a `SearchConfig` or `TrainConfig`.
        dataset: a `tfvnas.data.Dataset` or `tfvnas.streams.StreamedDataset`.
        strategy: a `tf.distribute.Strategy`; default the current one.
        verbose: 0 silent, 1 progress bar and summary lines.
        checkpoint_every: also checkpoint every this many steps (0: only at
            the end of each epoch).
    """

    kind = "run"

    def __init__(self, config, dataset, *, strategy=None, verbose=1, checkpoint_every=0):
        self.config = config
        self.dataset = dataset
        self.strategy = strategy or tf.distribute.get_strategy()
        check_strategy(self.strategy)
        self.verbose = verbose
        if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 0:
            raise ValueError(
                "`checkpoint_every` must be a non-negative int (steps; 0: every epoch only). "
                f"Received: checkpoint_every={checkpoint_every!r}"
            )
        self.checkpoint_every = checkpoint_every
        self._check_jit_compile()
        self._context = input_context(self.strategy)
        self._parts = self.training_parts()
        self._check_batch_size()
        self.steps_per_epoch = min(part.steps(config.batch_size, self._context) for part in self._parts.values())
        self.total_steps = config.epochs * self.steps_per_epoch
        with self.strategy.scope():
            keras.utils.set_random_seed(config.seed)
            with precision.policy_scope(config.precision):
                self.model = self.build_model()
            if getattr(config, "sync_bn", False):
                bn_lib.synchronize_batch_norm(self.model)
            self.optimizers = self.build_optimizers(self.total_steps)
            # Built under the scope before the first step (else the first
            # distributed step fails with a placeholder error).
            for optimizer, variables in self.optimizers.values():
                optimizer.build(variables)
            # float16 gradients need a loss scale; bfloat16 has float32's range.
            self.loss_scale = optim.DynamicLossScale() if config.precision == "mixed_float16" else None
        # Keras 3 models do not expose layers held in lists to
        # tf.train.Checkpoint, so the checkpoint tracks every model variable
        # (weights, gate state, BN statistics, SeedGenerator states) in the
        # model's own, deterministic order.
        self._checkpoint = tf.train.Checkpoint(
            model_variables=list(self.model.variables),
            **{name: opt for name, (opt, _) in self.optimizers.items()},
            **({"loss_scale": self.loss_scale} if self.loss_scale is not None else {}),
        )
        self.history = []
        self.position = {"epoch": 0, "step_in_epoch": 0, "step": 0, "sums": None}
        self.checkpoint_dir = None
        self.last_checkpoint = (None, None)  # (prefix, position) of the newest complete checkpoint
        self.skipped_checkpoints = []
        self._stop_signal = None
        self.summaries = None  # a tfvnas.loops.tensorboard.EpochSummaries while `train` runs
        self._multi_worker = num_workers(self.strategy) > 1
        self._build_steps()

    # -- to implement -----------------------------------------------------

    def build_model(self):
        raise NotImplementedError

    def build_optimizers(self, total_steps):
        raise NotImplementedError

    def checkpoint_state(self):
        """JSON-able state saved beside each checkpoint (besides position and history)."""
        return {}

    def restore_checkpoint_state(self, state):
        """Restores what `checkpoint_state` returned."""

    def training_parts(self):
        raise NotImplementedError

    def replica_step(self, batches):
        """One step on one replica's `batches` (`{name: (x, y)}`); returns a dict of statistics.

        The KL in the model's `losses` is already scaled: the loop sets the
        model's `kl_scale` to `beta / N_train` before every step.
        """
        raise NotImplementedError

    def begin_epoch(self, epoch):
        """Called before the first step of an epoch (also a resumed one)."""

    def end_epoch(self, epoch):
        """Called after the last step of an epoch; returns extra record fields."""
        return {}

    def before_step(self, step):
        """Called before global step `step` runs (a schedule of the model's own variables)."""

    def after_step(self, sums):
        """Called after every step, with the epoch's running sums (saved with checkpoints)."""

    def finished(self):
        """Whether the run is done before its last epoch (checked between epochs; default: never)."""
        return False

    def augment(self, batch, seed):
        """Training-time augmentation of one `(x, y)` batch (default: none)."""
        return batch

    # -- updates ----------------------------------------------------------

    def _check_jit_compile(self):
        if self.config.jit_compile and self.config.sync_bn and self.strategy.num_replicas_in_sync > 1:
            raise ValueError(
                "`jit_compile` cannot be combined with `sync_bn` on several replicas: synchronised batch norm "
                "all-reduces inside the forward pass, and collectives inside an XLA cluster do not compile "
                "under MirroredStrategy on CPU. Turn one of them off. "
                f"Received: jit_compile=True, sync_bn=True, replicas={self.strategy.num_replicas_in_sync}"
            )

    def loss_and_gradients(self, loss_fn, variables, *args):
        """`(stats, grads)` of one update, on one replica.

        `loss_fn(*args)` returns `(loss, stats)`; `grads` are the gradients
        of `loss` with respect to `variables` (None for a variable the loss
        does not reach).

        With the config's `jit_compile`, the forward and backward passes are
        one XLA cluster (`tf.function(jit_compile=True)`), and the
        optimizers' all-reduce and update run after it, outside: collectives
        inside an XLA cluster do not compile under `MirroredStrategy` on
        CPU. Assignments that synchronise the replicas (the moving
        statistics of mirrored batch norms) are returned by the cluster and
        made after it (`tfvnas.layers.batch_normalization.deferred_sync_updates`); the
        others (plain variables, per-replica noise state) stay inside.

        With a loss scale (`precision='mixed_float16'`), the gradients are
        those of the scaled loss, divided by the scale.
        """
        loss_scale = self.loss_scale
        synchronised = []

        def compute(*args):
            with bn_lib.deferred_sync_updates() as updates:
                with tf.GradientTape() as tape:
                    loss, stats = loss_fn(*args)
                    if loss_scale is not None:
                        loss = loss * loss_scale.scale
                grads = tape.gradient(loss, variables)
            if loss_scale is not None:
                inverse = 1.0 / loss_scale.scale
                grads = [None if g is None else g * tf.cast(inverse, g.dtype) for g in grads]
            synchronised[:] = [variable for variable, _ in updates]
            return stats, grads, [value for _, value in updates]

        if self.config.jit_compile:
            compute = tf.function(compute, jit_compile=True)
        stats, grads, values = compute(*args)
        for variable, value in zip(synchronised, values):
            variable.assign(value)
        return stats, grads

    def apply_gradients(self, updates):
        """Applies `[(optimizer, grads)]`; with a loss scale, skips non-finite updates and adjusts the scale."""
        finite = [optimizer.apply(grads, skip_nonfinite=self.loss_scale is not None) for optimizer, grads in updates]
        if self.loss_scale is not None:
            self.loss_scale.update(tf.reduce_all(tf.stack(finite)))

    # -- data -------------------------------------------------------------

    def _check_batch_size(self):
        cfg = self.config
        smallest = min(len(part) for part in self._parts.values())
        if cfg.batch_size > smallest:
            what = "half of the training data" if len(self._parts) > 1 else "the training data"
            raise ValueError(
                f"`batch_size` must be at most the size of {what} ({smallest} examples). "
                f"Received: batch_size={cfg.batch_size}"
            )
        workers = self._context.num_input_pipelines
        share = min(part.smallest_share(self._context) for part in self._parts.values())
        if workers > 1 and cfg.batch_size // workers > share:
            raise ValueError(
                f"`batch_size` / workers must be at most the examples the worker with the fewest reads "
                f"({share} of {smallest}: each of the {workers} workers reads its own share). "
                f"Received: batch_size={cfg.batch_size}"
            )
        n_replicas = self.strategy.num_replicas_in_sync
        if cfg.batch_size % n_replicas:
            raise ValueError(
                f"`batch_size` (the global batch) must be divisible by the number of replicas "
                f"({n_replicas}). Received: batch_size={cfg.batch_size}"
            )

    def epoch_data(self, epoch, skip=0):
        """This worker's distributed batches of one epoch, a pure function of (seed, epoch, workers).

        `skip` batches already trained on are skipped before they are read
        (positions for an indexed reader, records before decoding for a
        sequential one).
        """
        cfg, context = self.config, self._context
        parts = {}
        for k, (name, part) in enumerate(sorted(self._parts.items())):
            seed = (cfg.seed * 1_000_003 + epoch * 101 + k) % (2**31 - 1)
            parts[name] = part.epoch(cfg.batch_size, seed=seed, steps=self.steps_per_epoch, skip=skip,
                                     context=context)
        ds = tf.data.Dataset.zip(parts).enumerate(start=skip)
        epoch_seed = (cfg.seed * 7919 + epoch) % (2**31 - 1)
        workers, worker = context.num_input_pipelines, context.input_pipeline_id

        def augment(i, batches):
            seed = tf.stack([tf.constant(epoch_seed, tf.int64), i])
            if workers > 1:  # each worker's rows draw their own augmentation
                seed = tf.random.experimental.stateless_fold_in(seed, worker)
            return {n: self.augment(v, seed) for n, v in batches.items()}

        ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.prefetch(tf.data.AUTOTUNE).with_options(_EPOCH_DATA_OPTIONS)
        return self._distribute(ds)

    def _eval_data(self, reader):
        return self._distribute(reader.evaluation(self.config.batch_size, self._context).prefetch(tf.data.AUTOTUNE))

    def _distribute(self, ds):
        return HostBatches(self.strategy, ds, self._context)

    # -- steps ------------------------------------------------------------

    def _build_steps(self):
        strategy = self.strategy

        @tf.function
        def train_step(batches):
            per_replica = strategy.run(self.replica_step, args=(batches,))
            out = {}
            for key, value in per_replica.items():
                op = tf.distribute.ReduceOp.MEAN if key.endswith("kl") else tf.distribute.ReduceOp.SUM
                out[key] = strategy.reduce(op, value, axis=None)
            return out

        def eval_replica(batch):
            x, y = batch
            logits = tf.cast(self.model(x, training=False), tf.float32)
            ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            pred = tf.argmax(logits, -1, output_type=tf.int32)
            return {
                "loss_sum": tf.reduce_sum(ce),
                "correct": tf.reduce_sum(tf.cast(tf.equal(pred, y), tf.float32)),
                "count": tf.cast(tf.shape(y)[0], tf.float32),
            }

        self._val_data = self._eval_data(self.dataset.reader("val"))

        @tf.function(reduce_retracing=True)
        def eval_step(batch):
            per = strategy.run(eval_replica, args=(batch,))
            return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for k, v in per.items()}

        @tf.function
        def workers_stopping(flag):
            per = strategy.run(tf.identity, args=(flag,))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per, axis=None)

        self.train_step = train_step
        self._eval_step = eval_step
        self._workers_stopping = workers_stopping

    def beta(self, step):
        """The KL weight beta at global step `step`: warmed up to the config's `kl_weight`
        over its `kl_warmup` share of the steps (`tfvnas.layers.variational.warmed_up_beta`)."""
        cfg = self.config
        return variational.warmed_up_beta(step, cfg.kl_warmup * self.total_steps, cfg.kl_weight)

    def evaluate(self, split="val"):
        """`(loss, accuracy)` of the inference path on the `val` or `test` split."""
        if split == "val":
            data = self._val_data
        elif split == "test":
            data = self._eval_data(self.dataset.reader("test"))
        else:
            raise ValueError(f"`split` must be 'val' or 'test'. Received: split={split!r}")
        return self._evaluate(data)

    def evaluate_arrays(self, x, y):
        """`(loss, accuracy)` of the inference path on the images `x` with labels `y`."""
        return self.evaluate_reader(readers.IndexedReader.from_arrays(x, y))

    def evaluate_reader(self, reader):
        """`(loss, accuracy)` of the inference path on the examples of a reader (`tfvnas.readers`)."""
        return self._evaluate(self._eval_data(reader))

    def _evaluate(self, data):
        totals = {"loss_sum": 0.0, "correct": 0.0, "count": 0.0}
        with data_checks():
            for batch in data:
                for k, v in self._eval_step(batch).items():
                    totals[k] += float(v)
        n = max(totals["count"], 1.0)
        return totals["loss_sum"] / n, totals["correct"] / n

    # -- checkpoints ------------------------------------------------------

    def checkpoint_path(self):
        """The newest complete checkpoint prefix, or None."""
        if self.checkpoint_dir is None:
            return None
        numbers = runs.checkpoint_numbers(self.checkpoint_dir)
        return os.path.join(self.checkpoint_dir, f"ckpt-{numbers[0]}") if numbers else None

    def checkpoint_bytes(self):
        """About how many bytes a checkpoint takes: the newest one's files, else every variable it will hold
        (from shapes, so no collective) and its index, about 200 bytes a variable."""
        newest = self.checkpoint_path()
        if newest is not None:
            folder, name = os.path.split(newest)
            sizes = [os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)
                     if f.startswith(name + ".")]
            if sizes:
                return sum(sizes)
        variables = list(self.model.variables)
        for optimizer, _ in self.optimizers.values():
            variables += list(optimizer.variables)
        return sum(int(np.prod(v.shape)) * tf.as_dtype(v.dtype).size + 200 for v in variables)

    def save_checkpoint(self):
        """Saves model, optimizers and position; returns the checkpoint prefix.

        The checkpoint first, then its state file, then the index and the
        deletion of all but the two newest (and of any newer, left by a run
        this one resumed past): a state file always names a complete
        checkpoint. A save that fails removes what it wrote (TensorFlow's
        `ckpt-N_temp/` folder included) and raises `tfvnas.files.WriteError`.
        """
        if self.checkpoint_dir is None:
            return None
        number = self.position["step"]
        chief = is_chief(self.strategy)
        # Every worker takes part in the save (reading distributed variables
        # can be a collective operation); only the chief's copy is kept. The
        # others write to a temporary folder outside the output folder and
        # delete it.
        directory = self.checkpoint_dir if chief else tempfile.mkdtemp(prefix="tfvnas-worker-checkpoint-")
        prefix = os.path.join(directory, f"ckpt-{number}")
        try:
            with files.writing(prefix, "the checkpoint", needed=self.checkpoint_bytes()):
                os.makedirs(directory, exist_ok=True)
                # Counted as `tf.train.CheckpointManager.save` counts (a restore expects the counter).
                self._checkpoint.save_counter.assign_add(1)
                self._checkpoint.write(prefix)
            if chief:
                state = {"position": self.position, "history": self.history, "config": self.config.to_dict(),
                         "dataset": self.dataset.name, "extra": self.checkpoint_state()}
                files.write_json(os.path.join(directory, f"state-{number}.json"), state, indent=None,
                                 what="the checkpoint state")
        except BaseException:
            if chief:
                _remove_checkpoints(directory, [number])
            raise
        finally:
            if not chief:
                shutil.rmtree(directory, ignore_errors=True)
        path = os.path.join(self.checkpoint_dir, f"ckpt-{number}")
        if chief:
            kept = [n for n in runs.checkpoint_numbers(directory) if n <= number][:2]
            # TensorFlow's index (`tf.train.latest_checkpoint` reads it), as `tf.train.CheckpointManager`
            # writes it: paths relative to the folder, oldest first. A resume does not need it.
            index = f'model_checkpoint_path: "ckpt-{number}"\n' + "".join(
                f'all_model_checkpoint_paths: "ckpt-{n}"\n' for n in reversed(kept))
            files.atomic_write(os.path.join(directory, "checkpoint"), index, "the checkpoint index")
            _remove_checkpoints(directory, exclude=kept)
        self.last_checkpoint = (path, dict(self.position))
        return path

    def restore(self, checkpoint_dir):
        """Restores the newest checkpoint in `checkpoint_dir` that restores; returns its prefix.

        A checkpoint whose state or tensors do not read (truncated, damaged)
        is skipped with a line on stderr that names it, and the next older
        one is tried; `skipped_checkpoints` lists `(prefix, reason)`.

        Raises:
            ValueError: when there is no checkpoint or none restores, or one
                was written with a different configuration.
        """
        checkpoint_dir = os.fspath(checkpoint_dir)
        numbers = runs.checkpoint_numbers(checkpoint_dir)
        if not numbers:
            raise ValueError(
                f"No checkpoint to resume from in {checkpoint_dir!r} "
                "(expected the 'checkpoints' folder a previous run wrote)."
            )
        self.skipped_checkpoints = []
        for number in numbers:
            path = os.path.join(checkpoint_dir, f"ckpt-{number}")
            try:
                state = runs.read_state(checkpoint_dir, number)
                saved = type(self.config).from_dict(state["config"])
            except ValueError as e:
                self._skip(path, str(e))
                continue
            runs.check_resume_config(saved, self.config, checkpoint_dir)
            if state.get("dataset", self.dataset.name) != self.dataset.name:
                raise ValueError(
                    f"The checkpoint in {checkpoint_dir!r} was written on the dataset {state['dataset']!r}. "
                    f"Resume on the same data (--dataset {state['dataset']}). Received: {self.dataset.name!r}"
                )
            try:
                self._checkpoint.restore(path).assert_consumed()
            except Exception as e:  # noqa: BLE001 - a damaged file fails as OpError, IndexError, AssertionError...
                self._skip(path, _op_error_text(e))
                continue
            self.position = state["position"]
            self.history = state["history"]
            self.restore_checkpoint_state(state.get("extra", {}))
            self.last_checkpoint = (path, dict(self.position))
            return path
        raise ValueError(
            f"No checkpoint in {checkpoint_dir!r} restores: "
            + "; ".join(f"{os.path.basename(p)}: {reason}" for p, reason in self.skipped_checkpoints)
        )

    def _skip(self, path, reason):
        self.skipped_checkpoints.append((path, reason))
        print(f"tfvnas: skipped the checkpoint {path}, which does not restore: {reason}", file=sys.stderr,
              flush=True)

    # -- faults -----------------------------------------------------------

    def resume_hint(self):
        """Where a run that stops here continues from."""
        path, position = self.last_checkpoint
        if path is None:
            return "No checkpoint was saved yet."
        return (f"The newest complete checkpoint is {path} (epoch {position['epoch'] + 1}, step "
                f"{position['step']}); --resume (resume=True) continues from it.")

    @contextlib.contextmanager
    def faults(self):
        """Turns a lost worker (`WorkerLost`) or a failed write (`WriteError`) into one line with `resume_hint`."""
        try:
            yield
        except files.WriteError as e:
            fix = "Free space" if e.no_space else "Make it writable"
            raise files.WriteError(f"{e} {fix}, then resume. {self.resume_hint()}", e.path, e.no_space) from None
        except tf.errors.OpError as e:
            if not (self._multi_worker and (isinstance(e, _PEER_ERRORS) or "Collective ops is aborted" in str(e))):
                raise
            raise WorkerLost(self._lost_message(e)) from None

    def _lost_message(self, error):
        resolver = self.strategy.cluster_resolver
        me = (resolver.task_type, int(resolver.task_id))
        cluster = resolver.cluster_spec().as_dict()
        text = getattr(error, "message", None) or str(error)
        tasks = [(job, int(i)) for job, i in re.findall(r"/job:(\w+)(?:/replica:\d+)?/task:(\d+)", text)]
        lost = [t for t in dict.fromkeys(tasks) if t != me and t[0] in cluster and t[1] < len(cluster[t[0]])]
        who = ", ".join(f"{job} {i} ({cluster[job][i]})" for job, i in lost) or "another worker"
        if "heartbeat" in text:
            why = "it stopped sending heartbeats"
        elif isinstance(error, tf.errors.DeadlineExceededError):
            why = "a collective operation waited longer than the collective timeout"
        elif re.search(r"Socket closed|Connection reset|Failed to connect|connection refused", text, re.I):
            why = "its connection closed"
        else:
            why = _first_line(text.split("Collective ops is aborted by:")[-1])
        return (f"Lost {who}: {why}. This worker ({me[0]} {me[1]}) stopped. {self.resume_hint()} "
                "Restart every worker with --resume.")

    # -- loop -------------------------------------------------------------

    def _install_signal_handlers(self):
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum, frame):
            self._stop_signal = signal.Signals(signum).name

        previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handler)
        return previous

    def train(self, checkpoint_dir=None, tensorboard_dir=None):
        """Runs (or continues) the epochs; returns the history.

        Args:
            checkpoint_dir: where checkpoints go (None: none are written).
            tensorboard_dir: where TensorBoard summaries go, one step per
                epoch (None: none are written).

        Raises:
            FloatingPointError: when the loss stops being finite (the last
                good checkpoint is kept).
            Interrupted: after SIGTERM/SIGINT, once a checkpoint is saved.
        """
        self.checkpoint_dir = None if checkpoint_dir is None else os.fspath(checkpoint_dir)
        if tensorboard_dir is not None:
            from tfvnas.loops.tensorboard import EpochSummaries

            self.summaries = EpochSummaries(tensorboard_dir)
        previous = self._install_signal_handlers()
        try:
            with self.faults():
                while self.position["epoch"] < self.config.epochs and not self.finished():
                    self._run_epoch()
        finally:
            for sig, h in previous.items():
                signal.signal(sig, h)
        return self.history

    def _stop_requested(self):
        """Whether to stop after this step.

        On several workers the answer is whether any worker was signalled
        (a sum over all of them), so every worker stops after the same step
        and takes part in the same last save; otherwise the workers still
        running would wait forever in the next step's collectives.
        """
        if not self._multi_worker:
            return self._stop_signal is not None
        flag = tf.constant(0.0 if self._stop_signal is None else 1.0)
        return float(self._workers_stopping(flag)) > 0

    def _run_epoch(self):
        cfg = self.config
        epoch = self.position["epoch"]
        skip = self.position["step_in_epoch"]
        sums = self.position["sums"] or {"loss": 0.0, "correct": 0.0, "arch_loss": 0.0, "arch_correct": 0.0, "seen": 0}
        start = time.perf_counter()
        bar = None
        if self.verbose:
            print(f"Epoch {epoch + 1}/{cfg.epochs}" + (f" (resumed at step {skip + 1})" if skip else ""))
            bar = keras.utils.Progbar(self.steps_per_epoch, stateful_metrics=list(self.progress_names))
        self.begin_epoch(epoch)
        status = self.progress_status()
        stats = {}
        for i, batches in enumerate(checked_batches(self.epoch_data(epoch, skip)), start=skip):
            beta = self.beta(self.position["step"])
            # The model's KL scale, read by every KL layer (tfvnas.layers.variational).
            self.model.kl_scale.assign(variational.kl_scale(beta, self.n_train))
            self.before_step(self.position["step"])
            stats = {k: float(v) for k, v in self.train_step(batches).items()}
            if not math.isfinite(stats["loss"]):
                last = self.checkpoint_path()
                if bar is not None:
                    print()  # end the progress bar's line before the message
                raise FloatingPointError(
                    f"The {self.kind} loss became {stats['loss']} at epoch {epoch + 1}, step {i + 1} "
                    f"(global step {self.position['step'] + 1}). {self.nan_hint} "
                    + (f"The last good checkpoint is {last}." if last else "No checkpoint was saved.")
                )
            sums["seen"] += cfg.batch_size
            for k in ("loss", "arch_loss"):
                if k in stats:
                    sums[k] += stats[k] * cfg.batch_size
            for k in ("correct", "arch_correct"):
                if k in stats:
                    sums[k] += stats[k]
            self.position.update(step=self.position["step"] + 1, step_in_epoch=i + 1, sums=sums)
            self.after_step(sums)
            if bar is not None:
                seen = sums["seen"]
                bar.update(
                    i + 1,
                    values=[("loss", sums["loss"] / seen), ("acc", sums["correct"] / seen),
                            ("kl", stats.get("kl", 0.0)), ("beta", beta), *status],
                )
            if self._stop_requested():
                path = self.save_checkpoint()
                if bar is not None:
                    print()
                by = self._stop_signal or "a signal to another worker"
                raise Interrupted(
                    f"Stopped by {by} at epoch {epoch + 1}, step {i + 1}. "
                    + (f"Checkpoint saved: {path}; continue with --resume." if path else "No checkpoint directory.")
                )
            if (
                self.checkpoint_every
                and self.position["step"] % self.checkpoint_every == 0
                and i + 1 < self.steps_per_epoch
            ):
                self.save_checkpoint()
        record = {"epoch": epoch + 1, "step": self.position["step"]}
        record.update(self.end_epoch(epoch))
        val_loss, val_acc = self.evaluate("val")
        seen = max(sums["seen"], 1)
        record.update(
            beta=self.beta(self.position["step"]),
            train_loss=sums["loss"] / seen,
            train_accuracy=sums["correct"] / seen,
            val_loss=val_loss,
            val_accuracy=val_acc,
        )
        record = self.epoch_record(record, sums)
        record["time_s"] = round(time.perf_counter() - start, 3)
        self.history.append(record)
        if self.summaries is not None and is_chief(self.strategy):
            self.write_summaries(record)
        self.position = {"epoch": epoch + 1, "step_in_epoch": 0, "step": self.position["step"], "sums": None}
        if self.verbose:
            print("  " + self.epoch_line(record))
        self.save_checkpoint()

    # -- reporting (overridable) ------------------------------------------

    progress_names = ("loss", "acc", "kl", "beta")
    nan_hint = "Lower the learning rate, or check the data."

    def progress_status(self):
        """Extra `(name, value)` pairs the progress bar shows through the epoch."""
        return []

    def epoch_record(self, record, sums):
        return record

    def write_summaries(self, record):
        """TensorBoard summaries of one epoch (scalars of the record by default)."""
        self.summaries.scalars(record, record["epoch"])

    def epoch_line(self, record):
        return f"val_loss {record['val_loss']:.4f}  val_acc {record['val_accuracy']:.4f}"


# What a worker sees when another one stops: the coordination service's
# "tasks are unhealthy" (UnavailableError), a closed connection, a
# collective timeout.
_PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError)


def _first_line(text):
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


def _op_error_text(error):
    """The first line of an error's message, without TensorFlow's `{{function_node ...}}` and `[Op:...]` frames."""
    text = _first_line(getattr(error, "message", None) or str(error) or type(error).__name__)
    return re.sub(r"\s*\[Op:\w+\]$", "", re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", text))


def _remove_checkpoints(directory, numbers=None, exclude=()):
    """Deletes checkpoints `numbers` (None: all but `exclude`) with their states, and leftovers of failed saves.

    Leftovers: TensorFlow's `ckpt-N_temp/` folders and the temporary files of
    atomic writes, which only a save that failed or a killed process leaves.
    """
    pattern = re.compile(r"^(?:ckpt-(\d+)(?:\.index|\.data-\d+-of-\d+)|state-(\d+)\.json)$")
    for name in os.listdir(directory) if os.path.isdir(directory) else ():
        path = os.path.join(directory, name)
        if re.match(r"^ckpt-\d+_temp$", name) or name.startswith(".") and name.endswith(".tmp"):
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
            continue
        match = pattern.match(name)
        if match:
            n = int(match.group(1) or match.group(2))
            if (n in numbers) if numbers is not None else (n not in exclude):
                os.remove(path)
