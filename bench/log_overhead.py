"""What run.log() costs the training loop, beside a baseline that only queues a copy of each dict.

Run: .venv/bin/python bench/log_overhead.py [--steps 200000] [--wide-steps 2000] [--work-steps 200000]
[--memory-steps 1000000] [--only tail]
Prints one JSON document with every figure; bench/README.md holds the latest ones.

The tail section times every call of four workloads (10 floats and 1,000 keys per step, in a tight loop
and in a loop that holds the interpreter lock for 1 ms of pure-Python work per step, as a training step
that does its work in Python would): median, p99 to p99.99, the slowest call, the share of the loop's
wall time spent inside log(), and, with work, the slowest whole step (a stall outside log(), such as a
background thread holding the interpreter lock, shows there). Beside these wall-clock figures, which a
loaded machine swamps, it gives mlop's own parts of a slow call in thread CPU time, which preemption by
other processes does not inflate: the slowest packing turn on the loop's thread, the writer thread's
longest stretch holding the interpreter lock outside SQLite (the loop waits that long when it wants the
lock back), and how often and how long log() waited for the writer to keep pace.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
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


def _tail(samples: list[int]) -> dict[str, float]:
    """Median to maximum of call times in ns, as microseconds."""
    ordered = sorted(samples)
    n = len(ordered)
    return {
        "median_us": ordered[n // 2] / 1000,
        "p99_us": ordered[min(n - 1, int(n * 0.99))] / 1000,
        "p99_9_us": ordered[min(n - 1, int(n * 0.999))] / 1000,
        "p99_99_us": ordered[min(n - 1, int(n * 0.9999))] / 1000,
        "max_us": ordered[-1] / 1000,
        # Which call was slowest (0: the first, which checks every key once), and the slowest of the rest.
        "max_at_call": samples.index(ordered[-1]),
        "max_after_first_us": max(samples[1:], default=0) / 1000,
    }


def _spin(seconds: float) -> None:
    """Work that holds the interpreter lock, as a step of pure-Python work does."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _tail_loop(
    call: Callable[[dict[str, float]], Any], steps: int, width: int, work: float
) -> tuple[list[int], list[int], float]:
    """Call ``call`` once per step; returns the call times, the step times (ns) and the loop's wall time."""
    keys = [f"train/metric_{k}" for k in range(width)]
    clock = time.perf_counter_ns
    calls = [0] * steps
    step_times = [0] * steps
    loop_start = clock()
    for i in range(steps):
        begin = clock()
        if work:
            _spin(work)
        data = {k: i * 0.001 + j for j, k in enumerate(keys)}
        start = clock()
        call(data)
        end = clock()
        calls[i] = end - start
        step_times[i] = end - begin
    return calls, step_times, (clock() - loop_start) / 1e9


class _TimedDB:
    """The store's connection, noting the thread CPU time at each statement's start and end."""

    def __init__(self, db: Any, marks: dict[str, int]) -> None:
        self._db = db
        self._marks = marks

    def execute(self, *args: Any) -> Any:
        self._marks["exec_start"] = time.thread_time_ns()
        try:
            return self._db.execute(*args)
        finally:
            self._marks["exec_end"] = time.thread_time_ns()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def _instrument(run: Any) -> dict[str, list[int]]:
    """Wrap the run's writer to record, in thread CPU ns, its turns on the loop and its lock-held stretches.

    ``turn``: each packing turn on the loop's thread, less the wait for the writer (``pace``, wall ns, for
    waits over 1 ms). ``writer``: the writer thread's Python work before its first statement of a write and
    after its last, where it holds the interpreter lock (SQLite's own copy of the bound bytes is not in it).
    """
    writer, cpu = run._writer, time.thread_time_ns
    out: dict[str, list[int]] = {"turn": [], "pace": [], "writer": []}
    marks: dict[str, int] = {}
    tick, keep_pace, write = writer.tick, writer._keep_pace, writer._write
    in_pace = [0]

    def timed_keep_pace() -> None:
        start, wall = cpu(), time.perf_counter_ns()
        keep_pace()
        in_pace[0] = cpu() - start
        if (waited := time.perf_counter_ns() - wall) > 1_000_000:
            out["pace"].append(waited)

    def timed_tick() -> None:
        in_pace[0] = 0
        start = cpu()
        tick()
        out["turn"].append(cpu() - start - in_pace[0])

    def timed_write() -> None:
        if threading.current_thread().name != "mlop-writer":  # a flush on the loop's thread (finish)
            write()
            return
        marks.clear()
        start = cpu()
        write()
        end = cpu()
        if "exec_start" in marks:
            out["writer"] += [marks["exec_start"] - start, end - marks["exec_end"]]

    writer.tick, writer._keep_pace, writer._write = timed_tick, timed_keep_pace, timed_write
    run._store._db = _TimedDB(run._store._db, marks)
    return out


