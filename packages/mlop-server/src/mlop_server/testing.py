"""Run a real mlop server as a subprocess, for tests.

>>> from mlop_server.testing import ServerProcess
>>> with ServerProcess(tmp_path / "server") as server:
...     settings = {"host": server.url, "api_key": server.key}
...     server.restart()        # same data, same port: nothing acknowledged is lost
...     server.kill()           # SIGKILL, as a crash would
...     server.start()

The server listens on 127.0.0.1 on a free port (``--port 0``); :attr:`ServerProcess.url` is the URL it
printed on its first line, ready once ``/health`` answers. The process is always ended on exit, and its
output is kept (:meth:`ServerProcess.output`) to explain a failure.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Final

__all__ = ["DEFAULT_TEST_KEY", "ServerProcess"]

logger = logging.getLogger(__name__)

#: The admin key a :class:`ServerProcess` uses unless given another.
DEFAULT_TEST_KEY: Final = "mlps_test_admin_key_0123456789"


class ServerProcess:
    """A ``python -m mlop_server`` subprocess on 127.0.0.1 with its own data folder.

    Args:
        data_dir: The server's ``--data`` folder (created if missing; kept across restarts).
        admin_key: The admin key the server creates on start (given as ``MLOP_SERVER_ADMIN_KEY``, never in
            the command line).
        extra_args: More command-line options, e.g. ``["--heartbeat-timeout", "2"]``.
        startup_timeout: Seconds to wait for the URL line and ``/health``.
        env: Extra environment variables for the process.
        db: A PostgreSQL URL to keep the data in (``--db``, given as ``MLOP_SERVER_DB`` so that its password
            stays out of the command line); None keeps it in SQLite under ``data_dir``.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        admin_key: str = DEFAULT_TEST_KEY,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 30.0,
        env: dict[str, str] | None = None,
        db: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.db = db
        self._key = admin_key
        self._extra = list(extra_args)
        self._timeout = startup_timeout
        self._env = env or {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._port = 0
        self._url: str | None = None
        self._lines: list[str] = []
        self._first = threading.Event()
        self._readers: list[threading.Thread] = []

    def __repr__(self) -> str:
        return f"ServerProcess(url={self._url!r}, data_dir={str(self.data_dir)!r})"

    @property
    def url(self) -> str:
        """The base URL (``http://127.0.0.1:PORT``); the client's ``host`` setting."""
        if self._url is None:
            raise RuntimeError("the server is not running; call start()")
        return self._url

    @property
    def key(self) -> str:
        """The admin key."""
        return self._key

    @property
    def pid(self) -> int:
        """The server's process id."""
        if self._proc is None:
            raise RuntimeError("the server is not running; call start()")
        return self._proc.pid

    @property
    def running(self) -> bool:
        """True while the process lives."""
        return self._proc is not None and self._proc.poll() is None

    def output(self) -> str:
        """Everything the server printed so far (stdout and stderr, by line)."""
        return "\n".join(self._lines)

    def start(self) -> ServerProcess:
        """Start the server and wait until it answers ``/health``; a restart reuses the last port."""
        if self.running:
            raise RuntimeError("the server is running already")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "mlop_server", "--host", "127.0.0.1", "--port", str(self._port)]
        cmd += [
            "--data",
            str(self.data_dir),
            "--log-level",
            "warning",
            "--exit-with-parent",  # no server outlives a test run that was killed
            *self._extra,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}
        env["MLOP_SERVER_ADMIN_KEY"] = self._key
        if self.db:
            env["MLOP_SERVER_DB"] = self.db
        env.update(self._env)
        self._first.clear()
        self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        url_lines: list[str] = []
        self._readers = [
            threading.Thread(target=self._drain, args=(self._proc.stdout, url_lines), daemon=True),
            threading.Thread(target=self._drain, args=(self._proc.stderr, None), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        try:
            self._wait_ready(url_lines)
        except BaseException:
            self.kill()
            raise
        return self

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``python -m mlop_server ARGS`` on this server's data (``--data``, and its database when it has
        one, through ``MLOP_SERVER_DB``), e.g. ``server.cli("keys", "create", "--name", "bob")``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}
        if self.db:
            env["MLOP_SERVER_DB"] = self.db
        cmd = [sys.executable, "-m", "mlop_server", *args, "--data", str(self.data_dir)]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)

    def _drain(self, pipe: IO[bytes] | None, first: list[str] | None) -> None:
        assert pipe is not None
        for raw in iter(pipe.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self._lines.append(line)
            if first is not None and not first:
                first.append(line)
                self._first.set()
        if first is not None:
            self._first.set()

    def _wait_ready(self, url_lines: list[str]) -> None:
        deadline = time.monotonic() + self._timeout
        if not self._first.wait(self._timeout) or not url_lines:
            raise RuntimeError(f"the server printed no URL:\n{self._wait_output()}")
        url = url_lines[0].strip()
        if not url.startswith("http://"):
            raise RuntimeError(f"the server's first line is not a URL: {url!r}\n{self._wait_output()}")
        while time.monotonic() < deadline:
            if not self.running:
                raise RuntimeError(f"the server exited:\n{self._wait_output()}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        self._url = url
                        self._port = int(url.rsplit(":", 1)[1])
                        return
            except (OSError, urllib.error.URLError):
                time.sleep(0.05)
        raise RuntimeError(f"the server did not answer /health in {self._timeout} s:\n{self.output()}")

    def _wait_output(self) -> str:
        """The output once the process has ended (if it ends within a few seconds) and both pipes are read."""
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(5)
            if self._proc.poll() is not None:
                for reader in self._readers:
                    reader.join(5)
        return self.output()

    def _end(self, sig: signal.Signals, timeout: float) -> int | None:
        proc, self._proc = self._proc, None
        self._url = None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("the server did not stop in %s s; killing it", timeout)
                proc.kill()
                proc.wait()
        for reader in self._readers:
            reader.join(5)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        return proc.returncode

    def stop(self, timeout: float = 15.0) -> int | None:
        """End the server gracefully (SIGTERM: it commits what it acknowledged); returns its exit code."""
        return self._end(signal.SIGTERM, timeout)

    def kill(self) -> int | None:
        """End the server at once (SIGKILL), as a crash would; returns its exit code."""
        return self._end(signal.SIGKILL, 10.0)

    def restart(self, *, kill: bool = False) -> ServerProcess:
        """Stop (or kill) the server and start it again on the same port with the same data."""
        if kill:
            self.kill()
        else:
            self.stop()
        return self.start()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
