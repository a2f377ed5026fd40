"""Training on several devices or workers with ``tf.distribute`` (``train.strategy``).

* ``default``: one device (all cores of a CPU, or one GPU): TensorFlow's default strategy.
* ``mirrored``: every local GPU, else every logical CPU device (:func:`split_cpu` makes them),
  one replica each, in one process (``tf.distribute.MirroredStrategy``).
* ``multi_worker``: one process per worker, described by ``TF_CONFIG``
  (``tf.distribute.MultiWorkerMirroredStrategy``); the chief (task ``chief``, or ``worker`` 0
  where there is no chief) logs to MLflow and writes the stage's outputs, the others train only.

Each replica takes ``train.batch_size / replicas`` real digits per step, runs its own Langevin
chains from its own replay buffer of ``train.buffer_size / replicas`` examples (with its own
random streams), and the gradients are the batch mean's (:class:`ebm.families.deep.model.ContrastiveDivergenceModel`).
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from ebm.data import fixed_pipeline

STRATEGIES = ("default", "mirrored", "multi_worker")


def make_strategy(name: str) -> tf.distribute.Strategy:
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy([d.name for d in gpus or tf.config.list_logical_devices("CPU")])
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError("train.strategy=multi_worker needs TF_CONFIG (the cluster and this task) in the "
                             "environment of every worker: README \"Running as a team / on a cluster\"")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}: use one of {', '.join(STRATEGIES)}")


def split_cpu(devices: int) -> None:
    """Present the CPU as ``devices`` logical devices (before TensorFlow first uses it), so that
    ``mirrored`` runs that many replicas on one machine without GPUs."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)


def is_chief() -> bool:
    """Whether this process writes outputs and logs: always, except a non-chief multi-worker task."""
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = config.get("task") or {}
    if not task:
        return True
    if task.get("type") == "chief":
        return True
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0 and "chief" not in config.get("cluster", {})


def replica_shares(strategy: tf.distribute.Strategy, batch_size: int, buffer_size: int) -> tuple[int, int]:
    """Per-replica batch and replay-buffer sizes; each must divide evenly."""
    n = strategy.num_replicas_in_sync
    if batch_size % n:
        raise ValueError(f"train.batch_size={batch_size} does not split evenly over {n} replicas")
    return batch_size // n, max(buffer_size // n, batch_size // n)


def gathered(order: tf.data.Dataset, images: np.ndarray) -> tf.data.Dataset:
    """Each element of ``order`` (a batch's rows) as the batch of those rows of ``images``."""
    data = tf.constant(images)
    return fixed_pipeline(order.map(lambda rows: tf.gather(data, rows)).prefetch(2))


def distributed_batches(strategy: tf.distribute.Strategy, images: np.ndarray, order: np.ndarray):
    """The training batches for ``strategy``: ``order`` holds the rows of each global batch
    (steps, batch) of ``images``; replica ``r`` of
    ``R`` takes the ``r``-th of ``R`` equal slices of every batch, so the replicas together see
    exactly the single-device batches."""
    n = strategy.num_replicas_in_sync
    steps, batch = order.shape
    slices = order.reshape(steps, n, batch // n)

    def pipeline(context: tf.distribute.InputContext):
        local = context.num_replicas_in_sync // context.num_input_pipelines  # replicas fed by this pipeline
        first = context.input_pipeline_id * local
        mine = slices[:, first:first + local].reshape(steps * local, batch // n)  # step-major: replica after replica
        return gathered(tf.data.Dataset.from_tensor_slices(mine), images)

    return strategy.distribute_datasets_from_function(pipeline)
