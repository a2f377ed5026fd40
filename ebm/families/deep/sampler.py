"""Langevin dynamics on an energy function. Pure math: tensors and numbers in, tensors out.

One step, from the reference: add N(0, noise) to every pixel, clip to [-1, 1], take the
gradient of the energy with respect to the input, clip it to +-grad_clip, step *downhill* by
``step_size`` (the network outputs E(x); see :mod:`ebm.families.deep.network`), clip to [-1, 1] again.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np
import tensorflow as tf

from ebm.families.deep.native import add_noise, langevin_move

EnergyFn = Callable[[tf.Tensor], tf.Tensor]  # (B, H, W, C) -> (B,)


def _identity(x):
    return x


class ChainEnergy(NamedTuple):
    """An energy on the chain's state, and the maps between images and that state.

    The Langevin update is elementwise and its noise i.i.d., so running the chain on any fixed
    rearrangement of the pixels (such as the 2x2 blocks a network's first layer reads directly,
    see :func:`ebm.families.deep.network.chain_energy`) is the same chain. A plain ``EnergyFn`` is run as is.

    ``native``, when set, runs a whole chain at once on images:
    ``native(x, seed, steps, step_size, noise, grad_clip) -> (final x, per-step sums (steps, 4))``
    with the same update and trace as the step-by-step loop (:func:`ebm.families.deep.native.langevin_chain`).
    """

    energy: EnergyFn
    to_state: Callable[[tf.Tensor], tf.Tensor] = _identity
    from_state: Callable[[tf.Tensor], tf.Tensor] = _identity
    native: Callable | None = None


def energy_and_grad(energy: EnergyFn, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """E(x) per image and dE/dx. Each image's energy depends only on that image."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        e = energy(x)
        total = tf.reduce_sum(e)
    return e, tape.gradient(total, x)


