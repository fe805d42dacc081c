"""Distribution plumbing: strategies by name, who is chief, each worker's input and its replicas' batches.

`make_strategy` turns a name into a `tf.distribute.Strategy` (one per
process and name: TensorFlow's collectives keep process-wide state), with
the coordination service's heartbeat timeout and the collectives' timeout
of a multi-worker run; `input_context` tells a worker which share of the
input it reads; `local_cluster` gives `TF_CONFIG` values for workers on this
machine; `HostBatches` cuts a worker's batches into its replicas' slices.
"""

import contextlib
import json
import os
import socket

import keras
import tensorflow as tf

from tfvnas import checks, choices, readers

STRATEGIES = choices.STRATEGIES


def make_strategy(name="auto", *, worker_timeout=None, collective_timeout=None):
    """A `tf.distribute.Strategy` by name.

    `auto` picks `MultiWorkerMirroredStrategy` when `TF_CONFIG` is set,
    `MirroredStrategy` when more than one GPU is visible, and the default
    strategy otherwise. Create it before any other TensorFlow work (a
    multi-worker strategy must be created first).

    Args:
        name: one of `STRATEGIES`.
        worker_timeout: multi-worker only: seconds without a heartbeat after
            which TensorFlow's coordination service declares a worker lost and
            aborts every other worker's collectives (None: TensorFlow's
            default, 10 s). A survivor stops within about this time.
        collective_timeout: multi-worker only: seconds after which one
            collective operation that waits gives up (None: never). It
            catches a worker that hangs but still sends heartbeats; it must
            exceed the longest wait of one worker for another, the first
            step's trace included (minutes on a busy CPU), and TensorFlow
            starts a thread per collective to time it.

    Raises:
        ValueError: for an unknown name or a timeout that is not a positive number.
    """
    if name not in STRATEGIES:
        raise ValueError(
            f"`strategy` must be one of {', '.join(STRATEGIES)}. Received: strategy={name!r}"
        )
    for key, value in (("worker_timeout", worker_timeout), ("collective_timeout", collective_timeout)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
            raise ValueError(f"`{key}` must be a positive number of seconds or None. Received: {key}={value!r}")
    if name == "auto":
        if os.environ.get("TF_CONFIG"):
            name = "multiworker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            name = "mirrored"
        else:
            name = "default"
    if name == "multiworker":
        # Not kept in a module-level cache: a multi-worker strategy alive at
        # interpreter exit stalls the coordination service's shutdown.
        if worker_timeout is not None:
            _configure_coordination(worker_timeout)
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=collective_timeout)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    if name == "mirrored":
        return mirrored_strategy()
    return tf.distribute.get_strategy()


def _configure_coordination(worker_timeout):
    """Sets the heartbeat timeout of TensorFlow's coordination service before the multi-worker strategy starts it.

    `MultiWorkerMirroredStrategy` configures the service itself, with the
    default timeout, unless it is configured already; TensorFlow has no
    public setting for the timeout, so this makes the strategy's own call
    (the same jobs and leader) with the timeout given.
    """
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2  # noqa: PLC0415 - no public API
    from tensorflow.python.distribute import multi_worker_util  # noqa: PLC0415
    from tensorflow.python.eager import context  # noqa: PLC0415

    if context.context().coordination_service is not None:
        return  # configured once per process; a second strategy shares it
    cluster = tf.distribute.cluster_resolver.TFConfigClusterResolver().cluster_spec()
    jobs = [coordination_config_pb2.CoordinatedJob(name=job, num_tasks=cluster.num_tasks(job))
            for job in ("chief", "worker") if job in cluster.jobs]
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=multi_worker_util.coordination_leader(cluster),
        coordinated_jobs=jobs,
        heartbeat_timeout_in_ms=int(worker_timeout * 1000),
    )


# One strategy per device set and process. TensorFlow numbers the collective
# operations of every `MirroredStrategy` from the same start, so a second
# strategy over the same devices reuses the first one's collective keys and
# its all-reduces fail ("Shape mismatch in the collective instance 100").
_STRATEGY_CACHE = {}
_COLLECTIVE_OWNERS = {}


def mirrored_strategy(devices=None):
    """The process's `MirroredStrategy` over `devices` (default: all GPUs, else the CPU).

    Every call with the same devices returns the same object: see
    `check_strategy` for why a second one cannot be used.
    """
    key = ("mirrored", tuple(_canonical_device(d) for d in devices) if devices is not None else None)
    if key not in _STRATEGY_CACHE:
        _STRATEGY_CACHE[key] = tf.distribute.MirroredStrategy(devices)
    return _STRATEGY_CACHE[key]


def _canonical_device(name):
    """One spelling per local device: "/cpu:0", "CPU:0" and "/job:localhost/device:CPU:0" agree."""
    spec = tf.DeviceSpec.from_string(name)
    return spec.replace(
        job=spec.job or "localhost",
        replica=0 if spec.replica is None else spec.replica,
        task=0 if spec.task is None else spec.task,
        device_index=0 if spec.device_index is None else spec.device_index,
    ).to_string()


