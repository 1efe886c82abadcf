"""mlop-server on PostgreSQL: bad configurations, migrations, several processes on one database, values kept.

Every test runs real server processes against a throwaway PostgreSQL cluster (tests/pgcluster.py); the rest
of the server suite runs on both backends through tests/server/conftest.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import psutil
import pytest
from pgcluster import PASSWORD, PgCluster, find_bindir

from mlop_server._pg_schema import MIGRATIONS, SCHEMA_VERSION
from mlop_server.testing import DEFAULT_TEST_KEY, ServerProcess


def start(
    data: Path, db: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``mlop server`` on ``db`` (given as MLOP_SERVER_DB) until it exits on its own (a failed start)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MLOP_", "PG"))}
    environ.update(MLOP_SERVER_DB=db, MLOP_SERVER_ADMIN_KEY=DEFAULT_TEST_KEY, **(env or {}))
    cmd = [sys.executable, "-m", "mlop_server", "--port", "0", "--data", str(data), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=environ, timeout=60, check=False)


def tables(cluster: PgCluster, url: str) -> list[str]:
    rows = cluster.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1", url.rsplit("/", 1)[1]
    )
    return [str(row[0]) for row in rows]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("case", ["unreachable", "wrong password"])
def test_a_database_that_refuses_gets_one_clear_line_and_nothing_is_created(
    pg_cluster: PgCluster, pg_url: str, tmp_path: Path, case: str
) -> None:
    if case == "unreachable":
        db = pg_url.replace(f":{pg_cluster.port}/", f":{closed_port()}/")
    else:
        db = pg_url.replace(PASSWORD, "not-the-password")
    done = start(tmp_path / "data", db)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr  # one clear line, no traceback
    assert "cannot connect to postgresql://mlop@127.0.0.1:" in lines[0]
    assert ("password" if case == "wrong password" else "refused") in lines[0].lower()
    assert PASSWORD not in done.stdout + done.stderr and "not-the-password" not in done.stdout + done.stderr
    assert not (tmp_path / "data").exists()  # nothing under --data
    assert tables(pg_cluster, pg_url) == []  # nothing in the database


def test_a_database_of_a_newer_schema_is_refused_naming_both_versions(
    pg_cluster: PgCluster, pg_url: str, tmp_path: Path
) -> None:
    with ServerProcess(tmp_path / "first", db=pg_url):
        pass  # migrated to this code's schema
    newer = SCHEMA_VERSION + 5
    name = pg_url.rsplit("/", 1)[1]
    pg_cluster.execute(f"INSERT INTO schema_version VALUES ({newer}, 'from the future', now())", name)
    before = tables(pg_cluster, pg_url)
    done = start(tmp_path / "second", pg_url)
    assert done.returncode != 0
    message = done.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert f"schema version {newer}" in message and f"this server's {SCHEMA_VERSION}" in message
    assert not (tmp_path / "second").exists()
    assert tables(pg_cluster, pg_url) == before
    (version,) = pg_cluster.execute("SELECT MAX(version) FROM schema_version", name)[0]
    assert version == newer


def test_migrate_dry_run_shows_the_migrations_and_applies_none(
    pg_cluster: PgCluster, pg_url: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}
    env["MLOP_SERVER_DB"] = pg_url
    cmd = [sys.executable, "-m", "mlop_server", "migrate"]
    dry = subprocess.run(
        [*cmd, "--dry-run"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert dry.returncode == 0, dry.stderr
    for step in MIGRATIONS:
        assert f"-- migration {step.version}: {step.name}" in dry.stdout
    assert "CREATE TABLE metrics" in dry.stdout and f"this server's {SCHEMA_VERSION}" in dry.stdout
    assert PASSWORD not in dry.stdout + dry.stderr
    assert tables(pg_cluster, pg_url) == []
    applied = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert applied.returncode == 0, applied.stderr
    assert f"applied migration {SCHEMA_VERSION}" in applied.stdout
    assert "metrics" in tables(pg_cluster, pg_url)
    again = subprocess.run(
        [*cmd, "--dry-run"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert "nothing to apply" in again.stdout
    rows = pg_cluster.execute("SELECT version FROM schema_version ORDER BY 1", pg_url.rsplit("/", 1)[1])
    assert [row[0] for row in rows] == [m.version for m in MIGRATIONS]


def test_the_password_is_never_printed_and_may_come_from_pgpassword(
    pg_cluster: PgCluster, pg_url: str, tmp_path: Path
) -> None:
    bare = pg_cluster.url(pg_url.rsplit("/", 1)[1], password=None)
    with ServerProcess(tmp_path, db=bare, env={"PGPASSWORD": PASSWORD}) as server:
        answer = httpx.get(f"{server.url}/api/projects", headers={"Authorization": f"Bearer {server.key}"})
        assert answer.status_code == 200
        assert f"data in {bare}" in server.output()
    assert PASSWORD not in server.output()
    assert not (tmp_path / "mlop-server.db").exists()  # nothing of the database under --data


@pytest.fixture
def two(pg_url: str, tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two server processes on one PostgreSQL database, started at the same instant on it while empty."""
    servers = (ServerProcess(tmp_path / "a", db=pg_url, startup_timeout=60),
               ServerProcess(tmp_path / "b", db=pg_url, startup_timeout=60))  # fmt: skip
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def up(server: ServerProcess) -> None:
        barrier.wait()
        try:
            server.start()
        except BaseException as exc:  # broad: reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=up, args=(s,)) for s in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    try:
        assert not errors, errors
        yield servers
    finally:
        for server in servers:
            server.stop()


