"""Wall time of the tiny pipeline (`dvc repro` with the tests' tiny params) logging to the default
SQLite store against an `mlflow server` on PostgreSQL with served artifacts.

Each round builds a fresh git+DVC repository per store and times its `dvc repro`; the stores
alternate so that both see the same machine. Prints each time, the medians and their ratio.

    python bench/tracking.py [--rounds 3]

Needs PostgreSQL's server binaries (Debian: apt-get install postgresql) and the `team` extra.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.conftest import project_repo, sh, start_mlflow_server, tiny_params_dict  # noqa: E402
from tests.servers import postgres_cluster  # noqa: E402


def timed_repro(folder: Path, **env: str) -> float:
    repo = folder / "repo"
    params = tiny_params_dict()
    params["tracking"]["experiment"] = ""
    repo_env = project_repo(repo, params, **env)
    start = time.perf_counter()
    sh("dvc", "repro", cwd=repo, env=repo_env, timeout=1800)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"sqlite": [], "postgres server": []}
    with postgres_cluster() as database, tempfile.TemporaryDirectory() as tmp:
        server, base = start_mlflow_server(database, "--artifacts-destination", str(Path(tmp) / "artifacts"))
        try:
            for i in range(args.rounds):
                times["sqlite"].append(timed_repro(Path(tmp) / f"sqlite{i}"))
                times["postgres server"].append(timed_repro(Path(tmp) / f"server{i}", MLFLOW_TRACKING_URI=base))
                print(f"round {i + 1}: sqlite {times['sqlite'][-1]:.1f} s, "
                      f"postgres server {times['postgres server'][-1]:.1f} s", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=60)
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, value in medians.items():
        print(f"median {name}: {value:.1f} s")
    print(f"ratio postgres server / sqlite: {medians['postgres server'] / medians['sqlite']:.2f}")


if __name__ == "__main__":
    main()
