"""The online client when the network, the server or the training process fails: nothing lost, nothing
twice. Against mlop-server as a real process, with a fault-injecting proxy on loopback."""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import sys
import time
from typing import Any

import pytest

import mlop

pytestmark = pytest.mark.slow

STEPS = 300
STEADY = f"""
run = mlop.init(project=os.environ["PROJECT"], dir=sys.argv[1])
for step in range({STEPS}):
    run.log({{"loss": step * 0.5, "acc": 1.0}})
    if step % 50 == 0:
        run.log({{"note": f"at {{step}}"}}, step=step)
    time.sleep(0.002)
run.finish()
print("DONE", run.status)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(online: Any, project: str, host: str | None = None, **extra: str) -> dict[str, str]:
    return online.env(host, **{"PROJECT": project, "MLOP_X_FINISH_TIMEOUT": "60", **extra})


def test_server_down_from_the_start_then_mlop_sync_delivers_exactly_once(online: Any) -> None:
    down = f"http://127.0.0.1:{_free_port()}"
    env = _env(online, "down", down, MLOP_X_INIT_TIMEOUT="0.5", MLOP_X_FINISH_TIMEOUT="1")
    out = online.run(STEADY, env=env)
    assert "DONE COMPLETED" in out.stdout
    run_dir = online.run_dir("down")
    assert f"mlop sync {run_dir}" in out.stderr
    assert online.api.get("/api/runs", params={"project": "down"}).json() == []

    synced = online.mlop("sync", str(run_dir), "--host", online.server.url)
    assert synced.returncode == 0, synced.stderr
    run = online.server_run("down")
    assert online.steps(run["id"], "loss") == list(range(STEPS))
    assert run["status"] == "COMPLETED"
    created = mlop.open_run(run_dir)
    assert run["created"] == int(created.created_at * 1000)  # the run's own times, not the sync's
    created.close()

    again = online.mlop("sync", str(run_dir), "--host", online.server.url)
    assert again.returncode == 0 and "nothing to send" in again.stderr
    assert online.steps(run["id"], "loss") == list(range(STEPS))


def test_a_server_that_never_answers_cannot_hang_the_script(online: Any) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        host = f"http://127.0.0.1:{silent.getsockname()[1]}"
        env = _env(online, "silent", host, MLOP_X_INIT_TIMEOUT="0.5", MLOP_X_FINISH_TIMEOUT="1")
        out = online.run(STEADY, env=env, timeout=60)
    assert "DONE COMPLETED" in out.stdout
    assert "did not answer within 0.5 s" in out.stderr
    assert f"mlop sync {online.run_dir('silent')}" in out.stderr


def test_an_offline_run_is_synced_by_mlop_sync_with_no_arguments(online: Any) -> None:
    env = _env(online, "offline", MLOP_MODE="offline")
    online.run(STEADY, env=env)
    synced = online.mlop("sync", "--dir", str(online.runs_dir))
    assert synced.returncode == 0, synced.stderr
    run = online.server_run("offline")
    assert online.steps(run["id"], "loss") == list(range(STEPS))
    notes = online.api.get(f"/api/runs/{run['id']}/data", params={"key": "note"}).json()
    assert [n["step"] for n in notes] == list(range(0, STEPS, 50))
    assert online.mlop("sync", "--dir", str(online.runs_dir)).stderr.startswith("mlop sync: no run")


def test_server_killed_and_restarted_mid_run(online: Any) -> None:
    body = """
        run = mlop.init(project="restart", dir=sys.argv[1])
        step = 0
        while not os.path.exists("stop"):
            run.log({"loss": float(step)})
            if step == 20:
                print("RUNNING", flush=True)
            step += 1
            time.sleep(0.005)
        run.finish()
        print("LAST", step - 1, run.status, flush=True)
    """
    proc = online.spawn(body, env=_env(online, "restart"))
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("RUNNING")
    run = online.server_run("restart")
    online.server.kill()
    time.sleep(1.0)  # the run goes on; its uploader retries
    online.server.start()
    time.sleep(0.5)
    (online.tmp / "stop").touch()
    out, err = proc.communicate(timeout=120)
    last = int(out.split("LAST")[1].split()[0])
    assert online.steps(run["id"], "loss") == list(range(last + 1)), err
    assert online.wait_status(run["id"], {"COMPLETED"})["status"] == "COMPLETED"


def test_every_fault_of_the_proxy_and_still_exactly_once(online: Any, fault_proxy: Any) -> None:
    faults = {1: "500", 2: "429", 3: "reset", 4: "lost", 5: "slow", 7: "lost"}

    def plan(method: str, path: str, n: int) -> str | None:
        if path in ("/ingest/metrics", "/ingest/data"):
            return faults.get(n)
        if path in ("/api/runs/create", "/api/runs/status/update", "/api/runs/logName/add") and n == 1:
            return "lost"
        return None

    proxy = fault_proxy(plan)
    out = online.run(STEADY, env=_env(online, "proxy", proxy.url, MLOP_X_INIT_TIMEOUT="0.05"))
    assert "DONE COMPLETED" in out.stdout
    # the create's reply was lost: init went on, and the URL was printed once the run existed
    assert "did not answer within 0.05 s" in out.stderr and "is now on the server: http" in out.stderr
    assert {"500", "429", "reset", "lost", "slow"} <= set(proxy.faults())
    run = online.server_run("proxy")
    assert online.steps(run["id"], "loss") == list(range(STEPS))
    notes = online.api.get(f"/api/runs/{run['id']}/data", params={"key": "note"}).json()
    assert [n["step"] for n in notes] == list(range(0, STEPS, 50))
    assert run["status"] == "COMPLETED"


def test_a_refused_batch_is_split_and_what_the_server_takes_arrives(online: Any, fault_proxy: Any) -> None:
    # The proxy refuses one whole metrics batch once (as a server refuses a batch for one bad line): the
    # uploader splits it and sends the halves, so every point arrives and nothing is recorded as refused.
    proxy = fault_proxy(lambda method, path, n: "400" if path == "/ingest/metrics" and n == 2 else None)
    out = online.run(STEADY, env=_env(online, "refused", proxy.url))
    assert "DONE COMPLETED" in out.stdout
    assert "refused part of run" not in out.stderr
    (refused,) = [body for path, fault, body in proxy.log if fault == "400"]
    assert refused.count(b"\n") > 1
    run = online.server_run("refused")
    assert online.steps(run["id"], "loss") == list(range(STEPS))
    assert run["status"] == "COMPLETED"
    with sqlite3.connect(online.run_dir("refused") / "run.db") as db:
        rows = db.execute("SELECT stream, status, message FROM failures").fetchall()
    db.close()
    assert rows == []


def test_sigkill_of_the_training_process_delivers_the_store_and_fails_the_run(online: Any) -> None:
    body = """
        run = mlop.init(project="killed", dir=sys.argv[1])
        step = 0
        while True:
            run.log({"loss": float(step)})
            if step == 200:
                print("RUNNING", flush=True)
            step += 1
            time.sleep(0.001)
    """
    proc = online.spawn(body, env=_env(online, "killed"))
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("RUNNING")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    run = online.server_run("killed")
    ended = online.wait_status(run["id"], {"FAILED"}, timeout=30)  # seconds, not the reaper's minutes
    assert ended["status"] == "FAILED"
    assert "without finish()" in ended["statusMetadata"]["message"]
    with mlop.open_run(online.run_dir("killed")) as stored:
        steps = [row["step"] for row in stored.metrics("loss")]
    assert steps == list(range(len(steps))) and steps  # all but the last ~flush interval
    assert online.steps(run["id"], "loss") == steps


def test_mlop_sync_interrupted_then_run_again_sends_each_value_once(online: Any, fault_proxy: Any) -> None:
    body = """
        run = mlop.init(project="interrupted", dir=sys.argv[1], mode="offline")
        for step in range(60000):
            run.log({"loss": step * 0.5})
        run.finish()
    """
    online.run(body, env=_env(online, "interrupted"))
    run_dir = online.run_dir("interrupted")
    proxy = fault_proxy(lambda method, path, n: "slow" if path == "/ingest/metrics" else None)
    sync = subprocess.Popen(
        [sys.executable, "-m", "mlop.cli", "sync", str(run_dir), "--host", proxy.url],
        env=online.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while proxy.counts.get("/ingest/metrics", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    sync.send_signal(signal.SIGINT)
    _, err = sync.communicate(timeout=60)
    assert sync.returncode == 130 and "run it again" in err, err
    again = online.mlop("sync", str(run_dir), "--host", online.server.url)
    assert again.returncode == 0, again.stderr
    run = online.server_run("interrupted")
    assert online.steps(run["id"], "loss") == list(range(60000))
    assert run["status"] == "COMPLETED"
