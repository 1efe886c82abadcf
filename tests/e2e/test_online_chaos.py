"""Chaos: kill -9 of the server, of the uploader and of the training process, each at a random moment,
with a Unicode run name and poisoned values logged on every step. After ``mlop sync`` every good value is
on the server exactly once. The seed of the random moments is in every assertion message."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

import mlop
from mlop_server.testing import ServerProcess

pytestmark = pytest.mark.slow

NAME = "混沌-δ-🚀 run"
TRAIN = """
import os, sys, time
import mlop

run = mlop.init(project="chaos", name=os.environ["RUN_NAME"], dir=sys.argv[1], tags=["χάος"])
step = 0
while True:
    run.log({"loss": float(step), "": 1.0, "huge": 10**400, "lone\\ud800": 2.0, "text": "ünï ✓",
             "nested": {"k" * 600: 3.0, "ok": step}})
    if step == 30:
        print("RUNNING", flush=True)
    step += 1
    time.sleep(0.002)
"""


def _uploader_of(pid: int, timeout: float = 30) -> psutil.Process:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(pid).children():
            if "mlop._online._uploader" in " ".join(child.cmdline()):
                return child
        time.sleep(0.05)
    raise AssertionError("the training process started no uploader")


def test_kill_9_everywhere_then_mlop_sync_delivers_every_good_value_once(tmp_path: Path) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    why = f"seed {seed}"
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    runs = tmp_path / "runs"
    with ServerProcess(tmp_path / "server") as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}
        env.update(
            MLOP_API_TOKEN=server.key,
            MLOP_HOST=server.url,
            MLOP_CONFIG_DIR=str(tmp_path / "config"),
            MLOP_DISABLE_SYSTEM_METRICS="1",
            MLOP_X_HEARTBEAT_INTERVAL="0.5",
            RUN_NAME=NAME,
        )
        proc = subprocess.Popen(
            [sys.executable, str(script), str(runs)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().startswith("RUNNING"), why
            uploader = _uploader_of(proc.pid)
            time.sleep(rng.uniform(0.0, 0.8))
            server.kill()  # the server dies mid-batch; the uploader retries
            time.sleep(rng.uniform(0.1, 0.8))
            server.start()
            time.sleep(rng.uniform(0.0, 0.8))
            uploader.send_signal(signal.SIGKILL)  # the uploader dies with a batch in flight
            time.sleep(rng.uniform(0.0, 0.8))
            proc.send_signal(signal.SIGKILL)  # and the training process, with no finish()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=30)  # reaped: `mlop sync` sees the pid gone
        uploader.wait(10)

        (run_dir,) = (runs / ".mlop" / "chaos").iterdir()
        with mlop.open_run(run_dir) as stored:
            steps = [m["step"] for m in stored.metrics("loss")]
            assert stored.name == NAME
        assert steps == list(range(len(steps))) and len(steps) > 30, why

        synced = subprocess.run(
            [sys.executable, "-m", "mlop.cli", "sync", str(run_dir)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert synced.returncode == 0, f"{why}: {synced.stderr}"

        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}) as api:
            (listed,) = api.get("/api/runs", params={"project": "chaos"}).json()
            run: dict[str, Any] = api.get(f"/api/runs/{listed['id']}").json()
            assert run["name"] == NAME and run["tags"] == ["χάος"], why
            assert run["status"] == "FAILED", why
            for key in ("loss", "nested/ok"):
                points = api.get(f"/api/runs/{run['id']}/metrics", params={"key": key}).json()
                assert [p["step"] for p in points] == steps, f"{why}: {key}"  # each once, none lost
                assert [p["value"] for p in points] == [float(s) for s in steps], why
            texts = api.get(f"/api/runs/{run['id']}/data", params={"key": "text"}).json()
            assert [(t["step"], t["data"]) for t in texts] == [(s, "ünï ✓") for s in steps], why
            keys = {k["name"] for k in api.get(f"/api/runs/{run['id']}/keys").json()}
            assert keys == {"loss", "nested/ok", "text"}, why
