"""End to end: the real `dvc repro`, `dvc exp run` and a queued sweep in a temporary git repo."""

import hashlib
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from tests.conftest import failed_task_logs, project_repo, run_queue, sh, tiny_params_dict

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """A fresh git+DVC repo holding the project with tiny params and the team's DVC remote (a
    local folder beside it), reproduced and committed."""
    repo = tmp_path_factory.mktemp("e2e") / "repo"
    params = tiny_params_dict()
    params["tracking"]["experiment"] = ""  # the default: one MLflow experiment per baseline commit
    env = project_repo(repo, params)
    # configured before the experiments: one run before the remote was committed carries the old
    # .dvc/config, and `dvc exp apply` of it elsewhere cannot check out its outputs
    sh("dvc", "remote", "add", "-d", "storage", str(repo.parent / "storage"), cwd=repo, env=env)
    repro_log = sh("dvc", "repro", cwd=repo, env=env)
    sh("git", "add", "-A", cwd=repo, env=env)
    sh("git", "commit", "-qm", "baseline", cwd=repo, env=env)
    return repo, env, repro_log


def all_runs(repo) -> pd.DataFrame:
    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    ids = [e.experiment_id for e in client.search_experiments()]
    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        return mlflow.search_runs(experiment_ids=ids)
    finally:
        mlflow.set_tracking_uri(None)


def test_repro_runs_every_stage_and_logs_each(baseline):
    repo, env, log = baseline
    for stage in ("prepare", "train", "classifier", "generate", "evaluate"):
        assert f"Running stage '{stage}'" in log
    assert (repo / "models/deep/energy.keras").is_file() and (repo / "reports/report.html").is_file()
    metrics = sh("dvc", "metrics", "show", "--json", cwd=repo, env=env)
    for key in ("fid", "kid", "coverage", "confident_share", "auroc_mixture", "test_accuracy"):
        assert f'"{key}"' in metrics, key
    assert not sh("git", "status", "--porcelain", cwd=repo, env=env).strip()  # outputs are not git files
    runs = all_runs(repo)
    stages = runs[runs["tags.ebm.role"] == "stage"]
    assert sorted(stages["tags.ebm.stage"]) == ["classifier", "evaluate", "generate", "prepare", "train"]
    assert (runs["status"] == "FINISHED").all()
    first_commit = sh("git", "rev-parse", "HEAD~1", cwd=repo, env=env).strip()
    experiment = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}").get_experiment(stages.iloc[0]["experiment_id"])
    assert experiment.name == f"ebm-{first_commit[:7]}"


