"""The original mlop client's recorded session, replayed: every request accepted, its values stored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlop_server.testing import ServerProcess

# a copy of the shared fixture (protocol.md, "A real session"), kept in the repository so CI has it
FIXTURE = Path(__file__).with_name("fixtures") / "original-client-session.jsonl"
FIXTURE_KEY = "mlpi_example_key"
RECORDED_RUN_ID = 42
PNG = bytes(range(120))


@pytest.fixture(scope="module")
def replay(
    tmp_path_factory: pytest.TempPathFactory, db_url: str | None
) -> Iterator[tuple[ServerProcess, int, list[httpx.Response]]]:
    """Replay the session against a server with the recorded key swapped for its admin key (the recorded
    key is shorter than the server accepts for an admin key); yields the new run id."""
    requests = [json.loads(line) for line in FIXTURE.read_text().splitlines() if line.strip()]
    with ServerProcess(tmp_path_factory.mktemp("replay"), db=db_url) as server:
        answers: list[httpx.Response] = []
        run_id = 0
        uploads: dict[str, str] = {}
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for req in requests:
                headers = dict(req["headers"])
                if headers.get("Authorization") == f"Bearer {FIXTURE_KEY}":
                    headers["Authorization"] = f"Bearer {server.key}"
                body: Any = (req["body"] or "").encode()
                if run_id:
                    body = body.replace(b'"runId": 42', f'"runId": {run_id}'.encode())
                    if headers.get("X-Run-Id") == str(RECORDED_RUN_ID):
                        headers["X-Run-Id"] = str(run_id)
                url = req["path"]
                if req["method"] == "PUT":
                    url = uploads[req["path"].rsplit("/", 1)[1]]
                    body = PNG
                if req["chunked"]:
                    headers.pop("Transfer-Encoding")
                    data = body
                    body = iter(
                        [data[: len(data) // 2], data[len(data) // 2 :]]
                    )  # sent chunked, in two parts
                answer = http.request(req["method"], url, content=body, headers=headers)
                answers.append(answer)
                if req["path"] == "/api/runs/create" and answer.status_code == 200:
                    run_id = answer.json()["runId"]
                if req["path"] == "/files" and answer.status_code == 200:
                    for entry in answer.json()["sample"]:
                        uploads.update(entry)
        yield server, run_id, answers


@pytest.fixture
def read(replay: tuple[ServerProcess, int, list[httpx.Response]]) -> Iterator[httpx.Client]:
    server, _, _ = replay
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}) as http:
        yield http


def test_every_request_is_accepted(replay: tuple[ServerProcess, int, list[httpx.Response]]) -> None:
    _, run_id, answers = replay
    assert run_id > 0
    assert [a.status_code for a in answers] == [200] * len(answers), [a.text for a in answers]
    assert answers[0].json() == {"organization": {"slug": "local"}}
    created = answers[1].json()
    assert created["resumed"] is False
    assert created["projectName"] == "demo"


def test_metrics_arrive_with_their_values(read: httpx.Client, replay: tuple[Any, int, Any]) -> None:
    run_id = replay[1]
    loss = read.get(f"/api/runs/{run_id}/metrics", params={"key": "train/loss"}).json()
    assert [p["step"] for p in loss] == [1, 2, 3, 4, 5]
    assert [p["value"] for p in loss] == [1.0, 0.5, 0.3333333333333333, 0.25, 0.2]
    assert loss[0]["time"] == 1795870984866
    acc = read.get(f"/api/runs/{run_id}/metrics", params={"key": "train/acc"}).json()
    assert [p["value"] for p in acc] == [0.0, 0.2, 0.4, 0.6, 0.8]
    assert read.get(f"/api/runs/{run_id}/metrics", params={"key": "eval/loss"}).json() == [
        {"step": 10, "time": 1795870984870, "value": 0.3}
    ]
    cpu = read.get(f"/api/runs/{run_id}/metrics", params={"key": "sys/cpu.percentage.0"}).json()
    assert isinstance(cpu, list), cpu
    assert [(p["step"], p["value"]) for p in cpu] == [(11, 0.0), (12, 3.9), (12, 0.0)]
    memory = read.get(f"/api/runs/{run_id}/metrics", params={"key": "sys/memory.used"}).json()
    assert {p["value"] for p in memory} == {123456789}


def test_keys_have_their_types(read: httpx.Client, replay: tuple[Any, int, Any]) -> None:
    keys = {k["name"]: k["type"] for k in read.get(f"/api/runs/{replay[1]}/keys").json()}
    assert keys["train/loss"] == "METRIC"
    assert keys["sys/network.bytes.received"] == "METRIC"
    assert keys["hist"] == "HISTOGRAM"
    assert keys["preds"] == "TABLE"
    assert keys["sample"] == "IMAGE"


def test_run_detail(read: httpx.Client, replay: tuple[Any, int, Any]) -> None:
    run = read.get(f"/api/runs/{replay[1]}").json()
    assert run["name"] == "capture"
    assert run["project"] == "demo"
    assert run["status"] == "COMPLETED"
    assert run["config"] == {"lr": 0.001, "model": {"depth": 4}}
    assert run["systemMetadata"]["platform"]["node"] == "trainer-01"
    assert run["loggerSettings"]["project"] == "demo"
    assert run["alerts"] == [
        {
            "timestamp": 1795870984915,
            "level": "WARNING",
            "title": "plateau",
            "body": "loss plateaued",
            "email": True,
            "url": None,
        }
    ]
    listed = read.get("/api/runs", params={"project": "demo"}).json()
    assert [r["id"] for r in listed] == [replay[1]]


def test_data_logs_and_files(read: httpx.Client, replay: tuple[Any, int, Any]) -> None:
    run_id = replay[1]
    hist = read.get(f"/api/runs/{run_id}/data", params={"key": "hist"}).json()
    assert len(hist) == 1
    assert hist[0]["step"] == 11
    assert hist[0]["dataType"] == "HISTOGRAM"
    assert hist[0]["data"]["freq"] == [1, 2, 3]
    table = read.get(f"/api/runs/{run_id}/data", params={"key": "preds"}).json()
    assert table[0]["data"]["table"] == [[1, "cat"], [2, "dog"]]
    logs = read.get(f"/api/runs/{run_id}/logs").json()
    assert logs == [{"time": 1795870984914, "lineNumber": 1, "logType": "INFO", "message": "epoch 1 done"}]
    files = read.get(f"/api/runs/{run_id}/files", params={"key": "sample"}).json()
    assert len(files) == 1
    assert files[0]["fileName"] == "noise.320d59b8-b52e-471d-a987-f311193375c6.png"
    assert files[0]["step"] == 12
    assert files[0]["uploaded"] is True
    content = read.get(files[0]["url"])
    assert content.status_code == 200
    assert content.content == PNG
    assert content.headers["content-type"] == "image/png"
