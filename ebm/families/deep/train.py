"""The deep family's training: contrastive divergence with replay-buffer Langevin negatives,
resumable after a kill, rolled back after a divergence."""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

from ebm import data as data_lib
from ebm.config import ConfigError, Params
from ebm.pipeline.paths import TrainPaths
from ebm.errors import TrainingDiverged

VALIDATION_BATCH = 512  # test digits per validation step (the training batch when larger)


def build_model(params: Params, energy_net=None, steps_per_epoch: int = 1, strategy=None):
    """The compiled contrastive-divergence model for ``params`` (a fresh network by default);
    ``steps_per_epoch`` sets the length of a ``cosine`` learning-rate schedule. Under a
    ``tf.distribute`` ``strategy`` each replica gets its share of the batch and of the buffer
    (:mod:`ebm.families.deep.distribute`)."""
    import keras
    import tensorflow as tf

    from ebm.families.deep.buffer import ReplayBuffer
    from ebm.families.deep.distribute import replica_shares
    from ebm.families.deep.model import ContrastiveDivergenceModel, ScaledSchedule
    from ebm.families.deep.network import IMAGE_SHAPE, build_energy_network
    from ebm.runtime import on_gpu
    from ebm.families.deep.sampler import LangevinSampler, split_count

    t = params.train
    s = t.sampler
    strategy = strategy or tf.distribute.get_strategy()
    try:
        batch, capacity = replica_shares(strategy, t.batch_size, t.buffer_size)
    except ValueError as err:
        raise ConfigError("train.batch_size", str(err)) from None
    keras.utils.set_random_seed(t.seed)  # weight initialisation only; samplers own their RNGs
    with strategy.scope():
        energy_net = energy_net or build_energy_network(params.model)
        splits = split_count(batch, t.sampler_splits, on_gpu())
        sampler = LangevinSampler(s.steps, s.step_size, s.noise, s.grad_clip, seed=t.seed + 1, splits=splits)
        chains = t.persistent_chains // strategy.num_replicas_in_sync  # each replica its share, like the ring
        if t.persistent_chains and chains < t.persistent_rows(batch):
            raise ConfigError("train.persistent_chains", f"{t.persistent_chains} over {strategy.num_replicas_in_sync} "
                              f"replicas leaves {chains} per replica, fewer than a batch's {t.persistent_rows(batch)}")
        buffer = ReplayBuffer(capacity, batch, IMAGE_SHAPE, t.fresh_fraction, seed=t.seed + 2,
                              persistent=chains, persistent_rows=t.persistent_rows(batch),
                              persistent_wait=t.persistent_start > 0)
        model = ContrastiveDivergenceModel(energy_net, sampler, buffer, alpha=t.alpha, real_noise=t.real_noise,
                                           seed=t.seed + 3, ema_decay=t.ema_decay)
        lr = t.learning_rate
        if t.lr_schedule == "cosine":
            lr = keras.optimizers.schedules.CosineDecay(t.learning_rate, decay_steps=t.epochs * steps_per_epoch,
                                                        alpha=t.lr_min_fraction)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=ScaledSchedule(lr, model.lr_scale),
                                                      beta_1=t.beta_1, weight_decay=t.weight_decay or None))
    return model


