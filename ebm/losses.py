"""Loss terms of contrastive-divergence training, on per-image energies E(x) (low = data)."""

from __future__ import annotations

import tensorflow as tf


def contrastive_divergence(e_real: tf.Tensor, e_fake: tf.Tensor) -> tf.Tensor:
    """mean E(real) - mean E(negatives): minimising it pushes real energy down, negatives up."""
    return tf.reduce_mean(e_real) - tf.reduce_mean(e_fake)


def energy_regulariser(e_real: tf.Tensor, e_fake: tf.Tensor) -> tf.Tensor:
    """mean(E(real)^2 + E(fake)^2): keeps energies near zero so they cannot drift without bound."""
    return tf.reduce_mean(tf.square(e_real) + tf.square(e_fake))


def nearest_log_distance(x: tf.Tensor, others: tf.Tensor) -> tf.Tensor:
    """Mean over ``x`` of log(min_j ||x_i - others_j||), Euclidean over all pixels: the
    nearest-neighbour entropy estimate (up to constants) that Du et al. (2021) raise to keep
    negatives apart."""
    a = tf.reshape(x, (tf.shape(x)[0], -1))
    b = tf.reshape(others, (tf.shape(others)[0], -1))
    squared = (tf.reduce_sum(a * a, axis=1)[:, None] + tf.reduce_sum(b * b, axis=1)[None, :]
               - 2.0 * tf.matmul(a, b, transpose_b=True))
    return tf.reduce_mean(0.5 * tf.math.log(tf.maximum(tf.reduce_min(squared, axis=1), 1e-8)))


def through_sampler(x: tf.Tensor, direction: tf.Tensor) -> tf.Tensor:
    """``sum(direction * x)``: a term whose gradient in the weights is the gradient of an
    objective J(x) *through the sampler only*, when ``x`` is a sampler output that depends on
    the weights and ``direction`` = dJ/dx evaluated with the weights held fixed (the KL term of
    Du et al. 2021: J = mean E(x) under a stopped copy of the network). Its value means nothing."""
    return tf.reduce_sum(tf.stop_gradient(direction) * x)
