"""Stage evaluate: sample quality, coverage, OOD detection, long-run check, one HTML report."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np

from ebm import data as data_lib
from ebm import families
from ebm.config import Params
from ebm.io import write_csv_atomic, write_text_atomic
from ebm.pipeline.generate import load_samples
from ebm.pipeline.paths import EvaluatePaths


def evaluate(params: Params, paths: EvaluatePaths, network=None, track: bool = True, title: str | None = None) -> dict:
    """Score the samples of ``paths.samples``; ``network`` overrides the model file."""
    import pandas as pd

    from ebm import evaluation
    from ebm.tracking import maybe_stage_run, train_record

    e = params.evaluate
    settings = families.get(params.model.family).configure(params)  # before TensorFlow runs an op
    section = {**asdict(e), **{f"sampler.{k}": v for k, v in asdict(params.sampler).items()}}
    with maybe_stage_run(track, "evaluate", params, section, paths.record,
                         upstream=("prepare", train_record(params.model.family), "classifier", "generate"),
                         tags={"ebm.kernels": settings["kernels"]}) as run:
        family, network = (families.family_of(network), network) if network is not None else \
            families.load_model(paths.model)
        classifier = load_classifier(paths.classifier)
        train = data_lib.load_split(paths.data / "train.npz")
        test = data_lib.load_split(paths.data / "test.npz")
        samples = load_samples(paths.samples)
        run.datasets({**data_lib.input_datasets(params.data, paths.data, reference="train", evaluation="test"),
                      "generated": ("generated-samples", paths.samples)})
        scoring = family.scoring(params, network, paths.data)
        energy, longrun = scoring.energy, scoring.longrun
        result = evaluation.evaluate(energy, classifier, train.x, test.x, samples, seed=e.seed, longrun=longrun,
                                     longrun_n=e.longrun_n, gates=longrun_gates(params), batch_size=e.batch_size,
                                     test_y=test.y, floor_draws=e.floor_draws)
        metrics = {**result.metrics, **scoring.metrics}
        write_text_atomic(paths.metrics, json.dumps(metrics, indent=2) + "\n")
        ood = pd.DataFrame({"outliers": list(result.ood_auroc), "auroc": list(result.ood_auroc.values()),
                            "mean_energy": [float(v.mean()) for v in result.ood_energies.values()]})
        write_csv_atomic(paths.ood, ood)
        gate = (e.longrun_max_fid_ratio * metrics["longrun_fid_floor"]) if "longrun_fid_floor" in metrics else None
        figures = draw_figures(result, samples, pd.read_csv(paths.history), paths, family.unit(params),
                               family.unit_name(sampler=True), gate)
        write_report(params, paths, metrics, ood, figures, title or family.title, run, family, scoring.paragraphs,
                     result.longrun_curve, result.class_energies, kernels=settings["kernels"])
        run.metrics(metrics, on_parent=True)
        if result.longrun_curve is not None:
            curve = result.longrun_curve
            write_csv_atomic(paths.figures / "longrun_curve.csv", curve)
            run.artifact(paths.figures / "longrun_curve.csv")
            for row in curve.itertuples(index=False):  # MLflow x axis: the chains' length in sampler steps
                run.metrics({f"longrun_curve_{k}": getattr(row, k) for k in ("fid", "energy", "confident_share",
                                                                             "coverage")},
                            step=int(row.multiple * family.unit(params)))
        for path in (paths.metrics, paths.ood, paths.report, *figures.values()):
            run.artifact(path)
    print("evaluate: " + ", ".join(f"{k}={metrics[k]:.4g}" for k in
                                   ("fid", "fid_real_floor", "kid", "coverage", "confident_share", "auroc_mixture")))
    return metrics


def load_classifier(path):
    return families.load_model_file(path, "run the classifier stage (dvc repro classifier)")


def draw_figures(result, samples, history, paths: EvaluatePaths, unit: int = 1, unit_name: str = "steps",
                 fid_gate: float | None = None) -> dict:
    """The evaluation's figures; the long-run curve's x axis is in ``unit_name`` (``unit`` per
    multiple of the generation length), with the FID gate drawn at ``fid_gate``."""
    from ebm.plots import (save_bars, save_by_class, save_distance_histogram, save_energy_histogram, save_grid,
                           save_longrun_curve, save_loss_curves)

    out = paths.figures
    by_confidence = np.argsort(result.sample_probs.max(1))
    figures = {
        "least_confident": save_grid(samples[by_confidence[:64]], out / "least_confident.png", ncols=8),
        "most_confident": save_grid(samples[by_confidence[::-1][:64]], out / "most_confident.png", ncols=8),
        "by_class": save_by_class(samples, result.sample_probs, out / "by_class.png"),
        "energies": save_energy_histogram(result.energies, out / "energy_hist.png"),
        "ood": save_energy_histogram({"real test": result.energies["real test"], **result.ood_energies},
                                     out / "ood_energy_hist.png"),
        "loss_curves": save_loss_curves(history, out / "loss_curves.png"),
        "classes": save_bars({str(d): float(v) for d, v in enumerate(result.class_hist)}, out / "class_histogram.png",
                             "class histogram of generated samples", "share"),
        "memorisation": save_distance_histogram({"generated": result.nn_generated, "real test": result.nn_test},
                                                out / "nearest_train.png"),
    }
    if result.longrun_samples is not None:
        figures["longrun"] = save_grid(result.longrun_samples[:100], out / "longrun_samples.png", ncols=10)
        figures["longrun_curve"] = save_longrun_curve(result.longrun_curve, out / "longrun_curve.png", unit, unit_name,
                                                      fid_gate)
    return figures


def write_report(params: Params, paths: EvaluatePaths, metrics: dict, ood, figures: dict, title: str, run,
                 family, family_section: list[str] = (), curve=None, class_energies=None, kernels: str = "") -> None:
    from ebm import report

    gen = paths.generate_reports
    clf = json.loads(paths.classifier_metrics.read_text()) if paths.classifier_metrics.is_file() else {}
    rows = [(k, v) for k, v in metrics.items()] + [(f"classifier_{k}", v) for k, v in clf.items()]
    img = lambda p: report.embed(p) if p.is_file() else f"<p class='meta'>(not available: {p.name})</p>"  # noqa: E731
    longrun = longrun_paragraphs(params, family, metrics, curve, class_energies)
    sections = {
        "Metrics": [report.table(rows, ("metric", "value"))],
        "Against the recipe's spread": spread_paragraphs(params, metrics, paths.reference),
        "Samples": [img(gen / "samples.png"), f"<p>{family.negatives_caption} at the end of training:</p>",
                    img(paths.negatives)],
        "What the classifier reads": [
            f"<p>The judge's confident share (p >= 0.9) is {metrics['confident_share']:.3f}. The 64 samples it is "
            "least sure of (left) and most sure of (right), then the samples grouped by the class it reads, "
            "most confident first; on real digits and on real digits broken on purpose its confident share is "
            + ", ".join(f"{k.removeprefix('confident_').replace('_', ' ')} {v:.2f}" for k, v in clf.items()
                        if k.startswith("confident_")) + ".</p>",
            "<div style='display:flex;gap:1em'>" + img(figures["least_confident"]) + img(figures["most_confident"])
            + "</div>", img(figures["by_class"])],
        **({family.section: family_section} if family.section else {}),
        "First-layer filters": [f"<p>{family.filters_caption}, each scaled to its own range (grey = 0):</p>",
                                img(paths.filters)],
        family.chains_heading: [img(gen / "chains.png"), img(gen / "chains.gif")],
        "Training": [img(figures["loss_curves"]), *training_events(paths.history)],
        "Energies": [img(figures["energies"])],
        "Out-of-distribution detection": [report.table(ood.itertuples(index=False), ood.columns), img(figures["ood"])],
        "Chain health": [img(gen / "chain_health.png")],
        "Coverage and memorisation": [img(figures["classes"]), img(figures["memorisation"])],
        "Long-run check": longrun + [img(figures[k]) for k in ("longrun_curve", "longrun") if k in figures],
    }
    sampler = family.sampler_line(params)
    meta = {"family": family.name, "params hash": params.digest(), "run": run.run_id or "not tracked", "sampler": sampler,
            "kernels": kernels or "unknown"}
    report.write(paths.report, title, meta, sections)


def spread_paragraphs(params: Params, metrics: dict, reference) -> list[str]:
    """Where this run's metrics sit among the reference draws of its recipe (the same params but
    the seeds), from ``reference`` (a CSV written by ``ebm reference-draws``), or why it cannot say."""
    import pandas as pd

    from ebm import report
    from ebm.compare import against_reference

    recipe = params.recipe_digest()
    if reference is None or not reference.is_file():
        return [f"<p>No reference draws given: one run is one draw (recipe {recipe}).</p>"]
    rows = against_reference(metrics, recipe, pd.read_csv(reference, dtype={"recipe": str}))
    if not rows:
        return [f"<p>{reference} holds no draws of this recipe ({recipe}: the params hash without the seeds); "
                "one run is one draw.</p>"]
    return [f"<p>Reference draws of this recipe ({recipe}) from {reference}; numbers differ between CPUs, so "
            "compare on the host that measured them:</p>", report.table(rows, ("metric", "against the draws"))]


def training_events(history_path) -> list[str]:
    """The history's event rows (rollbacks after a divergence) as a list, or a line saying there
    were none."""
    import pandas as pd

    from ebm import report

    history = pd.read_csv(history_path) if history_path.is_file() else pd.DataFrame()
    if "event" not in history or history["event"].isna().all():
        return ["<p>No training events: no divergence, no rollback.</p>"]
    events = history.loc[history["event"].notna(), ["epoch", "event"]]
    return ["<p>Training events (train.on_divergence):</p>", report.table(events.itertuples(index=False), events.columns)]


def longrun_gates(params: Params):
    from ebm.evaluation import LongrunGates

    e = params.evaluate
    return LongrunGates(e.longrun_max_fid_ratio, e.longrun_min_coverage, e.longrun_max_confident_drop)


def longrun_paragraphs(params: Params, family, metrics: dict, curve=None, class_energies=None) -> list[str]:
    """The long-run check in words: what ran, each gate and whether it held, and when it failed
    what the energies, the classes' shares along the way (``curve``, see
    :func:`ebm.evaluation.longrun_row`), the real digits' mean energy by class
    (``class_energies``) and the chain health say about why."""
    if "longrun_stable" not in metrics:
        return ["<p>Not run (evaluate.longrun_factor = 1).</p>"]
    e = params.evaluate
    held = longrun_gates(params).verdicts(metrics)
    gates = [
        (f"FID {metrics['longrun_fid']:.3g} <= {e.longrun_max_fid_ratio:g} x real-vs-real floor "
         f"{metrics['longrun_fid_floor']:.3g} (mean of {e.floor_draws} draws, sd "
         f"{metrics.get('longrun_fid_floor_std', 0.0):.2g})", held["fid"]),
        (f"class coverage {metrics['longrun_coverage']:.3f} >= {e.longrun_min_coverage:g}", held["coverage"]),
        (f"confident share {metrics['longrun_confident_share']:.3f} no more than {e.longrun_max_confident_drop:g} below "
         f"its start {metrics['longrun_confident_share_before']:.3f}", held["confident"]),
    ]
    steps = f"{family.unit(params)} {family.unit_name()}"
    out = [f"<p>{int(metrics['longrun_n'])} chains continued to {e.longrun_factor} x {steps}. "
           f"Before -> after: FID {metrics['longrun_fid_before']:.3g} -> {metrics['longrun_fid']:.3g}, KID "
           f"{metrics['longrun_kid_before']:.3g} -> {metrics['longrun_kid']:.3g}, coverage "
           f"{metrics['longrun_coverage_before']:.3f} -> {metrics['longrun_coverage']:.3f}, mean energy "
           f"{metrics['longrun_energy_before']:.3g} -> {metrics['longrun_energy']:.3g}. "
           f"Stable: <b>{'yes' if metrics['longrun_stable'] else 'no'}</b>.</p>",
           "<ul>" + "".join(f"<li>{'holds' if ok else '<b>fails</b>'}: {text}</li>" for text, ok in gates) + "</ul>"]
    if not metrics["longrun_stable"]:
        drop = metrics["longrun_energy_before"] - metrics["longrun_energy"]
        out.append("<p>Why: " + (
            f"the chains keep descending (mean energy {drop:.3g} lower after the long run): the energy has minima "
            "below the data's, where samples drift away from the data's shapes (compare the long-run grid with "
            "the samples); the chain-health curves show whether the energy is still falling at the last step."
            if drop > 0 else
            "the chains' energy did not fall further, so they drift between minima at the data's level; compare "
            "the coverage and the chain-health curves.") + "</p>")
        if curve is not None and len(curve) > 1:
            from ebm.evaluation import class_drift

            grew, fell = class_drift(curve)
            share = lambda rows: ", ".join(f"{c} ({a:.0%} -> {b:.0%})" for c, a, b in rows)  # noqa: E731
            worst = curve.loc[curve["fid"].idxmax()]
            path = lambda col, fmt: " -> ".join(format(v, fmt) for v in curve[col])  # noqa: E731
            kept = worst["confident_share"] >= curve["confident_share"].iloc[0] - 0.05
            out.append(f"<p>Along the way (the curve below, one point per {family.unit(params)} "
                       f"{family.unit_name()}): FID {path('fid', '.3g')}, "
                       f"recall {path('recall', '.2f')}, precision {path('precision', '.2f')}, confident share "
                       f"{path('confident_share', '.2f')}. The classes that gain the most: {share(grew)}; that "
                       f"lose the most: {share(fell)}. "
                       + ("The digits stay digits (the confident share holds) but fewer kinds of them: the class "
                          "mix drifts and, where recall falls, the strokes within a class converge on the "
                          "energy's minima (compare the long-run grid with the samples)." if kept else
                          "A falling confident share is the digits themselves falling apart.") + "</p>")
        if class_energies is not None and "energy_class_std" in metrics:
            order = [int(c) for c in np.argsort(class_energies) if np.isfinite(class_energies[c])]
            name = lambda cs: ", ".join(f"{c} ({class_energies[c]:+.3f})" for c in cs)  # noqa: E731
            out.append(f"<p>Mean energy of the real test digits by class: lowest {name(order[:3])}, highest "
                       f"{name(order[-3:][::-1])} (spread {metrics['energy_class_std']:.3g}, gap "
                       f"{metrics['energy_class_gap']:.3g}). Chains run long slide from the classes the model gives "
                       "high energy into those it gives low.</p>")
    return out