def at_once(clients: list[httpx.Client], body: bytes, headers: dict[str, str]) -> list[httpx.Response]:
    """POST one metrics batch through each client at the same instant (one thread each, a barrier)."""
    barrier = threading.Barrier(len(clients))
    got: list[httpx.Response] = []

    def send(http: httpx.Client) -> None:
        barrier.wait()
        got.append(http.post("/ingest/metrics", content=body, headers=headers))

    threads = [threading.Thread(target=send, args=(http,)) for http in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return got


def client(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}, timeout=30)


def test_two_processes_started_at_once_on_an_empty_database_both_come_up(
    two: tuple[ServerProcess, ServerProcess], pg_cluster: PgCluster, pg_url: str
) -> None:
    name = pg_url.rsplit("/", 1)[1]
    rows = pg_cluster.execute("SELECT version FROM schema_version ORDER BY 1", name)
    assert [row[0] for row in rows] == [m.version for m in MIGRATIONS]  # each migration once
    assert pg_cluster.execute("SELECT COUNT(*) FROM api_keys", name) == [(1,)]  # one admin key
    for server in two:
        with client(server) as http:
            assert http.get("/api/projects").status_code == 200


def test_one_batch_sent_to_two_processes_at_once_is_stored_once(
    two: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = two
    with client(a) as first, client(b) as second:
        created = first.post("/api/runs/create", json={"runName": "twice", "projectName": "pg"})
        run_id = created.json()["runId"]
        answers: dict[str, list[httpx.Response]] = {}
        for batch in range(20):
            body = b"".join(
                orjson.dumps({"step": batch * 10 + i, "time": 1000 + i, "data": {"loss": batch + i / 10}})
                + b"\n"
                for i in range(10)
            )
            headers = {
                "Content-Type": "application/x-ndjson",
                "X-Run-Id": str(run_id),
                "Idempotency-Key": f"batch-{batch}",
            }
            got = at_once([first, second], body, headers)
            answers[f"batch-{batch}"] = got
        for got in answers.values():
            assert [r.status_code for r in got] == [200, 200]
            assert got[0].json() == got[1].json()
        # read whole through the other process: every step once
        points = second.get(f"/api/runs/{run_id}/metrics", params={"key": "loss"}).json()
        assert [p["step"] for p in points] == list(range(200))
        assert first.get(f"/api/runs/{run_id}/metrics", params={"key": "loss"}).json() == points


@pytest.fixture(scope="module")
def pg_server(pg_cluster: PgCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    url = pg_cluster.create_database()
    with ServerProcess(tmp_path_factory.mktemp("pg"), db=url) as server:
        yield server
    pg_cluster.drop_database(url)


def test_non_finite_values_are_kept(pg_server: ServerProcess, pg_cluster: PgCluster) -> None:
    """NaN and both infinities arrive, are stored as float8 (checked in the table) and come back."""
    assert pg_server.db is not None
    with client(pg_server) as http:
        run_id = http.post("/api/runs/create", json={"runName": "nf", "projectName": "pg"}).json()["runId"]
        lines = [
            {"step": i, "time": 5, "data": {"x": v}}
            for i, v in enumerate(["NaN", "Infinity", "-Infinity", 1.5])
        ]
        body = b"".join(orjson.dumps(line) + b"\n" for line in lines)
        answer = http.post(
            "/ingest/metrics",
            content=body,
            headers={"Content-Type": "application/x-ndjson", "X-Run-Id": str(run_id)},
        )
        assert answer.status_code == 200, answer.text
        points = http.get(f"/api/runs/{run_id}/metrics", params={"key": "x"}).json()
    assert [p["value"] for p in points] == ["NaN", "Infinity", "-Infinity", 1.5]
    stored = pg_cluster.execute(
        f"SELECT value::text FROM metrics WHERE run_id = {int(run_id)} ORDER BY step",
        pg_server.db.rsplit("/", 1)[1],
    )
    assert [row[0] for row in stored] == ["NaN", "Infinity", "-Infinity", "1.5"]


def test_strings_with_nul_characters_come_back_whole(server: ServerProcess) -> None:
    """PostgreSQL's text holds no NUL: the backend escapes it, and a name, tag and log line keep it (on both
    backends)."""
    with client(server) as http:
        created = http.post(
            "/api/runs/create",
            json={"runName": "a\u0000b\uffff", "projectName": "p\\g\\x00", "tags": ["t\u0000"]},
        )
        assert created.status_code == 200, created.text
        run_id = created.json()["runId"]
        line = {"time": 1, "lineNumber": 1, "logType": "INFO", "message": "nul \u0000 here \uffff0"}
        answer = http.post(
            "/ingest/logs",
            content=orjson.dumps(line) + b"\n",
            headers={"Content-Type": "application/x-ndjson", "X-Run-Id": str(run_id)},
        )
        assert answer.status_code == 200, answer.text
        run = http.get(f"/api/runs/{run_id}").json()
        logs = http.get(f"/api/runs/{run_id}/logs").json()
    assert run["name"] == "a\u0000b\uffff" and run["tags"] == ["t\u0000"]
    assert run["project"] == "p\\g\\x00"  # backslashes are plain characters too
    assert logs[0]["message"] == "nul \u0000 here \uffff0"


def test_the_reaper_runs_in_one_process_and_moves_on_when_it_dies(
    pg_url: str, pg_cluster: PgCluster, tmp_path: Path
) -> None:
    args = ["--heartbeat-timeout", "1", "--reap-interval", "0.2"]
    with (
        ServerProcess(tmp_path / "a", db=pg_url, extra_args=args) as a,
        ServerProcess(tmp_path / "b", db=pg_url, extra_args=args) as b,
    ):
        name = pg_url.rsplit("/", 1)[1]
        held = "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        with client(b) as http:
            run_id = http.post("/api/runs/create", json={"runName": "silent", "projectName": "pg"}).json()[
                "runId"
            ]
            assert _wait(lambda: http.get(f"/api/runs/{run_id}").json()["status"] == "FAILED"), "not reaped"
            assert pg_cluster.execute(held, name) == [(1,)]  # one leader
            leader = a if _holds_lock(pg_cluster, name, a.pid) else b
            other = b if leader is a else a
            leader.kill()
        with client(other) as http:
            run_id = http.post("/api/runs/create", json={"runName": "later", "projectName": "pg"}).json()[
                "runId"
            ]
            assert _wait(lambda: http.get(f"/api/runs/{run_id}").json()["status"] == "FAILED")


def _wait(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def _holds_lock(cluster: PgCluster, name: str, pid: int) -> bool:
    """True when a connection of the server process ``pid`` holds the leader's advisory lock."""
    rows = cluster.execute(
        "SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted",
        name,
    )
    ports = {int(str(row[0])) for row in rows}
    return any(c.laddr.port in ports for c in psutil.Process(pid).net_connections(kind="tcp"))


def test_without_the_driver_the_server_names_the_extra_to_install(pg_url: str, tmp_path: Path) -> None:
    """psycopg is installed here, so the test hides it from the server's interpreter (``sys.modules``)."""
    program = (
        "import sys; sys.modules['psycopg'] = None; from mlop_server._cli import main; "
        f"sys.exit(main(['--port', '0', '--data', {str(tmp_path / 'data')!r}]))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}
    env.update(MLOP_SERVER_DB=pg_url, MLOP_SERVER_ADMIN_KEY=DEFAULT_TEST_KEY)
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 2
    assert 'pip install "mlop-server[postgres]"' in done.stderr
    assert not (tmp_path / "data").exists()


def test_keys_are_managed_in_the_database_with_db(pg_url: str, pg_cluster: PgCluster, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}
    env["PGPASSWORD"] = PASSWORD
    bare = pg_cluster.url(pg_url.rsplit("/", 1)[1], password=None)
    keys = [sys.executable, "-m", "mlop_server", "keys"]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*keys, *args, "--db", bare], capture_output=True, text=True, env=env, timeout=60
        )

    made = cli("create", "--name", "dana")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert "dana" in cli("list").stdout
    with ServerProcess(tmp_path, db=bare, env={"PGPASSWORD": PASSWORD}) as server:
        headers = {"Authorization": f"Bearer {key}"}
        assert httpx.get(f"{server.url}/api/projects", headers=headers).status_code == 200
        assert cli("revoke", key[:12]).returncode == 0
        assert httpx.get(f"{server.url}/api/projects", headers=headers).status_code == 401
    assert not (tmp_path / "mlop-server.db").exists()


def test_a_restart_of_postgresql_is_ridden_out(tmp_path: Path) -> None:
    """A cluster of its own (the session's is shared), restarted under a running server: it connects again."""
    bindir = find_bindir()
    assert bindir is not None  # the session's cluster started, so PostgreSQL is installed
    with (
        PgCluster(bindir) as cluster,
        ServerProcess(tmp_path, db=cluster.create_database()) as server,
        client(server) as http,
    ):
        run_id = http.post("/api/runs/create", json={"runName": "r", "projectName": "pg"}).json()["runId"]
        cluster.restart()
        line = orjson.dumps({"step": 1, "time": 2, "data": {"x": 1.0}}) + b"\n"
        headers = {"Content-Type": "application/x-ndjson", "X-Run-Id": str(run_id)}
        assert http.post("/ingest/metrics", content=line, headers=headers).status_code == 200
        assert http.get(f"/api/runs/{run_id}/metrics", params={"key": "x"}).json()[0]["value"] == 1.0
        assert http.get("/api/projects").status_code == 200
