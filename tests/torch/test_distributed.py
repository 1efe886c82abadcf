"""DistributedDataParallel under a real ``torchrun --nproc-per-node=2`` (gloo, CPU), and shared runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import mlop

SCRIPT = Path(__file__).with_name("_ddp_train.py")
TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.fixture(scope="module")
def torchrun(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both phases of the script under one torchrun (it costs two torch imports per launch)."""
    out = tmp_path_factory.mktemp("ddp")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}
    env["OMP_NUM_THREADS"] = "1"
    command = [str(TORCHRUN), "--standalone", "--nproc-per-node=2", str(SCRIPT), str(out)]
    started = time.monotonic()
    done = subprocess.run(command, cwd=out, env=env, capture_output=True, timeout=180)
    assert done.returncode == 0, done.stderr.decode()[-4000:]
    assert time.monotonic() - started < 180
    return out


def runs(root: Path, project: str) -> list[Path]:
    return sorted(p for p in (root / ".mlop" / project).iterdir() if p.is_dir())


def histc(tensor: torch.Tensor) -> list[int]:
    return [int(c) for c in torch.histc(tensor, 16)]


@pytest.mark.slow
def test_ddp_logs_one_run_of_averaged_gradients(torchrun: Path) -> None:
    (run_dir,) = runs(torchrun, "ddp")
    reader = mlop.open_run(run_dir)
    assert reader.status == "COMPLETED"
    assert reader.meta["rank"] == {"rank": 0, "local_rank": 0, "world_size": 2}
    assert [r["value"] for r in reader.metrics("rank")] == [0, 0, 0]
    seen = [torch.load(torchrun / f"grads{rank}.pt") for rank in (0, 1)]
    for name in ("0.weight", "0.bias", "2.weight", "2.bias"):  # no "module." prefix
        rows = list(reader.data(f"grad/{name}"))
        assert [r["step"] for r in rows] == [0, 1, 2]
        for step, row in enumerate(rows):
            synced = seen[0][step]["synced"][name]
            local = [seen[rank][step]["local"][name] for rank in (0, 1)]
            assert torch.equal(synced, seen[1][step]["synced"][name])  # what both optimizers used
            assert not torch.equal(local[0], local[1])
            torch.testing.assert_close(synced, (local[0] + local[1]) / 2)  # the average, not rank 0's own
            assert row["value"]["freq"] == histc(synced)


@pytest.mark.slow
def test_shared_mode_one_run_with_every_ranks_system_metrics(torchrun: Path) -> None:
    (run_dir,) = runs(torchrun, "shared")
    assert run_dir.name == "one-run"
    reader = mlop.open_run(run_dir)
    assert reader.status == "COMPLETED"
    assert [r["value"] for r in reader.metrics("rank")] == [0, 0]  # rank 0 logs what the user logs
    assert [r["step"] for r in reader.data("grad/0.weight")] == [0, 1]
    system = {r["key"] for r in reader.metrics() if r["key"].startswith("sys/")}
    for rank in (0, 1):
        assert f"sys/rank{rank}/cpu.percentage" in system
        assert f"sys/rank{rank}/process.memory.rss" in system
    assert not [key for key in system if not key.startswith(("sys/rank0/", "sys/rank1/"))]
