"""Every route with a good and a bad request, against a real server; values checked through the read API."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest

from mlop_server.testing import ServerProcess

T0 = 1_795_870_984_866


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, db_url: str | None) -> Iterator[ServerProcess]:
    with ServerProcess(
        tmp_path_factory.mktemp("routes"), extra_args=["--max-body-mb", "1"], db=db_url
    ) as proc:
        yield proc


def keys_cli(server: ServerProcess, *args: str) -> str:
    out = server.cli("keys", *args, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def bad(answer: httpx.Response, status: int, *words: str) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error", "message"}
    for word in words:
        assert word in body["message"], body["message"]


def run_of(client: httpx.Client, run_id: int) -> dict[str, Any]:
    answer = client.get(f"/api/runs/{run_id}")
    assert answer.status_code == 200, answer.text
    run: dict[str, Any] = answer.json()
    return run


# -- run control -----------------------------------------------------------------------------------------


def test_slug(client: httpx.Client) -> None:
    assert client.post("/api/slug").json() == {"organization": {"slug": "local"}}
    bad(client.post("/api/slug", json={"org": 1}), 400, "'org'")


def test_create(client: httpx.Client) -> None:
    answer = client.post(
        "/api/runs/create",
        json={"runName": "r", "projectName": "create", "config": '{"lr": 0.1}', "tags": ["a", "group:g"]},
        headers={"X-Run-Id": "None"},
    ).json()
    assert answer["resumed"] is False
    assert answer["projectName"] == "create"
    assert answer["url"].endswith(f"/ui/#/run/{answer['runId']}")
    run = run_of(client, answer["runId"])
    assert (run["name"], run["status"], run["tags"], run["config"]) == (
        "r",
        "RUNNING",
        ["a", "group:g"],
        {"lr": 0.1},
    )
    assert run["displayId"] == answer["displayId"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"runName": "r", "projectName": "p", "colour": "red"}, "'colour'"),
        ({"runName": "r"}, "'projectName'"),
        ({"runName": "r", "projectName": ""}, "'projectName'"),
        ({"runName": "r", "projectName": "p", "config": "{not json"}, "'config'"),
        ({"runName": "r", "projectName": "p", "config": {"lr": 1}}, "'config'"),
        ({"runName": "r", "projectName": "p", "tags": ["group:a", "group:b"]}, "'tags'"),
        ({"runName": "r", "projectName": "p", "tags": [str(i) for i in range(51)]}, "'tags'"),
        ({"runName": "r", "projectName": "p", "createdAt": -1}, "'createdAt'"),
    ],
)
def test_create_refuses(client: httpx.Client, body: dict[str, Any], field: str) -> None:
    bad(client.post("/api/runs/create", json=body), 400, field)


def test_create_with_no_name_in_the_body_takes_the_decoded_header(client: httpx.Client) -> None:
    """Non-ASCII names travel in headers as ``UTF-8''`` percent-encoding (docs/online.md); the server
    decodes it. The body's name stays the authority; an undecodable header is ignored."""
    name = "训练-δ-🚀 run"
    encoded = "UTF-8''%E8%AE%AD%E7%BB%83-%CE%B4-%F0%9F%9A%80%20run"
    body = {"runName": "", "projectName": "header-names"}
    from_header = client.post("/api/runs/create", json=body, headers={"X-Run-Name": encoded}).json()
    assert run_of(client, from_header["runId"])["name"] == name
    named = {**body, "runName": "from the body"}
    from_body = client.post("/api/runs/create", json=named, headers={"X-Run-Name": encoded}).json()
    assert run_of(client, from_body["runId"])["name"] == "from the body"
    broken = client.post("/api/runs/create", json=body, headers={"X-Run-Name": "UTF-8''%FF%FE"})
    assert broken.status_code == 200
    assert run_of(client, broken.json()["runId"])["name"] == ""


