"""The deep EBM behind the family interface (:class:`ebm.families.Family`): a Keras energy
network trained by contrastive divergence, sampled by Langevin dynamics from uniform noise."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from ebm.config import Params
from ebm.data import IMAGE_SHAPE
from ebm.errors import SamplingDiverged
from ebm.families import Scoring, io_shapes


def generation_sampler(params: Params, n: int | None = None):
    """The generation sampler (``params.sampler``), split into sub-chains like training."""
    from ebm.families.deep.sampler import LangevinSampler, split_count
    from ebm.runtime import on_gpu

    s = params.sampler
    n = n or params.generate.n
    requested = params.train.sampler_splits if n % max(1, params.train.sampler_splits) == 0 else 1
    splits = split_count(n, requested, on_gpu())
    return LangevinSampler(s.steps, s.step_size, s.noise, s.grad_clip, seed=params.generate.seed, splits=splits)


class DeepFamily:
    name = "deep"
    title = "EBM experiment report"
    section = ""
    chains_heading = "Langevin chains"
    objective = ("cdiv", "val_cdiv")  # the history's columns plotted as the training objective
    negatives_caption = "Newest replay-buffer negatives"
    filters_caption = "The energy network's first convolution kernels"

    def configure(self, params: Params) -> dict:
        from ebm.families.deep.runtime import configure_threads

        return configure_threads(params.train)

    def train(self, params: Params, paths, verbose: int | None = None) -> dict:
        from ebm.families.deep.train import train

        return train(params, paths, verbose)

    def register(self) -> None:
        """Import the classes a model file of this family holds, for Keras to load it."""
        from ebm.families.deep import network  # noqa: F401  (StridedConv2D)

    def owns(self, model) -> bool:
        """A network with one 32x32x1 image in and one energy out."""
        if getattr(model, "family", None) is not None:
            return False
        return io_shapes(model) == ([IMAGE_SHAPE], [(1,)])

    def sample(self, params: Params, model, n: int, seed: int) -> np.ndarray:
        import tensorflow as tf

        from ebm.families.deep.network import chain_energy

        x0 = tf.random.Generator.from_seed(seed).uniform((n, *IMAGE_SHAPE), -1.0, 1.0)
        samples, _ = generation_sampler(params, n).chain(chain_energy(model), x0)
        return samples.numpy()

    def generate(self, params: Params, paths, model, run) -> dict:
        """Langevin chains from uniform noise: samples, snapshots, GIF, chain health."""
        import pandas as pd
        import tensorflow as tf

        from ebm.families.deep.network import chain_energy
        from ebm.families.deep.sampler import trace_table
        from ebm.io import save_npz_atomic, write_csv_atomic
        from ebm.plots import save_chain_figure, save_chain_health, save_gif, save_grid

        g, steps = params.generate, params.sampler.steps
        sampler = generation_sampler(params)
        x0 = tf.random.Generator.from_seed(g.seed).uniform((g.n, *IMAGE_SHAPE), -1.0, 1.0)
        gif_steps = range(0, steps + 1, g.gif_every)
        record = sorted(set(g.snapshot_steps) | set(gif_steps) | {steps})
        start = time.perf_counter()
        samples, snaps, sums = sampler.chain(chain_energy(model), x0, record_at=record, record_first=g.chains_shown,
                                             trace=True)
        seconds = time.perf_counter() - start
        samples = samples.numpy()
        snaps = {step: x.numpy() for step, x in snaps.items()}
        health = pd.DataFrame(trace_table(sums, g.n))
        if not np.isfinite(sums).all():  # the states stay clipped to [-1, 1]; the energies tell
            first = int(np.argmin(np.isfinite(sums).all(axis=1))) + 1
            raise SamplingDiverged(f"the Langevin chains' energies became non-finite at step {first} of {steps}: the "
                                   f"model file {paths.model} holds broken weights (retrain it); nothing was written")
        shown = sorted(set(g.snapshot_steps))
        save_npz_atomic(paths.samples, samples=samples, snapshot_steps=np.array(shown),
                        snapshots=np.stack([snaps[s] for s in shown]))
        write_csv_atomic(paths.health, health)
        save_grid(samples[:100], paths.grid, ncols=10)
        save_chain_figure({s: snaps[s] for s in shown}, paths.chains, chains=g.chains_shown)
        save_gif({s: snaps[s] for s in gif_steps if s in snaps} | {steps: snaps[steps]}, paths.gif)
        save_chain_health(health, paths.health_plot)
        print(f"generate: {g.n} samples x {steps} steps in {seconds:.1f} s -> {paths.grid}")
        return {"generate_seconds": seconds, "energy_final_mean": float(health["energy_mean"].iloc[-1]),
                "grad_norm_final_mean": float(health["grad_norm_mean"].iloc[-1])}

    def scoring(self, params: Params, model, data_dir: Path) -> Scoring:
        """The network's energy; the long run continues the Langevin chains to
        ``evaluate.longrun_factor`` x the generation length, keeping every multiple."""
        from ebm.families.deep.network import chain_energy

        e, steps = params.evaluate, params.sampler.steps
        longrun = None
        if e.longrun_factor > 1:
            more = dataclasses.replace(params.sampler, steps=steps * (e.longrun_factor - 1))
            chain = chain_energy(model)

            def longrun(x):  # the continued chains' states at every multiple of the generation length
                sampler = generation_sampler(dataclasses.replace(params, sampler=more), n=len(x))
                x, states = sampler.chain(chain, x, record_at=[k * steps for k in range(1, e.longrun_factor - 1)])
                return {**{1 + s // steps: v.numpy() for s, v in states.items()}, e.longrun_factor: x.numpy()}
        return Scoring(self.energy(model), longrun)

    def complete(self, params: Params, model, observed: np.ndarray, hidden: np.ndarray, steps: int,
                 seed: int) -> np.ndarray:
        """Fill the ``hidden`` pixels of ``observed`` (N, 32, 32, 1) by ``steps`` Langevin steps
        of the generation sampler with the other pixels clamped."""
        from ebm.families.deep.network import energy_fn
        from ebm.families.deep.sampler import LangevinSampler, clamped_chain

        s = params.sampler
        sampler = LangevinSampler(steps, s.step_size, s.noise, s.grad_clip, seed=seed)
        return clamped_chain(sampler, energy_fn(model), observed, hidden, steps, seed).numpy()

    def energy(self, model):
        from ebm.families.deep.network import energy_fn

        return energy_fn(model)

    def unit(self, params: Params) -> int:
        return params.sampler.steps

    def unit_name(self, sampler: bool = False) -> str:
        return "Langevin steps" if sampler else "steps"

    def sampler_line(self, params: Params) -> str:
        return f"{params.sampler.steps} Langevin steps x {params.sampler.step_size}"


FAMILY = DeepFamily()
