"""The full training state of the deep EBM, saved after every epoch so that a killed run resumes
and a diverged run rolls back.

A state holds everything the next epoch depends on: the network's weights (and their moving
average), the optimizer's slots and step count, the replay buffer, the state of every random
generator (the model's, the sampler's, the buffer's, validation's), the learning-rate scale and
rollback count, the epoch and the history rows so far. The data order is a function of
(seed, epoch) (:func:`epoch_order`), so it needs no state. A run resumed from epoch k therefore
ends with the same weights as one that never stopped (same machine, same ops).

One ``.npz`` file per key, written to a temporary file in the same folder and renamed: a kill
during the write leaves the previous state. The key hashes the params that training reads and
the data files (:func:`resume_key`), so a changed param or data set never picks up a stale state.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

FORMAT = 1
DEFAULT_DIR = ".ebm/resume"


class ResumeError(RuntimeError):
    """A saved training state that cannot be used (corrupt, or for other params or data)."""


@dataclass
class TrainingState:
    epoch: int  # epochs completed
    history: list[dict] = field(default_factory=list)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def resume_dir() -> Path:
    """Where states live: ``$EBM_RESUME_DIR``, else ``.ebm/resume`` under the working directory
    (git-ignored; not a DVC output, so no changed param can reuse it)."""
    return Path(os.environ.get("EBM_RESUME_DIR") or DEFAULT_DIR)


def resume_enabled() -> bool:
    """``EBM_RESUME=0`` switches resuming off (states are still saved)."""
    return os.environ.get("EBM_RESUME", "1") != "0"


def resume_key(section: Mapping, data_files) -> str:
    """Hash of the params ``section`` training reads and the bytes of ``data_files``."""
    digest = hashlib.sha256(json.dumps(section, sort_keys=True, default=str).encode())
    digest.update(str(FORMAT).encode())
    for path in sorted(Path(p) for p in data_files):
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:20]


def epoch_order(n: int, batch_size: int, seed: int, epochs: range) -> np.ndarray:
    """Row indices of the training batches of ``epochs``: (epochs x batches, batch_size).
    Each epoch is a permutation drawn from (seed, epoch) alone; the incomplete last batch is
    dropped."""
    steps = n // batch_size
    return np.concatenate([np.random.default_rng([seed, epoch]).permutation(n)[:steps * batch_size]
                           for epoch in epochs]).reshape(-1, batch_size).astype(np.int32)


def generators(model) -> dict:
    """The random generators of a :class:`ebm.families.deep.model.ContrastiveDivergenceModel` by name."""
    return {"model": model.rng, "validation": model.val_rng, "sampler": model.sampler.rng,
            "buffer": model.buffer.rng}


def capture(model, epoch: int, history: list[dict]) -> TrainingState:
    """A copy of the model's whole training state after ``epoch`` completed epochs."""
    arrays = {}
    groups = {"net": model.energy_net.weights, "ema": model.ema_weights, "opt": model.optimizer.variables}
    for group, variables in groups.items():
        for i, v in enumerate(variables):
            arrays[f"{group}/{i}"] = np.array(v.numpy())
    for name, gen in generators(model).items():
        arrays[f"rng/{name}"] = gen.state.numpy()
    for name, var in _buffer_variables(model):
        for replica, copy in enumerate(_local_copies(var)):
            arrays[_buffer_key(name, replica)] = np.array(copy.numpy())
    arrays.update({"lr_scale": np.array(model.lr_scale.numpy()), "rollbacks": np.array(model.rollbacks.numpy())})
    return TrainingState(epoch, [dict(row) for row in history], arrays)


