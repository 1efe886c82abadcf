"""mlop-server ingest: metric values per second from NDJSON batches of 1,000 lines x 10 keys, and memory.

Run: .venv/bin/python bench/server_ingest.py [--values 3000000] [--clients 2]
     .venv/bin/python bench/server_ingest.py --values 10000000 --memory   (RSS while ingesting 10M values)

Starts a real server process (mlop_server.testing.ServerProcess) on 127.0.0.1 with a fresh data folder.
Baseline, in the same run: the same batches sent to a run id that does not exist, so the server reads,
parses and checks every line and then refuses at the storage step (everything but the write).
Prints one JSON document; bench/README.md holds the latest figures.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from typing import Any

import httpx
import psutil

from mlop_server.testing import ServerProcess

LINES = 1000
KEYS = 10
T0 = 1_795_870_984_866


def make_batches(count: int) -> list[bytes]:
    """``count`` distinct batches of LINES lines x KEYS keys (steps continue from batch to batch)."""
    keys = [f"train/metric_{k}" for k in range(KEYS)]
    out = []
    for b in range(count):
        lines = []
        for i in range(LINES):
            step = b * LINES + i
            data = ", ".join(f'"{k}": {step * 0.001 + j!r}' for j, k in enumerate(keys))
            lines.append(f'{{"time": {T0 + step}, "step": {step}, "data": {{{data}}}}}\n')
        out.append("".join(lines).encode())
    return out


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def send(server: ServerProcess, run_id: int, batches: list[bytes], total: int, clients: int,
         on_batch: Any = None) -> dict[str, Any]:  # fmt: skip
    """POST ``total`` batches (cycling ``batches``) from ``clients`` threads; returns the timing."""
    counter = iter(range(total))
    lock = threading.Lock()
    statuses: dict[int, int] = {}
    proc = psutil.Process(server.pid)

    def worker() -> None:
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}, timeout=120
        ) as c:
            while True:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                answer = c.post(
                    "/ingest/metrics",
                    content=batches[n % len(batches)],
                    headers={"Content-Type": "application/x-ndjson", "X-Run-Id": str(run_id)},
                )
                with lock:
                    statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
                if on_batch is not None:
                    on_batch(n)

    cpu0, wall0, client0 = cpu_seconds(proc), time.perf_counter(), time.process_time()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - wall0
    server_cpu = cpu_seconds(proc) - cpu0
    values = total * LINES * KEYS
    return {
        "batches": total,
        "values": values,
        "statuses": statuses,
        "wall_s": round(wall, 3),
        "values_per_s": round(values / wall),
        "server_cpu_s": round(server_cpu, 3),
        "values_per_server_cpu_s": round(values / server_cpu) if server_cpu else None,
        "client_cpu_s": round(time.process_time() - client0, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=3_000_000)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--memory", action="store_true", help="sample the server's RSS while ingesting")
    args = parser.parse_args()
    total = max(1, args.values // (LINES * KEYS))
    batches = make_batches(50)
    result: dict[str, Any] = {"load_avg_before": os.getloadavg()[0], "clients": args.clients}
    with tempfile.TemporaryDirectory() as tmp, ServerProcess(tmp) as server:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}) as c:
            run_id = c.post("/api/runs/create", json={"runName": "bench", "projectName": "bench"}).json()[
                "runId"
            ]
        baseline_n = max(10, total // 10)
        result["baseline_no_write"] = send(server, 10**9, batches, baseline_n, args.clients)
        proc = psutil.Process(server.pid)
        rss: list[tuple[int, float]] = []

        def sample(n: int) -> None:
            if args.memory and n % 50 == 0:
                rss.append((n * LINES * KEYS, proc.memory_info().rss / 2**20))

        result["ingest"] = send(server, run_id, batches, total, args.clients, sample)
        with httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}, timeout=120
        ) as c:
            points = c.get(
                f"/api/runs/{run_id}/metrics", params={"key": "train/metric_3", "max_points": 2}
            ).json()
            result["stored_check"] = {"min_max_points": points}
        if args.memory:
            after_warmup = [mb for v, mb in rss if v >= args.values // 10]
            result["rss_mb"] = {
                "samples": [(v, round(mb, 1)) for v, mb in rss[:: max(1, len(rss) // 10)]],
                "after_first_10pct_min": round(min(after_warmup), 1) if after_warmup else None,
                "after_first_10pct_max": round(max(after_warmup), 1) if after_warmup else None,
            }
        result["database_mb"] = round(os.path.getsize(os.path.join(tmp, "mlop-server.db")) / 2**20, 1)
    result["load_avg_after"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
