"""DDP under a real ``torchrun --nproc-per-node=2`` in shared mode, online against a real mlop-server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import mlop

pytestmark = pytest.mark.slow

SHARED = """
import torch, torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
ddp = DistributedDataParallel(model)
optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
run = mlop.init(project="tshared", dir=sys.argv[1], run_id="ddp-online", x_sys_sampling_interval=0.1,
                disable_console=True)
run.watch(ddp, log="gradients", log_freq=1, bins=16)
for step in range(2):
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(100 * rank + step))
    optimizer.zero_grad()
    loss = ddp(x).pow(2).mean()
    loss.backward()
    optimizer.step()
    run.log({"loss": loss.item(), "rank": rank})
time.sleep(0.5)
dist.barrier()
run.finish()
dist.destroy_process_group()
"""


def test_shared_ddp_run_arrives_once_with_both_ranks_system_metrics(online: Any) -> None:
    script = online.script(SHARED, name="ddp_shared.py")
    env = online.env(MLOP_SHARED="1", MLOP_DISABLE_SYSTEM_METRICS="0", OMP_NUM_THREADS="1")
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nproc-per-node=2", str(script), str(online.runs_dir)]
    done = subprocess.run(command, cwd=online.tmp, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-4000:]

    run = online.server_run("tshared")  # exactly one run on the server
    assert run["status"] == "COMPLETED" and run["externalId"] == "ddp-online"
    assert list(run["graph"]["nodes"]) == [".", "0", "1", "2"]
    run_id = run["id"]
    assert online.steps(run_id, "rank") == [0, 1]
    assert [
        p["value"] for p in online.api.get(f"/api/runs/{run_id}/metrics", params={"key": "rank"}).json()
    ] == [
        0,
        0,
    ]
    local = {r["step"]: r["value"] for r in mlop.open_run(online.run_dir("tshared")).data("grad/0.weight")}
    sent = online.api.get(f"/api/runs/{run_id}/data", params={"key": "grad/0.weight"}).json()
    assert [row["step"] for row in sent] == [0, 1] and sorted(local) == [0, 1]
    for row in sent:
        payload = json.loads(row["data"]) if isinstance(row["data"], str) else row["data"]
        assert payload["freq"] == local[row["step"]]["freq"] and sum(payload["freq"]) == 32
    keys = {k["name"] for k in online.api.get(f"/api/runs/{run_id}/keys").json()}
    assert {"sys/rank0/cpu.percentage", "sys/rank1/cpu.percentage"} <= keys
