"""Digits a user hands the ``ebm`` commands: PNG files or an npz, checked and brought to the
pipeline's form, float32 (N, 32, 32, 1) in [-1, 1] (28x28 digits padded with -1, as prepared)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ebm.data import IMAGE_SIZE, npz_reason, preprocess
from ebm.errors import DataError

SIDE = 28  # the digits' own size: 32x32 is the pipeline's, padded


def read_images(paths) -> tuple[list[str], np.ndarray]:
    """``(names, images)`` from PNG (or any PIL-readable) files of grey 28x28 or 32x32 digits,
    white on black, and ``.npz`` files holding ``x`` (the prepared form), or ``x``/``images`` of
    uint8 (N, 28, 28). One name per image: the file, and ``file[i]`` for an npz's rows."""
    names, parts = [], []
    for path in map(Path, paths):
        if not path.is_file():
            raise DataError(f"{path}: file not found")
        x = _read_npz(path) if path.suffix == ".npz" else _read_picture(path)[None]
        names += [str(path)] if path.suffix != ".npz" else [f"{path}[{i}]" for i in range(len(x))]
        parts.append(x)
    if not parts:
        raise DataError("no images given")
    return names, np.concatenate(parts)


def _read_picture(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            picture.load()
            mode, size = picture.mode, picture.size
            pixels = np.asarray(picture.convert("RGB") if mode not in ("L", "1", "I;16") else picture.convert("L"))
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"{path}: not a readable image ({type(err).__name__})") from err
    if pixels.ndim == 3:
        if not (pixels == pixels[..., :1]).all():
            raise DataError(f"{path}: a colour image ({mode}); give grey digits, white on black")
        pixels = pixels[..., 0]
    if size not in ((SIDE, SIDE), (IMAGE_SIZE, IMAGE_SIZE)):
        raise DataError(f"{path}: {size[0]}x{size[1]} pixels; give {SIDE}x{SIDE} digits (as MNIST's) or "
                        f"{IMAGE_SIZE}x{IMAGE_SIZE} (as the pipeline's, padded)")
    return _to_pipeline(pixels.astype(np.uint8)[None], str(path))[0]


def _read_npz(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(f"{path}: not a readable .npz file ({npz_reason(err)})") from err
    key = next((k for k in ("x", "images", "x_test") if k in arrays), None)
    if key is None:
        raise DataError(f"{path}: no images under x, images or x_test; found {sorted(arrays)}")
    x = arrays[key]
    if x.dtype == np.float32 and x.ndim == 4 and x.shape[1:] == (IMAGE_SIZE, IMAGE_SIZE, 1):
        if not (np.isfinite(x).all() and np.abs(x).max(initial=0) <= 1.0):
            raise DataError(f"{path}: {key} holds values outside [-1, 1] (or NaN): the prepared form is in [-1, 1]")
        return x
    return _to_pipeline(x, f"{path} ({key})")


def _to_pipeline(x: np.ndarray, where: str) -> np.ndarray:
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1] != x.shape[2] or x.shape[1] not in (SIDE, IMAGE_SIZE):
        raise DataError(f"{where}: expected uint8 (N, {SIDE}, {SIDE}) or (N, {IMAGE_SIZE}, {IMAGE_SIZE}) digits, or "
                        f"float32 (N, {IMAGE_SIZE}, {IMAGE_SIZE}, 1) in [-1, 1]; got {x.dtype} {x.shape}")
    if len(x) == 0:
        raise DataError(f"{where}: no images")
    if x.shape[1] == IMAGE_SIZE:
        return ((x.astype(np.float32) - 127.5) / 127.5)[..., None]
    return preprocess(x)


MASKS = ("bottom-half", "top-half", "left-half", "right-half", "center-square", "random:<rate>", "<a mask image>")


def hidden_mask(spec: str, n: int, seed: int = 0) -> np.ndarray:
    """Which pixels to fill, (n, 32, 32, 1) booleans over the 28x28 digit (its padding stays
    observed): a named region, ``random:<rate>`` (each pixel hidden with that probability), or
    the path of a grey 28x28 image whose white pixels are hidden."""
    pad = (IMAGE_SIZE - SIDE) // 2
    digit = np.zeros((SIDE, SIDE), bool)
    half, quarter = SIDE // 2, SIDE // 4
    regions = {"bottom-half": (slice(half, None), slice(None)), "top-half": (slice(None, half), slice(None)),
               "left-half": (slice(None), slice(None, half)), "right-half": (slice(None), slice(half, None)),
               "center-square": (slice(quarter, SIDE - quarter), slice(quarter, SIDE - quarter))}
    if spec in regions:
        digit[regions[spec]] = True
        masks = np.broadcast_to(digit, (n, SIDE, SIDE))
    elif spec.startswith("random:"):
        try:
            rate = float(spec.removeprefix("random:"))
        except ValueError:
            rate = -1.0
        if not 0.0 < rate < 1.0:
            raise DataError(f"mask {spec!r}: the rate of random:<rate> must be a number in (0, 1)")
        masks = np.random.default_rng(seed).uniform(size=(n, SIDE, SIDE)) < rate
    elif Path(spec).is_file():
        masks = np.broadcast_to(_read_picture(Path(spec))[pad:pad + SIDE, pad:pad + SIDE, 0] > 0.0, (n, SIDE, SIDE))
    else:
        raise DataError(f"mask {spec!r}: not a file nor one of {', '.join(MASKS)}")
    covered = masks.reshape(n, -1).mean(axis=1)
    if (covered == 0).any() or (covered == 1).any():
        raise DataError(f"mask {spec!r} hides {'nothing' if (covered == 0).any() else 'every pixel'} of a digit: "
                        "nothing is left to complete from")
    out = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE, 1), bool)
    out[:, pad:pad + SIDE, pad:pad + SIDE, 0] = masks
    return out
