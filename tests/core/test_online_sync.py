"""`mlop sync` without a server: which runs it picks, and what it says when it cannot send."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest

import mlop
from mlop import _runs
from mlop._online._options import Options
from mlop._online._sync import find_runs, sync_run, sync_runs
from mlop._store import Store


def _run(root: Path, project: str, finish: bool = True) -> Path:
    run = mlop.init(
        project=project, dir=root, mode="offline", disable_console=True, disable_system_metrics=True
    )
    run.log({"x": 1.0})
    if finish:
        run.finish()
    else:  # as if its process had died: what was logged is in the store, and no final status
        for service in run._services:
            service.stop()
        run._writer.close()
        run._store.close()
        run._finished = True
        _runs.forget(run)
    return Path(run.dir)


def _answer(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/api/runs/create":
        return httpx.Response(200, json={"runId": 3, "url": "http://s/r/3", "resumed": False})
    return httpx.Response(200, json={})


def test_sync_without_a_key_says_how_to_get_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOP_CONFIG_DIR", str(tmp_path / "cfg"))
    out = io.StringIO()
    assert sync_runs([], root=str(tmp_path), out=out) == 1
    assert "mlop login" in out.getvalue() and "MLOP_API_TOKEN" in out.getvalue()


def test_find_runs_picks_the_runs_with_something_unsent(tmp_path: Path) -> None:
    first, second = _run(tmp_path, "a"), _run(tmp_path, "b")
    assert sorted(find_runs([], every=False, root=str(tmp_path))) == sorted([first, second])
    urls = dict.fromkeys(("url_api", "url_ingest", "url_py", "url_app"), "http://s")
    out = io.StringIO()
    assert sync_run(first, Options(urls=urls, api_key="k"), out, httpx.MockTransport(_answer))
    assert "sent (http://s/r/3)" in out.getvalue()
    assert find_runs([], every=False, root=str(tmp_path)) == [second]
    assert sorted(find_runs([], every=True, root=str(tmp_path))) == sorted([first, second])
    again = io.StringIO()
    assert sync_run(first, Options(urls=urls, api_key="k"), again, httpx.MockTransport(_answer))
    assert "nothing to send" in again.getvalue()


def test_a_dead_unfinished_run_is_marked_failed_before_it_is_sent(tmp_path: Path) -> None:
    run_dir = _run(tmp_path, "dead", finish=False)
    store = Store(run_dir)
    store.set_meta({"pid": 2**22 + 12345})  # a process that does not exist
    store.close()
    seen: list[dict[str, object]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/runs/status/update":
            seen.append(json.loads(request.content))
        return _answer(request)

    urls = dict.fromkeys(("url_api", "url_ingest", "url_py", "url_app"), "http://s")
    assert sync_run(run_dir, Options(urls=urls, api_key="k"), io.StringIO(), httpx.MockTransport(answer))
    assert seen[-1]["status"] == "FAILED" and "without finish()" in str(seen[-1]["statusMetadata"])


def test_one_uploader_per_run_at_a_time(tmp_path: Path) -> None:
    from mlop._online._uploader import Busy, upload_lock

    run_dir = _run(tmp_path, "busy")
    urls = dict.fromkeys(("url_api", "url_ingest", "url_py", "url_app"), "http://s")
    with upload_lock(run_dir), pytest.raises(Busy, match="another process is uploading"):
        sync_run(run_dir, Options(urls=urls, api_key="k"), io.StringIO(), httpx.MockTransport(_answer))
    assert sync_run(run_dir, Options(urls=urls, api_key="k"), io.StringIO(), httpx.MockTransport(_answer))
