"""The reaper: a RUNNING run silent for longer than the heartbeat timeout becomes FAILED."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from mlop_server.testing import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    args = ["--heartbeat-timeout", "1.5", "--reap-interval", "0.2"]
    with ServerProcess(tmp_path_factory.mktemp("reaper"), extra_args=args) as proc:
        yield proc


def status(client: httpx.Client, run_id: int) -> str:
    value: str = client.get(f"/api/runs/{run_id}").json()["status"]
    return value


def test_silent_run_fails_and_heartbeats_keep_a_run_alive(
    client: httpx.Client, new_run: Callable[..., int]
) -> None:
    silent, beating, finished = new_run(), new_run(), new_run()
    client.post("/api/runs/status/update", json={"runId": finished, "status": "COMPLETED"})
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        assert client.post("/api/runs/trigger", json={"runId": beating}).json()["status"] == "RUNNING"
        time.sleep(0.3)
    assert status(client, silent) == "FAILED"
    assert client.get(f"/api/runs/{silent}").json()["statusMetadata"]["type"] == "HeartbeatTimeout"
    assert status(client, beating) == "RUNNING"
    assert status(client, finished) == "COMPLETED"
    assert client.post("/api/runs/trigger", json={"runId": silent}).json()["status"] == "FAILED"
    resumed = client.post("/api/runs/resume", json={"runId": silent}).json()
    assert resumed["resumed"] is True
    assert status(client, silent) == "RUNNING"


def test_ingest_counts_as_a_sign_of_life(client: httpx.Client, new_run: Callable[..., int]) -> None:
    run_id = new_run()
    deadline = time.monotonic() + 2.5
    step = 0
    while time.monotonic() < deadline:
        line = b'{"time": 1, "step": %d, "data": {"x": 1}}\n' % step
        assert (
            client.post("/ingest/metrics", content=line, headers={"X-Run-Id": str(run_id)}).status_code == 200
        )
        step += 1
        time.sleep(0.3)
    assert status(client, run_id) == "RUNNING"