def test_external_id_shares_a_run(client: httpx.Client) -> None:
    body = {"runName": "worker", "projectName": "shared", "externalId": "job-7"}
    first = client.post("/api/runs/create", json=body).json()
    second = client.post("/api/runs/create", json={**body, "runName": "worker-2"}).json()
    other = client.post("/api/runs/create", json={**body, "projectName": "elsewhere"}).json()
    assert (first["resumed"], second["resumed"], other["resumed"]) == (False, True, False)
    assert second["runId"] == first["runId"] != other["runId"]
    assert [r["id"] for r in client.get("/api/runs", params={"project": "shared"}).json()] == [first["runId"]]
    assert run_of(client, first["runId"])["externalId"] == "job-7"


def test_resume(client: httpx.Client, new_run: Callable[..., int]) -> None:
    run_id = new_run(project="resume", externalId="ext-1")
    client.post("/api/runs/status/update", json={"runId": run_id, "status": "FAILED"})
    by_id = client.post("/api/runs/resume", json={"runId": run_id}).json()
    assert (by_id["runId"], by_id["resumed"]) == (run_id, True)
    assert run_of(client, run_id)["status"] == "RUNNING"
    by_ext = client.post("/api/runs/resume", json={"externalId": "ext-1", "projectName": "resume"}).json()
    assert by_ext["runId"] == run_id
    by_display = client.post(
        "/api/runs/resume", json={"displayId": by_id["displayId"], "projectName": "resume"}
    )
    assert by_display.json()["runId"] == run_id
    bad(client.post("/api/runs/resume", json={"externalId": "ext-1"}), 400, "'projectName'")
    bad(client.post("/api/runs/resume", json={"runId": 10**9}), 404)


def test_resume_answers_the_runs_last_step(
    client: httpx.Client, new_run: Callable[..., int], ingest: Callable[..., httpx.Response]
) -> None:
    """``lastStep``, our extra field: the highest step of any kind, None for a run without steps."""
    run_id = new_run(project="laststep", externalId="ls-1")
    assert client.post("/api/runs/resume", json={"runId": run_id}).json()["lastStep"] is None
    metrics = [{"time": T0, "step": s, "data": {"loss": 1.0}} for s in (0, 41, 7)]
    assert ingest(run_id, "metrics", *metrics).status_code == 200
    assert client.post("/api/runs/resume", json={"runId": run_id}).json()["lastStep"] == 41
    text = {"time": T0, "step": 44, "logName": "s", "dataType": "string-series", "data": "x"}
    assert ingest(run_id, "data", text).status_code == 200
    body = {"externalId": "ls-1", "projectName": "laststep"}
    assert client.post("/api/runs/resume", json=body).json()["lastStep"] == 44
    shared = client.post("/api/runs/create", json={"runName": "r", "projectName": "laststep", **body})
    assert shared.json()["lastStep"] == 44
    fresh = client.post("/api/runs/create", json={"runName": "r", "projectName": "laststep"}).json()
    assert (fresh["resumed"], fresh["lastStep"]) == (False, None)


def test_status(client: httpx.Client, new_run: Callable[..., int]) -> None:
    run_id = new_run()
    error = {"type": "ValueError", "message": "boom", "frames": [], "trace": "Traceback..."}
    answer = client.post(
        "/api/runs/status/update",
        json={"runId": run_id, "status": "FAILED", "statusMetadata": orjson.dumps(error).decode()},
    )
    assert answer.json() == {"success": True}
    run = run_of(client, run_id)
    assert (run["status"], run["statusMetadata"]) == ("FAILED", error)
    bad(client.post("/api/runs/status/update", json={"runId": run_id, "status": "DONE"}), 400, "'status'")
    bad(client.post("/api/runs/status/update", json={"runId": 10**9, "status": "FAILED"}), 404)
    assert run_of(client, run_id)["status"] == "FAILED"


def test_log_names(client: httpx.Client, new_run: Callable[..., int]) -> None:
    run_id = new_run()
    client.post(
        "/api/runs/logName/add", json={"runId": run_id, "logType": "IMAGE", "logName": ["img", "img2"]}
    )
    keys = client.get(f"/api/runs/{run_id}/keys").json()
    assert keys == [{"name": "img", "type": "IMAGE"}, {"name": "img2", "type": "IMAGE"}]
    bad(
        client.post("/api/runs/logName/add", json={"runId": run_id, "logType": "GRAPH", "logName": ["g"]}),
        400,
        "'logType'",
    )
    bad(
        client.post("/api/runs/logName/add", json={"runId": run_id, "logType": "TEXT", "logName": []}),
        400,
        "'logName'",
    )


