"""mlop-server read: a 1,000,000-point series answered with max_points=2000.

Run: .venv/bin/python bench/server_read.py [--points 1000000] [--repeat 20]

Starts a real server process, ingests one key with ``--points`` points (batches of 10,000 lines), then
times ``GET /api/runs/{id}/metrics?key=K&max_points=2000`` from a client on 127.0.0.1 (whole request:
HTTP, read, downsample, JSON). Baselines in the same run: ``GET /health`` (the HTTP floor) and the same
request on a 2,000-point series (no downsampling work). Besides wall times, the server's CPU time per
request (psutil), which a loaded machine does not inflate. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from typing import Any

import httpx
import psutil

from mlop_server.testing import ServerProcess

T0 = 1_795_870_984_866


def timed(
    client: httpx.Client, url: str, params: dict[str, Any], repeat: int, server: psutil.Process
) -> dict[str, Any]:
    samples = []
    size = 0
    cpu = server.cpu_times()
    for _ in range(repeat):
        start = time.perf_counter()
        answer = client.get(url, params=params)
        samples.append((time.perf_counter() - start) * 1000)
        assert answer.status_code == 200, answer.text
        size = len(answer.json()) if isinstance(answer.json(), list) else 1
    after = server.cpu_times()
    samples.sort()
    return {
        "server_cpu_ms_per_request": round(
            (after.user + after.system - cpu.user - cpu.system) * 1000 / repeat, 1
        ),
        "median_ms": round(statistics.median(samples), 2),
        "p90_ms": round(samples[int(len(samples) * 0.9)], 2),
        "min_ms": round(samples[0], 2),
        "points_answered": size,
    }


def ingest(client: httpx.Client, run_id: int, key: str, points: int) -> None:
    for start in range(0, points, 10_000):
        body = "".join(
            f'{{"time": {T0 + s}, "step": {s}, "data": {{"{key}": {((s * 7919) % 10007) / 10007!r}}}}}\n'
            for s in range(start, min(points, start + 10_000))
        ).encode()
        answer = client.post("/ingest/metrics", content=body, headers={"X-Run-Id": str(run_id)})
        assert answer.status_code == 200, answer.text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    result: dict[str, Any] = {"load_avg_before": os.getloadavg()[0], "points": args.points}
    with tempfile.TemporaryDirectory() as tmp, ServerProcess(tmp) as server:
        headers = {"Authorization": f"Bearer {server.key}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=300) as c:
            run_id = c.post("/api/runs/create", json={"runName": "read", "projectName": "bench"}).json()[
                "runId"
            ]
            start = time.perf_counter()
            ingest(c, run_id, "big", args.points)
            ingest(c, run_id, "small", 2000)
            result["ingest_s"] = round(time.perf_counter() - start, 2)
            url = f"/api/runs/{run_id}/metrics"
            c.get(url, params={"key": "big", "max_points": 2000})  # warm the reader thread's connection
            proc = psutil.Process(server.pid)
            result["health_baseline"] = timed(c, "/health", {}, args.repeat, proc)
            small = {"key": "small", "max_points": 2000}
            result["small_2000_points_baseline"] = timed(c, url, small, args.repeat, proc)
            result["big_max_points_2000"] = timed(
                c, url, {"key": "big", "max_points": 2000}, args.repeat, proc
            )
            result["big_full_read"] = timed(c, url, {"key": "big"}, 2, proc)
    result["load_avg_after"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
