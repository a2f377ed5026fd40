"""The restricted Boltzmann machine family (``model.family: rbm``): Bernoulli-Bernoulli RBM, block
Gibbs sampling, AIS. ``model`` (the RBM), ``gibbs``, ``ais``, ``data`` (binary units), ``family``.

Energy convention as for the deep EBM: low energy = data. ``E(v, h) = -b.v - c.h - v.W.h`` and the
free energy ``F(v) = -log sum_h exp(-E(v, h))``, so ``p(v) = exp(-F(v)) / Z``.
"""
