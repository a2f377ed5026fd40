"""Keras callbacks the deep family's training attaches: divergence guard, checkpoints,
resumable training state, weight snapshots, the persistent chains' start and a watch on the
class coverage of the replay buffer."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import keras
import numpy as np

from ebm import metrics
from ebm.callbacks import HistoryCSV
from ebm.io import save_model_atomic, write_atomic


class DivergenceGuard(keras.callbacks.Callback):
    """Stops training when a batch's loss or energies turn non-finite, a batch's mean energy
    leaves ``[-max_abs_energy, max_abs_energy]``, or a batch's contrastive divergence
    ``|E(real) - E(negatives)|`` exceeds ``max_abs_cdiv`` (the sampler lost the data: the
    collapse), and keeps the reason in ``self.reason``. Each batch's own values are recovered
    from Keras's running means, so one runaway batch is not diluted by the epoch.

    An epoch is unhealthy too when its mean ``|cdiv|`` *rises* above ``max_epoch_cdiv``: a
    healthy run's epoch means fall from the first epoch and then stay near zero, and a collapse
    starts as a steady climb, dozens of epochs before a single batch passes ``max_abs_cdiv``.
    ``epoch_cdiv`` holds the healthy epochs' values (seeded from history rows by :meth:`seed`)."""

    def __init__(self, max_abs_energy: float, max_abs_cdiv: float = math.inf, max_epoch_cdiv: float = math.inf):
        super().__init__()
        self.max_abs_energy = max_abs_energy
        self.max_abs_cdiv = max_abs_cdiv
        self.max_epoch_cdiv = max_epoch_cdiv
        self.reason: str | None = None
        self.epoch = 0
        self.epoch_cdiv: dict[int, float] = {}
        self._means: dict[str, float] = {}

    def reset(self) -> None:
        self.reason = None

    def seed(self, rows) -> None:
        """Take the epoch means of ``cdiv`` from history ``rows`` (after a resume or a rollback)."""
        self.epoch_cdiv = {int(r["epoch"]): abs(float(r["cdiv"])) for r in rows
                           if r.get("cdiv") is not None and math.isfinite(float(r["cdiv"])) and not r.get("event")}

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1
        self._means = {}

    def _check(self, values, where: str) -> bool:
        for key, value in values.items():
            if not math.isfinite(value):
                self.reason = f"{key} became {value} at {where}"
            elif key in ("real", "fake") and abs(value) > self.max_abs_energy:
                self.reason = (f"mean energy '{key}' reached {value:.4g} at {where}, beyond "
                               f"train.max_abs_energy={self.max_abs_energy:g}")
            elif key == "cdiv" and abs(value) > self.max_abs_cdiv:
                self.reason = (f"contrastive divergence reached {value:.4g} at {where}, beyond "
                               f"train.max_abs_cdiv={self.max_abs_cdiv:g}")
            if self.reason:
                self.model.stop_training = True
                return False
        return True

    def on_train_batch_end(self, batch, logs=None):
        if self.reason is not None:
            return
        values = {}
        for key in ("loss", "real", "fake", "cdiv"):
            if (logs or {}).get(key) is None:
                continue
            mean = float(logs[key])  # the running mean over this epoch's batches 0..batch
            values[key] = (batch + 1) * mean - batch * self._means.get(key, 0.0)
            self._means[key] = mean
        self._check(values, f"epoch {self.epoch}, batch {batch + 1}")

    def healthy(self, logs) -> bool:
        values = {k: float(logs[k]) for k in ("loss", "real", "fake") if (logs or {}).get(k) is not None}
        if self.reason is not None or not self._check(values, f"the end of epoch {self.epoch}"):
            return False
        if (logs or {}).get("cdiv") is None or self.epoch in self.epoch_cdiv:
            return True
        cdiv, before = abs(float(logs["cdiv"])), self.epoch_cdiv.get(self.epoch - 1)
        if cdiv > self.max_epoch_cdiv and before is not None and cdiv > before:
            self.reason = (f"the epoch mean of |E(real) - E(negatives)| rose from {before:.3g} to {cdiv:.3g} "
                           f"in epoch {self.epoch}, beyond train.max_epoch_cdiv={self.max_epoch_cdiv:g} "
                           "(the sampler is losing the data)")
            self.model.stop_training = True
            return False
        self.epoch_cdiv[self.epoch] = cdiv
        return True


