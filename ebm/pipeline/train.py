"""Stage train: the family that ``model.family`` names trains and saves its model."""

from __future__ import annotations

from ebm import families
from ebm.config import Params
from ebm.pipeline.paths import TrainPaths


def train(params: Params, paths: TrainPaths, verbose: int | None = None) -> dict:
    """Train ``model.family``'s model to ``paths.model``; the snapshots folder (a DVC output)
    exists afterwards, empty where the family keeps none."""
    summary = families.get(params.model.family).train(params, paths, verbose)
    (paths.snapshots or paths.model.parent / "snapshots").mkdir(parents=True, exist_ok=True)
    return summary
