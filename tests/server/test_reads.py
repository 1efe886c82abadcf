"""Reads are bounded and never stall the server; oversized lines and deeply nested JSON get 4xx, not 500."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from mlop_server._backend import open_storage
from mlop_server._ops import CreateRun, MetricBatch
from mlop_server.testing import ServerProcess

T0 = 1_795_870_984_866
POINTS = 4_000_000
BATCH = 1_000_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, db_url: str | None) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("reads"), db=db_url) as proc:
        yield proc


def authed(server: ServerProcess, timeout: float = 60) -> httpx.Client:
    return httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}, timeout=timeout
    )


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with authed(server) as http:
        yield http


def new_run(client: httpx.Client, **fields: Any) -> int:
    answer = client.post("/api/runs/create", json={"runName": "r", "projectName": "reads", **fields})
    assert answer.status_code == 200, answer.text
    return int(answer.json()["runId"])


def ingest(client: httpx.Client, run_id: int, kind: str, body: bytes) -> httpx.Response:
    headers = {"Content-Type": "application/x-ndjson", "X-Run-Id": str(run_id)}
    return client.post(f"/ingest/{kind}", content=body, headers=headers)


def seed_series(data: Path, db: str | None) -> int:
    """A run with a 4-million-point series ``loss`` (step i, value i % 1000 + 0.25), written through the
    server's own storage layer: sending it as NDJSON costs about 27 s of parsing on a 2-core machine."""
    storage = open_storage(db, data)
    storage.start()

    async def write() -> int:
        created = await storage.apply(CreateRun("big", "reads", None, None, None, (), None, None, None))
        run_id = int(created["run"]["id"])
        for start in range(0, POINTS, BATCH):
            steps = np.arange(start, start + BATCH, dtype="<i8")
            columns = ((steps + T0).tobytes(), (steps % 1000 + 0.25).astype("<f8").tobytes())
            batch = MetricBatch(run_id, {"loss": (steps.tobytes(), *columns)}, BATCH)
            await storage.apply(batch)
        await storage.aclose()
        return run_id

    try:
        return asyncio.run(write())
    finally:
        storage.close()


def test_a_4_million_point_series_is_read_bounded_without_stalling_others(
    tmp_path: Path, fresh_db: str | None
) -> None:
    run_id = seed_series(tmp_path, fresh_db)
    with ServerProcess(tmp_path, db=fresh_db) as server, authed(server) as client:
        others: list[int] = []
        done = threading.Event()

        def meanwhile() -> None:  # every other request keeps answering while the big read runs
            with authed(server, timeout=5) as other:
                while not done.is_set():
                    others.append(other.get("/api/projects").status_code)

        side = threading.Thread(target=meanwhile)
        side.start()
        try:
            answer = client.get(f"/api/runs/{run_id}/metrics", params={"key": "loss"})
        finally:
            done.set()
            side.join(30)
        assert answer.status_code == 200
        assert answer.headers["x-total-points"] == str(POINTS)
        points = answer.json()
        assert 20_000 <= len(points) <= 100_000
        steps = [p["step"] for p in points]
        assert steps == sorted(steps)
        assert (steps[0], steps[-1]) == (0, POINTS - 1)
        values = {p["value"] for p in points}
        assert {0.25, 999.25} <= values <= {i + 0.25 for i in range(1000)}
        assert others and set(others) == {200}
        few = client.get(f"/api/runs/{run_id}/metrics", params={"key": "loss", "max_points": 1000}).json()
        assert 2 <= len(few) <= 1000
        assert {0.25, 999.25} <= {p["value"] for p in few}
        small = new_run(client)
        lines = b"".join(b'{"time":%d,"step":%d,"data":{"loss":%d.5}}\n' % (T0, i, i) for i in range(3))
        assert ingest(client, small, "metrics", lines).status_code == 200
        exact = client.get(f"/api/runs/{small}/metrics", params={"key": "loss"}).json()
        assert [(p["step"], p["value"]) for p in exact] == [(0, 0.5), (1, 1.5), (2, 2.5)]