def test_tags_and_config(client: httpx.Client, new_run: Callable[..., int]) -> None:
    run_id = new_run(config='{"model": {"depth": 4, "width": 8}, "lr": 0.1}')
    assert client.post("/api/runs/tags/update", json={"runId": run_id, "tags": ["x", "y"]}).status_code == 200
    delta = '{"model": {"depth": 5}, "seed": 1}'
    assert client.post("/api/runs/config/update", json={"runId": run_id, "config": delta}).status_code == 200
    run = run_of(client, run_id)
    assert run["tags"] == ["x", "y"]
    assert run["config"] == {"model": {"depth": 5, "width": 8}, "lr": 0.1, "seed": 1}
    bad(client.post("/api/runs/tags/update", json={"runId": run_id, "tags": None}), 400, "'tags'")
    bad(client.post("/api/runs/config/update", json={"runId": run_id, "config": "[1, 2]"}), 400, "'config'")
    assert run_of(client, run_id)["tags"] == ["x", "y"]


def test_model_graph(client: httpx.Client, new_run: Callable[..., int]) -> None:
    run_id = new_run()
    graph = {
        "format": "torch",
        "nodes": {
            ".": {"type": "Net", "depth": 0, "edges": [["fc1", "fc2"]]},
            "fc1": {"type": "Linear", "depth": 1, "order": 0, "params": {"weight": [4, 2]}},
        },
    }
    assert (
        client.post("/api/runs/modelGraph/create", json={"runId": run_id, "graph": graph}).status_code == 200
    )
    assert run_of(client, run_id)["graph"] == graph
    broken = {"format": "torch", "nodes": {".": {"type": "Net"}}}
    bad(client.post("/api/runs/modelGraph/create", json={"runId": run_id, "graph": broken}), 400, "depth")


def test_trigger_and_cancel(client: httpx.Client, server: ServerProcess, new_run: Callable[..., int]) -> None:
    run_id = new_run()
    assert client.post("/api/runs/trigger", json={"runId": run_id}).json() == {
        "status": "RUNNING",
        "triggers": [],
    }
    user_key = keys_cli(server, "create", "--name", "user").strip()
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {user_key}"}) as user:
        bad(user.post(f"/api/runs/{run_id}/cancel"), 403, "another owner")
        bad(user.post("/api/runs/trigger", json={"runId": run_id}), 403, "another owner")
    assert client.post(f"/api/runs/{run_id}/cancel").json() == {"success": True}
    assert client.post("/api/runs/trigger", json={"runId": run_id}).json()["status"] == "CANCELLED"
    assert run_of(client, run_id)["cancelRequested"] is True
    bad(client.post("/api/runs/trigger", json={"runId": str(run_id)}), 400, "'runId'")
    bad(client.post("/api/runs/trigger", json={"runId": 10**9}), 404)
    bad(client.post(f"/api/runs/{10**9}/cancel"), 404)


def test_alert(client: httpx.Client, new_run: Callable[..., int]) -> None:
    run_id = new_run()
    alert = {"timestamp": T0, "level": "ERROR", "title": "t", "body": "b", "email": False, "url": None}
    assert client.post("/api/runs/alert", json={"runId": run_id, "alert": alert}).status_code == 200
    assert run_of(client, run_id)["alerts"] == [alert]
    bad(
        client.post("/api/runs/alert", json={"runId": run_id, "alert": {**alert, "level": "LOUD"}}),
        400,
        "alert.level",
    )


# -- ingest ----------------------------------------------------------------------------------------------


