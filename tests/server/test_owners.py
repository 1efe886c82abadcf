"""Keys have owners: a non-admin key reads and changes only its owner's runs; the admin key sees all.

Two keys of different owners (made with ``mlop server keys create`` before the server ever started) try
every write route on each other's runs, through a real server.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from mlop_server.testing import ServerProcess

T0 = 1_795_870_984_866


def keys(data: Path, *args: str, db: str | None = None) -> subprocess.CompletedProcess[str]:
    """``mlop server keys ARGS`` on the server's data (its PostgreSQL database when ``db``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}
    if db:
        env["MLOP_SERVER_DB"] = db
    return subprocess.run(
        [sys.executable, "-m", "mlop_server", "keys", *args, "--data", str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def new_key(data: Path, *args: str, db: str | None = None) -> str:
    made = keys(data, "create", *args, db=db)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("mlps_")
    return key


@pytest.fixture(scope="module")
def owners(tmp_path_factory: pytest.TempPathFactory, db_url: str | None) -> Iterator[dict[str, Any]]:
    data = tmp_path_factory.mktemp("owners")
    alice = new_key(data, "--name", "alice", db=db_url)  # before the server has ever started
    alice2 = new_key(data, "--name", "alice", db=db_url)
    bob = new_key(data, "--name", "bob", "--projects", "shared", "bobs", db=db_url)
    with ServerProcess(data, db=db_url) as server:
        clients = {
            name: httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
            for name, key in (("alice", alice), ("alice2", alice2), ("bob", bob), ("admin", server.key))
        }
        yield {"server": server, "data": data, "db": db_url, **clients}
        for client in clients.values():
            client.close()


def create(client: httpx.Client, project: str = "shared", **fields: Any) -> httpx.Response:
    return client.post("/api/runs/create", json={"runName": "r", "projectName": project, **fields})


def ndjson(*lines: dict[str, Any]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def writes(run_id: int) -> list[tuple[str, dict[str, Any]]]:
    """Every write route with a valid request for ``run_id``: (path, httpx request arguments)."""
    ndjson_headers = {"Content-Type": "application/x-ndjson", "X-Run-Id": str(run_id)}
    entry = {"fileName": "x.png", "fileSize": 3, "fileType": "png", "time": T0, "logName": "img", "step": 0}
    alert = {"timestamp": T0, "level": "INFO", "title": "t"}
    metric = {"time": T0, "step": 9, "data": {"v": 9.0}}
    text = {"time": T0, "step": 9, "logName": "s", "dataType": "string-series", "data": "x"}
    console = {"time": T0, "message": "m", "lineNumber": 1, "logType": "INFO"}
    return [
        ("/api/runs/status/update", {"json": {"runId": run_id, "status": "CANCELLED"}}),
        ("/api/runs/tags/update", {"json": {"runId": run_id, "tags": ["mine"]}}),
        ("/api/runs/config/update", {"json": {"runId": run_id, "config": '{"lr": 9}'}}),
        ("/api/runs/logName/add", {"json": {"runId": run_id, "logType": "METRIC", "logName": ["z"]}}),
        ("/api/runs/modelGraph/create", {"json": {"runId": run_id, "graph": {"format": "f", "nodes": {}}}}),
        ("/api/runs/alert", {"json": {"runId": run_id, "alert": alert}}),
        ("/api/runs/trigger", {"json": {"runId": run_id}}),
        ("/api/runs/resume", {"json": {"runId": run_id}}),
        (f"/api/runs/{run_id}/cancel", {}),
        ("/ingest/metrics", {"content": ndjson(metric), "headers": ndjson_headers}),
        ("/ingest/data", {"content": ndjson(text), "headers": ndjson_headers}),
        ("/ingest/logs", {"content": ndjson(console), "headers": ndjson_headers}),
        ("/files", {"json": {"files": [entry]}, "headers": {"X-Run-Id": str(run_id)}}),
    ]


def test_another_owner_changes_nothing_and_sees_nothing(owners: dict[str, Any]) -> None:
    alice, bob, admin = owners["alice"], owners["bob"], owners["admin"]
    run_id = create(alice, config='{"lr": 1}', externalId="alice-ext").json()["runId"]
    assert alice.post("/ingest/metrics", **writes(run_id)[9][1]).status_code == 200
    before = admin.get(f"/api/runs/{run_id}").json()
    for path, request in writes(run_id):
        answer = bob.post(path, **request)
        assert answer.status_code == 403, (path, answer.text)
        assert "another owner" in answer.json()["message"]
    after = admin.get(f"/api/runs/{run_id}").json()
    assert (after["status"], after["tags"], after["config"], after["cancelRequested"]) == (
        before["status"],
        before["tags"],
        {"lr": 1},
        False,
    )
    assert [k["name"] for k in admin.get(f"/api/runs/{run_id}/keys").json()] == ["v"]
    # reads: the run does not exist for bob
    for path in (f"/api/runs/{run_id}", f"/api/runs/{run_id}/keys", f"/api/runs/{run_id}/logs"):
        assert bob.get(path).status_code == 404, path
    assert bob.get(f"/api/runs/{run_id}/metrics", params={"key": "v"}).status_code == 404
    assert bob.get(f"/api/runs/{run_id}/series", params={"key": "v"}).status_code == 404
    assert bob.get("/api/runs", params={"project": "shared"}).json() == []
    assert bob.get("/api/runs/last", params={"project": "shared", "key": "v"}).json() == []
    assert "shared" not in {p["name"] for p in bob.get("/api/projects").json()}


def test_create_with_another_owners_external_id_never_hands_back_their_run(owners: dict[str, Any]) -> None:
    alice, bob = owners["alice"], owners["bob"]
    run_id = create(alice, externalId="taken").json()["runId"]
    answer = create(bob, externalId="taken")
    assert answer.status_code == 409, answer.text
    assert "runId" not in answer.json()
    resumed = bob.post("/api/runs/resume", json={"externalId": "taken", "projectName": "shared"})
    assert resumed.status_code in (403, 404)
    assert str(run_id) not in resumed.text
    again = create(alice, externalId="taken").json()
    assert (again["runId"], again["resumed"]) == (run_id, True)


def test_an_idempotency_key_never_replays_another_owners_answer(owners: dict[str, Any]) -> None:
    alice, bob = owners["alice"], owners["bob"]
    headers = {"Idempotency-Key": "same-key"}
    first = alice.post("/api/runs/create", json={"runName": "a", "projectName": "shared"}, headers=headers)
    second = bob.post("/api/runs/create", json={"runName": "b", "projectName": "shared"}, headers=headers)
    assert first.status_code == second.status_code == 200
    assert first.json()["runId"] != second.json()["runId"]
    assert bob.get(f"/api/runs/{second.json()['runId']}").json()["name"] == "b"


def test_keys_of_one_owner_share_runs_and_the_admin_sees_all(owners: dict[str, Any]) -> None:
    alice, alice2, bob, admin = owners["alice"], owners["alice2"], owners["bob"], owners["admin"]
    run_id = create(alice, project="alices").json()["runId"]
    assert alice2.post("/api/runs/tags/update", json={"runId": run_id, "tags": ["both"]}).status_code == 200
    assert alice2.get(f"/api/runs/{run_id}").json()["tags"] == ["both"]
    bobs = create(bob, project="bobs").json()["runId"]
    assert [r["id"] for r in alice.get("/api/runs", params={"project": "alices"}).json()] == [run_id]
    assert [r["id"] for r in admin.get("/api/runs", params={"project": "bobs"}).json()] == [bobs]
    assert admin.get(f"/api/runs/{run_id}").json()["owner"] == "alice"
    assert admin.post("/api/runs/tags/update", json={"runId": bobs, "tags": ["admin"]}).status_code == 200
    assert admin.post(f"/api/runs/{bobs}/cancel").status_code == 200
    assert bob.post("/api/runs/trigger", json={"runId": bobs}).json()["status"] == "CANCELLED"


def test_a_key_with_projects_creates_runs_only_there(owners: dict[str, Any]) -> None:
    bob = owners["bob"]
    assert create(bob, project="bobs").status_code == 200
    answer = create(bob, project="elsewhere")
    assert answer.status_code == 403
    assert "elsewhere" in answer.json()["message"]
    listed = keys(owners["data"], "list", db=owners["db"]).stdout
    assert "shared,bobs" in listed
    assert "mlps_" in listed and len([w for w in listed.split() if w.startswith("mlps_")]) == 4


def test_keys_create_refuses_the_admin_owner_name_for_a_plain_key(owners: dict[str, Any]) -> None:
    made = keys(owners["data"], "create", "--name", "admin", db=owners["db"])
    assert made.returncode != 0
    assert "admin" in made.stderr
    assert made.stdout == ""


def test_revoked_owner_key_is_refused(owners: dict[str, Any], tmp_path: Path) -> None:
    data = owners["data"]
    key = new_key(data, "--name", "carol", db=owners["db"])
    prefix = key[:12]
    with httpx.Client(base_url=owners["server"].url, headers={"Authorization": f"Bearer {key}"}) as carol:
        assert create(carol).status_code == 200
        assert keys(data, "revoke", prefix, db=owners["db"]).returncode == 0
        assert create(carol).status_code == 401
