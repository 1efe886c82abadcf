"""The embedded storage backend: one SQLite file in WAL mode, one writer thread that batches commits.

Every write goes through the writer thread as a job. The writer takes whatever jobs are waiting, runs each
inside its own savepoint of one transaction (a failing job rolls back alone) and commits once, then answers
the jobs: an answer means the data is committed. Reads run on worker threads with their own connections,
which WAL lets proceed beside the writer. Metric values are stored in packed chunks per key (int64 steps,
int64 times, float64 values), so a batch of 10,000 values is a handful of rows and a million-point series
is read in about a thousand rows.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import queue
import secrets
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import anyio.to_thread
import numpy as np
import orjson

from mlop_server._blocks import SQLITE_TABLE, sqlite_points
from mlop_server._errors import BadRequest, Conflict, NotFound, Unavailable
from mlop_server._ops import Op
from mlop_server._runfields import backfill_sqlite
from mlop_server._sqlite_fields import ensure_fields
from mlop_server._sqlite_writes import (
    HANDLERS,
    RUN_COLUMNS,
    SUMMARY_COLUMN,
    check_owner,
    now_ms,
    run_detail,
    run_summary,
    summary_of,
)
from mlop_server._storage import ADMIN_OWNER, ApiKey, Downsampled, FileRow, Series, Storage

__all__ = ["SqliteStorage"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_JOBS_PER_COMMIT: Final = 256
READ_MMAP_BYTES: Final = 1 << 30

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
    id INTEGER PRIMARY KEY, hash TEXT NOT NULL UNIQUE, prefix TEXT NOT NULL, name TEXT NOT NULL,
    admin INTEGER NOT NULL, created INTEGER NOT NULL, revoked INTEGER, projects TEXT);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, project TEXT NOT NULL, number INTEGER NOT NULL, name TEXT NOT NULL,
    status TEXT NOT NULL, external_id TEXT, tags TEXT NOT NULL, config TEXT NOT NULL,
    logger_settings TEXT, system_metadata TEXT, status_metadata TEXT, graph TEXT,
    created INTEGER NOT NULL, updated INTEGER NOT NULL, last_seen INTEGER NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0, owner TEXT,
    UNIQUE (project, external_id), UNIQUE (project, number));
CREATE INDEX IF NOT EXISTS runs_status ON runs (status, last_seen);
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, name TEXT NOT NULL, type TEXT NOT NULL,
    UNIQUE (run_id, name));
CREATE TABLE IF NOT EXISTS metric_chunks (
    id INTEGER PRIMARY KEY, series_id INTEGER NOT NULL, n INTEGER NOT NULL,
    steps BLOB NOT NULL, times BLOB NOT NULL, vals BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS metric_chunks_series ON metric_chunks (series_id, id);
CREATE TABLE IF NOT EXISTS data_points (
    id INTEGER PRIMARY KEY, series_id INTEGER NOT NULL, step INTEGER NOT NULL, time INTEGER NOT NULL,
    data_type TEXT NOT NULL, payload TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS data_points_series ON data_points (series_id, step, id);
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, time INTEGER NOT NULL, line_number INTEGER NOT NULL,
    log_type TEXT NOT NULL, message TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS logs_run ON logs (run_id, id);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, timestamp INTEGER NOT NULL, level TEXT NOT NULL,
    title TEXT NOT NULL, body TEXT NOT NULL, email INTEGER NOT NULL, url TEXT);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL, series_id INTEGER NOT NULL, key_id INTEGER NOT NULL,
    name TEXT NOT NULL, size INTEGER NOT NULL, file_type TEXT NOT NULL, time INTEGER NOT NULL,
    step INTEGER NOT NULL, sample_index INTEGER, caption TEXT, uploaded INTEGER NOT NULL DEFAULT 0,
    UNIQUE (series_id, name));
CREATE INDEX IF NOT EXISTS runs_owner ON runs (owner, project);
CREATE TABLE IF NOT EXISTS idempotency (
    scope TEXT NOT NULL, key TEXT NOT NULL, answer BLOB NOT NULL, created INTEGER NOT NULL,
    PRIMARY KEY (scope, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS project_settings (
    project TEXT NOT NULL, owner TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL,
    updated INTEGER NOT NULL, PRIMARY KEY (project, owner, name)) WITHOUT ROWID;
"""

_DETAIL_COLUMNS: Final = (
    ", config, logger_settings, system_metadata, status_metadata, graph, cancel_requested, last_seen"
)
_FILE_COLUMNS: Final = (
    "f.id, f.run_id, f.key_id, s.name, f.name, f.size, f.file_type, f.time, f.step, f.sample_index, "
    "f.caption, f.uploaded"
)


