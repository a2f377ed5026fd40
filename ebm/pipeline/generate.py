"""Stage generate: Langevin chains from uniform noise, with snapshots and chain health."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ebm import data as data_lib
from ebm.config import Params
from ebm.errors import SamplingDiverged
from ebm.pipeline.paths import GeneratePaths


def generation_sampler(params: Params, n: int | None = None):
    """The generation sampler (``params.sampler``), split into sub-chains like training."""
    from ebm.runtime import on_gpu
    from ebm.sampler import LangevinSampler, split_count

    s = params.sampler
    n = n or params.generate.n
    requested = params.train.sampler_splits if n % max(1, params.train.sampler_splits) == 0 else 1
    splits = split_count(n, requested, on_gpu())
    return LangevinSampler(s.steps, s.step_size, s.noise, s.grad_clip, seed=params.generate.seed, splits=splits)


def generate(params: Params, paths: GeneratePaths, network=None, track: bool = True) -> dict:
    """Draw ``generate.n`` samples from the model file's family; ``network`` overrides the file
    (for ``ebm evaluate``)."""
    from ebm.network import load_energy_network
    from ebm.runtime import configure_threads
    from ebm.tracking import maybe_stage_run

    g = params.generate
    configure_threads(params.train)
    section = {**asdict(params.sampler), **asdict(g)}
    with maybe_stage_run(track, "generate", params, section, paths.record, upstream=("prepare", "train")) as run:
        model = network or load_energy_network(paths.model)
        if getattr(model, "family", "ebm") != "ebm":
            from ebm.pipeline import boltzmann

            summary = boltzmann.generate(params, paths, model, run)
        else:
            summary = _langevin(params, paths, model)
        run.metrics(summary)
        for path in (paths.grid, paths.chains, paths.gif, paths.health, paths.health_plot, paths.samples):
            run.artifact(path)
    return summary


def _langevin(params: Params, paths: GeneratePaths, network) -> dict:
    """The deep EBM's generation: Langevin chains from uniform noise."""
    import pandas as pd
    import tensorflow as tf

    from ebm.network import chain_energy
    from ebm.plots import save_chain_figure, save_chain_health, save_gif, save_grid
    from ebm.sampler import trace_table

    g = params.generate
    energy = chain_energy(network)
    sampler = generation_sampler(params)
    x0 = tf.random.Generator.from_seed(g.seed).uniform((g.n, 32, 32, 1), -1.0, 1.0)
    gif_steps = range(0, params.sampler.steps + 1, g.gif_every)
    record = sorted(set(g.snapshot_steps) | set(gif_steps) | {params.sampler.steps})
    start = time.perf_counter()
    samples, snaps, sums = sampler.chain(energy, x0, record_at=record, record_first=g.chains_shown, trace=True)
    seconds = time.perf_counter() - start
    samples = samples.numpy()
    snaps = {step: x.numpy() for step, x in snaps.items()}
    health = pd.DataFrame(trace_table(sums, g.n))
    if not np.isfinite(sums).all():  # the states stay clipped to [-1, 1]; the energies tell
        first = int(np.argmin(np.isfinite(sums).all(axis=1))) + 1
        raise SamplingDiverged(f"the Langevin chains' energies became non-finite at step {first} of "
                               f"{params.sampler.steps}: the model file {paths.model} holds broken weights "
                               "(retrain it); nothing was written")
    paths.samples.parent.mkdir(parents=True, exist_ok=True)
    shown = sorted(set(g.snapshot_steps))
    np.savez_compressed(paths.samples, samples=samples, snapshot_steps=np.array(shown),
                        snapshots=np.stack([snaps[s] for s in shown]))
    paths.health.parent.mkdir(parents=True, exist_ok=True)
    health.to_csv(paths.health, index=False)
    save_grid(samples[:100], paths.grid, ncols=10)
    save_chain_figure({s: snaps[s] for s in shown}, paths.chains, chains=g.chains_shown)
    save_gif({s: snaps[s] for s in gif_steps if s in snaps} | {params.sampler.steps: snaps[params.sampler.steps]},
             paths.gif)
    save_chain_health(health, paths.health_plot)
    print(f"generate: {g.n} samples x {params.sampler.steps} steps in {seconds:.1f} s -> {paths.grid}")
    return {"generate_seconds": seconds, "energy_final_mean": float(health["energy_mean"].iloc[-1]),
            "grad_norm_final_mean": float(health["grad_norm_mean"].iloc[-1])}


def load_samples(path: Path) -> np.ndarray:
    if not Path(path).is_file():
        raise data_lib.DataError(f"samples {path} not found: run the generate stage (dvc repro generate)")
    try:
        with np.load(path, allow_pickle=False) as f:
            return f["samples"]
    except (OSError, ValueError, KeyError) as err:
        raise data_lib.DataError(f"samples {path} are corrupt ({err}): rerun the generate stage") from err
