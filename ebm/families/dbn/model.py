"""A two-layer DBN: ``bottom`` (visible -> h1) and ``top`` (h1 -> h2) RBMs.

The generative model is the top RBM over ``h1`` (an undirected associative memory) and a directed
down-pass ``p(v | h1)`` through ``bottom``'s weights. Training is greedy: ``bottom`` on the data,
then ``top`` on samples of ``bottom``'s hidden units given the data (the pipeline does both).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ebm.families.rbm.model import gibbs_chain
from ebm.families.rbm.model import RBM, log_conditional


@keras.saving.register_keras_serializable(package="ebm")
class DBN(keras.Model):
    family = "dbn"

    def __init__(self, bottom: dict, top: dict, **kwargs):
        super().__init__(**kwargs)
        self.bottom = RBM(**bottom, name="bottom")
        self.top = RBM(**top, name="top")
        if self.top.visible != self.bottom.hidden:
            raise ValueError(f"top RBM has {self.top.visible} visible units; bottom has {self.bottom.hidden} hidden")
        self.built = True

    def get_config(self):
        strip = lambda cfg: {k: v for k, v in cfg.items() if k != "name"}  # noqa: E731
        return {"bottom": strip(self.bottom.get_config()), "top": strip(self.top.get_config()), "name": self.name}

    def call(self, v):
        return self.visible_energy(v)

    def down(self, h1):
        return self.bottom.visible_probs(tf.convert_to_tensor(h1, tf.float32)).numpy()

    # -- the surface the pipeline uses (every family has it)
    def sample(self, n: int, steps: int, record_at=(), seed: int = 0, record_first: int | None = None):
        """Gibbs in the top RBM from its random starts, then the down-pass ``p(v | h1)`` with
        ``h1`` at its last conditional mean. Returns the final (n, D) probabilities, snapshots of
        the first ``record_first`` chains and the top RBM's free energies at ``record_at``."""
        h0 = self.top.random_starts(n, seed)
        _, p, snapshots, energies = gibbs_chain(self.top.w, self.top.b, self.top.c, h0, steps, record_at, seed,
                                                record_first, measure=lambda h: self.top.free_energy(h).numpy())
        return self.down(p), {step: self.down(h) for step, h in snapshots.items()}, energies

    def continue_chains(self, p, sweeps: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        v = (rng.uniform(size=np.shape(p)) < p).astype(np.float32)
        q = self.bottom.hidden_probs(v).numpy()
        h0 = (rng.uniform(size=q.shape) < q).astype(np.float32)
        return self.down(gibbs_chain(self.top.w, self.top.b, self.top.c, h0, sweeps, (), seed)[1])

    def visible_energy(self, v):
        """A deterministic energy for comparing inputs: minus the variational bound on
        ``log p(v) + log Z_top`` at the mean-field posterior ``q = p(h1 | v)``:
        ``-log p(v | q) + F_top(q) - H(q)``."""
        v = tf.convert_to_tensor(v, tf.float32)
        q = self.bottom.hidden_probs(v)
        return (-log_conditional(v, q, self.bottom.w, self.bottom.b) + self.top.free_energy(q)
                - bernoulli_entropy(q)).numpy()

    def log_likelihood_bound(self, v, log_z_top: float, samples: int = 10, seed: int = 0) -> np.ndarray:
        """Per-row lower bound on ``log p(v)`` (Salakhutdinov & Murray 2008, eq. 20), estimated
        with ``samples`` draws of ``h1 ~ q = p(h1 | v)``:
        ``E_q[log p(v | h1) - F_top(h1)] - log Z_top + H(q)``."""
        v = tf.convert_to_tensor(v, tf.float32)
        q = self.bottom.hidden_probs(v)
        n, hidden = tf.shape(q)[0], tf.shape(q)[1]
        rng = tf.random.Generator.from_seed(seed)
        h = tf.cast(rng.uniform((samples, n, hidden)) < q[None], tf.float32)  # all draws at once
        flat_h, flat_v = tf.reshape(h, (-1, hidden)), tf.reshape(tf.tile(v[None], (samples, 1, 1)), (samples * n, -1))
        terms = log_conditional(flat_v, flat_h, self.bottom.w, self.bottom.b) - self.top.free_energy(flat_h)
        return (tf.reduce_mean(tf.reshape(terms, (samples, n)), axis=0) + bernoulli_entropy(q)).numpy() - log_z_top


def bernoulli_entropy(q):
    """Entropy in nats of independent Bernoulli(q) units, summed over the last axis."""
    eps = 1e-7
    q = tf.clip_by_value(q, eps, 1.0 - eps)
    return -tf.reduce_sum(q * tf.math.log(q) + (1.0 - q) * tf.math.log1p(-q), axis=-1)