#: Columns added after the first release: (table, column, declaration), added to older databases on open.
_ADDED_COLUMNS: Final = (
    ("api_keys", "projects", "TEXT"),
    ("runs", "owner", "TEXT"),
    # the runs table's derived columns (_runfields)
    ("runs", "flat", "TEXT"),
    ("runs", "host", "TEXT"),
    ("runs", "git_commit", "TEXT"),
    ("runs", "client_end", "INTEGER"),
    ("series", "vlast", "REAL"),
    ("series", "vmin", "REAL"),
    ("series", "vmax", "REAL"),
    ("series", "last_step", "INTEGER"),
)


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a database made by an older server up to this schema (runs made before owners: admin only)."""
    for table, column, declaration in _ADDED_COLUMNS:
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
            if (table, column) == ("runs", "owner"):
                conn.execute("UPDATE runs SET owner = ?", (ADMIN_OWNER,))
            if (table, column) == ("series", "last_step"):
                backfill_sqlite(conn)
    conn.execute("CREATE INDEX IF NOT EXISTS runs_project ON runs (project, id)")
    # the runs table's column catalog is cached until a project's run count or latest update moves
    conn.execute("CREATE INDEX IF NOT EXISTS runs_project_updated ON runs (project, updated)")
    ensure_fields(conn)


def private_file(path: Path) -> None:
    """Create ``path`` (when missing) readable by this user only, and make an existing one so (0600).

    SQLite gives the ``-wal`` and ``-shm`` files the mode of the database file, so they are 0600 too.
    """
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)
    for suffix in ("-wal", "-shm", "-journal"):
        journal = path.with_name(path.name + suffix)
        if journal.exists():
            os.chmod(journal, 0o600)


def private_dir(path: Path) -> None:
    """Create the folder ``path`` (and missing parents) and make it this user's only (0700)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class _Job:
    __slots__ = ("fn", "future", "idempotency")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any], idempotency: tuple[str, str] | None) -> None:
        self.fn = fn
        self.idempotency = idempotency
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()


class _Writer(threading.Thread):
    """The one thread that writes: batches waiting jobs into one transaction, one savepoint each."""

    def __init__(self, path: Path, max_pending: int) -> None:
        super().__init__(name="mlop-server-writer", daemon=True)
        self._path = path
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._max_pending = max_pending
        self._pending = 0
        self._lock = threading.Lock()

    def submit(self, job: _Job) -> None:
        with self._lock:
            if self._pending >= self._max_pending:
                raise Unavailable("the server is behind on writes; retry later")
            self._pending += 1
        self._queue.put(job)

    def stop(self) -> None:
        self._queue.put(None)
        self.join()

    def run(self) -> None:
        conn = _connect(self._path)
        try:
            while True:
                job = self._queue.get()
                if job is None:
                    return
                jobs = [job]
                stop = False
                while len(jobs) < MAX_JOBS_PER_COMMIT:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    jobs.append(more)
                try:
                    self._commit(conn, jobs)
                except Exception as exc:  # broad: the writer must outlive any one batch, or every write hangs
                    logger.exception("the writer failed on a batch of %d requests", len(jobs))
                    for pending in jobs:
                        if not pending.future.done():
                            pending.future.set_exception(exc)
                with self._lock:
                    self._pending -= len(jobs)
                if stop:
                    return
        finally:
            conn.close()

    @staticmethod
    def _run_job(conn: sqlite3.Connection, job: _Job) -> Any:
        if job.idempotency is not None:
            row = conn.execute(
                "SELECT answer FROM idempotency WHERE scope = ? AND key = ?", job.idempotency
            ).fetchone()
            if row is not None:
                return orjson.loads(row[0])
        answer = job.fn(conn)
        if job.idempotency is not None:
            conn.execute(
                "INSERT INTO idempotency (scope, key, answer, created) VALUES (?, ?, ?, ?)",
                (*job.idempotency, orjson.dumps(answer), now_ms()),
            )
        return answer

    def _commit(self, conn: sqlite3.Connection, jobs: list[_Job]) -> None:
        results: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in jobs:
                conn.execute("SAVEPOINT job")
                try:
                    answer = self._run_job(conn, job)
                except Exception as exc:  # broad: a job's fault goes back to its own request only
                    conn.execute("ROLLBACK TO job")
                    results.append((job, None, exc))
                else:
                    results.append((job, answer, None))
                conn.execute("RELEASE job")
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            logger.exception("a write transaction failed; its %d requests get an error", len(jobs))
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for job in jobs:
                job.future.set_exception(exc)
            return
        for job, answer, error in results:
            if error is None:
                job.future.set_result(answer)
            else:
                job.future.set_exception(error)


