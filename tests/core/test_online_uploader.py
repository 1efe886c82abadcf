"""The uploader's requests and bookkeeping, against httpx.MockTransport (shapes and faults on demand).

The end-to-end behaviour against the real mlop-server process is in tests/e2e/test_online_*.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import mlop
from mlop._exceptions import AuthError, ServerError
from mlop._online._options import Options
from mlop._online._server import ServerInterface
from mlop._online._uploader import Uploader
from mlop._store import Store

KEY = "mlps_unit_secret_key_42"


class Recorder:
    """A tiny protocol server: answers every route, records each request, can fail some on demand."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.fault: Callable[[httpx.Request], httpx.Response | None] = lambda request: None
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append(request)
        injected = self.fault(request)
        if injected is not None:
            return injected
        path = request.url.path
        if path == "/api/runs/create":
            return httpx.Response(200, json={"runId": 7, "url": "http://server/r/7", "resumed": False})
        if path == "/files":
            files = json.loads(request.content)["files"]
            out: dict[str, list[dict[str, str]]] = {}
            for f in files:
                out.setdefault(f["logName"], []).append({f["fileName"]: f"http://server/s3/{f['fileName']}"})
            return httpx.Response(200, json=out)
        if path.startswith("/s3/"):
            request.read()
            return httpx.Response(200)
        if path == "/api/runs/trigger":
            return httpx.Response(200, json={"status": "RUNNING", "triggers": []})
        return httpx.Response(200, json={"success": True})

    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]

    def lines(self, path: str) -> list[dict[str, Any]]:
        out = []
        for r in self.requests:
            if r.url.path == path:
                out += [json.loads(line) for line in r.content.decode().splitlines()]
        return out

    def bodies(self, path: str) -> list[Any]:
        return [json.loads(r.content) for r in self.requests if r.url.path == path]


def _offline_run(tmp_path: Path, steps: int = 50) -> Path:
    run = mlop.init(
        project="p",
        name="unit",
        dir=tmp_path,
        mode="offline",
        config={"lr": 0.1},
        tags=["a"],
        disable_system_metrics=True,
        disable_console=True,
    )
    for i in range(steps):
        run.log({"loss": 1.0 / (i + 1), "inf": float("inf") if i == 3 else 0.0, "note": f"n{i}"})
    run.update_config({"depth": 2})
    run.add_tags(["b", "group:x", "group:y"])
    run.alert("hello", title="t", level="warning")
    run.finish()
    return Path(run.dir)


def _options(**options: Any) -> Options:
    urls = dict.fromkeys(("url_api", "url_ingest", "url_py", "url_app"), "http://server")
    return Options(urls=urls, api_key=KEY, retry_base=0.01, **options)


def _upload(run_dir: Path, recorder: Recorder, **options: Any) -> bool:
    uploader = Uploader(run_dir, _options(**options), once=True, transport=httpx.MockTransport(recorder))
    try:
        return uploader.run()
    finally:
        uploader.close()


def test_an_offline_run_is_sent_in_the_protocols_shapes(tmp_path: Path) -> None:
    run_dir = _offline_run(tmp_path)
    recorder = Recorder()
    assert _upload(run_dir, recorder)

    first = recorder.requests[0]
    assert first.url.path == "/api/runs/create"
    create = json.loads(first.content)
    assert create["runName"] == "unit" and create["projectName"] == "p"
    assert json.loads(create["config"]) == {"lr": 0.1, "depth": 2}
    assert isinstance(create["createdAt"], int) and create["externalId"] == run_dir.name
    assert "X-Run-Id" not in first.headers
    for request in recorder.requests:
        if request.url.path.startswith("/s3/"):
            continue
        assert request.headers["Authorization"] == f"Bearer {KEY}"
        assert request.headers["User-Agent"].startswith("mlop/")
        if request.url.path != "/api/runs/create":
            assert request.headers["X-Run-Id"] == "7"
            assert request.headers["X-Project-Name"] == "p" and request.headers["X-Run-Name"] == "unit"

    paths = recorder.paths()
    assert paths.index("/api/runs/logName/add") < paths.index("/ingest/metrics")
    metrics = recorder.lines("/ingest/metrics")
    assert [line["step"] for line in metrics] == list(range(50))
    assert all(set(line) == {"time", "step", "data"} for line in metrics)
    assert metrics[3]["data"]["inf"] == "Infinity" and metrics[1]["data"]["loss"] == 0.5
    ingest = [r for r in recorder.requests if r.url.path.startswith("/ingest/")]
    assert all(r.headers["Content-Type"] == "application/x-ndjson" for r in ingest)
    keys = [r.headers["Idempotency-Key"] for r in recorder.requests if "Idempotency-Key" in r.headers]
    assert len(keys) == len(set(keys))

    data = recorder.lines("/ingest/data")
    assert data[0] == {
        "time": data[0]["time"],
        "step": 0,
        "logName": "note",
        "dataType": "string-series",
        "data": "n0",
    }
    names = {(b["logType"], n) for b in recorder.bodies("/api/runs/logName/add") for n in b["logName"]}
    assert {("METRIC", "loss"), ("METRIC", "inf"), ("DATA", "note")} <= names
    # at most one group:* tag, as the protocol says
    assert recorder.bodies("/api/runs/tags/update")[-1] == {"runId": 7, "tags": ["a", "b", "group:x"]}
    (alert,) = recorder.bodies("/api/runs/alert")
    assert alert["alert"]["level"] == "WARNING" and alert["alert"]["body"] == "hello"
    assert set(alert["alert"]) == {"timestamp", "level", "title", "body", "email", "url"}
    statuses = recorder.bodies("/api/runs/status/update")
    assert statuses[-1]["status"] == "COMPLETED" and paths[-1] == "/api/runs/status/update"


