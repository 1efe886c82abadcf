"""What run.log() costs the training loop, beside a baseline that only queues a copy of each dict.

Run: .venv/bin/python bench/log_overhead.py [--steps 200000] [--memory-steps 1000000]
Prints one JSON document with every figure; bench/README.md holds the latest ones.
"""

from __future__ import annotations

import argparse
import json
import queue
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import psutil

import mlop


def _percentiles(samples: list[int]) -> dict[str, float]:
    samples.sort()
    return {
        "median_us": samples[len(samples) // 2] / 1000,
        "p99_us": samples[int(len(samples) * 0.99)] / 1000,
    }


def _time_calls(call: Callable[[dict[str, float], int], Any], steps: int, width: int) -> list[int]:
    keys = [f"train/metric_{k}" for k in range(width)]
    clock = time.perf_counter_ns
    samples = [0] * steps
    for i in range(steps):
        data = {k: i * 0.001 + j for j, k in enumerate(keys)}
        start = clock()
        call(data, i)
        samples[i] = clock() - start
    return samples


def bench_dict_of_10(steps: int, root: str) -> dict[str, Any]:
    q: queue.SimpleQueue[dict[str, float]] = queue.SimpleQueue()
    base = _percentiles(_time_calls(lambda d, i: q.put(dict(d)), steps, 10))
    # The loop itself (building each dict, timing each call) costs CPU too: measure it alone and subtract.
    cpu0 = time.process_time()
    _time_calls(lambda d, i: None, steps, 10)
    loop_cpu = time.process_time() - cpu0
    run = mlop.init(project="bench", dir=root, disable_system_metrics=True, disable_console=True)
    cpu0 = time.process_time()
    logged = _percentiles(_time_calls(lambda d, i: run.log(d), steps, 10))
    last = time.perf_counter()
    run.finish()
    finish_s = time.perf_counter() - last
    cpu = time.process_time() - cpu0 - loop_cpu
    return {
        "steps": steps,
        "baseline_queue_put": base,
        "run_log": logged,
        "ratio_of_medians": logged["median_us"] / base["median_us"],
        "finish_after_last_log_s": finish_s,
        "cpu_us_per_value": cpu / (steps * 10) * 1e6,
    }


def bench_wide(steps: int, root: str) -> dict[str, Any]:
    run = mlop.init(project="bench", dir=root, disable_system_metrics=True, disable_console=True)
    out = _percentiles(_time_calls(lambda d, i: run.log(d), steps, 1000))
    run.finish()
    return {"steps": steps, "keys": 1000, **out}


def bench_memory(steps: int, root: str) -> dict[str, Any]:
    proc = psutil.Process()
    run = mlop.init(project="bench", dir=root, disable_system_metrics=True, disable_console=True)
    keys = [f"m{k}" for k in range(10)]
    warm = steps // 10
    rss_warm = 0
    peak = 0
    for i in range(steps):
        run.log(dict.fromkeys(keys, i * 0.5))
        if i == warm:
            rss_warm = proc.memory_info().rss
        if i % 50_000 == 0:
            peak = max(peak, proc.memory_info().rss)
    rss_end = proc.memory_info().rss
    run.finish()
    return {
        "steps": steps,
        "rss_after_10pct_mb": rss_warm / 2**20,
        "rss_end_mb": rss_end / 2**20,
        "growth_mb": (rss_end - rss_warm) / 2**20,
        "peak_sampled_mb": max(peak, rss_end) / 2**20,
    }


def bench_import(repeats: int = 7) -> dict[str, Any]:
    code = "import time; t = time.perf_counter(); import mlop; print(time.perf_counter() - t)"
    runs = [float(subprocess.check_output([sys.executable, "-c", code], text=True)) for _ in range(repeats)]
    leaked = subprocess.check_output(
        [
            sys.executable,
            "-c",
            "import sys, mlop; print(sorted({'numpy','torch','PIL','httpx'} & set(sys.modules)))",
        ],
        text=True,
    ).strip()
    return {"median_ms": statistics.median(runs) * 1000, "heavy_modules_imported": leaked}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--wide-steps", type=int, default=2_000)
    parser.add_argument("--memory-steps", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        report = {
            "import": bench_import(),
            "dict_of_10": bench_dict_of_10(args.steps, root),
            "keys_1000": bench_wide(args.wide_steps, root),
            "memory": bench_memory(args.memory_steps, root),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