def test_metrics(
    ingest: Callable[..., httpx.Response], read_metric: Any, new_run: Callable[..., int]
) -> None:
    run_id = new_run()
    answer = ingest(
        run_id,
        "metrics",
        {"time": T0, "step": 0, "data": {"a": 1, "b": "NaN"}},
        {"time": T0 + 1, "step": 1, "data": {"a": 2.5, "b": "Infinity"}},
        {"time": T0 + 2, "step": 2, "data": {"a": -1e300, "b": "-Infinity"}},
    )
    assert answer.status_code == 200, answer.text
    assert read_metric(run_id, "a") == [
        {"step": 0, "time": T0, "value": 1},
        {"step": 1, "time": T0 + 1, "value": 2.5},
        {"step": 2, "time": T0 + 2, "value": -1e300},
    ]
    assert [p["value"] for p in read_metric(run_id, "b")] == ["NaN", "Infinity", "-Infinity"]


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ({"time": T0, "step": 1, "data": {"x": 1}, "extra": 1}, ["line 2", "'extra'"]),
        ({"time": T0, "step": 1}, ["line 2", "'data'"]),
        ({"time": T0, "step": 1, "data": {}}, ["line 2", "'data'", "empty"]),
        ({"time": T0, "step": -1, "data": {"x": 1}}, ["line 2", "'step'"]),
        ({"time": T0, "step": 1.5, "data": {"x": 1}}, ["line 2", "'step'"]),
        ({"time": "now", "step": 1, "data": {"x": 1}}, ["line 2", "'time'"]),
        ({"time": T0, "step": 1, "data": {"x": True}}, ["line 2", "'data.x'", "boolean"]),
        ({"time": T0, "step": 1, "data": {"x": "1.5"}}, ["line 2", "'data.x'"]),
        ({"time": T0, "step": 1, "data": {"x": None}}, ["line 2", "'data.x'"]),
    ],
)
def test_metrics_refused_whole(
    ingest: Callable[..., httpx.Response],
    client: httpx.Client,
    new_run: Callable[..., int],
    line: Any,
    words: list[str],
) -> None:
    run_id = new_run()
    good = {"time": T0, "step": 0, "data": {"x": 1.0}}
    bad(ingest(run_id, "metrics", good, line), 400, *words)
    bad(client.get(f"/api/runs/{run_id}/metrics", params={"key": "x"}), 404)  # line 1 was not stored either


def test_ingest_needs_a_run(client: httpx.Client, ingest: Callable[..., httpx.Response]) -> None:
    line = {"time": T0, "step": 0, "data": {"x": 1.0}}
    bad(client.post("/ingest/metrics", content=orjson.dumps(line)), 400, "X-Run-Id")
    bad(
        client.post("/ingest/metrics", content=orjson.dumps(line), headers={"X-Run-Id": "None"}),
        400,
        "X-Run-Id",
    )
    bad(ingest(10**9, "metrics", line), 404)
    bad(client.post("/ingest/metrics", content=b"", headers={"X-Run-Id": "1"}), 400, "no NDJSON line")
    bad(client.post("/ingest/metrics", content=b"{nope\n", headers={"X-Run-Id": "1"}), 400, "line 1")


def test_data(
    client: httpx.Client, ingest: Callable[..., httpx.Response], new_run: Callable[..., int]
) -> None:
    run_id = new_run()
    hist = {
        "freq": [1, 2],
        "maxFreq": 2,
        "bins": [0.0, 1.0, 2.0],
        "shape": "generic",
        "type": "Histogram",
        "v": 1,
    }
    answer = ingest(
        run_id,
        "data",
        {"time": T0, "step": 3, "logName": "h", "dataType": "HISTOGRAM", "data": orjson.dumps(hist).decode()},
        {"time": T0, "step": 2, "logName": "s", "dataType": "string-series", "data": "second"},
        {"time": T0, "step": 1, "logName": "s", "dataType": "string-series", "data": "first"},
    )
    assert answer.status_code == 200, answer.text
    assert client.get(f"/api/runs/{run_id}/data", params={"key": "h"}).json() == [
        {"step": 3, "time": T0, "dataType": "HISTOGRAM", "data": hist}
    ]
    assert [r["data"] for r in client.get(f"/api/runs/{run_id}/data", params={"key": "s"}).json()] == [
        "first",
        "second",
    ]
    assert {k["name"]: k["type"] for k in client.get(f"/api/runs/{run_id}/keys").json()} == {
        "h": "HISTOGRAM",
        "s": "DATA",
    }
    line = {"time": T0, "step": 1, "logName": "h", "dataType": "PICTURE", "data": "{}"}
    bad(ingest(run_id, "data", line), 400, "line 1", "'dataType'")
    bad(ingest(run_id, "data", {**line, "dataType": "TABLE", "data": "[1]"}), 400, "'data'")
    bad(client.get(f"/api/runs/{run_id}/data"), 400, "'key'")
    bad(client.get(f"/api/runs/{run_id}/data", params={"key": "nope"}), 404)


