"""A 2-process Lightning fit killed at a random step and restarted elsewhere from its checkpoint.

``torchrun --nproc-per-node=2`` on CPU against a real mlop server process: the first job is stopped with
SIGTERM (what a cluster sends before it preempts), the checkpoint alone is carried to a fresh directory,
and the job restarted from it must continue the same run on the server until it completes.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlop_server.testing import ServerProcess

pytestmark = pytest.mark.slow

PROGRAM = Path(__file__).parent / "programs" / "preempted_fit.py"
MAX_STEPS = 12
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--standalone"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("server")) as proc:
        yield proc


def _torchrun(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*TORCHRUN, str(PROGRAM), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _wait_status(api: httpx.Client, run_id: int, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        run: dict[str, Any] = api.get(f"/api/runs/{run_id}").json()
        if run["status"] == status or time.monotonic() > deadline:
            return run
        time.sleep(0.2)


def test_a_killed_job_restarted_from_its_checkpoint_continues_the_run(
    tmp_path: Path, server: ServerProcess
) -> None:
    stop_at = random.Random().randint(3, MAX_STEPS - 4)  # any step; the checkpoint is a step behind or on it
    node_a, node_b = tmp_path / "node-a", tmp_path / "node-b"
    node_a.mkdir()
    node_b.mkdir()
    first = _torchrun([str(node_a / "runs"), str(node_a / "ckpt"), "none", server.url, server.key], node_a)
    assert first.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 300
    for line in first.stdout:
        lines.append(line)
        if line.strip() == f"STEP {stop_at}":
            break
        assert time.monotonic() < deadline, "".join(lines[-50:])
    os.killpg(first.pid, signal.SIGTERM)
    try:
        rest, _ = first.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(first.pid, signal.SIGKILL)
        rest, _ = first.communicate()
    assert first.returncode != 0, "".join(lines) + rest

    # The other node has none of the first one's files but the checkpoint.
    shutil.copy(node_a / "ckpt" / "last.ckpt", node_b / "resume.ckpt")
    resume = str(node_b / "resume.ckpt")
    second = _torchrun([str(node_b / "runs"), str(node_b / "ckpt"), resume, server.url, server.key], node_b)
    out, _ = second.communicate(timeout=400)
    assert second.returncode == 0, out[-5000:]

    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}) as api:
        (listed,) = api.get("/api/runs", params={"project": "preempted"}).json()  # one run, not two
        run = _wait_status(api, listed["id"], "COMPLETED")
        assert run["status"] == "COMPLETED", run
        assert f"DONE {run['externalId']}" in out
        assert run["config"]["lr"] == 0.05
        points = api.get(f"/api/runs/{listed['id']}/metrics", params={"key": "train/loss"}).json()
    counts = Counter(p["step"] for p in points)
    assert set(counts) == set(range(MAX_STEPS)), sorted(counts)
    # Steps after the checkpoint and before the kill were logged by both jobs: rewound, stored as given.
    rewound = sorted(step for step, n in counts.items() if n > 1)
    assert all(n <= 2 for n in counts.values()), json.dumps(counts)
    assert all(step >= stop_at - 1 for step in rewound), json.dumps(counts)
