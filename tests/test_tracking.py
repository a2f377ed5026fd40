"""The tracking layer against real MLflow stores: SQLite files and a real `mlflow server`."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from ebm import pipeline, tracking
from ebm.compare import experiments_table, recipes_table, render
from ebm.config import parse_params
from ebm.families import load_model
from tests.conftest import ROOT, http_get, start_mlflow_server, tiny_params_dict


def test_runs_land_at_the_root_store_from_a_temporary_copy(tmp_path, monkeypatch):
    root, copy = tmp_path / "repo", tmp_path / "copy"
    (root / ".dvc").mkdir(parents=True)
    copy.mkdir()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(root))
    monkeypatch.chdir(copy)
    params = parse_params(tiny_params_dict())
    pipeline.prepare(params, pipeline.PreparePaths(data=copy / "data"))
    assert (root / "mlflow.db").is_file() and not (copy / "mlflow.db").exists()
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ebm").experiment_id])
    stage = next(r for r in runs if r.data.tags.get("ebm.stage") == "prepare")
    assert stage.info.artifact_uri.startswith((root / "mlartifacts").as_uri())
    assert json.loads((copy / "reports/runs/prepare.json").read_text())["run_id"] == stage.info.run_id


def test_default_experiment_is_named_after_the_baseline_commit(tmp_path, monkeypatch, mlflow_store):
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "0123456789abcdef0123456789abcdef01234567")
    raw = tiny_params_dict()
    raw["tracking"]["experiment"] = ""
    tracker = tracking.Tracker()
    assert tracker.experiment_name(parse_params(raw)) == "ebm-0123456"
    assert tracker.experiment_name(parse_params(tiny_params_dict())) == "ebm"


def test_an_experiment_created_by_another_worker_meanwhile_is_used(mlflow_store, monkeypatch):
    """Against a tracking server there is no store lock: two queue workers of one baseline commit can
    both look the experiment up, miss it, and create it; the second create fails, and its stage
    must log into the experiment the first one made."""
    tracker = tracking.Tracker()
    other = mlflow.MlflowClient(mlflow_store)  # the other worker
    lookup = tracker.client.get_experiment_by_name
    calls = []

    def missed_then_created(name):
        calls.append(name)
        if len(calls) == 1:  # our lookup misses; the other worker creates it right after
            other.create_experiment(name)
            return None
        return lookup(name)

    monkeypatch.setattr(tracker.client, "get_experiment_by_name", missed_then_created)
    assert tracker.ensure_experiment("ebm-0123456") == other.get_experiment_by_name("ebm-0123456").experiment_id
    assert len(other.search_experiments(filter_string="name = 'ebm-0123456'")) == 1


def test_a_stage_that_raises_ends_failed(mlflow_store):
    params = parse_params(tiny_params_dict())
    with pytest.raises(ZeroDivisionError):
        with tracking.stage_run("train", params, {"a": 1}):
            raise ZeroDivisionError
    runs = mlflow.search_runs(experiment_names=["ebm"])
    assert runs.loc[runs["tags.ebm.role"] == "stage", "status"].tolist() == ["FAILED"]
    assert runs.loc[runs["tags.ebm.role"] == "pipeline", "status"].tolist() == ["FAILED"]  # the pipeline failed


def test_the_parent_run_spans_its_stages_and_takes_their_status(mlflow_store):
    """MLflow shows the parent's duration and status: from the first stage's start to the last
    stage's end, RUNNING while a stage runs, and the status of the stage that ended last (a
    failed stage that is rerun and passes leaves the pipeline FINISHED)."""
    params = parse_params(tiny_params_dict())
    client = tracking.Tracker().client

    def parent():
        runs = mlflow.search_runs(experiment_names=["ebm"], filter_string="tags.`ebm.role` = 'pipeline'",
                                  output_format="list")
        assert len(runs) == 1
        return runs[0].info

    with tracking.stage_run("prepare", params) as first:
        time.sleep(0.3)
        assert parent().status == "RUNNING"
    assert parent().status == "FINISHED"
    with pytest.raises(ZeroDivisionError):
        with tracking.stage_run("train", params):
            assert parent().status == "RUNNING"
            raise ZeroDivisionError
    assert parent().status == "FAILED"
    with tracking.stage_run("train", params) as last:
        time.sleep(0.3)
    info, first_info, last_info = parent(), client.get_run(first.run_id).info, client.get_run(last.run_id).info
    assert info.status == "FINISHED"
    assert info.start_time <= first_info.start_time and info.end_time == last_info.end_time
    assert info.end_time - info.start_time >= 600  # two stages of 0.3 s at least, not a created-finished run


STAGE_THAT_WAITS = textwrap.dedent("""
    import sys, time
    from ebm import tracking
    from ebm.config import parse_params
    from tests.conftest import tiny_params_dict
    with tracking.stage_run("train", parse_params(tiny_params_dict())):
        print("started", flush=True)
        time.sleep(120)