def test_logs(
    client: httpx.Client, ingest: Callable[..., httpx.Response], new_run: Callable[..., int]
) -> None:
    run_id = new_run()
    lines = [{"time": T0 + i, "message": f"line {i}", "lineNumber": i, "logType": "INFO"} for i in range(5)]
    lines.append({"time": T0, "message": "oops", "lineNumber": 5, "logType": "ERROR"})
    assert ingest(run_id, "logs", *lines).status_code == 200
    assert client.get(f"/api/runs/{run_id}/logs").json() == lines
    assert client.get(f"/api/runs/{run_id}/logs", params={"limit": 2, "offset": 4}).json() == lines[4:]
    bad(ingest(run_id, "logs", {**lines[0], "logType": "LOUD"}), 400, "'logType'")
    bad(ingest(run_id, "logs", {**lines[0], "lineNumber": -3}), 400, "'lineNumber'")
    bad(client.get(f"/api/runs/{run_id}/logs", params={"limit": 0}), 400, "'limit'")
    assert len(client.get(f"/api/runs/{run_id}/logs").json()) == 6


def test_files_route(client: httpx.Client, new_run: Callable[..., int]) -> None:
    run_id = new_run()
    entry = {"fileName": "a.1.png", "fileSize": 3, "fileType": "png", "time": T0, "logName": "img", "step": 1}
    answer = client.post(
        "/files", json={"files": [entry, {**entry, "fileName": "b.png"}]}, headers={"X-Run-Id": str(run_id)}
    )
    urls = answer.json()["img"]
    assert [list(u) for u in urls] == [["a.1.png"], ["b.png"]]
    assert urls[0]["a.1.png"].startswith(f"{client.base_url}/uploads/".replace("//uploads", "/uploads"))
    assert httpx.put(urls[0]["a.1.png"], content=b"abc").status_code == 200
    listed = client.get(f"/api/runs/{run_id}/files", params={"key": "img"}).json()
    assert [(f["fileName"], f["uploaded"]) for f in listed] == [("a.1.png", True), ("b.png", False)]
    assert client.get(listed[0]["url"]).content == b"abc"
    for name in ("../etc/passwd", "a/b.png", ""):
        bad(
            client.post(
                "/files", json={"files": [{**entry, "fileName": name}]}, headers={"X-Run-Id": str(run_id)}
            ),
            400,
            "fileName",
        )
    bad(
        client.post("/files", json={"files": [{**entry, "path": "/x"}]}, headers={"X-Run-Id": str(run_id)}),
        400,
        "'files[0].path'",
    )
    bad(client.get(f"/api/runs/{run_id}/files", params={"key": "nope"}), 404)


# -- read API --------------------------------------------------------------------------------------------


