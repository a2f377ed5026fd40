"""Stage prepare: load the configured source, preprocess, split, write the arrays."""

from __future__ import annotations

from dataclasses import asdict

from ebm import data as data_lib
from ebm.config import Params
from ebm.pipeline.paths import PreparePaths


def prepare(params: Params, paths: PreparePaths) -> dict:
    from ebm.tracking import stage_run

    with stage_run("prepare", params, asdict(params.data), paths.record) as run:
        train, test = data_lib.load_source(params.data)
        data_lib.save_split(train, paths.data / "train.npz")
        data_lib.save_split(test, paths.data / "test.npz")
        summary = {"n_train": len(train.x), "n_test": len(test.x), "pixel_mean": float(train.x.mean())}
        run.metrics(summary)
    print(f"prepare: {summary['n_train']} train / {summary['n_test']} test images -> {paths.data}")
    return summary
