"""Stage generate: the model file's family draws samples, with snapshots and chain health."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np

from ebm import data as data_lib
from ebm import families
from ebm.config import Params
from ebm.pipeline.paths import GeneratePaths


def generate(params: Params, paths: GeneratePaths, network=None, track: bool = True) -> dict:
    """Draw ``generate.n`` samples from the model file's family; ``network`` overrides the file
    (for ``ebm evaluate``)."""
    from ebm.tracking import maybe_stage_run, train_record

    settings = families.get(params.model.family).configure(params)  # before TensorFlow runs an op
    section = {**asdict(params.sampler), **asdict(params.generate)}
    with maybe_stage_run(track, "generate", params, section, paths.record,
                         upstream=("prepare", train_record(params.model.family)),
                         tags={"ebm.kernels": settings["kernels"]}) as run:
        family, model = (families.family_of(network), network) if network is not None else \
            families.load_model(paths.model)
        summary = family.generate(params, paths, model, run)
        run.metrics(summary)
        for path in (paths.grid, paths.chains, paths.gif, paths.health, paths.health_plot, paths.samples):
            run.artifact(path)
    return summary


def load_samples(path: Path) -> np.ndarray:
    if not Path(path).is_file():
        raise data_lib.DataError(f"samples {path} not found: run the generate stage (dvc repro generate)")
    try:
        with np.load(path, allow_pickle=False) as f:
            return f["samples"]
    except (OSError, ValueError, KeyError) as err:
        raise data_lib.DataError(f"samples {path} are corrupt ({data_lib.npz_reason(err)}): "
                                 "rerun the generate stage") from err
