"""The reads of the PostgreSQL backend: one coroutine per Storage read, answering as the SQLite backend does.

Each takes a pooled connection (autocommit: every read is one statement or a few) and returns what the
matching ``Storage`` method returns. A metric series comes out by binary ``COPY``, parsed by numpy.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import orjson

from mlop_server._blocks import BLOCK, PICK_COLUMNS, STATS_SQL, answerable, bucket_size, pick
from mlop_server._sqlite_writes import RUN_COLUMNS, run_detail, run_summary
from mlop_server._storage import Downsampled, FileRow, Series

if TYPE_CHECKING:
    from psycopg import AsyncConnection

__all__ = [
    "block_points",
    "file_rows",
    "get_file",
    "get_run",
    "last_values",
    "list_projects",
    "list_runs",
    "log_names",
    "logs",
    "metric",
    "series_of",
]

logger = logging.getLogger(__name__)

_FILE_COLUMNS: Final = (
    "f.id, f.run_id, f.key_id, s.name, f.name, f.size, f.file_type, f.time, f.step, f.sample_index, "
    "f.caption, f.uploaded"
)
_DETAIL_COLUMNS: Final = (
    ", config, logger_settings, system_metadata, status_metadata, graph, cancel_requested, last_seen"
)
#: A point as :func:`metric` has the database pack it.
_POINT: Final = np.dtype([("step", ">i8"), ("seq", ">i8"), ("time", ">i8"), ("value", ">f8")])
#: Points one query of :func:`metric` packs at most.
READ_PIECE: Final = 1_000_000


async def _all(conn: AsyncConnection[Any], sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    cur = await conn.execute(sql.encode(), params, binary=True)
    return await cur.fetchall()


def _owner_filter(owner: str | None, column: str = "owner") -> tuple[str, tuple[Any, ...]]:
    return ("", ()) if owner is None else (f" AND {column} = %s", (owner,))


def summary_of(config: str | None) -> dict[str, Any]:
    """A run's ``config["summary"]`` when it is an object, else ``{}`` (as the SQLite backend answers)."""
    try:
        parsed = orjson.loads(config) if config else None
    except orjson.JSONDecodeError:
        return {}
    summary = parsed.get("summary") if isinstance(parsed, dict) else None
    return summary if isinstance(summary, dict) else {}


async def list_projects(conn: AsyncConnection[Any], owner: str | None) -> list[dict[str, Any]]:
    where, params = _owner_filter(owner)
    rows = await _all(
        conn,
        f"SELECT project, COUNT(*), MAX(updated) FROM runs WHERE true{where} "
        "GROUP BY project ORDER BY 3 DESC",
        params,
    )
    return [{"name": name, "runs": count, "updated": updated} for name, count, updated in rows]


async def list_runs(conn: AsyncConnection[Any], project: str, owner: str | None) -> list[dict[str, Any]]:
    where, params = _owner_filter(owner)
    rows = await _all(
        conn,
        f"SELECT {RUN_COLUMNS}, config FROM runs WHERE project = %s{where} ORDER BY id DESC",
        (project, *params),
    )
    return [{**run_summary(row), "summary": summary_of(row[-1])} for row in rows]


async def last_values(
    conn: AsyncConnection[Any], project: str, keys: list[str], owner: str | None
) -> dict[int, dict[str, float]]:
    where, params = _owner_filter(owner, "r.owner")
    rows = await _all(
        conn,
        "SELECT s.run_id, s.name, m.value FROM runs r JOIN series s ON s.run_id = r.id "
        "CROSS JOIN LATERAL (SELECT value FROM metrics WHERE run_id = s.run_id AND series_id = s.id "
        "ORDER BY step DESC, seq DESC LIMIT 1) m "
        f"WHERE r.project = %s{where} AND s.name = ANY(%s)",
        (project, *params, keys),
    )
    out: dict[int, dict[str, float]] = {}
    for run_id, name, value in rows:
        out.setdefault(run_id, {})[name] = float(value)
    return out


async def get_run(conn: AsyncConnection[Any], run_id: int, detail: bool) -> dict[str, Any] | None:
    rows = await _all(
        conn, f"SELECT {RUN_COLUMNS}{_DETAIL_COLUMNS if detail else ''} FROM runs WHERE id = %s", (run_id,)
    )
    if not rows:
        return None
    row = rows[0]
    out = run_summary(row)
    if detail:
        alerts = await _all(
            conn,
            "SELECT timestamp, level, title, body, email, url FROM alerts WHERE run_id = %s ORDER BY id",
            (run_id,),
        )
        out.update(run_detail(row[-7:], alerts))
    return out


async def series_of(conn: AsyncConnection[Any], run_id: int, key: str) -> int | None:
    """The id of the run's key, or None."""
    rows = await _all(conn, "SELECT id FROM series WHERE run_id = %s AND name = %s", (run_id, key))
    return int(rows[0][0]) if rows else None


