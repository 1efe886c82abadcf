"""The writes of the SQLite backend: one function per op, each run by the writer thread in a savepoint.

Each takes the writer's connection and an op from ``_ops`` and returns the JSON-able answer; a
:class:`~mlop_server._errors.Problem` it raises rolls back that op alone.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any, Final

import numpy as np
import orjson

from mlop_server._blocks import sqlite_add
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
from mlop_server._runfields import batch_stats, flat_fields, host_commit, run_times
from mlop_server._storage import ADMIN_OWNER, ApiKey

__all__ = [
    "HANDLERS",
    "RUN_COLUMNS",
    "SUMMARY_COLUMN",
    "check_owner",
    "display_id",
    "now_ms",
    "run_summary",
    "summary_of",
]

logger = logging.getLogger(__name__)

#: A new chunk smaller than this is appended to the key's last chunk while that stays under CHUNK_TARGET.
SMALL_CHUNK: Final = 512
CHUNK_TARGET: Final = 8192

RUN_COLUMNS: Final = (
    "id, number, name, project, status, tags, created, updated, external_id, owner, client_end"
)

#: A run's summary (``run.summary`` reaches the server as ``config["summary"]``), for the runs list.
SUMMARY_COLUMN: Final = (
    "CASE WHEN json_valid(config) AND json_type(config, '$.summary') = 'object' "
    "THEN json_extract(config, '$.summary') END"
)


def summary_of(text: str | None) -> dict[str, Any]:
    """The summary that :data:`SUMMARY_COLUMN` read (``{}`` for a run without one)."""
    summary: dict[str, Any] = orjson.loads(text) if text else {}
    return summary


def now_ms() -> int:
    return int(time.time() * 1000)


def _merge(base: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``delta`` into a copy of ``base``: nested objects merge, anything else replaces."""
    out = dict(base)
    for key, value in delta.items():
        old = out.get(key)
        out[key] = _merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return out


def display_id(project: str, number: int) -> str:
    letters = "".join(c for c in project.upper() if c.isalnum())[:3] or "RUN"
    return f"{letters}-{number}"


def run_summary(row: tuple[Any, ...]) -> dict[str, Any]:
    run_id, number, name, project, status, tags, created, updated, external_id, owner, ended = row[:11]
    return {
        "id": run_id,
        "number": number,
        "displayId": display_id(project, number),
        "name": name,
        "project": project,
        "status": status,
        "tags": orjson.loads(tags),
        "created": created,
        "updated": updated,
        "externalId": external_id,
        "owner": owner,
        **run_times(created, ended, status, now_ms()),
    }


