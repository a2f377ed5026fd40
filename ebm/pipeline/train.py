"""Stage train: the family that ``model.family`` names trains and saves its model."""

from __future__ import annotations

from ebm import families
from ebm.config import Params
from ebm.pipeline.paths import TrainPaths


def train(params: Params, paths: TrainPaths, verbose: int | None = None) -> dict:
    """Train ``model.family``'s model to ``paths.model`` (and the snapshots folder, a DVC output,
    empty where the family keeps none)."""
    return families.get(params.model.family).train(params, paths, verbose)