def train(params: Params, paths: TrainPaths, verbose: int | None = None) -> dict:
    """Train the deep EBM and save it to ``paths.model``.

    The full training state is saved after every healthy epoch (:mod:`ebm.families.deep.resume`):
    a rerun with the same params and data resumes after the last complete epoch, and a
    divergence rolls back to it (``train.on_divergence``)."""
    import keras
    import tensorflow as tf

    from ebm.families.deep import distribute, resume
    from ebm.callbacks import HistoryCSV, MlflowEpochLogger
    from ebm.families.deep.callbacks import (BufferCoverage, DivergenceGuard, EnergyCheckpoint, PersistentStart,
                                             TrainingStateKeeper, WeightSnapshots)
    from ebm.io import save_model_atomic
    from ebm.plots import kernel_images, save_grid
    from ebm.families.deep.network import portable_network
    from ebm.families.deep.runtime import configure_threads
    from ebm.tracking import NullRun, stage_run

    t = params.train
    threads = configure_threads(t)
    kernels = threads.pop("kernels")
    try:
        strategy = distribute.make_strategy(t.strategy)  # before any other TensorFlow op (multi_worker)
    except ValueError as err:
        raise ConfigError("train.strategy", str(err)) from None
    chief = distribute.is_chief()
    if not chief:  # a non-chief worker trains only: its files go to a scratch folder, nothing is logged
        import tempfile

        scratch = Path(tempfile.mkdtemp(prefix="ebm-worker-"))
        paths = TrainPaths(data=paths.data, snapshots=scratch / "snapshots",
                           **{f: scratch / getattr(paths, f).name
                              for f in ("model", "history", "negatives", "filters", "record")})
    data_files = [paths.data / "train.npz", paths.data / "test.npz"]
    train_split, test_split = (data_lib.load_split(f) for f in data_files)
    if len(train_split.x) < t.batch_size:
        raise ConfigError("train.batch_size", f"={t.batch_size} exceeds the {len(train_split.x)} training images")
    steps_per_epoch = len(train_split.x) // t.batch_size

    def batches(first_epoch: int):
        order = resume.epoch_order(len(train_split.x), t.batch_size, t.seed, range(first_epoch, t.epochs))
        if t.strategy != "default":
            return distribute.distributed_batches(strategy, train_split.x, order)
        return distribute.gathered(tf.data.Dataset.from_tensor_slices(order), train_split.x)

    # validation needs no gradient: big batches (each evaluate step costs ~10 ms of overhead on a CPU)
    test_ds = data_lib.fixed_pipeline(
        tf.data.Dataset.from_tensor_slices(test_split.x).batch(max(t.batch_size, VALIDATION_BATCH)))
    section = {**asdict(t), "model": asdict(params.model)}
    key = resume.resume_key(section, data_files)
    state_path = resume.resume_dir() / f"train-{key}.npz"
    if not chief:
        state_path = paths.model.parent / state_path.name
    snapshots = paths.snapshot_folder
    staged = state_path.with_name(f"snapshots-{key}")  # beside the state, so a resumed run keeps them
    tracked = stage_run("train", params, section, paths.record, upstream=("prepare",),
                        tags={"ebm.kernels": kernels}) if chief \
        else contextlib.nullcontext(NullRun())
    with tracked as run:
        run.datasets(data_lib.input_datasets(params.data, paths.data, training="train", validation="test"))
        model = build_model(params, steps_per_epoch=steps_per_epoch, strategy=strategy)
        with strategy.scope():
            model.optimizer.build(model.energy_net.trainable_variables)
        guard = DivergenceGuard(t.max_abs_energy, t.max_abs_cdiv, t.max_epoch_cdiv)
        history = HistoryCSV(paths.history)
        checkpoint = EnergyCheckpoint(paths.model, guard)
        keeper = TrainingStateKeeper(state_path, key, guard, history, depth=t.max_rollbacks + 1)
        ran = [0]  # training steps this process ran, those of epochs a rollback undid included

        def count(batch, logs=None):
            ran[0] += 1

        callbacks = [history, guard, checkpoint, keeper,
                     MlflowEpochLogger(run, images_fn=lambda: model.buffer.newest(64).numpy()),
                     keras.callbacks.LambdaCallback(on_train_batch_end=count)]
        if t.snapshot_every:  # after the checkpoint it copies, before the keeper: a kept epoch has its snapshot
            callbacks.insert(callbacks.index(keeper), WeightSnapshots(staged, t.snapshot_every, checkpoint))
        if model.buffer.persistent_wait:  # sets the switch before each epoch's first batch
            callbacks.append(PersistentStart(model.buffer, t.persistent_start))
        callbacks.insert(0, BufferCoverage(train_split.x, train_split.y, t.monitor_every,  # the buffer's classes
                                           min(t.monitor_n, t.buffer_size), seed=t.seed))
        keeper.set_model(model)
        first = resume_from(state_path, key, model, history, run) if resume.resume_enabled() else 0
        guard.seed(history.rows)
        if first == 0:
            shutil.rmtree(staged, ignore_errors=True)  # a fresh start: no other run's snapshots
            keeper.keep(0)  # the start, for a rollback in the first epoch
        start = time.perf_counter()
        if verbose is None:  # a live progress bar on a terminal, one line per epoch in logs
            verbose = 1 if sys.stdout.isatty() else 2
        while True:
            model.fit(batches(first), epochs=t.epochs, initial_epoch=first, steps_per_epoch=steps_per_epoch,
                      validation_data=test_ds, callbacks=callbacks, verbose=verbose, shuffle=False)
            if guard.reason is None:
                break
            if t.on_divergence == "stop" or int(model.rollbacks.numpy()) >= t.max_rollbacks:
                tried = f" after {int(model.rollbacks.numpy())} rollback(s)" if t.on_divergence == "rollback" else ""
                raise TrainingDiverged(
                    f"training diverged{tried}: {guard.reason}. The last healthy checkpoint (epoch "
                    f"{checkpoint.saved_epoch or keeper.last.epoch}) is at {paths.model} and the history at "
                    f"{paths.history}; try a lower train.learning_rate or a larger train.alpha.")
            first = roll_back(model, keeper, guard, history, run, t)
        seconds = time.perf_counter() - start
        save_model_atomic(model.sampling_network(), paths.model)
        save_grid(model.buffer.newest(64).numpy(), paths.negatives)
        first_conv = next(layer for layer in model.energy_net.layers if layer.weights and layer.weights[0].ndim == 4)
        save_grid(kernel_images(first_conv.weights[0].numpy()), paths.filters, scale=12)
        for path in (paths.history, paths.negatives, paths.filters):
            run.artifact(path)
        fresh_dir(snapshots)  # always there (empty when off): a DVC output
        for path in sorted(staged.glob("energy-e*.keras")):
            run.artifact(shutil.move(path, snapshots / path.name), "snapshots")
        run.artifact(paths.model, "checkpoint")
        steps = ran[0]
        summary = {"train_seconds": seconds, "seconds_per_step": seconds / max(steps, 1), "steps": steps,
                   "rollbacks": int(model.rollbacks.numpy()), **threads}
        run.metrics(summary)
        run.keras_model(portable_network(model.sampling_network()), example=train_split.x[:2])
    state_path.unlink(missing_ok=True)  # training completed: nothing to resume
    shutil.rmtree(staged, ignore_errors=True)
    print(f"train: {steps} steps in {seconds:.0f} s ({seconds / max(steps, 1):.3f} s/step) -> {paths.model}")
    return {**summary, "kernels": kernels, "outputs": chief}


