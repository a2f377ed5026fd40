"""The DVC stages as library functions ``stage(params, paths)``, family-agnostic: each asks
:mod:`ebm.families` for the family it needs, writes its outputs and logs one MLflow run. The
scripts in ``stages/`` only parse arguments and call these.
"""

from ebm.pipeline.classify import classifier
from ebm.pipeline.evaluate import evaluate
from ebm.pipeline.generate import generate, load_samples
from ebm.pipeline.paths import (ClassifierPaths, EvaluatePaths, GeneratePaths, PreparePaths,  # noqa: F401
                                TrainPaths)
from ebm.pipeline.prepare import prepare
from ebm.pipeline.train import train

__all__ = ["prepare", "train", "classifier", "generate", "evaluate", "load_samples"]