def test_a_second_upload_sends_nothing(tmp_path: Path) -> None:
    run_dir = _offline_run(tmp_path)
    assert _upload(run_dir, Recorder())
    again = Recorder()
    assert _upload(run_dir, again)
    assert again.requests == []


def test_a_server_that_lost_the_run_gets_all_of_it_again(tmp_path: Path) -> None:
    run_dir = _offline_run(tmp_path)
    assert _upload(run_dir, Recorder())
    store = Store(run_dir)
    store.write([("metrics", [(50, 1.0, {"loss": 0.0})])])
    store.close()
    wiped = Recorder()
    wiped.fault = lambda r: (
        httpx.Response(404, json={"error": "NotFound"}) if "trigger" in r.url.path else None
    )
    assert _upload(run_dir, wiped)
    assert "/api/runs/create" in wiped.paths()
    assert [line["step"] for line in wiped.lines("/ingest/metrics")] == list(range(51))
    assert wiped.bodies("/api/runs/status/update")[-1]["status"] == "COMPLETED"


def test_transient_faults_are_retried_and_nothing_is_sent_twice(tmp_path: Path) -> None:
    run_dir = _offline_run(tmp_path)
    recorder = Recorder()
    seen: dict[str, int] = {}

    def fault(request: httpx.Request) -> httpx.Response | None:
        path = request.url.path
        seen[path] = seen.get(path, 0) + 1
        if seen[path] == 1 and path in ("/ingest/metrics", "/api/runs/create"):
            return httpx.Response(503, json={"error": "Unavailable", "message": "busy"})
        if seen[path] == 1 and path == "/ingest/data":
            return httpx.Response(429, headers={"Retry-After": "0"})
        if seen[path] == 1 and path == "/api/runs/status/update":
            raise httpx.ReadTimeout("slow", request=request)
        return None

    recorder.fault = fault
    assert _upload(run_dir, recorder)
    # the failed attempts were repeated with the same key; the server saw each batch's key twice at most
    metrics = [r for r in recorder.requests if r.url.path == "/ingest/metrics"]
    assert (
        len(metrics) == 2 and metrics[0].headers["Idempotency-Key"] == metrics[1].headers["Idempotency-Key"]
    )
    assert [line["step"] for line in recorder.lines("/ingest/metrics")][50:] == list(range(50))


def test_a_permanent_refusal_is_recorded_and_the_rest_still_sent(tmp_path: Path, caplog: Any) -> None:
    run_dir = _offline_run(tmp_path)
    recorder = Recorder()
    recorder.fault = lambda r: (
        httpx.Response(400, json={"error": "BadRequest", "message": "bad line"})
        if r.url.path == "/ingest/data"
        else None
    )
    assert _upload(run_dir, recorder)
    assert [line["step"] for line in recorder.lines("/ingest/metrics")] == list(range(50))
    assert recorder.bodies("/api/runs/status/update")[-1]["status"] == "COMPLETED"
    store = Store(run_dir)
    try:
        failures = store.failures()
    finally:
        store.close()
    # Refused whole, the batch is split down to the items the server refuses: each is recorded alone.
    data_items = sum(
        1 for r in recorder.requests if r.url.path == "/ingest/data" and r.content.count(b"\n") == 1
    )
    assert failures and len(failures) == data_items
    for failure in failures:
        assert failure["stream"] == "data" and failure["status"] == 400 and "bad line" in failure["message"]
    assert caplog.text.count("refused part of run unit") == 1 and KEY not in caplog.text


def test_a_batch_in_flight_is_resent_whole_with_its_key(tmp_path: Path) -> None:
    run_dir = _offline_run(tmp_path)
    first = Recorder()
    uploader = Uploader(run_dir, _options(), once=True, transport=httpx.MockTransport(first))

    def lose_reply(request: httpx.Request) -> httpx.Response | None:
        if request.url.path == "/ingest/metrics":
            uploader.stop.set()  # the uploader is stopped after sending, before the answer
            raise httpx.ReadError("connection lost", request=request)
        return None

    first.fault = lose_reply
    try:
        assert not uploader.run()
    finally:
        uploader.close()
    (lost,) = [r for r in first.requests if r.url.path == "/ingest/metrics"]
    again = Recorder()
    assert _upload(run_dir, again)
    (resent,) = [r for r in again.requests if r.url.path == "/ingest/metrics"]
    assert resent.headers["Idempotency-Key"] == lost.headers["Idempotency-Key"]
    assert resent.content == lost.content
    assert "/api/runs/create" not in again.paths()


