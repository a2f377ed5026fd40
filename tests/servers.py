"""Real servers on loopback for tests and benchmarks: a throwaway PostgreSQL cluster."""

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

from tests.conftest import free_port, sh


class Unavailable(Exception):
    """The server cannot run on this machine (the reason says why)."""


def postgres_bin() -> Path | None:
    for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):  # Debian's layout
        if (folder / "initdb").is_file():
            return folder
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a loopback port; yields the URI of its database ``mlflow``.
    PostgreSQL refuses to run as root, so as root it runs as the ``postgres`` system user."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise Unavailable("PostgreSQL server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql")
    as_user: list[str] = []
    data = Path(tempfile.mkdtemp(prefix="ebm-pg-"))  # under /tmp: reachable by the postgres user
    if os.geteuid() == 0:
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(data)
            raise Unavailable("running as root and there is no 'postgres' user to run PostgreSQL as") from None
        os.chown(data, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    cluster = data / "cluster"
    try:
        sh(*as_user, str(bin_dir / "initdb"), "-D", str(cluster), "-U", "ebm", "-A", "trust", "--no-sync",
           "-E", "UTF8", cwd=data, env=os.environ)
        for _ in range(5):  # another process may take the probed port: try again on a new one
            port = free_port()
            started = subprocess.run(
                [*as_user, str(bin_dir / "pg_ctl"), "-D", str(cluster), "-l", str(data / "server.log"), "-w", "-o",
                 f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                cwd=data, capture_output=True, text=True, timeout=120)
            if started.returncode == 0:
                break
        else:
            raise RuntimeError(f"PostgreSQL did not start:\n{(data / 'server.log').read_text()}")
        sh(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "ebm", "mlflow", cwd=data,
           env=os.environ)
        yield f"postgresql://ebm@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(cluster), "-m", "fast", "stop"],
                       capture_output=True, timeout=120)
        shutil.rmtree(data, ignore_errors=True)
