"""A throwaway PostgreSQL cluster for tests: initdb into a temporary folder, pg_ctl on a free loopback port.

>>> bindir = find_bindir()                   # None when no PostgreSQL is installed
>>> with PgCluster(bindir) as cluster:
...     url = cluster.create_database()      # postgresql://mlop:...@127.0.0.1:PORT/t1
...     cluster.drop_database(url)

When the tests run as root (CI containers), the cluster runs as the unprivileged user ``nobody`` (initdb
refuses root), through ``runuser``; its folder is made by and for that user. The cluster listens on
127.0.0.1 only, on a port picked free, with password authentication for TCP (so a wrong password is a real
refusal); its socket lies in its own folder. Durability settings are off: it is thrown away at the end.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Final
from urllib.parse import quote

import pytest

__all__ = ["PgCluster", "find_bindir", "pg_cluster", "pg_url"]

SUPERUSER: Final = "mlop"
PASSWORD: Final = "pg-test-password-0123"
RUN_AS: Final = "nobody"


def find_bindir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: on PATH, else the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True):
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    return None


def _version_key(path: str) -> int:
    part = Path(path).parent.name
    return int(part) if part.isdigit() else 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class PgCluster:
    """One PostgreSQL cluster in a temporary folder; :meth:`create_database` hands out fresh databases."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.port = 0
        self._as_root = os.geteuid() == 0
        # as root, under /tmp: a TMPDIR inside root's home would be closed to the cluster's user
        self.root = Path(tempfile.mkdtemp(prefix="mlop-pg-", dir="/tmp" if self._as_root else None))
        self.data = self.root / "data"
        self._names = itertools.count(1)
        self._prefix = f"t{os.getpid()}_"

    # -- running the binaries ------------------------------------------------------------------------------

    def _cmd(self, tool: str, *args: str) -> list[str]:
        cmd = [str(self.bindir / tool), *args]
        return ["runuser", "-u", RUN_AS, "--", *cmd] if self._as_root else cmd

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run(self._cmd(tool, *args), capture_output=True, text=True, cwd=self.root)
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stdout}{done.stderr}\n{tail}")

    def start(self) -> PgCluster:
        """initdb, then start the server on a free port; returns once it accepts connections."""
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self._as_root:
            os.chmod(self.root, 0o700)
            shutil.chown(self.root, RUN_AS)
            shutil.chown(pwfile, RUN_AS)
        os.chmod(pwfile, 0o600)
        self._run(
            "initdb", "-D", str(self.data), "-U", SUPERUSER, "--pwfile", str(pwfile), "-E", "UTF8",
            "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync",
        )  # fmt: skip
        pwfile.unlink()
        self.port = _free_port()
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options, "-w", "start"
        )
        return self

    def restart(self) -> None:
        """Restart the server (fast shutdown: every connection is closed), on the same port."""
        log = str(self.root / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-m", "fast", "-w", "restart")

    def stop(self) -> None:
        """Stop the server (immediate) and remove its folder."""
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- databases -------------------------------------------------------------------------------------------

    def url(self, database: str = "postgres", *, password: str | None = PASSWORD) -> str:
        """A URL of this cluster (the superuser's; ``password=None`` leaves the password out)."""
        secret = "" if password is None else f":{quote(password, safe='')}"
        return f"postgresql://{SUPERUSER}{secret}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> list[tuple[object, ...]]:
        """Run one SQL statement as the superuser (autocommit); returns its rows (none for a command)."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            cur = conn.execute(sql.encode())
            return cur.fetchall() if cur.description else []

    def create_database(self) -> str:
        """A new empty database; returns its URL (with the password)."""
        name = f"{self._prefix}{next(self._names)}"
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database of ``url`` (closing whatever is still connected to it)."""
        name = url.rsplit("/", 1)[1]
        for _ in range(3):
            try:
                self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                return
            except Exception:  # broad: a connection still closing; try again
                time.sleep(0.2)


# -- pytest fixtures (imported by tests/server/conftest.py) ------------------------------------------------

NOT_FOUND: Final = (
    "PostgreSQL is not installed here (no initdb on PATH or in /usr/lib/postgresql/*/bin; "
    "`apt-get install postgresql`, as .ci/run does)"
)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One PostgreSQL cluster for the whole test session (skipped, saying why, when none is installed)."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(NOT_FOUND)
    with PgCluster(bindir) as cluster:
        yield cluster


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> Iterator[str]:
    """A fresh empty database for one test (its URL, with the password); dropped after."""
    url = pg_cluster.create_database()
    yield url
    pg_cluster.drop_database(url)
