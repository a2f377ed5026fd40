"""Keras callbacks of the RBM layers' training."""

from __future__ import annotations

import keras
import numpy as np


class PseudoLikelihood(keras.callbacks.Callback):
    """Adds ``pseudo_likelihood`` and ``val_pseudo_likelihood`` to each epoch's logs: the mean
    stochastic pseudo-log-likelihood (nats per image, :func:`ebm.families.rbm.model.pseudo_likelihood`) of
    ``n`` fixed train and test images with the same flipped bits every epoch. For RBMs."""

    def __init__(self, v_train, v_test, seed: int, n: int = 1000):
        super().__init__()
        rng = np.random.default_rng(seed)
        self.sets = {}
        for key, v in (("pseudo_likelihood", v_train), ("val_pseudo_likelihood", v_test)):
            v = np.asarray(v, np.float32)
            rows = rng.choice(len(v), min(n, len(v)), replace=False)
            self.sets[key] = (v[rows], rng.integers(0, v.shape[1], len(rows)))

    def on_epoch_end(self, epoch, logs=None):
        from ebm.families.rbm.model import pseudo_likelihood

        m = self.model
        for key, (v, flips) in self.sets.items():
            logs[key] = float(np.mean(pseudo_likelihood(v, m.w, m.b, m.c, flips)))
