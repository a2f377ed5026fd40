"""Replay buffer of Langevin negatives, held as one tensor. Pure math, usable in a tf.function.

As in the reference: the buffer starts with one batch of uniform noise and grows to
``capacity``; each batch of chain starts is a Binomial(batch, fresh_fraction) number of fresh
uniform images plus draws (with replacement) from the buffer; the refined batch is pushed
back and the oldest examples drop out (a ring buffer).

With ``persistent`` > 0 the buffer also keeps that many persistent chains (PCD's fantasy
particles): the last ``persistent_rows`` rows of every batch are the next chains in round-robin
order, and their refined states are written back in place, never dropped. The ring's chains live
about ``steps / fresh_fraction`` Langevin steps; a persistent chain gains ``steps`` every
``persistent / persistent_rows`` batches for the whole run, so the negatives include chains as
old as the long-run check's. With ``persistent_wait``
the chains start switched off (:attr:`live` False, until a callback sets it): their rows are then
replays of the ring, written back into the chains' slots, so the chains that take over are as
old as the ring's.
"""

from __future__ import annotations

import tensorflow as tf


class ReplayBuffer(tf.Module):
    def __init__(self, capacity: int, batch_size: int, image_shape, fresh_fraction: float = 0.05, seed: int = 0,
                 persistent: int = 0, persistent_rows: int = 0, persistent_wait: bool = False):
        super().__init__(name="replay_buffer")
        if capacity < batch_size:
            raise ValueError(f"capacity ({capacity}) must be >= batch_size ({batch_size})")
        if persistent and not 0 < persistent_rows < batch_size:
            raise ValueError(f"persistent_rows ({persistent_rows}) must be in [1, batch_size ({batch_size}))")
        if persistent and persistent < persistent_rows:
            raise ValueError(f"persistent ({persistent}) must be >= persistent_rows ({persistent_rows})")
        self.capacity = capacity
        self.batch_size = batch_size
        self.persistent = persistent
        self.persistent_rows = persistent_rows if persistent else 0
        self.ring_rows = batch_size - self.persistent_rows  # rows of each batch from (and to) the ring
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
        if persistent:
            self.chains = tf.Variable(self._uniform(persistent), name="chains", **local)
            self.chain_head = tf.Variable(0, name="chain_head", **local)  # the next chain to advance
        self.persistent_wait = bool(persistent and persistent_wait)
        if self.persistent_wait:  # set per epoch by the trainer, so it needs no saved state
            self.live = tf.Variable(False, trainable=False, name="persistent_live",
                                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def _uniform(self, n) -> tf.Tensor:
        return self.rng.uniform((n, *self.image_shape), minval=-1.0, maxval=1.0)

    def sample(self, with_mask: bool = False):
        """A batch of chain starts: fresh noise in the first Binomial(ring rows, p) rows, replays
        after, then the persistent chains' next rows (replays of the ring while they wait to go
        :attr:`live`). With ``with_mask``, also the boolean (batch,) mask of the fresh rows."""
        rows = self.ring_rows
        n_fresh = self.rng.binomial([], counts=float(rows), probs=self.fresh_fraction, dtype=tf.int32)
        replay = self._replays(rows)
        fresh = self._uniform(rows)
        is_fresh = tf.range(rows) < n_fresh
        starts = tf.where(is_fresh[:, None, None, None], fresh, replay)
        if self.persistent:
            chains = tf.gather(self.chains, self._chain_slots())
            if self.persistent_wait:  # switched off: the rows replay the ring instead
                chains = tf.where(self.live, chains, self._replays(self.persistent_rows))
            starts = tf.concat([starts, chains], axis=0)
            is_fresh = tf.concat([is_fresh, tf.zeros([self.persistent_rows], tf.bool)], axis=0)
        return (starts, is_fresh) if with_mask else starts

    def _replays(self, n: int) -> tf.Tensor:
        """``n`` ring examples drawn uniformly with replacement from the filled part."""
        return tf.gather(self.examples, self.rng.uniform([n], minval=0, maxval=self.size, dtype=tf.int32))

    def _chain_slots(self) -> tf.Tensor:
        return (self.chain_head + tf.range(self.persistent_rows)) % self.persistent

    def push(self, x: tf.Tensor) -> None:
        """Store a batch of refined negatives (the rows :meth:`sample` gave): the ring's over its
        oldest examples, the persistent chains' back in their own slots."""
        rows = self.ring_rows
        if self.persistent:
            _scatter(self.chains, self._chain_slots(), x[rows:])
            self.chain_head.assign((self.chain_head + self.persistent_rows) % self.persistent)
            x = x[:rows]
        _scatter(self.examples, (self.head + tf.range(rows)) % self.capacity, x)
        self.head.assign((self.head + rows) % self.capacity)
        self.size.assign(tf.minimum(self.size + rows, self.capacity))

    def newest(self, n: int) -> tf.Tensor:
        """The ``n`` most recently pushed examples (newest first)."""
        slots = (self.head - 1 - tf.range(n)) % self.capacity
        return tf.gather(self.examples, slots)


def _scatter(variable: tf.Variable, slots: tf.Tensor, x: tf.Tensor) -> None:
    if tf.distribute.in_cross_replica_context() or not tf.distribute.has_strategy():
        variable.scatter_nd_update(slots[:, None], x)
    else:  # a replica's own copy: per-replica variables take whole assignments only
        variable.assign(tf.tensor_scatter_nd_update(variable, slots[:, None], x))
