"""``mlop.init(run_id=..., resume=True)`` where the run's local store is not, against a real server."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import mlop
from mlop_server.testing import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("server")) as proc:
        yield proc


def _listed(server: ServerProcess, project: str) -> list[dict[str, Any]]:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}) as api:
        runs: list[dict[str, Any]] = api.get("/api/runs", params={"project": project}).json()
        return runs


def _run(server: ServerProcess, project: str, status: str) -> dict[str, Any]:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}) as api:
        (listed,) = api.get("/api/runs", params={"project": project}).json()
        deadline = time.monotonic() + 30
        while True:
            run: dict[str, Any] = api.get(f"/api/runs/{listed['id']}").json()
            if run["status"] == status or time.monotonic() > deadline:
                return run
            time.sleep(0.1)


def test_resume_on_another_machine_keeps_config_and_tags(tmp_path: Path, server: ServerProcess) -> None:
    online = {"host": server.url, "api_key": server.key, "disable_system_metrics": True}
    first = mlop.init(
        project="elsewhere", run_id="kept", dir=tmp_path / "a", tags=["a", "b"], config={"x": 1}, **online
    )
    first.log({"loss": 1.0}, step=0)
    first.finish()
    assert _run(server, "elsewhere", "COMPLETED")["tags"] == ["a", "b"]

    again = mlop.init(project="elsewhere", run_id="kept", resume=True, dir=tmp_path / "b", **online)
    assert _run(server, "elsewhere", "RUNNING")["status"] == "RUNNING"  # back to RUNNING
    again.log({"loss": 0.5}, step=1)
    again.update_config({"y": 2})
    again.finish()

    run = _run(server, "elsewhere", "COMPLETED")
    assert run["status"] == "COMPLETED" and run["externalId"] == "kept"
    assert run["tags"] == ["a", "b"]  # a resume that names no tags leaves them as they were
    assert run["config"] == {"x": 1, "y": 2}


def _points(server: ServerProcess, run_id: int, key: str) -> list[dict[str, Any]]:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}) as api:
        points: list[dict[str, Any]] = api.get(
            f"/api/runs/{run_id}/metrics", params={"key": key, "max_points": 10_000}
        ).json()
        return points


def test_resume_elsewhere_counts_steps_on_after_the_servers_last(
    tmp_path: Path, server: ServerProcess
) -> None:
    online = {"host": server.url, "api_key": server.key, "disable_system_metrics": True}
    first = mlop.init(
        project="counted", run_id="steps", dir=tmp_path / "a", tags=["t"], config={"lr": 0.1}, **online
    )
    for i in range(50):
        first.log({"loss": float(i)})  # no step: 0..49
    first.finish()
    assert _run(server, "counted", "COMPLETED")["status"] == "COMPLETED"

    # Another machine: a fresh directory, none of the first one's files.
    again = mlop.init(project="counted", run_id="steps", resume=True, dir=tmp_path / "b", **online)
    assert again.step == 49  # the server said its last step at init
    assert _run(server, "counted", "RUNNING")["status"] == "RUNNING"
    for i in range(50, 60):
        again.log({"loss": float(i)})  # no step: 50..59, not 0..9 again
    again.finish()

    run = _run(server, "counted", "COMPLETED")
    assert run["status"] == "COMPLETED"
    assert run["tags"] == ["t"] and run["config"] == {"lr": 0.1}
    points = _points(server, run["id"], "loss")
    assert [p["step"] for p in points] == list(range(60))  # each step once
    assert [p["value"] for p in points] == [float(i) for i in range(60)]


def test_resume_elsewhere_of_a_run_without_steps_starts_at_zero(
    tmp_path: Path, server: ServerProcess
) -> None:
    online = {"host": server.url, "api_key": server.key, "disable_system_metrics": True}
    mlop.init(project="empty", run_id="nothing", dir=tmp_path / "a", **online).finish()
    again = mlop.init(project="empty", run_id="nothing", resume=True, dir=tmp_path / "b", **online)
    again.log({"loss": 1.0})
    again.finish()
    run = _run(server, "empty", "COMPLETED")
    assert [p["step"] for p in _points(server, run["id"], "loss")] == [0]


KILLED = """
import sys, time
import mlop
run = mlop.init(project="killed", run_id="preempted", dir=sys.argv[1], tags=["k"], config={"seed": 7},
                host=sys.argv[2], api_key=sys.argv[3], disable_system_metrics=True)
for i in range(50):
    run.log({"loss": float(i)})
print("logged", flush=True)
time.sleep(120)  # killed here, never finished
"""


def test_resume_elsewhere_after_the_first_process_was_killed(tmp_path: Path, server: ServerProcess) -> None:
    """A preempted job: killed with SIGKILL, requeued on a node without its files."""
    script = tmp_path / "train.py"
    script.write_text(KILLED)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "a"), server.url, server.key],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "logged"
        deadline = time.monotonic() + 60
        while True:  # its uploader delivers what it stored (bounded wait)
            listed = _listed(server, "killed")
            arrived = bool(listed) and len(_points(server, listed[0]["id"], "loss")) == 50
            if arrived or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    # The orphaned uploader marks the run FAILED once it sees its training process gone.
    assert _run(server, "killed", "FAILED")["status"] == "FAILED"

    online = {"host": server.url, "api_key": server.key, "disable_system_metrics": True}
    again = mlop.init(project="killed", run_id="preempted", resume=True, dir=tmp_path / "b", **online)
    assert _run(server, "killed", "RUNNING")["status"] == "RUNNING"
    for i in range(50, 60):
        again.log({"loss": float(i)})
    again.finish()

    run = _run(server, "killed", "COMPLETED")
    assert run["status"] == "COMPLETED"
    assert run["tags"] == ["k"] and run["config"] == {"seed": 7}
    points = _points(server, run["id"], "loss")
    assert [p["step"] for p in points] == list(range(60))
    assert [p["value"] for p in points] == [float(i) for i in range(60)]
