"""The quality metrics' own math on small arrays (on the judge's features of real digits: test_classifier.py)."""

import numpy as np

from ebm import metrics as M


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


def test_nearest_matches_a_brute_force_search():
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(4)
    ref = rng.uniform(-1, 1, (300, 8, 8, 1)).astype(np.float32)
    q = rng.uniform(-1, 1, (70, 8, 8, 1)).astype(np.float32)
    full = cdist(q.reshape(70, -1).astype(np.float64), ref.reshape(300, -1).astype(np.float64))
    dist, idx = M.nearest(q, ref, batch=32)  # three batches, the last one short
    assert np.array_equal(idx, full.argmin(1))
    assert np.allclose(dist, full.min(1), rtol=1e-6)


def test_energies_of_slices_and_class_means_skip_absent_classes():
    x = np.arange(7, dtype=np.float32).reshape(7, 1)
    calls = []
    energies = M.energies_of(lambda b: calls.append(len(b)) or 2 * b, x, batch_size=3)  # (n, 1) -> flat
    assert calls == [3, 3, 1] and np.array_equal(energies, 2 * np.arange(7))
    present, means = M.class_means(energies, np.array([4, 0, 4, 0, 9, 9, 9]))
    assert present.tolist() == [0, 4, 9] and np.allclose(means, [(2 + 6) / 2, (0 + 4) / 2, (8 + 10 + 12) / 3])


def test_real_floor_averages_draws_into_a_steadier_floor():
    """The real-vs-real FID floor from one random training subset moves with the subset; the
    mean over 20 subsets moves about sqrt(20) times less, estimates the same expectation, and
    its reported spread is the single draws' spread. One draw is the floor a single subset gave."""
    from ebm.evaluation import real_floor

    rng = np.random.default_rng(0)
    train = rng.normal(size=(2000, 8))
    reference = rng.normal(size=(60, 8))
    single, averaged, spreads = [], [], []
    for seed in range(30):
        single.append(real_floor(train, reference, np.random.default_rng(seed), draws=1, seed=seed)[0])
        mean, std = real_floor(train, reference, np.random.default_rng(seed), draws=20, seed=seed)
        averaged.append(mean)
        spreads.append(std)
    assert np.std(averaged) < 0.4 * np.std(single)
    assert abs(np.mean(averaged) - np.mean(single)) < 2 * np.std(single) / np.sqrt(30)
    assert 0.6 < np.mean(spreads) / np.std(single) < 1.5
    pick = np.random.default_rng(7).choice(2000, 60, replace=False)
    assert real_floor(train, reference, np.random.default_rng(7))[0] == M.frechet_distance(train[pick], reference)
    assert real_floor(train, reference, np.random.default_rng(7))[1] == 0.0
