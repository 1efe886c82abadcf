"""CPU per value with the writer process and with the writer thread, the writer process's CPU included.

Run: nice -n -15 .venv/bin/python bench/writer_cpu.py [--rounds 5]
Prints one JSON document; bench/README.md (issue 20, "The writer process") holds the latest figures.

Each round runs, in alternation, the same loop with ``x_writer_process`` on and off: 10 floats × 200,000
steps and 1,000 keys × 2,000 steps, logged as fast as the loop can. CPU is this process's CPU time plus
that of its ended children (the writer process ends, and is reaped, inside ``run.finish()``), less the
same loop calling a function that does nothing, from ``init()`` to the end of ``finish()``. The fixed cost
of a writer process (its start, about 30 ms of CPU on another core) is measured apart with a run that
logs nothing, and given beside the figures: ``per_value_us`` holds it, ``marginal_us`` does not.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import mlop


def _cpu() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _loop(call: Callable[[dict[str, float]], Any], steps: int, width: int) -> None:
    keys = [f"train/metric_{k}" for k in range(width)]
    for i in range(steps):
        call({k: i * 0.001 + j for j, k in enumerate(keys)})


def _run_cpu(process: bool, steps: int, width: int) -> float:
    with tempfile.TemporaryDirectory() as root:
        start = _cpu()
        run = mlop.init(
            project="bench",
            dir=root,
            mode="offline",
            disable_system_metrics=True,
            disable_console=True,
            x_writer_process=process,
        )
        if steps:
            _loop(run.log, steps, width)
        run.finish()
        return _cpu() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    workloads = {"floats_10": (200_000, 10), "keys_1000": (2_000, 1000)}
    bare: dict[str, float] = {}
    for name, (steps, width) in workloads.items():
        start = time.process_time()
        _loop(lambda d: None, steps, width)
        bare[name] = time.process_time() - start
    fixed = {True: [], False: []}  # type: dict[bool, list[float]]
    cpu: dict[str, dict[bool, list[float]]] = {name: {True: [], False: []} for name in workloads}
    for _ in range(args.rounds):
        for process in (True, False):
            fixed[process].append(_run_cpu(process, 0, 0))
            for name, (steps, width) in workloads.items():
                cpu[name][process].append(_run_cpu(process, steps, width) - bare[name])
    out: dict[str, Any] = {"rounds": args.rounds, "fixed_cpu_ms": {}}
    for process in (True, False):
        label = "writer_process" if process else "writer_thread"
        out["fixed_cpu_ms"][label] = statistics.median(fixed[process]) * 1000
    for name, (steps, width) in workloads.items():
        values = steps * width
        out[name] = {}
        for process in (True, False):
            label = "writer_process" if process else "writer_thread"
            median = statistics.median(cpu[name][process])
            out[name][label] = {
                "per_value_us": median / values * 1e6,
                "marginal_us": (median - statistics.median(fixed[process])) / values * 1e6,
                "runs_us": [round(c / values * 1e6, 4) for c in cpu[name][process]],
            }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
