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
