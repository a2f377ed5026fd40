"""Stage train: the family that ``model.family`` names trains and saves its model."""

from __future__ import annotations

import json

from ebm import families
from ebm.io import write_csv_atomic, write_text_atomic
from ebm.config import Params
from ebm.pipeline.paths import TrainPaths


def train(params: Params, paths: TrainPaths, verbose: int | None = None) -> dict:
    """Train ``model.family``'s model to ``paths.model`` (and the snapshots folder, a DVC output,
    empty where the family keeps none); write the run's summary to ``paths.metrics_file`` for
    ``dvc metrics show`` and ``dvc exp show``: seconds, steps, rollbacks, the last epoch's
    losses, and which kernels ran."""
    import pandas as pd

    family = families.get(params.model.family)
    summary = family.train(params, paths, verbose)
    if not summary.get("outputs", True):  # a non-chief worker: the chief writes the files
        return summary
    curve = objective_curve(pd.read_csv(paths.history), family.objective)
    write_text_atomic(paths.metrics_file, json.dumps(train_metrics(summary, curve, family.objective), indent=2) + "\n")
    write_csv_atomic(paths.objective_file, curve)
    return summary


def objective_curve(history, columns: tuple[str, str]):
    """The family's training objective per epoch from its ``history`` frame, ``epoch, train,
    held_out``, the same columns for every family so that one `dvc plots` definition draws any
    of them; epochs count on across a DBN's layers, and event rows (rollbacks) are left out."""
    import pandas as pd

    rows = history[history[columns[0]].notna()] if columns[0] in history else history.iloc[:0]
    epochs = rows["epoch"].astype(int).tolist() if "epoch" in rows and rows["epoch"].is_unique else \
        list(range(1, len(rows) + 1))
    return pd.DataFrame({"epoch": epochs, "train": rows[columns[0]].tolist() if len(rows) else [],
                         "held_out": rows[columns[1]].tolist() if columns[1] in rows else [float("nan")] * len(rows)})


def train_metrics(summary: dict, curve, objective: tuple[str, str]) -> dict:
    """The summary's numbers and kernel path, with the last epoch's training objective and its
    held-out value from the objective ``curve`` (``final_<column>``: ``final_cdiv`` for the deep family)."""
    keep = ("train_seconds", "seconds_per_step", "seconds_per_epoch", "steps", "rollbacks", "kernels")
    out = {k: summary[k] for k in keep if k in summary}
    for name, column in zip(objective, ("train", "held_out")):
        if (values := curve[column].dropna()).size:
            out[f"final_{name}"] = float(values.iloc[-1])
    return out
