"""``mlop ui``: local runs reach the dashboard's own server, live runs keep growing there, and the runs'
own stores are left as they were (so a later ``mlop sync`` to a real server still sends everything)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.uiproc import mlop_ui

from mlop._store import Store

pytestmark = pytest.mark.slow

SCRIPT = """
import mlop, os, sys, time
mode = sys.argv[2]
run = mlop.init(project="local", name=mode, dir=sys.argv[1], mode="offline", tags=[mode])
if mode == "live":
    step = 0
    while not os.path.exists(os.path.join(sys.argv[1], "stop")) and step < 2000:
        run.log({"train/loss": 1.0 / (step + 1)}, step=step)
        step += 1
        time.sleep(0.05)
    run.finish()
else:
    for step in range(30):
        run.log({"train/loss": 1.0 / (step + 1)}, step=step)
    if mode == "done":
        import numpy as np
        run.log({"sample": mlop.Image(np.full((4, 4, 3), 200, dtype=np.uint8))}, step=3)
    if mode == "crashed":
        os._exit(3)
    run.finish()
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}
    env["MLOP_DISABLE_SYSTEM_METRICS"] = "1"
    return env


def _wait(check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(SCRIPT))
    for mode in ("done", "crashed"):
        subprocess.run(
            [sys.executable, str(script), str(tmp_path / "runs"), mode], env=_env(), timeout=120, check=False
        )
    return tmp_path / "runs"


@pytest.fixture
def live(runs_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    script = runs_dir.parent / "train.py"
    proc = subprocess.Popen([sys.executable, str(script), str(runs_dir), "live"], env=_env())
    yield proc
    (runs_dir / "stop").touch()
    try:
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_mlop_ui_sends_local_runs_and_follows_a_live_one(
    runs_dir: Path, live: subprocess.Popen[bytes]
) -> None:
    _wait(lambda: len(list(runs_dir.glob(".mlop/local/*/run.db"))) == 3)
    with mlop_ui(runs_dir, "--interval", "0.5", env=_env()) as (ui, url):
        base, key = url.split("/ui/#key=")
        assert base.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as api:
            assert httpx.get(f"{base}/api/projects").status_code == 401
            projects = _wait(lambda: [p["name"] for p in api.get("/api/projects").json()])
            assert projects == ["local"]  # the URL comes before the first sync: runs arrive soon after

            def statuses() -> dict[str, str]:
                runs = api.get("/api/runs", params={"project": "local"}).json()
                return {r["name"]: r["status"] for r in runs}

            want = {"done": "COMPLETED", "crashed": "FAILED", "live": "RUNNING"}
            assert _wait(lambda: statuses() == want) and statuses() == want
            runs = {r["name"]: r["id"] for r in api.get("/api/runs", params={"project": "local"}).json()}

            def steps(name: str) -> list[int]:
                answer = api.get(f"/api/runs/{runs[name]}/metrics", params={"key": "train/loss"})
                return [p["step"] for p in answer.json()] if answer.status_code == 200 else []

            assert _wait(lambda: steps("done") == list(range(30)))

            def images() -> list[dict[str, Any]]:
                answer = api.get(f"/api/runs/{runs['done']}/files", params={"key": "sample"})
                return list(answer.json()) if answer.status_code == 200 else []

            assert _wait(lambda: any(f["uploaded"] for f in images()))
            (image,) = images()
            assert image["step"] == 3
            done_dir = next(d for d in runs_dir.glob(".mlop/local/*") if _name(d) == "done")
            (on_disk,) = list(done_dir.rglob("*.png"))
            assert api.get(image["url"]).content == on_disk.read_bytes()  # media sent through the mirror
            first = len(_wait(lambda: steps("live")))
            assert _wait(lambda: len(steps("live")) > first + 10)
            (runs_dir / "stop").touch()
            live.wait(60)
            assert _wait(lambda: statuses()["live"] == "COMPLETED")
            last = Store(next(d for d in runs_dir.glob(".mlop/local/*") if _name(d) == "live"))
            try:
                logged = [s for _, kind, items in last.records(["metrics"]) for s, _, _ in items]
            finally:
                last.close()
            assert _wait(lambda: steps("live") == logged)
        ui.send_signal(signal.SIGINT)
        assert ui.wait(30) == 0
    for run_dir in runs_dir.glob(".mlop/local/*"):  # mlop ui wrote nothing into the runs
        store = Store(run_dir)
        try:
            assert store.acks() == {} and "server" not in store.meta()
        finally:
            store.close()


def _name(run_dir: Path) -> str:
    store = Store(run_dir)
    try:
        return str(store.meta().get("name"))
    finally:
        store.close()