""")


def _start_waiting_stage(tmp_path, inherited=signal.SIG_DFL):
    """The stage in a child process whose SIGINT disposition starts as ``inherited`` (set
    explicitly, so the test does not depend on how pytest itself was started)."""
    proc = subprocess.Popen([sys.executable, "-c", STAGE_THAT_WAITS], cwd=tmp_path, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, inherited))
    assert proc.stdout.readline().strip() == "started"
    return proc


def _stage_statuses():
    runs = mlflow.search_runs(experiment_names=["ebm"])
    return runs.loc[runs["tags.ebm.role"] == "stage", "status"].tolist()


@pytest.mark.parametrize("inherited", [signal.SIG_DFL, signal.SIG_IGN], ids=["sigint-default", "sigint-ignored"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_killed_stage_ends_killed(tmp_path, mlflow_store, sig, inherited):
    """Also when the stage starts with SIGINT ignored, as a background job of a non-interactive
    shell does (``nohup ... &``): the stage installs its own handlers."""
    proc = _start_waiting_stage(tmp_path, inherited)
    assert _stage_statuses() == ["RUNNING"]
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert _stage_statuses() == ["KILLED"]


def _catches_sigint(pid: int) -> bool:
    """Whether process ``pid`` has a handler for SIGINT (Linux: the SigCgt mask in /proc)."""
    with open(f"/proc/{pid}/status") as status:
        lines = status.read().splitlines()
    for line in lines:
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGINT - 1) & 1)
    return False


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the signal masks in /proc (Linux)")
def test_a_stage_interrupted_in_its_start_up_stops_also_when_started_with_sigint_ignored(tmp_path, mlflow_store):
    """The real train stage, started with SIGINT ignored (as a DVC queue worker started by a
    background job starts it): SIGINT is armed before TensorFlow's import and the MLflow run
    (before the stage writes its run record), and an interrupt in that start-up stops the stage as
    in a terminal. Such an interrupt was once lost, and the stage trained to the end."""
    params = tiny_params_dict()
    params["train"]["epochs"] = 500  # minutes of training, were the interrupt lost
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    pipeline.prepare(parse_params(params), pipeline.PreparePaths(data=tmp_path / "data"))
    record = tmp_path / "runs" / "train.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "stages.train", "--data", "data", "--model", "m.keras", "--history", "h.csv",
         "--negatives", "n.png", "--filters", "f.png", "--record", str(record), "--snapshots", "snapshots"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        deadline = time.monotonic() + 120
        while not _catches_sigint(proc.pid):
            assert proc.poll() is None and time.monotonic() < deadline, "the stage never armed SIGINT"
            time.sleep(0.005)
        assert not record.exists()  # armed in its start-up, not only once its MLflow run exists
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()  # a no-op once it has ended
    assert proc.returncode == -signal.SIGINT, err  # what an interrupted Python process returns in a terminal
    assert "KeyboardInterrupt" in err and not (tmp_path / "m.keras").exists()


def test_close_stale_runs_ends_runs_of_dead_processes(tmp_path, mlflow_store):
    proc = _start_waiting_stage(tmp_path)
    proc.kill()  # SIGKILL: no handler runs, the run stays RUNNING
    proc.wait(timeout=60)
    assert _stage_statuses() == ["RUNNING"]
    assert len(tracking.close_stale_runs()) == 1
    assert _stage_statuses() == ["KILLED"]
    pipeline_runs = mlflow.search_runs(experiment_names=["ebm"], filter_string="tags.`ebm.role` = 'pipeline'")
    assert pipeline_runs["status"].tolist() == ["KILLED"]  # the pipeline it spanned ends with it
    alive = _start_waiting_stage(tmp_path)
    try:
        assert tracking.close_stale_runs() == []
        assert sorted(_stage_statuses()) == ["KILLED", "RUNNING"]  # the live one is left alone
    finally:
        alive.terminate()
        alive.wait(timeout=60)


def test_a_new_stage_closes_a_killed_run_and_names_it(tmp_path, mlflow_store):
    proc = _start_waiting_stage(tmp_path)
    proc.kill()  # SIGKILL mid-stage: its run stays RUNNING
    proc.wait(timeout=60)
    running = mlflow.search_runs(experiment_names=["ebm"], filter_string="attributes.status = 'RUNNING'")
    assert sorted(running["tags.ebm.role"]) == ["pipeline", "stage"]  # the stage and the pipeline it spans
    killed = running[running["tags.ebm.role"] == "stage"]
    parent = running.loc[running["tags.ebm.role"] == "pipeline", "run_id"].iloc[0]
    with tracking.stage_run("train", parse_params(tiny_params_dict())) as run:
        assert mlflow.get_run(parent).info.status == "RUNNING"  # the pipeline runs again with its next stage
    runs = mlflow.search_runs(experiment_names=["ebm"]).set_index("run_id")
    assert runs.loc[killed["run_id"].iloc[0], "status"] == "KILLED"
    assert runs.loc[run.run_id, "status"] == "FINISHED" and runs.loc[parent, "status"] == "FINISHED"
    assert runs.loc[run.run_id, "tags.ebm.replaces_killed"] == killed["run_id"].iloc[0]


WRITER = textwrap.dedent("""
    import sys, time
    from mlflow.entities import Metric
    from ebm import tracking
    tracker = tracking.Tracker()
    for i in range(40):
        with tracker.locked():
            tracker.client.log_batch(sys.argv[1], metrics=[Metric("m", float(i), int(time.time() * 1000), i)])