def test_a_line_with_millions_of_keys_is_refused(client: httpx.Client) -> None:
    run_id = new_run(client)
    data = b",".join(b'"k%d":1' % i for i in range(2_000_000))
    body = b'{"time":%d,"step":0,"data":{%s}}\n' % (T0, data)
    answer = ingest(client, run_id, "metrics", body)
    assert answer.status_code in (400, 413), answer.text[:200]
    assert "keys" in answer.json()["message"]
    assert client.get(f"/api/runs/{run_id}/keys").json() == []


def nested(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = {"a": value} if i % 2 else [value]
    return value


def test_deeply_nested_json_gets_400_on_every_json_route_and_leaves_no_lasting_error(
    client: httpx.Client,
) -> None:
    deep = nested(300)
    text = json.dumps({"deep": deep})  # orjson stops at 255 levels
    refused = [
        client.post("/api/runs/create", json={"runName": "r", "projectName": "reads", "config": text}),
        client.post(
            "/api/runs/create", json={"runName": "r", "projectName": "reads", "systemMetadata": text}
        ),
    ]
    run_id = new_run(client)
    line = {"time": T0, "step": 0, "logName": "d", "dataType": "DATA", "data": text}
    refused += [
        client.post("/api/runs/config/update", json={"runId": run_id, "config": text}),
        client.post(
            "/api/runs/status/update", json={"runId": run_id, "status": "FAILED", "statusMetadata": text}
        ),
        client.post("/api/runs/modelGraph/create", json={"runId": run_id, "graph": deep}),
        client.post("/api/runs/tags/update", json={"runId": run_id, "tags": deep}),
        ingest(client, run_id, "data", orjson.dumps(line) + b"\n"),
        ingest(
            client,
            run_id,
            "metrics",
            b'{"time":1,"step":0,"data":{"x":' + json.dumps(deep).encode() + b"}}\n",
        ),
        client.post("/files", json={"files": deep}, headers={"X-Run-Id": str(run_id)}),
    ]
    assert [a.status_code for a in refused] == [400] * len(refused), [a.text for a in refused]
    # every later read of the run answers, and what was refused left nothing behind
    run = client.get(f"/api/runs/{run_id}")
    assert run.status_code == 200
    assert (run.json()["config"], run.json()["status"], run.json()["graph"]) == ({}, "RUNNING", None)
    assert client.get(f"/api/runs/{run_id}/data", params={"key": "d"}).status_code == 404
    assert client.get("/api/runs", params={"project": "reads"}).status_code == 200
    shallow = orjson.dumps({"deep": nested(40)}).decode()
    assert (
        client.post("/api/runs/config/update", json={"runId": run_id, "config": shallow}).status_code == 200
    )
    assert client.get(f"/api/runs/{run_id}").json()["config"] == {"deep": nested(40)}


def test_data_reads_are_paged(client: httpx.Client) -> None:
    run_id = new_run(client)
    lines = b"".join(
        orjson.dumps({"time": T0, "step": i, "logName": "s", "dataType": "string-series", "data": f"v{i}"})
        + b"\n"
        for i in range(10_001)
    )
    assert ingest(client, run_id, "data", lines).status_code == 200
    first = client.get(f"/api/runs/{run_id}/data", params={"key": "s"}).json()
    assert [row["data"] for row in first] == [f"v{i}" for i in range(10_000)]
    rest = client.get(f"/api/runs/{run_id}/data", params={"key": "s", "offset": 10_000}).json()
    assert [row["data"] for row in rest] == ["v10000"]
    few = client.get(f"/api/runs/{run_id}/data", params={"key": "s", "limit": 2, "offset": 5}).json()
    assert [row["step"] for row in few] == [5, 6]
