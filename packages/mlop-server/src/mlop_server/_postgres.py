"""The PostgreSQL storage backend: a pool of async psycopg connections, one transaction per write.

Every write is one transaction on a pooled connection: the request's idempotency key is claimed first
(``INSERT ... ON CONFLICT DO NOTHING`` on its primary key: a second request with the same key waits for the
first to commit, then gets its answer), the op runs (locking the run's row, so writes of one run are taken
in turn), and the answer is stored with the claim before the commit. Several server processes may share the
database: nothing that matters lives in a process. Keys and the upload signing secret are read through one
synchronous connection (the HTTP layer checks keys synchronously). The periodic work (the reaper) is done by
the process holding a session advisory lock, taken over by another process when its holder goes away.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

import orjson

from mlop_server import _pg_reads as reads
from mlop_server._errors import BadRequest, Conflict, NotFound, Unavailable
from mlop_server._ops import Op
from mlop_server._pg_schema import (
    LEADER_LOCK,
    SCHEMA_VERSION,
    configure,
    connect,
    describe_target,
    migrate,
)
from mlop_server._pg_writes import HANDLERS
from mlop_server._sqlite_writes import check_owner, now_ms
from mlop_server._storage import ADMIN_OWNER, ApiKey, Downsampled, FileRow, Series, Storage

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg_pool import AsyncConnectionPool

__all__ = ["PostgresStorage"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Connections one server process keeps open at most.
POOL_SIZE: Final = 16
#: Times a write is retried after a deadlock or a serialization failure.
RETRIES: Final = 5
_KEY_COLUMNS: Final = "id, name, prefix, admin, created, revoked, projects"


def _key(row: tuple[Any, ...]) -> ApiKey:
    key_id, name, prefix, admin, created, revoked, projects = row
    return ApiKey(
        key_id,
        name,
        prefix,
        bool(admin),
        created,
        revoked,
        None if projects is None else tuple(orjson.loads(projects)),
    )


class PostgresStorage(Storage):
    """Storage in a PostgreSQL database; migrates it at open (under an advisory lock).

    Args:
        url: ``postgresql://USER[:PASSWORD]@HOST:PORT/DB`` (libpq also reads ``PGPASSWORD`` and ``.pgpass``).
        max_pending: Writes that may wait for a connection before new ones answer 503.
        pool_size: Connections this process keeps at most.
    """

    def __init__(self, url: str, *, max_pending: int = 1024, pool_size: int = POOL_SIZE) -> None:
        self._url = url
        self.target = describe_target(url)
        migrate(url)
        self._conn = connect(url)
        self._lock = threading.Lock()
        self._max_pending = max_pending
        self._pool_size = pool_size
        self._pool: AsyncConnectionPool[AsyncConnection[Any]] | None = None
        self._pool_lock: asyncio.Lock | None = None
        self._leader: AsyncConnection[Any] | None = None
        self._leading = False

    def __repr__(self) -> str:
        return f"PostgresStorage({self.target!r})"

    # -- keys and metadata ---------------------------------------------------------------------------------

    def _sync(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """One statement on the keys' connection, connected again once when the database dropped it (a
        restart of PostgreSQL)."""
        import psycopg

        with self._lock:
            for attempt in (1, 2):
                try:
                    cur = self._conn.execute(sql.encode(), params, binary=True)
                    return cur.fetchall() if cur.description else []
                except psycopg.OperationalError:
                    if attempt == 2 or not self._conn.broken:
                        raise
                    logger.warning("the database connection was lost; connecting again")
                    self._conn.close()
                    self._conn = connect(self._url)
        raise AssertionError("unreachable")

    def find_key(self, key_hash: str) -> ApiKey | None:
        rows = self._sync(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE hash = %s", (key_hash,))
        return _key(rows[0]) if rows else None

    def get_key(self, key_id: int) -> ApiKey | None:
        rows = self._sync(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = %s", (key_id,))
        return _key(rows[0]) if rows else None

    def add_key(
        self, key_hash: str, prefix: str, name: str, *, admin: bool, projects: tuple[str, ...] | None = None
    ) -> ApiKey:
        if name == ADMIN_OWNER and not admin:
            raise BadRequest(f"the name {ADMIN_OWNER!r} is kept for admin keys; pick another")
        stored = None if projects is None else orjson.dumps(list(projects)).decode()
        rows = self._sync(
            "INSERT INTO api_keys (hash, prefix, name, admin, created, projects) "
            "VALUES (%s, %s, %s, %s, %s, %s) "
            f"ON CONFLICT (hash) DO NOTHING RETURNING {_KEY_COLUMNS}",
            (key_hash, prefix, name, admin, now_ms(), stored),
        )
        if not rows:
            raise Conflict("this key exists already")
        return _key(rows[0])

    def list_keys(self) -> list[ApiKey]:
        return [_key(row) for row in self._sync(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY id")]

    def revoke_key(self, ident: str) -> ApiKey | None:
        by_id = int(ident) if ident.isdigit() and len(ident) < 19 else -1
        found = self._sync(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = %s OR prefix = %s", (by_id, ident)
        )
        if len(found) != 1:
            return None
        key = _key(found[0])
        self._sync("UPDATE api_keys SET revoked = %s WHERE id = %s AND revoked IS NULL", (now_ms(), key.id))
        return self.get_key(key.id)

    def signing_secret(self) -> bytes:
        self._sync(
            "INSERT INTO meta (name, value) VALUES ('signing_secret', %s) ON CONFLICT (name) DO NOTHING",
            (secrets.token_hex(32),),
        )
        rows = self._sync("SELECT value FROM meta WHERE name = 'signing_secret'")
        return bytes.fromhex(rows[0][0])

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        self._sync("UPDATE runs SET last_seen = %s WHERE status = 'RUNNING'", (now_ms(),))

    async def _open_pool(self) -> AsyncConnectionPool[AsyncConnection[Any]]:
        if self._pool is not None:
            return self._pool
        if self._pool_lock is None:
            self._pool_lock = asyncio.Lock()
        async with self._pool_lock:
            if self._pool is None:
                from psycopg_pool import AsyncConnectionPool

                async def setup(conn: AsyncConnection[Any]) -> None:
                    configure(conn)

                pool: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
                    self._url,
                    min_size=1,
                    max_size=self._pool_size,
                    kwargs={"autocommit": True},
                    configure=setup,
                    max_waiting=self._max_pending,
                    timeout=30.0,
                    open=False,
                    name="mlop-server",
                )
                await pool.open()
                self._pool = pool
        return self._pool

    async def aclose(self) -> None:
        """Close the pool and the leader's connection (in the event loop that used them)."""
        if self._leader is not None:
            await self._leader.close()
            self._leader = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    async def readiness(self) -> dict[str, Any]:
        """``/ready``: the database answers, at this code's schema version (``ready`` False otherwise)."""

        async def read(conn: AsyncConnection[Any]) -> dict[str, Any]:
            cur = await conn.execute(b"SELECT COALESCE(MAX(version), 0) FROM schema_version")
            row = await cur.fetchone()
            version = int(row[0]) if row else 0
            state: dict[str, Any] = {"database": "ok", "schema": version, "expected": SCHEMA_VERSION}
            if version != SCHEMA_VERSION:
                state["ready"] = False
                state["message"] = (
                    f"the database has schema version {version}, this server expects {SCHEMA_VERSION}"
                )
            return state

        return await self._read(read)

    def pool_stats(self) -> dict[str, int]:
        """The connection pool's counters (psycopg_pool's ``get_stats()``), for the Prometheus metrics."""
        return dict(self._pool.get_stats()) if self._pool is not None else {}

    async def lead(self) -> bool:
        """True when this process holds the leader lock (taking it when free): it does the periodic work.

        The lock is a session lock on a connection of its own, kept open: it is released when this process
        (or its connection) goes away, and another process takes it on its next try.
        """
        import psycopg

        if self._leader is not None and not self._leader.closed:
            try:
                if self._leading:
                    await self._leader.execute(b"SELECT 1")  # still connected: still holding it
                    return True
                cur = await self._leader.execute(b"SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,))
                row = await cur.fetchone()
                self._leading = bool(row and row[0])
                return self._leading
            except psycopg.Error:
                await self._leader.close()
        self._leader, self._leading = None, False
        self._leader = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
        return await self.lead()

    # -- writes --------------------------------------------------------------------------------------------

    async def _transaction(self, fn: Callable[[AsyncConnection[Any]], Awaitable[T]]) -> T:
        """Run ``fn`` in one transaction, again after a deadlock or a serialization failure, and on another
        connection when the database had dropped this one before the transaction began (nothing was sent)."""
        import psycopg
        from psycopg_pool import PoolTimeout, TooManyRequests

        pool = await self._open_pool()
        for attempt in range(RETRIES + 1):
            began = False
            try:
                async with pool.connection() as conn, conn.transaction():
                    began = True
                    return await fn(conn)
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                if attempt == RETRIES:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
            except (TooManyRequests, PoolTimeout):
                raise Unavailable("the server is behind on writes; retry later") from None
            except psycopg.OperationalError:
                if began or attempt == RETRIES:
                    raise  # it may have been applied: the client's retry (with its idempotency key) decides
                logger.warning("a pooled connection was lost (the database restarted?); writing on another")
                await pool.check()  # drops the pool's other dropped connections at once
        raise AssertionError("unreachable")

    async def _read(self, fn: Callable[[AsyncConnection[Any]], Awaitable[T]]) -> T:
        """Run a read on a pooled connection; once more on another when the database dropped that one."""
        import psycopg
        from psycopg_pool import PoolTimeout, TooManyRequests

        pool = await self._open_pool()
        for attempt in (1, 2):
            used: AsyncConnection[Any] | None = None
            try:
                async with pool.connection() as conn:
                    used = conn
                    return await fn(conn)
            except (TooManyRequests, PoolTimeout):
                raise Unavailable("the server is busy; retry later") from None
            except psycopg.OperationalError:
                if attempt == 2 or used is None or not used.broken:
                    raise
                logger.warning("a pooled connection was lost (the database restarted?); reading again")
                await pool.check()
        raise AssertionError("unreachable")

    async def apply(
        self, op: Op, idempotency: tuple[str, str] | None = None, key: ApiKey | None = None
    ) -> dict[str, Any]:
        handler = HANDLERS[type(op)]

        async def job(conn: AsyncConnection[Any]) -> dict[str, Any]:
            if idempotency is not None:
                cur = await conn.execute(
                    b"INSERT INTO idempotency (scope, key, answer, created) VALUES (%s, %s, NULL, %s) "
                    b"ON CONFLICT (scope, key) DO NOTHING RETURNING 1",
                    (*idempotency, now_ms()),
                )
                if await cur.fetchone() is None:  # applied before (or just now, by another process)
                    cur = await conn.execute(
                        b"SELECT answer FROM idempotency WHERE scope = %s AND key = %s",
                        idempotency,
                        binary=True,
                    )
                    row = await cur.fetchone()
                    if row is not None and row[0] is not None:
                        stored: dict[str, Any] = orjson.loads(row[0])
                        return stored
            answer = await handler(conn, op, key)
            if idempotency is not None:
                await conn.execute(
                    b"UPDATE idempotency SET answer = %s WHERE scope = %s AND key = %s",
                    (orjson.dumps(answer).decode(), *idempotency),
                )
            return answer

        return await self._transaction(job)

    async def heartbeat(self, run_id: int, key: ApiKey | None = None) -> str:
        async def job(conn: AsyncConnection[Any]) -> str:
            cur = await conn.execute(
                b"UPDATE runs SET last_seen = %s WHERE id = %s RETURNING status, cancel_requested, owner",
                (now_ms(), run_id),
                binary=True,
            )
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"run {run_id} does not exist")
            status, cancel, owner = row
            check_owner(key, run_id, owner)
            return "CANCELLED" if cancel and status == "RUNNING" else str(status)

        return await self._transaction(job)

    async def request_cancel(self, run_id: int, key: ApiKey | None = None) -> None:
        async def job(conn: AsyncConnection[Any]) -> None:
            cur = await conn.execute(
                b"UPDATE runs SET cancel_requested = true WHERE id = %s RETURNING owner",
                (run_id,),
                binary=True,
            )
            row = await cur.fetchone()
            if row is None:
                raise NotFound(f"run {run_id} does not exist")
            check_owner(key, run_id, row[0])

        await self._transaction(job)

    async def reap(self, silent_since: int) -> list[int]:
        meta = orjson.dumps(
            {"type": "HeartbeatTimeout", "message": "the server heard nothing from this run for too long"}
        ).decode()

        async def job(conn: AsyncConnection[Any]) -> list[int]:
            cur = await conn.execute(
                b"UPDATE runs SET status = 'FAILED', status_metadata = %s, updated = %s "
                b"WHERE status = 'RUNNING' AND last_seen < %s RETURNING id",
                (meta, now_ms(), silent_since),
            )
            return [row[0] for row in await cur.fetchall()]

        return await self._transaction(job)

    async def file_uploaded(self, file_id: int, size: int) -> None:
        async def job(conn: AsyncConnection[Any]) -> None:
            await conn.execute(b"UPDATE files SET uploaded = true, size = %s WHERE id = %s", (size, file_id))

        await self._transaction(job)

    async def prune(self, before: int) -> None:
        async def job(conn: AsyncConnection[Any]) -> None:
            await conn.execute(
                b"DELETE FROM idempotency WHERE created < %s AND answer IS NOT NULL", (before,)
            )

        await self._transaction(job)

    # -- reads ---------------------------------------------------------------------------------------------

    dialect = "postgresql"

    async def read_sql(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        async def read(conn: AsyncConnection[Any]) -> list[tuple[Any, ...]]:
            cur = await conn.execute(sql.encode(), tuple(params), binary=True)
            return await cur.fetchall()

        return await self._read(read)

    async def get_project_setting(self, project: str, name: str, owner: str = ADMIN_OWNER) -> str | None:
        async def read(conn: AsyncConnection[Any]) -> str | None:
            cur = await conn.execute(
                b"SELECT value FROM project_settings WHERE project = %s AND owner = %s AND name = %s",
                (project, owner, name),
                binary=True,
            )
            row = await cur.fetchone()
            return None if row is None else str(row[0])

        return await self._read(read)

    async def put_project_setting(
        self, project: str, name: str, value_json: str | None, owner: str = ADMIN_OWNER
    ) -> None:
        async def job(conn: AsyncConnection[Any]) -> None:
            if value_json is None:
                await conn.execute(
                    b"DELETE FROM project_settings WHERE project = %s AND owner = %s AND name = %s",
                    (project, owner, name),
                )
            else:
                await conn.execute(
                    b"INSERT INTO project_settings (project, owner, name, value, updated) "
                    b"VALUES (%s, %s, %s, %s, %s) ON CONFLICT (project, owner, name) "
                    b"DO UPDATE SET value = excluded.value, updated = excluded.updated",
                    (project, owner, name, value_json, now_ms()),
                )

        await self._transaction(job)

    async def list_projects(self, owner: str | None = None) -> list[dict[str, Any]]:
        return await self._read(lambda conn: reads.list_projects(conn, owner))

    async def list_runs(self, project: str, owner: str | None = None) -> list[dict[str, Any]]:
        return await self._read(lambda conn: reads.list_runs(conn, project, owner))

    async def last_values(
        self, project: str, keys: list[str], owner: str | None = None
    ) -> dict[int, dict[str, float]]:
        return await self._read(lambda conn: reads.last_values(conn, project, keys, owner))

    async def get_run(self, run_id: int, *, detail: bool = False) -> dict[str, Any] | None:
        return await self._read(lambda conn: reads.get_run(conn, run_id, detail))

    async def metric(self, run_id: int, key: str) -> Series | None:
        return await self._read(lambda conn: reads.metric(conn, run_id, key))

    async def block_points(self, run_id: int, keys: list[str], max_points: int) -> dict[str, Downsampled]:
        return await self._read(lambda conn: reads.block_points(conn, run_id, keys, max_points))

    async def log_names(self, run_id: int) -> list[dict[str, str]]:
        return await self._read(lambda conn: reads.log_names(conn, run_id))

    async def logs(self, run_id: int, limit: int, offset: int) -> list[dict[str, Any]]:
        return await self._read(lambda conn: reads.logs(conn, run_id, limit, offset))

    async def data(
        self, run_id: int, key: str, limit: int | None = None, offset: int = 0
    ) -> list[dict[str, Any]] | None:
        return await self._read(lambda conn: reads.data(conn, run_id, key, limit, offset))

    async def files(self, run_id: int, key: str) -> list[FileRow] | None:
        return await self._read(lambda conn: reads.file_rows(conn, run_id, key))

    async def get_file(self, file_id: int) -> FileRow | None:
        return await self._read(lambda conn: reads.get_file(conn, file_id))
