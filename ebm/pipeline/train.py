"""Stage train: the family that ``model.family`` names trains and saves its model."""

from __future__ import annotations

import json
from pathlib import Path

from ebm import families
from ebm.io import write_csv_atomic, write_text_atomic
from ebm.config import Params
from ebm.pipeline.paths import TrainPaths


def train(params: Params, paths: TrainPaths, verbose: int | None = None) -> dict:
    """Train ``model.family``'s model to ``paths.model`` (and the snapshots folder, a DVC output,
    empty where the family keeps none); write the run's summary to ``paths.metrics_file`` for
    ``dvc metrics show`` and ``dvc exp show``: seconds, steps, rollbacks, the last epoch's
    losses, and which kernels ran."""
    family = families.get(params.model.family)
    summary = family.train(params, paths, verbose)
    if not summary.get("outputs", True):  # a non-chief worker: the chief writes the files
        return summary
    text = json.dumps(train_metrics(summary, paths.history, family.objective), indent=2) + "\n"
    write_text_atomic(paths.metrics_file, text)
    curve = objective_curve(paths.history, family.objective)
    write_csv_atomic(paths.objective_file, curve)
    return summary


def objective_curve(history: Path, columns: tuple[str, str]):
    """The family's training objective per epoch, ``epoch, train, held_out``, the same columns
    for every family so that one `dvc plots` definition draws any of them; epochs count on
    across a DBN's layers, and event rows (rollbacks) are left out."""
    import pandas as pd

    rows = pd.read_csv(history)
    rows = rows[rows[columns[0]].notna()] if columns[0] in rows else rows.iloc[:0]
    epochs = rows["epoch"].astype(int).tolist() if "epoch" in rows and rows["epoch"].is_unique else \
        list(range(1, len(rows) + 1))
    return pd.DataFrame({"epoch": epochs, "train": rows[columns[0]].tolist() if len(rows) else [],
                         "held_out": rows[columns[1]].tolist() if columns[1] in rows else [float("nan")] * len(rows)})


def train_metrics(summary: dict, history: Path, objective: tuple[str, str]) -> dict:
    """The summary's numbers and kernel path, with the last epoch's training objective and its
    held-out value from the history (``final_<column>``: ``final_cdiv`` for the deep family)."""
    import pandas as pd

    keep = ("train_seconds", "seconds_per_step", "seconds_per_epoch", "steps", "rollbacks", "kernels")
    out = {k: summary[k] for k in keep if k in summary}
    rows = pd.read_csv(history)
    if "epoch" in rows:
        rows = rows[rows["epoch"].notna()]
    for column in objective:
        if column in rows and rows[column].notna().any():
            out[f"final_{column}"] = float(rows[column].dropna().iloc[-1])
    return out