def dvc_json(repo, env, *args):
    """The JSON that a `dvc ... --json` command prints on stdout (its warnings go to stderr)."""
    out = subprocess.run(["dvc", *args, "--json"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_another_familys_params_or_code_rerun_nothing_of_this_ones_training(baseline):
    """The train stage depends on the code and params of the family that model.family names:
    with the deep EBM selected, an RBM knob reruns nothing and RBM code reruns no training
    (generate and evaluate load model files of every family, so they do rerun)."""
    repo, env, _ = baseline
    params = yaml.safe_load((repo / "params.yaml").read_text())
    try:
        (repo / "params.yaml").write_text(yaml.safe_dump({**params, "rbm": {**params["rbm"], "hidden": 17},
                                                          "dbn": {**params["dbn"], "epochs": 3}}, sort_keys=False))
        assert "Data and pipelines are up to date" in sh("dvc", "status", cwd=repo, env=env)
        with open(repo / "ebm/families/rbm/model.py", "a") as f:
            f.write("\n# an edit\n")
        status = dvc_json(repo, env, "status")
        assert set(status) == {"generate", "evaluate"}, status
        (repo / "params.yaml").write_text(yaml.safe_dump({**params, "train": {**params["train"], "epochs": 3}},
                                                         sort_keys=False))
        assert "train" in dvc_json(repo, env, "status")  # its own params do
    finally:
        sh("git", "checkout", "--", "params.yaml", "ebm/families/rbm/model.py", cwd=repo, env=env)
    assert "Data and pipelines are up to date" in sh("dvc", "status", cwd=repo, env=env)


def test_dvc_plots_and_exp_show_read_every_output_without_an_error(baseline):
    repo, env, _ = baseline
    plots = dvc_json(repo, env, "plots", "show")
    assert plots.get("errors") in (None, []), plots["errors"]
    assert {"Training objective", "Chain energy", "Long-run check, FID", "Out-of-distribution detection"} <= set(plots["data"])
    assert all(plots["data"][name] for name in plots["data"])  # every plot has data
    shown = dvc_json(repo, env, "exp", "show")
    assert not [row for row in shown if row.get("error") or row["data"].get("error")], shown
    assert shown[0]["data"]["metrics"]["reports/train/metrics.json"]["data"]["steps"] > 0  # a column of its own
    trained = json.loads((repo / "reports/train/metrics.json").read_text())
    assert trained["steps"] > 0 and trained["rollbacks"] == 0 and trained["kernels"] in ("fused-chain", "fused-ops", "tf-ops")
    assert "final_cdiv" in trained and "train_seconds" in trained
    assert "reports/train/metrics.json" in sh("dvc", "metrics", "show", cwd=repo, env=env)


@pytest.fixture(scope="module")
def queued(baseline):
    """One queue, two workers: a sampler sweep (two step sizes x two generation seeds: two recipes
    of two draws each) and the RBM and DBN families."""
    repo, env, _ = baseline
    sh("dvc", "exp", "run", "--queue", "-S", "sampler.step_size=2,7", "-S", "generate.seed=0,1", cwd=repo, env=env)
    for family in ("rbm", "dbn"):
        sh("dvc", "exp", "run", "--queue", "-n", family, "-S", f"model.family={family}", cwd=repo, env=env)
    return repo, env, run_queue(repo, env, workers=2)


def test_queued_sweep_with_two_workers_loses_no_run(queued):
    repo, env, status = queued
    assert status.count("Success") == 6, failed_task_logs(repo, env, status)
    runs = all_runs(repo)
    parents = runs[(runs["tags.ebm.role"] == "pipeline") & runs["params.sampler.step_size"].isin(["2.0", "7.0"])
                   & (runs["params.model.family"] == "deep")]
    assert len(parents) == 4 and parents["metrics.test_cdiv"].notna().all()
    assert parents["tags.dvc.exp_name"].nunique() == 4
    # MLflow groups the draws of a recipe: one ebm.recipe tag per step size, on both of its seeds
    recipes = parents.groupby("tags.ebm.recipe")["params.sampler.step_size"].agg(lambda s: sorted(s))
    assert sorted(recipes.tolist()) == [["2.0", "2.0"], ["7.0", "7.0"]]
    train_run = runs[(runs["tags.ebm.stage"] == "train") & (runs["tags.ebm.family"] == "deep")]
    assert len(train_run) == 1  # the sampler sweep reran only generate and evaluate ...
    for _, parent in parents.iterrows():
        children = runs[runs["tags.mlflow.parentRunId"] == parent["run_id"]]
        assert sorted(children["tags.ebm.stage"]) == ["evaluate", "generate"]
        assert (children["status"] == "FINISHED").all()
        generate = children[children["tags.ebm.stage"] == "generate"].iloc[0]
        assert generate["tags.ebm.upstream.train"] == train_run["run_id"].iloc[0]  # ... traced to the cached training
        assert len(generate["tags.git.commit"]) == 40 and generate["tags.mlflow.source.git.commit"] == generate["tags.git.commit"]
    shown = sh("dvc", "exp", "show", "--csv", cwd=repo, env=env)
    assert "fid" in shown and "auroc_mixture" in shown and "coverage" in shown
    out = subprocess.run([str(Path(sys.executable).parent / "ebm"), "compare", "--all", "--format", "csv"],
                         cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    table = pd.read_csv(io.StringIO(out.stdout))
    assert table.columns[:2].tolist() == ["experiment", "n"]
    swept = table[table["sampler.step_size"].isin([2.0, 7.0]) & (table["model.family"] == "deep")]
    assert sorted(swept["n"]) == [2, 2] and swept["fid_ci"].notna().all() and swept["fid_worst"].notna().all()
    assert all(sorted(s.removeprefix("generate.seed=").split(",")) == ["0", "1"] for s in swept["seeds"])
    assert table.loc[0, "fid_vs_best"] == "best"


def test_rbm_and_dbn_run_from_params_alone_and_compare_with_the_deep_ebm(queued):
    repo, env, _ = queued
    runs = all_runs(repo)
    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    for family in ("rbm", "dbn"):
        mine = runs[runs["tags.dvc.exp_name"] == family]
        # the judge (classifier) is shared by every family: only these three stages ran
        assert sorted(mine.loc[mine["tags.ebm.role"] == "stage", "tags.ebm.stage"]) == ["evaluate", "generate", "train"]
        assert (mine["status"] == "FINISHED").all() and (mine["tags.ebm.family"] == family).all()
        parent = mine[mine["tags.ebm.role"] == "pipeline"].iloc[0]
        assert parent["params.model.family"] == family
        assert parent["metrics.test_loglik"] < 0 and parent["metrics.fid"] > 0 and pd.notna(parent["metrics.log_z"])
        evaluate = mine[mine["tags.ebm.stage"] == "evaluate"].iloc[0]
        metrics = json.loads(Path(client.download_artifacts(evaluate["run_id"], "metrics.json")).read_text())
        assert metrics["test_loglik"] < 0 and metrics.get("log_z_low", -1e300) <= metrics["log_z"] <= metrics["log_z_high"]
        report = Path(client.download_artifacts(evaluate["run_id"], "report.html")).read_text()
        assert f"{family.upper()}: likelihood" in report
        train = mine[mine["tags.ebm.stage"] == "train"].iloc[0]
        history = pd.read_csv(client.download_artifacts(train["run_id"], "history.csv"))
        assert history["layer"].tolist() == ([1, 1] if family == "rbm" else [1, 1, 2, 2])
        assert len(client.get_metric_history(train["run_id"], "val_pseudo_likelihood")) == len(history)
        assert {a.path for a in client.list_artifacts(train["run_id"])} >= {"checkpoint", "history.csv", "images"}
        assert any("/rbm_filters+step+2+" in a.path for a in client.list_artifacts(train["run_id"], "images"))
    out = subprocess.run([str(Path(sys.executable).parent / "ebm"), "compare", "--all", "--format", "csv"],
                         cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    table = pd.read_csv(io.StringIO(out.stdout))
    assert {"rbm", "dbn"} <= set(table["experiment"]) and {"deep", "rbm", "dbn"} <= set(table["model.family"])
    diff = dvc_json(repo, env, "plots", "diff", "rbm", "dbn")  # overlaid, no error
    assert diff.get("errors") in (None, []), diff["errors"]
    assert set(diff["data"]["Training objective"][0]["revisions"]) == {"rbm", "dbn"}
    assert table.loc[table["experiment"].isin(["rbm", "dbn"]), "test_loglik"].notna().all()


def test_ebm_register_registers_the_best_pipeline_of_the_sweeps(queued):
    """`ebm register --all`: the deep-EBM pipeline run with the lowest FID wins (RBM/DBN runs
    have no Keras model and are not candidates); its training run's model becomes a registry
    version with the alias @best, which `ebm sample` loads; a second call registers nothing new."""
    repo, env, _ = queued
    ebm = str(Path(sys.executable).parent / "ebm")
    first = sh(ebm, "register", "--all", cwd=repo, env=env)
    runs = all_runs(repo)
    parents = runs[(runs["tags.ebm.role"] == "pipeline") & (runs["tags.ebm.family"] == "deep")
                   & runs["metrics.fid"].notna()]
    assert len(parents) >= 3  # the baseline and the two queued step sizes
    best = parents.sort_values("metrics.fid").iloc[0]
    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    version = client.get_model_version_by_alias("ebm-energy", "best")
    assert str(version.version) == "1" and version.tags["ebm.pipeline_run"] == best["run_id"]
    assert f"pipeline run {best['run_id']}" in first and "version 1" in first
    trained = runs[runs["run_id"] == version.tags["ebm.train_run"]].iloc[0]
    assert trained["tags.ebm.stage"] == "train" and trained["tags.ebm.family"] == "deep"
    out = sh(ebm, "sample", "--model-uri", "models:/ebm-energy@best", "--n", "4", "--steps", "3",
             "--out", str(repo / "best.png"), cwd=repo, env=env)
    assert "4 deep samples" in out and (repo / "best.png").stat().st_size > 100
    again = sh(ebm, "register", "--all", cwd=repo, env=env)
    assert "already registered as ebm-energy version 1" in again
    assert len(client.search_model_versions("name = 'ebm-energy'")) == 1
    (repo / "best.png").unlink()


def test_a_team_shares_models_and_experiments_through_git_and_a_dvc_remote(queued, tmp_path):
    """The team round trip: a bare git repo and a DVC remote (a local folder here; S3 or SSH in
    the README) shared by two clones. `dvc push`, a fresh clone, `dvc pull`: `dvc repro` reruns
    nothing. `dvc exp push` / `dvc exp pull` move an experiment each way, with its outputs."""
    repo, env, _ = queued
    team_git, clone = tmp_path / "team.git", tmp_path / "clone"
    sh("git", "init", "-q", "--bare", "-b", "main", str(team_git), cwd=tmp_path, env=env)
    sh("git", "remote", "add", "origin", str(team_git), cwd=repo, env=env)
    sh("git", "push", "-q", "origin", "main", cwd=repo, env=env)
    sh("dvc", "push", cwd=repo, env=env)
    # an experiment of the shared commit, the queued sweep's step size 7: its outputs go to the storage with it
    runs = all_runs(repo)
    shared = runs.loc[(runs["tags.ebm.role"] == "pipeline") & (runs["params.sampler.step_size"] == "7.0"),
                      "tags.dvc.exp_name"].iloc[0]
    ref = next(r for r in sh("git", "for-each-ref", "--format=%(refname)", "refs/exps", cwd=repo, env=env).split()
               if r.endswith(f"/{shared}"))
    theirs = next(o["md5"] for o in yaml.safe_load(sh("git", "show", f"{ref}:dvc.lock", cwd=repo, env=env))
                  ["stages"]["generate"]["outs"] if o["path"].endswith("samples.npz"))
    sh("dvc", "exp", "push", "origin", shared, cwd=repo, env=env)

    sh("git", "clone", "-q", str(team_git), str(clone), cwd=tmp_path, env=env)
    sh("dvc", "pull", cwd=clone, env=env)
    assert (clone / "models/deep/energy.keras").read_bytes() == (repo / "models/deep/energy.keras").read_bytes()
    log = sh("dvc", "repro", cwd=clone, env=env)
    assert "Running stage" not in log, log
    assert "Data and pipelines are up to date" in sh("dvc", "status", cwd=clone, env=env)

    sh("dvc", "exp", "pull", "origin", shared, cwd=clone, env=env)  # the other's experiment, outputs included
    sh("dvc", "exp", "apply", shared, cwd=clone, env=env)
    assert yaml.safe_load((clone / "params.yaml").read_text())["sampler"]["step_size"] == 7
    assert hashlib.md5((clone / "data/generated/samples.npz").read_bytes()).hexdigest() == theirs
    assert "Data and pipelines are up to date" in sh("dvc", "status", cwd=clone, env=env)
    sh("git", "checkout", "-q", "--", ".", cwd=clone, env=env)
    sh("dvc", "checkout", "-q", cwd=clone, env=env)

    sh("dvc", "exp", "run", "-n", "from-clone", "-S", "sampler.step_size=3", cwd=clone, env=env)
    sh("dvc", "exp", "push", "origin", "from-clone", cwd=clone, env=env)
    sh("dvc", "exp", "pull", "origin", "from-clone", cwd=repo, env=env)
    shown = pd.read_csv(io.StringIO(subprocess.run(["dvc", "exp", "show", "--csv", "-A"], cwd=repo, env=env,
                                                   capture_output=True, text=True, timeout=300).stdout))
    row = shown[shown["Experiment"] == "from-clone"]
    assert len(row) == 1 and float(row["sampler.step_size"].iloc[0]) == 3.0 and pd.notna(row["fid"].iloc[0])


def test_dvc_queue_kill_ends_the_running_stage_killed(baseline):
    """`dvc queue kill` (documented as Ctrl-C) on a queued experiment in a real worker: its
    running stage ends KILLED in MLflow, not RUNNING forever."""
    repo, env, _ = baseline
    # long and gentle, so that it is still training when the kill comes (tiny chains collapse
    # after ~50 epochs at the default rate, and the divergence guard would end the run first)
    sh("dvc", "exp", "run", "--queue", "-n", "long", "-S", "train.epochs=2000", "-S", "train.lr_schedule=constant",
       "-S", "train.learning_rate=0.00002", "-S", "train.max_abs_cdiv=1000000", cwd=repo, env=env)
    # `dvc queue start -j 1` can stay in the foreground until the queue is empty: start it aside
    starter = subprocess.Popen(["dvc", "queue", "start", "-j", "1"], cwd=repo, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = mlflow.MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")

    def train_status():
        ids = [e.experiment_id for e in client.search_experiments()]
        runs = client.search_runs(ids, "tags.`dvc.exp_name` = 'long' and tags.`ebm.stage` = 'train'")
        return runs[0].info.status if runs else None

    seen = []
    deadline = time.time() + 300
    while time.time() < deadline and (not seen or seen[-1] in (None, "SCHEDULED")):
        seen.append(train_status())
        time.sleep(0.5)
    assert seen[-1] == "RUNNING", seen[-3:]
    time.sleep(5)  # into the epochs
    sh("dvc", "queue", "kill", "long", cwd=repo, env=env)
    deadline = time.time() + 120
    while train_status() == "RUNNING" and time.time() < deadline:
        time.sleep(1)
    assert train_status() == "KILLED"
    starter.wait(timeout=120)