async def metric(conn: AsyncConnection[Any], run_id: int, key: str) -> Series | None:
    """The whole series, read in pieces of :data:`READ_PIECE` points, each packed into one ``bytea`` by
    the database (a row per point costs the driver several times more)."""
    sid = await series_of(conn, run_id, key)
    if sid is None:
        return None
    parts: list[bytes] = []
    after = (-(1 << 63), -(1 << 63))
    while True:
        cur = await conn.execute(
            b"SELECT string_agg(int8send(step) || int8send(seq) || int8send(time) || float8send(value), "
            b"''::bytea), COUNT(*), MAX(ARRAY[step, seq]) FROM (SELECT step, seq, time, value FROM metrics "
            b"WHERE run_id = %s AND series_id = %s AND (step, seq) > (%s, %s) "
            b"ORDER BY step, seq LIMIT %s) piece",
            (run_id, sid, *after, READ_PIECE),
            binary=True,
        )
        packed, count, last = await cur.fetchone() or (None, 0, None)
        if not count or packed is None or last is None:
            break
        parts.append(bytes(packed))
        after = (int(last[0]), int(last[1]))
        if count < READ_PIECE:
            break
    rows = np.frombuffer(b"".join(parts), dtype=_POINT)
    if rows.size > 1 and bool(np.any(np.diff(rows["step"]) < 0)):  # the pieces' order was not kept
        rows = rows[np.lexsort((rows["seq"], rows["step"]))]
    return Series(rows["step"].astype("<i8"), rows["time"].astype("<i8"), rows["value"].astype("<f8"))


async def block_points(
    conn: AsyncConnection[Any], run_id: int, keys: list[str], max_points: int
) -> dict[str, Downsampled]:
    """Of a run's ``keys``, those their block summaries answer (``_blocks.pick``), downsampled; the others
    (unknown, short, steps that went back, points stored before the blocks) are left out, to be read whole.
    Three queries, whatever the number of keys."""
    named = await _all(
        conn, "SELECT id, name, n_points FROM series WHERE run_id = %s AND name = ANY(%s)", (run_id, keys)
    )
    totals = {int(sid): int(total) for sid, _, total in named}
    wanted = [
        sid for sid, total in totals.items() if total > max_points and bucket_size(total, max_points) >= BLOCK
    ]
    if not wanted:
        return {}
    stats = await _all(conn, STATS_SQL.format(where="run_id = %s AND series_id = ANY(%s)"), (run_id, wanted))
    sizes = answerable(stats, totals, max_points)
    if not sizes:
        return {}
    rows = await _all(
        conn,
        f"SELECT series_id, {', '.join(PICK_COLUMNS)} FROM metric_blocks "
        "WHERE run_id = %s AND series_id = ANY(%s) ORDER BY series_id, block",
        (run_id, list(sizes)),
    )
    names = {int(sid): name for sid, name, _ in named}
    return {names[sid]: found for sid, found in pick(rows, sizes, totals).items()}


async def log_names(conn: AsyncConnection[Any], run_id: int) -> list[dict[str, str]]:
    rows = await _all(conn, "SELECT name, type FROM series WHERE run_id = %s ORDER BY name", (run_id,))
    return [{"name": name, "type": kind} for name, kind in rows]


async def logs(conn: AsyncConnection[Any], run_id: int, limit: int, offset: int) -> list[dict[str, Any]]:
    rows = await _all(
        conn,
        "SELECT time, line_number, log_type, message FROM logs WHERE run_id = %s "
        "ORDER BY id LIMIT %s OFFSET %s",
        (run_id, limit, offset),
    )
    return [
        {"time": t, "lineNumber": line, "logType": kind, "message": message}
        for t, line, kind, message in rows
    ]


async def data(
    conn: AsyncConnection[Any], run_id: int, key: str, limit: int | None, offset: int
) -> list[dict[str, Any]] | None:
    sid = await series_of(conn, run_id, key)
    if sid is None:
        return None
    rows = await _all(
        conn,
        "SELECT step, time, data_type, payload FROM data_points WHERE run_id = %s AND series_id = %s "
        "ORDER BY step, id LIMIT %s OFFSET %s",
        (run_id, sid, limit, offset),
    )
    return [
        {
            "step": step,
            "time": t,
            "dataType": kind,
            "data": payload if kind == "string-series" else orjson.loads(payload),
        }
        for step, t, kind, payload in rows
    ]


def _file_row(row: tuple[Any, ...]) -> FileRow:
    (file_id, run_id, key_id, log_name, name, size, file_type, t, step, sample, caption, uploaded) = row
    return FileRow(
        file_id, run_id, key_id, log_name, name, size, file_type, t, step, sample, caption, bool(uploaded)
    )


async def file_rows(conn: AsyncConnection[Any], run_id: int, key: str) -> list[FileRow] | None:
    sid = await series_of(conn, run_id, key)
    if sid is None:
        return None
    rows = await _all(
        conn,
        f"SELECT {_FILE_COLUMNS} FROM files f JOIN series s ON s.id = f.series_id "
        "WHERE f.run_id = %s AND f.series_id = %s ORDER BY f.step, f.id",
        (run_id, sid),
    )
    return [_file_row(r) for r in rows]


async def get_file(conn: AsyncConnection[Any], file_id: int) -> FileRow | None:
    rows = await _all(
        conn,
        f"SELECT {_FILE_COLUMNS} FROM files f JOIN series s ON s.id = f.series_id WHERE f.id = %s",
        (file_id,),
    )
    return _file_row(rows[0]) if rows else None