def _decoded(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def run_detail(columns: tuple[Any, ...], alerts: Any) -> dict[str, Any]:
    """The fields a run's detailed answer adds to its summary, the same from every backend.

    Args:
        columns: The run's detail columns, in the order both backends select them (config, logger
            settings, system metadata, status metadata, graph, cancel requested, last seen).
        alerts: Its alerts' rows (timestamp, level, title, body, email, url), oldest first.
    """
    config, settings, system, status_meta, graph, cancel, last_seen = columns
    return {
        "config": _decoded(config),
        "loggerSettings": _decoded(settings),
        "systemMetadata": _decoded(system),
        "statusMetadata": _decoded(status_meta),
        "graph": _decoded(graph),
        "cancelRequested": bool(cancel),
        "alerts": [
            {"timestamp": ts, "level": level, "title": title, "body": text, "email": bool(email), "url": url}
            for ts, level, title, text, email, url in alerts
        ],
        "lastSeen": last_seen,
    }


def check_owner(key: ApiKey | None, run_id: int, owner: str | None) -> None:
    """Raise ``Forbidden`` unless ``key`` (None: the server itself) may change a run of ``owner``."""
    if key is not None and not key.may_read(owner):
        raise Forbidden(f"run {run_id} belongs to another owner; this key may not change it")


# -- the write ops, each run by the writer thread inside its own savepoint ---------------------------------


def _touch(conn: sqlite3.Connection, run_id: int, key: ApiKey | None) -> None:
    """Mark the run as just heard from; ``NotFound`` or ``Forbidden`` (rolled back with the savepoint)."""
    now = now_ms()
    row = conn.execute(
        "UPDATE runs SET updated = ?, last_seen = ? WHERE id = ? RETURNING owner", (now, now, run_id)
    ).fetchone()
    if row is None:
        raise NotFound(f"run {run_id} does not exist")
    check_owner(key, run_id, row[0])


def _client_time(conn: sqlite3.Connection, run_id: int, latest: int) -> None:
    """Move the run's ``client_end`` (the latest time its client stamped) up to ``latest``."""
    conn.execute(
        "UPDATE runs SET client_end = max(COALESCE(client_end, ?), ?) WHERE id = ?", (latest, latest, run_id)
    )


def _series(conn: sqlite3.Connection, run_id: int, name: str, kind: str) -> int:
    row = conn.execute("SELECT id FROM series WHERE run_id = ? AND name = ?", (run_id, name)).fetchone()
    if row is not None:
        return int(row[0])
    cur = conn.execute("INSERT INTO series (run_id, name, type) VALUES (?, ?, ?)", (run_id, name, kind))
    assert cur.lastrowid is not None
    return cur.lastrowid


def _run_answer(conn: sqlite3.Connection, run_id: int, resumed: bool) -> dict[str, Any]:
    row = conn.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
    last = _last_step(conn, run_id) if resumed else None
    return {"run": run_summary(row), "resumed": resumed, "lastStep": last}


def _last_step(conn: sqlite3.Connection, run_id: int) -> int | None:
    """The highest step the run holds (metrics, data, files), or None when it holds none.

    An extra field of the create/resume answers (the stock protocol has none): a client that resumes the
    run where its local store is not goes on after it. Read once per resume, so a full scan of the run's
    packed steps is affordable.
    """
    highest: int | None = None
    for (steps,) in conn.execute(
        "SELECT c.steps FROM metric_chunks c JOIN series s ON s.id = c.series_id WHERE s.run_id = ?",
        (run_id,),
    ):
        if steps:
            chunk_max = int(np.frombuffer(steps, dtype="<i8").max())
            highest = chunk_max if highest is None else max(highest, chunk_max)
    for table in ("data_points", "files"):
        (value,) = conn.execute(
            f"SELECT MAX(t.step) FROM {table} t JOIN series s ON s.id = t.series_id WHERE s.run_id = ?",
            (run_id,),
        ).fetchone()
        if value is not None:
            highest = int(value) if highest is None else max(highest, int(value))
    return highest


def _create(conn: sqlite3.Connection, op: CreateRun, key: ApiKey | None) -> dict[str, Any]:
    now = now_ms()
    if key is not None and not key.may_write_project(op.project):
        raise Forbidden(f"this key may not create runs in project {op.project!r}")
    if op.external_id is not None:
        row = conn.execute(
            "SELECT id, owner FROM runs WHERE project = ? AND external_id = ?", (op.project, op.external_id)
        ).fetchone()
        if row is not None:
            if key is not None and not key.may_read(row[1]):
                raise Conflict(
                    "this externalId belongs to a run of another owner in this project; pick another"
                )
            conn.execute(
                "UPDATE runs SET status = 'RUNNING', last_seen = ?, updated = ? WHERE id = ?",
                (now, now, row[0]),
            )
            return _run_answer(conn, row[0], True)
    (number,) = conn.execute(
        "SELECT COALESCE(MAX(number), 0) + 1 FROM runs WHERE project = ?", (op.project,)
    ).fetchone()
    cur = conn.execute(
        "INSERT INTO runs (project, number, name, status, external_id, tags, config, logger_settings, "
        "system_metadata, created, updated, last_seen, owner, flat, host, git_commit, client_end) "
        "VALUES (?, ?, ?, 'RUNNING', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
            flat_fields(op.config),
            *host_commit(op.system_metadata),
            op.updated,
        ),
    )
    assert cur.lastrowid is not None
    return _run_answer(conn, cur.lastrowid, False)