""")


def test_concurrent_writers_to_sqlite_lose_nothing(tmp_path, mlflow_store):
    client = mlflow.MlflowClient(mlflow_store)
    experiment = client.create_experiment("ebm")
    run_ids = [client.create_run(experiment).info.run_id for _ in range(4)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, rid], env=env, stderr=subprocess.PIPE, text=True)
             for rid in run_ids]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    for rid in run_ids:
        assert [m.step for m in client.get_metric_history(rid, "m")] == list(range(40))


def test_a_real_mlflow_server_serves_runs_metrics_images_and_the_model(tmp_path, mlflow_store):
    params = parse_params(tiny_params_dict())
    pipeline.prepare(params, pipeline.PreparePaths(data=tmp_path / "data"))
    paths = pipeline.TrainPaths(data=tmp_path / "data", model=tmp_path / "m.keras", history=tmp_path / "h.csv",
                                negatives=tmp_path / "n.png")
    pipeline.train(params, paths, verbose=0)
    train_id = json.loads(paths.record.read_text())["run_id"]

    # the logged model draws digits through the runs:/ URI
    loaded = mlflow.keras.load_model(f"runs:/{train_id}/model")
    x = np.zeros((2, 32, 32, 1), "float32")
    np.testing.assert_allclose(loaded(x).numpy(), load_model(paths.model)[1](x).numpy(), atol=1e-5)

    server, base = start_mlflow_server(mlflow_store)
    try:
        experiment = http_get(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=ebm")["experiment"]
        req = urllib.request.Request(f"{base}/api/2.0/mlflow/runs/search", method="POST",
                                     data=json.dumps({"experiment_ids": [experiment["experiment_id"]]}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            runs = json.loads(r.read())["runs"]
        stages = {t["value"] for run in runs for t in run["data"].get("tags", []) if t["key"] == "ebm.stage"}
        assert stages == {"prepare", "train"}
        history = http_get(f"{base}/api/2.0/mlflow/metrics/get-history?run_id={train_id}&metric_key=loss")
        assert [m["step"] for m in history["metrics"]] == [1, 2]
        listing = http_get(f"{base}/api/2.0/mlflow/artifacts/list?run_id={train_id}&path=images")
        images = sorted((f["path"] for f in listing["files"] if f["path"].endswith(".png")),
                        key=lambda path: int(path.split("+step+")[1].split("+")[0]))
        assert [path.split("+timestamp+")[0] for path in images] == ["images/negatives+step+1", "images/negatives+step+2"]
        png = http_get(f"{base}/get-artifact?run_uuid={train_id}&path={urllib.parse.quote(images[0])}")
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        server.terminate()
        server.wait(timeout=60)


def _fake_runs() -> pd.DataFrame:
    rows = []
    for name, step, cdiv in (("exp-a", "2.0", -1.5), ("exp-b", "5.0", -3.0), ("exp-c", "10.0", None)):
        rows.append({"run_id": f"id-{name}", "tags.ebm.role": "pipeline", "tags.dvc.exp_name": name,
                     "tags.git.commit": "abcdef0123", "params.sampler.step_size": step, "params.train.epochs": "2",
                     "metrics.test_cdiv": cdiv, "metrics.energy_real": -1.0})
    rows.append({"run_id": "child", "tags.ebm.role": "stage", "tags.dvc.exp_name": "exp-a",
                 "tags.git.commit": "abcdef0123", "params.sampler.step_size": "2.0", "metrics.test_cdiv": -9.0})
    return pd.DataFrame(rows)


def test_compare_ranks_pipeline_runs_and_keeps_only_varying_params():
    table = experiments_table(_fake_runs(), sort_by="test_cdiv")
    assert table["experiment"].tolist() == ["exp-b", "exp-a", "exp-c"]  # unfinished last
    assert "sampler.step_size" in table.columns and "train.epochs" not in table.columns
    assert table["run_id"].tolist() == ["id-exp-b", "id-exp-a", "id-exp-c"]
    csv = render(table, "csv").splitlines()
    assert csv[0] == "experiment,sampler.step_size,test_cdiv,energy_real,commit,run_id"
    assert csv[1].startswith("exp-b,5.0,-3.0,")
    assert render(table, "markdown").splitlines()[0].startswith("| experiment")
    with pytest.raises(KeyError, match="cannot sort by"):
        experiments_table(_fake_runs(), sort_by="fid")


def _draws(recipes: dict[str, list[float]]) -> pd.DataFrame:
    """Pipeline runs of recipes (step size -> FIDs of its draws, one train.seed each), without the
    ebm.recipe tag (as runs logged before it) for the first recipe."""
    rows = []
    for r, (step, fids) in enumerate(recipes.items()):
        for seed, fid in enumerate(fids):
            rows.append({"run_id": f"id-{step}-{seed}", "tags.ebm.role": "pipeline", "tags.dvc.exp_name": f"e{step}-{seed}",
                         "tags.git.commit": "abcdef0123", "params.sampler.step_size": step, "params.train.seed": str(seed),
                         "params.generate.seed": "0", "tags.ebm.recipe": None if r == 0 else f"recipe-{step}",
                         "params.rbm.hidden": None if r == 0 else "500",  # a param a run did not log
                         "metrics.fid": fid, "metrics.coverage": 1.0 - fid / 100})
    return pd.DataFrame(rows)


def test_compare_puts_the_draws_of_a_recipe_in_one_row_with_their_spread():
    runs = _draws({"2.0": [20.0, 22.0, 24.0], "5.0": [21.0, 23.0, 25.0], "10.0": [40.0, 41.0, 42.0], "7.0": [30.0]})
    table = recipes_table(runs, sort_by="fid")
    assert table["sampler.step_size"].tolist() == ["2.0", "5.0", "7.0", "10.0"]
    assert table["n"].tolist() == [3, 3, 1, 3] and "train.seed" not in table
    best = table.iloc[0]
    assert best["experiment"] == "e2.0-0,e2.0-1,e2.0-2" and best["seeds"] == "train.seed=0,1,2"
    assert best["fid"] == pytest.approx(22.0) and best["fid_sd"] == pytest.approx(2.0)
    assert best["fid_ci"] == pytest.approx(4.303 * 2.0 / 3 ** 0.5, rel=1e-3)  # t(0.975, 2) = 4.303
    assert best["fid_worst"] == 24.0 and best["coverage_worst"] == pytest.approx(0.76)  # worst: high FID, low coverage
    assert table["fid_vs_best"].tolist() == ["best", "within noise", "one draw", "beyond noise"]
    assert pd.isna(table.loc[2, "fid_ci"])  # one draw has no interval
    assert recipes_table(runs, sort_by="fid")["run_id"].iloc[0] == "id-2.0-0,id-2.0-1,id-2.0-2"


def test_the_recipe_hash_ignores_seeds_only():
    base = parse_params(tiny_params_dict())
    raw = tiny_params_dict()
    raw["train"]["seed"], raw["generate"]["seed"], raw["data"]["seed"] = 3, 4, 5
    other_draw = parse_params(raw)
    raw["sampler"]["step_size"] = 5.0
    other_recipe = parse_params(raw)
    assert base.digest() != other_draw.digest() and base.recipe_digest() == other_draw.recipe_digest()
    assert other_recipe.recipe_digest() != base.recipe_digest()


def test_experiments_open_on_the_ml_runs_view(mlflow_store):
    """MLflow 3 lands on its GenAI overview unless told otherwise: experiments are tagged as model
    development and every link `ebm ui` prints asks for the runs table of the ML view."""
    from ebm.cli import latest_experiment

    with tracking.stage_run("train", parse_params(tiny_params_dict())):
        pass
    tracker = tracking.Tracker()
    experiment = tracker.client.get_experiment_by_name("ebm")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert latest_experiment(tracker).experiment_id == experiment.experiment_id
    url = tracking.runs_url("http://127.0.0.1:5000/", experiment.experiment_id)
    assert url == (f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning"
                   "&viewStateShareKey=ebm-ranked")
    # the views links name are stored on the experiment, in the UI's own shared-view format
    ranked = json.loads(experiment.tags["mlflow.sharedViewState.ebm-ranked"])
    assert ranked["orderByKey"] == "metrics.`fid`" and ranked["orderByAsc"] is True
    assert ranked["searchFilter"] == "tags.`ebm.role` = 'pipeline'"
    nested = json.loads(experiment.tags["mlflow.sharedViewState.ebm-runs"])
    for view in (ranked, nested):
        assert {"metrics.`fid`", "metrics.`coverage`", "attributes.`Dataset`"} <= set(view["selectedColumns"])
    filtered = mlflow.search_runs(experiment_names=["ebm"], filter_string=ranked["searchFilter"])  # MLflow's syntax
    assert filtered["tags.ebm.role"].tolist() == ["pipeline"]


def test_register_picks_the_best_finished_deep_ebm_pipeline():
    from ebm.registry import RegistryError, best_pipeline, training_run

    rows = [{"run_id": "a", "status": "FINISHED", "tags.ebm.role": "pipeline", "tags.ebm.family": "ebm", "metrics.fid": 80.0},
            {"run_id": "b", "status": "FINISHED", "tags.ebm.role": "pipeline", "tags.ebm.family": "deep", "metrics.fid": 60.0},
            {"run_id": "c", "status": "FAILED", "tags.ebm.role": "pipeline", "tags.ebm.family": "ebm", "metrics.fid": 10.0},
            {"run_id": "d", "status": "FINISHED", "tags.ebm.role": "pipeline", "tags.ebm.family": "rbm", "metrics.fid": 5.0},
            {"run_id": "g", "status": "FINISHED", "tags.ebm.role": "stage", "tags.ebm.stage": "generate",
             "tags.mlflow.parentRunId": "b", "tags.ebm.upstream.train": "t-cached", "metrics.fid": None}]
    runs = pd.DataFrame(rows)
    best = best_pipeline(runs, "fid")
    assert best["run_id"] == "b"  # a failed run and another family do not compete
    assert training_run(runs, best) == "t-cached"  # a sampler-only experiment: the cached training run
    assert best_pipeline(runs, "fid", ascending=False)["run_id"] == "a"
    with pytest.raises(RegistryError, match="metric 'kid'"):
        best_pipeline(runs, "kid")
    with pytest.raises(RegistryError, match="names no training run"):
        training_run(runs, runs.iloc[0])


def test_workers_that_open_a_new_store_at_once_all_get_it(tmp_path):
    """`dvc queue start -j 2` on a fresh clone: both workers' first stage opens the SQLite store
    that does not exist yet, and MLflow creates its tables on opening ("table ... already exists"
    for the loser). Four processes, released together, must all open it and log a run."""
    code = textwrap.dedent("""
        import os, sys, time
        from ebm import tracking
        import mlflow.store.tracking.sqlalchemy_store  # the slow imports first, then report ready
        open(sys.argv[1] + "." + str(os.getpid()), "w").close()
        while not os.path.exists(sys.argv[1]):  # the start gun
            time.sleep(0.001)
        tracker = tracking.Tracker()
        with tracker.locked():
            experiment = tracker.ensure_experiment("race")
            tracker.client.create_run(experiment)
    """)
    env = {**os.environ, "DVC_ROOT": str(tmp_path), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "PYTHONPATH": str(ROOT)}
    gun = tmp_path / "go"
    workers = [subprocess.Popen([sys.executable, "-c", code, str(gun)], env=env, cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(4)]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("go.*"))) < len(workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    gun.touch()
    outputs = [w.communicate(timeout=120)[0] for w in workers]
    assert [w.returncode for w in workers] == [0] * 4, "\n".join(outputs)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert len(client.search_runs([client.get_experiment_by_name("race").experiment_id])) == 4


@pytest.mark.parametrize("damage", ["zeroed header", "truncated"])
def test_a_corrupt_store_is_named_with_the_way_out(tmp_path, mlflow_store, damage):
    from ebm.errors import TrackingStoreError

    tracking.Tracker()  # a real store with its tables
    db = tmp_path / "mlflow.db"
    data = db.read_bytes()
    db.write_bytes(b"\0" * 100 + data[100:] if damage == "zeroed header" else data[:len(data) // 3])
    with pytest.raises(TrackingStoreError) as err:
        tracking.Tracker()
    message = str(err.value)
    assert f"the MLflow tracking store {mlflow_store} cannot be used" in message
    assert f"move {db} aside" in message and "MLFLOW_TRACKING_URI" in message
    # the console script says the same in one line, no traceback (the stages' entry likewise)
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ebm"), "runs"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "error: the MLflow tracking store" in out.stderr
    assert "Traceback" not in out.stderr, out.stderr[-2000:]


def test_a_run_is_placed_among_the_reference_draws_of_its_recipe(tmp_path):
    from ebm.compare import against_reference, reference_draws
    from ebm.pipeline.evaluate import spread_paragraphs

    runs = _draws({"2.0": [20.0, 22.0, 24.0], "5.0": [30.0]})
    runs["tags.ebm.cpu"] = ["Some CPU"] * 3 + [None]  # the last logged before the tag
    runs["params.seed"] = None  # a stage run's section param: not a seed of the pipeline runs
    draws = reference_draws(runs, recipe_of=lambda run_id: "r" + run_id.split("-")[1], cpu="Some CPU")
    assert "seed" not in draws
    assert draws["recipe"].tolist() == ["r2.0"] * 3 + ["r5.0"] and draws["train.seed"].tolist() == ["0", "1", "2", "0"]
    assert draws["cpu"].unique().tolist() == ["Some CPU"] and draws["fid"].tolist() == [20.0, 22.0, 24.0, 30.0]
    placed = dict(against_reference({"fid": 25.0, "coverage": 0.77}, "r2.0", draws))
    assert placed["fid"] == "this run 25; 3 draws: mean 22, sd 2, range [20, 24]: above their range"
    assert placed["coverage"].endswith("range [0.76, 0.8]: inside their range")
    assert against_reference({"fid": 25.0}, "another", draws) == []

    params = parse_params(tiny_params_dict())
    file = tmp_path / "draws.csv"
    draws.assign(recipe=params.recipe_digest()).to_csv(file, index=False)
    text = "".join(spread_paragraphs(params, {"fid": 21.0}, file))
    assert f"Reference draws of this recipe ({params.recipe_digest()})" in text and "inside their range" in text
    assert "one run is one draw" in "".join(spread_paragraphs(params, {"fid": 21.0}, None))


@pytest.mark.parametrize("sig, raised", [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, tracking.StageKilled)])
def test_a_signal_during_a_store_write_waits_for_the_write_and_ends_the_run_killed(mlflow_store, sig, raised):
    """An interrupt that lands inside MLflow's database session came out as an MlflowException
    ("This transaction is closed") and the run ended FAILED: it is held until the write is done."""
    with pytest.raises(raised):
        with tracking.stage_run("train", parse_params(tiny_params_dict())) as run:
            with run.tracker.locked():
                os.kill(os.getpid(), sig)  # delivered here, in the middle of the write ...
                run.tracker.client.set_tag(run.run_id, "written", "yes")  # ... which still completes
            pytest.fail("the held signal was not raised when the write ended")
    stage = tracking.Tracker().client.get_run(run.run_id)
    assert stage.info.status == "KILLED" and stage.data.tags["written"] == "yes"
