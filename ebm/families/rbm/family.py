"""The RBM behind the family interface (:class:`ebm.families.Family`), and the RBM layers the DBN
family stacks. The outputs are the ones the deep EBM writes, so the classifier, the evaluation
metrics, the report and ``ebm compare`` serve every family.

Models work on 784 binary visible units (28x28, binarised once by ``rbm.binarize``); samples
and snapshots go back to 32x32 images in [-1, 1] (:func:`ebm.families.rbm.data.to_images`), showing the
visible probabilities ``p(v = 1 | h)`` of the last sweep.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ebm import data as data_lib
from ebm.config import BoltzmannTraining, ConfigError, Params
from ebm.families import Scoring
from ebm.families.rbm.data import VISIBLE, binarize, intensities, to_images


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
              label: str = "rbm", images_fn=None, images_key: str = "filters"):
    """Build and fit one RBM layer on binary data. Per-epoch metrics (with pseudo-likelihoods)
    go to the ``history`` callback and the MLflow ``run`` when given."""
    import keras
    import tensorflow as tf

    from ebm.callbacks import MlflowEpochLogger
    from ebm.families.rbm.callbacks import PseudoLikelihood
    from ebm.families.rbm.model import RBM, sgd

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
                                           key=f"{label}_{images_key}"))
    rbm.fit(ds, epochs=cfg.epochs, validation_data=val, callbacks=callbacks, verbose=verbose, shuffle=False)
    rbm.base_rate.assign(np.clip(np.mean(v_train, axis=0), 1e-3, 1 - 1e-3))  # generation's random starts
    return rbm


def _config(rbm) -> dict:
    return {k: v for k, v in rbm.get_config().items() if k != "name"}


class RBMFamily:
    """``model.family: rbm``. :class:`ebm.families.dbn.family.DBNFamily` overrides the hooks
    marked so (the model it fits, the RBM whose likelihood it estimates, the words it uses)."""

    name = "rbm"
    title = "RBM experiment report"
    section = "RBM: likelihood"
    chains_heading = "Gibbs chains"
    objective = ("pseudo_likelihood", "val_pseudo_likelihood")
    negatives_caption = "The PCD fantasy particles (visible probabilities)"
    filters_caption = "Weights of the first 64 hidden units of the first RBM"
    chains_what = "Gibbs chains"
    energy_label = "free energy of the RBM state"

    def owns(self, model) -> bool:
        return getattr(model, "family", None) == self.name

    def register(self) -> None:
        """Import the classes a model file of this family holds, for Keras to load it."""
        from ebm.families.rbm import model  # noqa: F401

    def configure(self, params: Params) -> dict:
        from ebm.runtime import set_threads

        t = params.train
        return {**set_threads(t.intra_op_threads or os.cpu_count() or 1, t.inter_op_threads), "kernels": "tf-ops"}

    # -- train

    def epochs(self, params: Params) -> int:  # hook
        return params.rbm.epochs

    def section_params(self, params: Params) -> dict:  # hook: the params logged with the train run
        return {"family": self.name, "rbm": asdict(params.rbm)}

    def fit(self, params: Params, v_train, v_test, history=None, run=None, verbose: int = 0):  # hook
        """An RBM as the ``rbm`` section says, on binary digits."""
        if history is not None:
            history.tags = {"layer": 1}
        return fit_layer(params.rbm, VISIBLE, v_train, v_test, history, run, verbose, "rbm",
                         images_fn=lambda m: filter_images(m.w.numpy()))

    def fantasy_particles(self, model) -> np.ndarray:  # hook
        """The PCD particles as images: mean-field reconstructions."""
        return to_images(model.visible_probs(model.hidden_probs(model.particles)).numpy())

    def first_layer(self, model):  # hook
        return model

    def train(self, params: Params, paths, verbose: int | None = None) -> dict:
        """Train and save the model, its fantasy particles and first-layer filters."""
        from ebm.callbacks import HistoryCSV
        from ebm.io import save_model_atomic
        from ebm.plots import save_grid
        from ebm.tracking import stage_run

        threads = self.configure(params)
        kernels = threads.pop("kernels")
        v_train, v_test = binary_splits(params, paths.data)
        verbose = (1 if sys.stdout.isatty() else 2) if verbose is None else verbose
        with stage_run("train", params, self.section_params(params), paths.record, upstream=("prepare",),
                       tags={"ebm.kernels": kernels}) as run:
            run.datasets(data_lib.input_datasets(params.data, paths.data, training="train", validation="test"))
            start = time.perf_counter()
            model = self.fit(params, v_train, v_test, HistoryCSV(paths.history), run, verbose)
            seconds = time.perf_counter() - start
            save_model_atomic(model, paths.model)
            save_grid(self.fantasy_particles(model)[:64], paths.negatives)
            save_grid(filter_images(self.first_layer(model).w.numpy()), paths.filters)
            for path in (paths.history, paths.negatives, paths.filters):
                run.artifact(path)
            run.artifact(paths.model, "checkpoint")
            summary = {"train_seconds": seconds, "seconds_per_epoch": seconds / self.epochs(params), **threads}
            run.metrics(summary)
        snapshots = paths.snapshot_folder  # a DVC output of the stage: kept empty
        shutil.rmtree(snapshots, ignore_errors=True)
        snapshots.mkdir(parents=True)
        print(f"train: {self.name} in {seconds:.0f} s ({seconds / self.epochs(params):.2f} s/epoch) -> {paths.model}")
        return {**summary, "kernels": kernels}

    # -- generate

    def sample(self, params: Params, model, n: int, seed: int) -> np.ndarray:
        p, _, _ = model.sample(n, params.generate.gibbs_steps, seed=seed)
        return to_images(p)

    def generate(self, params: Params, paths, model, run) -> dict:
        """Block Gibbs chains from random bits; the same outputs as the deep EBM's generate stage."""
        import pandas as pd

        from ebm.io import save_npz_atomic, write_csv_atomic
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
        save_npz_atomic(paths.samples, samples=samples, snapshot_steps=np.array(shown),
                        snapshots=np.stack([snaps[s] for s in shown]))
        write_csv_atomic(paths.health, health)
        save_grid(samples[:100], paths.grid, ncols=10)
        save_chain_figure({s: snaps[s] for s in shown}, paths.chains, chains=g.chains_shown,
                          title=f"{self.name.upper()}: {self.chains_what} from random starts (column = sweep; "
                                "p(v | h) shown)")
        save_gif({s: snaps[s] for s in sorted(gif_steps)}, paths.gif)
        save_chain_health(health, paths.health_plot, xlabel="Gibbs sweep", energy_label=self.energy_label)
        print(f"generate: {g.n} {self.name} samples x {steps} Gibbs sweeps in {seconds:.1f} s -> {paths.grid}")
        return {"generate_seconds": seconds, "energy_final_mean": float(health["energy_mean"].iloc[-1])}

    # -- evaluate

    def scoring(self, params: Params, model, data_dir: Path) -> Scoring:
        """The visible energy on 32x32 images, the long run (the Gibbs chains continued), and the
        log-likelihoods by AIS."""
        e, g = params.evaluate, params.generate
        energy = self.energy(model)
        sweeps = g.gibbs_steps * (e.longrun_factor - 1)
        longrun = (lambda x: {e.longrun_factor: to_images(model.continue_chains(intensities(x), sweeps, e.seed))}) \
            if e.longrun_factor > 1 else None
        metrics = self.likelihood(params, model, data_dir)
        return Scoring(energy, longrun, metrics, self.likelihood_paragraphs(params, metrics))

    def complete(self, params: Params, model, observed: np.ndarray, hidden: np.ndarray, steps: int,
                 seed: int) -> np.ndarray:
        """Fill the ``hidden`` pixels by ``steps`` block Gibbs sweeps with the observed visible
        units clamped to their intensities (the hidden ones start from the data's marginals)."""
        from ebm.families.rbm.model import gibbs_chain

        if not hasattr(model, "w"):
            raise ValueError(f"completion is not supported for the {self.name} family yet (its visible units are "
                             "reached through a down-pass): complete with an rbm or deep model")
        v_obs = intensities(observed)
        mask = intensities(np.where(np.broadcast_to(hidden, observed.shape), 1.0, -1.0)) > 0.5
        v0 = np.where(mask, model.random_starts(len(v_obs), seed), v_obs).astype(np.float32)
        _, p, _ = gibbs_chain(model.w, model.b, model.c, v0, steps, seed=seed, clamp=(mask, v_obs))
        return to_images(np.where(mask, p, v_obs))

    def energy(self, model):
        """The free energy of the visible units, on the digits' intensities in [0, 1]."""
        return lambda x: model.visible_energy(intensities(x))

    def ais_model(self, model):  # hook: the RBM whose log Z AIS estimates
        return model

    def ais_base_data(self, params: Params, model, v_train):  # hook: the data of that RBM's visible units
        return v_train

    def average_log_likelihoods(self, params: Params, model, v_train, v_test, log_z: float):  # hook
        """Test and train: exact in expectation, ``log p(v) = -F(v) - log Z``."""
        import tensorflow as tf

        from ebm.families.rbm.ais import average_log_likelihood

        f = lambda v: model.free_energy(tf.constant(v)).numpy()  # noqa: E731
        return average_log_likelihood(f(v_test), log_z), average_log_likelihood(f(v_train), log_z)

    def likelihood_what(self, params: Params) -> str:  # hook: what test_loglik is
        return "the average log-probability -F(v) - log Z, with log Z by AIS"

    def likelihood(self, params: Params, model, data_dir: Path) -> dict:
        """Average log-likelihoods of the binarised train and test digits in nats, by AIS."""
        from ebm.families.rbm.ais import ais_log_partition, base_rate_biases

        e = params.evaluate
        v_train, v_test = binary_splits(params, data_dir)
        rbm = self.ais_model(model)
        start = time.perf_counter()
        ais = ais_log_partition(rbm.w.numpy(), rbm.b.numpy(), rbm.c.numpy(),
                                base_rate_biases(self.ais_base_data(params, model, v_train)),
                                runs=e.ais_runs, betas=e.ais_betas, seed=e.seed)
        seconds = time.perf_counter() - start
        test_ll, train_ll = self.average_log_likelihoods(params, model, v_train, v_test, ais.log_z)
        out = {"test_loglik": test_ll, "train_loglik": train_ll, "log_z": ais.log_z, "log_z_se": ais.log_z_se,
               "log_z_low": ais.log_z_low, "log_z_high": ais.log_z_high, "ais_runs": float(ais.runs),
               "ais_seconds": seconds}
        if not np.isfinite(ais.log_z_low):  # 3 sigma exceeds the estimate: no lower end (JSON has no -inf)
            del out["log_z_low"]
        return out

    def likelihood_paragraphs(self, params: Params, metrics: dict) -> list[str]:
        """The family section of the report: what the likelihood numbers mean."""
        e = params.evaluate
        if "log_z_low" in metrics:
            spread = f"log(Z &plusmn; 3&sigma;) in [{metrics['log_z_low']:.2f}, {metrics['log_z_high']:.2f}]"
        else:
            spread = f"3&sigma; exceeds the estimate, so only log(Z + 3&sigma;) = {metrics['log_z_high']:.2f} is defined"
        return [f"<p>Test log-likelihood <b>{metrics['test_loglik']:.2f} nats</b> per digit (train "
                f"{metrics['train_loglik']:.2f}): {self.likelihood_what(params)}. log Z = {metrics['log_z']:.2f} (standard "
                f"error {metrics['log_z_se']:.3f}; {spread}) from {e.ais_runs} AIS runs of {e.ais_betas} inverse "
                f"temperatures from the base-rate model. Digits binarised by "
                f"<code>rbm.binarize={params.rbm.binarize}</code>.</p>"]

    def unit(self, params: Params) -> int:
        return params.generate.gibbs_steps

    def unit_name(self, sampler: bool = False) -> str:
        return "Gibbs sweeps" if sampler else "sweeps"

    def sampler_line(self, params: Params) -> str:
        return f"{params.generate.gibbs_steps} block Gibbs sweeps"


FAMILY = RBMFamily()
