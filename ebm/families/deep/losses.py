"""Loss terms of contrastive-divergence training, on per-image energies E(x) (low = data)."""

from __future__ import annotations

import tensorflow as tf


def contrastive_divergence(e_real: tf.Tensor, e_fake: tf.Tensor) -> tf.Tensor:
    """mean E(real) - mean E(negatives): minimising it pushes real energy down, negatives up."""
    return tf.reduce_mean(e_real) - tf.reduce_mean(e_fake)


def energy_regulariser(e_real: tf.Tensor, e_fake: tf.Tensor) -> tf.Tensor:
    """mean(E(real)^2 + E(fake)^2): keeps energies near zero so they cannot drift without bound."""
    return tf.reduce_mean(tf.square(e_real) + tf.square(e_fake))