def _own_parts(parts: dict[str, list[int]]) -> dict[str, float]:
    turns, writer, pace = sorted(parts["turn"]), sorted(parts["writer"]), parts["pace"]
    return {
        "turns": len(turns),
        "turn_cpu_p99_us": turns[int(len(turns) * 0.99)] / 1000 if turns else 0.0,
        "turn_cpu_max_us": turns[-1] / 1000 if turns else 0.0,
        "writer_lock_held_cpu_max_us": writer[-1] / 1000 if writer else 0.0,
        "waits_for_writer_over_1ms": len(pace),
        "wait_for_writer_max_ms": max(pace, default=0) / 1e6,
    }


def _cpu_with_writer() -> float:
    """CPU seconds of this process and of its ended children: the run's writer process counts too.

    The writer process ends (and is reaped) within ``run.finish()``, so a figure taken after finish()
    holds its CPU time: CPU per value is the whole cost of logging, on every core.
    """
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def bench_tail(steps: int, width: int, work: float, root: str) -> dict[str, Any]:
    """One workload's call-time distribution with run.log, and its CPU per value against a no-op call.

    The same loop calling ``queue.put(dict(d))`` first gives the machine's own tail (preemption by other
    processes, timer interrupts) for comparison: on a shared machine a call of a microsecond is sometimes
    descheduled for milliseconds, whatever it does.
    """
    q: queue.SimpleQueue[dict[str, float]] = queue.SimpleQueue()
    base_calls, base_steps, base_wall = _tail_loop(lambda d: q.put(dict(d)), steps, width, work)
    baseline = {**_tail(base_calls), "share_of_loop_in_call": sum(base_calls) / 1e9 / base_wall}
    if work:
        baseline["step_max_ms"] = max(base_steps) / 1e6
    cpu0 = time.process_time()
    _tail_loop(lambda d: None, steps if not work else min(steps, 2_000), width, work)
    loop_cpu = (time.process_time() - cpu0) * (steps / (steps if not work else min(steps, 2_000)))
    run = mlop.init(project="bench", dir=root, disable_system_metrics=True, disable_console=True)
    parts = _instrument(run)
    cpu0 = _cpu_with_writer()
    calls, step_times, wall = _tail_loop(run.log, steps, width, work)
    last = time.perf_counter()
    run.finish()
    finish_s = time.perf_counter() - last
    cpu = _cpu_with_writer() - cpu0 - loop_cpu
    out: dict[str, Any] = {
        "steps": steps,
        "keys": width,
        "work_ms": work * 1000,
        **_tail(calls),
        "share_of_loop_in_log": sum(calls) / 1e9 / wall,
        "finish_s": finish_s,
        "own_parts_cpu": _own_parts(parts),
        "baseline_queue_put": baseline,
    }
    if work:
        out["step_max_ms"] = max(step_times) / 1e6
        out["step_p99_99_ms"] = sorted(step_times)[min(steps - 1, int(steps * 0.9999))] / 1e6
    else:
        out["cpu_us_per_value"] = cpu / (steps * width) * 1e6
    return out


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
    cpu0 = _cpu_with_writer()
    logged = _percentiles(_time_calls(lambda d, i: run.log(d), steps, 10))
    last = time.perf_counter()
    run.finish()
    finish_s = time.perf_counter() - last
    cpu = _cpu_with_writer() - cpu0 - loop_cpu
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
    parser.add_argument("--work-steps", type=int, default=200_000, help="steps of 10 floats with 1 ms work")
    parser.add_argument("--only", choices=["tail"], help="run only the tail section")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        tail = {
            "load_average_before": os.getloadavg(),
            "floats_10_tight": bench_tail(args.steps, 10, 0.0, root),
            "keys_1000_tight": bench_tail(args.wide_steps, 1000, 0.0, root),
            "floats_10_work_1ms": bench_tail(args.work_steps, 10, 0.001, root),
            "keys_1000_work_1ms": bench_tail(args.wide_steps, 1000, 0.001, root),
            "load_average_after": os.getloadavg(),
        }
        if args.only == "tail":
            print(json.dumps({"tail": tail}, indent=2))
            return
        report = {
            "tail": tail,
            "import": bench_import(),
            "dict_of_10": bench_dict_of_10(args.steps, root),
            "keys_1000": bench_wide(args.wide_steps, root),
            "memory": bench_memory(args.memory_steps, root),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