def test_read_runs(client: httpx.Client, new_run: Callable[..., int]) -> None:
    first, second = new_run(project="listing", name="one"), new_run(project="listing", name="two")
    runs = client.get("/api/runs", params={"project": "listing"}).json()
    assert [(r["id"], r["name"]) for r in runs] == [(second, "two"), (first, "one")]
    assert set(runs[0]) == {
        "id",
        "number",
        "displayId",
        "name",
        "project",
        "status",
        "tags",
        "created",
        "updated",
        "externalId",
        "owner",
        "summary",
        "start",
        "ended",
        "duration",
    }
    assert runs[0]["owner"] == "admin" and runs[0]["summary"] == {}
    assert client.get("/api/runs", params={"project": "nothing-here"}).json() == []
    bad(client.get("/api/runs"), 400, "'project'")
    bad(client.get(f"/api/runs/{10**9}"), 404)
    for tail in ("metrics?key=x", "keys", "logs", "data?key=x", "files?key=x"):
        bad(client.get(f"/api/runs/{10**9}/{tail}"), 404)


def test_read_metric_downsampled(
    client: httpx.Client, ingest: Callable[..., httpx.Response], read_metric: Any, new_run: Callable[..., int]
) -> None:
    run_id = new_run()
    values = [float(i % 100) for i in range(10_000)]
    values[4321], values[7777] = 1e6, -1e6
    for start in range(0, 10_000, 2_500):
        lines = [{"time": T0 + i, "step": i, "data": {"y": values[i]}} for i in range(start, start + 2_500)]
        assert ingest(run_id, "metrics", *lines).status_code == 200
    full = read_metric(run_id, "y")
    assert [p["value"] for p in full] == values
    small = read_metric(run_id, "y", max_points=100)
    assert 50 <= len(small) <= 100
    steps = [p["step"] for p in small]
    assert steps == sorted(steps)
    assert {(p["step"], p["value"]) for p in small} >= {(4321, 1e6), (7777, -1e6)}
    assert all(p["value"] == values[p["step"]] for p in small)
    bad(client.get(f"/api/runs/{run_id}/metrics", params={"key": "y", "max_points": 1}), 400, "'max_points'")
    bad(
        client.get(f"/api/runs/{run_id}/metrics", params={"key": "y", "max_points": "many"}),
        400,
        "'max_points'",
    )
    bad(client.get(f"/api/runs/{run_id}/metrics"), 400, "'key'")
    bad(client.get(f"/api/runs/{run_id}/metrics", params={"key": "z"}), 404)


def test_steps_out_of_order_kept_in_step_order(
    ingest: Callable[..., httpx.Response], read_metric: Any, new_run: Callable[..., int]
) -> None:
    run_id = new_run()
    for step, value in [(5, 0.5), (3, 0.3), (5, 0.55), (1, 0.1)]:
        assert ingest(run_id, "metrics", {"time": T0, "step": step, "data": {"v": value}}).status_code == 200
    assert [(p["step"], p["value"]) for p in read_metric(run_id, "v")] == [
        (1, 0.1),
        (3, 0.3),
        (5, 0.5),
        (5, 0.55),
    ]


# -- auth, limits and plumbing ---------------------------------------------------------------------------

