"""The judge: a calibrated ensemble that is sure of real digits and unsure of broken ones, and the
quality metrics computed on its features."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from ebm import metrics as M
from ebm.classifier import (CLASSES, FeatureExtractor, build_classifier, fit_temperature, members_crossentropy, outliers,
                            predict_probs)
from ebm.corruptions import blend, broken_sets, elastic, erase_strokes
from tests.conftest import ROOT


@pytest.fixture
def digits(mnist5k):
    return mnist5k


@pytest.fixture
def judge(trained_judge):
    return trained_judge


def test_confident_on_real_digits_and_clearly_less_on_each_broken_set(digits, judge):
    _, test = digits
    model, history = judge
    probs = predict_probs(model, test.x)
    assert np.mean(probs.argmax(1) == test.y) > 0.95
    real = M.confident_share(probs)
    assert real > 0.85, real
    shares = {name: M.confident_share(predict_probs(model, x)) for name, x in broken_sets(test.x, test.y).items()}
    for name, share in shares.items():  # measured at 4-6 epochs: real ~0.9, broken sets 0.1 - 0.5
        assert share < real - 0.3, (name, share, real)
    assert 0.2 < history["temperature"] < 5


def test_features_are_the_members_side_by_side(judge):
    model, _ = judge
    out = model(np.zeros((3, 32, 32, 1), np.float32), training=False)
    assert out["features"].shape == (3, 3 * 64) and out["probs"].shape == (3, CLASSES)
    assert np.allclose(np.sum(out["probs"], 1), 1.0, atol=1e-5)


def test_temperature_is_saved_with_the_model(tmp_path):
    model, _ = build_classifier(members=2)
    model.get_layer("probs").temperature.assign(2.5)
    model.save(tmp_path / "c.keras")
    loaded = keras.saving.load_model(tmp_path / "c.keras")
    x = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 1)).astype(np.float32)
    assert float(loaded.get_layer("probs").temperature.numpy()) == 2.5
    assert np.allclose(loaded(x, training=False)["probs"], model(x, training=False)["probs"], atol=1e-6)


def test_fit_temperature_recovers_the_temperature_that_made_the_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4000, 1, CLASSES))
    z = logits[:, 0] / 2.0  # labels drawn from softmax(logits / 2)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(CLASSES, p=row) for row in p])
    assert fit_temperature(logits, y) == pytest.approx(2.0, rel=0.1)


def test_members_crossentropy_averages_each_members_loss():
    logits = np.log(np.array([[[0.5, 0.5] + [1e-9] * 8, [0.25, 0.75] + [1e-9] * 8]], np.float32))
    onehot = np.eye(CLASSES, dtype=np.float32)[[1]]
    expected = -(np.log(0.5) + np.log(0.75)) / 2
    assert float(members_crossentropy(onehot, logits)[0]) == pytest.approx(expected, rel=1e-4)
    uniform = np.full((1, CLASSES), 0.1, np.float32)
    flat = np.zeros((1, 3, CLASSES), np.float32)
    assert float(members_crossentropy(uniform, flat)[0]) == pytest.approx(np.log(CLASSES), rel=1e-5)


def test_corruptions_break_digits_the_way_they_say(digits):
    _, test = digits
    x, y = test.x[:40], test.y[:40]
    rng = np.random.default_rng(0)
    ink = (x > 0).sum((1, 2, 3))
    erased = erase_strokes(x, rng, fraction=0.5)
    assert np.all((erased > 0).sum((1, 2, 3)) <= 0.5 * ink + 1) and np.all(erased <= x + 1e-6)
    warped = elastic(x, rng)
    assert warped.shape == x.shape and -1 <= warped.min() and warped.max() <= 1
    assert np.mean(np.abs(warped - x)) > 0.1
    mixed = blend(x, y, rng)
    partners = [np.argmin(np.abs(2 * mixed[i] - x[i] - x).sum((1, 2, 3))) for i in range(len(x))]
    assert all(y[j] != y[i] for i, j in enumerate(partners))
    extra = outliers(x, y, 30, rng)
    assert extra.shape == (30, 32, 32, 1) and -1 <= extra.min() and extra.max() <= 1


def test_longrun_check_fails_a_collapsed_model_and_passes_real_digits(digits, judge):
    from ebm.evaluation import LongrunGates, evaluate

    train, test = digits
    model, _ = judge
    energy = lambda x: np.asarray(x).mean(axis=(1, 2, 3))  # noqa: E731  (any energy; only the samples matter here)
    collapsed = np.repeat(test.x[test.y == 8][:1], 200, axis=0)
    stays = evaluate(energy, model, train.x, test.x, collapsed, longrun=lambda x: {5: x}, longrun_n=200).metrics
    assert stays["longrun_stable"] == 0.0  # unchanged by the long run, but one glyph: not stable
    assert stays["longrun_coverage"] < 0.1 and stays["longrun_fid"] > 3 * stays["longrun_fid_floor"]
    real = train.x[:200]
    good = evaluate(energy, model, train.x, test.x, real, longrun=lambda x: {5: train.x[200:400]}, longrun_n=200).metrics
    assert good["longrun_stable"] == 1.0 and good["longrun_n"] == 200
    strict = evaluate(energy, model, train.x, test.x, real, longrun=lambda x: {5: train.x[200:400]}, longrun_n=200,
                      gates=LongrunGates(min_coverage=0.999)).metrics
    assert strict["longrun_stable"] == 0.0  # the gate comes from params


def test_longrun_curve_shows_the_class_mix_drifting_one_point_per_multiple(digits, judge):
    """Chains that stay digits but drift into 1s: the curve has a row per multiple, the share of
    1s climbs to all while the confident share holds, the FID climbs, and the drift names class 1."""
    from ebm.evaluation import class_drift, evaluate

    train, test = digits
    model, _ = judge
    energy = lambda x: np.asarray(x).mean(axis=(1, 2, 3))  # noqa: E731
    ones, real = train.x[train.y == 1], train.x[:200]
    drift = {2: np.concatenate([ones[:100], real[100:]]), 3: ones[:200]}
    result = evaluate(energy, model, train.x, test.x, real, longrun=lambda x: drift, longrun_n=200)
    curve = result.longrun_curve
    assert curve["multiple"].tolist() == [1, 2, 3]
    assert curve["share_1"].is_monotonic_increasing and curve["share_1"].iloc[-1] > 0.95
    assert curve["fid"].iloc[0] < curve["fid"].iloc[1] < curve["fid"].iloc[2]
    assert curve["confident_share"].iloc[-1] > 0.9 and curve["coverage"].iloc[-1] < 0.2
    assert curve["recall"].iloc[-1] < curve["recall"].iloc[0] and curve["precision"].iloc[-1] > 0.5
    assert np.isclose(curve["fid"].iloc[0], result.metrics["longrun_fid_before"])
    assert np.isclose(curve["fid"].iloc[-1], result.metrics["longrun_fid"])
    assert np.isclose(curve["energy"].iloc[-1], energy(ones[:200]).mean())
    grew, fell = class_drift(curve)
    assert grew[0][0] == 1 and grew[0][2] > 0.95 and fell[0][0] != 1


# The quality metrics on the judge's features of real digits: here beside the judge's own tests, so
# that one pytest-xdist worker trains it (a session fixture is built once per worker, and
# `--dist loadfile` keeps a file on one worker)


@pytest.fixture
def digits_and_features(digits, judge):
    """Real digits and the judge's feature extractor (the stage's judge, on fewer epochs)."""
    train, test = digits
    return train, test, FeatureExtractor(judge[0])


def test_fid_is_zero_on_itself_large_on_noise_and_falls_with_less_corruption(digits_and_features):
    train, test, extract = digits_and_features
    real = test.x
    f_real, _ = extract(real)
    f_ref, _ = extract(train.x[:500])
    assert M.frechet_distance(f_real, f_real) == pytest.approx(0.0, abs=1e-3)
    rng = np.random.default_rng(0)
    noise = rng.uniform(-1, 1, real.shape).astype("float32")
    fids = []
    for level in (0.0, 0.25, 0.5, 0.75, 1.0):
        mask = rng.random(real.shape) < level
        fids.append(M.frechet_distance(extract(np.where(mask, noise, real))[0], f_ref))
    assert all(a < b for a, b in zip(fids, fids[1:])), fids
    assert fids[-1] > 20 * fids[0]


@pytest.fixture
def feature_sets(digits_and_features):
    """The judge's features of the test digits, 500 training digits and uniform noise."""
    train, test, extract = digits_and_features
    noise = np.random.default_rng(1).uniform(-1, 1, test.x.shape).astype("float32")
    return {name: extract(x)[0] for name, x in (("test", test.x), ("train", train.x[:500]), ("noise", noise))}


