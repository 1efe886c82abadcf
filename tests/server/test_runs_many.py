"""``GET /api/runs/many``: several runs with their keys in one read, only those the key may read."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from mlop_server.testing import ServerProcess

Api = Callable[..., httpx.Response]


def test_runs_with_their_keys_for_the_key_that_asks(
    server: ServerProcess, client: httpx.Client, new_run: Callable[..., int], ingest: Api
) -> None:
    created = server.cli("keys", "create", "--name", "bob", timeout=120)  # on the server's database
    assert created.returncode == 0, created.stderr
    bob_key = created.stdout.strip()
    first = new_run(project="many", name="a")
    second = new_run(project="many", name="b")
    line = {"time": 1, "step": 0, "data": {"train/loss": 1.0, "val/acc": 0.5}}
    assert ingest(first, "metrics", line).status_code == 200
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {bob_key}"}, timeout=30) as bob:
        answer = bob.post("/api/runs/create", json={"runName": "c", "projectName": "many"})
        assert answer.status_code == 200, answer.text
        bobs = int(answer.json()["runId"])
        ids = [("id", str(i)) for i in (second, first, bobs, 999_999, first)]
        found = client.get("/api/runs/many", params=ids).json()
        assert [r["id"] for r in found] == [second, first, bobs]  # asked order, once, unknown left out
        assert [r["name"] for r in found] == ["b", "a", "c"]
        assert found[1]["keys"] == [
            {"name": "train/loss", "type": "METRIC"},
            {"name": "val/acc", "type": "METRIC"},
        ]
        assert found[0]["keys"] == [] and found[0]["status"] == "RUNNING"
        assert [r["id"] for r in bob.get("/api/runs/many", params=ids).json()] == [bobs]  # his only
    for bad in ([], [("id", "x")], [("id", "-1")], [("id", str(i)) for i in range(1, 102)]):
        answer = client.get("/api/runs/many", params=bad)
        assert answer.status_code == 400, (bad, answer.text)