ROUTES = [
    ("POST", "/api/slug"),
    ("POST", "/api/runs/create"),
    ("POST", "/api/runs/resume"),
    ("POST", "/api/runs/status/update"),
    ("POST", "/api/runs/logName/add"),
    ("POST", "/api/runs/tags/update"),
    ("POST", "/api/runs/config/update"),
    ("POST", "/api/runs/modelGraph/create"),
    ("POST", "/api/runs/trigger"),
    ("POST", "/api/runs/alert"),
    ("POST", "/ingest/metrics"),
    ("POST", "/ingest/data"),
    ("POST", "/ingest/logs"),
    ("POST", "/files"),
    ("GET", "/api/runs?project=p"),
    ("GET", "/api/runs/1"),
    ("GET", "/api/runs/1/metrics?key=a"),
    ("GET", "/api/runs/1/keys"),
    ("GET", "/api/runs/1/logs"),
    ("GET", "/api/runs/1/data?key=a"),
    ("GET", "/api/runs/1/files?key=a"),
    ("GET", "/api/runs/1/files/1/content"),
    ("POST", "/api/runs/1/cancel"),
    ("GET", "/api/projects"),
    ("GET", "/api/runs/last?project=p&key=a"),
    ("GET", "/api/runs/1/series?key=a"),
    ("GET", "/api/runs?project=p&sort=name"),
    ("GET", "/api/runs/columns?project=p"),
    ("GET", "/api/runs/groups?project=p&by=status"),
    ("GET", "/api/runs/values?project=p"),
    ("GET", "/api/runs/correlation?project=p&metric=loss"),
    ("GET", "/api/runs/many?id=1"),
    ("GET", "/api/projects/settings?project=p&name=layout"),
    ("PUT", "/api/projects/settings?project=p&name=layout"),
    ("GET", "/openapi.json"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_needs_a_valid_key(server: ServerProcess, method: str, path: str) -> None:
    with httpx.Client(base_url=server.url) as anonymous:
        bad(anonymous.request(method, path, content=b"{}"), 401)
        bad(
            anonymous.request(method, path, content=b"{}", headers={"Authorization": "Bearer mlps_wrong"}),
            401,
        )
        bad(anonymous.request(method, path, content=b"{}", headers={"Authorization": server.key}), 401)


def test_revoked_key(server: ServerProcess, client: httpx.Client) -> None:
    key = keys_cli(server, "create", "--name", "temporary").strip()
    assert key.startswith("mlps_")
    listed = keys_cli(server, "list")
    assert "temporary" in listed
    assert key not in listed  # only a prefix is ever shown
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as user:
        assert user.post("/api/slug").status_code == 200
        key_id = next(line.split()[0] for line in listed.splitlines() if "temporary" in line)
        assert "revoked" in keys_cli(server, "revoke", key_id)
        bad(user.post("/api/slug"), 401, "revoked")
        bad(user.get("/api/runs", params={"project": "p"}), 401)
    assert client.post("/api/slug").status_code == 200


def test_health_needs_no_key_and_openapi_lists_every_route(
    server: ServerProcess, client: httpx.Client
) -> None:
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"
    bad(httpx.get(f"{server.url}/openapi.json"), 401)
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    served = {
        (m, p.split("?")[0].replace("/1/files/1/", "/{runId}/files/{fileId}/").replace("/1", "/{runId}"))
        for m, p in ROUTES
    }
    served |= {("GET", "/health"), ("GET", "/ready"), ("PUT", "/uploads/{fileId}")}
    assert documented == served


def test_limits_and_content_types(client: httpx.Client, new_run: Callable[..., int]) -> None:
    run_id = new_run()
    big = b'{"time": 1, "step": 1, "data": {"x": 1}}\n' * 30_000  # over the 1 MiB cap of this server
    bad(client.post("/ingest/metrics", content=big, headers={"X-Run-Id": str(run_id)}), 413)
    bad(
        client.post("/ingest/metrics", content=iter([big]), headers={"X-Run-Id": str(run_id)}), 413
    )  # chunked
    bad(
        client.post(
            "/api/runs/trigger", content=b'{"runId": 1}', headers={"Content-Type": "multipart/form-data"}
        ),
        415,
    )
    bad(client.get("/no/such/route"), 404)
    bad(client.get("/api/runs/create"), 405)
    assert client.post("/api/slug").status_code == 200  # still up


def test_metrics_lines_with_different_keys_keep_their_order(
    ingest: Callable[..., httpx.Response], read_metric: Any, new_run: Callable[..., int]
) -> None:
    run_id = new_run()
    lines = [
        {"time": T0, "step": 0, "data": {"a": 1, "b": 2}},
        {"time": T0 + 1, "step": 0, "data": {"a": 3}},
        {"time": T0 + 2, "step": 0, "data": {"b": "NaN", "a": 5}},
        {"time": T0 + 3, "step": 1, "data": {"a": 7, "b": 8}},
    ]
    assert ingest(run_id, "metrics", *lines).status_code == 200
    assert [(p["step"], p["time"], p["value"]) for p in read_metric(run_id, "a")] == [
        (0, T0, 1),
        (0, T0 + 1, 3),
        (0, T0 + 2, 5),
        (1, T0 + 3, 7),
    ]
    assert [(p["step"], p["value"]) for p in read_metric(run_id, "b")] == [(0, 2), (0, "NaN"), (1, 8)]
