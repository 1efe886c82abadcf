"""What the system monitor costs: CPU time per sample, scaled to the default interval.

At the default interval (10 s) one run would have to last hours to measure its tiny cost directly, so the
monitor runs here with a short interval (0.05 s by default) and its cost per sample is scaled: the share
of one core at interval T is (CPU seconds per sample) / T. Two figures, both per sample:

- the monitor thread's own CPU time (psutil reads it per thread, by native id);
- the whole process's extra CPU time against a baseline run with the monitor off, over the same
  wall time (this adds the writer's work of storing the samples, and the machine's noise).

Target (issue 4): at most 0.5% of one core at the default interval. No GPU is sampled on a machine
without one; NVML reads add to the figure where there are GPUs.

It also times one ``print`` of a line with and without console capture (wrapping), to /dev/null, and what
starting the services (the environment, the monitor, console capture) adds to ``init()``.

Run: .venv/bin/python bench/system_monitor.py [--seconds 10] [--interval 0.05] [--prints 100000]
Prints one JSON document; bench/README.md holds the latest figures.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from typing import Any

import psutil

import mlop

DEFAULT_INTERVAL = mlop.Settings().x_sys_sampling_interval
TARGET_PERCENT = 0.5


def _thread_cpu(native_id: int | None) -> float:
    for thread in psutil.Process().threads():
        if thread.id == native_id:
            return float(thread.user_time + thread.system_time)
    return 0.0


def _one(root: str, seconds: float, interval: float | None) -> dict[str, Any]:
    """A run that does nothing for ``seconds`` but be monitored (or not, with ``interval`` None)."""
    settings: dict[str, Any] = {"disable_console": True}
    if interval is None:
        settings["disable_system_metrics"] = True
    else:
        settings["x_sys_sampling_interval"] = interval
    run = mlop.init(project="bench", dir=root, mode="offline", **settings)
    monitor = next((t for t in threading.enumerate() if t.name == "mlop-system-monitor"), None)
    cpu0 = time.process_time()
    time.sleep(seconds)
    thread_cpu = _thread_cpu(monitor.native_id) if monitor is not None else 0.0
    process_cpu = time.process_time() - cpu0
    run.finish()
    reader = mlop.open_run(run.dir)
    samples = len({row["step"] for row in reader.metrics() if row["key"] == "sys/memory.used"})
    keys = len({row["key"] for row in reader.metrics()})
    reader.close()
    return {
        "process_cpu_s": process_cpu,
        "monitor_thread_cpu_s": thread_cpu,
        "samples": samples,
        "keys": keys,
    }


def _print_cost(root: str, prints: int) -> dict[str, float]:
    """Median time of one ``print`` of a 60-character line, without and with console capture (wrapping)."""
    import os
    import statistics
    import sys

    def timed() -> float:
        clock = time.perf_counter_ns
        samples = []
        for i in range(prints):
            start = clock()
            print(f"step {i:8d} loss {0.5:.6f} and a little more text to fill")
            samples.append(clock() - start)
        return statistics.median(samples) / 1000

    saved = sys.stdout
    with open(os.devnull, "w") as devnull:
        sys.stdout = devnull
        try:
            plain = timed()
            run = mlop.init(project="bench", dir=root, mode="offline", disable_system_metrics=True)
            captured = timed()
            run.finish()
        finally:
            sys.stdout = saved
    return {"print_median_us": round(plain, 2), "captured_print_median_us": round(captured, 2)}


def _start_cost(root: str, runs: int = 20) -> dict[str, float]:
    """What starting the services adds to ``init()``: the first time in the process, then the median."""
    import statistics

    from mlop import _init

    real = _init.start_services
    took: list[float] = []

    def timed(op: Any) -> Any:
        start = time.perf_counter()
        try:
            return real(op)
        finally:
            took.append(time.perf_counter() - start)

    _init.start_services = timed
    try:
        for _ in range(runs):
            mlop.init(project="bench", dir=root, mode="offline").finish()
    finally:
        _init.start_services = real
    return {
        "services_start_first_ms": round(took[0] * 1000, 1),
        "services_start_median_ms": round(statistics.median(took[1:]) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--prints", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        start = _start_cost(root)  # first: it measures the cold start
        _one(root, 0.5, args.interval)  # warm up: imports, NVML, the first store
        baseline = _one(root, args.seconds, None)
        monitored = _one(root, args.seconds, args.interval)
        prints = _print_cost(root, args.prints)
    samples = max(monitored["samples"], 1)
    thread_per_sample = monitored["monitor_thread_cpu_s"] / samples
    extra_per_sample = max(monitored["process_cpu_s"] - baseline["process_cpu_s"], 0.0) / samples
    worst = max(thread_per_sample, extra_per_sample)
    result = {
        "interval_measured_s": args.interval,
        "seconds": args.seconds,
        "samples": monitored["samples"],
        "keys_per_sample": monitored["keys"],
        "monitor_thread_ms_per_sample": round(thread_per_sample * 1000, 3),
        "process_extra_ms_per_sample": round(extra_per_sample * 1000, 3),
        "baseline_process_cpu_s": round(baseline["process_cpu_s"], 4),
        "monitored_process_cpu_s": round(monitored["process_cpu_s"], 4),
        "default_interval_s": DEFAULT_INTERVAL,
        "percent_of_one_core_at_default_interval": round(100 * worst / DEFAULT_INTERVAL, 4),
        "target_percent": TARGET_PERCENT,
        "within_target": 100 * worst / DEFAULT_INTERVAL <= TARGET_PERCENT,
        **prints,
        **start,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
