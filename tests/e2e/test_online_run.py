"""A complete online run against mlop-server as a real process: every value checked through its read API.

The server rejects unknown fields and wrong types, so a run that lands whole also shows that the client's
requests match protocol.md field for field (shapes checked on the server side, not by mocking the client).
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlop_server.testing import ServerProcess

pytestmark = pytest.mark.slow

COMPLETE = """
import numpy as np
run = mlop.init(project="full", name="complete", dir=sys.argv[1], config={"lr": 0.001, "model": {"depth": 4}},
                tags=["first"], disable_system_metrics=False, x_sys_sampling_interval=0.2)
for step in range(40):
    run.log({"train/loss": 1.0 / (step + 1), "train/acc": step / 40, "flag": step % 2 == 0})
run.log({"weird": float("nan"), "big": float("inf"), "small": float("-inf")})
run.log({"hist": mlop.Histogram(np.arange(100) % 7, bins=7),
         "preds": mlop.Table(data=[[1, "cat"], [2, "dog"]], columns=["id", "label"]),
         "note": "hello series",
         "sample": mlop.Image(np.full((8, 8, 3), 200, dtype=np.uint8), caption="grey"),
         "story": mlop.Text("once upon a time"),
         "beep": mlop.Audio(np.zeros(800, dtype=np.float32), rate=8000),
         "weights": mlop.Artifact(__file__),
         "net": mlop.Graph(nodes=["a", "b"], edges=[("a", "b")])}, step=100)
