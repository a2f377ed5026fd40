"""Figures. Each function takes arrays and a path, writes one PNG, and returns the path."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ebm.io import write_atomic  # noqa: E402


@contextlib.contextmanager
def _figure(path: str | Path, nrows: int = 1, ncols: int = 1, figsize=(6, 3.5)):
    """Yield (fig, axes) and write the figure to ``path`` as PNG on exit."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False)
    try:
        yield fig, axes
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[-1, 1] floats (N, H, W[, 1]) -> uint8 (N, H, W)."""
    x = np.asarray(images, dtype="float32")
    if x.ndim == 4:
        x = x[..., 0]
    return np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def tile(images: np.ndarray, ncols: int | None = None, pad: int = 2) -> np.ndarray:
    """Arrange (N, H, W[, 1]) images in [-1, 1] as one uint8 mosaic with a dark border."""
    x = to_uint8(images)
    n, h, w = x.shape
    ncols = ncols or int(np.ceil(np.sqrt(n)))
    nrows = int(np.ceil(n / ncols))
    out = np.zeros((nrows * (h + pad) + pad, ncols * (w + pad) + pad), dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, ncols)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = x[i]
    return out


def save_grid(images: np.ndarray, path: str | Path, ncols: int | None = None, scale: int = 3) -> Path:
    """A square-ish grid of images, upscaled ``scale`` times (nearest neighbour), as PNG."""
    image = grid_image(images, ncols, scale)  # compress level 3: a third of the default's time, files ~15% larger
    return write_atomic(path, lambda tmp: image.save(tmp, compress_level=3))


def grid_image(images: np.ndarray, ncols: int | None = None, scale: int = 3):
    """:func:`save_grid`'s picture as a PIL image (for ``mlflow.log_image``)."""
    from PIL import Image

    mosaic = tile(images, ncols)
    return Image.fromarray(mosaic).resize((mosaic.shape[1] * scale, mosaic.shape[0] * scale), Image.NEAREST)


def kernel_images(kernels: np.ndarray) -> np.ndarray:
    """First-layer filters as images in [-1, 1], each scaled to its own largest weight: conv
    kernels (k, k, 1, filters) or dense weights (pixels, units) of a square image."""
    w = np.asarray(kernels)
    if w.ndim == 4:
        images = np.transpose(w[:, :, 0, :], (2, 0, 1))
    else:
        side = int(round(np.sqrt(w.shape[0])))
        images = w.T.reshape(-1, side, side)
    scale = np.abs(images).max(axis=(1, 2), keepdims=True) + 1e-8
    return (images / scale)[..., None]


def save_chain_figure(snapshots: Mapping[int, np.ndarray], path: str | Path, chains: int = 8,
                      title: str = "Langevin chains from uniform noise (column = step)") -> Path:
    """Rows are chains, columns are steps (titled with the step number)."""
    steps = sorted(snapshots)
    chains = min(chains, len(snapshots[steps[0]]))
    with _figure(path, chains, len(steps), (1.1 * len(steps), 1.1 * chains + 0.4)) as (fig, axes):
        for col, step in enumerate(steps):
            imgs = to_uint8(snapshots[step][:chains])
            for row in range(chains):
                ax = axes[row, col]
                ax.imshow(imgs[row], cmap="gray", vmin=0, vmax=255)
                ax.set_xticks([])
                ax.set_yticks([])
                if row == 0:
                    ax.set_title(str(step), fontsize=8)
        fig.suptitle(title, fontsize=9)
    return Path(path)


def save_energy_histogram(energies: Mapping[str, np.ndarray], path: str | Path, bins: int = 60) -> Path:
    """Overlaid histograms of E(x) for named sets of images."""
    values = np.concatenate([np.asarray(v).ravel() for v in energies.values()])
    edges = np.histogram_bin_edges(values[np.isfinite(values)], bins=bins)
    with _figure(path) as (_, axes):
        ax = axes[0, 0]
        for name, e in energies.items():
            ax.hist(np.asarray(e).ravel(), bins=edges, alpha=0.55, label=f"{name} (mean {np.mean(e):.3g})")
        ax.set_xlabel("energy E(x)  (lower = more data-like)")
        ax.set_ylabel("count")
        ax.legend(fontsize=8)
    return Path(path)