def check_strategy(strategy):
    """Refuses a second collective `MirroredStrategy` over devices another one already used.

    Raises:
        ValueError: naming the devices and the fix (one strategy per process,
            e.g. from `mirrored_strategy`, passed to every call).
    """
    if not isinstance(strategy, tf.distribute.MirroredStrategy):
        return
    extended = strategy.extended
    cross_device_ops = getattr(extended, "_cross_device_ops", None) or getattr(extended, "_collective_ops", None)
    if type(cross_device_ops).__name__ != "CollectiveAllReduce":
        return  # NCCL, hierarchical copy or reduction to one device: no collective keys
    devices = tuple(extended.worker_devices)
    owner = _COLLECTIVE_OWNERS.setdefault(devices, strategy)
    if owner is not strategy:
        raise ValueError(
            f"This process already ran a MirroredStrategy over {', '.join(devices)}; a second one over the "
            "same devices would reuse its collective keys and fail in its first all-reduce (a TensorFlow "
            "limitation). Create one strategy and pass it to every call, e.g. "
            "`tfvnas.loops.distribute.mirrored_strategy(devices)`, or pass `strategy=\"mirrored\"`. "
            f"Received: a new {type(strategy).__name__} object"
        )


def enable_determinism(seed):
    """Seeds Python, NumPy, TensorFlow and Keras and turns on op determinism."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def is_chief(strategy):
    """Whether this process writes artefacts (worker 0 or the chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "cluster_spec", None):
        return True
    cluster = resolver.cluster_spec()
    if not cluster.as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type in (None, "chief") or (
        task_type == "worker" and task_id == 0 and "chief" not in cluster.jobs
    )


def num_workers(strategy):
    """How many worker processes `strategy` spans (chief included)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "cluster_spec", None):
        return 1
    cluster = resolver.cluster_spec().as_dict()
    return max(1, sum(len(cluster.get(job, ())) for job in ("chief", "worker")))


def local_cluster(workers):
    """`TF_CONFIG` values (JSON strings) for `workers` worker processes on this machine.

    Each worker gets a free port on 127.0.0.1 (free when this returns: start
    the workers soon); set the i-th value as `TF_CONFIG` of the i-th worker,
    as `docs/distributed.md` shows for a cluster of machines.
    """
    sockets = [socket.socket() for _ in range(checks.check_positive_int("workers", workers))]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        cluster = {"worker": [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]}
    finally:
        for s in sockets:
            s.close()
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}) for i in range(workers)]


def input_context(strategy):
    """The `tf.distribute.InputContext` of this process's input pipeline under `strategy`.

    What `strategy.distribute_datasets_from_function` hands its function:
    one input pipeline per worker process, numbered as TensorFlow numbers
    them (the chief first).
    """
    workers, worker = num_workers(strategy), 0
    if workers > 1:
        resolver = strategy.cluster_resolver
        cluster = resolver.cluster_spec().as_dict()
        if resolver.task_type != "chief":
            worker = int(resolver.task_id) + (1 if "chief" in cluster else 0)
    return tf.distribute.InputContext(
        num_input_pipelines=workers, input_pipeline_id=worker, num_replicas_in_sync=strategy.num_replicas_in_sync)


class HostBatches:
    """This worker's batches from a host `tf.data` pipeline, split over its replicas.

    The pipeline gives this worker's part of every global batch (a reader
    of `tfvnas.readers` built for its `InputContext`); each is cut into
    contiguous slices for the worker's replicas with
    `strategy.experimental_distribute_values_from_function` (local replica
    l of L gets rows `[l*n//L, (l+1)*n//L)`; on one worker, replica r of R
    gets rows `[r*n//R, (r+1)*n//R)` of the global batch). No multi-device
    iterator is created: destroying one at the end of every epoch stalled
    the loop for minutes (and once for good) under MirroredStrategy on 2
    busy cores.
    """

    def __init__(self, strategy, dataset, context=None):
        self.strategy = strategy
        self.dataset = dataset
        context = context or input_context(strategy)
        self.local_replicas = strategy.num_replicas_in_sync // context.num_input_pipelines
        self.first_replica = context.input_pipeline_id * self.local_replicas

    def __iter__(self):
        for batch in self.dataset:
            if self.strategy.num_replicas_in_sync == 1:
                yield batch
                continue
            yield self.strategy.experimental_distribute_values_from_function(
                lambda ctx, batch=batch: tf.nest.map_structure(
                    lambda t: _replica_slice(t, ctx.replica_id_in_sync_group - self.first_replica,
                                             self.local_replicas), batch)
            )


# tf.data's autotuner off for the per-epoch pipelines: with it on, destroying
# an epoch's iterator while the step's threads are busy can block for about
# as long as the epoch's steps took. Parallel calls and prefetching keep their
# defaults.


@contextlib.contextmanager
def data_checks():
    """Turns a failed check of the data inside a pipeline (`tfvnas.readers.CHECK_PREFIX`) into a `ValueError`.

    Such checks (an image of another shape, a label out of range) run as
    examples are read, deep inside `tf.data`; the error then says what was
    expected and what was received, without TensorFlow's trace.
    """
    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        text = error.message or ""
        if readers.CHECK_PREFIX not in text:
            raise
        # TensorFlow prints it as "assertion failed: [message] [Condition ...]".
        message = text.split(readers.CHECK_PREFIX, 1)[1].split("\n", 1)[0].split("]", 1)[0]
        raise ValueError(message.strip()) from None


def checked_batches(batches):
    """`batches`, with the errors of the data checks as `ValueError`s (`data_checks`)."""
    with data_checks():
        yield from batches


def _replica_slice(t, replica, count):
    if count == 1:
        return t
    n = tf.shape(t)[0]
    return t[replica * n // count:(replica + 1) * n // count]
