"""MLflow tracking: where runs go, how they are grouped and tagged, and how they end.

* **Where.** One store for the whole repository: ``$MLFLOW_TRACKING_URI`` if set, else the
  SQLite file ``<root>/mlflow.db`` with artifacts under ``<root>/mlartifacts``. The root is
  ``$DVC_ROOT`` (DVC sets it to the real repository even for queued experiments, which run in
  temporary copies), never the working directory.
* **Grouping.** One MLflow experiment per sweep (named after the DVC baseline commit, or
  ``tracking.experiment``); one *parent* run per pipeline run, keyed by the DVC experiment
  name (for a plain ``dvc repro``: commit + params hash), holding all params and
  ``params.yaml``, spanning the pipeline (RUNNING from its first stage's start to its last
  stage's end, with that stage's status); one *child* run per stage under it. The data a stage
  reads is logged as MLflow dataset inputs (name, MD5 digest as in ``dvc.lock``, path).
* **Status.** A stage that raises ends FAILED; SIGINT/SIGTERM end it KILLED. Each run records
  its host and pid, so :func:`close_stale_runs` can end runs whose process died.
* **Concurrency.** SQLite allows one writer at a time, and MLflow's own retries do not cover
  table creation or long lock waits, so parallel queued experiments (``dvc queue start -j 2``)
  can fail with "database is locked", and two processes opening a store that does not exist yet
  both create its tables ("table ... already exists"). Opening the local SQLite store and every
  write to it go through :func:`store_lock`, an exclusive ``flock`` on ``<root>/mlflow.db.lock``;
  writes are short, so waiting is cheap. With a tracking server (``MLFLOW_TRACKING_URI=http://...``) no lock is taken.

Only stage entry points and the CLI call this module; the math never does.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import types
import time
import warnings
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import yaml

from ebm.config import Params, flatten
from ebm.errors import TrackingStoreError, first_line
from ebm.io import write_text_atomic

STORE_FILE = "mlflow.db"
ARTIFACT_DIR = "mlartifacts"
MAX_PARAMS_PER_BATCH = 100


def repo_root(start: str | Path | None = None) -> Path:
    """``$DVC_ROOT`` if set, else the nearest folder at or above ``start`` holding ``.dvc``."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / ".dvc").is_dir():
            return folder
    return here


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / STORE_FILE}"


