"""The model families behind one interface, found by name in one registry.

Each family is a folder here whose ``family`` module defines ``FAMILY``, an object with the
surface the stages use (:class:`Family`); a stage asks the registry for the family that
``model.family`` names, or that a model file holds, and never branches on a name. Adding a
family: its folder, one line in :data:`REGISTRY`, its section in ``params.yaml``.

Energy sign convention, the same for every family: **low energy = looks like data**.
"""

from __future__ import annotations

import importlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from ebm.errors import ModelFileError, first_line

REGISTRY = {  # model.family -> the module defining FAMILY
    "deep": "ebm.families.deep.family",
    "rbm": "ebm.families.rbm.family",
    "dbn": "ebm.families.dbn.family",
}
LENGTH_KEYS = {  # model.family -> the params key of its generation length (read by config, which imports no family)
    "deep": "sampler.steps",
    "rbm": "generate.gibbs_steps",
    "dbn": "generate.gibbs_steps",
}
RENAMED = {"ebm": "deep"}  # old name -> new name, for a clear error


@dataclass
class Scoring:
    """What the evaluate stage needs of a trained model: ``energy(images) -> (N,)`` on 32x32
    images in [-1, 1]; ``longrun(samples) -> {multiple: states}`` (None: no long-run check);
    family metrics (likelihoods) and the report paragraphs that explain them."""

    energy: Callable
    longrun: Callable | None = None
    metrics: dict = field(default_factory=dict)
    paragraphs: list = field(default_factory=list)


class Family(Protocol):
    name: str
    title: str  # the report's title
    section: str  # the report's heading for the family's own numbers ("" = none)
    chains_heading: str  # "Langevin chains" / "Gibbs chains"
    objective: tuple[str, str]  # the history's columns of the training objective: (training, held out)
    negatives_caption: str  # what reports/train/negatives.png shows
    filters_caption: str  # what reports/train/filters.png shows

    def configure(self, params) -> dict: ...  # thread pools, before TensorFlow runs: the settings used
    def train(self, params, paths, verbose: int | None = None) -> dict: ...  # the run's summary; "outputs":
    # False from a process that trained without writing the stage's outputs (a non-chief worker)
    def generate(self, params, paths, model, run) -> dict: ...  # writes the generate stage's outputs
    def sample(self, params, model, n: int, seed: int): ...  # n samples (N, 32, 32, 1) in [-1, 1]
    def scoring(self, params, model, data_dir: Path) -> Scoring: ...
    def energy(self, model) -> Callable: ...  # images (N, 32, 32, 1) in [-1, 1] -> energies (N,), cheap
    def complete(self, params, model, observed, hidden, steps: int, seed: int): ...  # the hidden pixels filled
    def unit(self, params) -> int: ...  # the generation length, the long-run curve's unit
    def unit_name(self, sampler: bool = False) -> str: ...  # "steps" / "Langevin steps", "sweeps" / ...
    def sampler_line(self, params) -> str: ...  # the report's one-line description of the sampler
    def owns(self, model) -> bool: ...  # whether a loaded model file is this family's
    def register(self) -> None: ...  # import the Keras classes its model files hold


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get(name: str) -> Family:
    """The family registered as ``name``."""
    if name not in REGISTRY:
        raise KeyError(f"unknown model family {name!r}; the families are {', '.join(REGISTRY)}")
    return importlib.import_module(REGISTRY[name]).FAMILY


def io_shapes(model) -> tuple[list, list]:
    """The shapes (without the batch axis) of a Keras model's inputs and outputs."""
    inputs, outputs = getattr(model, "inputs", None) or [], getattr(model, "outputs", None) or []
    return [tuple(t.shape[1:]) for t in inputs], [tuple(t.shape[1:]) for t in outputs]


def register_all() -> None:
    """Import every family's Keras classes, so that a model file (or an MLflow model) loads."""
    for name in REGISTRY:
        get(name).register()


def family_of(model, path: str | Path = "the model") -> Family:
    """The family whose model ``model`` (a loaded model file) is."""
    for name in REGISTRY:
        if get(name).owns(model):
            return get(name)
    shapes = io_shapes(model)
    raise ModelFileError(f"model file {path} is not an energy model of any family ({', '.join(REGISTRY)}): it maps "
                         f"{shapes[0]} to {shapes[1]}, an energy network maps [(32, 32, 1)] to [(1,)] (is it the "
                         "classifier, or from another version?)")


def load_model_file(path: str | Path, missing_hint: str = "run the train stage (dvc repro train)"):
    """Load a ``.keras`` file written by a stage, with a clear error if it is missing or bad
    (every family's classes registered first)."""
    import keras

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} not found: {missing_hint}")
    register_all()
    try:
        return keras.saving.load_model(path, compile=False)
    except (OSError, ValueError, zipfile.BadZipFile, KeyError, TypeError) as err:
        raise ModelFileError(f"model file {path} could not be loaded ({type(err).__name__}: "
                             f"{first_line(err, 300)})") from err


OTHER_MODELS = {"TemperedMean": "the classifier stage's judge (models/classifier.keras)"}  # a class -> what holds it


def _known_other_model(path: Path) -> str | None:
    """What a ``.keras`` file is when its config names a class of a model of this project that
    is not an energy model (the classifier), else None (also for files that are no zip)."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = archive.read("config.json").decode("utf-8", "replace")
    except (OSError, KeyError, zipfile.BadZipFile):
        return None
    return next((what for name, what in OTHER_MODELS.items() if f'"{name}"' in config), None)


def load_model(path: str | Path):
    """The model file written by the train stage and its family: ``(family, model)``."""
    if (other := _known_other_model(Path(path))) is not None:
        raise ModelFileError(f"model file {path} is {other}, not an energy model: give the train stage's model "
                             f"(models/<model.family>/energy.keras)")
    model = load_model_file(path)
    return family_of(model, path), model