class SqliteStorage(Storage):
    """Storage in one SQLite file (``<data>/mlop-server.db``), written by one batching writer thread.

    Args:
        path: The database file; created with its schema when missing.
        max_pending: Writes that may wait for the writer before new ones answer 503.
    """

    dialect = "sqlite"

    def __init__(self, path: Path, *, max_pending: int = 1024) -> None:
        self._path = path
        private_dir(path.parent)  # key hashes and run data: this user's only, whatever the umask
        private_file(path)
        self._conn = _connect(path)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.executescript(_SCHEMA + SQLITE_TABLE)
            _migrate(self._conn)
        self._writer = _Writer(path, max_pending)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []

    # -- keys and metadata ---------------------------------------------------------------------------------

    def _keys(self, where: str, params: tuple[Any, ...]) -> list[ApiKey]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT id, name, prefix, admin, created, revoked, projects FROM api_keys {where}", params
            ).fetchall()
        return [
            ApiKey(
                key_id,
                name,
                prefix,
                bool(admin),
                created,
                revoked,
                None if projects is None else tuple(orjson.loads(projects)),
            )
            for key_id, name, prefix, admin, created, revoked, projects in rows
        ]

    def find_key(self, key_hash: str) -> ApiKey | None:
        found = self._keys("WHERE hash = ?", (key_hash,))
        return found[0] if found else None

    def get_key(self, key_id: int) -> ApiKey | None:
        found = self._keys("WHERE id = ?", (key_id,))
        return found[0] if found else None

    def add_key(
        self, key_hash: str, prefix: str, name: str, *, admin: bool, projects: tuple[str, ...] | None = None
    ) -> ApiKey:
        if name == ADMIN_OWNER and not admin:
            raise BadRequest(f"the name {ADMIN_OWNER!r} is kept for admin keys; pick another")
        stored = None if projects is None else orjson.dumps(list(projects)).decode()
        with self._lock:
            try:
                cur = self._conn.execute(
                    "INSERT INTO api_keys (hash, prefix, name, admin, created, projects) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (key_hash, prefix, name, int(admin), now_ms(), stored),
                )
            except sqlite3.IntegrityError:
                raise Conflict("this key exists already") from None
        assert cur.lastrowid is not None
        key = self.get_key(cur.lastrowid)
        assert key is not None
        return key

    def list_keys(self) -> list[ApiKey]:
        return self._keys("ORDER BY id", ())

    def revoke_key(self, ident: str) -> ApiKey | None:
        found = self._keys("WHERE CAST(id AS TEXT) = ? OR prefix = ?", (ident, ident))
        if len(found) != 1:
            return None
        with self._lock:
            self._conn.execute(
                "UPDATE api_keys SET revoked = ? WHERE id = ? AND revoked IS NULL", (now_ms(), found[0].id)
            )
        return self.get_key(found[0].id)

    def signing_secret(self) -> bytes:
        with self._lock:
            self._conn.execute(
                "INSERT OR IGNORE INTO meta (name, value) VALUES ('signing_secret', ?)",
                (secrets.token_bytes(32),),
            )
            row = self._conn.execute("SELECT value FROM meta WHERE name = 'signing_secret'").fetchone()
        return bytes(row[0])

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            self._conn.execute("UPDATE runs SET last_seen = ? WHERE status = 'RUNNING'", (now_ms(),))
        self._writer.start()

    def close(self) -> None:
        if self._writer.is_alive():
            self._writer.stop()
        for conn in self._readers:
            conn.close()
        with self._lock:
            self._conn.close()

    def pending_writes(self) -> int:
        """Writes waiting for the writer thread (the write-queue depth of ``/metrics-prom``)."""
        return self._writer._pending

    # -- writes --------------------------------------------------------------------------------------------

    async def _write(self, fn: Callable[[sqlite3.Connection], T], idem: tuple[str, str] | None = None) -> T:
        job = _Job(fn, idem)
        self._writer.submit(job)
        result: T = await asyncio.wrap_future(job.future)
        return result

    async def apply(
        self, op: Op, idempotency: tuple[str, str] | None = None, key: ApiKey | None = None
    ) -> dict[str, Any]:
        handler = HANDLERS[type(op)]
        return await self._write(lambda conn: handler(conn, op, key), idempotency)

    async def heartbeat(self, run_id: int, key: ApiKey | None = None) -> str:
        def job(conn: sqlite3.Connection) -> str:
            row = conn.execute(
                "UPDATE runs SET last_seen = ? WHERE id = ? RETURNING status, cancel_requested, owner",
                (now_ms(), run_id),
            ).fetchone()
            if row is None:
                raise NotFound(f"run {run_id} does not exist")
            status, cancel, owner = row
            check_owner(key, run_id, owner)
            return "CANCELLED" if cancel and status == "RUNNING" else str(status)

        return await self._write(job)

    async def request_cancel(self, run_id: int, key: ApiKey | None = None) -> None:
        def job(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "UPDATE runs SET cancel_requested = 1 WHERE id = ? RETURNING owner", (run_id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"run {run_id} does not exist")
            check_owner(key, run_id, row[0])

        await self._write(job)

    async def reap(self, silent_since: int) -> list[int]:
        meta = orjson.dumps(
            {"type": "HeartbeatTimeout", "message": "the server heard nothing from this run for too long"}
        ).decode()

        def job(conn: sqlite3.Connection) -> list[int]:
            rows = conn.execute(
                "UPDATE runs SET status = 'FAILED', status_metadata = ?, updated = ? "
                "WHERE status = 'RUNNING' AND last_seen < ? RETURNING id",
                (meta, now_ms(), silent_since),
            ).fetchall()
            return [row[0] for row in rows]

        return await self._write(job)

    async def file_uploaded(self, file_id: int, size: int) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE files SET uploaded = 1, size = ? WHERE id = ?", (size, file_id))

        await self._write(job)

    async def prune(self, before: int) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM idempotency WHERE created < ?", (before,))

        await self._write(job)

    # -- reads ---------------------------------------------------------------------------------------------

    async def read_sql(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return await self._read(lambda conn: conn.execute(sql, tuple(params)).fetchall())

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _connect(self._path)
            conn.execute("PRAGMA query_only = 1")
            conn.execute(f"PRAGMA mmap_size = {READ_MMAP_BYTES}")  # series read without a copy per page
            with self._lock:
                self._readers.append(conn)
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await anyio.to_thread.run_sync(lambda: fn(self._reader()))

    async def list_projects(self, owner: str | None = None) -> list[dict[str, Any]]:
        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                "SELECT project, COUNT(*), MAX(updated) FROM runs WHERE ? IS NULL OR owner = ? "
                "GROUP BY project ORDER BY 3 DESC",
                (owner, owner),
            ).fetchall()
            return [{"name": name, "runs": count, "updated": updated} for name, count, updated in rows]

        return await self._read(read)

    async def list_runs(self, project: str, owner: str | None = None) -> list[dict[str, Any]]:
        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                f"SELECT {RUN_COLUMNS}, {SUMMARY_COLUMN} FROM runs "
                "WHERE project = ? AND (? IS NULL OR owner = ?) ORDER BY id DESC",
                (project, owner, owner),
            ).fetchall()
            return [{**run_summary(row), "summary": summary_of(row[-1])} for row in rows]

        return await self._read(read)

    async def last_values(
        self, project: str, keys: list[str], owner: str | None = None
    ) -> dict[int, dict[str, float]]:
        def read(conn: sqlite3.Connection) -> dict[int, dict[str, float]]:
            out: dict[int, dict[str, float]] = {}
            rows = conn.execute(
                "SELECT s.run_id, s.name, substr(c.vals, -8, 8) FROM runs r JOIN series s ON s.run_id = r.id "
                "JOIN metric_chunks c ON c.id = (SELECT MAX(id) FROM metric_chunks WHERE series_id = s.id) "
                "WHERE r.project = ? AND (? IS NULL OR r.owner = ?) "
                f"AND s.name IN ({','.join('?' * len(keys))})",
                (project, owner, owner, *keys),
            )
            for run_id, name, last in rows:
                out.setdefault(run_id, {})[name] = float(np.frombuffer(last, dtype="<f8")[0])
            return out

        return await self._read(read)

    async def get_run(self, run_id: int, *, detail: bool = False) -> dict[str, Any] | None:
        def read(conn: sqlite3.Connection) -> dict[str, Any] | None:
            row = conn.execute(
                f"SELECT {RUN_COLUMNS}{_DETAIL_COLUMNS} FROM runs WHERE id = ?", (run_id,)
            ).fetchone()
            if row is None:
                return None
            out = run_summary(row)
            if detail:
                alerts = conn.execute(
                    "SELECT timestamp, level, title, body, email, url FROM alerts "
                    "WHERE run_id = ? ORDER BY id",
                    (run_id,),
                )
                out.update(run_detail(row[11:], alerts))
            return out

        return await self._read(read)

    async def metric(self, run_id: int, key: str) -> Series | None:
        def read(conn: sqlite3.Connection) -> Series | None:
            row = conn.execute(
                "SELECT id FROM series WHERE run_id = ? AND name = ?", (run_id, key)
            ).fetchone()
            if row is None:
                return None
            chunks = conn.execute(
                "SELECT steps, times, vals FROM metric_chunks WHERE series_id = ? ORDER BY id", (row[0],)
            ).fetchall()
            steps = np.frombuffer(b"".join(c[0] for c in chunks), dtype="<i8")
            times = np.frombuffer(b"".join(c[1] for c in chunks), dtype="<i8")
            values = np.frombuffer(b"".join(c[2] for c in chunks), dtype="<f8")
            if steps.size > 1 and bool(np.any(steps[1:] < steps[:-1])):
                order = np.argsort(steps, kind="stable")
                steps, times, values = steps[order], times[order], values[order]
            return Series(steps, times, values)

        return await self._read(read)

    async def block_points(self, run_id: int, keys: list[str], max_points: int) -> dict[str, Downsampled]:
        return await self._read(lambda conn: sqlite_points(conn, run_id, keys, max_points))

    async def log_names(self, run_id: int) -> list[dict[str, str]]:
        def read(conn: sqlite3.Connection) -> list[dict[str, str]]:
            rows = conn.execute("SELECT name, type FROM series WHERE run_id = ? ORDER BY name", (run_id,))
            return [{"name": name, "type": kind} for name, kind in rows]

        return await self._read(read)

    async def logs(self, run_id: int, limit: int, offset: int) -> list[dict[str, Any]]:
        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                "SELECT time, line_number, log_type, message FROM logs WHERE run_id = ? "
                "ORDER BY id LIMIT ? OFFSET ?",
                (run_id, limit, offset),
            )
            return [
                {"time": t, "lineNumber": line, "logType": kind, "message": message}
                for t, line, kind, message in rows
            ]

        return await self._read(read)

    async def data(
        self, run_id: int, key: str, limit: int | None = None, offset: int = 0
    ) -> list[dict[str, Any]] | None:
        def read(conn: sqlite3.Connection) -> list[dict[str, Any]] | None:
            row = conn.execute(
                "SELECT id FROM series WHERE run_id = ? AND name = ?", (run_id, key)
            ).fetchone()
            if row is None:
                return None
            rows = conn.execute(
                "SELECT step, time, data_type, payload FROM data_points "
                "WHERE series_id = ? ORDER BY step, id LIMIT ? OFFSET ?",
                (row[0], -1 if limit is None else limit, offset),
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

        return await self._read(read)

    async def files(self, run_id: int, key: str) -> list[FileRow] | None:
        def read(conn: sqlite3.Connection) -> list[FileRow] | None:
            row = conn.execute(
                "SELECT id FROM series WHERE run_id = ? AND name = ?", (run_id, key)
            ).fetchone()
            if row is None:
                return None
            rows = conn.execute(
                f"SELECT {_FILE_COLUMNS} FROM files f JOIN series s ON s.id = f.series_id "
                "WHERE f.series_id = ? ORDER BY f.step, f.id",
                (row[0],),
            ).fetchall()
            return [_file_row(r) for r in rows]

        return await self._read(read)

    async def get_project_setting(self, project: str, name: str, owner: str = ADMIN_OWNER) -> str | None:
        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT value FROM project_settings WHERE project = ? AND owner = ? AND name = ?",
                (project, owner, name),
            ).fetchone()
            return None if row is None else str(row[0])

        return await self._read(read)

    async def put_project_setting(
        self, project: str, name: str, value_json: str | None, owner: str = ADMIN_OWNER
    ) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM project_settings WHERE project = ? AND owner = ? AND name = ?",
                (project, owner, name),
            )
            if value_json is not None:
                conn.execute(
                    "INSERT INTO project_settings VALUES (?, ?, ?, ?, ?)",
                    (project, owner, name, value_json, now_ms()),
                )

        await self._write(job)

    async def get_file(self, file_id: int) -> FileRow | None:
        def read(conn: sqlite3.Connection) -> FileRow | None:
            row = conn.execute(
                f"SELECT {_FILE_COLUMNS} FROM files f JOIN series s ON s.id = f.series_id WHERE f.id = ?",
                (file_id,),
            ).fetchone()
            return None if row is None else _file_row(row)

        return await self._read(read)


def _file_row(row: tuple[Any, ...]) -> FileRow:
    (file_id, run_id, key_id, log_name, name, size, file_type, t, step, sample, caption, uploaded) = row
    return FileRow(
        file_id, run_id, key_id, log_name, name, size, file_type, t, step, sample, caption, bool(uploaded)
    )
