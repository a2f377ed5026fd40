"""Where each stage reads and writes. ``dvc.yaml`` passes every path explicitly; these defaults
only serve a hand run from the repository root and the tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PreparePaths:
    data: Path = Path("data/prepared")
    record: Path = Path("reports/runs/prepare.json")


@dataclass(frozen=True)
class TrainPaths:
    data: Path = Path("data/prepared")
    model: Path = Path("models/deep/energy.keras")
    history: Path = Path("reports/train/deep/history.csv")
    negatives: Path = Path("reports/train/deep/negatives.png")
    filters: Path = Path("reports/train/deep/filters.png")
    metrics: Path | None = None  # the run's summary for `dvc metrics show`; None: metrics.json beside the history
    objective: Path | None = None  # the objective per epoch for `dvc plots`; None: objective.csv beside the history
    record: Path = Path("reports/runs/train-deep.json")
    snapshots: Path | None = None  # train.snapshot_every's models; None: a "snapshots" folder beside the model

    @property
    def snapshot_folder(self) -> Path:
        """Where ``train.snapshot_every``'s models go (a DVC output, empty where none are kept)."""
        return self.snapshots or self.model.parent / "snapshots"

    @property
    def metrics_file(self) -> Path:
        return self.metrics or self.history.parent / "metrics.json"

    @property
    def objective_file(self) -> Path:
        return self.objective or self.history.parent / "objective.csv"


@dataclass(frozen=True)
class ClassifierPaths:
    data: Path = Path("data/prepared")
    model: Path = Path("models/classifier.keras")
    metrics: Path = Path("reports/classifier/metrics.json")
    record: Path = Path("reports/runs/classifier.json")


@dataclass(frozen=True)
class GeneratePaths:
    model: Path = Path("models/deep/energy.keras")
    samples: Path = Path("data/generated/samples.npz")
    grid: Path = Path("reports/generate/samples.png")
    chains: Path = Path("reports/generate/chains.png")
    gif: Path = Path("reports/generate/chains.gif")
    health: Path = Path("reports/generate/chain_health.csv")
    health_plot: Path = Path("reports/generate/chain_health.png")
    record: Path = Path("reports/runs/generate.json")


@dataclass(frozen=True)
class EvaluatePaths:
    data: Path = Path("data/prepared")
    model: Path = Path("models/deep/energy.keras")
    classifier: Path = Path("models/classifier.keras")
    classifier_metrics: Path = Path("reports/classifier/metrics.json")
    samples: Path = Path("data/generated/samples.npz")
    history: Path = Path("reports/train/deep/history.csv")
    generate_reports: Path = Path("reports/generate")
    negatives: Path = Path("reports/train/deep/negatives.png")
    filters: Path = Path("reports/train/deep/filters.png")
    metrics: Path = Path("reports/metrics.json")
    figures: Path = Path("reports/evaluate")
    ood: Path = Path("reports/evaluate/ood.csv")
    report: Path = Path("reports/report.html")
    record: Path = Path("reports/runs/evaluate.json")
    reference: Path | None = None  # draws of recipes measured before (ebm reference-draws): the report's "spread"
