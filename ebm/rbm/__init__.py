"""The restricted Boltzmann machine family: Bernoulli-Bernoulli RBM, block Gibbs sampling, AIS.

Energy convention as for the deep EBM: low energy = data. ``E(v, h) = -b.v - c.h - v.W.h`` and the
free energy ``F(v) = -log sum_h exp(-E(v, h))``, so ``p(v) = exp(-F(v)) / Z``.
"""

from ebm.rbm.model import RBM, free_energy, pseudo_likelihood

__all__ = ["RBM", "free_energy", "pseudo_likelihood"]
