"""MLflow tracking: where runs go, how they are tagged, and a Keras callback for epochs.

Every stage logs to one store at the *repository root*, wherever it runs from: queued DVC
experiments run in temporary copies of the repo, and DVC points ``DVC_ROOT`` at the real root.
``MLFLOW_TRACKING_URI`` overrides the default SQLite file ``<root>/mlflow.db``; artifacts of
experiments created here go to ``<root>/mlartifacts``. Only stage entry points call this module.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator, Mapping

import keras
import numpy as np

from ebm.config import Params, flatten

STORE_FILE = "mlflow.db"
ARTIFACT_DIR = "mlartifacts"


def repo_root(start: str | Path | None = None) -> Path:
    """``$DVC_ROOT`` if set, else the nearest folder at or above ``start`` holding ``.dvc``."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / ".dvc").is_dir():
            return folder
    return here


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / STORE_FILE}"


def _git(root: Path, *args: str) -> str:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def run_tags(stage: str, params: Params, root: Path) -> dict[str, str]:
    """What identifies a stage run: stage, DVC experiment, git commit, dirty flag, params hash."""
    commit = _git(root, "rev-parse", "HEAD")
    dirty = bool(_git(root, "status", "--porcelain", "--untracked-files=no"))
    return {
        "ebm.stage": stage,
        "dvc.exp_name": os.environ.get("DVC_EXP_NAME", "workspace"),
        "dvc.baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", commit),
        "git.commit": commit or "unknown",
        "git.dirty": str(dirty).lower(),
        "params.hash": params.digest(),
        "mlflow.runName": f"{stage} {os.environ.get('DVC_EXP_NAME', 'workspace')}",
    }


def ensure_experiment(name: str, root: Path) -> str:
    """The experiment's id, creating it with artifacts under ``<root>/mlartifacts`` if needed."""
    import mlflow

    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return mlflow.create_experiment(name, artifact_location=(root / ARTIFACT_DIR / name).as_uri())
    except mlflow.exceptions.MlflowException:  # created concurrently by another stage
        return mlflow.get_experiment_by_name(name).experiment_id


@contextlib.contextmanager
def stage_run(stage: str, params: Params, section: Mapping | None = None) -> Iterator["StageRun"]:
    """An MLflow run for one stage, tagged and with its params section logged.

    The run ends FINISHED on success and FAILED if the stage raises (MLflow's own contract).
    """
    import mlflow

    root = repo_root()
    mlflow.set_tracking_uri(tracking_uri(root))
    experiment_id = ensure_experiment(params.tracking.experiment, root)
    with mlflow.start_run(experiment_id=experiment_id, tags=run_tags(stage, params, root)) as run:
        if section:
            mlflow.log_params(flatten(dict(section)))
        yield StageRun(run.info.run_id)


class StageRun:
    """Thin helpers over the active run, so stages log arrays and files in one line."""

    def __init__(self, run_id: str):
        self.run_id = run_id

    def metrics(self, values: Mapping[str, float], step: int | None = None) -> None:
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in values.items() if np.isfinite(v)}, step=step)

    def artifact(self, path: str | Path, folder: str | None = None) -> None:
        import mlflow

        mlflow.log_artifact(str(path), artifact_path=folder)


class MlflowEpochLogger(keras.callbacks.Callback):
    """Logs every epoch's metrics (step = epoch number, from 1) and, optionally, an image grid
    drawn by ``images_fn()`` (e.g. the newest replay-buffer negatives)."""

    def __init__(self, run: StageRun, images_fn=None, image_every: int = 1):
        super().__init__()
        self.run = run
        self.images_fn = images_fn
        self.image_every = image_every

    def on_epoch_end(self, epoch, logs=None):
        self.run.metrics(logs or {}, step=epoch + 1)
        if self.images_fn is not None and (epoch + 1) % self.image_every == 0:
            from ebm.plots import save_grid

            with tempfile.TemporaryDirectory() as tmp:
                self.run.artifact(save_grid(self.images_fn(), Path(tmp) / f"negatives_epoch{epoch + 1:03d}.png"),
                                  "negatives")
