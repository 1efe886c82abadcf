"""Fixtures across packages: a real mlop-server process, training scripts in real processes, and a
fault-injecting HTTP proxy on loopback for the online client's tests."""

from __future__ import annotations

import http.server
import itertools
import os
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlop_server.testing import ServerProcess

_SCRIPTS = itertools.count()  # names for scripts being written (see Online.script)

# A fault the proxy can inject: "500", "429", "400", "reset" (before the server sees the request),
# "lost" (the server applies it, the reply is lost), "slow" (a late reply).
Plan = Callable[[str, str, int], str | None]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real mlop-server shared by the tests of one module."""
    with ServerProcess(tmp_path_factory.mktemp("server")) as proc:
        yield proc


@pytest.fixture
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    """The server's read API, with the admin key."""
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}, timeout=30
    ) as client:
        yield client


class Online:
    """Training scripts in their own processes, online against a server, and what arrived there."""

    def __init__(self, tmp_path: Path, server: ServerProcess, api: httpx.Client) -> None:
        self.tmp = tmp_path
        self.server = server
        self.api = api
        self.runs_dir = tmp_path / "runs"
        self.config_dir = tmp_path / "config"

    def env(self, host: str | None = None, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}
        env.update(
            MLOP_API_TOKEN=self.server.key,
            MLOP_HOST=host or self.server.url,
            MLOP_CONFIG_DIR=str(self.config_dir),
            MLOP_DISABLE_SYSTEM_METRICS="1",
            MLOP_X_HEARTBEAT_INTERVAL="0.5",
        )
        env.update(extra)
        return env

    def script(self, body: str, name: str = "train.py") -> Path:
        path = self.tmp / name
        # Written aside and renamed into place: a process spawned from the same file a moment ago may still
        # be starting, and must never read it truncated (it would run nothing and exit 0).
        fresh = path.with_name(f".{name}.{os.getpid()}.{next(_SCRIPTS)}")
        fresh.write_text("import mlop, os, sys, time\n" + textwrap.dedent(body))
        os.replace(fresh, path)
        return path

    def run(self, body: str, *, env: dict[str, str] | None = None, timeout: float = 90) -> Any:
        out = subprocess.run(
            [sys.executable, str(self.script(body)), str(self.runs_dir)],
            cwd=self.tmp,
            env=env or self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert out.returncode == 0, out.stderr
        return out

    def spawn(self, body: str, *, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(self.script(body)), str(self.runs_dir)],
            cwd=self.tmp,
            env=env or self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def mlop(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mlop.cli", *args],
            cwd=self.tmp,
            env=env or self.env(),
            capture_output=True,
            text=True,
            timeout=120,
        )

    def run_dir(self, project: str) -> Path:
        (found,) = (self.runs_dir / ".mlop" / project).iterdir()
        return found

    def server_run(self, project: str, timeout: float = 30) -> dict[str, Any]:
        """The only run of ``project`` on the server (waits for it to exist)."""
        deadline = time.monotonic() + timeout
        while True:
            runs = self.api.get("/api/runs", params={"project": project}).json()
            if runs or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert len(runs) == 1, runs
        answer: dict[str, Any] = self.api.get(f"/api/runs/{runs[0]['id']}").json()
        return answer

    def wait_status(self, run_id: int, statuses: set[str], timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            run: dict[str, Any] = self.api.get(f"/api/runs/{run_id}").json()
            if run["status"] in statuses or time.monotonic() > deadline:
                return run
            time.sleep(0.1)

    def steps(self, run_id: int, key: str) -> list[int]:
        """Every step the server holds for a metric, in order, duplicates kept."""
        answer = self.api.get(f"/api/runs/{run_id}/metrics", params={"key": key})
        assert answer.status_code == 200, answer.text
        return [point["step"] for point in answer.json()]


@pytest.fixture
def online(tmp_path: Path, server: ServerProcess, api: httpx.Client) -> Online:
    return Online(tmp_path, server, api)


class FaultProxy:
    """An HTTP/1.1 proxy on 127.0.0.1 that forwards to ``target`` and injects the faults of a plan.

    ``plan(method, path, n)`` gets the n-th request (from 1) to a path and returns a fault or None.
    """

    def __init__(self, target: str, plan: Plan) -> None:
        self.target = target
        self.plan = plan
        self.counts: dict[str, int] = {}
        self.log: list[tuple[str, str | None, bytes]] = []
        self.headers: list[dict[str, str]] = []  # of each request, in the order of the log
        self.lock = threading.Lock()
        self._client = httpx.Client(base_url=target, timeout=60)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                proxy.handle(self)

            do_PUT = do_GET = do_POST

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)
        self._client.close()

    def faults(self) -> list[str]:
        return [fault for _path, fault, _body in self.log if fault]

    def handle(self, request: http.server.BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        path = request.path.split("?", 1)[0]
        with self.lock:
            self.counts[path] = self.counts.get(path, 0) + 1
            fault = self.plan(request.command, path, self.counts[path])
            self.log.append((path, fault, body))
            self.headers.append(dict(request.headers.items()))
        if fault in ("500", "429", "400"):
            extra = {"Retry-After": "1"} if fault == "429" else {}
            self._reply(request, int(fault or 0), b'{"error": "Injected", "message": "fault"}', extra)
            return
        if fault == "reset":
            self._reset(request)
            return
        if fault == "slow":
            time.sleep(1.0)
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in ("host", "content-length", "connection", "transfer-encoding")
        }
        answer = self._client.request(request.command, request.path, content=body, headers=headers)
        if fault == "lost":
            self._reset(request)
            return
        ctype = {"Content-Type": answer.headers.get("Content-Type", "application/json")}
        self._reply(request, answer.status_code, answer.content, ctype)

    @staticmethod
    def _reply(
        request: http.server.BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str]
    ) -> None:
        request.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            request.send_header(name, value)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)

    @staticmethod
    def _reset(request: http.server.BaseHTTPRequestHandler) -> None:
        sock = request.connection
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        request.close_connection = True
        sock.close()


@pytest.fixture
def fault_proxy(server: ServerProcess) -> Iterator[Callable[[Plan], FaultProxy]]:
    """Make a fault-injecting proxy in front of the server (closed at the end of the test)."""
    made: list[FaultProxy] = []

    def make(plan: Plan) -> FaultProxy:
        proxy = FaultProxy(server.url, plan).__enter__()
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.__exit__(None, None, None)
