"""Configuration: one frozen dataclass per ``params.yaml`` section, parsed once at the edge.

Every knob of the pipeline lives in ``params.yaml``. Stages and CLI commands call
:func:`load_params` and pass the resulting dataclasses down; library code never reads the file.
A wrong value raises :class:`ConfigError` naming the offending key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

DATA_SOURCES = ("mnist5k", "mnist", "npz")
BINARIZE = ("stochastic", "threshold")
MAX_SEED = 2**32 - 1
PRUNED = ("train.kl_weight", "train.kl_repel", "train.kl_compare", "train.class_balance", "train.buffer_shift",
          "train.persistent_restart", "train.native_update")  # leads measured and not adopted: docs/experiments.md
MIN_SPLIT = 20  # digits a cut split keeps at least: two of each class (the judge's corruptions blend two classes)


class ConfigError(ValueError):
    """A value in params.yaml is missing, of the wrong type or out of range."""

    def __init__(self, key: str, detail: str):
        super().__init__(f"params: {key} {detail}")
        self.key, self.detail = key, detail


@dataclass(frozen=True)
class DataConfig:
    source: str = "mnist5k"
    npz_path: str | None = None
    test_fraction: float = 0.1
    seed: int = 0
    max_train: int = 0  # keep at most this many training digits (0 = all): quick runs
    max_test: int = 0   # ... and test digits

    def __post_init__(self):
        for key, n in (("max_train", self.max_train), ("max_test", self.max_test)):
            _check(n == 0 or n >= MIN_SPLIT, key, f"must be 0 (all) or >= {MIN_SPLIT} (two digits of each class); got {n}")
        _check(self.source in DATA_SOURCES, "source", f"must be one of {', '.join(DATA_SOURCES)}; got {self.source!r}")
        _check(self.source != "npz" or bool(self.npz_path), "npz_path", "is required when data.source=npz")
        _check(0.0 < self.test_fraction < 1.0, "test_fraction", f"must be in (0, 1); got {self.test_fraction}")


@dataclass(frozen=True)
class ModelConfig:
    """The model family (``deep``: the deep EBM, whose network the other keys shape; ``rbm`` and
    ``dbn``: see the ``rbm`` and ``dbn`` sections). The network: strided Conv2D stack with swish,
    then a dense head to one scalar."""

    family: str = "deep"
    filters: tuple[int, ...] = (16, 32, 64, 64)
    kernel_sizes: tuple[int, ...] = (5, 3, 3, 3)
    dense_units: int = 64
    fast_first_conv: bool = True

    def __post_init__(self):
        from ebm import families

        _check(self.family not in families.RENAMED, "family",
               f"{self.family!r} is now called {families.RENAMED.get(self.family)!r}: set model.family: "
               f"{families.RENAMED.get(self.family)}")
        _check(self.family in families.names(), "family",
               f"must be one of {', '.join(families.names())}; got {self.family!r}")
        _check(len(self.filters) > 0 and all(f > 0 for f in self.filters), "filters", "must be a non-empty list of positive ints")
        _check(len(self.kernel_sizes) == len(self.filters), "kernel_sizes", "must have one entry per filter")
        _check(all(k > 0 for k in self.kernel_sizes), "kernel_sizes", "must be positive")
        _check(self.dense_units > 0, "dense_units", "must be positive")


@dataclass(frozen=True)
class SamplerConfig:
    """Langevin dynamics: per step add N(0, noise), clip, step downhill on the clipped gradient."""

    steps: int = 375
    step_size: float = 10.0
    noise: float = 0.005
    grad_clip: float = 0.03

    def __post_init__(self):
        _check(self.steps >= 1, "steps", f"must be >= 1; got {self.steps}")
        _check(self.step_size > 0, "step_size", f"must be > 0; got {self.step_size}")
        _check(self.noise >= 0, "noise", f"must be >= 0; got {self.noise}")
        _check(self.grad_clip > 0, "grad_clip", f"must be > 0; got {self.grad_clip}")


@dataclass(frozen=True)
class TrainConfig:
    """The deep family's training: contrastive divergence with replay-buffer Langevin negatives.
    Defaults are ``params.yaml``'s recipe (a test holds them equal); the reference setup of
    Du & Mordatch (2019) is in ``docs/results.md``."""

    epochs: int = 175
    batch_size: int = 64
    learning_rate: float = 9e-4
    lr_schedule: str = "cosine"  # constant | cosine (to lr_min_fraction x learning_rate at the last step)
    lr_min_fraction: float = 0.1
    beta_1: float = 0.0
    alpha: float = 0.003
    real_noise: float = 0.005
    buffer_size: int = 8192
    fresh_fraction: float = 0.05
    persistent_chains: int = 512  # PCD chains kept beside the ring buffer from persistent_start on (0 = none)
    persistent_share: float = 0.25  # ... the share of each batch's negatives they make
    # ... joining after this many epochs (0 = from the start; -k: k epochs before the end); before, their rows replay the ring
    persistent_from: int = -35
    seed: int = 0
    sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(steps=20))
    sampler_splits: int = 0
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    max_abs_energy: float = 1e4
    max_abs_cdiv: float = 5.0
    max_epoch_cdiv: float = 0.05  # an epoch whose mean |cdiv| rises above this is unhealthy
    on_divergence: str = "rollback"  # stop | rollback (to the last healthy epoch, at a lower rate)
    max_rollbacks: int = 3
    rollback_lr_factor: float = 0.5
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    monitor_every: int = 5
    monitor_n: int = 500
    snapshot_every: int = 0  # > 0: also keep the network to sample from every this many epochs (0 = none)
    strategy: str = "default"  # default | mirrored (all local GPUs / CPU devices) | multi_worker (TF_CONFIG)

    def __post_init__(self):
        _check(self.epochs >= 1, "epochs", f"must be >= 1; got {self.epochs}")
        _check(self.batch_size >= 2, "batch_size", f"must be >= 2; got {self.batch_size}")
        _check(self.learning_rate > 0, "learning_rate", f"must be > 0; got {self.learning_rate}")
        _check(self.lr_schedule in ("constant", "cosine"), "lr_schedule",
               f"must be constant or cosine; got {self.lr_schedule!r}")
        _check(0 <= self.lr_min_fraction <= 1, "lr_min_fraction", f"must be in [0, 1]; got {self.lr_min_fraction}")
        _check(0 <= self.beta_1 < 1, "beta_1", f"must be in [0, 1); got {self.beta_1}")
        _check(self.alpha >= 0, "alpha", f"must be >= 0; got {self.alpha}")
        _check(self.real_noise >= 0, "real_noise", f"must be >= 0; got {self.real_noise}")
        _check(self.buffer_size >= self.batch_size, "buffer_size", "must be >= batch_size")
        _check(0 <= self.fresh_fraction <= 1, "fresh_fraction", "must be in [0, 1]")
        _check(self.persistent_chains >= 0, "persistent_chains", f"must be >= 0 (0 = none); got {self.persistent_chains}")
        _check(0 < self.persistent_share < 1, "persistent_share", f"must be in (0, 1); got {self.persistent_share}")
        if self.persistent_chains:
            rows = self.persistent_rows(self.batch_size)
            _check(0 < rows < self.batch_size, "persistent_share",
                   f"{self.persistent_share} of batch_size {self.batch_size} gives {rows} rows; need 1 to batch_size - 1")
            _check(self.persistent_chains >= rows, "persistent_chains",
                   f"must be >= the persistent rows of each batch ({rows}); got {self.persistent_chains}")
        _check(self.persistent_from < max(self.epochs, 1), "persistent_from",
               f"must be an epoch before epochs = {self.epochs} (0 = from the start; -k: k epochs before the end); "
               f"got {self.persistent_from}")
        _check(self.sampler_splits >= 0, "sampler_splits", "must be >= 0 (0 = automatic)")
        _check(self.intra_op_threads >= 0, "intra_op_threads", "must be >= 0 (0 = automatic)")
        _check(self.inter_op_threads >= 0, "inter_op_threads", "must be >= 0 (0 = automatic)")
        _check(self.max_abs_energy > 0, "max_abs_energy", "must be > 0")
        _check(self.max_abs_cdiv > 0, "max_abs_cdiv", f"must be > 0; got {self.max_abs_cdiv}")
        _check(self.max_epoch_cdiv > 0, "max_epoch_cdiv", f"must be > 0; got {self.max_epoch_cdiv}")
        _check(self.weight_decay >= 0, "weight_decay", f"must be >= 0 (0 = none); got {self.weight_decay}")
        _check(self.on_divergence in ("stop", "rollback"), "on_divergence",
               f"must be stop or rollback; got {self.on_divergence!r}")
        _check(self.max_rollbacks >= 0, "max_rollbacks", f"must be >= 0; got {self.max_rollbacks}")
        _check(0 < self.rollback_lr_factor <= 1, "rollback_lr_factor",
               f"must be in (0, 1]; got {self.rollback_lr_factor}")
        _check(0 <= self.ema_decay < 1, "ema_decay", f"must be in [0, 1) (0 = no moving average); got {self.ema_decay}")
        _check(self.monitor_every >= 1, "monitor_every", f"must be >= 1; got {self.monitor_every}")
        _check(self.strategy in ("default", "mirrored", "multi_worker"), "strategy",
               f"must be default, mirrored or multi_worker; got {self.strategy!r}")
        _check(self.monitor_n >= 2, "monitor_n", f"must be >= 2; got {self.monitor_n}")
        _check(self.snapshot_every >= 0, "snapshot_every", f"must be >= 0 (0 = none); got {self.snapshot_every}")

    @property
    def persistent_start(self) -> int:
        """The epoch after which the persistent chains join: ``persistent_from``, counted from
        the end when negative (at least 0, so a run shorter than ``-persistent_from`` epochs has
        them from the start)."""
        return self.persistent_from if self.persistent_from >= 0 else max(0, self.epochs + self.persistent_from)

    def persistent_rows(self, batch: int) -> int:
        """Rows of a batch of ``batch`` negatives that come from the persistent chains."""
        return int(round(self.persistent_share * batch)) if self.persistent_chains else 0


@dataclass(frozen=True)
class BoltzmannTraining:
    """How one RBM layer trains: CD-``cd_k`` (``persistent: false``) or PCD with ``cd_k`` Gibbs
    sweeps per step, SGD with momentum, weight decay on the weights (not the biases)."""

    hidden: int = 500
    cd_k: int = 1
    persistent: bool = True
    learning_rate: float = 0.05
    momentum: float = 0.5
    weight_decay: float = 0.0002
    batch_size: int = 100
    epochs: int = 50
    seed: int = 0

    def __post_init__(self):
        _check(self.hidden >= 1, "hidden", f"must be >= 1; got {self.hidden}")
        _check(self.cd_k >= 1, "cd_k", f"must be >= 1 Gibbs sweep; got {self.cd_k}")
        _check(self.learning_rate > 0, "learning_rate", f"must be > 0; got {self.learning_rate}")
        _check(0 <= self.momentum < 1, "momentum", f"must be in [0, 1); got {self.momentum}")
        _check(self.weight_decay >= 0, "weight_decay", f"must be >= 0; got {self.weight_decay}")
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1; got {self.batch_size}")
        _check(self.epochs >= 1, "epochs", f"must be >= 1; got {self.epochs}")


@dataclass(frozen=True)
class RBMConfig(BoltzmannTraining):
    """``model.family: rbm`` (and the first layer of a DBN): a Bernoulli-Bernoulli RBM on the
    28x28 digits binarised once: ``stochastic`` (each pixel a Bernoulli draw of its intensity,
    seeded by ``seed``, as in the likelihood literature) or ``threshold`` (intensity > 0.5)."""

    binarize: str = "stochastic"

    def __post_init__(self):
        super().__post_init__()
        _check(self.binarize in BINARIZE, "binarize", f"must be one of {', '.join(BINARIZE)}; got {self.binarize!r}")


@dataclass(frozen=True)
class DBNConfig(BoltzmannTraining):
    """``model.family: dbn``: the top RBM, trained greedily on the hidden units of an RBM trained
    as the ``rbm`` section says."""

    seed: int = 1


@dataclass(frozen=True)
class GenerateConfig:
    n: int = 2000
    seed: int = 0
    snapshot_steps: tuple[int, ...] = (0, 1, 2, 5, 10, 20, 50, 100, 200, 375)
    chains_shown: int = 8
    gif_every: int = 10
    gibbs_steps: int = 1000  # rbm / dbn: block Gibbs sweeps from random starts

    def __post_init__(self):
        _check(self.n >= 2, "n", f"must be >= 2 (FID and precision/recall compare sets); got {self.n}")
        _check(len(self.snapshot_steps) > 0, "snapshot_steps", "must list at least one step (0 = the starting noise)")
        _check(self.gibbs_steps >= 1, "gibbs_steps", f"must be >= 1; got {self.gibbs_steps}")
        _check(all(s >= 0 for s in self.snapshot_steps), "snapshot_steps", "must be >= 0")
        _check(self.chains_shown >= 1, "chains_shown", "must be >= 1")
        _check(self.gif_every >= 1, "gif_every", "must be >= 1")


@dataclass(frozen=True)
class ClassifierConfig:
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 1e-3
    seed: int = 0
    members: int = 3
    outlier_share: float = 0.5
    calibration_fraction: float = 0.1
    onednn: bool = True  # TF's oneDNN kernels for the classifier stage (TF_ENABLE_ONEDNN_OPTS; the environment's value wins)

    def __post_init__(self):
        _check(self.epochs >= 1, "epochs", f"must be >= 1; got {self.epochs}")
        _check(self.batch_size >= 1, "batch_size", "must be >= 1")
        _check(self.learning_rate > 0, "learning_rate", "must be > 0")
        _check(self.members >= 1, "members", f"must be >= 1; got {self.members}")
        _check(self.outlier_share >= 0, "outlier_share", f"must be >= 0 (0 = no outlier exposure); got {self.outlier_share}")
        _check(0 <= self.calibration_fraction <= 0.5, "calibration_fraction",
               f"must be in [0, 0.5] (the held-out share of the training digits that fits the temperature; "
               f"0 = no temperature scaling); got {self.calibration_fraction}")


@dataclass(frozen=True)
class EvaluateConfig:
    seed: int = 0
    batch_size: int = 500
    longrun_factor: int = 5
    longrun_n: int = 500
    longrun_max_fid_ratio: float = 3.0
    longrun_min_coverage: float = 0.95
    longrun_max_confident_drop: float = 0.1
    floor_draws: int = 50  # random training subsets each real-vs-real FID floor averages over
    ais_runs: int = 100  # rbm / dbn: independent AIS chains for log Z
    ais_betas: int = 14500  # ... and inverse temperatures per chain
    bound_samples: int = 10  # dbn: posterior samples per test digit in the likelihood bound

    def __post_init__(self):
        _check(self.ais_runs >= 2, "ais_runs", f"must be >= 2 (the error needs a spread); got {self.ais_runs}")
        _check(self.ais_betas >= 3, "ais_betas", f"must be >= 3; got {self.ais_betas}")
        _check(self.bound_samples >= 1, "bound_samples", f"must be >= 1; got {self.bound_samples}")
        _check(self.batch_size >= 1, "batch_size", "must be >= 1")
        _check(self.longrun_factor >= 1, "longrun_factor", "must be >= 1 (1 = no long-run check)")
        _check(self.longrun_n >= 2, "longrun_n", "must be >= 2")
        _check(self.floor_draws >= 1, "floor_draws", f"must be >= 1; got {self.floor_draws}")
        _check(self.longrun_max_fid_ratio > 0, "longrun_max_fid_ratio", f"must be > 0; got {self.longrun_max_fid_ratio}")
        _check(0 <= self.longrun_min_coverage <= 1, "longrun_min_coverage",
               f"must be in [0, 1]; got {self.longrun_min_coverage}")
        _check(0 <= self.longrun_max_confident_drop <= 1, "longrun_max_confident_drop",
               f"must be in [0, 1]; got {self.longrun_max_confident_drop}")


@dataclass(frozen=True)
class TrackingConfig:
    experiment: str = ""  # "" = one MLflow experiment per DVC baseline commit


@dataclass(frozen=True)
class Params:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    rbm: RBMConfig = field(default_factory=RBMConfig)
    dbn: DBNConfig = field(default_factory=DBNConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self):
        from ebm import families

        key = families.LENGTH_KEYS[self.model.family]
        section, name = key.split(".")
        steps = getattr(getattr(self, section), name)
        bad = [s for s in self.generate.snapshot_steps if s > steps]
        _check(not bad, "generate.snapshot_steps", f"{bad} exceed {key}={steps}")
        _check(self.generate.n >= self.evaluate.longrun_n, "generate.n",
               f"={self.generate.n} is below evaluate.longrun_n={self.evaluate.longrun_n}: the long-run check "
               "continues that many of the generated chains (lower evaluate.longrun_n or raise generate.n)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """A short stable hash of every param, to tag runs made with the same configuration."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def recipe_digest(self) -> str:
        """The hash of every param but the seeds (:func:`is_seed`): the same for every draw of
        one recipe, so that runs group by it (``ebm compare``, MLflow's tag ``ebm.recipe``)."""
        kept = {k: v for k, v in flatten(self.to_dict()).items() if not is_seed(k)}
        return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:12]


