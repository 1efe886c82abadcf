"""The writes of the PostgreSQL backend: one coroutine per op, each run inside the request's transaction.

Each takes a connection in a transaction and an op from ``_ops`` and returns the JSON-able answer (the same
as the SQLite backend's); a :class:`~mlop_server._errors.Problem` it raises rolls the transaction back.
Metric values go in by binary ``COPY``: the rows are packed by numpy in PostgreSQL's binary copy format.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import orjson

from mlop_server._blocks import COLUMNS, extend_blocks
from mlop_server._errors import Conflict, Forbidden, NotFound
from mlop_server._ops import (
    DATA_TYPES,
    Alert,
    ConfigUpdate,
    CreateRun,
    DataBatch,
    FilesRequest,
    GraphUpdate,
    LogBatch,
    LogNamesAdd,
    MetricBatch,
    ResumeRun,
    StatusUpdate,
    TagsUpdate,
)
from mlop_server._runfields import batch_stats, flat_fields, host_commit
from mlop_server._sqlite_writes import RUN_COLUMNS, check_owner, display_id, now_ms, run_summary
from mlop_server._storage import ADMIN_OWNER, ApiKey

if TYPE_CHECKING:
    from psycopg import AsyncConnection

__all__ = ["HANDLERS", "copy_metrics", "pack_rows", "series_id"]

logger = logging.getLogger(__name__)

#: One row of ``metrics`` in PostgreSQL's binary COPY format: a field count, then each field's length
#: and big-endian bytes (run_id, series_id, step, seq, time, value).
_FIELDS: Final = (
    ("run", ">i8"),
    ("series", ">i8"),
    ("step", ">i8"),
    ("seq", ">i8"),
    ("time", ">i8"),
    ("value", ">f8"),
)
_ROW: Final = np.dtype(
    [("n", ">i2")] + [item for name, kind in _FIELDS for item in ((f"{name}_len", ">i4"), (name, kind))]
)
_HEADER: Final = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
_TRAILER: Final = b"\xff\xff"
#: ``seq`` is the batch's number shifted by this, plus the point's place in the batch.
SEQ_SHIFT: Final = 32


def pack_rows(run_id: int, series_id: int, batch: int, steps: bytes, times: bytes, values: bytes) -> bytes:
    """The binary COPY rows of one key's points (without the file header)."""
    n = len(steps) // 8
    rows = np.empty(n, dtype=_ROW)
    rows["n"] = 6
    for name in ("run", "series", "step", "seq", "time", "value"):
        rows[f"{name}_len"] = 8
    rows["run"] = run_id
    rows["series"] = series_id
    rows["step"] = np.frombuffer(steps, dtype="<i8")
    rows["seq"] = (batch << SEQ_SHIFT) + np.arange(n, dtype=np.int64)
    rows["time"] = np.frombuffer(times, dtype="<i8")
    rows["value"] = np.frombuffer(values, dtype="<f8")
    return rows.tobytes()


async def copy_metrics(conn: AsyncConnection[Any], payload: list[bytes]) -> None:
    """COPY packed rows (from :func:`pack_rows`) into ``metrics``."""
    async with (
        conn.cursor() as cur,
        cur.copy(
            "COPY metrics (run_id, series_id, step, seq, time, value) FROM STDIN (FORMAT BINARY)"
        ) as copy,
    ):
        await copy.write(_HEADER)
        for part in payload:
            await copy.write(part)
        await copy.write(_TRAILER)


