"""The train, generate and evaluate stages for the Boltzmann families (``model.family``: ``rbm``,
``dbn``). Each stage module dispatches here; the outputs are the ones the deep EBM writes, so
the classifier, the evaluation metrics, the report and ``ebm compare`` serve every family.

Models work on 784 binary visible units (28x28, binarised once by ``rbm.binarize``); samples
and snapshots go back to 32x32 images in [-1, 1] (:func:`ebm.rbm.data.to_images`), showing the
visible probabilities ``p(v = 1 | h)`` of the last sweep.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ebm import data as data_lib
from ebm.config import BoltzmannTraining, ConfigError, Params
from ebm.rbm.data import VISIBLE, binarize, intensities, to_images

def binary_splits(params: Params, data_dir: Path):
    """The binarised train and test digits (``rbm.binarize``; the test draw has its own seed)."""
    r = params.rbm
    train, test = data_lib.load_split(data_dir / "train.npz"), data_lib.load_split(data_dir / "test.npz")
    return binarize(train.x, r.binarize, r.seed), binarize(test.x, r.binarize, r.seed + 10_000)


def filter_images(w: np.ndarray, n: int = 64) -> np.ndarray:
    """The first ``n`` hidden units' weights as 28x28 images, each scaled to its own range."""
    from ebm.plots import kernel_images

    return kernel_images(np.asarray(w)[:, :n])


# -- train


def fit_layer(cfg: BoltzmannTraining, visible: int, v_train, v_test, history=None, run=None, verbose: int = 0,
              label: str = "rbm", images_fn=None, images_folder: str = "filters"):
    """Build and fit one RBM layer on binary data. Per-epoch metrics (with pseudo-likelihoods)
    go to the ``history`` callback and the MLflow ``run`` when given."""
    import keras
    import tensorflow as tf

    from ebm.callbacks import MlflowEpochLogger, PseudoLikelihood
    from ebm.rbm.model import RBM, sgd

    if len(v_train) < cfg.batch_size:
        raise ConfigError(f"{label}.batch_size", f"={cfg.batch_size} exceeds the {len(v_train)} training images")
    keras.utils.set_random_seed(cfg.seed)
    rbm = RBM(visible, cfg.hidden, cd_k=cfg.cd_k, persistent=cfg.persistent, batch_size=cfg.batch_size,
              seed=cfg.seed, name=label)
    rbm.compile(optimizer=sgd(cfg.learning_rate, cfg.momentum, cfg.weight_decay))
    ds = data_lib.fixed_pipeline(tf.data.Dataset.from_tensor_slices(v_train).shuffle(len(v_train), seed=cfg.seed)
                                 .batch(cfg.batch_size, drop_remainder=True).prefetch(2))
    val = data_lib.fixed_pipeline(tf.data.Dataset.from_tensor_slices(v_test).batch(500))
    callbacks = [PseudoLikelihood(v_train, v_test, cfg.seed)] + ([history] if history else [])
    if run is not None:
        callbacks.append(MlflowEpochLogger(run, images_fn=(lambda: images_fn(rbm)) if images_fn else None,
                                           folder=f"{label}_{images_folder}"))
    rbm.fit(ds, epochs=cfg.epochs, validation_data=val, callbacks=callbacks, verbose=verbose, shuffle=False)
    rbm.base_rate.assign(np.clip(np.mean(v_train, axis=0), 1e-3, 1 - 1e-3))  # generation's random starts
    return rbm


def fit_model(params: Params, v_train, v_test, history=None, run=None, verbose: int = 0):
    """The ``model.family`` model trained on binary digits: an RBM as ``rbm`` says, or a DBN
    (that RBM, then the ``dbn`` RBM greedily on draws of its hidden units given the data)."""
    import tensorflow as tf

    from ebm.dbn.model import DBN
    from ebm.rbm.model import bernoulli

    if history is not None:
        history.tags = {"layer": 1}
    bottom = fit_layer(params.rbm, VISIBLE, v_train, v_test, history, run, verbose, "rbm",
                       images_fn=lambda m: filter_images(m.w.numpy()))
    if params.model.family != "dbn":
        return bottom
    d = params.dbn
    rng = tf.random.Generator.from_seed(d.seed)
    h_train, h_test = bernoulli(bottom.hidden_probs(v_train), rng), bernoulli(bottom.hidden_probs(v_test), rng)
    if history is not None:
        history.tags, history.offset = {"layer": 2}, params.rbm.epochs
    top = fit_layer(d, params.rbm.hidden, h_train, h_test, history, run, verbose, "dbn",
                    images_fn=lambda m: to_images(bottom.visible_probs(m.particles).numpy()[:64]),
                    images_folder="particles")
    model = DBN(bottom=_config(bottom), top=_config(top))
    model.bottom.set_weights(bottom.get_weights())
    model.top.set_weights(top.get_weights())
    return model