class LangevinSampler(tf.Module):
    """Runs clipped Langevin chains downhill on an energy.

    ``splits`` > 1 runs the batch as that many independent sub-chains in one graph, which TF
    can schedule on different cores (useful on CPUs with few cores, neutral elsewhere; a
    :class:`ChainEnergy` with a ``native`` chain spreads its images over the cores itself). The
    noise comes from a stateless generator keyed by a seed drawn from ``self.rng`` per run, so
    the sub-chains share no state and the result does not depend on the scheduling.
    """

    def __init__(self, steps: int, step_size: float, noise: float, grad_clip: float, seed: int = 0, splits: int = 1):
        super().__init__(name="langevin_sampler")
        if steps < 1:
            raise ValueError(f"steps must be >= 1; got {steps}")
        self.steps = steps
        self.step_size = step_size
        self.noise = noise
        self.grad_clip = grad_clip
        self.splits = max(1, splits)
        self.rng = tf.random.Generator.from_seed(seed)

    def step(self, energy: EnergyFn, x: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """One Langevin step; ``seed`` is a stateless RNG seed of shape (2,). Returns the new
        state, the energy of the noised state and its (unclipped) gradient."""
        if self.noise > 0:
            x = add_noise(x, seed, self.noise)
        e, grad = energy_and_grad(energy, x)
        return langevin_move(x, grad, self.step_size, self.grad_clip), e, grad

    def run(self, energy: EnergyFn | ChainEnergy, x: tf.Tensor, steps=None, trace: bool = False,
            seed=None, first_step=0):
        """Run ``steps`` (default ``self.steps``) steps from ``x``; usable inside a tf.function.

        The noise is keyed by ``seed`` (shape (2,); by default a fresh one from ``self.rng``) and
        counted by absolute step from ``first_step``: a chain run in segments with one seed draws
        the same noise as in one run (see :meth:`chain`).
        With ``trace=True`` also returns per-step sums over the batch, shape (steps, 4):
        sum E, sum E^2, sum |grad|, sum |grad|^2 (see :func:`trace_table`)."""
        space = energy if isinstance(energy, ChainEnergy) else ChainEnergy(energy)
        steps = self.steps if steps is None else steps
        seed = self.rng.make_seeds(1)[:, 0] if seed is None else seed
        first_step = tf.cast(first_step, tf.int32)
        if space.native is not None:  # one op runs every chain, on all cores: no sub-chains needed
            key = tf.concat([tf.cast(seed, tf.int32), first_step[None]], axis=0)
            x, sums = space.native(x, key, steps, self.step_size, self.noise, self.grad_clip)
            return (x, sums) if trace else x
        n = x.shape[0]
        splits = min(self.splits, n) if n is not None else 1
        seeds = tf.stack([tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), p)
                          for p in range(splits)], axis=1)  # (2, splits)
        sizes = [n // splits + (1 if p < n % splits else 0) for p in range(splits)] if splits > 1 else None
        parts = tf.split(x, sizes, axis=0) if splits > 1 else [x]
        out, traces = [], []
        for p, part in enumerate(parts):
            seed = seeds[:, p]

            def body(i, z, sums, seed=seed):
                z, e, g = self.step(space.energy, z, tf.random.experimental.stateless_fold_in(seed, first_step + i))
                if trace:
                    g = tf.norm(tf.reshape(g, (tf.shape(g)[0], -1)), axis=1)
                    sums = sums.write(i, tf.stack([tf.reduce_sum(e), tf.reduce_sum(e * e),
                                                   tf.reduce_sum(g), tf.reduce_sum(g * g)]))
                return i + 1, z, sums

            sums = tf.TensorArray(tf.float32, size=steps if trace else 0, dynamic_size=not trace)
            _, part, sums = tf.while_loop(lambda i, z, s: i < steps, body,
                                          (tf.constant(0), space.to_state(part), sums))
            out.append(space.from_state(part))
            if trace:
                traces.append(sums.stack())
        x = tf.concat(out, axis=0) if len(out) > 1 else out[0]
        return (x, tf.add_n(traces)) if trace else x

    def chain(self, energy: EnergyFn | ChainEnergy, x: tf.Tensor, record_at: Sequence[int] = (),
              record_first: int | None = None, trace: bool = False):
        """Run ``self.steps`` compiled steps from ``x``, keeping the state of the first
        ``record_first`` chains (all by default) after each step in ``record_at`` (0 = start).

        Returns ``(final state, {step: states})``, plus with ``trace=True`` a NumPy array
        (steps, 4) of per-step sums for :func:`trace_table`."""
        compiled = tf.function(lambda z, k, seed, first: self.run(energy, z, k, trace=trace, seed=seed,
                                                                   first_step=first))
        seed = self.rng.make_seeds(1)[:, 0]  # one key for the whole chain: recording changes no noise
        keep = slice(None, record_first)
        marks = sorted({s for s in record_at if 0 <= s <= self.steps} | {self.steps})
        snapshots, sums, done = {}, [], 0
        if 0 in record_at:
            snapshots[0] = tf.identity(x[keep])
        for mark in marks:
            if mark > done:
                result = compiled(x, tf.constant(mark - done), seed, tf.constant(done))
                x = result[0] if trace else result
                if trace:
                    sums.append(result[1].numpy())
                done = mark
            if mark in record_at:
                snapshots[mark] = x[keep]
        if trace:
            return x, snapshots, np.concatenate(sums)
        return x, snapshots


def clamped_chain(sampler: LangevinSampler, energy: EnergyFn, observed: tf.Tensor, hidden: tf.Tensor, steps: int,
                  seed: int = 0) -> tf.Tensor:
    """Langevin chains on the ``hidden`` pixels only (a boolean mask broadcast to ``observed``),
    the other pixels clamped to ``observed`` at every step; the hidden ones start from uniform
    noise. The same step as generation (:meth:`LangevinSampler.step`), then the clamp."""
    observed = tf.convert_to_tensor(observed, tf.float32)
    hidden = tf.broadcast_to(tf.convert_to_tensor(hidden, tf.bool), tf.shape(observed))
    noise = tf.random.stateless_uniform(tf.shape(observed), [seed, 1], -1.0, 1.0)
    key = tf.constant([seed, 2], tf.int64)

    @tf.function
    def run(x):
        def body(i, z):
            z, _, _ = sampler.step(energy, z, tf.random.experimental.stateless_fold_in(key, i))
            return i + 1, tf.where(hidden, z, observed)

        return tf.while_loop(lambda i, z: i < steps, body, (tf.constant(0), x))[1]

    return run(tf.where(hidden, noise, observed))


def trace_table(sums: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """Per-step mean and standard deviation of the energy and the gradient norm from the
    sums :meth:`LangevinSampler.run` traces over a batch of ``n`` chains. Step 1 is the first."""
    mean = sums / n
    std = np.sqrt(np.maximum(mean[:, [1, 3]] - mean[:, [0, 2]] ** 2, 0.0))
    return {"step": np.arange(1, len(sums) + 1), "energy_mean": mean[:, 0], "energy_std": std[:, 0],
            "grad_norm_mean": mean[:, 2], "grad_norm_std": std[:, 1]}


def split_count(batch_size: int, requested: int, on_gpu: bool) -> int:
    """How many sub-chains to run: ``requested`` if > 0, else 2 on a CPU when the batch divides
    evenly, else 1 (a GPU gains nothing from splitting). Not the core count: the sub-chains
    draw different noise streams, so the count must not depend on the machine's cores."""
    if requested > 0:
        if batch_size % requested:
            raise ValueError(f"train.sampler_splits={requested} must divide train.batch_size={batch_size}")
        return requested
    if on_gpu or batch_size % 2:
        return 1
    return 2
