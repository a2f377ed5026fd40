"""ebm: deep energy-based models on handwritten digits.

Library modules, one job each: ``config`` (params), ``data``, ``network`` (E(x)), ``sampler``
(Langevin), ``buffer`` (replay), ``losses``, ``model`` (contrastive divergence), ``callbacks``,
``plots``, ``tracking`` (MLflow), ``pipeline`` (the DVC stages), ``cli`` (the ``ebm`` command).
"""

__version__ = "0.1.0"