def restore(model, state: TrainingState) -> None:
    """Put ``state`` back into ``model`` (built with the same params). Raises :class:`ResumeError`
    when the state does not fit, before changing anything."""
    if not model.optimizer.built:
        model.optimizer.build(model.energy_net.trainable_variables)
    pairs = []  # (variable, key): every check passes before the first assignment
    groups = {"net": model.energy_net.weights, "ema": model.ema_weights, "opt": model.optimizer.variables}
    for group, variables in groups.items():
        saved = sorted((k for k in state.arrays if k.startswith(group + "/")), key=lambda k: int(k.split("/")[1]))
        if len(saved) != len(variables):
            raise ResumeError(f"the saved state has {len(saved)} '{group}' variables, the model {len(variables)}")
        pairs += zip(variables, saved)
    pairs += [(gen.state, f"rng/{name}") for name, gen in generators(model).items()]
    for name, var in _buffer_variables(model):
        copies = _local_copies(var)
        saved = sum(1 for k in state.arrays if k == f"buffer/{name}" or k.startswith(f"buffer/{name}@"))
        if saved != len(copies):
            raise ResumeError(f"the saved state holds the replay buffers of {saved} replicas, this run has "
                              f"{len(copies)}")
        pairs += [(copy, _buffer_key(name, replica)) for replica, copy in enumerate(copies)]
    pairs += [(model.lr_scale, "lr_scale"), (model.rollbacks, "rollbacks")]
    for variable, key in pairs:
        if key not in state.arrays:
            raise ResumeError(f"the saved state has no '{key}'")
        if tuple(variable.shape) != tuple(state.arrays[key].shape):
            raise ResumeError(f"saved '{key}' has shape {tuple(state.arrays[key].shape)}, the model "
                              f"{tuple(variable.shape)}")
    for variable, key in pairs:
        variable.assign(state.arrays[key])


def _buffer_variables(model):
    buf = model.buffer
    persistent = (("chains", buf.chains), ("chain_head", buf.chain_head)) if buf.persistent else ()
    return ("examples", buf.examples), ("size", buf.size), ("head", buf.head), *persistent


def _local_copies(variable) -> tuple:
    """The copies of a variable held by this process: one per local replica under a
    tf.distribute strategy (the replay buffer differs per replica), else the variable itself."""
    import tensorflow as tf

    return tuple(variable.values) if isinstance(variable, tf.distribute.DistributedValues) else (variable,)


def _buffer_key(name: str, replica: int) -> str:
    """``buffer/<name>`` for the first replica (and a single device), ``buffer/<name>@<replica>``
    for the others."""
    return f"buffer/{name}" if replica == 0 else f"buffer/{name}@{replica}"


def save(path: str | Path, state: TrainingState, key: str) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps({"format": FORMAT, "key": key, "epoch": state.epoch, "history": state.history})
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a writer killed mid-write
        stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:  # no fsync: a killed process loses nothing that the rename
            np.savez(f, __meta__=np.array(meta), **state.arrays)  # published; after a power loss an
        os.replace(tmp, path)  # unreadable state is reported and training starts afresh
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load(path: str | Path, key: str) -> TrainingState:
    """The state saved at ``path``; :class:`ResumeError` if it is unreadable or has another key."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["__meta__"]))
            arrays = {k: z[k] for k in z.files if k != "__meta__"}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise ResumeError(f"the training state {path} is unreadable ({type(e).__name__}: {e})") from e
    if meta.get("format") != FORMAT or meta.get("key") != key:
        raise ResumeError(f"the training state {path} belongs to other params or data "
                          f"(key {meta.get('key')}, expected {key})")
    return TrainingState(int(meta["epoch"]), meta["history"], arrays)


@dataclass
class SavedState:
    """One run's saved state in :func:`resume_dir` (with its staged snapshots folder, if any)."""

    path: Path
    epoch: int | None  # epochs completed; None: unreadable
    bytes: int
    modified: float  # seconds since the epoch

    @property
    def snapshots(self) -> Path:
        return self.path.with_name(self.path.stem.replace("train-", "snapshots-", 1))


def saved_states(folder: Path | None = None) -> list[SavedState]:
    """The states of runs that stopped before the end (a kill, a divergence, an error): a
    completed run deletes its own, so these wait for a rerun with the same params and data."""
    folder = folder or resume_dir()
    found = []
    for path in sorted(folder.glob("train-*.npz")):
        try:
            with np.load(path, allow_pickle=False) as z:
                epoch = int(json.loads(str(z["__meta__"]))["epoch"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError):
            epoch = None
        stat = path.stat()
        state = SavedState(path, epoch, stat.st_size, stat.st_mtime)
        state.bytes += sum(f.stat().st_size for f in state.snapshots.glob("*") if f.is_file())
        found.append(state)
    return found


def remove(state: SavedState) -> None:
    import shutil

    state.path.unlink(missing_ok=True)
    shutil.rmtree(state.snapshots, ignore_errors=True)
