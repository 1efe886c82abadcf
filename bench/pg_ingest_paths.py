"""How metric points go into PostgreSQL: binary COPY against INSERT ... unnest and executemany (issue 21).

Run: .venv/bin/python bench/pg_ingest_paths.py [--points 200000] [--batch 10000]

A throwaway cluster (tests/pgcluster.py: initdb, pg_ctl; fsync off, as in the tests), one connection, the
backend's own ``metrics`` table and row packing (``mlop_server._pg_writes.pack_rows``). For each way: rows
per second (wall, best of two) and the CPU seconds the PostgreSQL backend process spent per million rows
(which a loaded machine does not inflate). Also binary COPY into the same table without its primary key,
to show what the index costs. Prints one JSON document; figures in docs/deploy.md ("PostgreSQL").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import psycopg

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from pgcluster import PgCluster, find_bindir

from mlop_server._pg_writes import pack_rows

TABLE = (
    "CREATE TABLE m (run_id bigint NOT NULL, series_id bigint NOT NULL, step bigint NOT NULL, "
    "seq bigint NOT NULL, time bigint NOT NULL, value double precision NOT NULL{key})"
)
HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
TRAILER = b"\xff\xff"


def copy_binary(conn: psycopg.Connection[Any], start: int, steps: np.ndarray, values: np.ndarray) -> None:
    payload = pack_rows(1, 1, start, steps.tobytes(), steps.tobytes(), values.tobytes())
    with conn.cursor() as cur, cur.copy(b"COPY m FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(HEADER + payload + TRAILER)


def unnest_insert(conn: psycopg.Connection[Any], start: int, steps: np.ndarray, values: np.ndarray) -> None:
    conn.execute(
        b"INSERT INTO m SELECT 1, 1, s, q, t, v "
        b"FROM unnest(%s::int8[], %s::int8[], %s::int8[], %s::float8[]) AS x(s, q, t, v)",
        (steps.tolist(), (steps + (start << 32)).tolist(), steps.tolist(), values.tolist()),
    )


def executemany(conn: psycopg.Connection[Any], start: int, steps: np.ndarray, values: np.ndarray) -> None:
    with conn.cursor() as cur:
        rows = zip(
            steps.tolist(), (steps + (start << 32)).tolist(), steps.tolist(), values.tolist(), strict=True
        )
        cur.executemany(b"INSERT INTO m VALUES (1, 1, %s, %s, %s, %s)", list(rows))


Way = Callable[[psycopg.Connection[Any], int, np.ndarray, np.ndarray], None]


def measure(url: str, way: Way, key: str, points: int, batch: int, repeat: int) -> dict[str, float]:
    best: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        backend = psutil.Process(conn.info.backend_pid)
        for _ in range(repeat):
            conn.execute(b"DROP TABLE IF EXISTS m")
            conn.execute(TABLE.format(key=key).encode())
            cpu0, wall0 = sum(backend.cpu_times()[:2]), time.perf_counter()
            for start in range(0, points, batch):
                steps = np.arange(start, start + batch, dtype="<i8")
                with conn.transaction():
                    way(conn, start, steps, np.random.default_rng(start).random(batch))
            wall = time.perf_counter() - wall0
            cpu = sum(backend.cpu_times()[:2]) - cpu0
            if not best or wall < best["seconds"]:
                best = {"seconds": round(wall, 3), "rows_per_s": round(points / wall),
                        "pg_cpu_s_per_million": round(cpu / points * 1e6, 2)}  # fmt: skip
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args()
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL is not installed (initdb not found)")
    pk = ", PRIMARY KEY (run_id, series_id, step, seq)"
    with PgCluster(bindir) as cluster:
        url = cluster.create_database()
        out = {
            "points": args.points,
            "batch": args.batch,
            "load_average": [round(x, 1) for x in psutil.getloadavg()],
            "copy_binary": measure(url, copy_binary, pk, args.points, args.batch, 2),
            "copy_binary_without_primary_key": measure(url, copy_binary, "", args.points, args.batch, 2),
            "insert_select_unnest": measure(url, unnest_insert, pk, args.points, args.batch, 2),
            "executemany_insert": measure(url, executemany, pk, args.points, args.batch, 1),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
