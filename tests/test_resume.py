"""Full-state checkpoints: resume after SIGKILL to the same weights (which is also the
determinism check), atomic writes, rollback after a divergence."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import mlflow
import numpy as np
import pandas as pd
import pytest

from ebm import data as data_lib, pipeline
from ebm.errors import TrainingDiverged
from ebm.families.deep import resume
from ebm.config import parse_params
from ebm.families import load_model_file
from tests.conftest import ROOT, tiny_params_dict


def small_params(**train):
    """Tiny params (640 training digits: 20 batches of 32 per epoch)."""
    raw = tiny_params_dict()
    raw["train"].update(train)
    return raw


TRAIN = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from ebm import pipeline
    from ebm.config import parse_params
    params = parse_params(json.loads(sys.argv[1]))
    out = Path(sys.argv[2])
    pipeline.train(params, pipeline.TrainPaths(data=Path(sys.argv[3]), model=out / "m.keras",
                   history=out / "h.csv", negatives=out / "n.png", filters=out / "f.png",
                   record=out / "train.json", snapshots=out / "snaps"), verbose=0)
""")


def _train(raw, out, data, **popen):
    return subprocess.Popen([sys.executable, "-c", TRAIN, json.dumps(raw), str(out), str(data)],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def _weights(path):
    return load_model_file(path).get_weights()


@pytest.fixture
def prepared(tmp_path, mlflow_store):
    # the ring buffer and the persistent chains both resume; the chains join after epoch 3, always in the resumed
    # run; a snapshot every epoch, so some are written before the kill
    raw = small_params(epochs=4, persistent_chains=64, persistent_from=3, snapshot_every=1)
    pipeline.prepare(parse_params(raw), pipeline.PreparePaths(data=tmp_path / "data"))
    return raw, tmp_path / "data"


def test_a_killed_train_stage_resumes_to_the_weights_of_a_run_that_never_stopped(tmp_path, prepared, monkeypatch):
    """Also the determinism check: the killed run's first epochs and its resumed ones are
    separate processes, and together they must give the uninterrupted run's weights bit for bit."""
    raw, data = prepared
    monkeypatch.setenv("EBM_RESUME_DIR", str(tmp_path / "states"))
    straight = _train(raw, tmp_path / "a", data)
    assert straight.wait(timeout=300) == 0, straight.stdout.read()

    killed = _train(raw, tmp_path / "b", data)
    states = tmp_path / "states"
    deadline = time.time() + 240
    while time.time() < deadline:  # SIGKILL once two epochs are saved (the third is under way)
        found = list(states.glob("train-*.npz"))
        if found and json.loads(str(np.load(found[0])["__meta__"]))["epoch"] >= 2:
            break
        assert killed.poll() is None, killed.stdout.read()
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    assert len(list(states.glob("train-*.npz"))) == 1

    resumed = _train(raw, tmp_path / "b", data)
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out
    done = int(out.split("resuming after epoch ")[1].split()[0])
    assert 2 <= done < 4
    for x, y in zip(_weights(tmp_path / "a/m.keras"), _weights(tmp_path / "b/m.keras")):
        np.testing.assert_array_equal(x, y)
    # every epoch's snapshot, those the killed process wrote included, as the uninterrupted run's
    names = [f"energy-e{e:03d}.keras" for e in (1, 2, 3, 4)]
    assert sorted(p.name for p in (tmp_path / "b/snaps").iterdir()) == names
    for name in names:
        for x, y in zip(_weights(tmp_path / "a/snaps" / name), _weights(tmp_path / "b/snaps" / name)):
            np.testing.assert_array_equal(x, y)
    for x, y in zip(_weights(tmp_path / "b/snaps" / names[-1]), _weights(tmp_path / "b/m.keras")):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(_weights(tmp_path / "b/snaps" / names[0])[0], _weights(tmp_path / "b/m.keras")[0])
    a, b = pd.read_csv(tmp_path / "a/h.csv"), pd.read_csv(tmp_path / "b/h.csv")
    assert a["epoch"].tolist() == b["epoch"].tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(a.drop(columns="loss"), b.drop(columns="loss"), rtol=1e-6)  # loss: sums may round apart
    assert list(states.glob("*")) == []  # completed: the state is cleaned up

    runs = mlflow.search_runs(experiment_names=["ebm"], filter_string="tags.`ebm.stage` = 'train'").set_index("run_id")
    new = json.loads((tmp_path / "b/train.json").read_text())["run_id"]
    assert runs.loc[new, "status"] == "FINISHED"
    assert runs.loc[new, "tags.ebm.resumed_from_epoch"] == str(done)
    old = runs.loc[new, "tags.ebm.replaces_killed"]
    assert runs.loc[old, "status"] == "KILLED"
    assert sorted(runs["status"]) == ["FINISHED", "FINISHED", "KILLED"]
    logged = mlflow.MlflowClient().list_artifacts(new, "snapshots")
    assert sorted(f.path for f in logged) == [f"snapshots/{name}" for name in names]


def test_a_divergence_rolls_back_at_a_lower_rate_and_training_continues(tmp_path, mlflow_store):
    raw = small_params(epochs=2, learning_rate=10.0, rollback_lr_factor=1e-5)  # absurd, then 1e-4
    params = parse_params(raw)
    pipeline.prepare(params, pipeline.PreparePaths(data=tmp_path / "d"))
    tp = pipeline.TrainPaths(data=tmp_path / "d", model=tmp_path / "m.keras", history=tmp_path / "h.csv",
                             negatives=tmp_path / "n.png", record=tmp_path / "train.json")
    summary = pipeline.train(params, tp, verbose=0)
    assert summary["rollbacks"] == 1
    per_epoch = len(data_lib.load_split(tmp_path / "d/train.npz").x) // params.train.batch_size
    assert summary["steps"] > 2 * per_epoch  # the two epochs after the rollback, and the diverged one's steps
    assert summary["seconds_per_step"] == pytest.approx(summary["train_seconds"] / summary["steps"])
    history = pd.read_csv(tp.history)
    event = history.loc[history["event"].notna()]
    assert event["epoch"].tolist() == [1]  # detected within the first epoch
    assert "back to epoch 0" in event["event"].iloc[0] and "learning rate x1e-05" in event["event"].iloc[0]
    assert history.loc[history["event"].isna(), "epoch"].tolist() == [1, 2]  # then both epochs ran
    assert np.isfinite(history["real"].dropna()).all()
    run_id = json.loads((tmp_path / "train.json").read_text())["run_id"]
    run = mlflow.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["ebm.rollbacks"] == "1"
    assert "rollback" in run.data.metrics
    assert all(np.isfinite(w).all() for w in _weights(tp.model))
    from ebm.pipeline.evaluate import training_events

    assert "rollback 1" in "".join(training_events(tp.history))


@pytest.mark.parametrize("policy, message", [("stop", "training diverged: "),
                                             ("rollback", "training diverged after 1 rollback")])
def test_a_divergence_that_persists_stops_with_a_clear_error(tmp_path, mlflow_store, policy, message):
    raw = small_params(epochs=2, learning_rate=10.0, on_divergence=policy, max_rollbacks=1, rollback_lr_factor=1.0)
    params = parse_params(raw)
    pipeline.prepare(params, pipeline.PreparePaths(data=tmp_path / "d"))
    tp = pipeline.TrainPaths(data=tmp_path / "d", model=tmp_path / "m.keras", history=tmp_path / "h.csv",
                             negatives=tmp_path / "n.png")
    with pytest.raises(TrainingDiverged, match=message):
        pipeline.train(params, tp, verbose=0)
    runs = mlflow.search_runs(experiment_names=["ebm"], filter_string="tags.`ebm.stage` = 'train'")
    assert runs["status"].tolist() == ["FAILED"]


WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    from ebm.families.deep import resume
    big = np.zeros((2048, 32, 32, 1), np.float32)
    for epoch in range(1, 100000):
        big[:] = epoch
        resume.save(sys.argv[1], resume.TrainingState(epoch, [{"epoch": epoch}], {"buffer/examples": big}), "k")
        print(epoch, flush=True)
""")


def test_a_kill_during_the_state_write_leaves_the_previous_state_loadable(tmp_path):
    path = tmp_path / "state.npz"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, text=True)
    for _ in range(3):  # a few complete writes, then SIGKILL at an arbitrary point of a later one
        proc.stdout.readline()
    time.sleep(0.13)
    proc.kill()
    proc.wait(timeout=60)
    state = resume.load(path, "k")
    assert state.epoch >= 3 and state.history == [{"epoch": state.epoch}]
    assert (state.arrays["buffer/examples"] == state.epoch).all()  # one whole write, not a mix
    resume.save(path, state, "k")  # the next writer removes what a killed one left half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.npz"]


def test_a_state_for_other_params_or_a_corrupt_one_is_refused_by_name(tmp_path):
    path = tmp_path / "s.npz"
    resume.save(path, resume.TrainingState(3, [], {"lr_scale": np.array(1.0)}), "key-a")
    with pytest.raises(resume.ResumeError, match="belongs to other params or data"):
        resume.load(path, "key-b")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(resume.ResumeError, match="s.npz is unreadable"):
        resume.load(path, "key-a")
    raw = small_params()
    section = {"train": raw["train"], "model": raw["model"]}
    data = tmp_path / "x.npz"
    np.savez(data, x=np.zeros(3))
    key = resume.resume_key(section, [data])
    assert resume.resume_key(section, [data]) == key
    assert resume.resume_key({**section, "train": {**raw["train"], "seed": 1}}, [data]) != key
    np.savez(data, x=np.ones(3))
    assert resume.resume_key(section, [data]) != key


def test_epoch_order_depends_only_on_seed_and_epoch():
    whole = resume.epoch_order(100, 32, 0, range(0, 5))
    assert whole.shape == (15, 32)
    np.testing.assert_array_equal(resume.epoch_order(100, 32, 0, range(3, 5)), whole[9:])
    for e in range(5):
        assert len(set(whole[3 * e:3 * e + 3].ravel())) == 96  # no image twice within an epoch
    assert not np.array_equal(resume.epoch_order(100, 32, 1, range(1)), whole[:3])