def _resume(conn: sqlite3.Connection, op: ResumeRun, key: ApiKey | None) -> dict[str, Any]:
    if op.run_id is not None:
        row = conn.execute("SELECT id, owner FROM runs WHERE id = ?", (op.run_id,)).fetchone()
    elif op.external_id is not None:
        row = conn.execute(
            "SELECT id, owner FROM runs WHERE project = ? AND external_id = ?", (op.project, op.external_id)
        ).fetchone()
    else:
        row = None
        digits = (op.display_id or "").rpartition("-")[2]
        number = int(digits) if digits.isdigit() and len(digits) < 19 else -1
        for run_id, project, owner in conn.execute(
            "SELECT id, project, owner FROM runs WHERE number = ? AND (? IS NULL OR project = ?)",
            (number, op.project, op.project),
        ):
            if display_id(project, number) == op.display_id and (key is None or key.may_read(owner)):
                row = (run_id, owner)
                break
    if row is not None and op.run_id is None and key is not None and not key.may_read(row[1]):
        row = None  # another owner's external id: as if it did not exist, so nothing of it leaks
    if row is None:
        raise NotFound("no run matches")
    check_owner(key, row[0], row[1])
    now = now_ms()
    conn.execute(
        "UPDATE runs SET status = 'RUNNING', last_seen = ?, updated = ? WHERE id = ?", (now, now, row[0])
    )
    return _run_answer(conn, row[0], True)


_OK: Final = {"success": True}


def _status(conn: sqlite3.Connection, op: StatusUpdate, key: ApiKey | None) -> dict[str, Any]:
    _touch(conn, op.run_id, key)
    conn.execute(
        "UPDATE runs SET status = ?, status_metadata = COALESCE(?, status_metadata) WHERE id = ?",
        (op.status, op.metadata, op.run_id),
    )
    return _OK


def _log_names(conn: sqlite3.Connection, op: LogNamesAdd, key: ApiKey | None) -> dict[str, Any]:
    _touch(conn, op.run_id, key)
    conn.executemany(
        "INSERT INTO series (run_id, name, type) VALUES (?, ?, ?) "
        "ON CONFLICT (run_id, name) DO UPDATE SET type = excluded.type",
        [(op.run_id, name, op.log_type) for name in op.names],
    )
    return _OK


def _tags(conn: sqlite3.Connection, op: TagsUpdate, key: ApiKey | None) -> dict[str, Any]:
    _touch(conn, op.run_id, key)
    conn.execute("UPDATE runs SET tags = ? WHERE id = ?", (orjson.dumps(list(op.tags)).decode(), op.run_id))
    return _OK


def _config(conn: sqlite3.Connection, op: ConfigUpdate, key: ApiKey | None) -> dict[str, Any]:
    _touch(conn, op.run_id, key)
    (config,) = conn.execute("SELECT config FROM runs WHERE id = ?", (op.run_id,)).fetchone()
    merged = _merge(orjson.loads(config), op.delta)
    conn.execute(
        "UPDATE runs SET config = ?, flat = ? WHERE id = ?",
        (orjson.dumps(merged).decode(), flat_fields(merged), op.run_id),
    )
    return _OK


def _graph(conn: sqlite3.Connection, op: GraphUpdate, key: ApiKey | None) -> dict[str, Any]:
    _touch(conn, op.run_id, key)
    conn.execute("UPDATE runs SET graph = ? WHERE id = ?", (op.graph, op.run_id))
    return _OK


def _alert(conn: sqlite3.Connection, op: Alert, key: ApiKey | None) -> dict[str, Any]:
    _touch(conn, op.run_id, key)
    conn.execute(
        "INSERT INTO alerts (run_id, timestamp, level, title, body, email, url) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (op.run_id, op.timestamp, op.level, op.title, op.body, int(op.email), op.url),
    )
    return _OK


