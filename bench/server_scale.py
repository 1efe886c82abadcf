"""Team scale (issue 21): ingest, a 10M-point read, a 10,000-run list, database size; SQLite and PostgreSQL.

Run: .venv/bin/python bench/server_scale.py [--values 2000000] [--read-points 10000000] [--runs 10000]

Both backends in one run, each a real server process (mlop_server.testing.ServerProcess) on 127.0.0.1; the
PostgreSQL cluster is a throwaway one (tests/pgcluster.py: initdb, pg_ctl; fsync off, as in the tests).

- Ingest: ``--values`` metric values per configuration, in NDJSON batches of 1,000 lines x 10 keys (the
  protocol's ``/ingest/metrics``), sent by 1, 4 and 16 client processes (each its own run, as concurrent
  training runs are), to 1 and 2 server processes (``--workers 2``; PostgreSQL only: SQLite keeps one).
  Besides wall figures: the CPU seconds of the server processes and of PostgreSQL, which a loaded
  machine does not inflate.
- Read: one key of ``--read-points`` points answered with ``max_points=1000`` (median of ``--repeat``).
  The series is ingested over HTTP into the SQLite server, then copied into PostgreSQL with
  ``mlop server migrate-data`` (whose speed is reported too); both servers then answer the same read.
- Runs list: ``--runs`` runs in one project, the first page (``GET /api/runs?project=P&limit=50``; a
  server whose runs list is not paginated answers all of them, and the output says which).
- Database size per million points: the SQLite file after the read series only, and PostgreSQL's
  ``metrics`` table with its index after the copy.
Prints one JSON document; figures in bench/README.md ("Team scale (issue 21)").
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil

from mlop_server.testing import ServerProcess

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from pgcluster import PgCluster, find_bindir

LINES = 1000
KEYS = 10
T0 = 1_795_870_984_866


def make_batches(count: int) -> list[bytes]:
    """``count`` batches of LINES lines x KEYS keys; batch ``b`` holds steps ``b * LINES ...``."""
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


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its children (a server's workers, PostgreSQL's backends)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
        except psutil.NoSuchProcess:
            pass
    return total


def _client(url: str, key: str, run_id: int, batches: list[bytes], go: Any, out: Any) -> None:
    statuses: dict[int, int] = {}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=300) as c:
        c.get("/health")  # connect before the clock starts
        go.wait()
        for body in batches:
            answer = c.post(
                "/ingest/metrics",
                content=body,
                headers={"Content-Type": "application/x-ndjson", "X-Run-Id": str(run_id)},
            )
            statuses[answer.status_code] = statuses.get(answer.status_code, 0) + 1
    out.put(statuses)


def ingest(server: ServerProcess, clients: int, batches: list[bytes], pg_pid: int | None) -> dict[str, Any]:
    """Send ``batches`` from ``clients`` processes, each to a run of its own; returns the figures."""
    headers = {"Authorization": f"Bearer {server.key}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as c:
        runs = [
            c.post("/api/runs/create", json={"runName": f"c{i}", "projectName": "ingest"}).json()["runId"]
            for i in range(clients)
        ]
    ctx = multiprocessing.get_context("fork")
    go, out = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_client, args=(server.url, server.key, runs[i], batches[i::clients], go, out))
        for i in range(clients)
    ]
    for proc in procs:
        proc.start()
    time.sleep(1.0)  # every client connected and waiting
    cpu0 = tree_cpu(server.pid)
    db0 = tree_cpu(pg_pid) if pg_pid else 0.0
    start = time.perf_counter()
    go.set()
    statuses: dict[str, int] = {}
    for _ in procs:
        for code, n in out.get(timeout=900).items():
            statuses[str(code)] = statuses.get(str(code), 0) + n
    wall = time.perf_counter() - start
    for proc in procs:
        proc.join()
    server_cpu = tree_cpu(server.pid) - cpu0
    db_cpu = (tree_cpu(pg_pid) - db0) if pg_pid else 0.0
    values = len(batches) * LINES * KEYS
    return {
        "clients": clients,
        "values": values,
        "statuses": statuses,
        "wall_s": round(wall, 2),
        "values_per_s": round(values / wall),
        "server_cpu_s": round(server_cpu, 2),
        "db_cpu_s": round(db_cpu, 2),
        "values_per_cpu_s": round(values / (server_cpu + db_cpu)) if server_cpu + db_cpu else None,
        "load_avg": round(os.getloadavg()[0], 1),
    }


def postmaster_pid(cluster: PgCluster) -> int:
    return int((cluster.data / "postmaster.pid").read_text().split()[0])


@contextmanager
def serve(folder: Path, db: str | None, workers: int = 1) -> Iterator[ServerProcess]:
    extra = ["--workers", str(workers)] if workers > 1 else []
    env = {"MLOP_SERVER_DB": db} if db else None  # the URL (with its password) stays out of the arguments
    with ServerProcess(folder, extra_args=extra, env=env, startup_timeout=120) as server:
        yield server


def timed(client: httpx.Client, url: str, params: dict[str, Any], repeat: int) -> dict[str, Any]:
    samples = []
    answer = client.get(url, params=params)  # warm
    for _ in range(repeat):
        start = time.perf_counter()
        answer = client.get(url, params=params)
        samples.append((time.perf_counter() - start) * 1000)
        assert answer.status_code == 200, answer.text
    body = answer.json()
    items = body if isinstance(body, list) else body.get("runs", body.get("items", []))
    samples.sort()
    return {
        "median_ms": round(statistics.median(samples), 1),
        "p90_ms": round(samples[int(len(samples) * 0.9)], 1),
        "min_ms": round(samples[0], 1),
        "items_answered": len(items),
    }


def fill_read_data(server: ServerProcess, points: int, runs: int) -> tuple[int, dict[str, Any]]:
    """One run with key ``big`` of ``points`` points, then ``runs`` runs in project ``many``."""
    headers = {"Authorization": f"Bearer {server.key}"}
    info: dict[str, Any] = {}
    with httpx.Client(base_url=server.url, headers=headers, timeout=300) as c:
        run_id = c.post("/api/runs/create", json={"runName": "big", "projectName": "read"}).json()["runId"]
        start = time.perf_counter()
        for first in range(0, points, 20_000):
            body = "".join(
                f'{{"time": {T0 + s}, "step": {s}, "data": {{"big": {((s * 7919) % 10007) / 10007!r}}}}}\n'
                for s in range(first, min(points, first + 20_000))
            ).encode()
            answer = c.post("/ingest/metrics", content=body, headers={"X-Run-Id": str(run_id)})
            assert answer.status_code == 200, answer.text
        info["ingest_one_key_s"] = round(time.perf_counter() - start, 1)
        c.post("/api/runs/status/update", json={"runId": run_id, "status": "COMPLETED"})
    info["sqlite_mb_after_series"] = round((server.data_dir / "mlop-server.db").stat().st_size / 2**20, 1)
    counter = iter(range(runs))
    lock = threading.Lock()

    def create() -> None:
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as c:
            while True:
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                c.post(
                    "/api/runs/create",
                    json={"runName": f"r{n}", "projectName": "many", "config": json.dumps({"lr": n})},
                )

    start = time.perf_counter()
    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    info["create_runs_s"] = round(time.perf_counter() - start, 1)
    return run_id, info


def reads(server: ServerProcess, run_id: int, repeat: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {server.key}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=300) as c:
        return {
            "health_baseline": timed(c, "/health", {}, repeat),
            "series_max_points_1000": timed(
                c, f"/api/runs/{run_id}/metrics", {"key": "big", "max_points": 1000}, max(3, repeat // 4)
            ),
            "runs_first_page": timed(c, "/api/runs", {"project": "many", "limit": 50}, repeat),
        }


def pg_sizes(url: str) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT pg_total_relation_size('metrics'), (SELECT COUNT(*) FROM metrics), "
            "pg_database_size(current_database())"
        ).fetchone()
    assert row is not None
    return {"metrics_mb": round(row[0] / 2**20, 1), "points": row[1], "database_mb": round(row[2] / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=2_000_000, help="values per ingest configuration")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--read-points", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--skip-ingest", action="store_true")
    args = parser.parse_args()
    clients = [int(n) for n in args.clients.split(",")]
    batches = make_batches(max(1, args.values // (LINES * KEYS)))
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL (initdb, pg_ctl) is needed: apt-get install postgresql")
    result: dict[str, Any] = {"load_avg_before": os.getloadavg(), "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp, PgCluster(bindir) as cluster:
        pg = postmaster_pid(cluster)
        folder = Path(tmp)
        if not args.skip_ingest:
            rows = []
            for backend, workers in (("sqlite", 1), ("postgresql", 1), ("postgresql", 2)):
                db = cluster.create_database() if backend == "postgresql" else None
                with serve(folder / f"ingest-{backend}-{workers}", db, workers) as server:
                    for n in clients:
                        row = ingest(server, n, batches, pg if db else None)
                        rows.append({"backend": backend, "processes": workers, **row})
                        print(json.dumps(rows[-1]), file=sys.stderr)
            result["ingest"] = rows
        old = folder / "read-sqlite"
        with serve(old, None) as server:
            run_id, info = fill_read_data(server, args.read_points, args.runs)
            result["fill"] = info
            result["sqlite_reads"] = reads(server, run_id, args.repeat)
        db = cluster.create_database()
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "mlop_server", "migrate-data", "--from", str(old), "--files",
             str(folder / "read-pg" / "files")],
            env={**os.environ, "MLOP_SERVER_DB": db}, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        seconds = time.perf_counter() - start
        result["migrate_data"] = {"s": round(seconds, 1), "points_per_s": round(args.read_points / seconds)}
        result["pg_size"] = pg_sizes(db)
        with serve(folder / "read-pg", db) as server:
            result["pg_reads"] = reads(server, run_id, args.repeat)
        sqlite_mb = result["fill"]["sqlite_mb_after_series"]
        result["mb_per_million_points"] = {
            "sqlite": round(sqlite_mb / (args.read_points / 1e6), 1),
            "postgresql_metrics_table": round(result["pg_size"]["metrics_mb"] / (args.read_points / 1e6), 1),
        }
    result["load_avg_after"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