def fantasy_particles(model) -> np.ndarray:
    """The PCD particles as images: mean-field reconstructions (RBM) or down-passed (DBN)."""
    if model.family == "dbn":
        return to_images(model.down(model.top.particles))
    return to_images(model.visible_probs(model.hidden_probs(model.particles)).numpy())


def train(params: Params, paths, verbose: int | None = None) -> dict:
    """Train the ``rbm``, or the two layers of the ``dbn`` (greedily), and save the model."""
    from ebm.callbacks import HistoryCSV, save_model_atomic
    from ebm.plots import save_grid
    from ebm.runtime import configure_threads
    from ebm.tracking import stage_run

    family = params.model.family
    threads = configure_threads(params.train)
    v_train, v_test = binary_splits(params, paths.data)
    verbose = (1 if sys.stdout.isatty() else 2) if verbose is None else verbose
    section = {"family": family, "rbm": asdict(params.rbm), **({"dbn": asdict(params.dbn)} if family == "dbn" else {})}
    with stage_run("train", params, section, paths.record, upstream=("prepare",)) as run:
        run.datasets(data_lib.input_datasets(params.data, paths.data, training="train", validation="test"))
        start = time.perf_counter()
        model = fit_model(params, v_train, v_test, HistoryCSV(paths.history), run, verbose)
        seconds = time.perf_counter() - start
        save_model_atomic(model, paths.model)
        save_grid(fantasy_particles(model)[:64], paths.negatives)
        save_grid(filter_images((model.bottom if family == "dbn" else model).w.numpy()), paths.filters)
        for path in (paths.history, paths.negatives, paths.filters):
            run.artifact(path)
        run.artifact(paths.model, "checkpoint")
        epochs = params.rbm.epochs + (params.dbn.epochs if family == "dbn" else 0)
        summary = {"train_seconds": seconds, "seconds_per_epoch": seconds / epochs, **threads}
        run.metrics(summary)
    print(f"train: {family} in {seconds:.0f} s ({seconds / epochs:.2f} s/epoch) -> {paths.model}")
    return summary


def _config(rbm) -> dict:
    return {k: v for k, v in rbm.get_config().items() if k != "name"}


# -- generate


def generate(params: Params, paths, model, run) -> dict:
    """Block Gibbs chains from random bits; the same outputs as the deep EBM's generate stage."""
    import pandas as pd

    from ebm.plots import save_chain_figure, save_chain_health, save_gif, save_grid

    g = params.generate
    steps = g.gibbs_steps
    gif_steps = set(range(0, steps + 1, g.gif_every)) | {steps}
    shown = sorted({s for s in g.snapshot_steps if s <= steps} | {steps})
    start = time.perf_counter()
    p, snaps, energies = model.sample(g.n, steps, record_at=sorted(gif_steps | set(shown)), seed=g.seed,
                                      record_first=g.chains_shown)
    seconds = time.perf_counter() - start
    samples = to_images(p)
    snaps = {s: to_images(x) for s, x in snaps.items()}
    marks = sorted(energies)
    health = pd.DataFrame({"step": marks, "energy_mean": [float(np.mean(energies[s])) for s in marks],
                           "energy_std": [float(np.std(energies[s])) for s in marks]})
    paths.samples.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(paths.samples, samples=samples, snapshot_steps=np.array(shown),
                        snapshots=np.stack([snaps[s] for s in shown]))
    paths.health.parent.mkdir(parents=True, exist_ok=True)
    health.to_csv(paths.health, index=False)
    save_grid(samples[:100], paths.grid, ncols=10)
    what = "the top RBM's Gibbs chains, shown through the down-pass" if model.family == "dbn" else "Gibbs chains"
    save_chain_figure({s: snaps[s] for s in shown}, paths.chains, chains=g.chains_shown,
                      title=f"{model.family.upper()}: {what} from random starts (column = sweep; p(v | h) shown)")
    save_gif({s: snaps[s] for s in sorted(gif_steps)}, paths.gif)
    save_chain_health(health, paths.health_plot, xlabel="Gibbs sweep",
                      energy_label=f"free energy of the {'top RBM' if model.family == 'dbn' else 'RBM'} state")
    summary = {"generate_seconds": seconds, "energy_final_mean": float(health["energy_mean"].iloc[-1])}
    print(f"generate: {g.n} {model.family} samples x {steps} Gibbs sweeps in {seconds:.1f} s -> {paths.grid}")
    return summary