def _merge(base: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``delta`` into a copy of ``base``: nested objects merge, anything else replaces."""
    out = dict(base)
    for key, value in delta.items():
        old = out.get(key)
        out[key] = _merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return out


async def _one(conn: AsyncConnection[Any], sql: str, params: tuple[Any, ...] = ()) -> Any:
    cur = await conn.execute(sql.encode(), params, binary=True)
    return await cur.fetchone()


def _flat(config: str | dict[str, Any] | None) -> str:
    """The ``flat`` column's JSON text, without the NUL escapes that ``jsonb`` refuses (U+FFFD instead)."""
    return flat_fields(config).replace("\\u0000", "\\ufffd")


async def _touch(
    conn: AsyncConnection[Any], run_id: int, key: ApiKey | None, latest: int | None = None
) -> None:
    """Mark the run as just heard from (locking its row), its ``client_end`` moved up to ``latest`` (the
    latest time the client stamped); ``NotFound`` or ``Forbidden``."""
    now = now_ms()
    row = await _one(
        conn,
        "UPDATE runs SET updated = %s, last_seen = %s, client_end = GREATEST(client_end, %s::bigint) "
        "WHERE id = %s RETURNING owner",
        (now, now, latest, run_id),
    )
    if row is None:
        raise NotFound(f"run {run_id} does not exist")
    check_owner(key, run_id, row[0])


async def series_id(conn: AsyncConnection[Any], run_id: int, name: str, kind: str) -> int:
    """The id of the run's key ``name``, created with type ``kind`` when new."""
    row = await _one(conn, "SELECT id FROM series WHERE run_id = %s AND name = %s", (run_id, name))
    if row is None:
        row = await _one(
            conn,
            "INSERT INTO series (run_id, name, type) VALUES (%s, %s, %s) "
            "ON CONFLICT (run_id, name) DO UPDATE SET run_id = excluded.run_id RETURNING id",
            (run_id, name, kind),
        )
    return int(row[0])


async def last_step(conn: AsyncConnection[Any], run_id: int) -> int | None:
    """The highest step the run holds (metrics, data, files), or None when it holds none. Metrics: one
    backward index probe per key, not a scan of the run's points."""
    row = await _one(
        conn,
        "SELECT GREATEST((SELECT MAX(m.step) FROM series s CROSS JOIN LATERAL (SELECT step FROM metrics "
        "WHERE run_id = s.run_id AND series_id = s.id ORDER BY step DESC LIMIT 1) m WHERE s.run_id = %s), "
        "(SELECT MAX(step) FROM data_points WHERE run_id = %s), "
        "(SELECT MAX(step) FROM files WHERE run_id = %s))",
        (run_id, run_id, run_id),
    )
    return None if row is None or row[0] is None else int(row[0])


async def _run_answer(conn: AsyncConnection[Any], run_id: int, resumed: bool) -> dict[str, Any]:
    row = await _one(conn, f"SELECT {RUN_COLUMNS} FROM runs WHERE id = %s", (run_id,))
    last = await last_step(conn, run_id) if resumed else None
    return {"run": run_summary(row), "resumed": resumed, "lastStep": last}


async def _create(conn: AsyncConnection[Any], op: CreateRun, key: ApiKey | None) -> dict[str, Any]:
    now = now_ms()
    if key is not None and not key.may_write_project(op.project):
        raise Forbidden(f"this key may not create runs in project {op.project!r}")
    # creates in one project are taken one at a time: numbers and external ids stay unique without retries
    await conn.execute(b"SELECT pg_advisory_xact_lock(hashtextextended(%s::text, 7))", (op.project,))
    if op.external_id is not None:
        row = await _one(
            conn,
            "SELECT id, owner FROM runs WHERE project = %s AND external_id = %s FOR UPDATE",
            (op.project, op.external_id),
        )
        if row is not None:
            if key is not None and not key.may_read(row[1]):
                raise Conflict(
                    "this externalId belongs to a run of another owner in this project; pick another"
                )
            await conn.execute(
                b"UPDATE runs SET status = 'RUNNING', last_seen = %s, updated = %s WHERE id = %s",
                (now, now, row[0]),
            )
            return await _run_answer(conn, row[0], True)
    (number,) = await _one(
        conn, "SELECT COALESCE(MAX(number), 0) + 1 FROM runs WHERE project = %s", (op.project,)
    )
    (run_id,) = await _one(
        conn,
        "INSERT INTO runs (project, number, name, status, external_id, tags, config, logger_settings, "
        "system_metadata, created, updated, last_seen, owner, flat, host, git_commit, client_end) "
        "VALUES (%s, %s, %s, 'RUNNING', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s) "
        "RETURNING id",
        (
            op.project,
            number,
            op.name,
            op.external_id,
            orjson.dumps(list(op.tags)).decode(),
            op.config or "{}",
            op.logger_settings,
            op.system_metadata,
            op.created or now,
            op.updated or now,
            now,
            ADMIN_OWNER if key is None else key.owner,
            _flat(op.config),
            *host_commit(op.system_metadata),
            op.updated,
        ),
    )
    return await _run_answer(conn, run_id, False)


async def _resume(conn: AsyncConnection[Any], op: ResumeRun, key: ApiKey | None) -> dict[str, Any]:
    row: Any
    if op.run_id is not None:
        row = await _one(conn, "SELECT id, owner FROM runs WHERE id = %s", (op.run_id,))
    elif op.external_id is not None:
        row = await _one(
            conn,
            "SELECT id, owner FROM runs WHERE project = %s AND external_id = %s",
            (op.project, op.external_id),
        )
    else:
        row = None
        digits = (op.display_id or "").rpartition("-")[2]
        number = int(digits) if digits.isdigit() and len(digits) < 19 else -1
        sql = "SELECT id, project, owner FROM runs WHERE number = %s"
        params: tuple[Any, ...] = (number,)
        if op.project is not None:
            sql, params = sql + " AND project = %s", (number, op.project)
        cur = await conn.execute((sql + " ORDER BY id").encode(), params, binary=True)
        for run_id, project, owner in await cur.fetchall():
            if display_id(project, number) == op.display_id and (key is None or key.may_read(owner)):
                row = (run_id, owner)
                break
    if row is not None and op.run_id is None and key is not None and not key.may_read(row[1]):
        row = None  # another owner's external id: as if it did not exist, so nothing of it leaks
    if row is None:
        raise NotFound("no run matches")
    check_owner(key, row[0], row[1])
    now = now_ms()
    await conn.execute(
        b"UPDATE runs SET status = 'RUNNING', last_seen = %s, updated = %s WHERE id = %s", (now, now, row[0])
    )
    return await _run_answer(conn, row[0], True)


_OK: Final = {"success": True}


async def _status(conn: AsyncConnection[Any], op: StatusUpdate, key: ApiKey | None) -> dict[str, Any]:
    await _touch(conn, op.run_id, key)
    await conn.execute(
        b"UPDATE runs SET status = %s, status_metadata = COALESCE(%s, status_metadata) WHERE id = %s",
        (op.status, op.metadata, op.run_id),
    )
    return _OK


async def _log_names(conn: AsyncConnection[Any], op: LogNamesAdd, key: ApiKey | None) -> dict[str, Any]:
    await _touch(conn, op.run_id, key)
    async with conn.cursor() as cur:
        await cur.executemany(
            b"INSERT INTO series (run_id, name, type) VALUES (%s, %s, %s) "
            b"ON CONFLICT (run_id, name) DO UPDATE SET type = excluded.type",
            [(op.run_id, name, op.log_type) for name in op.names],
        )
    return _OK


async def _tags(conn: AsyncConnection[Any], op: TagsUpdate, key: ApiKey | None) -> dict[str, Any]:
    await _touch(conn, op.run_id, key)
    await conn.execute(
        b"UPDATE runs SET tags = %s WHERE id = %s", (orjson.dumps(list(op.tags)).decode(), op.run_id)
    )
    return _OK


async def _config(conn: AsyncConnection[Any], op: ConfigUpdate, key: ApiKey | None) -> dict[str, Any]:
    await _touch(conn, op.run_id, key)
    (config,) = await _one(conn, "SELECT config FROM runs WHERE id = %s", (op.run_id,))
    merged = _merge(orjson.loads(config), op.delta)
    await conn.execute(
        b"UPDATE runs SET config = %s, flat = %s::jsonb WHERE id = %s",
        (orjson.dumps(merged).decode(), _flat(merged), op.run_id),
    )
    return _OK


async def _graph(conn: AsyncConnection[Any], op: GraphUpdate, key: ApiKey | None) -> dict[str, Any]:
    await _touch(conn, op.run_id, key)
    await conn.execute(b"UPDATE runs SET graph = %s WHERE id = %s", (op.graph, op.run_id))
    return _OK


async def _alert(conn: AsyncConnection[Any], op: Alert, key: ApiKey | None) -> dict[str, Any]:
    await _touch(conn, op.run_id, key)
    await conn.execute(
        b"INSERT INTO alerts (run_id, timestamp, level, title, body, email, url) "
        b"VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (op.run_id, op.timestamp, op.level, op.title, op.body, op.email, op.url),
    )
    return _OK


async def _metrics(conn: AsyncConnection[Any], op: MetricBatch, key: ApiKey | None) -> dict[str, Any]:
    names = list(op.series)
    stats = [batch_stats(*op.series[name]) for name in names]
    times = [s.max_time for s in stats if s is not None]
    await _touch(conn, op.run_id, key, max(times) if times else None)
    (batch,) = await _one(conn, "SELECT nextval('metric_batches')")
    # every key of the batch in one statement: created when new, its stats (as _runfields defines) merged
    cur = await conn.execute(
        b"INSERT INTO series AS s (run_id, name, type, vmin, vmax, vlast, last_step, n_points) "
        b"SELECT %s, n, 'METRIC', lo, hi, v, st, c "
        b"FROM unnest(%s::text[], %s::float8[], %s::float8[], %s::float8[], %s::int8[], %s::int8[]) "
        b"AS b(n, lo, hi, v, st, c) "
        b"ON CONFLICT (run_id, name) DO UPDATE SET vmin = LEAST(s.vmin, excluded.vmin), "
        b"vmax = GREATEST(s.vmax, excluded.vmax), "
        b"vlast = CASE WHEN excluded.last_step IS NULL THEN s.vlast "
        b"WHEN s.last_step IS NULL OR excluded.last_step >= s.last_step THEN excluded.vlast "
        b"ELSE s.vlast END, "
        b"last_step = GREATEST(s.last_step, excluded.last_step), n_points = s.n_points + excluded.n_points "
        b"RETURNING s.id, s.name",
        (
            op.run_id,
            names,
            [None if s is None else s.vmin for s in stats],
            [None if s is None else s.vmax for s in stats],
            [None if s is None else s.vlast for s in stats],
            [None if s is None else s.last_step for s in stats],
            [len(op.series[name][0]) // 8 for name in names],
        ),
    )
    ids = {name: sid for sid, name in await cur.fetchall()}
    payload = [
        pack_rows(op.run_id, ids[name], int(batch), steps, times_, values)
        for name, (steps, times_, values) in op.series.items()
        if steps
    ]
    if payload:
        await copy_metrics(conn, payload)
        await _blocks(
            conn, op.run_id, {ids[name]: columns for name, columns in op.series.items() if columns[0]}
        )
    return {"success": True, "count": op.count}


async def _blocks(
    conn: AsyncConnection[Any], run_id: int, batch: dict[int, tuple[bytes, bytes, bytes]]
) -> None:
    """Keep the block summaries (``_blocks``) of the keys of a batch: the last block of each filled, new ones
    added. The run's row is locked (``_touch``), so no other write of the run interleaves."""
    sids = list(batch)
    cur = await conn.execute(
        f"SELECT DISTINCT ON (series_id) series_id, {', '.join(COLUMNS)} FROM metric_blocks "
        "WHERE run_id = %s AND series_id = ANY(%s) ORDER BY series_id, block DESC".encode(),
        (run_id, sids),
        binary=True,
    )
    last = {row[0]: row[1:] for row in await cur.fetchall()}
    rows: list[tuple[Any, ...]] = []
    replaced: list[tuple[int, int]] = []
    for sid, (steps, times, values) in batch.items():
        found = last.get(sid)
        new = extend_blocks(found, steps, times, values)
        if found is not None and new and new[0][0] == found[0]:
            replaced.append((sid, int(found[0])))
        rows += [(run_id, sid, *row) for row in new]
    if replaced:
        await conn.execute(
            b"DELETE FROM metric_blocks WHERE run_id = %s AND (series_id, block) IN "
            b"(SELECT * FROM unnest(%s::int8[], %s::int8[]))",
            (run_id, [r[0] for r in replaced], [r[1] for r in replaced]),
        )
    async with (
        conn.cursor() as copy_cur,
        copy_cur.copy(
            f"COPY metric_blocks (run_id, series_id, {', '.join(COLUMNS)}) FROM STDIN".encode()
        ) as copy,
    ):
        for row in rows:
            await copy.write_row(row)


async def _data(conn: AsyncConnection[Any], op: DataBatch, key: ApiKey | None) -> dict[str, Any]:
    await _touch(conn, op.run_id, key, max((row[1] for row in op.rows), default=None))
    ids: dict[str, int] = {}
    rows = []
    for step, t, name, data_type, payload in op.rows:
        sid = ids.get(name)
        if sid is None:
            sid = ids[name] = await series_id(conn, op.run_id, name, DATA_TYPES[data_type])
        rows.append((op.run_id, sid, step, t, data_type, payload))
    async with conn.cursor() as cur:
        await cur.executemany(
            b"INSERT INTO data_points (run_id, series_id, step, time, data_type, payload) "
            b"VALUES (%s, %s, %s, %s, %s, %s)",
            rows,
        )
    return {"success": True, "count": len(rows)}


async def _logs(conn: AsyncConnection[Any], op: LogBatch, key: ApiKey | None) -> dict[str, Any]:
    await _touch(conn, op.run_id, key, max((row[0] for row in op.rows), default=None))
    async with conn.cursor() as cur:
        await cur.executemany(
            b"INSERT INTO logs (run_id, time, line_number, log_type, message) VALUES (%s, %s, %s, %s, %s)",
            [(op.run_id, *row) for row in op.rows],
        )
    return {"success": True, "count": len(op.rows)}


async def _files(conn: AsyncConnection[Any], op: FilesRequest, key: ApiKey | None) -> dict[str, Any]:
    await _touch(conn, op.run_id, key, max((f.time for f in op.files), default=None))
    out = []
    for f in op.files:
        sid = await series_id(conn, op.run_id, f.log_name, "FILE")
        row = await _one(
            conn, "SELECT id, uploaded FROM files WHERE series_id = %s AND name = %s", (sid, f.name)
        )
        if row is not None and row[1]:
            raise Conflict(f"file {f.name!r} of key {f.log_name!r} was uploaded already")
        if row is not None:
            await conn.execute(
                b"UPDATE files SET size = %s, file_type = %s, time = %s, step = %s, sample_index = %s, "
                b"caption = %s, key_id = %s WHERE id = %s",
                (f.size, f.file_type, f.time, f.step, f.sample_index, f.caption, op.key_id, row[0]),
            )
            file_id = row[0]
        else:
            (file_id,) = await _one(
                conn,
                "INSERT INTO files (run_id, series_id, key_id, name, size, file_type, time, step, "
                "sample_index, caption) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (op.run_id, sid, op.key_id, f.name, f.size, f.file_type, f.time, f.step, f.sample_index,
                 f.caption),
            )  # fmt: skip
        out.append([f.log_name, f.name, file_id])
    return {"files": out}


Handler = Callable[["AsyncConnection[Any]", Any, ApiKey | None], Awaitable[dict[str, Any]]]

HANDLERS: Final[dict[type, Handler]] = {
    CreateRun: _create,
    ResumeRun: _resume,
    StatusUpdate: _status,
    LogNamesAdd: _log_names,
    TagsUpdate: _tags,
    ConfigUpdate: _config,
    GraphUpdate: _graph,
    Alert: _alert,
    MetricBatch: _metrics,
    DataBatch: _data,
    LogBatch: _logs,
    FilesRequest: _files,
}
