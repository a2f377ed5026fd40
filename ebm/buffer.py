"""Replay buffer of Langevin negatives, held as one tensor. Pure math, usable in a tf.function.

As in the reference: the buffer starts with one batch of uniform noise and grows to
``capacity``; each batch of chain starts is a Binomial(batch, fresh_fraction) number of fresh
uniform images plus draws (with replacement) from the buffer; the refined batch is pushed
back and the oldest examples drop out (a ring buffer).
"""

from __future__ import annotations

import tensorflow as tf


class ReplayBuffer(tf.Module):
    def __init__(self, capacity: int, batch_size: int, image_shape, fresh_fraction: float = 0.05, seed: int = 0):
        super().__init__(name="replay_buffer")
        if capacity < batch_size:
            raise ValueError(f"capacity ({capacity}) must be >= batch_size ({batch_size})")
        self.capacity = capacity
        self.batch_size = batch_size
        self.image_shape = tuple(image_shape)
        self.fresh_fraction = fresh_fraction
        self.rng = tf.random.Generator.from_seed(seed)
        start = self._uniform(capacity)
        # under a tf.distribute strategy each replica keeps its own buffer (its share); read across
        # replicas (callbacks, checkpoints) the variables give the first replica's copy
        local = dict(trainable=False, synchronization=tf.VariableSynchronization.ON_READ,
                     aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.examples = tf.Variable(start, name="examples", **local)
        self.size = tf.Variable(batch_size, name="size", **local)  # valid examples
        self.head = tf.Variable(batch_size % capacity, name="head", **local)  # next write slot

    def _uniform(self, n) -> tf.Tensor:
        return self.rng.uniform((n, *self.image_shape), minval=-1.0, maxval=1.0)

    def sample(self, with_mask: bool = False):
        """A batch of chain starts: fresh noise in the first Binomial(batch, p) rows, replays
        after; with ``with_mask``, also the boolean (batch,) mask of the fresh rows."""
        n_fresh = self.rng.binomial([], counts=float(self.batch_size), probs=self.fresh_fraction, dtype=tf.int32)
        idx = self.rng.uniform([self.batch_size], minval=0, maxval=self.size, dtype=tf.int32)
        replay = tf.gather(self.examples, idx)
        fresh = self._uniform(self.batch_size)
        is_fresh = tf.range(self.batch_size) < n_fresh
        starts = tf.where(is_fresh[:, None, None, None], fresh, replay)
        return (starts, is_fresh) if with_mask else starts

    def push(self, x: tf.Tensor) -> None:
        """Store a batch of refined negatives over the oldest examples."""
        slots = (self.head + tf.range(self.batch_size)) % self.capacity
        if tf.distribute.in_cross_replica_context() or not tf.distribute.has_strategy():
            self.examples.scatter_nd_update(slots[:, None], x)
        else:  # a replica's own copy: per-replica variables take whole assignments only
            self.examples.assign(tf.tensor_scatter_nd_update(self.examples, slots[:, None], x))
        self.head.assign((self.head + self.batch_size) % self.capacity)
        self.size.assign(tf.minimum(self.size + self.batch_size, self.capacity))

    def newest(self, n: int) -> tf.Tensor:
        """The ``n`` most recently pushed examples (newest first)."""
        slots = (self.head - 1 - tf.range(n)) % self.capacity
        return tf.gather(self.examples, slots)
