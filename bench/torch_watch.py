"""What ``run.watch(model, log="all")`` costs a training step of a ~10M-parameter MLP on the CPU.

Run: .venv/bin/python bench/torch_watch.py [--rounds 12] [--block 10] [--batch 64] [--threads 1]
Prints one JSON document with every figure; bench/README.md holds the latest ones.

Three conditions share one model, optimizer and run, and alternate in short blocks so that the machine's
noise falls on all of them alike: no watch, ``watch(log="all", log_freq=100)`` (its optimizer-step count
carried from block to block, so it logs every 100 of its own steps) and ``watch(log="all", log_freq=1)``.
A step is the forward pass, the backward pass, the optimizer step and a ``run.log`` of the loss. Each step
is timed twice: wall time (``perf_counter``) and the process's CPU time (``process_time``, all threads),
which a loaded machine disturbs far less. Last, the watch's own callbacks on a step that does not log are
timed apart, called directly, since their cost is lost in the noise of a 10M-parameter step.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from typing import Any

import torch

import mlop

WIDTHS = (1024, 2048, 2048, 1024, 1024, 10)


def make_model() -> torch.nn.Module:
    layers: list[torch.nn.Module] = []
    for width_in, width_out in itertools.pairwise(WIDTHS):
        layers += [torch.nn.Linear(width_in, width_out), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])


def steps(model: Any, optimizer: Any, run: Any, count: int, batch: int) -> list[tuple[float, float]]:
    x = torch.randn(batch, WIDTHS[0])
    y = torch.randint(0, WIDTHS[-1], (batch,))
    times = []
    for _ in range(count):
        wall, cpu = time.perf_counter(), time.process_time()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        run.log({"loss": loss.item()})
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    return times


def block(
    model: Any, optimizer: Any, run: Any, count: int, batch: int, blocks: list[tuple[float, float, int]]
) -> list[tuple[float, float]]:
    """``steps``, then wait until mlop's background workers have stored everything the block logged.

    The block's wall and CPU time up to then (all threads, the workers' counting included) go to
    ``blocks``: what the condition costs in all, so that no work is left to fall on the next condition.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    times = steps(model, optimizer, run, count, batch)
    sink = run._sink  # the run's media workers (private): the bench needs to know when they are idle
    while sink.pending_bytes:
        time.sleep(0.001)
    blocks.append((time.perf_counter() - wall, time.process_time() - cpu, count))
    return times


def summary(times: list[tuple[float, float]], base: dict[str, float] | None = None) -> dict[str, float]:
    out: dict[str, float] = {"steps": len(times)}
    for index, name in enumerate(("wall", "cpu")):
        values = [t[index] for t in times]
        out[f"{name}_median_ms"] = round(statistics.median(values) * 1000, 2)
        out[f"{name}_mean_ms"] = round(statistics.fmean(values) * 1000, 2)
        if base is not None:
            out[f"{name}_median_ratio"] = round(out[f"{name}_median_ms"] / base[f"{name}_median_ms"], 4)
    return out


def sustained(
    blocks: list[tuple[float, float, int]], base: dict[str, float] | None = None
) -> dict[str, float]:
    """Per step over whole blocks, background work included: the median of the blocks' averages."""
    out: dict[str, float] = {}
    for index, name in enumerate(("wall", "cpu")):
        out[f"{name}_per_step_ms"] = round(statistics.median(b[index] / b[2] for b in blocks) * 1000, 2)
        if base is not None:
            out[f"{name}_ratio"] = round(out[f"{name}_per_step_ms"] / base[f"{name}_per_step_ms"], 4)
    return out


def hook_cost(run: Any, calls: int = 100_000) -> dict[str, float]:
    """The watch's own callbacks on a step that does not log, called directly (best of five runs)."""
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    handle = run.watch(model, log="all", log_freq=10**9, log_graph=False)
    handle.steps = 1  # past step 0, the only one that logs
    args: tuple[Any, ...] = ()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            handle._on_forward(model, args)
            handle._on_step(optimizer, args, {})
        best = min(best, (time.perf_counter() - start) / calls)
    run.unwatch(model)
    return {"forward_and_step_hooks_us": round(best * 1e6, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--block", type=int, default=10, help="steps per condition per round")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    params = sum(p.numel() for p in model.parameters())
    results: dict[str, list[tuple[float, float]]] = {"none": [], "freq100": [], "between": [], "freq1": []}
    blocks: dict[str, list[tuple[float, float, int]]] = {"none": [], "freq100": [], "freq1": []}
    counted = 0  # the log_freq=100 watch's optimizer steps so far
    with tempfile.TemporaryDirectory() as root:
        run = mlop.init(project="bench", dir=root, disable_console=True)
        steps(model, optimizer, run, 5, args.batch)  # warm-up
        for _ in range(args.rounds):
            results["none"] += block(model, optimizer, run, args.block, args.batch, blocks["none"])
            handle = run.watch(model, log="all", log_freq=100, log_graph=False)
            handle.steps = counted
            timed = block(model, optimizer, run, args.block, args.batch, blocks["freq100"])
            results["freq100"] += timed
            results["between"] += [t for i, t in enumerate(timed) if (counted + i) % 100]
            counted = handle.steps
            run.unwatch(model)
            run.watch(model, log="all", log_freq=1, log_graph=False)
            results["freq1"] += block(model, optimizer, run, args.block, args.batch, blocks["freq1"])
            run.unwatch(model)
        between = hook_cost(run)
        run.finish()
        histograms = sum(1 for _ in mlop.open_run(run.dir).data())
    base = summary(results["none"])
    whole = sustained(blocks["none"])
    report = {
        "parameters": params,
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "histograms_logged": histograms,
        "no_watch": base,
        "log_all_freq100": summary(results["freq100"], base),
        "log_all_freq100_between_logging_steps": summary(results["between"], base),
        "log_all_freq1": summary(results["freq1"], base),
        "blocks_with_background_work": {
            "no_watch": whole,
            "log_all_freq100": sustained(blocks["freq100"], whole),
            "log_all_freq1": sustained(blocks["freq1"], whole),
        },
        "hooks_on_a_step_that_does_not_log": between,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