def save_loss_curves(history: pd.DataFrame, path: str | Path) -> Path:
    """Per-epoch training metrics, one panel per group that the history has: losses, mean
    energies, the replay buffer's class coverage (deep EBM, every few epochs), pseudo-likelihood
    (RBM / DBN; a ``layer`` column marks a DBN's layers)."""
    epoch = history["epoch"] if "epoch" in history else np.arange(1, len(history) + 1)
    groups = [("losses", ("loss", "cdiv", "reg", "val_cdiv", "recon", "val_recon")),
              ("mean energy (val_fake = uniform noise)", ("real", "fake", "val_real", "val_fake")),
              ("mean free energy", ("free_energy", "val_free_energy")),
              ("class coverage of the replay buffer", ("buffer_coverage", "chain_coverage")),
              ("real digits' class-mean energy: highest - lowest", ("energy_class_gap",)),
              ("pseudo-log-likelihood (nats)", ("pseudo_likelihood", "val_pseudo_likelihood"))]
    panels = [(title, [c for c in cols if c in history]) for title, cols in groups]
    panels = [(title, cols) for title, cols in panels if cols]
    if not panels:  # a model file evaluated on its own (`ebm evaluate --model`): no history to draw
        with _figure(path, 1, 1, (5, 1.5)) as (_, axes):
            axes[0][0].text(0.5, 0.5, "no training history for this model", ha="center", va="center")
            axes[0][0].set_axis_off()
        return Path(path)
    with _figure(path, 1, len(panels), (5 * len(panels), 3.5)) as (_, axes):
        for ax, (title, cols) in zip(axes[0], panels):
            for col in cols:
                seen = history[col].notna()
                ax.plot(epoch[seen], history[col][seen], marker="o" if not seen.all() else ".", label=col)
            if "layer" in history:
                for start in history.groupby("layer")["epoch"].min().iloc[1:]:
                    ax.axvline(start - 0.5, color="grey", ls=":", lw=1)
            if all(col.endswith("_coverage") for col in cols):
                ax.set_ylim(0, 1.02)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("epoch")
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
    return Path(path)


def save_gif(frames: Mapping[int, np.ndarray], path: str | Path, scale: int = 3, ms_per_frame: int = 80) -> Path:
    """An animated GIF: each frame tiles the chains (one row) at one step; the last frame lingers."""
    from PIL import Image

    images = []
    for step in sorted(frames):
        mosaic = tile(frames[step], ncols=len(frames[step]))
        images.append(Image.fromarray(mosaic).resize((mosaic.shape[1] * scale, mosaic.shape[0] * scale), Image.NEAREST))
    durations = [ms_per_frame] * (len(images) - 1) + [1500]
    return write_atomic(path, lambda tmp: images[0].save(tmp, save_all=True, append_images=images[1:],
                                                        duration=durations, loop=0))


def save_chain_health(table: Mapping[str, np.ndarray], path: str | Path, xlabel: str = "Langevin step",
                      energy_label: str = "energy E(x)") -> Path:
    """Energy and, when the table has it, input-gradient norm (mean +- std over chains) per step."""
    step = np.asarray(table["step"])
    panels = [("energy", energy_label)] + ([("grad_norm", "|dE/dx| (before clipping)")]
                                           if "grad_norm_mean" in table else [])
    with _figure(path, 1, len(panels), (5 * len(panels), 3.5)) as (_, axes):
        for ax, (key, label) in zip(axes[0], panels):
            mean, std = np.asarray(table[f"{key}_mean"]), np.asarray(table[f"{key}_std"])
            ax.plot(step, mean, lw=1.2)
            ax.fill_between(step, mean - std, mean + std, alpha=0.3)
            ax.set_xscale("symlog", linthresh=1)
            ax.set_xlabel(xlabel)
            ax.set_title(label + ", mean +- std over chains", fontsize=9)
            ax.grid(alpha=0.3)
    return Path(path)


