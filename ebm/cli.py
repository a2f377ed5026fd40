"""The ``ebm`` command: what a user does by hand. The pipeline itself runs with ``dvc repro``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer

from ebm.entry import quiet_tensorflow

app = typer.Typer(help="Energy-based models on handwritten digits. Run the pipeline with `dvc repro`; "
                       "these commands inspect params, draw samples and browse MLflow runs.",
                  no_args_is_help=True, add_completion=False)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(1)


@app.command()
def params(path: Path = typer.Option(Path("params.yaml"), help="params file to check")) -> None:
    """Validate params.yaml and print every key with its value."""
    from ebm.config import ConfigError, flatten, load_params

    try:
        p = load_params(path)
    except ConfigError as err:
        _fail(str(err))
    for key, value in flatten(p.to_dict()).items():
        typer.echo(f"{key} = {value}")
    typer.echo(f"# params hash {p.digest()}")


@app.command()
def sample(
    model: Path = typer.Option(Path("models/energy.keras"), help="a .keras energy network written by the train stage"),
    model_uri: str = typer.Option(None, help="an MLflow URI of a logged .keras artifact folder or file, "
                                             "e.g. runs:/<run_id>/model (overrides --model)"),
    out: Path = typer.Option(Path("samples.png"), help="where to write the sample grid (PNG)"),
    n: int = typer.Option(64, min=1, help="number of samples"),
    params_path: Path = typer.Option(Path("params.yaml"), "--params", help="params file for the sampler section"),
    steps: int = typer.Option(None, min=1, help="Langevin steps (default: sampler.steps)"),
    step_size: float = typer.Option(None, min=0.0, help="step size (default: sampler.step_size)"),
    seed: int = typer.Option(0, help="seed of the starting noise and of the chains"),
) -> None:
    """Draw digits from a trained energy network with Langevin dynamics, starting from noise."""
    quiet_tensorflow()
    import dataclasses

    import tensorflow as tf

    from ebm.config import ConfigError, Params, load_params
    from ebm.network import ModelFileError, energy_fn, load_energy_network
    from ebm.pipeline import generation_sampler
    from ebm.plots import save_grid

    try:
        p = load_params(params_path) if params_path.is_file() else Params()
        overrides = {k: v for k, v in (("steps", steps), ("step_size", step_size)) if v is not None}
        p = dataclasses.replace(p, sampler=dataclasses.replace(p.sampler, **overrides),
                                generate=dataclasses.replace(p.generate, seed=seed))
        if model_uri:
            model = _download_model(model_uri)
        network = load_energy_network(model)
    except (ConfigError, ModelFileError, ValueError) as err:
        _fail(str(err))
        return
    x0 = tf.random.Generator.from_seed(seed).uniform((n, 32, 32, 1), -1.0, 1.0)
    samples, _ = generation_sampler(p).chain(energy_fn(network), x0)
    save_grid(samples.numpy(), out)
    typer.echo(f"{n} samples x {p.sampler.steps} steps -> {out}")


def _download_model(uri: str) -> Path:
    """Fetch a logged model artifact from the project's MLflow store; return the .keras file."""
    import mlflow

    from ebm.tracking import repo_root, tracking_uri

    mlflow.set_tracking_uri(tracking_uri(repo_root()))
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    if local.is_dir():
        found = sorted(local.rglob("*.keras"))
        if not found:
            raise ValueError(f"{uri} holds no .keras file")
        local = found[0]
    return local


@app.command()
def runs(
    stage: str = typer.Option(None, help="only runs of this stage (prepare, train, generate, evaluate)"),
    experiment: str = typer.Option(None, help="MLflow experiment (default: tracking.experiment in params.yaml)"),
    csv: Path = typer.Option(None, help="also write the table as CSV"),
) -> None:
    """List the MLflow runs of the project's store as a table (newest first)."""
    import mlflow

    from ebm.config import load_params
    from ebm.tracking import repo_root, tracking_uri

    root = repo_root()
    mlflow.set_tracking_uri(tracking_uri(root))
    name = experiment or (load_params(root / "params.yaml").tracking.experiment
                          if (root / "params.yaml").is_file() else "ebm")
    table = mlflow.search_runs(experiment_names=[name], order_by=["attributes.start_time DESC"])
    if table.empty:
        typer.echo(f"no runs in experiment {name!r} at {tracking_uri(root)}")
        return
    if stage:
        table = table[table["tags.ebm.stage"] == stage]
    columns = ["run_id", "tags.ebm.stage", "tags.dvc.exp_name", "status", "start_time"]
    columns += sorted(c for c in table.columns if c.startswith("metrics."))
    shown = table[[c for c in columns if c in table.columns]]
    shown.columns = [c.split(".", 1)[1] if c.startswith(("tags.", "metrics.")) else c for c in shown.columns]
    import pandas as pd

    with pd.option_context("display.max_columns", None, "display.width", 200):
        typer.echo(shown.to_string(index=False))
    if csv:
        shown.to_csv(csv, index=False)


@app.command()
def ui(
    host: str = typer.Option("127.0.0.1", help="address to bind (loopback by default)"),
    port: int = typer.Option(5000, help="port"),
) -> None:
    """Open the MLflow UI on the project's store (the SQLite file at the repository root)."""
    from ebm.tracking import repo_root, tracking_uri

    uri = tracking_uri(repo_root())
    typer.echo(f"MLflow UI on http://{host}:{port} for {uri}")
    raise typer.Exit(subprocess.call([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                                      "--host", host, "--port", str(port)]))


if __name__ == "__main__":
    app()
