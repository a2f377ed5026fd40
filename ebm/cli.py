"""The ``ebm`` command: what a user does by hand. The pipeline itself runs with ``dvc repro``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer

from ebm.entry import arm_interrupt, quiet_tensorflow

app = typer.Typer(help="Energy-based models on handwritten digits. Run the pipeline with `dvc repro`; "
                       "these commands inspect params, draw samples and browse MLflow runs.",
                  no_args_is_help=True, add_completion=False)


@app.callback()
def _setup() -> None:
    arm_interrupt()
    quiet_tensorflow()


def main() -> None:
    """The ``ebm`` console script: :data:`app`, with a broken tracking store or a full disk told
    in one line instead of a traceback."""
    from ebm.errors import TrackingStoreError, disk_full_message

    try:
        app(prog_name="ebm")
    except TrackingStoreError as err:
        typer.secho(f"error: {err}", fg="red", err=True)
        sys.exit(1)
    except OSError as err:
        if (message := disk_full_message(err)) is None:
            raise
        typer.secho(f"error: {message}", fg="red", err=True)
        sys.exit(1)


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
    model: Path = typer.Option(None, help="a .keras model file written by the train stage (default: "
                                          "models/<model.family>/energy.keras)"),
    model_uri: str = typer.Option(None, help="an MLflow model URI, e.g. runs:/<run_id>/model or "
                                             "models:/<model_id> (overrides --model)"),
    out: Path = typer.Option(Path("samples.png"), help="where to write the sample grid (PNG)"),
    n: int = typer.Option(64, min=1, help="number of samples"),
    params_path: Path = typer.Option(None, "--params", help="params file (default: ./params.yaml if there, else "
                                                           "the built-in recipe)"),
    steps: int = typer.Option(None, min=1, help="Langevin steps (default: sampler.steps; deep family)"),
    step_size: float = typer.Option(None, min=0.0, help="step size (default: sampler.step_size)"),
    seed: int = typer.Option(0, help="seed of the starting noise and of the chains"),
) -> None:
    """Draw digits from a trained model of any family, starting from noise (the deep family by
    Langevin dynamics, the Boltzmann families by Gibbs sweeps)."""
    quiet_tensorflow()
    import dataclasses

    from ebm import families
    from ebm.config import ConfigError
    from ebm.errors import ModelFileError
    from ebm.plots import save_grid

    try:
        p = _params(params_path)
        overrides = {k: v for k, v in (("steps", steps), ("step_size", step_size)) if v is not None}
        shown = [k for k in p.generate.snapshot_steps if k <= overrides.get("steps", p.sampler.steps)] or [0]
        p = dataclasses.replace(p, sampler=dataclasses.replace(p.sampler, **overrides),  # snapshots: unused here
                                generate=dataclasses.replace(p.generate, seed=seed, snapshot_steps=shown))
        families.get(p.model.family).configure(p)  # before TensorFlow runs an op
        family, network = _load_model(model_uri, model or _model_file(p))
    except (ConfigError, ModelFileError, ValueError) as err:
        _fail(str(err))
        return
    save_grid(family.sample(p, network, n, seed), out)
    typer.echo(f"{n} {family.name} samples x {family.unit(p)} {family.unit_name(sampler=True)} -> {out}")


@app.command()
def score(
    images: list[Path] = typer.Argument(..., help="PNG files of grey digits (28x28, or 32x32 padded) or .npz files"),
    model: Path = typer.Option(None, help="a .keras model file of any family (default: "
                                          "models/<model.family>/energy.keras)"),
    data: Path = typer.Option(Path("data/prepared"), help="prepared splits: the test digits set the threshold"),
    false_alarm: float = typer.Option(0.05, min=0.0, max=1.0, help="share of real test digits the flag may "
                                                                   "call unlike the data"),
    out: Path = typer.Option(Path("scores.csv"), help="where to write the scores (CSV)"),
    params_path: Path = typer.Option(None, "--params", help="params file (default: ./params.yaml if there, else "
                                                           "the built-in recipe)"),
) -> None:
    """The energy of each image (low = like the training digits) and a flag at a threshold set on
    the real test digits so that a --false-alarm share of them fall above it: out-of-distribution
    screening from the command line."""
    quiet_tensorflow()
    import numpy as np
    import pandas as pd

    from ebm import families
    from ebm.config import ConfigError
    from ebm.data import DataError, load_split
    from ebm.errors import ModelFileError
    from ebm.images import read_images
    from ebm.io import write_csv_atomic
    from ebm.metrics import energies_of

    try:
        p = _params(params_path)
        names, x = read_images(images)
        test = load_split(data / "test.npz")
        families.get(p.model.family).configure(p)
        family, network = _load_model(None, model or _model_file(p))
    except (ConfigError, DataError, ModelFileError) as err:
        _fail(str(err))
        return
    energy = family.energy(network)
    reference = energies_of(energy, test.x, p.evaluate.batch_size)
    threshold = float(np.quantile(reference, 1.0 - false_alarm))
    scores = energies_of(energy, x, p.evaluate.batch_size)
    table = pd.DataFrame({"image": names, "energy": scores, "looks_like_data": scores <= threshold})
    write_csv_atomic(out, table)
    typer.echo(f"{int(table['looks_like_data'].sum())} of {len(table)} image(s) look like the training digits "
               f"({family.name} energy <= {threshold:.4g}, which {1 - false_alarm:.0%} of the {len(reference)} real "
               f"test digits meet) -> {out}")


@app.command()
def complete(
    images: list[Path] = typer.Argument(..., help="PNG files of grey digits (28x28, or 32x32 padded) or .npz files"),
    mask: str = typer.Option("bottom-half", help="the pixels to fill: bottom-half, top-half, left-half, right-half, "
                                                 "center-square, random:<rate>, or a 28x28 mask image (white = fill)"),
    model: Path = typer.Option(None, help="a .keras model file (default: models/<model.family>/energy.keras)"),
    chains: int = typer.Option(4, min=1, help="completions per image, each from its own noise"),
    steps: int = typer.Option(None, min=1, help="Langevin steps or Gibbs sweeps (default: sampler.steps / "
                                                "generate.gibbs_steps)"),
    out: Path = typer.Option(Path("completions.png"), help="the grid: input, mask, completions; and an .npz beside"),
    params_path: Path = typer.Option(None, "--params", help="params file (default: ./params.yaml if there, else "
                                                           "the built-in recipe)"),
    seed: int = typer.Option(0, min=0, help="seed of the noise the hidden pixels start from and of the chains"),
) -> None:
    """Fill the masked pixels of each image with the model, the other pixels clamped: Langevin
    chains on the hidden pixels (deep family) or Gibbs sweeps with clamped visible units (rbm)."""
    quiet_tensorflow()
    import numpy as np

    from ebm import families
    from ebm.config import ConfigError
    from ebm.data import DataError
    from ebm.errors import ModelFileError
    from ebm.images import hidden_mask, read_images
    from ebm.io import save_npz_atomic
    from ebm.plots import save_grid

    try:
        p = _params(params_path)
        names, x = read_images(images)
        hidden = hidden_mask(mask, len(x), seed)
        families.get(p.model.family).configure(p)
        family, network = _load_model(None, model or _model_file(p))
        k = steps or family.unit(p)
        filled = np.stack([family.complete(p, network, x, hidden, k, seed + c) for c in range(chains)], axis=1)
    except (ConfigError, DataError, ModelFileError, ValueError) as err:
        _fail(str(err))
        return
    shown = np.where(hidden, 0.0, x)  # the input as the chains saw it: hidden pixels grey
    rows = np.concatenate([shown[:, None], np.where(hidden, 1.0, -1.0)[:, None].astype(np.float32), filled], axis=1)
    save_grid(rows.reshape(-1, *x.shape[1:]), out, ncols=rows.shape[1])
    save_npz_atomic(out.with_suffix(".npz"), completions=filled, hidden=hidden, images=x)
    typer.echo(f"{len(x)} image(s) x {chains} {family.name} completion(s) of the {mask} mask, {k} "
               f"{family.unit_name(sampler=True)} -> {out} (rows: input, mask, completions), {out.with_suffix('.npz')}")


@app.command()
def evaluate(
    model_uri: str = typer.Option(None, help="an MLflow model URI: runs:/<run_id>/model or models:/<model_id>"),
    model: Path = typer.Option(None, help="or a .keras energy network file"),
    out: Path = typer.Option(Path("eval"), help="folder for samples, figures, metrics.json and report.html"),
    params_path: Path = typer.Option(None, "--params", help="params file (default: ./params.yaml if there, else the "
                                                           "built-in recipe)"),
    data: Path = typer.Option(Path("data/prepared"), help="prepared splits (the prepare stage's output)"),
    classifier: Path = typer.Option(Path("models/classifier.keras"), help="the classifier stage's model"),
    n: int = typer.Option(None, min=2, help="samples to draw (default: generate.n)"),
) -> None:
    """Generate from any energy network (a logged MLflow model or a file) and evaluate it: the same
    metrics and HTML report as the pipeline, written to --out. Logs nothing to MLflow."""
    quiet_tensorflow()
    import dataclasses

    from ebm.config import ConfigError
    from ebm.data import DataError
    from ebm.errors import ModelFileError
    from ebm.pipeline import EvaluatePaths, GeneratePaths, evaluate as run_evaluate, generate as run_generate

    if bool(model_uri) == bool(model):
        _fail("give exactly one of --model-uri and --model")
    try:
        p = _params(params_path)
        if n:  # the long-run check continues at most the n chains drawn
            p = dataclasses.replace(p, generate=dataclasses.replace(p.generate, n=n),
                                    evaluate=dataclasses.replace(p.evaluate, longrun_n=min(n, p.evaluate.longrun_n)))
        _, network = _load_model(model_uri, model)
        g = GeneratePaths(samples=out / "samples.npz", grid=out / "samples.png", chains=out / "chains.png",
                          gif=out / "chains.gif", health=out / "chain_health.csv",
                          health_plot=out / "chain_health.png", record=out / "runs" / "generate.json")
        run_generate(p, g, network=network, track=False)
        e = EvaluatePaths(data=data, classifier=classifier, samples=g.samples, generate_reports=out,
                          negatives=out / "negatives.png", filters=out / "filters.png", history=out / "history.csv",
                          metrics=out / "metrics.json", figures=out / "figures", ood=out / "ood.csv",
                          report=out / "report.html", record=out / "runs" / "evaluate.json",
                          reference=Path("reference/draws.csv"))
        _history_of(model_uri, e.history)
        run_evaluate(p, e, network=network, track=False, title=f"Evaluation of {model_uri or model}")
    except (ConfigError, DataError, ModelFileError) as err:
        _fail(str(err))
    typer.echo(f"report -> {out / 'report.html'}")


def _history_of(model_uri: str | None, path: Path) -> None:
    """The training history of the run that logged ``model_uri`` (for the loss curves), if any."""
    import pandas as pd

    rows = []
    if model_uri and model_uri.startswith("runs:/"):
        import mlflow

        from ebm.tracking import Tracker

        client = mlflow.MlflowClient(Tracker().uri)
        run_id = model_uri.split("/")[1]
        run = client.get_run(run_id)
        for key in run.data.metrics:
            for m in client.get_metric_history(run_id, key):
                rows.append({"epoch": m.step, "metric": key, "value": m.value})
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(rows, columns=["epoch", "metric", "value"])
    if not table.empty:
        table = table[table["epoch"] > 0].pivot_table(index="epoch", columns="metric", values="value").reset_index()
    table.to_csv(path, index=False)


@app.command("resume-states")
def resume_states(
    clean: bool = typer.Option(False, help="delete the states listed"),
    older_than: float = typer.Option(0.0, min=0.0, help="only states not written for this many days"),
) -> None:
    """The saved training states of deep runs that stopped before their end ($EBM_RESUME_DIR or
    .ebm/resume): a rerun with the same params and data resumes from one; a changed param never
    will. Lists them; --clean deletes them."""
    import time

    from ebm.families.deep import resume

    cutoff = time.time() - older_than * 86400
    states = [s for s in resume.saved_states() if s.modified <= cutoff]
    for state in states:
        age = (time.time() - state.modified) / 86400
        epoch = "unreadable" if state.epoch is None else f"after epoch {state.epoch}"
        typer.echo(f"{state.path}  {epoch}  {state.bytes / 1e6:.1f} MB  {age:.1f} days old")
        if clean:
            resume.remove(state)
    total = sum(s.bytes for s in states) / 1e6
    where = resume.resume_dir()
    typer.echo(f"{'deleted' if clean else 'found'} {len(states)} state(s), {total:.1f} MB, in {where}")


def _params(path: Path | None):
    """``path`` (an error if it is not there); without one, ./params.yaml if there, else the
    built-in recipe (the same as params.yaml's)."""
    from ebm.config import Params, load_params

    if path is not None:
        return load_params(path)
    return load_params("params.yaml") if Path("params.yaml").is_file() else Params()


def _model_file(p) -> Path:
    """The train stage's model file of ``model.family`` (the default of every ``--model``)."""
    return Path("models") / p.model.family / "energy.keras"


def _load_model(model_uri: str | None, model: Path | None):
    """``(family, model)`` from an MLflow model URI or a model file."""
    from ebm import families

    if model_uri:
        network = load_network_uri(model_uri)
        return families.family_of(network, model_uri), network
    return families.load_model(model)


def load_network_uri(uri: str):
    """An energy network from an MLflow model URI (``runs:/<run_id>/model``, ``models:/<id>``)."""
    import mlflow

    from ebm.errors import ModelFileError
    from ebm.tracking import Tracker

    from ebm import families

    mlflow.set_tracking_uri(Tracker().uri)
    families.register_all()
    try:
        return mlflow.keras.load_model(uri)
    except Exception as err:  # MLflow raises many types for a bad URI
        raise ModelFileError(f"could not load an MLflow Keras model from {uri} ({type(err).__name__}: {err})") from err


def _experiments(tracker, name: str | None, every: bool) -> list[str]:
    from ebm.config import Params, load_params

    if every:
        return [e.name for e in tracker.client.search_experiments()]
    if name:
        return [name]
    params_file = tracker.root / "params.yaml"
    return [tracker.experiment_name(load_params(params_file) if params_file.is_file() else Params())]


@app.command()
def runs(
    stage: str = typer.Option(None, help="only runs of this stage (prepare, train, generate, evaluate)"),
    experiment: str = typer.Option(None, help="MLflow experiment (default: this commit's, see tracking.experiment)"),
    all_experiments: bool = typer.Option(False, "--all", help="runs of every experiment"),
    close_stale: bool = typer.Option(False, help="first end RUNNING runs whose process is gone (as KILLED)"),
    csv: Path = typer.Option(None, help="also write the table as CSV"),
) -> None:
    """List the stage runs of the project's MLflow store (newest first)."""
    import mlflow
    import pandas as pd

    from ebm.tracking import Tracker, close_stale_runs

    tracker = Tracker()
    if close_stale:
        closed = close_stale_runs(tracker)
        typer.echo(f"closed {len(closed)} stale run(s): {', '.join(closed) or '-'}")
    mlflow.set_tracking_uri(tracker.uri)
    names = _experiments(tracker, experiment, all_experiments)
    table = mlflow.search_runs(experiment_names=names, order_by=["attributes.start_time DESC"])
    if table.empty or "tags.ebm.stage" not in table:
        typer.echo(f"no stage runs in {', '.join(names)} at {tracker.uri}")
        return
    table = table[table["tags.ebm.stage"].notna()]
    if stage:
        table = table[table["tags.ebm.stage"] == stage]
    columns = ["run_id", "tags.ebm.stage", "tags.dvc.exp_name", "status", "start_time"]
    columns += sorted(c for c in table.columns if c.startswith("metrics.") and table[c].notna().any())
    shown = table[[c for c in columns if c in table.columns]]
    shown.columns = [c.split(".", 1)[1] if c.startswith(("tags.", "metrics.")) else c for c in shown.columns]
    with pd.option_context("display.max_columns", None, "display.width", 250):
        typer.echo(shown.to_string(index=False))
    if csv:
        shown.to_csv(csv, index=False)


@app.command()
def compare(
    experiment: str = typer.Option(None, help="MLflow experiment (default: this commit's, see tracking.experiment)"),
    all_experiments: bool = typer.Option(False, "--all", help="compare across every experiment"),
    sort: str = typer.Option("fid", help="column to sort by (a metric or a param; lower FID is better)"),
    descending: bool = typer.Option(False, help="sort high to low"),
    fmt: str = typer.Option("table", "--format", help="table, csv or markdown"),
    out: Path = typer.Option(None, help="write to this file instead of the terminal"),
    draws: bool = typer.Option(False, "--draws", help="one row per run, instead of one per recipe"),
) -> None:
    """Rank recipes: the runs whose params differ only by seeds in one row (n, mean, sd, 95%
    interval and worst draw of each metric, and whether each row is within noise of the best);
    --draws lists every pipeline run (one per DVC experiment) instead."""
    import mlflow

    from ebm.compare import experiments_table, recipes_table, render
    from ebm.tracking import Tracker

    tracker = Tracker()
    mlflow.set_tracking_uri(tracker.uri)
    names = _experiments(tracker, experiment, all_experiments)
    runs_df = mlflow.search_runs(experiment_names=names)
    try:
        rank = experiments_table if draws else recipes_table
        table = rank(runs_df, sort_by=sort if sort else None, ascending=not descending)
        text = render(table, fmt)
    except (KeyError, ValueError) as err:
        _fail(str(err))
        return
    if out:
        out.write_text(text if text.endswith("\n") else text + "\n")
        typer.echo(f"{len(table)} {'experiment' if draws else 'recipe'}(s) -> {out}")
    else:
        typer.echo(text)


@app.command("reference-draws")
def reference_draws_command(
    experiment: str = typer.Option(None, help="MLflow experiment (default: this commit's, see tracking.experiment)"),
    all_experiments: bool = typer.Option(False, "--all", help="the runs of every experiment"),
    out: Path = typer.Option(Path("reference/draws.csv"), help="the CSV the evaluate stage compares each run with"),
    cpu: str = typer.Option(None, help="the CPU of runs logged without the ebm.cpu tag (it names the host)"),
) -> None:
    """Write the finished pipeline runs as reference draws (recipe hash, seeds, CPU, key metrics):
    the evaluate stage's report then says where a new run of the same recipe sits among them.
    Commit the file with the recipe."""
    import mlflow
    import yaml

    from ebm.compare import reference_draws
    from ebm.config import ConfigError, parse_params
    from ebm.io import write_csv_atomic
    from ebm.tracking import Tracker

    tracker = Tracker()
    mlflow.set_tracking_uri(tracker.uri)
    runs_df = mlflow.search_runs(experiment_names=_experiments(tracker, experiment, all_experiments))

    def recipe_of(run_id: str) -> str:
        tags = tracker.client.get_run(run_id).data.tags
        if tags.get("ebm.recipe"):
            return tags["ebm.recipe"]
        try:  # a run logged before the tag: its params.yaml, validated as today
            return parse_params(yaml.safe_load(Path(tracker.client.download_artifacts(run_id, "params.yaml")).read_text())
                                ).recipe_digest()
        except (OSError, ConfigError, yaml.YAMLError):
            return "unknown"

    if runs_df.empty:
        _fail("no runs found")
    table = reference_draws(runs_df, recipe_of, cpu)
    write_csv_atomic(out, table)
    typer.echo(f"{len(table)} draw(s) of {table['recipe'].nunique()} recipe(s) -> {out}")


@app.command()
def register(
    experiment: str = typer.Option(None, help="MLflow experiment (default: this commit's, see tracking.experiment)"),
    all_experiments: bool = typer.Option(False, "--all", help="the best across every experiment"),
    metric: str = typer.Option("fid", help="metric that ranks the pipeline runs"),
    descending: bool = typer.Option(False, help="higher is better (e.g. coverage); by default lower is"),
    name: str = typer.Option("ebm-energy", help="registered model name"),
) -> None:
    """Register the energy network of the best pipeline run (lowest FID by default) in the
    MLflow model registry and point the alias `best` at it."""
    from ebm.registry import RegistryError, register_best
    from ebm.tracking import Tracker

    tracker = Tracker()
    names = _experiments(tracker, experiment, all_experiments)
    ids = [e.experiment_id for n in names if (e := tracker.client.get_experiment_by_name(n)) is not None]
    if not ids:
        _fail(f"no MLflow experiment named {', '.join(names)} in {tracker.uri}")
    try:
        with tracker.locked():
            done = register_best(tracker.client, ids, name, metric, ascending=not descending)
    except RegistryError as err:
        _fail(str(err))
        return
    what = "registered as" if done.new else "already registered as"
    typer.echo(f"best {done.metric} = {done.value:.4g}: pipeline run {done.pipeline_run} (training run "
               f"{done.train_run})\n{what} {done.name} version {done.version}, alias @best -> {done.uri}\n"
               f"draw from it: ebm sample --model-uri {done.uri}")


@app.command()
def ui(
    host: str = typer.Option("127.0.0.1", help="address to bind (loopback by default)"),
    port: int = typer.Option(5000, help="port"),
    experiment: str = typer.Option("", help="experiment to open (default: the most recently active one)"),
    browser: bool = typer.Option(True, help="open a browser where one exists"),
) -> None:
    """Open the MLflow UI on the project's store, on the runs table of an experiment (the classic
    ML view, with metrics), and print its address. With MLFLOW_TRACKING_URI=http://... the
    server already serves the UI: print (and open) its address there, start nothing."""
    import threading
    import webbrowser

    from ebm.tracking import RUNS_VIEW, Tracker, runs_url

    tracker = Tracker()
    found = tracker.client.get_experiment_by_name(experiment) if experiment else latest_experiment(tracker)
    if experiment and found is None:
        raise typer.BadParameter(f"no MLflow experiment named {experiment!r} in {tracker.uri}", param_hint="--experiment")
    if found is not None:  # an experiment from before the metrics view existed gets it now
        with tracker.locked():
            tracker.ensure_experiment(found.name)
    remote = tracker.uri.startswith(("http://", "https://"))  # a tracking server already serves the UI
    base = tracker.uri if remote else f"http://{host}:{port}"
    url = runs_url(base, found.experiment_id if found else None)
    typer.echo(f"MLflow UI for {tracker.uri}:\n  {url}")
    if found is not None:
        typer.echo(f"  (pipelines ranked by FID; every run, stages nested: "
                   f"{runs_url(base, found.experiment_id, RUNS_VIEW)})")
    if browser:
        threading.Timer(0.0 if remote else 3.0, lambda: webbrowser.open(url)).start()  # no-op without a browser
    if remote:
        return
    raise typer.Exit(subprocess.call([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracker.uri,
                                      "--host", host, "--port", str(port)]))


def latest_experiment(tracker):
    """The experiment with the most recent run (None in an empty store)."""
    ids = [e.experiment_id for e in tracker.client.search_experiments()]
    runs = tracker.client.search_runs(ids, order_by=["attributes.start_time DESC"], max_results=1) if ids else []
    return tracker.client.get_experiment(runs[0].info.experiment_id) if runs else None


if __name__ == "__main__":
    app()
