"""Several server processes on one PostgreSQL database, ``--workers``, and ``/ready``.

Real parts only: server processes on 127.0.0.1 (mlop_server.testing.ServerProcess), the session's throwaway
PostgreSQL cluster (tests/pgcluster.py), a real mlop client run in its own process, and SIGKILL.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import pytest

from mlop_server.testing import ServerProcess

sys.path.insert(0, str(Path(__file__).parents[1]))
from pgcluster import NOT_FOUND, PASSWORD, PgCluster, find_bindir

T0 = 1_795_870_984_866


def _client(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}, timeout=60)


def _lines(first: int, count: int) -> bytes:
    return b"".join(
        orjson.dumps({"time": T0 + s, "step": s, "data": {"loss": 1 / (s + 1), "acc": s / 10}}) + b"\n"
        for s in range(first, first + count)
    )


def _ingest(c: httpx.Client, run_id: int, body: bytes, key: str | None = None) -> httpx.Response:
    headers = {"X-Run-Id": str(run_id), "Content-Type": "application/x-ndjson"}
    if key:
        headers["Idempotency-Key"] = key
    return c.post("/ingest/metrics", content=body, headers=headers)


def _at_once(*calls: Any) -> list[Any]:
    """Run ``calls`` in threads released together; returns their results in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return results


def test_two_processes_share_one_database(tmp_path: Path, pg_url: str) -> None:
    with (
        ServerProcess(tmp_path / "a", db=pg_url) as a,
        ServerProcess(tmp_path / "b", db=pg_url) as b,
        _client(a) as ca,
        _client(b) as cb,
    ):
        body = {"runName": "shared", "projectName": "team", "config": '{"lr": 0.1}', "tags": ["x"]}
        run_id = ca.post("/api/runs/create", json=body).json()["runId"]
        for first in range(0, 3000, 1000):
            assert _ingest(ca, run_id, _lines(first, 1000)).status_code == 200
        logs = b"".join(
            orjson.dumps({"time": T0 + i, "message": f"m{i}", "lineNumber": i, "logType": "INFO"}) + b"\n"
            for i in range(50)
        )
        assert ca.post("/ingest/logs", content=logs, headers={"X-Run-Id": str(run_id)}).status_code == 200
        assert (
            ca.post("/api/runs/status/update", json={"runId": run_id, "status": "COMPLETED"}).status_code
            == 200
        )

        # Written through a, read whole through b.
        assert cb.get(f"/api/runs/{run_id}").json() == ca.get(f"/api/runs/{run_id}").json()
        run = cb.get(f"/api/runs/{run_id}").json()
        assert run["status"] == "COMPLETED" and run["config"] == {"lr": 0.1} and run["tags"] == ["x"]
        loss = cb.get(f"/api/runs/{run_id}/metrics", params={"key": "loss"}).json()
        assert [p["step"] for p in loss] == list(range(3000))
        assert all(p["value"] == 1 / (p["step"] + 1) for p in loss)
        assert [line["message"] for line in cb.get(f"/api/runs/{run_id}/logs").json()] == [
            f"m{i}" for i in range(50)
        ]

        # The same batch with the same Idempotency-Key sent to both processes at once: stored once.
        other = ca.post("/api/runs/create", json={"runName": "idem", "projectName": "team"}).json()["runId"]
        for attempt in range(5):
            batch = _lines(attempt * 100, 100)
            key = f"batch-{attempt}"
            first, second = _at_once(
                lambda b=batch, k=key: _ingest(ca, other, b, k),
                lambda b=batch, k=key: _ingest(cb, other, b, k),
            )
            assert (first.status_code, second.status_code) == (200, 200)
            assert first.json() == second.json()
        steps = [p["step"] for p in cb.get(f"/api/runs/{other}/metrics", params={"key": "acc"}).json()]
        assert steps == list(range(500))  # each batch once, none twice


def test_two_processes_started_at_once_on_an_empty_database(
    tmp_path: Path, pg_url: str, pg_cluster: Any
) -> None:
    servers = [ServerProcess(tmp_path / name, db=pg_url, startup_timeout=60) for name in ("a", "b")]
    try:
        started = _at_once(*(server.start for server in servers))
        assert all(isinstance(s, ServerProcess) and s.running for s in started)
        for server in servers:
            assert httpx.get(f"{server.url}/ready", timeout=10).json()["status"] == "ready"
        versions = pg_cluster.execute(
            "SELECT version, COUNT(*) FROM schema_version GROUP BY version", pg_url.rsplit("/", 1)[1]
        )
        assert versions and all(count == 1 for _, count in versions)  # each migration applied once
        assert (
            len(pg_cluster.execute("SELECT id FROM api_keys", pg_url.rsplit("/", 1)[1])) == 1
        )  # one admin key
    finally:
        for server in servers:
            server.stop()