def _local_sqlite(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Exclusive inter-process lock around writes to a local SQLite store; a no-op otherwise."""
    db = _local_sqlite(uri)
    if db is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _git(root: Path, *args: str) -> str:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
VIEW_METRICS = ("fid", "kid", "precision", "recall", "coverage", "confident_share", "longrun_stable", "test_loglik")
RANKED_VIEW, RUNS_VIEW = "ebm-ranked", "ebm-runs"  # the MLflow UI views that links open with


def runs_views() -> dict[str, str]:
    """The runs-table views that links open with, as the UI's "Share" button stores them (an
    experiment tag ``mlflow.sharedViewState.<key>`` holding the UI state as JSON), both showing
    the datasets and the key metrics as columns:

    * ``ebm-ranked``: the pipeline runs only, best FID first: the sweep's leaderboard (MLflow
      lists runs flat when sorted by a metric, so the stage runs are filtered out);
    * ``ebm-runs``: every run, newest first, stages nested under their pipeline run.
    """
    columns = ["attributes.`Dataset`", *(f"metrics.`{name}`" for name in VIEW_METRICS)]
    ranked = {"selectedColumns": columns, "searchFilter": "tags.`ebm.role` = 'pipeline'",
              "orderByKey": "metrics.`fid`", "orderByAsc": True}
    nested = {"selectedColumns": columns, "orderByKey": "attributes.start_time", "orderByAsc": False}
    return {f"mlflow.sharedViewState.{RANKED_VIEW}": json.dumps(ranked),
            f"mlflow.sharedViewState.{RUNS_VIEW}": json.dumps(nested)}


def runs_url(base: str, experiment_id: str | None = None, view: str | None = RANKED_VIEW) -> str:
    """The MLflow UI's runs table (of one experiment, or the experiment list), on the classic
    ML view (MLflow 3 otherwise lands on its GenAI overview: traces, token usage) and, for an
    experiment, in one of the views of :func:`runs_views`."""
    if experiment_id is None:
        return f"{base.rstrip('/')}/#/experiments?workflowType=machine_learning"
    shared = f"&viewStateShareKey={view}" if view else ""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning{shared}"


class Tracker:
    """The project's MLflow store, reached through one client with every write locked."""

    def __init__(self, root: Path | None = None):
        from mlflow import MlflowClient

        self.root = root or repo_root()
        self.uri = tracking_uri(self.root)
        with store_lock(self.uri):  # opening a new SQLite store creates its tables: one process at a time
            try:
                self.client = MlflowClient(tracking_uri=self.uri)
                self.client.search_experiments(max_results=1)
            except Exception as err:  # sqlalchemy, MLflow and HTTP errors alike: the store is the problem
                raise TrackingStoreError(store_problem(self.uri, err)) from err

    @contextlib.contextmanager
    def locked(self):
        """The store lock, with a stage's SIGINT/SIGTERM held until the write is done: an
        interrupt inside MLflow's database session came out as an MlflowException ("This
        transaction is closed") and the run ended FAILED instead of KILLED."""
        with signals_deferred(), store_lock(self.uri):
            yield

    def experiment_name(self, params: Params) -> str:
        """``tracking.experiment`` if set, else one experiment per DVC baseline commit."""
        if params.tracking.experiment:
            return params.tracking.experiment
        return f"ebm-{self.baseline_rev()[:7] or 'nogit'}"

    def baseline_rev(self) -> str:
        return os.environ.get("DVC_EXP_BASELINE_REV") or _git(self.root, "rev-parse", "HEAD")

    def ensure_experiment(self, name: str) -> str:
        """The experiment's id, created if new; tagged as model development (not GenAI) and with
        the runs views of :func:`runs_views` either way."""
        tags = {EXPERIMENT_KIND[0]: EXPERIMENT_KIND[1], **runs_views()}
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            for key, value in tags.items():
                if found.tags.get(key) != value:
                    self.client.set_experiment_tag(found.experiment_id, key, value)
            return found.experiment_id
        location = (self.root / ARTIFACT_DIR / name).as_uri() if _local_sqlite(self.uri) else None
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(name, artifact_location=location, tags=tags)
        except MlflowException as err:
            # a tracking server has no store lock: two queue workers of one baseline commit can both
            # miss the experiment, and the second one's create then fails; use the winner's
            if err.error_code != "RESOURCE_ALREADY_EXISTS" or (found := self.client.get_experiment_by_name(name)) is None:
                raise
            return found.experiment_id

    def pipeline_key(self, params: Params) -> str:
        """The DVC experiment name; for a plain ``dvc repro``, commit + params hash."""
        return os.environ.get("DVC_EXP_NAME") or f"repro-{self.baseline_rev()[:7] or 'nogit'}-{params.digest()}"

    def tags(self, params: Params) -> dict[str, str]:
        """The project's tags of a run, and MLflow's standard source, version and user tags
        (the UI's Source, Version and User columns; the source is ``dvc.yaml``, a stage run's
        its module, :func:`stage_run`)."""
        commit = _git(Path.cwd(), "rev-parse", "HEAD") or _git(self.root, "rev-parse", "HEAD")
        dirty = bool(_git(Path.cwd(), "status", "--porcelain", "--untracked-files=no"))
        remote = _git(self.root, "remote", "get-url", "origin")
        branch = _git(self.root, "rev-parse", "--abbrev-ref", "HEAD")
        return {
            "mlflow.source.name": "dvc.yaml",
            "mlflow.source.type": "LOCAL",
            "mlflow.user": _user(),
            **({"mlflow.source.git.commit": commit} if commit else {}),
            **({"mlflow.source.git.repoURL": remote} if remote else {}),
            **({"mlflow.source.git.branch": branch} if branch and branch != "HEAD" else {}),
            "dvc.exp_name": os.environ.get("DVC_EXP_NAME", "workspace"),
            "dvc.baseline_rev": self.baseline_rev(),
            "git.commit": commit or "unknown",
            "git.dirty": str(dirty).lower(),
            "params.hash": params.digest(),
            "ebm.recipe": params.recipe_digest(),  # the same for every seed of a recipe: the UI's Group by
            "ebm.cpu": cpu_name(),
            "ebm.family": params.model.family,
            "ebm.pipeline_key": self.pipeline_key(params),
        }

    def parent_run(self, experiment_id: str, params: Params, tags: dict[str, str]) -> str:
        """The pipeline's parent run, created (RUNNING, with all params) when its first stage
        starts; each stage sets it RUNNING when it starts and to its own status when it ends
        (:meth:`StageRun.end`), so the parent spans the pipeline: its start is the first stage's,
        its end the last stage's, its status the last stage's."""
        key = tags["ebm.pipeline_key"]
        found = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`ebm.pipeline_key` = '{key}' and tags.`ebm.role` = 'pipeline'",
            max_results=1)
        if found:
            return found[0].info.run_id
        run = self.client.create_run(experiment_id, run_name=key, tags={**tags, "ebm.role": "pipeline"})
        self._log_params(run.info.run_id, flatten(params.to_dict()))
        with tempfile.TemporaryDirectory() as tmp:  # the validated params, defaults filled in
            path = Path(tmp) / "params.yaml"
            path.write_text(yaml.safe_dump(params.to_dict(), sort_keys=False, default_flow_style=None))
            self.client.log_artifact(run.info.run_id, str(path))
        return run.info.run_id

    def _log_params(self, run_id: str, values: Mapping[str, object]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in values.items()]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=items[i:i + MAX_PARAMS_PER_BATCH])