def test_alerts_go_to_a_webhook_without_the_key_or_stay_local(tmp_path: Path) -> None:
    run = mlop.init(project="hooks", dir=tmp_path, mode="offline", disable_console=True)
    run.alert("to the hook", title="hooked", url="https://hooks.example/T000/B000")
    run.alert("only here", title="local", remote=False)
    run.alert("by setting", title="setting")
    run.finish()
    recorder = Recorder()
    assert _upload(Path(run.dir), recorder)
    hooks = [r for r in recorder.requests if r.url.host == "hooks.example"]
    assert len(hooks) == 1 and "Authorization" not in hooks[0].headers
    body = json.loads(hooks[0].content)
    assert "to the hook" in body["text"] and body["content"] == body["text"]
    assert [b["alert"]["title"] for b in recorder.bodies("/api/runs/alert")] == ["setting"]

    with_setting = Recorder()
    store = Store(run.dir)
    store._db.execute("DELETE FROM acks")
    store.close()
    assert _upload(Path(run.dir), with_setting, webhook="https://discord.example/api/webhooks/1")
    assert [r.url.host for r in with_setting.requests].count("discord.example") == 1
    assert recorder.bodies("/api/runs/alert") and not with_setting.bodies("/api/runs/alert")


@pytest.mark.parametrize(("status", "failed"), [(409, False), (401, True)])
def test_upload_put_already_there_or_refused(tmp_path: Path, status: int, failed: bool) -> None:
    run = mlop.init(project="files", dir=tmp_path, mode="offline", disable_console=True)
    run.log({"story": mlop.Text("once upon a time"), "x": 1})
    run.finish()
    recorder = Recorder()
    recorder.fault = lambda r: httpx.Response(status) if r.url.path.startswith("/s3/") else None
    assert _upload(Path(run.dir), recorder)
    puts = [r for r in recorder.requests if r.method == "PUT"]
    assert len(puts) == 1 and puts[0].headers["Content-Type"] == "text/plain"
    assert "Authorization" not in puts[0].headers
    (entry,) = recorder.bodies("/files")[0]["files"]
    assert entry["logName"] == "story" and entry["fileType"] == "txt" and entry["fileSize"] == 16
    store = Store(run.dir)
    try:
        assert bool(store.failures()) is failed
    finally:
        store.close()
    assert recorder.bodies("/api/runs/status/update")[-1]["status"] == "COMPLETED"


def test_batches_are_bounded_in_bytes(tmp_path: Path) -> None:
    run = mlop.init(project="wide", dir=tmp_path, mode="offline", disable_console=True)
    keys = [f"layer_{k}/grad_norm" for k in range(1000)]
    for step in range(300):
        run.log(dict.fromkeys(keys, step * 0.5))
    run.finish()
    recorder = Recorder()
    assert _upload(Path(run.dir), recorder)
    bodies = [r.content for r in recorder.requests if r.url.path == "/ingest/metrics"]
    assert len(bodies) > 1 and max(len(b) for b in bodies) < 6 << 20
    assert [line["step"] for line in recorder.lines("/ingest/metrics")] == list(range(300))


def test_server_interface_keeps_the_key_out_of_reprs_and_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": "Unauthorized", "message": "unknown key"})

    urls = {"url_api": "http://s", "url_ingest": "http://s", "url_py": "http://s", "url_app": "http://s"}
    with ServerInterface(urls, KEY, transport=httpx.MockTransport(handler)) as server:
        assert KEY not in repr(server) and KEY not in repr(vars(server))
        with pytest.raises(AuthError) as info:  # final: a refused key is not retried
            server.send("api", "/api/runs/create", body={})
        assert KEY not in str(info.value)
        with pytest.raises(ServerError) as refused:
            server.slug()
        assert KEY not in str(refused.value)
    options = Options(urls=urls, api_key=KEY, webhook="https://hooks.example/secret")
    assert KEY not in repr(options) and "secret" not in repr(options)


def test_import_mlop_does_not_import_httpx() -> None:
    import subprocess
    import sys

    code = "import sys, mlop; mlop.init(mode='offline').finish(); print('httpx' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_console_lines_that_are_not_valid_unicode_arrive_with_a_replacement(tmp_path: Path) -> None:
    run_dir = _offline_run(tmp_path)
    store = Store(run_dir)
    try:  # a line of output decoded with surrogateescape, as a captured stream can hold
        store.write([("logs", [(1.0, 1, "INFO", "bytes \udcff here"), (1.0, 2, "INFO", "fine ✓")])])
    finally:
        store.close()
    recorder = Recorder()
    assert _upload(run_dir, recorder)
    sent = [r.content for r in recorder.requests if r.url.path == "/ingest/logs"]
    lines = [json.loads(line) for body in sent for line in body.decode("utf-8", "strict").splitlines()]
    assert [line["message"] for line in lines] == ["bytes \ufffd here", "fine ✓"]
