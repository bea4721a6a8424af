"""A throwaway PostgreSQL cluster for tests: initdb in a temporary folder, a loopback port,
stopped (and removed) at the end of the session.

Uses the server binaries of Debian's ``postgresql`` package (``/usr/lib/postgresql/*/bin``)
or any ``initdb`` / ``pg_ctl`` on PATH. PostgreSQL refuses to run as root, so as root (CI) the
cluster runs as the ``postgres`` user through ``runuser``. Tests connect as ``ballistics``, an
ordinary role (not a superuser: row-level security binds it), one fresh database per test.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's 'postgresql' "
    "package (apt-get install postgresql) to run the PostgreSQL store tests; .ci/run does"
)
ROLE = "ballistics"


def find_bindir() -> Path | None:
    """The folder holding initdb and pg_ctl (newest Debian version first), or None."""
    cands = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    which = shutil.which("initdb")
    if which:
        cands.append(str(Path(which).parent))
    for c in cands:
        if (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file():
            return Path(c)
    return None


def _version_key(path: str) -> int:
    with contextlib.suppress(ValueError):
        return int(Path(path).parent.name)
    return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    """One running cluster. ``url(db)``: a libpq URL for the test role on database ``db``."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="ballistics-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse root
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres", "postgres")
        self._run(
            [
                "initdb",
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]
        )
        opts = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories="
            f"{self.root} -c fsync=off -c max_connections=200 -c shared_buffers=32MB"
        )
        self._run(
            [
                "pg_ctl",
                "-D",
                str(self.data),
                "-o",
                opts,
                "-w",
                "-t",
                "60",
                "-l",
                str(self.root / "log"),
                "start",
            ]
        )
        self.admin(f"CREATE ROLE {ROLE} LOGIN NOSUPERUSER CREATEDB")

    def _run(self, argv: list[str]) -> None:
        cmd = [*self.as_user, str(self.bindir / argv[0]), *argv[1:]]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {r.stdout}\n{r.stderr}")

    def url(self, db: str = "postgres", user: str = ROLE) -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{db}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres", "postgres"), autocommit=True) as con:
            con.execute(sql)

    def create_database(self) -> str:
        """A new empty database owned by the test role; returns its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.admin(f"CREATE DATABASE {name} OWNER {ROLE}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with contextlib.suppress(Exception):
            self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run(["pg_ctl", "-D", str(self.data), "-m", "immediate", "stop"])
        shutil.rmtree(self.root, ignore_errors=True)