def is_seed(key: str) -> bool:
    """Whether a dotted params key is a seed (``train.seed``, ``generate.seed``, ``data.seed``, ...):
    what changes between draws of one recipe."""
    return key.rsplit(".", 1)[-1] == "seed"


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(key, message)


def _build(cls, raw, prefix: str):
    """Build dataclass ``cls`` from a mapping, converting lists to tuples and nested sections."""
    if raw is None and prefix:  # `evaluate:` with nothing under it, or `evaluate: null`
        raise ConfigError(prefix, "is empty (null): give its keys, or delete the section to take the recipe's defaults")
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(prefix or "root", f"must be a mapping; got {type(raw).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        keys = [f"{prefix}.{k}" if prefix else k for k in unknown]
        pruned = [k for k in keys if k in PRUNED]
        why = (f" ({', '.join(pruned)}: a lead that was measured and not adopted, removed after commit 2d7e7ea; "
               "docs/experiments.md has its write-up)") if pruned else ""
        raise ConfigError(", ".join(keys), f"is not a known key{why}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(hints[name], value, key)
        if name == "seed" and not 0 <= kwargs[name] <= MAX_SEED:
            raise ConfigError(key, f"must be in [0, 2**32 - 1] (NumPy and TensorFlow seeds); got {kwargs[name]}")
    try:
        return cls(**kwargs)
    except ConfigError as err:
        if not prefix or err.key.startswith(prefix + "."):
            raise
        raise ConfigError(f"{prefix}.{err.key}", err.detail) from None


def _coerce(hint, value, key: str):
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"must be a list; got {value!r}")
        return tuple(_coerce(args[0], v, key) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"must be true or false; got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"must be an integer; got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(key, f"must be a number; got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"must be a number; got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(key, f"must be a finite number; got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a string; got {value!r}")
        return value
    return value


def parse_params(raw: dict) -> Params:
    """Validate a params mapping (as read from params.yaml) into :class:`Params`."""
    return _build(Params, raw, "")


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(str(path), f"is not valid YAML: {err}") from None
    return parse_params(raw or {})


def flatten(d: dict, prefix: str = "") -> dict[str, object]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists become their string form (for MLflow params)."""
    out: dict[str, object] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = ",".join(str(x) for x in v)
        else:
            out[key] = v
    return out
