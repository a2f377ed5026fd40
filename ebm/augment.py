"""Random transformations of replay-buffer samples before their chain continues (Du et al.
2021, "Improved contrastive divergence training of EBMs": transforming the persistent samples
lets chains hop between modes instead of settling in one). Pure math, usable in a tf.function.
"""

from __future__ import annotations

import tensorflow as tf


def random_shift(x: tf.Tensor, seed: tf.Tensor, max_shift: int, fill: float = -1.0) -> tf.Tensor:
    """Move each image (B, H, W, C) by its own whole-pixel offset in ``[-max_shift, max_shift]``
    along each axis; pixels shifted in are ``fill`` (the background). ``seed``: stateless seed (2,)."""
    if max_shift <= 0:
        return x
    n, h, w = tf.shape(x)[0], x.shape[1], x.shape[2]
    offsets = tf.random.stateless_uniform((n, 2), seed, -max_shift, max_shift + 1, dtype=tf.int32)
    padded = tf.pad(x, [[0, 0], [max_shift, max_shift], [max_shift, max_shift], [0, 0]], constant_values=fill)
    rows = max_shift - offsets[:, :1] + tf.range(h)[None, :]  # (B, H): output row r reads row r - dy
    cols = max_shift - offsets[:, 1:] + tf.range(w)[None, :]
    return tf.gather(tf.gather(padded, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)
