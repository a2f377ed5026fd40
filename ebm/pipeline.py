"""The four DVC stages as library functions ``stage(params, paths)``.

Each wires library pieces together, writes its outputs and logs one MLflow run. The stage
scripts in ``stages/`` only parse arguments and call these.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ebm import data as data_lib
from ebm.config import ConfigError, Params


class TrainingDiverged(RuntimeError):
    """Training produced non-finite or runaway energies; the last healthy checkpoint is kept."""


@dataclass(frozen=True)
class PreparePaths:
    data: Path = Path("data/prepared")
    record: Path = Path("reports/runs/prepare.json")


@dataclass(frozen=True)
class TrainPaths:
    data: Path = Path("data/prepared")
    model: Path = Path("models/energy.keras")
    history: Path = Path("reports/train/history.csv")
    negatives: Path = Path("reports/train/negatives.png")
    record: Path = Path("reports/runs/train.json")


@dataclass(frozen=True)
class GeneratePaths:
    model: Path = Path("models/energy.keras")
    samples: Path = Path("data/generated/samples.npz")
    grid: Path = Path("reports/generate/samples.png")
    chains: Path = Path("reports/generate/chains.png")
    record: Path = Path("reports/runs/generate.json")


@dataclass(frozen=True)
class EvaluatePaths:
    data: Path = Path("data/prepared")
    model: Path = Path("models/energy.keras")
    samples: Path = Path("data/generated/samples.npz")
    history: Path = Path("reports/train/history.csv")
    metrics: Path = Path("reports/metrics.json")
    energy_hist: Path = Path("reports/evaluate/energy_hist.png")
    loss_curves: Path = Path("reports/evaluate/loss_curves.png")
    record: Path = Path("reports/runs/evaluate.json")


def prepare(params: Params, paths: PreparePaths) -> dict:
    from ebm.tracking import stage_run

    with stage_run("prepare", params, asdict(params.data), paths.record) as run:
        train, test = data_lib.load_source(params.data)
        data_lib.save_split(train, paths.data / "train.npz")
        data_lib.save_split(test, paths.data / "test.npz")
        summary = {"n_train": len(train.x), "n_test": len(test.x), "pixel_mean": float(train.x.mean())}
        run.metrics(summary)
    print(f"prepare: {summary['n_train']} train / {summary['n_test']} test images -> {paths.data}")
    return summary


def build_model(params: Params, energy_net=None):
    """The compiled contrastive-divergence model for ``params`` (a fresh network by default)."""
    import keras

    from ebm.buffer import ReplayBuffer
    from ebm.model import ContrastiveDivergenceModel
    from ebm.network import IMAGE_SHAPE, build_energy_network
    from ebm.runtime import on_gpu
    from ebm.sampler import LangevinSampler, split_count

    t = params.train
    s = t.sampler
    keras.utils.set_random_seed(t.seed)  # weight initialisation only; samplers own their RNGs
    energy_net = energy_net or build_energy_network(params.model)
    splits = split_count(t.batch_size, t.sampler_splits, os.cpu_count() or 1, on_gpu())
    sampler = LangevinSampler(s.steps, s.step_size, s.noise, s.grad_clip, seed=t.seed + 1, splits=splits)
    buffer = ReplayBuffer(t.buffer_size, t.batch_size, IMAGE_SHAPE, t.fresh_fraction, seed=t.seed + 2)
    model = ContrastiveDivergenceModel(energy_net, sampler, buffer, alpha=t.alpha, real_noise=t.real_noise,
                                       seed=t.seed + 3)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=t.learning_rate, beta_1=t.beta_1))
    return model


def train(params: Params, paths: TrainPaths, verbose: int | None = None) -> dict:
    import tensorflow as tf

    from ebm.callbacks import DivergenceGuard, EnergyCheckpoint, HistoryCSV
    from ebm.plots import save_grid
    from ebm.runtime import configure_threads
    from ebm.tracking import MlflowEpochLogger, stage_run

    t = params.train
    threads = configure_threads(t)
    train_split = data_lib.load_split(paths.data / "train.npz")
    test_split = data_lib.load_split(paths.data / "test.npz")
    if len(train_split.x) < t.batch_size:
        raise ConfigError("train.batch_size", f"={t.batch_size} exceeds the {len(train_split.x)} training images")
    train_ds = (tf.data.Dataset.from_tensor_slices(train_split.x)
                .shuffle(len(train_split.x), seed=t.seed, reshuffle_each_iteration=True)
                .batch(t.batch_size, drop_remainder=True).prefetch(2))
    test_ds = tf.data.Dataset.from_tensor_slices(test_split.x).batch(t.batch_size)

    section = {**asdict(t), "model": asdict(params.model)}
    with stage_run("train", params, section, paths.record, upstream=("prepare",)) as run:
        model = build_model(params)
        guard = DivergenceGuard(t.max_abs_energy)
        checkpoint = EnergyCheckpoint(paths.model, guard)
        callbacks = [HistoryCSV(paths.history), guard, checkpoint,
                     MlflowEpochLogger(run, images_fn=lambda: model.buffer.newest(64).numpy())]
        start = time.perf_counter()
        if verbose is None:  # a live progress bar on a terminal, one line per epoch in logs
            verbose = 1 if sys.stdout.isatty() else 2
        model.fit(train_ds, epochs=t.epochs, validation_data=test_ds, callbacks=callbacks, shuffle=False,
                  verbose=verbose)
        seconds = time.perf_counter() - start
        save_grid(model.buffer.newest(64).numpy(), paths.negatives)
        for path in (paths.history, paths.negatives):
            run.artifact(path)
        if checkpoint.saved_epoch:
            run.artifact(paths.model, "checkpoint")
        if guard.reason:
            raise TrainingDiverged(
                f"training diverged: {guard.reason}. The last healthy checkpoint (epoch "
                f"{checkpoint.saved_epoch}) is at {paths.model} and the history at {paths.history}; "
                "try a lower train.learning_rate or a larger train.alpha.")
        steps = t.epochs * (len(train_split.x) // t.batch_size)
        summary = {"train_seconds": seconds, "seconds_per_step": seconds / steps, "steps": steps, **threads}
        run.metrics(summary)
        run.keras_model(model.energy_net)
    print(f"train: {steps} steps in {seconds:.0f} s ({seconds / steps:.3f} s/step) -> {paths.model}")
    return summary


def generation_sampler(params: Params):
    from ebm.runtime import on_gpu
    from ebm.sampler import LangevinSampler, split_count

    s = params.sampler
    n = params.generate.n
    splits = split_count(n, params.train.sampler_splits if n % max(1, params.train.sampler_splits) == 0 else 1,
                         os.cpu_count() or 1, on_gpu())
    return LangevinSampler(s.steps, s.step_size, s.noise, s.grad_clip, seed=params.generate.seed, splits=splits)


def generate(params: Params, paths: GeneratePaths) -> dict:
    import tensorflow as tf

    from ebm.network import energy_fn, load_energy_network
    from ebm.plots import save_chain_figure, save_grid
    from ebm.runtime import configure_threads
    from ebm.tracking import stage_run

    g = params.generate
    configure_threads(params.train)
    with stage_run("generate", params, {**asdict(params.sampler), **asdict(g)}, paths.record,
                   upstream=("prepare", "train")) as run:
        energy = energy_fn(load_energy_network(paths.model))
        sampler = generation_sampler(params)
        x0 = tf.random.Generator.from_seed(g.seed).uniform((g.n, 32, 32, 1), -1.0, 1.0)
        start = time.perf_counter()
        samples, snapshots = sampler.chain(energy, x0, record_at=g.snapshot_steps)
        seconds = time.perf_counter() - start
        samples = samples.numpy()
        shown = {step: x[: g.chains_shown].numpy() for step, x in snapshots.items()}
        paths.samples.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(paths.samples, samples=samples, snapshot_steps=np.array(sorted(shown)),
                            snapshots=np.stack([shown[s] for s in sorted(shown)]))
        save_grid(samples[:100], paths.grid, ncols=10)
        save_chain_figure(shown, paths.chains, chains=g.chains_shown)
        summary = {"generate_seconds": seconds, "sample_energy_mean": float(np.mean(energy(samples[:1000])))}
        run.metrics(summary)
        for path in (paths.grid, paths.chains, paths.samples):
            run.artifact(path)
    print(f"generate: {g.n} samples x {params.sampler.steps} steps in {seconds:.1f} s -> {paths.grid}")
    return summary


def energies(network, x: np.ndarray, batch_size: int) -> np.ndarray:
    """E(x) for every image, in batches."""
    from ebm.network import energy_fn

    fn = energy_fn(network)
    return np.concatenate([fn(x[i:i + batch_size]).numpy() for i in range(0, len(x), batch_size)])


def evaluate(params: Params, paths: EvaluatePaths) -> dict:
    import pandas as pd

    from ebm.network import load_energy_network
    from ebm.plots import save_energy_histogram, save_loss_curves
    from ebm.tracking import stage_run

    e = params.evaluate
    with stage_run("evaluate", params, asdict(e), paths.record, upstream=("prepare", "train", "generate")) as run:
        network = load_energy_network(paths.model)
        test = data_lib.load_split(paths.data / "test.npz")
        samples = load_samples(paths.samples)
        noise = np.random.default_rng(e.seed).uniform(-1, 1, test.x.shape).astype("float32")
        scores = {name: energies(network, x, e.batch_size)
                  for name, x in (("real test", test.x), ("uniform noise", noise), ("generated", samples))}
        metrics = {
            "test_cdiv": float(scores["real test"].mean() - scores["uniform noise"].mean()),
            "energy_real": float(scores["real test"].mean()),
            "energy_noise": float(scores["uniform noise"].mean()),
            "energy_generated": float(scores["generated"].mean()),
            "generated_below_noise": float(np.mean(scores["generated"] < scores["uniform noise"].min())),
        }
        paths.metrics.parent.mkdir(parents=True, exist_ok=True)
        paths.metrics.write_text(json.dumps(metrics, indent=2) + "\n")
        save_energy_histogram(scores, paths.energy_hist)
        save_loss_curves(pd.read_csv(paths.history), paths.loss_curves)
        run.metrics(metrics, on_parent=True)
        for path in (paths.metrics, paths.energy_hist, paths.loss_curves):
            run.artifact(path)
    print("evaluate: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return metrics


def load_samples(path: Path) -> np.ndarray:
    if not Path(path).is_file():
        raise data_lib.DataError(f"samples {path} not found: run the generate stage (dvc repro generate)")
    try:
        with np.load(path, allow_pickle=False) as f:
            return f["samples"]
    except (OSError, ValueError, KeyError) as err:
        raise data_lib.DataError(f"samples {path} are corrupt ({err}): rerun the generate stage") from err
