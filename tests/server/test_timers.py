"""Timers, on a server with short ones: the reaper (silent RUNNING runs become FAILED), upload URL expiry."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from mlop_server.testing import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, db_url: str | None) -> Iterator[ServerProcess]:
    args = ["--heartbeat-timeout", "2", "--reap-interval", "0.2", "--upload-ttl", "1"]
    with ServerProcess(tmp_path_factory.mktemp("reaper"), extra_args=args, db=db_url) as proc:
        yield proc


def status(client: httpx.Client, run_id: int) -> str:
    value: str = client.get(f"/api/runs/{run_id}").json()["status"]
    return value


def test_silent_runs_fail_and_live_ones_do_not(client: httpx.Client, new_run: Callable[..., int]) -> None:
    silent, beating, ingesting, finished = new_run(), new_run(), new_run(), new_run()
    client.post("/api/runs/status/update", json={"runId": finished, "status": "COMPLETED"})
    deadline = time.monotonic() + 4.2  # twice the heartbeat timeout, and a reaper pass
    step = 0
    while time.monotonic() < deadline:
        assert client.post("/api/runs/trigger", json={"runId": beating}).json()["status"] == "RUNNING"
        line = b'{"time": 1, "step": %d, "data": {"x": 1}}\n' % step  # ingest is a sign of life too
        assert (
            client.post("/ingest/metrics", content=line, headers={"X-Run-Id": str(ingesting)}).status_code
            == 200
        )
        step += 1
        time.sleep(0.2)
    assert status(client, silent) == "FAILED"
    assert client.get(f"/api/runs/{silent}").json()["statusMetadata"]["type"] == "HeartbeatTimeout"
    assert status(client, beating) == "RUNNING"
    assert status(client, ingesting) == "RUNNING"
    assert status(client, finished) == "COMPLETED"
    assert client.post("/api/runs/trigger", json={"runId": silent}).json()["status"] == "FAILED"
    resumed = client.post("/api/runs/resume", json={"runId": silent}).json()
    assert resumed["resumed"] is True
    assert status(client, silent) == "RUNNING"


def test_server_downtime_is_not_a_runs_silence(server: ServerProcess, new_run: Callable[..., int]) -> None:
    run_id = new_run()
    server.stop()
    time.sleep(2.5)  # longer than the heartbeat timeout, while no client could reach the server
    server.start()
    time.sleep(0.6)  # a few reaper passes
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}) as client:
        assert status(client, run_id) == "RUNNING"


T0 = 1_795_870_984_866


def ask(client: httpx.Client, run_id: int, name: str, size: int) -> str:
    entry = {"fileName": name, "fileSize": size, "fileType": "bin", "time": T0, "logName": "img", "step": 0}
    answer = client.post("/files", json={"files": [entry]}, headers={"X-Run-Id": str(run_id)})
    assert answer.status_code == 200, answer.text
    url: str = answer.json()["img"][0][name]
    return url


def stored(client: httpx.Client, run_id: int) -> dict[str, bytes | None]:
    files = client.get(f"/api/runs/{run_id}/files", params={"key": "img"}).json()
    return {f["fileName"]: client.get(f["url"]).content if f["uploaded"] else None for f in files}


def test_url_expires(client: httpx.Client, new_run: Callable[..., int]) -> None:
    run_id = new_run()
    url = ask(client, run_id, "late.bin", 3)
    time.sleep(2.1)  # this server's URLs live 1 s
    answer = httpx.put(url, content=b"abc")
    assert answer.status_code == 401
    assert "expired" in answer.json()["message"]
    assert stored(client, run_id) == {"late.bin": None}
    again = ask(client, run_id, "late.bin", 3)  # a new URL for the same file, with a new expiry
    assert again.split("?")[0] == url.split("?")[0]
    assert again != url