class StageKilled(BaseException):
    """Raised in a stage when it receives SIGTERM, so its run ends KILLED."""


_DEFERRED = {"depth": 0, "pending": None}  # signals_deferred's nesting and the signal it holds


def _on_signal(signum, frame):
    """A stage's SIGINT / SIGTERM handler: KeyboardInterrupt / :class:`StageKilled`, at once, or
    when the current :func:`signals_deferred` block ends."""
    if _DEFERRED["depth"]:
        _DEFERRED["pending"] = signum
        return
    _raise_for(signum)


def _raise_for(signum):
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise StageKilled(f"received signal {signum}")


@contextlib.contextmanager
def signals_deferred():
    """Hold a stage's SIGINT and SIGTERM until the block ends, then raise as :func:`_on_signal`
    would have (the block's writes complete; blocks nest)."""
    _DEFERRED["depth"] += 1
    try:
        yield
    finally:
        _DEFERRED["depth"] -= 1
        if not _DEFERRED["depth"] and (signum := _DEFERRED["pending"]) is not None:
            _DEFERRED["pending"] = None
            _raise_for(signum)


@contextlib.contextmanager
def stage_run(stage: str, params: Params, section: Mapping | None = None, record: Path | None = None,
              upstream: tuple = (), tags: Mapping[str, str] | None = None) -> Iterator["StageRun"]:
    """A child run for one stage under the pipeline's parent run.

    Logs the stage's params ``section`` and writes the run id to ``record`` (a small JSON file
    that the stage declares as a DVC output, so a stage that DVC skips still names its run).
    Tags the run ids of the ``upstream`` stages, read from their records beside ``record``, so
    every evaluation traces to its training run (an entry ``(name, record)`` reads the record
    ``<record>.json`` for stage ``name``: a family's train stage writes ``train-<family>.json``).
    ``tags`` are the stage's own (``ebm.kernels``: the code path it ran). Ends the run FINISHED,
    FAILED or KILLED.

    First closes this host's runs whose process is gone (:func:`close_stale_runs`: a SIGKILLed
    stage cannot end its own run); a closed run of the same stage and pipeline is named in the
    new run's tag ``ebm.replaces_killed``.
    """
    tracker = Tracker()
    base_tags = tracker.tags(params)
    replaced = [rid for rid in close_stale_runs(tracker)
                if (t := tracker.client.get_run(rid).data.tags).get("ebm.stage") == stage
                and t.get("ebm.pipeline_key") == base_tags["ebm.pipeline_key"]]
    with tracker.locked():
        experiment_id = tracker.ensure_experiment(tracker.experiment_name(params))
        parent = tracker.parent_run(experiment_id, params, base_tags)
        upstream_ids = read_run_ids(record.parent, upstream) if record else {}
        tags = {**base_tags, "mlflow.source.name": f"stages.{stage}", "mlflow.parentRunId": parent,
                "ebm.stage": stage, "ebm.role": "stage",
                "ebm.host": socket.gethostname(), "ebm.pid": str(os.getpid()),
                **({"ebm.replaces_killed": ",".join(replaced)} if replaced else {}),
                **{f"ebm.upstream.{name}": rid for name, rid in upstream_ids.items()}, **(tags or {})}
        run_id = tracker.client.create_run(experiment_id, run_name=f"{stage} {base_tags['dvc.exp_name']}",
                                           tags=tags).info.run_id
        if section:
            tracker._log_params(run_id, flatten(dict(section)))
        tracker.client.update_run(parent, status="RUNNING")
    if record:
        write_text_atomic(record, json.dumps({"stage": stage, "run_id": run_id, "parent_run_id": parent}) + "\n")
    run = StageRun(tracker, run_id, parent)
    # our own handlers, whatever the parent left: a background job of a non-interactive shell
    # starts with SIGINT ignored, and Python then installs no KeyboardInterrupt handler
    handlers = {signal.SIGTERM: _on_signal, signal.SIGINT: _on_signal}
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()} \
        if threading.current_thread() is threading.main_thread() else {}
    try:
        yield run
    except (KeyboardInterrupt, StageKilled):
        run.end("KILLED")
        raise
    except BaseException:
        run.end("FAILED")
        raise
    else:
        run.end("FINISHED")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def read_run_ids(folder: Path, stages) -> dict[str, str]:
    """Run ids of ``stages`` from their records ``<folder>/<stage>.json``, where present; an entry
    ``(stage, name)`` reads ``<folder>/<name>.json``."""
    found = {}
    for entry in stages:
        stage, name = entry if isinstance(entry, tuple) else (entry, entry)
        path = folder / f"{name}.json"
        if path.is_file():
            found[stage] = json.loads(path.read_text())["run_id"]
    return found


