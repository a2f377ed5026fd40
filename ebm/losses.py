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


def class_energy_spread(energies: tf.Tensor, labels: tf.Tensor, classes: int = 10) -> tf.Tensor:
    """Between-class variance of the energies of labelled digits: sum over the classes present
    of (their share of the batch) x (their mean energy - the batch's mean energy)^2. Zero when
    every class has the same mean energy. Contrastive divergence with short-run negatives leaves
    these class offsets free (a chain from noise settles in one class long before their depths
    matter), and chains run long slide from the classes given high energy into those given low."""
    labels = tf.cast(labels, tf.int32)
    counts = tf.math.unsorted_segment_sum(tf.ones_like(energies), labels, classes)
    sums = tf.math.unsorted_segment_sum(energies, labels, classes)
    shares = counts / tf.reduce_sum(counts)
    means = tf.math.divide_no_nan(sums, counts)
    return tf.reduce_sum(shares * tf.square(means - tf.reduce_mean(energies)))
