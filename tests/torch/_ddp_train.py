"""Run by test_distributed.py under ``torchrun --nproc-per-node=2``: DDP on gloo, then a shared run.

Each rank saves, per step, the gradients DDP left for the optimizer and the gradients its own batch gives
without DDP, so the test can check that the logged histograms are of the averaged gradients.
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import mlop

QUIET = {"disable_console": True}


def train(ddp: Any, local: Any, optimizer: Any, run: Any, rank: int, steps: int) -> list[dict[str, Any]]:
    seen = []
    for step in range(steps):
        x = torch.randn(8, 4, generator=torch.Generator().manual_seed(100 * rank + step))
        local.load_state_dict(ddp.module.state_dict())
        local.zero_grad()
        local(x).pow(2).mean().backward()
        optimizer.zero_grad()
        loss = ddp(x).pow(2).mean()
        loss.backward()
        seen.append(
            {
                "synced": {n: p.grad.clone() for n, p in ddp.module.named_parameters()},
                "local": {n: p.grad.clone() for n, p in local.named_parameters()},
            }
        )
        optimizer.step()
        run.log({"loss": loss.item(), "rank": rank})
    return seen


def main() -> None:
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    local = copy.deepcopy(model)
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)

    run = mlop.init(project="ddp", dir=out, disable_system_metrics=True, **QUIET)
    run.watch(ddp, log="gradients", log_freq=1, bins=16)
    seen = train(ddp, local, optimizer, run, rank, steps=3)
    run.finish()
    torch.save(seen, out / f"grads{rank}.pt")

    run = mlop.init(
        project="shared",
        dir=out,
        run_id="one-run",
        settings={"shared": True},
        x_sys_sampling_interval=0.1,
        **QUIET,
    )
    run.watch(ddp, log="gradients", log_freq=1, bins=16)
    train(ddp, local, optimizer, run, rank, steps=2)
    time.sleep(0.5)  # a few system samples on every rank
    dist.barrier()
    run.finish()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