TRAIN = """
run = mlop.init(project="kill", name="workers", dir=sys.argv[1])
for step in range({steps}):
    run.log({{"a": step, "b": step * 0.5}})
    if step % 100 == 99:
        time.sleep(0.05)
run.finish()
print("STATUS", run.status)
"""


def test_kill_9_of_a_worker_during_ingest_loses_nothing(tmp_path: Path, pg_url: str) -> None:
    steps = 6000
    with (
        ServerProcess(tmp_path / "srv", db=pg_url, extra_args=["--workers", "2"]) as server,
        _client(server) as c,
    ):
        workers = psutil.Process(server.pid).children()
        assert len(workers) == 2
        script = tmp_path / "train.py"
        script.write_text("import mlop, sys, time\n" + textwrap.dedent(TRAIN.format(steps=steps)))
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}
        env.update(
            MLOP_API_TOKEN=server.key,
            MLOP_HOST=server.url,
            MLOP_CONFIG_DIR=str(tmp_path / "config"),
            MLOP_DISABLE_SYSTEM_METRICS="1",
        )
        train = subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "runs")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        # Once some of the run has arrived, SIGKILL one worker; then, later, the other.
        killed: list[tuple[int, int]] = []
        deadline = time.monotonic() + 60
        run_id = None
        while len(killed) < 2 and time.monotonic() < deadline and train.poll() is None:
            runs = c.get("/api/runs", params={"project": "kill"}).json()
            if runs:
                run_id = runs[0]["id"]
                answer = c.get(f"/api/runs/{run_id}/metrics", params={"key": "a", "max_points": 2})
                arrived = int(answer.headers.get("X-Total-Points", 0)) if answer.status_code == 200 else 0
                if arrived > (len(killed) + 1) * steps // 4 and arrived < steps:
                    victim = psutil.Process(server.pid).children()[0]
                    victim.send_signal(signal.SIGKILL)
                    killed.append((victim.pid, arrived))
            time.sleep(0.02)
        out, err = train.communicate(timeout=120)
        assert train.returncode == 0, err
        assert "STATUS COMPLETED" in out
        assert len(killed) >= 1, f"the run ended before a worker could be killed: {err}"
        assert len(psutil.Process(server.pid).children()) == 2  # the supervisor started new workers
        assert run_id is not None
        run = c.get(f"/api/runs/{run_id}").json()
        assert run["status"] == "COMPLETED"
        for key, scale in (("a", 1.0), ("b", 0.5)):
            points = c.get(f"/api/runs/{run_id}/metrics", params={"key": key}).json()
            assert [p["step"] for p in points] == list(range(steps)), (key, killed)  # each step once
            assert all(p["value"] == p["step"] * scale for p in points)


def _postgres_down(cluster: PgCluster) -> list[str]:
    """Stop ``cluster``'s server (fast: every connection cut) and return the options to start it again."""
    saved = shlex.split((cluster.data / "postmaster.opts").read_text())[1:]  # as it was started
    options = [arg for i, arg in enumerate(saved) if arg != "-D" and (i == 0 or saved[i - 1] != "-D")]
    cluster._run("pg_ctl", "-D", str(cluster.data), "-m", "fast", "-w", "stop")
    return options


def _postgres_up(cluster: PgCluster, options: list[str]) -> None:
    log = str(cluster.root / "server.log")
    cluster._run("pg_ctl", "-D", str(cluster.data), "-l", log, "-o", shlex.join(options), "-w", "start")