# -- evaluate


def scoring_functions(params: Params, model):
    """``energy(images)`` and ``longrun(samples) -> {longrun_factor: states}`` on 32x32 images, for
    :func:`ebm.evaluation.evaluate`."""
    e, g = params.evaluate, params.generate
    energy = lambda x: model.visible_energy(intensities(x))  # noqa: E731
    sweeps = g.gibbs_steps * (e.longrun_factor - 1)
    longrun = (lambda x: {e.longrun_factor: to_images(model.continue_chains(intensities(x), sweeps, e.seed))}) \
        if e.longrun_factor > 1 else None
    return energy, longrun


def likelihood(params: Params, model, data_dir: Path) -> dict:
    """Average log-likelihoods of the binarised train and test digits in nats, by AIS: exact in
    expectation for the RBM (``log p(v) = -F(v) - log Z``), a variational lower bound for the DBN
    (AIS on its top RBM)."""
    import tensorflow as tf

    from ebm.rbm.ais import ais_log_partition, average_log_likelihood, base_rate_biases

    e = params.evaluate
    v_train, v_test = binary_splits(params, data_dir)
    rbm = model.top if model.family == "dbn" else model
    if model.family == "dbn":  # the top RBM's data: h1 drawn given each training digit
        q = model.bottom.hidden_probs(v_train).numpy()
        base_data = (np.random.default_rng(e.seed).uniform(size=q.shape) < q).astype(np.float32)
    else:
        base_data = v_train
    start = time.perf_counter()
    ais = ais_log_partition(rbm.w.numpy(), rbm.b.numpy(), rbm.c.numpy(), base_rate_biases(base_data),
                            runs=e.ais_runs, betas=e.ais_betas, seed=e.seed)
    seconds = time.perf_counter() - start
    if model.family == "dbn":
        test_ll = float(np.mean(model.log_likelihood_bound(v_test, ais.log_z, e.bound_samples, e.seed)))
        train_ll = float(np.mean(model.log_likelihood_bound(v_train, ais.log_z, e.bound_samples, e.seed)))
    else:
        f = lambda v: rbm.free_energy(tf.constant(v)).numpy()  # noqa: E731
        test_ll, train_ll = average_log_likelihood(f(v_test), ais.log_z), average_log_likelihood(f(v_train), ais.log_z)
    out = {"test_loglik": test_ll, "train_loglik": train_ll, "log_z": ais.log_z, "log_z_se": ais.log_z_se,
           "log_z_low": ais.log_z_low, "log_z_high": ais.log_z_high, "ais_runs": float(ais.runs), "ais_seconds": seconds}
    if not np.isfinite(ais.log_z_low):  # 3 sigma exceeds the estimate: no lower end (JSON has no -inf)
        del out["log_z_low"]
    return out


def likelihood_paragraphs(params: Params, model, metrics: dict) -> list[str]:
    """The family section of the report: what the likelihood numbers mean."""
    e = params.evaluate
    what = ("a lower bound (Salakhutdinov &amp; Murray 2008, eq. 20) on the average log-probability, with "
            f"{e.bound_samples} posterior draws per digit and log Z of the top RBM by AIS"
            if model.family == "dbn" else "the average log-probability -F(v) - log Z, with log Z by AIS")
    if "log_z_low" in metrics:
        spread = f"log(Z &plusmn; 3&sigma;) in [{metrics['log_z_low']:.2f}, {metrics['log_z_high']:.2f}]"
    else:
        spread = f"3&sigma; exceeds the estimate, so only log(Z + 3&sigma;) = {metrics['log_z_high']:.2f} is defined"
    return [f"<p>Test log-likelihood <b>{metrics['test_loglik']:.2f} nats</b> per digit (train "
            f"{metrics['train_loglik']:.2f}): {what}. log Z = {metrics['log_z']:.2f} (standard error "
            f"{metrics['log_z_se']:.3f}; {spread}) from {e.ais_runs} AIS runs of {e.ais_betas} inverse temperatures "
            f"from the base-rate model. Digits binarised by <code>rbm.binarize={params.rbm.binarize}</code>.</p>"]