def _metrics(conn: sqlite3.Connection, op: MetricBatch, key: ApiKey | None) -> dict[str, Any]:
    _touch(conn, op.run_id, key)
    latest: int | None = None
    for name, (steps, times, values) in op.series.items():
        series_id = _series(conn, op.run_id, name, "METRIC")
        if steps:
            sqlite_add(conn, series_id, steps, times, values)  # block summaries: downsampling in SQL
        stats = batch_stats(steps, times, values)
        if stats is not None:
            latest = stats.max_time if latest is None else max(latest, stats.max_time)
            conn.execute(
                "UPDATE series SET vmin = min(COALESCE(vmin, ?), COALESCE(?, vmin)), "
                "vmax = max(COALESCE(vmax, ?), COALESCE(?, vmax)), "
                "vlast = CASE WHEN last_step IS NULL OR ? >= last_step THEN ? ELSE vlast END, "
                "last_step = max(COALESCE(last_step, ?), ?) WHERE id = ?",
                (stats.vmin, stats.vmin, stats.vmax, stats.vmax, stats.last_step, stats.vlast,
                 stats.last_step, stats.last_step, series_id),
            )  # fmt: skip
        n = len(steps) // 8
        if n < SMALL_CHUNK:
            last = conn.execute(
                "SELECT id, n, steps, times, vals FROM metric_chunks WHERE series_id = ? "
                "ORDER BY id DESC LIMIT 1",
                (series_id,),
            ).fetchone()
            if last is not None and last[1] + n <= CHUNK_TARGET:
                # SQL's || concatenates text, not bytes, so the packed columns are joined here
                conn.execute(
                    "UPDATE metric_chunks SET n = ?, steps = ?, times = ?, vals = ? WHERE id = ?",
                    (last[1] + n, last[2] + steps, last[3] + times, last[4] + values, last[0]),
                )
                continue
        conn.execute(
            "INSERT INTO metric_chunks (series_id, n, steps, times, vals) VALUES (?, ?, ?, ?, ?)",
            (series_id, n, steps, times, values),
        )
    if latest is not None:
        _client_time(conn, op.run_id, latest)
    return {"success": True, "count": op.count}


def _data(conn: sqlite3.Connection, op: DataBatch, key: ApiKey | None) -> dict[str, Any]:
    _touch(conn, op.run_id, key)
    ids: dict[str, int] = {}
    rows = []
    for step, t, name, data_type, payload in op.rows:
        series_id = ids.get(name)
        if series_id is None:
            series_id = ids[name] = _series(conn, op.run_id, name, DATA_TYPES[data_type])
        rows.append((series_id, step, t, data_type, payload))
    conn.executemany(
        "INSERT INTO data_points (series_id, step, time, data_type, payload) VALUES (?, ?, ?, ?, ?)", rows
    )
    if rows:
        _client_time(conn, op.run_id, max(row[2] for row in rows))
    return {"success": True, "count": len(rows)}


def _logs(conn: sqlite3.Connection, op: LogBatch, key: ApiKey | None) -> dict[str, Any]:
    _touch(conn, op.run_id, key)
    conn.executemany(
        "INSERT INTO logs (run_id, time, line_number, log_type, message) VALUES (?, ?, ?, ?, ?)",
        [(op.run_id, *row) for row in op.rows],
    )
    if op.rows:
        _client_time(conn, op.run_id, max(row[0] for row in op.rows))
    return {"success": True, "count": len(op.rows)}


def _files(conn: sqlite3.Connection, op: FilesRequest, key: ApiKey | None) -> dict[str, Any]:
    _touch(conn, op.run_id, key)
    out = []
    for f in op.files:
        series_id = _series(conn, op.run_id, f.log_name, "FILE")
        row = conn.execute(
            "SELECT id, uploaded FROM files WHERE series_id = ? AND name = ?", (series_id, f.name)
        ).fetchone()
        if row is not None and row[1]:
            raise Conflict(f"file {f.name!r} of key {f.log_name!r} was uploaded already")
        if row is not None:
            conn.execute(
                "UPDATE files SET size = ?, file_type = ?, time = ?, step = ?, sample_index = ?, "
                "caption = ?, key_id = ? WHERE id = ?",
                (f.size, f.file_type, f.time, f.step, f.sample_index, f.caption, op.key_id, row[0]),
            )
            file_id = row[0]
        else:
            cur = conn.execute(
                "INSERT INTO files (run_id, series_id, key_id, name, size, file_type, time, step, "
                "sample_index, caption) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (op.run_id, series_id, op.key_id, f.name, f.size, f.file_type, f.time, f.step, f.sample_index,
                 f.caption),
            )  # fmt: skip
            file_id = cur.lastrowid
        out.append([f.log_name, f.name, file_id])
    if op.files:
        _client_time(conn, op.run_id, max(f.time for f in op.files))
    return {"files": out}


HANDLERS: Final[dict[type, Callable[[sqlite3.Connection, Any, ApiKey | None], dict[str, Any]]]] = {
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
