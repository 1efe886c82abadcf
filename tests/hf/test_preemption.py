"""A 2-process transformers training killed at a random step and resumed elsewhere from its checkpoint.

``torchrun --nproc-per-node=2`` on CPU against a real mlop server process: the first job is stopped with
SIGTERM, only its last checkpoint folder is carried to a fresh directory, and
``trainer.train(resume_from_checkpoint=...)`` there must continue the same run until it completes.
"""

from __future__ import annotations

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

PROGRAM = Path(__file__).parent / "programs" / "hf_preempted.py"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--standalone"]
MAX_STEPS = 12


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


def _last_checkpoint(output_dir: Path) -> Path:
    done = [p for p in output_dir.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return max(done, key=lambda p: int(p.name.split("-")[1]))


def test_a_killed_training_resumed_from_its_checkpoint_continues_the_run(
    tmp_path: Path, server: ServerProcess
) -> None:
    stop_at = random.Random().randint(3, MAX_STEPS - 4)
    node_a, node_b = tmp_path / "node-a", tmp_path / "node-b"
    node_a.mkdir()
    node_b.mkdir()
    first = _torchrun([str(node_a / "out"), str(node_a), "none", server.url, server.key], node_a)
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

    checkpoint = _last_checkpoint(node_a / "out")
    carried = node_b / "out" / checkpoint.name
    shutil.copytree(checkpoint, carried)
    second = _torchrun([str(node_b / "out"), str(node_b), str(carried), server.url, server.key], node_b)
    out, _ = second.communicate(timeout=400)
    assert second.returncode == 0, out[-5000:]

    headers = {"Authorization": f"Bearer {server.key}"}
    with httpx.Client(base_url=server.url, headers=headers) as api:
        (listed,) = api.get("/api/runs", params={"project": "hf-preempted"}).json()  # one run, not two
        deadline = time.monotonic() + 60
        run: dict[str, Any] = {}
        while time.monotonic() < deadline:
            run = api.get(f"/api/runs/{listed['id']}").json()
            if run["status"] == "COMPLETED":
                break
            time.sleep(0.2)
        points = api.get(f"/api/runs/{listed['id']}/metrics", params={"key": "train/loss"}).json()
    assert run["status"] == "COMPLETED" and run["name"] == "preempted", run
    assert f"DONE {run['externalId']}" in out
    assert run["config"]["summary"]["train_runtime"] > 0
    counts = Counter(p["step"] for p in points)
    assert set(counts) == set(range(1, MAX_STEPS + 1)), sorted(counts)
    resumed_at = int(checkpoint.name.split("-")[1])
    assert all(n == 1 or (n == 2 and step > resumed_at) for step, n in counts.items()), counts
