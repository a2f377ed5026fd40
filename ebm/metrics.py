"""Sample-quality, coverage and OOD metrics. Pure NumPy/SciPy: arrays in, numbers out (and
:func:`energies_of`, which takes the energy as a function of a batch and slices the input).

Features are the penultimate-layer activations of the digit classifier (see
:mod:`ebm.classifier`), so FID/KID/precision/recall here are MNIST-specific, not Inception's.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.spatial.distance import cdist


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two sets of feature vectors (rows): ||mu_a - mu_b||^2 + Tr(Sa + Sb - 2 (Sa Sb)^1/2).

    Tr((Sa Sb)^1/2) is computed as the sum of square roots of the eigenvalues of the symmetric
    matrix Sa^1/2 Sb Sa^1/2, which stays exact when the covariances are singular (dead ReLU
    units, fewer samples than features), where ``scipy.linalg.sqrtm`` of Sa Sb is not."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root_a = _psd_sqrt(cov_a)
    eig = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_sqrt = np.sqrt(np.clip(eig, 0.0, None)).sum()
    return float(max(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt, 0.0))


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def kernel_inception_distance(a: np.ndarray, b: np.ndarray, subsets: int = 20, subset_size: int = 200,
                              seed: int = 0) -> tuple[float, float]:
    """KID: unbiased MMD^2 with the cubic polynomial kernel, mean and std over random subsets."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    rng = np.random.default_rng(seed)
    m = min(subset_size, len(a), len(b))
    d = a.shape[1]
    values = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        mmd = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()
        values.append(mmd)
    return float(np.mean(values)), float(np.std(values))


def class_histogram(probs: np.ndarray, classes: int = 10) -> np.ndarray:
    """Share of samples assigned to each class (argmax of the classifier's probabilities)."""
    return np.bincount(np.argmax(probs, axis=1), minlength=classes) / len(probs)


def coverage(probs: np.ndarray, classes: int = 10) -> float:
    """Normalised entropy of the class histogram: 1.0 = all classes equally, 0.0 = one class."""
    return float(stats.entropy(class_histogram(probs, classes)) / np.log(classes))


def energies_of(energy, x: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """``energy`` (a function x -> E(x), any shape with one value per row) over ``x`` in
    slices of ``batch_size``, as one flat array."""
    return np.concatenate([np.asarray(energy(x[i:i + batch_size])).reshape(-1) for i in range(0, len(x), batch_size)])


def class_means(values: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The classes present in ``labels`` (sorted) and the mean of ``values`` over each."""
    present = np.unique(labels)
    return present, np.array([values[labels == c].mean() for c in present])


def confident_share(probs: np.ndarray, threshold: float = 0.9) -> float:
    """Share of samples whose most likely class has probability >= ``threshold``."""
    return float(np.mean(np.max(probs, axis=1) >= threshold))


def nearest_distances(queries: np.ndarray, reference: np.ndarray, batch: int = 512) -> np.ndarray:
    """Euclidean distance from each query to its nearest reference (rows flattened)."""
    return nearest(queries, reference, batch)[0]


def nearest(queries: np.ndarray, reference: np.ndarray, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """For each query, the Euclidean distance to its nearest reference and that reference's index.

    The search ranks ``|r|^2 - 2 q.r`` (one matrix product in float64, 16x faster than
    ``cdist`` on 500 x 4,500 digits: the training monitor runs it every few epochs); the distance
    to the winner is then computed directly."""
    q = np.asarray(queries, np.float64).reshape(len(queries), -1)
    r = np.asarray(reference, np.float64).reshape(len(reference), -1)
    r_sq = np.einsum("ij,ij->i", r, r)
    dist, idx = np.empty(len(q), np.float32), np.empty(len(q), np.int64)
    for i in range(0, len(q), batch):
        rows = q[i:i + batch]
        found = (r_sq[None, :] - 2.0 * rows @ r.T).argmin(1)
        idx[i:i + batch] = found
        dist[i:i + batch] = np.sqrt(np.square(rows - r[found]).sum(1))
    return dist, idx


def _kth_neighbour_radius(x: np.ndarray, k: int) -> np.ndarray:
    return np.sort(cdist(x, x), axis=1)[:, k]  # column 0 is the point itself


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): the share of fake samples
    inside the real k-NN manifold, and of real samples inside the fake one."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)

    def inside(points, support):
        return np.mean(np.any(cdist(points, support) <= _kth_neighbour_radius(support, k)[None, :], axis=1))

    return float(inside(fake, real)), float(inside(real, fake))


def auroc(inlier_energy: np.ndarray, outlier_energy: np.ndarray) -> float:
    """AUROC of detecting outliers by high energy: P(E_out > E_in) + P(tie) / 2 (Mann-Whitney)."""
    inl, out = np.asarray(inlier_energy, np.float64), np.asarray(outlier_energy, np.float64)
    return float(stats.mannwhitneyu(out, inl).statistic / (len(inl) * len(out)))
