"""The MLflow model registry: the best pipeline run of a sweep, registered under one name.

A sweep's pipeline (parent) runs carry the evaluation metrics; the energy network each one
sampled from is the MLflow model logged by its training run (a child of the same parent, or,
for a sampler-only experiment, the cached training run its generate stage names in the tag
``ebm.upstream.train``). :func:`register_best` registers that model, tags the version with the
pipeline it won in, and points the alias ``best`` at it, so ``models:/<name>@best`` always loads
the current winner.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

BEST_ALIAS = "best"


class RegistryError(Exception):
    """Nothing to register, or the winner has no logged model."""


@dataclass(frozen=True)
class Registered:
    name: str
    version: str
    pipeline_run: str
    train_run: str
    experiment: str
    metric: str
    value: float
    new: bool  # False when this pipeline run was already registered under ``name``

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{BEST_ALIAS}"


def best_pipeline(runs: pd.DataFrame, metric: str, ascending: bool = True) -> pd.Series:
    """The finished deep-EBM pipeline run with the best ``metric`` in ``runs`` (the frame
    ``mlflow.search_runs`` returns)."""
    column = f"metrics.{metric}"
    if runs.empty or "tags.ebm.role" not in runs:
        raise RegistryError("no pipeline runs: run `dvc repro` or a sweep first")
    parents = runs[(runs["tags.ebm.role"] == "pipeline") & (runs["status"] == "FINISHED")
                   & runs.get("tags.ebm.family", pd.Series("deep", index=runs.index)).isin(["deep", "ebm"])]
    if column not in parents or parents[column].isna().all():
        raise RegistryError(f"no finished deep-EBM pipeline run has the metric {metric!r}")
    ranked = parents[parents[column].notna()].sort_values(column, ascending=ascending, kind="stable")
    return ranked.iloc[0]


def training_run(runs: pd.DataFrame, parent: pd.Series) -> str:
    """The run that trained the network ``parent``'s pipeline sampled from."""
    children = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"]]
    for stage, column in (("generate", "tags.ebm.upstream.train"), ("train", "run_id")):
        found = children.loc[children["tags.ebm.stage"] == stage, column] if column in children else []
        found = [v for v in found if isinstance(v, str) and v]
        if found:
            return found[0]
    raise RegistryError(f"pipeline run {parent['run_id']} names no training run")


def register_best(client, experiment_ids: list[str], name: str, metric: str = "fid",
                  ascending: bool = True) -> Registered:
    """Register the energy network of the best pipeline run across ``experiment_ids`` as a new
    version of ``name`` (unless that run's version exists) and point the alias ``best`` at it."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(client.tracking_uri)
    runs = mlflow.search_runs(experiment_ids=experiment_ids)
    parent = best_pipeline(runs, metric, ascending)
    train_id = training_run(runs, parent)
    value = float(parent[f"metrics.{metric}"])
    existing = [v for v in _versions(client, name) if v.tags.get("ebm.pipeline_run") == parent["run_id"]]
    if existing:
        version, new = existing[0], False
    else:
        tags = {"ebm.pipeline_run": parent["run_id"], "ebm.train_run": train_id,
                "dvc.exp_name": str(parent.get("tags.dvc.exp_name")), "git.commit": str(parent.get("tags.git.commit")),
                f"ebm.{metric}": f"{value:.6g}"}
        try:
            version = mlflow.register_model(f"runs:/{train_id}/model", name, tags=tags)
        except MlflowException as err:
            raise RegistryError(f"could not register the model of training run {train_id}: {err.message}") from err
        client.update_model_version(name, version.version, description=(
            f"Best {metric} = {value:.4g} of experiment {parent['experiment_id']}: DVC experiment "
            f"{tags['dvc.exp_name']}, pipeline run {parent['run_id']}, commit {tags['git.commit'][:7]}."))
        new = True
    client.set_registered_model_alias(name, BEST_ALIAS, version.version)
    return Registered(name, str(version.version), parent["run_id"], train_id, parent["experiment_id"], metric, value,
                      new)


def _versions(client, name: str) -> list:
    from mlflow.exceptions import MlflowException

    try:
        return list(client.search_model_versions(f"name = '{name}'"))
    except MlflowException:
        return []