class BufferCoverage(keras.callbacks.Callback):
    """Every ``every`` epochs (and after the first), adds to the epoch's logs the class coverage
    of the ``n`` newest replay-buffer negatives, each labelled by its nearest real training image
    (``buffer_coverage``: :func:`ebm.metrics.coverage` of those labels, 1 = all ten digits
    equally, 0 = one), and their median distance to that image
    (``buffer_nn_dist``); with persistent chains, also the class coverage of (at most ``n`` of)
    them (``chain_coverage``). And the spread of the ten classes' mean energy over (at most
    ``n``) real reference digits under the network sampled from (``energy_class_gap``, highest
    class minus lowest: what evaluate reports on the test digits; the wider it is, the further
    long chains drift towards the lowest classes). Attach it before the callbacks that record
    the logs."""

    def __init__(self, reference, labels, every: int, n: int, seed: int = 0):
        super().__init__()
        self.reference, self.labels, self.every, self.n = reference, labels, every, n
        self.gap_rows = np.sort(np.random.default_rng(seed).choice(len(reference), min(n, len(reference)),
                                                                   replace=False))

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or (epoch + 1) % self.every and epoch:
            return
        buffer = self.model.buffer
        dist, idx = metrics.nearest(buffer.newest(self.n).numpy(), self.reference)
        logs["buffer_coverage"] = metrics.coverage(np.eye(10)[self.labels[idx]])
        logs["buffer_nn_dist"] = float(np.median(dist))
        if buffer.persistent:
            _, idx = metrics.nearest(buffer.chains.numpy()[:self.n], self.reference)
            logs["chain_coverage"] = metrics.coverage(np.eye(10)[self.labels[idx]])
        logs["energy_class_gap"] = self.class_gap()

    def class_gap(self) -> float:
        net = self.model.sampling_network()
        x, y = self.reference[self.gap_rows], self.labels[self.gap_rows]
        _, means = metrics.class_means(metrics.energies_of(lambda b: net(b, training=False), x), y)
        return float(means.max() - means.min())


class PersistentStart(keras.callbacks.Callback):
    """Switches the replay buffer's persistent chains on after ``start`` epochs (before, their
    rows replay the ring). Set at every epoch's start from the epoch alone, so a resumed or
    rolled-back run needs no saved switch."""

    def __init__(self, buffer, start: int):
        super().__init__()
        self.buffer, self.start = buffer, start

    def on_epoch_begin(self, epoch, logs=None):
        self.buffer.live.assign(epoch >= self.start)


class EnergyCheckpoint(keras.callbacks.Callback):
    """Saves the network to sample from (``model.sampling_network()``: the moving average of the
    weights when the model keeps one) after every healthy epoch, atomically
    (:func:`save_model_atomic`)."""

    def __init__(self, path: str | Path, guard: DivergenceGuard):
        super().__init__()
        self.path = Path(path)
        self.guard = guard
        self.saved_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        if self.guard.healthy(logs):
            save_model_atomic(self.model.sampling_network(), self.path)
            self.saved_epoch = epoch + 1


class WeightSnapshots(keras.callbacks.Callback):
    """After every ``every``-th healthy epoch, keeps a copy of the file ``checkpoint`` (an
    :class:`EnergyCheckpoint`) has just written, as ``directory/energy-e{epoch:03d}.keras``
    (atomically), so the model of any of those epochs can be generated from and evaluated later.
    Attach after the checkpoint."""

    def __init__(self, directory: str | Path, every: int, checkpoint: EnergyCheckpoint):
        super().__init__()
        self.directory, self.every, self.checkpoint = Path(directory), every, checkpoint

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0 and self.checkpoint.saved_epoch == epoch + 1:
            write_atomic(self.directory / f"energy-e{epoch + 1:03d}.keras",
                         lambda tmp: shutil.copyfile(self.checkpoint.path, tmp))


class TrainingStateKeeper(keras.callbacks.Callback):
    """After every healthy epoch, keeps the model's full training state in memory (the newest
    ``depth`` of them, for rollbacks: :meth:`rewind`) and on disk at ``path`` (the newest, for a
    resume; :mod:`ebm.families.deep.resume`), with the history rows of ``history``. Attach after the guard and
    the history."""

    def __init__(self, path: str | Path | None, key: str, guard: DivergenceGuard, history: HistoryCSV,
                 depth: int = 1):
        super().__init__()
        self.path, self.key, self.guard, self.history = path, key, guard, history
        self.depth = max(1, depth)
        self.states = []

    @property
    def last(self):
        return self.states[-1] if self.states else None

    def keep(self, epoch: int) -> None:
        from ebm.families.deep import resume

        older = [s for s in self.states if s.epoch < epoch]  # a re-kept epoch replaces its old copy
        self.states = (older + [resume.capture(self.model, epoch, self.history.rows)])[-self.depth:]
        if self.path is not None:
            resume.save(self.path, self.last, self.key)

    def rewind(self, back: int):
        """The ``back``-th newest kept state (1 = the last healthy epoch; the oldest kept when
        fewer are kept), dropping the newer ones."""
        self.states = self.states[:max(1, len(self.states) - back + 1)]
        return self.last

    def on_epoch_end(self, epoch, logs=None):
        if self.guard.healthy(logs):
            self.keep(epoch + 1)
