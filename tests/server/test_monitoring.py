"""Operating the server: its Prometheus metrics (``/metrics-prom``) and its access log, on a real process.

The counters are read the way Prometheus reads them (the text format, parsed by prometheus-client's own
parser) before and after real requests; the access log is the file the server wrote.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mlop_server.testing import ServerProcess


@pytest.fixture(scope="module")
def logged(
    tmp_path_factory: pytest.TempPathFactory, db_url: str | None
) -> Iterator[tuple[ServerProcess, Path]]:
    """A server writing its access log to a file (once on SQLite, once on PostgreSQL)."""
    data = tmp_path_factory.mktemp("monitored")
    log = data.parent / f"{data.name}-access.log"
    with ServerProcess(data, extra_args=["--access-log", str(log)], db=db_url) as proc:
        yield proc, log


def scrape(url: str, key: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics-prom``: ``{(name, sorted labels): value}``."""
    answer = httpx.get(f"{url}/metrics-prom", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_counters_move_with_real_requests(logged: tuple[ServerProcess, Path], backend: str) -> None:
    server, _ = logged
    auth = {"Authorization": f"Bearer {server.key}"}
    before = scrape(server.url, server.key)
    with httpx.Client(base_url=server.url, headers=auth, timeout=30) as client:
        run_id = client.post("/api/runs/create", json={"runName": "m", "projectName": "mon"}).json()["runId"]
        lines = (
            b'{"time": 1, "step": 0, "data": {"a": 1, "b": 2}}\n{"time": 2, "step": 1, "data": {"a": 3}}\n'
        )
        headers = {"Content-Type": "application/x-ndjson", "X-Run-Id": str(run_id)}
        for _ in range(2):
            assert client.post("/ingest/metrics", content=lines, headers=headers).status_code == 200
        assert client.get(f"/api/runs/{run_id}/nothing-here").status_code == 404
        assert client.get("/api/runs/999999").status_code == 404
    after = scrape(server.url, server.key)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    route = {"route": "/ingest/metrics", "method": "POST", "status": "200"}
    assert moved("mlop_server_requests_total", **route) == 2
    assert moved("mlop_server_ingested_total", kind="metrics") == 6  # three values per batch
    assert moved("mlop_server_request_duration_seconds_count", route="/ingest/metrics") == 2
    assert moved("mlop_server_requests_total", route="/api/runs/create", method="POST", status="200") == 1
    assert (
        moved("mlop_server_requests_total", route="/api/runs/{run_id:int}", method="GET", status="404") == 1
    )
    # A path that matches no route is counted as such, never by its own path.
    assert moved("mlop_server_requests_total", route="unmatched", method="GET", status="404") == 1
    assert not any("nothing-here" in str(labels) for _, labels in after)
    assert ("mlop_server_write_queue_depth", ()) in after
    assert value(after, "mlop_server_requests_in_progress") == 1  # the scrape itself
    if backend == "postgres":  # the connection pool's statistics
        assert value(after, "mlop_server_db_pool", stat="pool_size") >= 1
        assert ("mlop_server_db_pool", (("stat", "requests_waiting"),)) in after


def test_the_metrics_need_a_key(logged: tuple[ServerProcess, Path]) -> None:
    server, _ = logged
    assert httpx.get(f"{server.url}/metrics-prom").status_code == 401
    wrong = {"Authorization": "Bearer mlps_not_a_key_of_this_server_000"}
    assert httpx.get(f"{server.url}/metrics-prom", headers=wrong).status_code == 401


def test_the_access_log_has_one_line_per_request_and_no_secret(logged: tuple[ServerProcess, Path]) -> None:
    server, log = logged
    auth = {"Authorization": f"Bearer {server.key}"}
    with httpx.Client(base_url=server.url, headers=auth, timeout=30) as client:
        run_id = client.post("/api/runs/create", json={"runName": "l", "projectName": "logged"}).json()[
            "runId"
        ]
        client.post("/api/runs/logName/add", json={"runId": run_id, "logType": "FILE", "logName": ["f"]})
        entry = {"fileName": "x.bin", "fileSize": 5, "fileType": "bin", "time": 1, "logName": "f", "step": 0}
        answer = client.post("/files", json={"files": [entry]}, headers={"X-Run-Id": str(run_id)}).json()
        upload = answer["f"][0]["x.bin"]
        assert "signature=" in upload
        assert httpx.put(upload, content=b"hello").status_code == 200
        client.get("/health", headers={"Cookie": "mlop_session=secret-cookie-value"})
    text = log.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    put = next(line for line in lines if line["method"] == "PUT")
    assert put["path"].startswith("/uploads/") and put["status"] == 200 and put["in"] == 5
    assert put["route"] == "/uploads/{file_id:int}"
    create = next(line for line in lines if line["path"] == "/api/runs/create")
    assert create["status"] == 200 and create["out"] > 0 and create["remote"] == "127.0.0.1"
    assert set(create) == {"ts", "remote", "method", "path", "route", "status", "ms", "in", "out"}
    assert isinstance(create["ms"], float) and create["ts"].endswith("Z")
    assert server.key not in text and "Bearer" not in text
    assert "signature" not in text and "secret-cookie-value" not in text
    assert log.stat().st_mode & 0o077 == 0  # the server's user's only


def test_the_access_log_goes_to_stderr_at_info_and_can_be_turned_off(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "a", extra_args=["--log-level", "info"]) as server:
        httpx.get(f"{server.url}/health")
        server.stop()
        shown = [line for line in server.output().splitlines() if line.startswith('{"ts"')]
    assert any(json.loads(line)["path"] == "/health" for line in shown)
    with ServerProcess(tmp_path / "b", extra_args=["--log-level", "info", "--access-log", "off"]) as server:
        httpx.get(f"{server.url}/health")
        server.stop()
        assert not any(line.startswith('{"ts"') for line in server.output().splitlines())


def test_with_two_workers_any_worker_answers_for_both(tmp_path: Path, pg_url: str) -> None:
    """--workers 2 (PostgreSQL): every scrape, whichever worker answers it, counts the requests of both."""
    folder = tmp_path / "prom"
    env = {"PROMETHEUS_MULTIPROC_DIR": str(folder)}
    with ServerProcess(tmp_path / "w", db=pg_url, extra_args=["--workers", "2"], env=env) as server:
        auth = {"Authorization": f"Bearer {server.key}"}
        for _ in range(30):  # a new connection each: the two workers take turns accepting them
            assert httpx.get(f"{server.url}/api/projects", headers=auth).status_code == 200
        pids = {path.stem.rsplit("_", 1)[-1] for path in folder.glob("counter_*.db")}
        assert len(pids) == 2, pids  # both workers counted requests
        for _ in range(6):
            samples = scrape(server.url, server.key)
            read = {"route": "/api/projects", "method": "GET", "status": "200"}
            assert value(samples, "mlop_server_requests_total", **read) == 30
        assert value(samples, "mlop_server_db_pool", stat="pool_size") >= 2  # a connection in each pool
