"""The slowest step of a two-process data-parallel loop, with rank 0 logging 1,000 keys a step and without.

Run: .venv/bin/python bench/torchrun_log.py [--steps 2000] [--work-ms 2]
It starts ``torchrun --nproc-per-node 2`` (gloo, CPU) twice, once per mode, and prints one JSON document.
Each step does ``--work-ms`` of pure-Python work (holding the interpreter lock, as a Python-heavy step
does), then an ``all_reduce`` of a small tensor; in the mlop mode rank 0 also calls ``run.log`` with
1,000 keys. A stall on rank 0 stalls rank 1 at the next collective, so the figure is the slowest step
seen by either rank. bench/README.md holds the latest figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def worker(mode: str, steps: int, work: float, out: Path, root: str) -> None:
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    run = None
    if mode == "mlop" and rank == 0:
        import mlop

        run = mlop.init(project="torchrun", dir=root, disable_system_metrics=True, disable_console=True)
    keys = [f"train/metric_{k}" for k in range(1000)]
    tensor = torch.ones(1024)
    times = []
    dist.barrier()
    for step in range(steps):
        start = time.perf_counter()
        _spin(work)
        dist.all_reduce(tensor)
        if run is not None:
            run.log({k: step * 0.001 + j for j, k in enumerate(keys)})
        times.append(time.perf_counter() - start)
    dist.barrier()
    if run is not None:
        run.finish()
    (out / f"{mode}-{rank}.json").write_text(json.dumps(times))
    dist.destroy_process_group()


def _summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    n = len(ordered)
    return {
        "median_ms": ordered[n // 2] * 1000,
        "p99_ms": ordered[int(n * 0.99)] * 1000,
        "p99_9_ms": ordered[min(n - 1, int(n * 0.999))] * 1000,
        "max_ms": ordered[-1] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--work-ms", type=float, default=2.0)
    parser.add_argument("--worker", choices=["plain", "mlop"])
    parser.add_argument("--out")
    parser.add_argument("--root")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.work_ms / 1000, Path(args.out), args.root)
        return
    report: dict[str, Any] = {"load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for mode in ("plain", "mlop", "plain", "mlop"):
            command = [
                *(sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"),
                *("--master-port", "29533", __file__, "--worker", mode),
                *("--steps", str(args.steps), "--work-ms", str(args.work_ms)),
                *("--out", str(out), "--root", str(out / "runs")),
            ]
            subprocess.run(command, check=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
            # The step as the slower rank saw it: a stall on either rank holds both at the collective.
            per_rank = [json.loads((out / f"{mode}-{rank}.json").read_text()) for rank in (0, 1)]
            steps = [max(pair) for pair in zip(*per_rank, strict=True)]
            report.setdefault(mode, []).append(_summary(steps))
    report["load_average_after"] = os.getloadavg()
    report["slowest_step_ratio"] = [
        mlop_run["max_ms"] / plain["max_ms"]
        for plain, mlop_run in zip(report["plain"], report["mlop"], strict=True)
    ]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
