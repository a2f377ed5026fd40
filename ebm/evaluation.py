"""What a user wants to know about a trained EBM, as numbers and arrays (no files, no MLflow).

* sample quality in the classifier's feature space: FID (with the real-vs-real floor), KID,
  precision/recall; class coverage and confident share; memorisation (nearest training image);
* out-of-distribution detection with the energy as score (AUROC per kind of outlier);
* energies of real, noise and generated images; the real-vs-noise cdiv of the reference;
* a long-run check: do samples stay digits when the chain runs several times longer? Judged
  by absolute gates (:class:`LongrunGates`), not only against the samples' own start, so a
  model that has already collapsed does not pass; the curve along the way (FID, energy,
  confident share and each class's share at every multiple of the generation length) shows
  how a failing run fails.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ebm import metrics as M
from ebm.classifier import FeatureExtractor


def class_energy_spread(energies: np.ndarray, labels: np.ndarray, classes: int = 10) -> np.floating:
    """Between-class variance of the energies of labelled digits: sum over the classes present
    of (their share) x (their mean energy - the mean energy)^2. Zero when
    every class has the same mean energy; chains run long slide from the classes given high
    energy into those given low."""
    import tensorflow as tf

    energies = tf.convert_to_tensor(energies)
    labels = tf.cast(labels, tf.int32)
    counts = tf.math.unsorted_segment_sum(tf.ones_like(energies), labels, classes)
    sums = tf.math.unsorted_segment_sum(energies, labels, classes)
    shares = counts / tf.reduce_sum(counts)
    means = tf.math.divide_no_nan(sums, counts)
    return tf.reduce_sum(shares * tf.square(means - tf.reduce_mean(energies))).numpy()


def ood_sets(test_x: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Outlier sets the size of the test split, all in [-1, 1]."""
    rng = np.random.default_rng(seed)
    n = len(test_x)
    flat = test_x.reshape(n, -1)
    shuffled = np.take_along_axis(flat, rng.permuted(np.tile(np.arange(flat.shape[1]), (n, 1)), axis=1), axis=1)
    sets = {
        "uniform noise": rng.uniform(-1, 1, test_x.shape).astype("float32"),
        "gaussian noise": np.clip(rng.normal(0, 1, test_x.shape), -1, 1).astype("float32"),
        "flipped digits": test_x[:, ::-1].copy(),
        "inverted digits": -test_x,
        "pixel-shuffled digits": shuffled.reshape(test_x.shape),
    }
    parts = [rng.choice(len(v), n // len(sets), replace=False) for v in sets.values()]
    sets["mixture"] = np.concatenate([v[idx] for v, idx in zip(sets.values(), parts)])
    return sets


@dataclass(frozen=True)
class LongrunGates:
    """``longrun_stable`` = 1 when the long-run samples have FID <= ``max_fid_ratio`` x the
    real-vs-real floor at the same sample size, class coverage >= ``min_coverage``, and a
    confident share at most ``max_confident_drop`` below the samples' own."""

    max_fid_ratio: float = 3.0
    min_coverage: float = 0.95
    max_confident_drop: float = 0.1

    def verdicts(self, m: dict) -> dict[str, bool]:
        """Whether each gate holds for the ``longrun_*`` metrics ``m``."""
        return {"fid": m["longrun_fid"] <= self.max_fid_ratio * m["longrun_fid_floor"],
                "coverage": m["longrun_coverage"] >= self.min_coverage,
                "confident": m["longrun_confident_share"] >= m["longrun_confident_share_before"] - self.max_confident_drop}


@dataclass
class Evaluation:
    metrics: dict[str, float]
    energies: dict[str, np.ndarray]  # real / noise / generated
    ood_energies: dict[str, np.ndarray]
    ood_auroc: dict[str, float]
    class_hist: np.ndarray
    sample_probs: np.ndarray  # (N, 10) classifier probabilities of the samples
    nn_generated: np.ndarray
    nn_test: np.ndarray
    longrun_samples: np.ndarray | None = None
    longrun_curve: pd.DataFrame | None = None  # one row per multiple of the generation length: see longrun_row
    class_energies: np.ndarray | None = None  # mean energy of the real test digits of each class (labelled data)


def evaluate(energy, classifier, train_x: np.ndarray, test_x: np.ndarray, samples: np.ndarray, seed: int = 0,
             longrun=None, longrun_n: int = 500, gates: LongrunGates = LongrunGates(),
             batch_size: int = 500, test_y: np.ndarray | None = None, floor_draws: int = 1) -> Evaluation:
    """All metrics for ``samples`` drawn from ``energy`` (a function x -> E(x)).

    ``longrun``: optional callable ``samples -> {multiple: states}`` that runs the chains
    further, returning their states at some multiples (> 1) of the generation length, the
    largest being the end; the first ``longrun_n`` samples go through it, the end states are
    scored under ``longrun_*`` names against ``gates``, and every recorded multiple (and 1, the
    samples themselves) gets a row of ``longrun_curve``.

    With more samples than real test digits (n of them), FID, precision and recall are the means
    over the samples' disjoint random n-subsets (``fid_std``: the FIDs' spread, ``fid_subsets``:
    how many): one set of 500 samples moves FID by a few units from draw to draw (docs/experiments.md
    "The FID floor"), and the floor is defined at n digits, so a larger set must not be scored whole.

    ``floor_draws``: how many random subsets of the training digits the real-vs-real FID floors
    (``fid_real_floor``, ``longrun_fid_floor``) average over; their spread is ``*_floor_std``
    (see :func:`real_floor`).

    ``test_y``: the test digits' labels, when known: ``class_energies`` holds each class's mean
    energy, and ``energy_class_std`` (their spread, weighted by class size) and
    ``energy_class_gap`` (highest minus lowest) measure how unevenly the model ranks the classes.
    """
    rng = np.random.default_rng(seed)
    extract = FeatureExtractor(classifier)
    f_test, _ = extract(test_x)
    f_gen, p_gen = extract(samples)
    n = min(len(samples), len(test_x))  # compare sets of equal size, each a random subset
    f_ref = f_test[rng.choice(len(test_x), n, replace=False)]
    # more samples than real test digits: disjoint n-subsets, each scored, their scores averaged
    parts = len(samples) // n
    f_gen_parts = f_gen[rng.choice(len(samples), parts * n, replace=False)].reshape(parts, n, -1)
    f_train_all = extract(train_x)[0]
    floor, floor_std = real_floor(f_train_all, f_ref, rng, floor_draws, seed)
    kid, kid_std = M.kernel_inception_distance(f_gen, f_test, seed=seed)
    fids = np.array([M.frechet_distance(part, f_ref) for part in f_gen_parts])
    precision, recall = np.mean([M.precision_recall(f_ref, part) for part in f_gen_parts], axis=0)

    e = {"real test": M.energies_of(energy, test_x, batch_size)}
    outliers = ood_sets(test_x, seed)
    ood_e = {name: M.energies_of(energy, x, batch_size) for name, x in outliers.items()}
    e["uniform noise"] = ood_e["uniform noise"]
    e["generated"] = M.energies_of(energy, samples, batch_size)
    aurocs = {name: M.auroc(e["real test"], v) for name, v in ood_e.items()}

    nn_gen = M.nearest_distances(samples, train_x)
    nn_test = M.nearest_distances(test_x, train_x)
    values = {
        "fid": float(fids.mean()),
        "fid_std": float(fids.std(ddof=1)) if parts > 1 else 0.0,
        "fid_subsets": float(parts),
        "fid_real_floor": floor,
        "fid_real_floor_std": floor_std,
        "kid": kid,
        "kid_std": kid_std,
        "precision": float(precision),
        "recall": float(recall),
        "coverage": M.coverage(p_gen),
        "confident_share": M.confident_share(p_gen),
        "nn_dist_generated_median": float(np.median(nn_gen)),
        "nn_dist_test_median": float(np.median(nn_test)),
        "test_cdiv": float(e["real test"].mean() - e["uniform noise"].mean()),
        "energy_real": float(e["real test"].mean()),
        "energy_noise": float(e["uniform noise"].mean()),
        "energy_generated": float(e["generated"].mean()),
        **{f"auroc_{name.replace(' ', '_').replace('-', '_')}": v for name, v in aurocs.items()},
    }
    result = Evaluation(values, e, ood_e, aurocs, M.class_histogram(p_gen), p_gen, nn_gen, nn_test)
    if test_y is not None and (np.asarray(test_y) >= 0).all():
        labels = np.asarray(test_y)
        present, means = M.class_means(e["real test"], labels)
        result.class_energies = np.full(int(present.max()) + 1, np.nan)
        result.class_energies[present] = means
        values["energy_class_std"] = float(np.sqrt(class_energy_spread(e["real test"], labels)))
        values["energy_class_gap"] = float(means.max() - means.min())
    if longrun is not None:
        k = min(len(samples), longrun_n)
        more = longrun(samples[:k])
        m = min(k, len(test_x), len(train_x))
        f_ref_k = f_test[rng.choice(len(test_x), m, replace=False)]
        longrun_floor, longrun_floor_std = real_floor(f_train_all, f_ref_k, rng, floor_draws, seed)
        scored = {1: (f_gen[:k], p_gen[:k], e["generated"][:k])}  # the samples themselves: already scored above
        for mult, x in sorted(more.items()):
            scored[mult] = (*extract(np.asarray(x)), M.energies_of(energy, np.asarray(x), batch_size))
        curve = pd.DataFrame([longrun_row(mult, f, p, en, f_ref_k) for mult, (f, p, en) in scored.items()])
        f_long = scored[max(scored)][0]
        first, last = curve.iloc[0], curve.iloc[-1]
        values.update({
            "longrun_n": float(k),
            **{f"longrun_{key}": float(last[key]) for key in ("confident_share", "coverage", "energy", "fid")},
            **{f"longrun_{key}_before": float(first[key]) for key in ("confident_share", "coverage", "energy", "fid")},
            "longrun_fid_floor": longrun_floor,
            "longrun_fid_floor_std": longrun_floor_std,
            "longrun_kid": M.kernel_inception_distance(f_long, f_test, seed=seed)[0],
            "longrun_kid_before": M.kernel_inception_distance(f_gen[:k], f_test, seed=seed)[0],
        })
        result.longrun_samples, result.longrun_curve = np.asarray(more[max(more)]), curve
        values["longrun_stable"] = float(all(gates.verdicts(values).values()))
    return result


def longrun_row(multiple: int, features: np.ndarray, probs: np.ndarray, energies: np.ndarray,
                reference_features: np.ndarray) -> dict[str, float]:
    """One point of the long-run curve: chains at ``multiple`` x the generation length scored by
    FID, precision and recall against ``reference_features`` (real digits, as many as the
    chains), the judge's confident share and coverage, the mean energy, and each class's share
    (``share_0`` ...). Recall falling while precision holds is variety lost, digits kept."""
    precision, recall = M.precision_recall(reference_features, features)
    return {"multiple": multiple, "fid": M.frechet_distance(features, reference_features),
            "precision": precision, "recall": recall,
            "confident_share": M.confident_share(probs), "coverage": M.coverage(probs),
            "energy": float(np.mean(energies)),
            **{f"share_{c}": float(v) for c, v in enumerate(M.class_histogram(probs, probs.shape[1]))}}


def class_drift(curve: pd.DataFrame, top: int = 2) -> tuple[list, list]:
    """The ``top`` classes whose share grew most and fell most from the first row of a long-run
    curve to its last, each as (class, share before, share after)."""
    cols = [c for c in curve.columns if c.startswith("share_")]
    first, last = curve[cols].iloc[0], curve[cols].iloc[-1]
    order = (last - first).sort_values()
    pick = lambda names: [(int(n.removeprefix("share_")), float(first[n]), float(last[n])) for n in names]  # noqa: E731
    return pick(order.index[::-1][:top]), pick(order.index[:top])


def real_floor(train_features: np.ndarray, reference: np.ndarray, rng, draws: int = 1,
               seed: int = 0) -> tuple[float, float]:
    """The FID real digits get against ``reference`` at its size n: the mean and the standard
    deviation of the Fréchet distance from ``draws`` random n-subsets of ``train_features``.

    One draw is a noisy floor: over 40 draws of 500 of the 4,500 training digits its value
    ranged 5.5..11.1 (mean 8.0), at 250 digits 12.7..27.4 (mean 18.5), so a gate at 3x one draw
    was as much the draw as the samples (docs/experiments.md "The FID floor"). The first subset comes from
    ``rng`` (what a single draw always used: ``draws=1`` gives the old floor), the others from
    a stream of their own keyed by ``seed`` and n, so ``rng``'s later draws do not move."""
    n, total = len(reference), len(train_features)
    extra = np.random.default_rng([seed, n])
    picks = [rng.choice(total, n, replace=False)] + [extra.choice(total, n, replace=False) for _ in range(draws - 1)]
    values = np.array([M.frechet_distance(train_features[p], reference) for p in picks])
    return float(values.mean()), float(values.std(ddof=1)) if draws > 1 else 0.0