print("out line one")
print("err line", file=sys.stderr)
run.add_tags(["second", "group:ablation"])
run.update_config({"model": {"width": 64}, "epochs": 3})
run.alert("loss plateaued", title="plateau", level="warning")
fc = {"type": "Linear", "depth": 1, "params": {"weight": [2, 3]}}
run.log_graph({"format": "torch", "nodes": {".": {"type": "Net", "depth": 0}, "fc": fc}})
time.sleep(0.6)
run.finish()
print("STATUS", run.status, run.url)
"""


def test_a_complete_online_run_arrives_value_for_value(online: Any) -> None:
    out = online.run(COMPLETE)
    assert "STATUS COMPLETED http" in out.stdout
    run = online.server_run("full")
    run_id = run["id"]
    assert run["status"] == "COMPLETED" and run["name"] == "complete"
    assert run["tags"] == ["first", "second", "group:ablation"]
    assert run["config"] == {"lr": 0.001, "model": {"depth": 4, "width": 64}, "epochs": 3}
    assert run["systemMetadata"]["python"]["version"]
    assert run["externalId"] == online.run_dir("full").name
    assert run["graph"]["nodes"]["fc"] == {"type": "Linear", "depth": 1, "params": {"weight": [2, 3]}}

    loss = online.api.get(f"/api/runs/{run_id}/metrics", params={"key": "train/loss"}).json()
    assert [p["step"] for p in loss] == list(range(40))
    assert all(math.isclose(p["value"], 1.0 / (p["step"] + 1)) for p in loss)
    flag = online.api.get(f"/api/runs/{run_id}/metrics", params={"key": "flag"}).json()
    assert [p["value"] for p in flag] == [1 - s % 2 for s in range(40)]
    for key, wire in (("weird", "NaN"), ("big", "Infinity"), ("small", "-Infinity")):
        (point,) = online.api.get(f"/api/runs/{run_id}/metrics", params={"key": key}).json()
        assert point == {"step": 40, "time": point["time"], "value": wire}
    assert abs(loss[0]["time"] / 1000 - time.time()) < 3600  # epoch milliseconds

    keys = {k["name"]: k["type"] for k in online.api.get(f"/api/runs/{run_id}/keys").json()}
    assert keys["train/loss"] == "METRIC" and keys["hist"] == "HISTOGRAM" and keys["preds"] == "TABLE"
    assert keys["note"] == "DATA" and keys["sample"] == "IMAGE"
    assert any(name.startswith("sys/") and kind == "METRIC" for name, kind in keys.items())

    (hist,) = online.api.get(f"/api/runs/{run_id}/data", params={"key": "hist"}).json()
    payload = json.loads(hist["data"]) if isinstance(hist["data"], str) else hist["data"]
    assert hist["step"] == 100 and payload["type"] == "Histogram" and sum(payload["freq"]) == 100
    (table,) = online.api.get(f"/api/runs/{run_id}/data", params={"key": "preds"}).json()
    table_payload = json.loads(table["data"]) if isinstance(table["data"], str) else table["data"]
    assert table_payload["table"] == [[1, "cat"], [2, "dog"]]
    (note,) = online.api.get(f"/api/runs/{run_id}/data", params={"key": "note"}).json()
    assert note["dataType"] == "string-series" and note["data"] == "hello series"

    (image,) = online.api.get(f"/api/runs/{run_id}/files", params={"key": "sample"}).json()
    assert image["uploaded"] and image["caption"] == "grey" and image["step"] == 100
    content = online.api.get(f"/api/runs/{run_id}/files/{image['id']}/content")
    assert content.status_code == 200 and content.content.startswith(b"\x89PNG")
    assert len(content.content) == image["fileSize"]

    for key, kind in (("story", "TEXT"), ("beep", "AUDIO"), ("weights", "ARTIFACT")):
        assert keys[key] == kind
        (stored,) = online.api.get(f"/api/runs/{run_id}/files", params={"key": key}).json()
        assert stored["uploaded"], stored
    assert keys["net"] == "DATA"
    (graph,) = online.api.get(f"/api/runs/{run_id}/data", params={"key": "net"}).json()
    assert graph["dataType"] == "GRAPH"

    logs = online.api.get(f"/api/runs/{run_id}/logs").json()
    lines = {(line["logType"], line["message"]) for line in logs}
    assert ("INFO", "out line one") in lines and ("ERROR", "err line") in lines


def test_an_exception_ends_the_run_failed_with_its_trace(online: Any) -> None:
    body = """
        run = mlop.init(project="boom", dir=sys.argv[1])
        run.log({"x": 1})
        raise ValueError("broken on purpose")
    """
    out = online.spawn(body)
    _, err = out.communicate(timeout=90)
    assert out.returncode == 1 and "broken on purpose" in err
    run = online.server_run("boom")
    assert run["status"] == "FAILED"
    assert run["statusMetadata"]["type"] == "ValueError"
    assert "broken on purpose" in run["statusMetadata"]["trace"]


def test_run_id_of_an_existing_server_run_needs_resume(online: Any, tmp_path: Path) -> None:
    first = """
        run = mlop.init(project="again", run_id="shared-id", dir=sys.argv[1])
        for i in range(5):
            run.log({"x": i})
        run.finish()
    """
    online.run(first)
    other = tmp_path / "elsewhere"
    refused = f"""
        try:
            mlop.init(project="again", run_id="shared-id", dir={str(other)!r})
        except mlop.RunExistsError as exc:
            print("REFUSED", exc)
    """
    out = online.run(refused)
    assert "REFUSED" in out.stdout and "resume=True" in out.stdout
    assert not (other / ".mlop" / "again" / "shared-id").exists()

    resumed = """
        run = mlop.init(project="again", run_id="shared-id", dir=sys.argv[1], resume=True)
        for i in range(3):
            run.log({"x": 10 + i})
        run.finish()
    """
    online.run(resumed)
    run = online.server_run("again")
    assert online.steps(run["id"], "x") == list(range(8))
    assert run["status"] == "COMPLETED"


def test_a_cancel_on_the_server_finishes_the_run_cancelled(online: Any) -> None:
    body = """
        run = mlop.init(project="cancel", dir=sys.argv[1])
        print("STARTED", flush=True)
        deadline = time.time() + 60
        while run.status == "RUNNING" and time.time() < deadline:
            run.log({"x": 1.0})
            time.sleep(0.01)
        print("SAW", run.status, flush=True)
    """
    proc = online.spawn(body)
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("STARTED")
    run = online.server_run("cancel")
    assert online.api.post(f"/api/runs/{run['id']}/cancel").status_code == 200
    out, err = proc.communicate(timeout=90)
    assert "SAW CANCELLED" in out, err
    assert online.wait_status(run["id"], {"CANCELLED"})["status"] == "CANCELLED"


def test_the_key_never_shows_in_process_arguments_files_or_logs(online: Any, server: ServerProcess) -> None:
    body = """
        run = mlop.init(project="secret", dir=sys.argv[1], config={"token_note": "none"})
        run.log({"x": 1})
        print("PID", run._uploader.pid, flush=True)
        while not os.path.exists("go"):
            time.sleep(0.05)
        run.finish()
    """
    proc = online.spawn(body, env=online.env(MLOP_DEBUG_LEVEL="DEBUG"))
    assert proc.stdout is not None
    uploader = int(proc.stdout.readline().split()[1])
    key = server.key
    try:
        ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, timeout=30).stdout
        assert str(uploader) in ps and key not in ps
        assert key.encode() not in Path(f"/proc/{uploader}/cmdline").read_bytes()
        assert key.encode() not in Path(f"/proc/{uploader}/environ").read_bytes()
    finally:
        (online.tmp / "go").touch()
        out, err = proc.communicate(timeout=90)
    assert proc.returncode == 0, err
    assert "mlop" in err and key not in err and key not in out  # DEBUG logs of both processes
    run = online.server_run("secret")
    assert key not in json.dumps(run)
    for path in online.runs_dir.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path


ORIGINAL = Path(__file__).parents[1] / "server" / "fixtures" / "original-client-session.jsonl"
# The fields protocol.md allows in each JSON body (create may carry more than the original client sent).
PROTOCOL_FIELDS = {
    "/api/runs/create": {"runName", "projectName", "config", "loggerSettings", "systemMetadata", "tags",
                         "externalId", "createdAt", "updatedAt"},
    "/api/runs/logName/add": {"runId", "logType", "logName"},
    "/api/runs/status/update": {"runId", "status", "statusMetadata"},
    "/api/runs/trigger": {"runId"},
    "/api/runs/alert": {"runId", "alert"},
    "/files": {"files"},
    "/ingest/metrics": {"time", "step", "data"},
    "/ingest/data": {"time", "step", "logName", "dataType", "data"},
    "/ingest/logs": {"time", "message", "lineNumber", "logType"},
}  # fmt: skip


def _fields(path: str, body: bytes) -> list[set[str]]:
    if path.startswith("/ingest/"):
        return [set(json.loads(line)) for line in body.decode().splitlines()]
    return [set(json.loads(body))] if body else [set()]


def test_requests_match_the_original_clients_field_for_field(online: Any, fault_proxy: Any) -> None:
    proxy = fault_proxy(lambda method, path, n: None)  # records what reaches the server, changes nothing
    env = online.env(proxy.url)
    online.run(COMPLETE.replace('project="full"', 'project="shapes"'), env=env)
    assert online.server_run("shapes")["status"] == "COMPLETED"
    ours: dict[str, list[tuple[list[set[str]], dict[str, str]]]] = {}
    for (path, _fault, body), headers in zip(proxy.log, proxy.headers, strict=True):
        ours.setdefault(path, []).append((_fields(path, body), {k.lower() for k in headers}))
    for raw in ORIGINAL.read_text().splitlines():
        original = json.loads(raw)
        path = original["path"]
        if original["method"] != "POST" or path == "/api/slug":
            continue
        assert path in ours, f"this client never sent {path}"
        want = _fields(path, (original["body"] or "").encode())[0]
        for lines, header_names in ours[path]:
            for fields in lines:
                assert want <= fields <= PROTOCOL_FIELDS[path], (path, want, fields)
            expected = {k.lower() for k in original["headers"]} - {"transfer-encoding"}
            if path == "/api/runs/create":
                expected -= {"x-run-id"}  # the original sent "None"; this client sends none
            assert expected <= header_names, (path, expected - header_names)
    alert = json.loads(next(body for path, _f, body in proxy.log if path == "/api/runs/alert"))
    assert set(alert["alert"]) == {"timestamp", "level", "title", "body", "email", "url"}
    metric_lines = [
        json.loads(line) for p, _f, b in proxy.log if p == "/ingest/metrics" for line in b.splitlines()
    ]
    assert all(isinstance(line["time"], int) and line["data"] for line in metric_lines)


def test_an_online_run_in_this_process_leaves_nothing_open(online: Any, tmp_path: Path) -> None:
    import mlop

    run = mlop.init(
        project="inproc",
        dir=tmp_path,
        host=online.server.url,
        api_key=online.server.key,
        disable_console=True,
    )
    for step in range(100):
        run.log({"x": float(step)})
    run.finish()
    assert run.status == "COMPLETED" and run.url
    server_run = online.server_run("inproc")
    assert online.steps(server_run["id"], "x") == list(range(100))
    assert server_run["status"] == "COMPLETED"


def test_resume_from_another_directory_by_external_id_or_number(online: Any, tmp_path: Path) -> None:
    first = """
        run = mlop.init(project="resumes", run_id="rs-1", dir=sys.argv[1])
        run.log({"x": 0.0}, step=0)
        run.finish()
    """
    online.run(first)
    run_id = online.server_run("resumes")["id"]
    for index, (rid, step) in enumerate((("rs-1", 100), (str(run_id), 200))):
        elsewhere = tmp_path / f"machine{index}"
        body = f"""
            run = mlop.init(project="resumes", run_id={rid!r}, resume=True, dir={str(elsewhere)!r})
            run.log({{"x": {step}.0}}, step={step})
            run.finish()
            print("URL", run.url)
        """
        out = online.run(body)
        assert out.stdout.strip().endswith(f"/ui/#/run/{run_id}")  # the run's dashboard page
    run = online.server_run("resumes")
    assert online.steps(run_id, "x") == [0, 100, 200]
    assert run["status"] == "COMPLETED" and run["externalId"] == "rs-1"


def test_the_heartbeat_keeps_a_quiet_run_alive(online: Any, tmp_path: Path) -> None:
    from mlop_server.testing import ServerProcess as Server

    strict = ["--heartbeat-timeout", "1.5", "--reap-interval", "0.2"]
    with Server(tmp_path / "strict", extra_args=strict) as server:
        body = """
            run = mlop.init(project="quiet", dir=sys.argv[1])
            run.log({"x": 1.0})
            print("STARTED", flush=True)
            while not os.path.exists("go"):
                time.sleep(0.05)
            run.finish()
        """
        proc = online.spawn(body, env=online.env(server.url, MLOP_API_TOKEN=server.key))
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("STARTED")
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}) as api:
            (run,) = api.get("/api/runs", params={"project": "quiet"}).json()
            first_seen = api.get(f"/api/runs/{run['id']}").json()["lastSeen"]
            deadline = time.monotonic() + 30
            while api.get(f"/api/runs/{run['id']}").json()["lastSeen"] < first_seen + 3000:
                assert time.monotonic() < deadline
                time.sleep(0.2)  # twice the server's silence limit, with no data logged
            assert api.get(f"/api/runs/{run['id']}").json()["status"] == "RUNNING"
            (online.tmp / "go").touch()
            proc.communicate(timeout=60)
            assert api.get(f"/api/runs/{run['id']}").json()["status"] == "COMPLETED"