def test_kid_is_near_zero_for_same_distribution_and_large_for_noise(feature_sets):
    same, _ = M.kernel_inception_distance(feature_sets["train"], feature_sets["test"])
    far, std = M.kernel_inception_distance(feature_sets["noise"], feature_sets["test"])
    assert abs(same) < 0.05 * far and std >= 0


def test_coverage_of_one_class_is_zero_and_of_the_test_split_is_one(digits_and_features):
    _, test, extract = digits_and_features
    _, probs = extract(test.x)
    assert M.coverage(probs) > 0.97
    _, sevens = extract(test.x[test.y == 7])
    assert M.coverage(sevens) < 0.15
    onehot = np.eye(10)[np.full(50, 3)]
    assert M.coverage(onehot) == 0.0 and M.confident_share(onehot) == 1.0
    assert M.class_histogram(np.eye(10)[np.arange(10)]).tolist() == [0.1] * 10


def test_precision_recall_separate_real_from_noise(feature_sets):
    p, r = M.precision_recall(feature_sets["test"], feature_sets["train"])
    assert p > 0.8 and r > 0.8
    _, r = M.precision_recall(feature_sets["test"], feature_sets["noise"])
    assert r < 0.1  # noise covers none of the real digits
    # (k-NN precision of noise is left unasserted: the judge maps every outlier to one small
    # region of feature space, which can fall inside the large ball of one ambiguous real digit)


