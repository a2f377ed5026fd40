"""Stage train: contrastive divergence with replay-buffer Langevin negatives."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict

from ebm import data as data_lib
from ebm.config import ConfigError, Params
from ebm.pipeline.paths import TrainPaths


class TrainingDiverged(RuntimeError):
    """Training produced non-finite or runaway energies; the last healthy checkpoint is kept."""


def build_model(params: Params, energy_net=None, steps_per_epoch: int = 1):
    """The compiled contrastive-divergence model for ``params`` (a fresh network by default);
    ``steps_per_epoch`` sets the length of a ``cosine`` learning-rate schedule."""
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
                                       seed=t.seed + 3, buffer_shift=t.buffer_shift, ema_decay=t.ema_decay)
    lr = t.learning_rate
    if t.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(t.learning_rate, decay_steps=t.epochs * steps_per_epoch,
                                                    alpha=t.lr_min_fraction)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr, beta_1=t.beta_1))
    return model


def train(params: Params, paths: TrainPaths, verbose: int | None = None) -> dict:
    """Train the model family that ``model.family`` names and save it to ``paths.model``."""
    if params.model.family != "ebm":
        from ebm.pipeline import boltzmann

        return boltzmann.train(params, paths, verbose)
    import tensorflow as tf

    from ebm.callbacks import BufferCoverage, DivergenceGuard, EnergyCheckpoint, HistoryCSV, MlflowEpochLogger
    from ebm.plots import kernel_images, save_grid
    from ebm.runtime import configure_threads
    from ebm.tracking import stage_run

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
        model = build_model(params, steps_per_epoch=len(train_split.x) // t.batch_size)
        guard = DivergenceGuard(t.max_abs_energy)
        checkpoint = EnergyCheckpoint(paths.model, guard)
        callbacks = [HistoryCSV(paths.history), guard, checkpoint,
                     MlflowEpochLogger(run, images_fn=lambda: model.buffer.newest(64).numpy())]
        if (train_split.y >= 0).all():  # labelled data: watch the buffer's class coverage
            callbacks.insert(0, BufferCoverage(train_split.x, train_split.y, t.monitor_every,
                                                       min(t.monitor_n, t.buffer_size)))
        start = time.perf_counter()
        if verbose is None:  # a live progress bar on a terminal, one line per epoch in logs
            verbose = 1 if sys.stdout.isatty() else 2
        model.fit(train_ds, epochs=t.epochs, validation_data=test_ds, callbacks=callbacks, shuffle=False,
                  verbose=verbose)
        seconds = time.perf_counter() - start
        save_grid(model.buffer.newest(64).numpy(), paths.negatives)
        first_conv = next(layer for layer in model.energy_net.layers if layer.weights and layer.weights[0].ndim == 4)
        save_grid(kernel_images(first_conv.weights[0].numpy()), paths.filters, scale=12)
        for path in (paths.history, paths.negatives, paths.filters):
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
        run.keras_model(model.sampling_network())
    print(f"train: {steps} steps in {seconds:.0f} s ({seconds / steps:.3f} s/step) -> {paths.model}")
    return summary
