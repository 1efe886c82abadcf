"""The online client against a local mlop-server process: log() cost, delivery rate, finish() time.

Run: .venv/bin/python bench/online_client.py [--steps 200000] [--width 10] [--rounds 3]
Prints one JSON document; bench/README.md ("Online client") holds the latest figures.

- ``log_ratio``: the median cost of ``run.log()`` online over offline, measured in the same process,
  in alternating rounds (offline, online, offline, ...), each with its own run.
- ``sync``: an offline run of ``steps`` x ``width`` values sent by ``mlop sync``'s code (the uploader,
  run once): values per second from the start of the sync to the run's final status on the server.
- ``live``: ``steps`` x ``width`` values logged online as fast as the loop goes; how long ``finish()``
  takes after the last ``log()``, and whether every value is on the server then.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

import mlop
from mlop._online._options import Options
from mlop._online._uploader import Uploader
from mlop._settings import Settings
from mlop_server.testing import ServerProcess


def _log_loop(run: mlop.Run, steps: int, width: int) -> list[int]:
    keys = [f"train/metric_{k}" for k in range(width)]
    clock = time.perf_counter_ns
    samples = [0] * steps
    for i in range(steps):
        data = {k: i * 0.001 + j for j, k in enumerate(keys)}
        start = clock()
        run.log(data)
        samples[i] = clock() - start
    return samples


def _count(api: httpx.Client, project: str, key: str) -> tuple[int, str]:
    (found,) = api.get("/api/runs", params={"project": project}).json()
    answer = api.get(f"/api/runs/{found['id']}/metrics", params={"key": key})
    # The server downsamples a long series by default (100,000 points); X-Total-Points is what it holds.
    return int(answer.headers.get("X-Total-Points", len(answer.json()))), found["status"]


def bench_log_ratio(server: ServerProcess, root: str, steps: int, width: int, rounds: int) -> dict[str, Any]:
    medians: dict[str, list[float]] = {"offline": [], "online": []}
    for index in range(rounds):
        for mode in ("offline", "online"):
            run = mlop.init(
                project=f"ratio-{mode}-{index}",
                dir=root,
                mode=mode,
                host=server.url,
                api_key=server.key,
                disable_system_metrics=True,
                disable_console=True,
            )
            samples = sorted(_log_loop(run, steps, width))
            run.finish()
            medians[mode].append(samples[len(samples) // 2] / 1000)
    offline, online = statistics.median(medians["offline"]), statistics.median(medians["online"])
    return {
        "steps": steps,
        "offline_median_us": offline,
        "online_median_us": online,
        "ratio": online / offline,
        "rounds_us": medians,
    }


def bench_sync(server: ServerProcess, api: httpx.Client, root: str, steps: int, width: int) -> dict[str, Any]:
    run = mlop.init(
        project="sync", dir=root, mode="offline", disable_system_metrics=True, disable_console=True
    )
    _log_loop(run, steps, width)
    run.finish()
    options = Options(urls=Settings(host=server.url).urls(), api_key=server.key)
    uploader = Uploader(Path(run.dir), options, once=True)
    start = time.perf_counter()
    cpu = time.process_time()
    complete = uploader.run()
    seconds = time.perf_counter() - start
    cpu_s = time.process_time() - cpu
    uploader.close()
    points, status = _count(api, "sync", "train/metric_0")
    return {
        "values": steps * width,
        "seconds": seconds,
        "values_per_s": steps * width / seconds,
        "client_cpu_s": cpu_s,
        "complete": complete and points == steps and status == "COMPLETED",
    }


def bench_live(server: ServerProcess, api: httpx.Client, root: str, steps: int, width: int) -> dict[str, Any]:
    run = mlop.init(
        project="live",
        dir=root,
        host=server.url,
        api_key=server.key,
        disable_system_metrics=True,
        disable_console=True,
    )
    start = time.perf_counter()
    _log_loop(run, steps, width)
    last = time.perf_counter()
    run.finish()
    finish_s = time.perf_counter() - last
    points, status = _count(api, "live", "train/metric_0")
    return {
        "values": steps * width,
        "log_loop_s": last - start,
        "finish_s": finish_s,
        "delivered_values_per_s": steps * width / (last - start + finish_s),
        "complete": points == steps and status == "COMPLETED",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--width", type=int, default=10)
    parser.add_argument("--ratio-steps", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=("ratio", "sync", "live"), action="append", help="run only these")
    args = parser.parse_args()
    parts = set(args.only or ("ratio", "sync", "live"))
    for name in [k for k in os.environ if k.startswith("MLOP_")]:
        del os.environ[name]
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLOP_CONFIG_DIR"] = str(Path(tmp) / "config")
        with (
            ServerProcess(Path(tmp) / "server") as server,
            httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}) as api,
        ):
            out: dict[str, Any] = {"cpus": os.cpu_count(), "load_avg": os.getloadavg()[0]}
            if "ratio" in parts:
                out["log_ratio"] = bench_log_ratio(server, tmp, args.ratio_steps, args.width, args.rounds)
            if "sync" in parts:
                out["sync"] = bench_sync(server, api, tmp, args.steps, args.width)
            if "live" in parts:
                out["live"] = bench_live(server, api, tmp, args.steps, args.width)
            out["load_avg_after"] = os.getloadavg()[0]
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
