"""Atomic writes: a file appears whole or not at all, so a kill or a full disk mid-write leaves
the previous file (or none) rather than a truncated one."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def save_model_atomic(model, path: str | Path) -> Path:
    """``model.save(path)`` through a temporary file in the same folder and a rename, so a kill
    mid-write leaves the previous file whole."""
    return write_atomic(path, model.save)


def write_atomic(path: str | Path, write) -> Path:
    """``write(tmp)`` to a temporary file beside ``path`` (same suffix), then renamed onto it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def write_csv_atomic(path: str | Path, frame) -> Path:
    """A pandas frame as CSV (no index), atomically."""
    return write_atomic(path, lambda tmp: frame.to_csv(tmp, index=False))


def save_npz_atomic(path: str | Path, **arrays) -> Path:
    """``np.savez_compressed(path, **arrays)`` through a temporary file and a rename."""
    return write_atomic(path, lambda tmp: np.savez_compressed(tmp, **arrays))
