"""Partition functions of RBMs: exactly by enumerating the hidden units (small models), and by
annealed importance sampling (AIS, Salakhutdinov & Murray 2008) from a base-rate model.

AIS anneals from the base-rate model A (``W = 0``, visible biases from the data's pixel means,
hidden biases 0) to the RBM B through ``p_k(v) ~ exp((1 - beta_k) b_A.v) * exp(-beta_k F_B(v))``
with ``F_B`` computed at inverse temperature ``beta_k`` on the hidden term; each transition is
one Gibbs sweep that leaves ``p_k`` invariant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf


def exact_log_partition(w, b, c, batch: int = 4096) -> float:
    """``log Z`` by summing over all ``2^H`` hidden configurations (``H <= 24``):
    ``log Z = logsumexp_h [c.h + sum_i softplus(b_i + (W h)_i)]``."""
    w, b, c = (np.asarray(a, np.float64) for a in (w, b, c))
    hidden = w.shape[1]
    if hidden > 24:
        raise ValueError(f"exact log Z enumerates 2^hidden states; hidden={hidden} is too many (<= 24)")
    terms = []
    for start in range(0, 2 ** hidden, batch):
        codes = np.arange(start, min(start + batch, 2 ** hidden))
        h = ((codes[:, None] >> np.arange(hidden)) & 1).astype(np.float64)
        terms.append(h @ c + np.logaddexp(0.0, h @ w.T + b).sum(axis=1))
    return float(_logsumexp(np.concatenate(terms)))


def base_rate_biases(data: np.ndarray, smoothing: float = 0.05) -> np.ndarray:
    """Visible biases of the base-rate model: the log-odds of each pixel's (smoothed) mean."""
    p = (np.asarray(data, np.float64).mean(axis=0) * len(data) + smoothing) / (len(data) + 2 * smoothing)
    return np.log(p) - np.log1p(-p)


def beta_schedule(n: int) -> np.ndarray:
    """``n`` inverse temperatures from 0 to 1, spaced as Salakhutdinov & Murray's 14,500
    (0-0.5 in 500 steps, 0.5-0.9 in 4,000, 0.9-1 in 10,000): denser where the model sharpens."""
    if n < 3:
        raise ValueError(f"AIS needs >= 3 inverse temperatures; got {n}")
    k1, k2 = max(1, round(n * 500 / 14500)), max(1, round(n * 4000 / 14500))
    k3 = max(1, n - k1 - k2)
    return np.concatenate([np.linspace(0, 0.5, k1, endpoint=False), np.linspace(0.5, 0.9, k2, endpoint=False),
                           np.linspace(0.9, 1.0, k3)])


@dataclass(frozen=True)
class AISResult:
    log_z: float  # log of the mean importance weight times Z_A
    log_z_low: float  # log(Z_hat - 3 sigma): -inf when the spread exceeds the estimate
    log_z_high: float  # log(Z_hat + 3 sigma)
    log_z_se: float  # standard error of log Z_hat (delta method over runs)
    runs: int
    log_weights: np.ndarray  # (runs,) log importance weights, for diagnostics


def ais_log_partition(w, b, c, base_biases, runs: int = 100, betas: int = 10000, seed: int = 0) -> AISResult:
    """Estimate ``log Z`` of the RBM (``w``, ``b``, ``c``) by AIS with ``runs`` independent chains."""
    w = tf.constant(w, tf.float32)
    b = tf.constant(b, tf.float32)
    c = tf.constant(c, tf.float32)
    b_a = tf.constant(base_biases, tf.float32)
    schedule = tf.constant(beta_schedule(betas), tf.float32)
    hidden = int(w.shape[1])
    log_z_a = float(np.logaddexp(0.0, np.asarray(base_biases, np.float64)).sum() + hidden * np.log(2.0))
    log_w = _anneal(w, b, c, b_a, schedule, tf.constant(runs), tf.constant([seed, 7], tf.int64)).numpy()
    log_w = log_w.astype(np.float64)
    top = log_w.max()
    weights = np.exp(log_w - top)  # scaled by exp(-top)
    mean, sigma = weights.mean(), weights.std(ddof=1) / np.sqrt(runs) if runs > 1 else 0.0
    log_z = log_z_a + top + np.log(mean)
    low = log_z_a + top + np.log(mean - 3 * sigma) if mean > 3 * sigma else -np.inf
    return AISResult(float(log_z), float(low), float(log_z_a + top + np.log(mean + 3 * sigma)),
                     float(sigma / mean), runs, log_w)


@tf.function(reduce_retracing=True)
def _anneal(w, b, c, b_a, schedule, runs, seed):
    def log_p(v, beta):  # unnormalised log p_k(v)
        return ((1.0 - beta) * tf.linalg.matvec(v, b_a) + beta * tf.linalg.matvec(v, b)
                + tf.reduce_sum(tf.nn.softplus(beta * (tf.matmul(v, w) + c)), axis=-1))

    def uniform(shape, k, salt):
        return tf.random.stateless_uniform(shape, tf.random.experimental.stateless_fold_in(seed, 2 * k + salt))

    visible = tf.shape(b)[0]
    v = tf.cast(uniform([runs, visible], 0, 0) < tf.sigmoid(b_a), tf.float32)  # exact draw from p_0
    log_w = tf.zeros([runs])

    def body(k, v, log_w):
        beta, prev = schedule[k], schedule[k - 1]
        log_w += log_p(v, beta) - log_p(v, prev)
        h = tf.cast(uniform([runs, tf.shape(c)[0]], k, 1) < tf.sigmoid(beta * (tf.matmul(v, w) + c)), tf.float32)
        p = tf.sigmoid((1.0 - beta) * b_a + beta * (tf.matmul(h, w, transpose_b=True) + b))
        v = tf.cast(uniform([runs, visible], k, 2) < p, tf.float32)
        return k + 1, v, log_w

    _, _, log_w = tf.while_loop(lambda k, v, lw: k < tf.shape(schedule)[0], body, (tf.constant(1), v, log_w))
    return log_w


def average_log_likelihood(free_energies: np.ndarray, log_z: float) -> float:
    """Mean ``log p(v) = -F(v) - log Z`` in nats."""
    return float(-np.mean(free_energies) - log_z)


def _logsumexp(x: np.ndarray) -> float:
    top = x.max()
    return top + np.log(np.exp(x - top).sum())
