"""The deep family's CPU/GPU thread settings, applied once at the edge before TensorFlow runs anything.

On a CPU the whole-chain op (:func:`ebm.families.deep.native.langevin_chain`) spreads the chains over TF's
intra-op threads, one per core. Without it the chain is a long sequence of small TF ops that
one op cannot spread over all cores; running the batch as independent sub-chains, one per core,
with one thread per op, keeps every core busy. On a GPU none of this applies.
"""

from __future__ import annotations

import os

from ebm.config import TrainConfig
from ebm.runtime import on_gpu, set_threads


def configure_threads(train: TrainConfig) -> dict:
    """Set TF's thread pools from ``train.intra_op_threads``/``inter_op_threads`` (0 = automatic:
    on a CPU with the whole-chain op, one intra-op thread per core; on a CPU running sub-chains,
    one intra-op thread and one inter-op thread per sub-chain). Returns the settings used and
    whether the whole-chain op runs (``native_chain`` 1) or the TF-graph chain (0), and which
    kernels draw the numbers (``kernels``: see :func:`ebm.families.deep.native.kernel_path`).
    Must run before TensorFlow executes its first op."""
    from ebm.families.deep.native import kernel_path, native_chain_enabled
    from ebm.families.deep.sampler import split_count

    cores = os.cpu_count() or 1
    gpu = on_gpu()
    native = not gpu and native_chain_enabled()
    splits = split_count(train.batch_size, train.sampler_splits, gpu)
    intra, inter = train.intra_op_threads, train.inter_op_threads
    if native:
        intra = intra or cores
    elif not gpu and splits > 1:
        intra = intra or max(1, cores // splits)
        inter = inter or splits
    return {**set_threads(intra, inter), "native_chain": int(native), "sampler_splits": 1 if native else splits,
            "kernels": kernel_path()}
