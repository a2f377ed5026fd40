"""The quality metrics on real digits and a real (briefly trained) classifier."""

import numpy as np
import pytest

from ebm import metrics as M
from ebm.classifier import FeatureExtractor


@pytest.fixture
def digits_and_features(mnist5k, trained_judge):
    """Real digits and the judge's feature extractor (the stage's judge, on fewer epochs)."""
    train, test = mnist5k
    return train, test, FeatureExtractor(trained_judge[0])


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


def test_kid_is_near_zero_for_same_distribution_and_large_for_noise(digits_and_features):
    train, test, extract = digits_and_features
    f_test, _ = extract(test.x)
    f_train, _ = extract(train.x[:500])
    f_noise, _ = extract(np.random.default_rng(1).uniform(-1, 1, test.x.shape).astype("float32"))
    same, _ = M.kernel_inception_distance(f_train, f_test)
    far, std = M.kernel_inception_distance(f_noise, f_test)
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


def test_precision_recall_separate_real_from_noise(digits_and_features):
    train, test, extract = digits_and_features
    f_test, _ = extract(test.x)
    f_train, _ = extract(train.x[:500])
    f_noise, _ = extract(np.random.default_rng(2).uniform(-1, 1, test.x.shape).astype("float32"))
    p, r = M.precision_recall(f_test, f_train)
    assert p > 0.8 and r > 0.8
    _, r = M.precision_recall(f_test, f_noise)
    assert r < 0.1  # noise covers none of the real digits
    # (k-NN precision of noise is left unasserted: the judge maps every outlier to one small
    # region of feature space, which can fall inside the large ball of one ambiguous real digit)


def test_auroc_perfect_constant_and_reversed():
    assert M.auroc(np.array([0.0, 0.1, 0.2]), np.array([1.0, 2.0])) == 1.0
    assert M.auroc(np.zeros(5), np.zeros(7)) == 0.5
    assert M.auroc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 0.0


def test_nearest_distances_find_copies():
    rng = np.random.default_rng(3)
    ref = rng.uniform(-1, 1, (50, 4, 4, 1))
    q = np.concatenate([ref[:5], ref[:5] + 0.5])
    d = M.nearest_distances(q, ref)
    assert np.allclose(d[:5], 0.0, atol=1e-3) and np.all(d[5:] > 0.1)
