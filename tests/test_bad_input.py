"""What a user sees when the machine, rather than the params, is the problem: a full disk, old
training states, a split too small to judge."""

import errno
import re

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


def test_named_masks_hide_their_region_of_the_digit_only():
    from ebm.images import hidden_mask

    bottom = hidden_mask("bottom-half", 2)
    assert bottom.shape == (2, 32, 32, 1) and bottom[:, 16:30, 2:30].all() and not bottom[:, :16].any()
    assert not bottom[:, 30:].any() and not bottom[:, :, :2].any()  # the padding stays observed
    assert hidden_mask("center-square", 1)[0, 9:23, 9:23].all() and hidden_mask("center-square", 1).sum() == 14 * 14
    assert hidden_mask("left-half", 1).sum() == hidden_mask("top-half", 1).sum() == 28 * 14
    rate = hidden_mask("random:0.3", 50, seed=1).sum() / (50 * 28 * 28)
    assert 0.28 < rate < 0.32 and not (hidden_mask("random:0.3", 2, seed=1) == hidden_mask("random:0.3", 2, seed=2)).all()


@pytest.mark.parametrize("spec, message", [
    ("middle", "not a file nor one of bottom-half"),
    ("random:1.5", "must be a number in (0, 1)"),
    ("random:x", "must be a number in (0, 1)"),
])
def test_bad_masks_are_named(spec, message):
    from ebm.images import hidden_mask

    with pytest.raises(DataError, match=re.escape(message)):
        hidden_mask(spec, 1)


def test_a_mask_image_that_hides_everything_or_nothing_is_refused(tmp_path):
    from PIL import Image

    from ebm.images import hidden_mask

    for value, what in ((255, "every pixel"), (0, "nothing")):
        Image.fromarray(np.full((28, 28), value, np.uint8)).save(path := tmp_path / f"m{value}.png")
        with pytest.raises(DataError, match=f"hides {what} of a digit"):
            hidden_mask(str(path), 3)
    half = np.zeros((28, 28), np.uint8)
    half[:, 20:] = 255
    Image.fromarray(half).save(path := tmp_path / "right.png")
    assert hidden_mask(str(path), 1)[0, 2:30, 22:30].all() and hidden_mask(str(path), 1).sum() == 28 * 8


def test_a_clamped_chain_keeps_the_observed_pixels_and_descends_on_the_hidden_ones():
    import tensorflow as tf

    from ebm.families.deep.sampler import LangevinSampler, clamped_chain

    target = tf.fill((1, 32, 32, 1), 0.5)
    energy = lambda x: tf.reduce_sum((x - target) ** 2, axis=[1, 2, 3])  # noqa: E731
    observed = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 1)).astype(np.float32)
    hidden = np.zeros((1, 32, 32, 1), bool)
    hidden[:, 16:] = True
    out = clamped_chain(LangevinSampler(40, 0.1, 0.0, 1.0), energy, observed, hidden, 40).numpy()
    np.testing.assert_array_equal(out[:, :16], observed[:, :16])
    np.testing.assert_allclose(out[:, 16:], 0.5, atol=1e-3)  # the hidden half reached the energy's minimum
