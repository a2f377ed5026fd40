"""Real digits broken on purpose, to check that the quality classifier rejects what a person
rejects. Pure NumPy/SciPy: images in [-1, 1] of shape (N, H, W, 1) in, the same out.

* :func:`erase_strokes`: blobs of ink wiped out, so strokes break off;
* :func:`elastic`: a strong random elastic warp (Simard et al. 2003), strokes bent out of shape;
* :func:`blend`: two digits of different classes averaged, a "4/9" that is neither.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def erase_strokes(x: np.ndarray, rng: np.random.Generator, fraction: float = 0.5, radius: float = 3.0) -> np.ndarray:
    """Wipe discs of ``radius`` pixels centred on random ink pixels until about ``fraction`` of
    each image's ink (pixels above 0) is background (-1)."""
    out = np.array(x, np.float32, copy=True)
    h, w = x.shape[1:3]
    yy, xx = np.mgrid[:h, :w]
    for img in out[..., 0]:
        ink = img > 0
        total = ink.sum()
        while total and (img > 0).sum() > (1 - fraction) * total:
            cy, cx = np.argwhere(img > 0)[rng.integers((img > 0).sum())]
            img[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = -1.0
    return out


def elastic(x: np.ndarray, rng: np.random.Generator, alpha: float = 10.0, sigma: float = 2.5) -> np.ndarray:
    """Displace every pixel by a Gaussian-smoothed random field scaled to ``alpha`` pixels."""
    h, w = x.shape[1:3]
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    out = np.empty_like(x, dtype=np.float32)
    for i, img in enumerate(x[..., 0]):
        dy, dx = (ndimage.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma) for _ in range(2))
        scale = alpha / max(np.abs(dy).max(), np.abs(dx).max(), 1e-6)
        coords = [yy + scale * dy, xx + scale * dx]
        out[i, ..., 0] = ndimage.map_coordinates(img, coords, order=1, mode="constant", cval=-1.0)
    return out


def blend(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, weight: float = 0.5) -> np.ndarray:
    """Each digit averaged with a random digit of another class (``weight`` on the first)."""
    if len(np.unique(y)) < 2:
        from ebm.errors import DataError

        raise DataError(f"blending digits of two classes needs at least two classes; the {len(y)} digits given are "
                        f"all {np.unique(y).tolist()} (a split cut too small: raise data.max_train / data.max_test)")
    partner = np.empty(len(x), np.int64)
    for i, label in enumerate(y):
        others = np.flatnonzero(y != label)
        partner[i] = rng.choice(others)
    return (weight * x + (1 - weight) * x[partner]).astype(np.float32)


def broken_sets(x: np.ndarray, y: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """The three broken versions of ``x`` (labels ``y``) the classifier stage scores."""
    rng = np.random.default_rng(seed)
    return {"erased strokes": erase_strokes(x, rng), "elastic warp": elastic(x, rng), "two blended": blend(x, y, rng)}
