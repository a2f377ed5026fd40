"""Bernoulli-Bernoulli RBM as a ``keras.Model``: the math as small functions, CD-k / PCD in
``train_step``.

The parameters are ``w`` (visible x hidden), ``b`` (visible biases) and ``c`` (hidden biases).
The CD gradient is the gradient of ``mean F(v_data) - mean F(v_model)`` with the model samples
held fixed, so the optimizer (SGD with momentum and weight decay on ``w``) does the update.
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf


def free_energy(v, w, b, c):
    """``F(v) = -b.v - sum_j softplus(c_j + (v W)_j)`` for each row of ``v``."""
    return -tf.linalg.matvec(v, b) - tf.reduce_sum(tf.nn.softplus(tf.matmul(v, w) + c), axis=-1)


def hidden_probs(v, w, c, beta=1.0):
    return tf.sigmoid(beta * (tf.matmul(v, w) + c))


def visible_probs(h, w, b):
    return tf.sigmoid(tf.matmul(h, w, transpose_b=True) + b)


def bernoulli(p, rng: tf.random.Generator):
    return tf.cast(rng.uniform(tf.shape(p)) < p, p.dtype)


def gibbs_sweep(v, w, b, c, rng: tf.random.Generator):
    """One block Gibbs sweep v -> h -> v'. Returns the binary v' and p(v' = 1 | h)."""
    h = bernoulli(hidden_probs(v, w, c), rng)
    p = visible_probs(h, w, b)
    return bernoulli(p, rng), p


# block Gibbs chains, compiled, with snapshots at chosen sweeps
def gibbs_chain(w, b, c, v0, steps: int, record_at: Sequence[int] = (), seed: int = 0,
                record_first: int | None = None, measure=None, clamp=None):
    """Run ``steps`` block Gibbs sweeps from the binary states ``v0`` (N, D).

    Returns ``(v, p, snapshots)``: the final binary states, their last ``p(v = 1 | h)`` (the
    "mean" image a grid shows) and ``{step: p}`` of the first ``record_first`` chains (all by
    default) for each step in ``record_at`` (step 0: ``v0``). With ``measure`` (a function of
    the binary states), also a fourth item ``{step: measure(v)}`` at the same steps. With
    ``clamp = (free, values)`` the units where ``free`` is false are held at ``values`` after
    every sweep (completion with observed pixels).
    """
    rng = tf.random.Generator.from_seed(seed)

    @tf.function
    def run(v, sweeps):
        def body(i, v, p):
            v, p = gibbs_sweep(v, w, b, c, rng)
            if clamp is not None:
                v = tf.where(clamp[0], v, clamp[1])
            return i + 1, v, p

        _, v, p = tf.while_loop(lambda i, v, p: i < sweeps, body, (tf.constant(0), v, v))
        return v, p

    v = tf.convert_to_tensor(v0, tf.float32)
    keep = slice(None, record_first)
    p, done, snapshots, measured = v, 0, {}, {}
    for mark in sorted({s for s in record_at if 0 <= s <= steps} | {steps}):
        if mark > done:
            v, p = run(v, tf.constant(mark - done))
            done = mark
        if mark in record_at:
            snapshots[mark] = (p if mark else v)[keep].numpy()
            if measure is not None:
                measured[mark] = measure(v)
    if measure is not None:
        return v.numpy(), p.numpy(), snapshots, measured
    return v.numpy(), p.numpy(), snapshots


def pseudo_likelihood(v, w, b, c, flip_index):
    """Per-row stochastic pseudo-log-likelihood, as scikit-learn's ``BernoulliRBM.score_samples``:
    ``D * log sigmoid(F(v~) - F(v))`` where ``v~`` is ``v`` with the bit ``flip_index[row]`` flipped."""
    d = tf.shape(v)[-1]
    flip = tf.one_hot(flip_index, d, dtype=v.dtype)
    flipped = v + flip - 2.0 * v * flip
    gap = free_energy(flipped, w, b, c) - free_energy(v, w, b, c)
    return tf.cast(d, v.dtype) * tf.math.log_sigmoid(gap)


def reconstruction_error(v, w, b, c):
    """Mean squared error between ``v`` and its mean-field reconstruction ``p(v | p(h | v))``."""
    return tf.reduce_mean(tf.square(v - visible_probs(hidden_probs(v, w, c), w, b)))


@keras.saving.register_keras_serializable(package="ebm")
class RBM(keras.Model):
    """A Bernoulli-Bernoulli RBM trained by CD-``cd_k`` (``persistent=False``) or PCD.

    PCD keeps one batch of fantasy particles (``particles``) that each step continues for
    ``cd_k`` sweeps. Metrics: ``loss`` = mean F(data) - mean F(model samples) (the CD objective,
    not a likelihood), ``free_energy`` of the batch, ``recon`` (reconstruction error).
    """

    family = "rbm"

    def __init__(self, visible: int, hidden: int, cd_k: int = 1, persistent: bool = True, batch_size: int = 100,
                 seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.visible, self.hidden, self.cd_k, self.persistent = visible, hidden, cd_k, persistent
        self.batch_size, self.seed = batch_size, seed
        init = keras.initializers.RandomNormal(stddev=0.01, seed=seed)
        self.w = self.add_weight(shape=(visible, hidden), initializer=init, name="w")
        self.b = self.add_weight(shape=(visible,), initializer="zeros", name="visible_bias")
        self.c = self.add_weight(shape=(hidden,), initializer="zeros", name="hidden_bias")
        self.rng = tf.random.Generator.from_seed(seed + 1)
        start = tf.cast(tf.random.stateless_uniform((batch_size, visible), (seed, 2)) < 0.5, tf.float32)
        self.particles = tf.Variable(start, trainable=False, name="particles")  # PCD: random bits to start
        # where generation starts: Bernoulli(base_rate) per unit; the train stage sets the data's marginals
        self.base_rate = tf.Variable(tf.fill((visible,), 0.5), trainable=False, name="base_rate")
        self.trackers = {n: keras.metrics.Mean(name=n) for n in ("loss", "free_energy", "recon")}
        self.built = True

    def get_config(self):
        return {"visible": self.visible, "hidden": self.hidden, "cd_k": self.cd_k, "persistent": self.persistent,
                "batch_size": self.batch_size, "seed": self.seed, "name": self.name}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, v):
        return self.free_energy(v)

    # -- the math, bound to this model's parameters
    def free_energy(self, v):
        return free_energy(v, self.w, self.b, self.c)

    def hidden_probs(self, v):
        return hidden_probs(v, self.w, self.c)

    def visible_probs(self, h):
        return visible_probs(h, self.w, self.b)

    def gibbs(self, v, sweeps: int, rng: tf.random.Generator | None = None):
        """``sweeps`` block Gibbs sweeps from ``v``: the binary state and the last p(v | h)."""
        rng = rng or self.rng
        p = v
        for _ in range(sweeps):
            v, p = gibbs_sweep(v, self.w, self.b, self.c, rng)
        return v, p

    def train_step(self, v0):
        start = self.particles if self.persistent else v0
        vk, _ = self.gibbs(start, self.cd_k)
        if self.persistent:
            self.particles.assign(vk)
        vk = tf.stop_gradient(vk)
        with tf.GradientTape() as tape:
            f_data = self.free_energy(v0)
            loss = tf.reduce_mean(f_data) - tf.reduce_mean(self.free_energy(vk))
        weights = [self.w, self.b, self.c]
        self.optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
        return self._update(loss=loss, free_energy=tf.reduce_mean(f_data),
                            recon=reconstruction_error(v0, self.w, self.b, self.c))

    # -- the surface the pipeline uses (every family has it)
    def random_starts(self, n: int, seed: int) -> np.ndarray:
        """``n`` random binary states, each unit drawn from ``Bernoulli(base_rate)`` (the data's
        marginals once trained: chains from uniform bits can stall in a grey, high-entropy basin)."""
        u = np.random.default_rng(seed).uniform(size=(n, self.visible))
        return (u < self.base_rate.numpy()).astype(np.float32)

    def sample(self, n: int, steps: int, record_at=(), seed: int = 0, record_first: int | None = None):
        """``n`` chains of ``steps`` Gibbs sweeps from :meth:`random_starts`. Returns the final ``p(v | h)``
        (n, D), ``{step: p}`` of the first ``record_first`` chains and ``{step: free energies of
        all n states}`` at the ``record_at`` steps."""
        v0 = self.random_starts(n, seed)
        _, p, snapshots, energies = gibbs_chain(self.w, self.b, self.c, v0, steps, record_at, seed, record_first,
                                                measure=lambda v: self.free_energy(v).numpy())
        return p, snapshots, energies

    def continue_chains(self, p, sweeps: int, seed: int = 0):
        """Chains continued ``sweeps`` more sweeps from states drawn from the probabilities ``p``."""
        v0 = (np.random.default_rng(seed).uniform(size=np.shape(p)) < p).astype(np.float32)
        return gibbs_chain(self.w, self.b, self.c, v0, sweeps, (), seed)[1]

    def visible_energy(self, v):
        """The energy the evaluation compares across inputs: the free energy F(v)."""
        return self.free_energy(tf.convert_to_tensor(v, tf.float32)).numpy()

    def test_step(self, v):
        return self._update(free_energy=tf.reduce_mean(self.free_energy(v)),
                            recon=reconstruction_error(v, self.w, self.b, self.c))

    def _update(self, **values):
        for name, value in values.items():
            self.trackers[name].update_state(value)
        return {name: self.trackers[name].result() for name in values}


def sgd(learning_rate: float, momentum: float, weight_decay: float) -> keras.optimizers.Optimizer:
    """SGD with momentum and weight decay on the weights only (not the biases), as is usual for RBMs."""
    opt = keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay or None)
    opt.exclude_from_weight_decay(var_names=["visible_bias", "hidden_bias"])
    return opt


def log_conditional(v, h, w, b):
    """``log p(v | h)`` of binary ``v`` under the RBM's factorial visible conditional."""
    a = tf.matmul(h, w, transpose_b=True) + b
    return tf.reduce_sum(v * tf.math.log_sigmoid(a) + (1.0 - v) * tf.math.log_sigmoid(-a), axis=-1)
