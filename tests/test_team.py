"""Team tracking: the pipeline and a queued sweep logging to a real `mlflow server` backed by a
real PostgreSQL (started on loopback for the test) with the server storing the artifacts."""

import sys
from importlib import import_module
import urllib.parse
from pathlib import Path

import mlflow
import numpy as np
import pytest

from tests.conftest import (failed_task_logs, http_get, project_repo, run_queue, sh, start_mlflow_server,
                            tiny_params_dict)
from tests.servers import Unavailable, postgres_cluster

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL cluster on loopback (skipped, with the reason, where none can run)."""
    try:
        with postgres_cluster() as uri:
            yield uri
    except Unavailable as err:
        pytest.skip(str(err))


def _search_runs(base: str, experiment_id: str) -> list[dict]:
    runs, token = [], None
    while True:
        page = http_get(f"{base}/api/2.0/mlflow/runs/search",
                        {"experiment_ids": [experiment_id], "max_results": 1000, **({"page_token": token} if token else {})})
        runs += page.get("runs", [])
        token = page.get("next_page_token")
        if not token:
            return runs


def _tags(run: dict) -> dict:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


def test_pipeline_and_queued_sweep_log_to_a_postgres_backed_server(postgres, tmp_path):
    """`MLFLOW_TRACKING_URI=http://...` is the only change: `dvc repro` and a `-j 2` queued sweep
    log every stage to the server; runs, metrics, dataset inputs and artifacts (the report, the
    model) come back through its REST API, and the artifacts live in the server's store."""
    artifacts = tmp_path / "server-artifacts"
    server, base = start_mlflow_server(postgres, "--artifacts-destination", str(artifacts))
    try:
        repo = tmp_path / "repo"
        params = tiny_params_dict()
        params["tracking"]["experiment"] = ""  # one experiment per baseline commit, as by default
        env = project_repo(repo, params, MLFLOW_TRACKING_URI=base)
        sh("dvc", "repro", cwd=repo, env=env)
        sh("git", "add", "-A", cwd=repo, env=env)
        sh("git", "commit", "-qm", "baseline", cwd=repo, env=env)
        sh("dvc", "exp", "run", "--queue", "-S", "sampler.step_size=2,7", cwd=repo, env=env)
        status = run_queue(repo, env, workers=2)
        assert status.count("Success") == 2, failed_task_logs(repo, env, status)
        assert not (repo / "mlflow.db").exists() and not (repo / "mlartifacts").exists()  # nothing local

        # one experiment per baseline commit: the repro's (before the commit) and the sweep's
        commits = sh("git", "rev-parse", "HEAD~1", "HEAD", cwd=repo, env=env).split()
        experiments = [http_get(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=ebm-{c[:7]}")
                       ["experiment"]["experiment_id"] for c in commits]
        runs = [run for experiment_id in experiments for run in _search_runs(base, experiment_id)]
        assert all(r["info"]["status"] == "FINISHED" for r in runs)
        parents = [r for r in runs if _tags(r).get("ebm.role") == "pipeline"]
        stages = [r for r in runs if _tags(r).get("ebm.role") == "stage"]
        assert len(parents) == 3  # the baseline and the two queued experiments
        assert sorted(_tags(r)["ebm.stage"] for r in stages) == sorted(
            ["prepare", "train", "classifier", "generate", "evaluate"] + ["generate", "evaluate"] * 2)
        for parent in parents:
            metrics = {m["key"]: m["value"] for m in parent["data"]["metrics"]}
            assert np.isfinite(metrics["fid"]) and "coverage" in metrics
            children = [r for r in stages if _tags(r)["mlflow.parentRunId"] == parent["info"]["run_id"]]
            assert parent["info"]["end_time"] == max(r["info"]["end_time"] for r in children)
            assert {d["dataset"]["name"] for d in parent["inputs"]["dataset_inputs"]} >= {"mnist5k-test"}
        assert len({_tags(p)["dvc.exp_name"] for p in parents}) == 3

        evaluate = next(r for r in stages if _tags(r)["ebm.stage"] == "evaluate")
        report = http_get(f"{base}/get-artifact?run_uuid={evaluate['info']['run_id']}&path=report.html")
        assert b"<html" in report[:200].lower()
        history = http_get(f"{base}/api/2.0/mlflow/metrics/get-history?"
                           + urllib.parse.urlencode({"run_id": _train_id(stages), "metric_key": "loss"}))
        assert [m["step"] for m in history["metrics"]] == [1, 2]
        assert list(artifacts.rglob("report.html")) and list(artifacts.rglob("MLmodel"))  # the server's store

        import_module("ebm.families.deep.network")  # registers the custom layers the model file names

        mlflow.set_tracking_uri(base)
        try:
            network = mlflow.keras.load_model(f"runs:/{_train_id(stages)}/model")  # through the server's proxy
        finally:
            mlflow.set_tracking_uri(None)
        assert network(np.zeros((2, 32, 32, 1), "float32")).shape == (2, 1)

        # the team's commands against the server: the UI link (no local server started), the registry
        ebm = str(Path(sys.executable).parent / "ebm")
        shown = sh(ebm, "ui", "--no-browser", cwd=repo, env=env, timeout=120)  # the sweep's, the latest
        assert (f"{base}/#/experiments/{experiments[1]}/runs?workflowType=machine_learning"
                "&viewStateShareKey=ebm-ranked") in shown
        registered = sh(ebm, "register", "--all", cwd=repo, env=env, timeout=300)
        assert "registered as ebm-energy version 1" in registered
        version = http_get(f"{base}/api/2.0/mlflow/registered-models/alias?name=ebm-energy&alias=best")
        best = min(parents, key=lambda r: next(m["value"] for m in r["data"]["metrics"] if m["key"] == "fid"))
        tags = {t["key"]: t["value"] for t in version["model_version"]["tags"]}
        assert tags["ebm.pipeline_run"] == best["info"]["run_id"]
    finally:
        server.terminate()
        server.wait(timeout=60)


def _train_id(stages: list[dict]) -> str:
    return next(r["info"]["run_id"] for r in stages if _tags(r)["ebm.stage"] == "train")