def test_real_digits_energy_by_class_names_the_classes_the_model_favours(digits, judge):
    """An energy that is the mean pixel value ranks thin digits (1s) lowest: the class energies,
    their spread and gap say so, and the long-run paragraph of a failed check names them."""
    from ebm.config import parse_params
    from ebm.evaluation import evaluate
    from ebm.pipeline.evaluate import longrun_paragraphs
    from tests.conftest import tiny_params_dict

    train, test = digits
    model, _ = judge
    energy = lambda x: np.asarray(x).mean(axis=(1, 2, 3))  # noqa: E731
    ones, real = train.x[train.y == 1], train.x[:200]
    result = evaluate(energy, model, train.x, test.x, real, longrun=lambda x: {3: ones[:200]}, longrun_n=200,
                      test_y=test.y)
    by_hand = np.array([energy(test.x[test.y == c]).mean() for c in range(10)])
    assert np.allclose(result.class_energies, by_hand) and int(np.argmin(result.class_energies)) == 1
    assert np.isclose(result.metrics["energy_class_gap"], by_hand.max() - by_hand.min())
    shares = np.array([np.mean(test.y == c) for c in range(10)])
    mean = energy(test.x).mean()
    assert np.isclose(result.metrics["energy_class_std"], np.sqrt(np.sum(shares * (by_hand - mean) ** 2)), rtol=1e-5)
    from ebm import families

    text = " ".join(longrun_paragraphs(parse_params(tiny_params_dict()), families.get("deep"), result.metrics,
                                       result.longrun_curve, result.class_energies))
    assert f"lowest 1 ({by_hand[1]:+.3f})" in text
    unlabelled = evaluate(energy, model, train.x, test.x, real, test_y=np.full(len(test.x), -1)).metrics
    assert "energy_class_std" not in unlabelled


def test_more_samples_than_test_digits_are_scored_in_equal_parts(digits, judge):
    """2,000 real digits against 500 test digits: FID, precision and recall are the means over
    four disjoint 500-sets, so real digits score near the real-vs-real floor (at the floor's size)
    and not at the lower FID of the whole 2,000 (a smaller estimator bias would flatter)."""
    from ebm.classifier import FeatureExtractor
    from ebm.evaluation import evaluate

    train, test = digits
    model, _ = judge
    energy = lambda x: np.asarray(x).mean(axis=(1, 2, 3))  # noqa: E731
    samples = train.x[-2000:]
    m = evaluate(energy, model, train.x, test.x, samples, floor_draws=8).metrics
    assert m["fid_subsets"] == 4 and m["fid_std"] > 0
    assert 0.6 < m["fid"] / m["fid_real_floor"] < 1.6, (m["fid"], m["fid_real_floor"])
    extract = FeatureExtractor(model)
    whole = M.frechet_distance(extract(samples)[0], extract(test.x)[0])
    assert whole < 0.85 * m["fid"], (whole, m["fid"])
    assert m["recall"] > 0.6 and m["precision"] > 0.6
    one = evaluate(energy, model, train.x, test.x, samples[:500]).metrics
    assert one["fid_subsets"] == 1 and one["fid_std"] == 0.0


@pytest.mark.parametrize("on, environment, expected", [(True, None, True), (False, None, False), (True, "0", False)])
def test_onednn_param_switches_tensorflow_kernels_and_the_environment_wins(on, environment, expected):
    """``classifier.onednn`` takes effect in a fresh process (TF reads the switch once, at load),
    whatever TF would choose for this CPU by itself; a ``TF_ENABLE_ONEDNN_OPTS`` that the user set wins."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    if environment is not None:
        env["TF_ENABLE_ONEDNN_OPTS"] = environment
    code = (f"from ebm.pipeline.classify import onednn_enabled, use_onednn; use_onednn({on}); import tensorflow; "
            "print(onednn_enabled())")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == str(expected)