def save_bars(values: Mapping[str, float], path: str | Path, title: str, ylabel: str) -> Path:
    with _figure(path, figsize=(6, 3.2)) as (_, axes):
        ax = axes[0, 0]
        ax.bar([str(k) for k in values], list(values.values()), color="#4c72b0")
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    return Path(path)


def save_distance_histogram(distances: Mapping[str, np.ndarray], path: str | Path) -> Path:
    """Distance to the nearest training image: generated samples against real test digits."""
    with _figure(path, figsize=(6, 3.2)) as (_, axes):
        ax = axes[0, 0]
        for name, d in distances.items():
            ax.hist(d, bins=40, alpha=0.55, density=True, label=f"{name} (median {np.median(d):.2f})")
        ax.set_xlabel("L2 distance to the nearest training image (pixels in [-1, 1])")
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
    return Path(path)


def save_by_class(images: np.ndarray, probs: np.ndarray, path: str | Path, per_class: int = 12) -> Path:
    """One row per predicted class: its ``per_class`` most confident samples, left to right,
    labelled with the class, its share of all samples and its confident share (p >= 0.9)."""
    images, probs = np.asarray(images), np.asarray(probs)
    pred, conf = probs.argmax(1), probs.max(1)
    blank = -np.ones_like(images[:1])
    rows, labels = [], []
    for c in range(probs.shape[1]):
        members = np.flatnonzero(pred == c)
        members = members[np.argsort(-conf[members])][:per_class]
        rows.append(np.concatenate([images[members], np.repeat(blank, per_class - len(members), axis=0)]))
        share = np.mean(pred == c)
        sure = np.mean(conf[pred == c] >= 0.9) if share else 0.0
        labels.append(f"{c}: {share:.0%} of all, {sure:.0%} sure")
    mosaic = tile(np.concatenate(rows), ncols=per_class)
    height = mosaic.shape[0] / probs.shape[1]
    with _figure(path, figsize=(per_class * 0.55 + 2.2, probs.shape[1] * 0.55 + 0.4)) as (_, axes):
        ax = axes[0, 0]
        ax.imshow(mosaic, cmap="gray", vmin=0, vmax=255)
        ax.set_yticks([height * (r + 0.5) for r in range(probs.shape[1])], labels, fontsize=8)
        ax.set_xticks([])
    return Path(path)


def save_longrun_curve(curve: pd.DataFrame, path: str | Path, unit: int = 1, unit_name: str = "steps",
                       fid_gate: float | None = None) -> Path:
    """The long-run check along the way (rows of :func:`ebm.evaluation.longrun_row`): each
    class's share, the FID (with its gate) and the mean energy against the chains' length."""
    length = np.asarray(curve["multiple"]) * unit
    shares = [c for c in curve.columns if c.startswith("share_")]
    with _figure(path, 1, 3, (15, 3.6)) as (_, axes):
        ax = axes[0, 0]
        for i, col in enumerate(shares):
            ax.plot(length, curve[col], marker="o", ms=3, lw=1.2, color=plt.cm.tab10(i), label=col.removeprefix("share_"))
        ax.axhline(1 / len(shares), color="grey", ls=":", lw=1)
        ax.set_title("share of each class (the judge's reading)", fontsize=9)
        ax.legend(fontsize=7, ncol=5)
        ax = axes[0, 1]
        ax.plot(length, curve["fid"], marker="o", ms=3, lw=1.2, label="FID")
        if fid_gate is not None:
            ax.axhline(fid_gate, color="tab:red", ls="--", lw=1, label=f"gate {fid_gate:.3g}")
        ax.set_title("FID against real digits (same number of samples)", fontsize=9)
        ax.legend(fontsize=8)
        ax = axes[0, 2]
        ax.plot(length, curve["energy"], marker="o", ms=3, lw=1.2)
        ax.set_title("mean energy E(x)", fontsize=9)
        for ax in axes[0]:
            ax.set_xlabel(unit_name)
            ax.grid(alpha=0.3)
    return Path(path)
