"""The deep EBM family (``model.family: deep``): a Keras energy network E(x) (``network``)
trained by contrastive divergence (``model``, ``losses``, ``train``) with Langevin negatives
(``sampler``) from a replay buffer (``buffer``); resumable (``resume``), distributable
(``distribute``); the fused CPU kernels in ``native``. ``family`` is its face to the stages.
"""
