"""Block Gibbs chains for an RBM, compiled, with snapshots at chosen sweeps."""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

from ebm.families.rbm.model import gibbs_sweep


def gibbs_chain(w, b, c, v0, steps: int, record_at: Sequence[int] = (), seed: int = 0,
                record_first: int | None = None, measure=None):
    """Run ``steps`` block Gibbs sweeps from the binary states ``v0`` (N, D).

    Returns ``(v, p, snapshots)``: the final binary states, their last ``p(v = 1 | h)`` (the
    "mean" image a grid shows) and ``{step: p}`` of the first ``record_first`` chains (all by
    default) for each step in ``record_at`` (step 0: ``v0``). With ``measure`` (a function of
    the binary states), also a fourth item ``{step: measure(v)}`` at the same steps.
    """
    rng = tf.random.Generator.from_seed(seed)

    @tf.function
    def run(v, sweeps):
        def body(i, v, p):
            v, p = gibbs_sweep(v, w, b, c, rng)
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