def train_record(family: str) -> tuple[str, str]:
    """The upstream entry of ``family``'s train stage (each family trains in a stage of its own)."""
    return ("train", f"train-{family}")


class StageRun:
    """Logging helpers bound to one stage run; every write takes the store lock."""

    def __init__(self, tracker: Tracker, run_id: str, parent_id: str):
        self.tracker = tracker
        self.run_id = run_id
        self.parent_id = parent_id

    def metrics(self, values: Mapping[str, float], step: int | None = None, on_parent: bool = False) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        batch = [Metric(k, float(v), stamp, step or 0) for k, v in values.items()]
        bad = sorted(m.key for m in batch if not np.isfinite(m.value))
        with self.tracker.locked():
            for run_id in (self.run_id, self.parent_id) if on_parent else (self.run_id,):
                self.tracker.client.log_batch(run_id, metrics=batch)
                if bad:  # logged as they are (MLflow stores NaN and inf) and named in a tag
                    seen = self.tracker.client.get_run(run_id).data.tags.get("ebm.nonfinite_metrics", "")
                    names = sorted(set(filter(None, seen.split(","))) | set(bad))
                    self.tracker.client.set_tag(run_id, "ebm.nonfinite_metrics", ",".join(names))

    def tags(self, values: Mapping[str, object]) -> None:
        with self.tracker.locked():
            for key, value in values.items():
                self.tracker.client.set_tag(self.run_id, key, str(value))

    def artifact(self, path: str | Path, folder: str | None = None) -> None:
        with self.tracker.locked():
            self.tracker.client.log_artifact(self.run_id, str(path), artifact_path=folder)

    def image(self, image, key: str, step: int) -> None:
        """Log a PIL image as MLflow image ``key`` at ``step`` (the run page's image slider)."""
        with self.tracker.locked():
            self.tracker.client.log_image(self.run_id, image, key=key, step=step, synchronous=True)

    def keras_model(self, model, example: np.ndarray, name: str = "model") -> None:
        """Log an MLflow Keras model with a signature and ``example`` as its input example.
        ``model`` must be built of Keras's own layers (the deep family's
        :func:`~ebm.families.deep.network.portable_network`): its requirements are then keras and
        tensorflow at the versions that trained it, and ``mlflow.keras.load_model`` loads it
        where this package is not installed."""
        import keras
        import mlflow
        from mlflow.models import Model, infer_signature

        pins = [f"{pkg}=={ver}" for pkg, ver in (("keras", keras.__version__), ("tensorflow", _tf_version()))]
        signature = infer_signature(example, np.asarray(model(example)))
        previous = mlflow.get_tracking_uri()
        with self.tracker.locked():
            mlflow.set_tracking_uri(self.tracker.uri)  # log_model only speaks to the active run
            try:
                with mlflow.start_run(run_id=self.run_id):
                    Model.log(artifact_path=None, name=name, flavor=_KERAS_FLAVOR, model=model, pip_requirements=pins,
                              signature=signature, input_example=example)
            finally:
                mlflow.set_tracking_uri(previous)
            self.tracker.client.update_run(self.run_id, status="RUNNING")  # start_run's exit ended it

    def datasets(self, inputs: Mapping[str, tuple[str, Path]]) -> None:
        """Log npz files as MLflow dataset inputs of this run and of its parent, as
        ``{context: (name, path)}`` (contexts such as ``training``, ``evaluation``): digest = the
        file's MD5 (as in ``dvc.lock``), source = its path, schema and profile from its arrays.
        Fills the runs table's Dataset column and the run page's lineage."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.numpy_dataset import NumpyDataset
        from mlflow.entities import DatasetInput, InputTag

        entries = []
        for context, (name, path) in inputs.items():
            path = Path(path).resolve()
            with np.load(path, allow_pickle=False) as f:
                arrays = {key: f[key] for key in f.files}
            targets = arrays.pop("y", None)
            with warnings.catch_warnings():  # two registered sources read local files: either will do
                warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
                source = resolve_dataset_source(str(path))
            dataset = NumpyDataset(arrays, source, targets=targets, name=name, digest=file_md5(path))
            entries.append(DatasetInput(dataset._to_mlflow_entity(), [InputTag("mlflow.data.context", context)]))
        with self.tracker.locked():
            for run_id in (self.run_id, self.parent_id):
                self.tracker.client.log_inputs(run_id, datasets=entries)

    def end(self, status: str) -> None:
        """End this run, and its parent with the same status and time (the parent spans the pipeline)."""
        with self.tracker.locked():
            end_time = int(time.time() * 1000)
            self.tracker.client.set_terminated(self.run_id, status, end_time)
            self.tracker.client.set_terminated(self.parent_id, status, end_time)


def _save_keras_model(path, **kwargs):
    os.makedirs(path, exist_ok=True)
    import mlflow.keras

    return mlflow.keras.save_model(path=path, **kwargs)


# mlflow.keras.log_model, except that the model's folder exists before its input example is written
# (mlflow.keras.save_model writes the example first: mlflow/mlflow#16183, still open in MLflow 3.18)
_KERAS_FLAVOR = types.SimpleNamespace(__name__="mlflow.keras", save_model=_save_keras_model)


def store_problem(uri: str, err: Exception) -> str:
    """What to tell a user whose tracking store ``uri`` failed with ``err``, and how to move past it."""
    local = _local_sqlite(uri)
    fix = (f"move {local} aside (the next stage creates a new store; the runs in it are then not shown) or "
           "point MLFLOW_TRACKING_URI at another store") if local else \
        "check that the server runs and answers, or point MLFLOW_TRACKING_URI at another store"
    return f"the MLflow tracking store {uri} cannot be used ({type(err).__name__}: {first_line(err)}): {fix}"


def cpu_name() -> str:
    """The CPU's model name and widest vector unit, e.g. ``Intel(R) Xeon(R) Processor (AVX-512)``
    (numbers differ between CPUs, AVX2 and AVX-512 most: every run names its own)."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    flags = next((set(line.split(":", 1)[1].split()) for line in lines if line.startswith("flags")), set())
    unit = next((name for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2")) if flag in flags), "")
    name = (names[0] if names else platform.processor()) or "unknown"
    return f"{name} ({unit})" if unit else name


def _user() -> str:
    """The login name, as MLflow records it (``unknown`` where there is none, e.g. a container
    whose uid has no passwd entry)."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tf_version() -> str:
    import tensorflow as tf

    return tf.__version__


def close_stale_runs(tracker: Tracker | None = None) -> list[str]:
    """End RUNNING stage runs of this host whose process is gone: KILLED, and their pipeline runs
    with them (the next stage sets its pipeline RUNNING again). Returns the stage runs' ids.
    (Runs from other hosts are left alone: their processes cannot be checked from here.)"""
    tracker = tracker or Tracker()
    host = socket.gethostname()
    closed = []
    with tracker.locked():
        experiments = [e.experiment_id for e in tracker.client.search_experiments()]
        if not experiments:
            return closed
        runs = tracker.client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'")
        for run in runs:
            tags = run.data.tags
            if tags.get("ebm.host") == host and tags.get("ebm.pid") and not _pid_alive(int(tags["ebm.pid"])):
                tracker.client.set_terminated(run.info.run_id, "KILLED")
                closed.append(run.info.run_id)
                parent = tags.get("mlflow.parentRunId")
                if parent and tracker.client.get_run(parent).info.status == "RUNNING":
                    tracker.client.set_terminated(parent, "KILLED")
    return closed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class NullRun:
    """A stage run that logs nothing (for hand runs such as ``ebm evaluate --model-uri``)."""

    run_id = parent_id = None

    def metrics(self, values, step=None, on_parent=False) -> None:
        pass

    def tags(self, values) -> None:
        pass

    def artifact(self, path, folder=None) -> None:
        pass

    def datasets(self, inputs) -> None:
        pass

    def image(self, image, key, step) -> None:
        pass

    def keras_model(self, model, example, name="model") -> None:
        pass


@contextlib.contextmanager
def maybe_stage_run(track: bool, *args, **kwargs) -> Iterator["StageRun | NullRun"]:
    """:func:`stage_run` when ``track``, else a :class:`NullRun`."""
    if not track:
        yield NullRun()
        return
    with stage_run(*args, **kwargs) as run:
        yield run
