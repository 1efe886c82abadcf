"""Idempotent resends, concurrent clients, and restarts that lose nothing the server acknowledged."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlop_server.testing import ServerProcess

T0 = 1_795_870_984_866


def test_idempotent_resend(
    client: httpx.Client, ingest: Callable[..., httpx.Response], read_metric: Any, new_run: Callable[..., int]
) -> None:
    run_id = new_run()
    batch = [{"time": T0 + i, "step": i, "data": {"loss": i / 10}} for i in range(3)]
    first = ingest(run_id, "metrics", *batch, headers={"Idempotency-Key": "batch-1"})
    again = ingest(run_id, "metrics", *batch, headers={"Idempotency-Key": "batch-1"})
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert [p["step"] for p in read_metric(run_id, "loss")] == [0, 1, 2]
    assert ingest(run_id, "metrics", *batch, headers={"Idempotency-Key": "batch-2"}).status_code == 200
    assert [p["step"] for p in read_metric(run_id, "loss")] == [0, 0, 1, 1, 2, 2]
    line = {"time": T0, "message": "once", "lineNumber": 0, "logType": "INFO"}
    for _ in range(3):
        assert ingest(run_id, "logs", line, headers={"Idempotency-Key": "logs-1"}).status_code == 200
    assert client.get(f"/api/runs/{run_id}/logs").json() == [line]
    other = new_run()  # the same key on another run is another batch
    assert ingest(other, "metrics", *batch, headers={"Idempotency-Key": "batch-1"}).status_code == 200
    assert len(read_metric(other, "loss")) == 3


def test_idempotent_create_and_files(client: httpx.Client) -> None:
    body = {"runName": "once", "projectName": "idem"}
    first = client.post("/api/runs/create", json=body, headers={"Idempotency-Key": "create-1"}).json()
    again = client.post("/api/runs/create", json=body, headers={"Idempotency-Key": "create-1"}).json()
    assert again == first
    assert len(client.get("/api/runs", params={"project": "idem"}).json()) == 1
    entry = {"fileName": "f.bin", "fileSize": 2, "fileType": "bin", "time": T0, "logName": "f", "step": 0}
    headers = {"X-Run-Id": str(first["runId"]), "Idempotency-Key": "files-1"}
    url_a = client.post("/files", json={"files": [entry]}, headers=headers).json()["f"][0]["f.bin"]
    url_b = client.post("/files", json={"files": [entry]}, headers=headers).json()["f"][0]["f.bin"]
    assert url_a.split("?")[0] == url_b.split("?")[0]
    assert httpx.put(url_b, content=b"ok").status_code == 200
    assert len(client.get(f"/api/runs/{first['runId']}/files", params={"key": "f"}).json()) == 1


def test_concurrent_clients(
    server: ServerProcess, client: httpx.Client, new_run: Callable[..., int], read_metric: Any
) -> None:
    shared = new_run(project="concurrent")
    own = [new_run(project="concurrent") for _ in range(4)]
    batches = 10
    start = threading.Barrier(8)

    def writer(worker: int, run_id: int, key: str) -> None:
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}, timeout=60
        ) as http:
            start.wait(30)
            for b in range(batches):
                lines = [{"time": T0, "step": b * 50 + i, "data": {key: float(worker)}} for i in range(50)]
                body = b"".join(httpx.Request("POST", "/", json=line).content + b"\n" for line in lines)
                answer = http.post("/ingest/metrics", content=body, headers={"X-Run-Id": str(run_id)})
                assert answer.status_code == 200, answer.text

    jobs = [(w, own[w], "x") for w in range(4)] + [(w, shared, f"w{w % 2}") for w in range(4, 8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(writer, *job) for job in jobs]:
            future.result(timeout=120)
    for w in range(4):
        points = read_metric(own[w], "x")
        assert [p["step"] for p in points] == list(range(batches * 50))
        assert {p["value"] for p in points} == {float(w)}
    for key, workers in (("w0", {4.0, 6.0}), ("w1", {5.0, 7.0})):
        points = read_metric(shared, key)
        assert len(points) == 2 * batches * 50
        assert [p["step"] for p in points] == sorted(s for s in range(batches * 50) for _ in range(2))
        assert {p["value"] for p in points} == workers


@pytest.fixture
def own_server(tmp_path: Path, fresh_db: str | None) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path / "server", db=fresh_db) as proc:
        yield proc


@pytest.mark.parametrize("kill", [True, False], ids=["sigkill", "sigterm"])
def test_restart_loses_nothing_acknowledged(own_server: ServerProcess, kill: bool) -> None:
    server = own_server
    acknowledged: list[int] = []
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}) as http:
        run_id = http.post("/api/runs/create", json={"runName": "r", "projectName": "restart"}).json()[
            "runId"
        ]
        stop = threading.Event()

        def hammer() -> None:
            step = 0
            while not stop.is_set():
                lines = b"".join(
                    b'{"time": 1, "step": %d, "data": {"v": %d}}\n' % (step + i, step + i) for i in range(100)
                )
                try:
                    answer = http.post("/ingest/metrics", content=lines, headers={"X-Run-Id": str(run_id)})
                except httpx.HTTPError:
                    return
                if answer.status_code == 200:
                    acknowledged.extend(range(step, step + 100))
                step += 100

        thread = threading.Thread(target=hammer)
        thread.start()
        while len(acknowledged) < 3000:
            assert thread.is_alive()
            threading.Event().wait(0.01)
        old_url = server.url
        if kill:
            server.kill()
        else:
            server.stop()
        stop.set()
        thread.join(30)
    server.start()
    assert server.url == old_url
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}) as http:
        points = http.get(f"/api/runs/{run_id}/metrics", params={"key": "v"}).json()
        assert http.get(f"/api/runs/{run_id}").json()["name"] == "r"
    steps = [p["step"] for p in points]
    assert set(acknowledged) <= set(steps)
    assert len(steps) == len(set(steps))  # nothing twice
    assert all(p["value"] == p["step"] for p in points)


def test_a_big_batch_arrives_whole(
    client: httpx.Client, ingest: Callable[..., httpx.Response], read_metric: Any, new_run: Callable[..., int]
) -> None:
    run_id = new_run()
    lines = [
        {"time": T0 + i, "step": i, "data": {f"k{j}": i + j / 10 for j in range(10)}} for i in range(30_000)
    ]
    answer = ingest(run_id, "metrics", *lines)  # about 6 MB: parsed off the event loop
    assert answer.status_code == 200, answer.text
    assert answer.json()["count"] == 300_000
    points = read_metric(run_id, "k7")
    assert len(points) == 30_000
    assert points[12_345] == {"step": 12_345, "time": T0 + 12_345, "value": 12_345.7}
