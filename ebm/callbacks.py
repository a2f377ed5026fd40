"""Keras callbacks every family's training attaches at the edge: the history CSV and MLflow's
per-epoch metrics and images."""

from __future__ import annotations

from pathlib import Path

import keras
import pandas as pd

from ebm.io import write_csv_atomic


class HistoryCSV(keras.callbacks.Callback):
    """Rewrites ``path`` after every epoch (pandas), so a crash keeps every finished epoch.

    One instance can follow several ``fit`` calls (a DBN's layers): set ``offset`` to the epochs
    already written and ``tags`` to columns that name the current fit (e.g. ``{"layer": 2}``)."""

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)
        self.rows: list[dict] = []
        self.offset = 0
        self.tags: dict = {}

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append({"epoch": self.offset + epoch + 1, **self.tags,
                          **{k: float(v) for k, v in (logs or {}).items()}})
        self.write()

    def write(self) -> None:
        write_csv_atomic(self.path, pd.DataFrame(self.rows))


class MlflowEpochLogger(keras.callbacks.Callback):
    """Logs every epoch's metrics (step = epoch number, from 1) and, optionally, an image grid
    drawn by ``images_fn()`` (e.g. the newest replay-buffer negatives) as MLflow image ``key``
    at the same step: the run page's image slider walks through the epochs."""

    def __init__(self, run, images_fn=None, key: str = "negatives"):
        super().__init__()
        self.run = run
        self.images_fn = images_fn
        self.key = key

    def on_epoch_end(self, epoch, logs=None):
        self.run.metrics(logs or {}, step=epoch + 1)
        if self.images_fn is not None:
            from ebm.plots import grid_image

            self.run.image(grid_image(self.images_fn()), key=self.key, step=epoch + 1)
