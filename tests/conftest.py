import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def tiny_params_dict() -> dict:
    """The project's params.yaml shrunk to seconds: few epochs, short chains, small sets."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"].update(max_train=640, max_test=200)  # 20 batches of 32 per epoch
    p["train"].update(epochs=2, batch_size=32, buffer_size=256)
    p["train"]["max_epoch_cdiv"] = 1e3  # 3-step chains never close the gap: tests of the band set their own
    # 3-step chains never leave the noise: at the default alpha (0.01) the penalty lets their energies
    # climb past train.max_abs_cdiv within the first epoch; the reference's 0.1 bounds them near 5
    p["train"]["alpha"] = 0.1
    p["train"]["sampler"]["steps"] = 3
    p["sampler"]["steps"] = 6
    p["generate"].update(n=24, snapshot_steps=[0, 2, 6], chains_shown=4)
    p["generate"]["gif_every"] = 2
    p["classifier"].update(epochs=1, members=1)  # the 3-member ensemble is tested on its own (trained_judge)
    p["evaluate"].update(batch_size=64, longrun_factor=3, longrun_n=8, ais_runs=8, ais_betas=60, bound_samples=2, floor_draws=3)
    p["generate"]["gibbs_steps"] = 6
    for family in ("rbm", "dbn"):
        p[family].update(hidden=16, epochs=2, batch_size=32)
    p["tracking"]["experiment"] = "ebm"
    return p


PROJECT_FILES = ["dvc.yaml", "stages", "reference", ".dvcignore", ".gitignore"]


def sh(*cmd, cwd, env, timeout=600):
    """Run a command, fail the test with its output if it fails, return stdout + stderr."""
    import subprocess

    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout + out.stderr


def project_repo(repo: Path, params: dict, **extra_env: str) -> dict:
    """A fresh git+DVC repository at ``repo`` holding the project (code, dvc.yaml, ``params``),
    committed; returns the environment to run ``dvc`` in it (no inherited MLFLOW_/DVC_ variables,
    plus ``extra_env``)."""
    import shutil
    import sys

    repo.mkdir(parents=True)
    for name in PROJECT_FILES:
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, repo / name)
    shutil.copytree(ROOT / "ebm", repo / "ebm", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.pop("PYTHONPATH", None)  # a stage must find the repo's own ebm by itself, as in a user's shell
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
               GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t",
               **extra_env)
    sh("git", "init", "-q", "-b", "main", cwd=repo, env=env)
    sh("dvc", "init", "-q", cwd=repo, env=env)
    sh("dvc", "config", "core.analytics", "false", cwd=repo, env=env)
    sh("git", "add", "-A", cwd=repo, env=env)
    sh("git", "commit", "-qm", "project", cwd=repo, env=env)
    return env


QUEUE_WORKERS_DIR = ".dvc/tmp/exps/celery"  # where DVC keeps its queue workers' records and logs


def run_queue(repo, env, workers: int, timeout: float = 900) -> str:
    """Start ``workers`` queue workers and wait until the queue is empty; returns `dvc queue status`.
    `dvc queue start` can stay in the foreground until the queue is empty: it is started aside."""
    import subprocess
    import time

    def start():
        return subprocess.Popen(["dvc", "queue", "start", "-j", str(workers)], cwd=repo, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    starter = start()
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = sh("dvc", "queue", "status", cwd=repo, env=env)  # no machine-readable form in DVC 3
        if "Queued" not in status and "Running" not in status:
            break
        if "Running" not in status and starter.poll() is not None and not queue_workers_alive(repo):
            # DVC's workers can all stop with tasks still queued (treeverse/dvc#10562, seen here on a
            # loaded host); its workaround, as a user would: start the queue again. Only once they
            # are gone: workers still starting answer no status ("0 active"), and a second start
            # then spawns a second set under the same names
            starter = start()
        time.sleep(3)
    starter.wait(timeout=120)
    return status


def queue_workers_alive(repo) -> bool:
    """Whether a DVC queue worker of ``repo`` is running or starting: DVC records each worker it
    spawns in ``<QUEUE_WORKERS_DIR>/dvc-exp-worker-<n>.json`` (its pid, and its returncode once
    it has exited)."""
    import json

    from ebm.tracking import _pid_alive

    for info in (Path(repo) / QUEUE_WORKERS_DIR).glob("dvc-exp-worker-*.json"):
        try:
            record = json.loads(info.read_text())
        except (OSError, ValueError):  # being written: a worker is being spawned
            return True
        if record.get("returncode") is None and _pid_alive(int(record["pid"])):
            return True
    return False


def failed_task_logs(repo, env, status: str) -> str:
    """Why the tasks that `dvc queue status` lists as failed failed, for the message of an
    assertion on the status: each one's `dvc queue logs` (its stages' output) and, as a task can
    fail before its first stage, the queue workers' own logs."""
    import subprocess

    failed = [line.split()[1] for line in status.splitlines() if line.split()[-1:] == ["Failed"]]
    if not failed:
        return status
    parts = [status]
    for name in failed:
        done = subprocess.run(["dvc", "queue", "logs", name], cwd=repo, env=env, capture_output=True, text=True)
        parts.append(f"--- dvc queue logs {name}\n" + (done.stdout + done.stderr)[-8000:])
    for path in sorted((Path(repo) / QUEUE_WORKERS_DIR).glob("dvc-exp-worker-*.out")):
        parts.append(f"--- {path.name}\n" + path.read_text(errors="replace")[-8000:])
    return "\n".join(parts)