def test_ready_answers_503_while_the_database_is_down_and_200_once_it_is_back(tmp_path: Path) -> None:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(NOT_FOUND)
    # A cluster of its own: stopping the session's cluster would take every other test's database with it.
    with PgCluster(bindir) as cluster:
        url = cluster.create_database()
        name = url.rsplit("/", 1)[1]
        with ServerProcess(tmp_path / "srv", db=url) as server:
            answer = httpx.get(f"{server.url}/ready", timeout=10)
            assert answer.status_code == 200 and answer.json()["database"] == "ok"
            assert answer.json()["schema"] == answer.json()["expected"]

            options = _postgres_down(cluster)
            answer = httpx.get(f"{server.url}/ready", timeout=30)
            assert answer.status_code == 503 and answer.headers["Retry-After"]
            assert answer.json()["status"] == "unavailable" and answer.json()["database"] == "unreachable"
            assert PASSWORD not in answer.text
            assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200  # alive all the same

            _postgres_up(cluster, options)
            deadline = time.monotonic() + 30
            while (answer := httpx.get(f"{server.url}/ready", timeout=30)).status_code != 200:
                assert time.monotonic() < deadline, answer.text
                time.sleep(0.2)
            assert answer.json()["status"] == "ready"
            with _client(server) as c:  # and it serves again
                assert (
                    c.post("/api/runs/create", json={"runName": "r", "projectName": "p"}).status_code == 200
                )

            # A newer server migrated the database past this one's code: not ready, naming both versions.
            cluster.execute("INSERT INTO schema_version VALUES (999, 'from the future', now())", name)
            answer = httpx.get(f"{server.url}/ready", timeout=30)
            assert answer.status_code == 503 and answer.json()["schema"] == 999
            message = answer.json()["message"]
            assert "999" in message and str(answer.json()["expected"]) in message
            cluster.execute("DELETE FROM schema_version WHERE version = 999", name)
            assert httpx.get(f"{server.url}/ready", timeout=30).status_code == 200


def test_ready_on_sqlite_and_workers_refused_there(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "srv") as server:
        assert httpx.get(f"{server.url}/ready").json() == {"status": "ready", "database": "ok"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}
    refused = subprocess.run(
        [sys.executable, "-m", "mlop_server", "--port", "0", "--data", str(tmp_path / "x"), "--workers", "2"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "--workers 2 needs PostgreSQL" in refused.stderr
    assert not (tmp_path / "x").exists()  # refused before anything was created


def test_sighup_replaces_the_workers_and_refuses_no_connection(tmp_path: Path, pg_url: str) -> None:
    with ServerProcess(tmp_path / "srv", db=pg_url, extra_args=["--workers", "2"]) as server:
        before = {p.pid for p in psutil.Process(server.pid).children()}
        headers = {"Authorization": f"Bearer {server.key}"}
        answers: list[int | str] = []
        stop = threading.Event()

        def ask() -> None:
            while not stop.is_set():  # a new connection each time, as clients arriving during the restart
                try:
                    answers.append(
                        httpx.get(f"{server.url}/api/projects", headers=headers, timeout=30).status_code
                    )
                except httpx.TransportError as exc:
                    answers.append(type(exc).__name__)

        asker = threading.Thread(target=ask)
        asker.start()
        try:
            time.sleep(0.3)
            os.kill(server.pid, signal.SIGHUP)
            deadline = time.monotonic() + 30
            while True:
                now = {p.pid for p in psutil.Process(server.pid).children()}
                if len(now) == 2 and not now & before:
                    break
                assert time.monotonic() < deadline, (before, now)
                time.sleep(0.1)
            time.sleep(0.3)
        finally:
            stop.set()
            asker.join(30)
        assert len(answers) >= 3 and set(answers) == {200}, answers


def test_kill_9_of_the_supervisor_ends_its_workers_the_server_restarts_and_sigterm_stops_all(
    tmp_path: Path, pg_url: str
) -> None:
    server = ServerProcess(tmp_path / "srv", db=pg_url, extra_args=["--workers", "2"]).start()
    try:
        with _client(server) as c:
            run_id = c.post("/api/runs/create", json={"runName": "r", "projectName": "p"}).json()["runId"]
            assert _ingest(c, run_id, _lines(0, 100)).status_code == 200
        workers = psutil.Process(server.pid).children()
        server.kill()  # the supervisor crashes: its workers must not live on, holding the port
        _, alive = psutil.wait_procs(workers, timeout=20)
        assert not alive, [p.pid for p in alive]
        server.start()  # the same port, free again
        with _client(server) as c:
            steps = [p["step"] for p in c.get(f"/api/runs/{run_id}/metrics", params={"key": "loss"}).json()]
            assert steps == list(range(100))
            for _ in range(6):  # the workers' metrics are one set, whichever worker answers
                assert c.get("/api/projects").status_code == 200
            prom = c.get("/metrics-prom")
            assert prom.status_code == 200 and "/api/projects" in prom.text
        # SIGTERM: every worker ends with the supervisor.
        workers = psutil.Process(server.pid).children()
        assert len(workers) == 2
        os.kill(server.pid, signal.SIGTERM)
        gone, alive = psutil.wait_procs([psutil.Process(server.pid), *workers], timeout=30)
        assert not alive and len(gone) == 3
    finally:
        server.kill()
