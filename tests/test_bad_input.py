"""What a user sees when the machine, rather than the params, is the problem: a full disk, old
training states, a split too small to judge."""

import errno

import numpy as np
import pytest
from typer.testing import CliRunner

from ebm.cli import app
from ebm.entry import main
from ebm.errors import DataError
from ebm.families.deep import resume
from ebm.io import write_atomic, write_text_atomic
from ebm.pipeline import PreparePaths


def _disk_full(tmp):
    tmp.write_bytes(b"half of it")
    raise OSError(errno.ENOSPC, "No space left on device", str(tmp))


def test_a_full_disk_keeps_the_file_already_saved_and_leaves_no_partial_one(tmp_path):
    path = write_text_atomic(tmp_path / "metrics.json", '{"fid": 15.6}\n')
    with pytest.raises(OSError):
        write_atomic(path, _disk_full)
    assert path.read_text() == '{"fid": 15.6}\n' and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_stage_that_hits_a_full_disk_says_so_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("data: {max_train: 640}\n")

    def stage(params, paths):
        write_atomic(paths.data / "train.npz", _disk_full)

    with pytest.raises(SystemExit) as stop:
        main(stage, PreparePaths, ["--data", str(tmp_path / "data")])
    message = str(stop.value.code)
    assert message.startswith("error: no space left on the device writing ") and "train" in message
    assert "already saved are unchanged" in message and not (tmp_path / "data/train.npz").exists()


def test_resume_states_lists_the_stopped_runs_and_cleans_them(tmp_path, monkeypatch):
    monkeypatch.setenv("EBM_RESUME_DIR", str(tmp_path / "states"))
    state = resume.save(tmp_path / "states/train-abc123.npz",
                        resume.TrainingState(3, [], {"w": np.zeros(250_000, np.float32)}), "abc123")
    (snapshots := tmp_path / "states/snapshots-abc123").mkdir()
    (snapshots / "energy-e002.keras").write_bytes(b"x" * 1000)
    (tmp_path / "states/train-broken.npz").write_bytes(b"not a state")

    listed = CliRunner().invoke(app, ["resume-states"])
    assert listed.exit_code == 0, listed.output
    assert f"{state}  after epoch 3  1.0 MB" in listed.output and "train-broken.npz  unreadable" in listed.output
    assert "found 2 state(s)" in listed.output and state.exists()
    assert "found 0 state(s)" in CliRunner().invoke(app, ["resume-states", "--older-than", "1"]).output

    cleaned = CliRunner().invoke(app, ["resume-states", "--clean"])
    assert cleaned.exit_code == 0 and "deleted 2 state(s)" in cleaned.output
    assert list((tmp_path / "states").iterdir()) == []


def test_blending_needs_two_classes_and_says_which_split_is_too_small():
    from ebm.corruptions import blend

    with pytest.raises(DataError, match=r"the 3 digits given are all \[7\]"):
        blend(np.zeros((3, 32, 32, 1), np.float32), np.array([7, 7, 7]), np.random.default_rng(0))
