"""End to end: the real `dvc repro` and `dvc exp run` in a temporary git repo with tiny params."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from tests.conftest import ROOT, tiny_params_dict

pytestmark = pytest.mark.e2e

PROJECT_FILES = ["dvc.yaml", "stages", ".dvcignore", ".gitignore"]


def sh(*cmd, cwd, env):
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


@pytest.fixture
def project(tmp_path):
    """A fresh git+DVC repo holding the project with tiny params; stages use this interpreter."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in PROJECT_FILES:
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, repo / name)
    shutil.copytree(ROOT / "ebm", repo / "ebm", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict(), sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}", PYTHONPATH=str(repo),
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    sh("git", "init", "-q", "-b", "main", cwd=repo, env=env)
    sh("dvc", "init", "-q", cwd=repo, env=env)
    sh("dvc", "config", "core.analytics", "false", cwd=repo, env=env)
    sh("git", "add", "-A", cwd=repo, env=env)
    sh("git", "commit", "-qm", "project", cwd=repo, env=env)
    return repo, env


def stage_runs(repo):
    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=["ebm"])


def test_repro_then_sampler_sweep_reruns_only_downstream(project):
    repo, env = project
    out = sh("dvc", "repro", cwd=repo, env=env)
    for stage in ("prepare", "train", "generate", "evaluate"):
        assert f"Running stage '{stage}'" in out
    assert (repo / "models/energy.keras").is_file() and (repo / "reports/metrics.json").is_file()
    metrics = sh("dvc", "metrics", "show", "--json", cwd=repo, env=env)
    assert "test_cdiv" in metrics

    sh("git", "add", "-A", cwd=repo, env=env)
    sh("git", "commit", "-qm", "baseline", cwd=repo, env=env)
    out = sh("dvc", "exp", "run", "-S", "sampler.step_size=5", cwd=repo, env=env)
    assert "Running stage 'generate'" in out and "Running stage 'evaluate'" in out
    assert "Running stage 'train'" not in out and "Running stage 'prepare'" not in out

    runs = stage_runs(repo)
    counts = runs["tags.ebm.stage"].value_counts().to_dict()
    assert counts == {"prepare": 1, "train": 1, "generate": 2, "evaluate": 2}
    assert (runs["status"] == "FINISHED").all()
    gen = runs[runs["tags.ebm.stage"] == "generate"]
    assert sorted(gen["params.step_size"]) == ["10.0", "5.0"]
    swept = gen[gen["params.step_size"] == "5.0"].iloc[0]
    assert swept["tags.dvc.exp_name"] not in ("", "workspace")  # named after the DVC experiment
    assert len(swept["tags.git.commit"]) == 40
    ev = runs[runs["tags.ebm.stage"] == "evaluate"]
    assert ev["metrics.test_cdiv"].notna().all()
    client = mlflow.MlflowClient()
    for _, run in runs.iterrows():
        assert client.list_artifacts(run["run_id"]) or run["tags.ebm.stage"] == "prepare"
    assert "test_cdiv" in sh("dvc", "exp", "show", "--csv", cwd=repo, env=env)
