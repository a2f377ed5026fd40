"""The DBN behind the family interface: the ``rbm`` section's RBM, then the ``dbn`` section's RBM
trained greedily on draws of its hidden units (Hinton et al. 2006); sampled by Gibbs in the top
RBM and a down-pass; its likelihood a variational lower bound (Salakhutdinov & Murray 2008)."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from ebm.config import Params
from ebm.families.rbm.data import to_images
from ebm.families.rbm.family import RBMFamily, _config, fit_layer


class DBNFamily(RBMFamily):
    name = "dbn"
    title = "DBN experiment report"
    section = "DBN: likelihood"
    chains_what = "the top RBM's Gibbs chains, shown through the down-pass"
    energy_label = "free energy of the top RBM state"

    def register(self) -> None:
        from ebm.families.dbn import model  # noqa: F401  (DBN, which holds RBMs)

    def epochs(self, params: Params) -> int:
        return params.rbm.epochs + params.dbn.epochs

    def section_params(self, params: Params) -> dict:
        return {**super().section_params(params), "dbn": asdict(params.dbn)}

    def fit(self, params: Params, v_train, v_test, history=None, run=None, verbose: int = 0):
        """The ``rbm`` RBM, then the ``dbn`` RBM on draws of its hidden units given the data."""
        import tensorflow as tf

        from ebm.families.dbn.model import DBN
        from ebm.families.rbm.model import bernoulli

        bottom = super().fit(params, v_train, v_test, history, run, verbose)
        d = params.dbn
        rng = tf.random.Generator.from_seed(d.seed)
        h_train, h_test = bernoulli(bottom.hidden_probs(v_train), rng), bernoulli(bottom.hidden_probs(v_test), rng)
        if history is not None:
            history.tags, history.offset = {"layer": 2}, params.rbm.epochs
        top = fit_layer(d, params.rbm.hidden, h_train, h_test, history, run, verbose, "dbn",
                        images_fn=lambda m: to_images(bottom.visible_probs(m.particles).numpy()[:64]),
                        images_key="particles")
        model = DBN(bottom=_config(bottom), top=_config(top))
        model.bottom.set_weights(bottom.get_weights())
        model.top.set_weights(top.get_weights())
        return model

    def fantasy_particles(self, model) -> np.ndarray:
        """The top RBM's PCD particles, down-passed."""
        return to_images(model.down(model.top.particles))

    def first_layer(self, model):
        return model.bottom

    def ais_model(self, model):
        return model.top

    def ais_base_data(self, params: Params, model, v_train):
        """The top RBM's data: h1 drawn given each training digit."""
        q = model.bottom.hidden_probs(v_train).numpy()
        return (np.random.default_rng(params.evaluate.seed).uniform(size=q.shape) < q).astype(np.float32)

    def average_log_likelihoods(self, params: Params, model, v_train, v_test, log_z: float):
        e = params.evaluate
        return (float(np.mean(model.log_likelihood_bound(v_test, log_z, e.bound_samples, e.seed))),
                float(np.mean(model.log_likelihood_bound(v_train, log_z, e.bound_samples, e.seed))))

    def likelihood_what(self, params: Params) -> str:
        return ("a lower bound (Salakhutdinov &amp; Murray 2008, eq. 20) on the average log-probability, with "
                f"{params.evaluate.bound_samples} posterior draws per digit and log Z of the top RBM by AIS")


FAMILY = DBNFamily()
