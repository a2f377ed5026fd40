"""CPU/GPU runtime settings, applied once at the edge before TensorFlow runs anything.

On a CPU with few cores, the Langevin chain is a long sequence of small convolutions that one
op cannot spread over all cores; running the batch as independent sub-chains, one per core,
with one thread per op, keeps every core busy. On a GPU none of this applies.
"""

from __future__ import annotations

import os

from ebm.config import TrainConfig


def on_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def configure_threads(train: TrainConfig) -> dict:
    """Set TF's thread pools from ``train.intra_op_threads``/``inter_op_threads`` (0 = automatic:
    on a CPU running sub-chains, one intra-op thread and one inter-op thread per sub-chain).
    Returns the settings used. Must run before TensorFlow executes its first op."""
    import tensorflow as tf

    from ebm.sampler import split_count

    cores = os.cpu_count() or 1
    gpu = on_gpu()
    splits = split_count(train.batch_size, train.sampler_splits, cores, gpu)
    intra, inter = train.intra_op_threads, train.inter_op_threads
    if not gpu and splits > 1:
        intra = intra or max(1, cores // splits)
        inter = inter or splits
    try:
        if intra:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if inter:
            tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:  # TF already initialised (e.g. in a test process): keep what is set
        pass
    return {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(), "sampler_splits": splits}