def fresh_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


def resume_from(state_path, key: str, model, history, run) -> int:
    """Load the saved state at ``state_path`` into ``model`` and ``history`` if there is one for
    ``key``; returns the epochs already done (0 = a fresh start). An unusable state is reported
    and ignored."""
    from ebm.families.deep import resume

    if not state_path.exists():
        return 0
    try:
        state = resume.load(state_path, key)
        resume.restore(model, state)
    except resume.ResumeError as err:
        print(f"train: starting afresh: {err}", file=sys.stderr)
        return 0
    if state.epoch == 0:
        return 0
    history.rows = list(state.history)
    history.write()
    run.tags({"ebm.resumed_from_epoch": state.epoch, "ebm.resume_state": str(state_path)})
    print(f"train: resuming after epoch {state.epoch} from {state_path}")
    return state.epoch


def roll_back(model, keeper, guard, history, run, t) -> int:
    """Return ``model`` to a healthy epoch's full state, lower its learning rate by
    ``t.rollback_lr_factor``, reseed its sampler, and record the event (history row, MLflow
    metric and tag). Rollback k goes back to the k-th newest healthy epoch kept: a run that
    diverges again after a rollback starts further from the trouble. Returns the epoch to
    continue from."""
    from ebm.families.deep import resume

    count = int(model.rollbacks.numpy()) + 1
    state = keeper.rewind(count)
    reason, diverged_at = guard.reason, guard.epoch
    resume.restore(model, state)
    model.rollbacks.assign(count)
    model.lr_scale.assign(t.rollback_lr_factor ** count)  # however far back the state is
    model.sampler.rng.reset_from_seed(t.seed + 1 + 1000 * count)
    event = (f"rollback {count}: {reason}; back to epoch {state.epoch}, learning rate x{float(model.lr_scale.numpy()):g}, "
             "sampler reseeded")
    earlier = [row for row in history.rows if row.get("event") and row not in state.history]  # rewound past
    history.rows = list(state.history) + earlier + [{"epoch": diverged_at, "event": event}]
    history.write()
    run.metrics({"rollback": count}, step=diverged_at)
    run.tags({"ebm.rollbacks": count, f"ebm.rollback.{count}": event})
    print(f"train: {event}", file=sys.stderr)
    guard.reset()
    guard.seed(state.history)
    keeper.keep(state.epoch)  # the rolled-back state, with its event row, is the one to resume
    return state.epoch
