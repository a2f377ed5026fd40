"""Between the pipeline's images (32x32 in [-1, 1], 28x28 digits padded with -1) and the RBM's
784 binary visible units."""

from __future__ import annotations

import numpy as np

SIDE, PAD = 28, 2
VISIBLE = SIDE * SIDE


def intensities(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 1) images in [-1, 1] -> (N, 784) pixel intensities in [0, 1] (padding cropped)."""
    x = np.asarray(images, np.float32)[:, PAD:PAD + SIDE, PAD:PAD + SIDE, 0]
    return np.clip((x.reshape(len(x), VISIBLE) + 1.0) / 2.0, 0.0, 1.0)


def binarize(images: np.ndarray, mode: str, seed: int) -> np.ndarray:
    """Binary (N, 784) digits: ``stochastic`` draws each pixel once from Bernoulli(intensity)
    with ``seed`` (the same draw every run), ``threshold`` keeps intensities above 0.5."""
    p = intensities(images)
    if mode == "threshold":
        return (p > 0.5).astype(np.float32)
    if mode == "stochastic":
        return (np.random.default_rng(seed).uniform(size=p.shape) < p).astype(np.float32)
    raise ValueError(f"binarize must be stochastic or threshold; got {mode!r}")


def to_images(p: np.ndarray) -> np.ndarray:
    """(N, 784) probabilities in [0, 1] -> (N, 32, 32, 1) images in [-1, 1], padded with -1."""
    x = 2.0 * np.asarray(p, np.float32).reshape(-1, SIDE, SIDE) - 1.0
    return np.pad(x, ((0, 0), (PAD, PAD), (PAD, PAD)), constant_values=-1.0)[..., None]