def pytest_collection_modifyitems(config, items):
    """The end-to-end files first: under xdist each file is one unit of work, and starting the
    longest ones first lets the workers finish together."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)


@pytest.fixture
def tiny_params_dict_():
    return tiny_params_dict()


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch):
    """A fresh SQLite MLflow store for one test, run from inside ``tmp_path``."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    import mlflow

    mlflow.set_tracking_uri(uri)  # for the tests' own mlflow.search_runs
    yield uri
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="session")
def mnist5k():
    from ebm.config import DataConfig
    from ebm.data import load_mnist5k

    return load_mnist5k(DataConfig())


@pytest.fixture(scope="session")
def trained_judge(mnist5k):
    """The classifier stage's judge (3 members, outliers, temperature), on 4 epochs: trained once
    per session for the classifier and metrics tests. Returns (model, history)."""
    import keras

    from ebm.classifier import train_classifier

    train, test = mnist5k
    keras.utils.set_random_seed(0)
    return train_classifier(train.x, train.y, test.x, test.y, epochs=4, batch_size=128)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow_server(store: str, *extra: str, attempts: int = 5):
    """A real ``mlflow server`` on ``store`` (plus ``extra`` arguments) on a free loopback port.
    Another process can take the port between our probe and the server's bind, so a server that
    exits before answering is retried on a new port rather than failing the test."""
    import subprocess
    import sys
    import time

    for _ in range(attempts):
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store, *extra,
                                   "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        for _ in range(240):
            try:
                http_get(f"{base}/health")
                return server, base
            except OSError:
                if server.poll() is not None:  # it died: most likely the port was taken
                    break
                time.sleep(0.5)
        server.terminate()
        server.wait(timeout=60)
    raise RuntimeError(f"mlflow server did not start in {attempts} attempts")


def http_get(url: str, payload: dict | None = None) -> dict | bytes:
    """GET ``url`` (POST ``payload`` as JSON if given): parsed JSON, or the raw body."""
    import json
    import urllib.request

    request = urllib.request.Request(url, method="POST", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"}) if payload is not None else url
    with urllib.request.urlopen(request, timeout=30) as r:
        body = r.read()
    return json.loads(body) if r.headers.get_content_type() == "application/json" else body
