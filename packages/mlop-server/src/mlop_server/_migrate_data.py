"""``mlop server migrate-data``: copy an embedded (SQLite) server into PostgreSQL, resumably and exactly once.

Tables are copied in a fixed order (keys and runs before what hangs off them), each in batches in rowid order.
A batch's rows and its progress mark (the last rowid copied, in the table ``mlop_migrate_data`` of the target)
commit in one transaction, so a copy interrupted anywhere (Ctrl-C, a lost connection, ``kill -9``) goes on
from the last committed batch when run again, and nothing is doubled; rows also go in with ``ON CONFLICT DO
NOTHING``. Ids are kept (runs, keys, files keep their URLs and key hashes keep working), and the identity
sequences are moved past them at the end. Metric points, kept in packed chunks by SQLite, go into the
narrow ``metrics`` table through binary ``COPY`` built with numpy; ``seq`` is ``chunk id << 32 | position``,
which keeps equal steps in arrival order. Uploaded files are copied into the new server's files folder.
"""

from __future__ import annotations

import argparse
import math
import os
import sqlite3
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

if TYPE_CHECKING:
    import numpy as np
    import psycopg

    from mlop_server._files import FileStore

__all__ = ["Progress", "add_parser", "migrate_data"]

PROGRESS_TABLE: Final = "mlop_migrate_data"
DB_ENV: Final = "MLOP_SERVER_DB"
BATCH_ROWS: Final = 5_000
#: Metric chunks per batch (a chunk holds up to a few thousand points).
BATCH_CHUNKS: Final = 200
_SOURCE_MARK: Final = "_source"
_METRIC_COLUMNS: Final = ["run_id", "series_id", "step", "seq", "time", "value"]
_COPY_HEADER: Final = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)


def _copy_row() -> np.dtype[Any]:
    """One row of binary ``COPY`` for ``metrics``: a field count, then each field's length and value."""
    import numpy as np

    fields: list[tuple[str, str]] = [("fields", ">i2")]
    for name in _METRIC_COLUMNS:
        fields += [(f"{name}_len", ">i4"), (name, ">f8" if name == "value" else ">i8")]
    return np.dtype(fields)


class MigrationError(Exception):
    """The copy cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class _Table:
    """How one SQLite table goes into PostgreSQL."""

    name: str
    joins: str = ""
    extra: dict[str, str] = field(default_factory=dict)  # target column -> SQLite expression
    conflict: str = "ON CONFLICT DO NOTHING"


#: The tables in the order they are copied; other tables both databases have follow in name order.
_TABLES: Final = (
    _Table("meta", conflict="ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value"),  # the signing secret
    _Table("api_keys"),
    _Table("runs"),
    _Table("series"),
    _Table("metric_chunks"),  # -> metrics
    _Table("metric_blocks", "JOIN series s ON s.id = t.series_id", {"run_id": "s.run_id"}),  # summaries
    _Table("data_points", "JOIN series s ON s.id = t.series_id", {"run_id": "s.run_id"}),
    _Table("logs"),
    _Table("alerts"),
    _Table("files"),
    _Table("idempotency"),
)
_NOT_COPIED: Final = {"sqlite_sequence", "sqlite_stat1", "schema_version", "run_fields", PROGRESS_TABLE}


class Progress:
    """A progress bar on ``stream``: redrawn in place on a terminal, a line per tenth elsewhere."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._out = stream or sys.stderr
        self._tty = self._out.isatty()
        self._name = ""
        self._total = 0
        self._done = 0
        self._shown = -1
        self._drawn = 0.0

    def start(self, name: str, total: int, done: int = 0) -> None:
        """Begin a table of ``total`` rows of which ``done`` were copied by an earlier run."""
        self._name, self._total, self._done, self._shown = name, total, done, -1
        self._draw(force=True)

    def advance(self, rows: int) -> None:
        """``rows`` more rows are copied."""
        self._done += rows
        self._draw()

    def finish(self) -> None:
        """The table is copied."""
        self._done = max(self._done, self._total)
        self._draw(force=self._tty or self._shown < 10)
        if self._tty:
            self._out.write("\n")
            self._out.flush()

    def _draw(self, force: bool = False) -> None:
        share = self._done / self._total if self._total else 1.0
        tenth = int(share * 10)
        counts = f"{self._done:,}/{self._total:,}"
        if self._tty:
            now = time.monotonic()
            if not force and now - self._drawn < 0.1:
                return
            self._drawn = now
            bar = "#" * int(share * 30)
            self._out.write(f"\r{self._name:<16} [{bar:<30}] {share:4.0%} {counts}")
        elif force or tenth > self._shown:
            self._shown = tenth
            self._out.write(f"{self._name}: {share:.0%} ({counts} rows)\n")
        self._out.flush()


def _source_columns(src: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in src.execute(f'PRAGMA table_info("{table}")')]


def _target_columns(dst: psycopg.Connection[Any], table: str) -> dict[str, tuple[str, bool]]:
    """The columns of ``table`` in PostgreSQL: name -> (type, nullable)."""
    rows = dst.execute(
        "SELECT column_name::text, data_type::text, is_nullable::text FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name::text = %s ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    return {_text(name): (_text(kind), _text(nullable) == "YES") for name, kind, nullable in rows}


def _text(value: Any) -> str:
    return bytes(value).decode() if isinstance(value, bytes | bytearray | memoryview) else str(value)


def _placeholder(kind: str) -> str:
    return f"%s::{kind}" if kind in ("json", "jsonb") else "%s"


def _as_text(value: Any) -> Any:
    """SQLite text as it is; a blob (an idempotency answer's JSON) as its UTF-8 text, else as hex."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return value.hex()
    return value


def _converter(kind: str, nullable: bool) -> Callable[[Any], Any]:
    """How a SQLite value becomes the value of a PostgreSQL column of this type.

    Strings go as ``str`` through the backend's own adapters (``_pg_schema.configure``), which keep NUL
    characters; a ``NOT NULL`` float column gets NaN for SQLite's NULL (SQLite stores NaN as NULL).
    """
    if kind == "boolean":
        return lambda v: None if v is None else bool(v)
    if kind in ("text", "character varying", "json", "jsonb"):
        return _as_text
    if kind == "bytea":
        return lambda v: v.encode() if isinstance(v, str) else v
    if kind in ("double precision", "real") and not nullable:
        return lambda v: math.nan if v is None else v
    return lambda v: v


def _meta_value(names: list[str], row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A raw ``meta`` row with the signing secret as hex text, as the PostgreSQL backend keeps it."""
    if row[names.index("name")] != "signing_secret" or not isinstance(row[names.index("value")], bytes):
        return row
    at = names.index("value")
    return (*row[:at], row[at].hex(), *row[at + 1 :])


def _has_rowid(src: sqlite3.Connection, table: str) -> bool:
    try:
        src.execute(f'SELECT rowid FROM "{table}" LIMIT 1')
    except sqlite3.OperationalError:
        return False
    return True


class _Copier:
    def __init__(
        self,
        src: sqlite3.Connection,
        dst: psycopg.Connection[Any],
        source_files: Path,
        target_files: FileStore | None,
        progress: Progress,
    ) -> None:
        self.src, self.dst, self.progress = src, dst, progress
        self.source_files, self.target_files = source_files, target_files
        self.copied: dict[str, int] = {}

    # -- progress marks --------------------------------------------------------------------------------------

    def mark(self, table: str) -> tuple[int, bool, int]:
        row = self.dst.execute(
            f"SELECT last, done, rows FROM {PROGRESS_TABLE} WHERE name = %s", (table.encode(),)
        ).fetchone()
        return (int(row[0]), bool(row[1]), int(row[2])) if row else (0, False, 0)

    def _save(self, table: str, last: int, rows: int, done: bool = False) -> None:
        self.dst.execute(
            f"INSERT INTO {PROGRESS_TABLE} (name, last, done, rows) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (name) DO UPDATE SET last = EXCLUDED.last, done = EXCLUDED.done, "
            f"rows = {PROGRESS_TABLE}.rows + EXCLUDED.rows",
            (table.encode(), last, done, rows),
        )

    # -- tables ----------------------------------------------------------------------------------------------

    def table(self, spec: _Table, batch: int) -> None:
        if spec.name == "metric_chunks":
            self.metrics()
            return
        last, done, rows_before = self.mark(spec.name)
        target = _target_columns(self.dst, spec.name)
        present = _source_columns(self.src, spec.name)
        columns = [c for c in present if c in target]
        for lost in sorted(set(present) - set(target)):
            print(
                f"migrate-data: warning: {spec.name}.{lost} has no column in PostgreSQL; not copied",
                file=sys.stderr,
            )
        extra = {c: e for c, e in spec.extra.items() if c in target and c not in columns}
        names = [*columns, *extra]
        select = ", ".join([*(f't."{c}"' for c in columns), *extra.values()])
        total = self.src.execute(f'SELECT COUNT(*) FROM "{spec.name}"').fetchone()[0]
        self.progress.start(spec.name, total, rows_before)
        if done:
            self.progress.finish()
            return
        convert = [_converter(*target[c]) for c in names]
        insert = (
            f"INSERT INTO {spec.name} ({', '.join(names)}) "
            f"VALUES ({', '.join(_placeholder(target[c][0]) for c in names)}) {spec.conflict}"
        )
        rowid = _has_rowid(self.src, spec.name)
        while True:
            if rowid:
                rows = self.src.execute(
                    f'SELECT t.rowid, {select} FROM "{spec.name}" t {spec.joins} '
                    "WHERE t.rowid > ? ORDER BY t.rowid LIMIT ?",
                    (last, batch),
                ).fetchall()
            else:  # small tables without rowid (idempotency answers): one batch
                rows = [
                    (0, *r) for r in self.src.execute(f'SELECT {select} FROM "{spec.name}" t {spec.joins}')
                ]
            if not rows:
                break
            raw = [_meta_value(names, row[1:]) if spec.name == "meta" else row[1:] for row in rows]
            values = [tuple(f(v) for f, v in zip(convert, row, strict=True)) for row in raw]
            with self.dst.transaction():
                if spec.name == "files":
                    self._copy_files(rows, names)
                with self.dst.cursor() as cur:
                    cur.executemany(insert, values)
                last = int(rows[-1][0])
                self._save(spec.name, last, len(rows), done=not rowid)
            self.progress.advance(len(rows))
            if not rowid:
                break
        with self.dst.transaction():
            self._save(spec.name, last, 0, done=True)
        self.progress.finish()

    def metrics(self) -> None:
        target = _target_columns(self.dst, "metrics")
        if list(target) != _METRIC_COLUMNS:
            raise MigrationError(
                f"the target's metrics table has columns {list(target)}, not {_METRIC_COLUMNS}: "
                "this mlop-server's migrate-data does not match its schema"
            )
        last, done, before = self.mark("metrics")
        total = int(self.src.execute("SELECT COALESCE(SUM(n), 0) FROM metric_chunks").fetchone()[0])
        self.progress.start("metrics", total, before)
        if done:
            self.progress.finish()
            return
        while True:
            chunks = self.src.execute(
                "SELECT c.id, s.run_id, c.series_id, c.steps, c.times, c.vals FROM metric_chunks c "
                "JOIN series s ON s.id = c.series_id WHERE c.id > ? ORDER BY c.id LIMIT ?",
                (last, BATCH_CHUNKS),
            ).fetchall()
            if not chunks:
                break
            data, points = _copy_data(chunks)
            with self.dst.transaction():
                with (
                    self.dst.cursor() as cur,
                    cur.copy(
                        f"COPY metrics ({', '.join(_METRIC_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
                    ) as copy,
                ):
                    copy.write(data)
                last = int(chunks[-1][0])
                self._save("metrics", last, points)
            self.progress.advance(points)
        with self.dst.transaction():
            self._save("metrics", last, 0, done=True)
            self.dst.execute(
                "SELECT setval('metric_batches', "
                "GREATEST((SELECT COALESCE(MAX(seq >> 32), 0) FROM metrics), 1))"
            )
            if "n_points" in _target_columns(self.dst, "series") and "n_points" not in _source_columns(
                self.src, "series"
            ):  # each series' point count, which the PostgreSQL backend keeps beside the points
                counts = self.src.execute("SELECT series_id, SUM(n) FROM metric_chunks GROUP BY series_id")
                with self.dst.cursor() as cur:
                    cur.executemany(
                        "UPDATE series SET n_points = %s WHERE id = %s", [(int(n), sid) for sid, n in counts]
                    )
        self.progress.finish()

    def _copy_files(self, rows: list[tuple[Any, ...]], names: list[str]) -> None:
        """Copy the bytes of the uploaded files among ``rows`` into the target folder (before their rows)."""
        if self.target_files is None:
            return
        from mlop_server._files import object_name

        at = {name: i + 1 for i, name in enumerate(names)}
        for row in rows:
            if not row[at["uploaded"]]:
                continue
            name = object_name(int(row[at["id"]]))
            source = self.source_files / name
            if not source.exists():
                print(
                    f"migrate-data: warning: file {row[at['id']]} has no bytes at {source}", file=sys.stderr
                )
                continue
            self.target_files.put_file(int(row[at["id"]]), source)  # whole or not at all

    def others(self, batch: int) -> list[str]:
        """Copy the tables both databases have that the fixed list does not name; returns those skipped."""
        known = {t.name for t in _TABLES} | _NOT_COPIED
        tables = [
            r[0]
            for r in self.src.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        ]
        skipped = []
        for name in tables:
            if name in known or name.startswith("sqlite_"):
                continue
            if _target_columns(self.dst, name):
                self.table(_Table(name), batch)
            else:
                skipped.append(name)
        return skipped

    def sequences(self) -> None:
        """Move every identity sequence past the ids copied, so new rows get new ids."""
        rows = self.dst.execute(
            "SELECT table_name::text FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND column_name = 'id' AND is_identity = 'YES'"
        ).fetchall()
        for (table,) in rows:
            name = _text(table)
            self.dst.execute(
                f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), m) "
                f"FROM (SELECT MAX(id) AS m FROM {name}) x WHERE m IS NOT NULL"
            )


def _copy_data(chunks: list[tuple[Any, ...]]) -> tuple[bytes, int]:
    """Binary ``COPY`` data of the points of ``chunks`` (id, run id, series id, steps, times, values)."""
    import numpy as np

    row = _copy_row()
    parts: list[np.ndarray[Any, Any]] = []
    for chunk_id, run_id, series_id, steps, times, vals in chunks:
        n = len(steps) // 8
        rows = np.empty(n, dtype=row)
        rows["fields"] = len(_METRIC_COLUMNS)
        for name in _METRIC_COLUMNS:
            rows[f"{name}_len"] = 8
        rows["run_id"] = run_id
        rows["series_id"] = series_id
        rows["step"] = np.frombuffer(steps, dtype="<i8")
        rows["seq"] = (int(chunk_id) << 32) + np.arange(n, dtype=np.int64)
        rows["time"] = np.frombuffer(times, dtype="<i8")
        rows["value"] = np.frombuffer(vals, dtype="<f8")
        parts.append(rows)
    # joined as bytes: np.concatenate would turn the big-endian fields into native ones
    return _COPY_HEADER + b"".join(part.tobytes() for part in parts) + struct.pack(">h", -1), sum(
        part.size for part in parts
    )


def _source(folder: Path) -> sqlite3.Connection:
    path = folder / "mlop-server.db"
    if not path.is_file():
        raise MigrationError(
            f"{folder} holds no mlop server database (no {path.name}): give the server's --data folder"
        )
    src = sqlite3.connect(path, timeout=30.0)
    src.execute("PRAGMA query_only = 1")
    return src


def _check_target(dst: psycopg.Connection[Any], source: Path) -> None:
    """Refuse a target that a server already used, or that an earlier copy of another folder went into."""
    dst.execute(
        f"CREATE TABLE IF NOT EXISTS {PROGRESS_TABLE} (name bytea PRIMARY KEY, last bigint NOT NULL, "
        "done boolean NOT NULL, rows bigint NOT NULL DEFAULT 0, source bytea)"
    )
    row = dst.execute(
        f"SELECT source FROM {PROGRESS_TABLE} WHERE name = %s", (_SOURCE_MARK.encode(),)
    ).fetchone()
    if row is not None:
        if _text(row[0]) != str(source):
            raise MigrationError(
                f"this database received a copy of {_text(row[0])} already; migrate-data goes on only from "
                "the same folder (use a new database for another one)"
            )
        return
    used = dst.execute("SELECT (SELECT COUNT(*) FROM runs) + (SELECT COUNT(*) FROM api_keys)").fetchone()
    if used and used[0]:
        raise MigrationError(
            "the database holds runs or keys already (a server ran on it): migrate-data copies into a "
            "database no server has used yet; create a new one (createdb) and run migrate-data before "
            "starting servers"
        )
    dst.execute(
        f"INSERT INTO {PROGRESS_TABLE} (name, last, done, source) VALUES (%s, 0, false, %s)",
        (_SOURCE_MARK.encode(), str(source).encode()),
    )


def migrate_data(
    source: Path,
    url: str,
    files: FileStore | None,
    *,
    progress: Progress | None = None,
    batch: int = BATCH_ROWS,
) -> dict[str, int]:
    """Copy the server in ``source`` (its ``--data`` folder) into the database ``url``.

    Args:
        source: The SQLite server's data folder.
        url: The PostgreSQL database (migrated to the current schema first).
        files: The new server's file store (None: leave the file bytes where they are).
        progress: Where progress goes (default: stderr).
        batch: Rows per transaction.

    Returns:
        The rows each table holds in the target afterwards, by table.

    Raises:
        MigrationError: the source or the target cannot take part (the message says why).
        DatabaseError: the database is unreachable or refuses.
    """
    from mlop_server._files import LocalFileStore
    from mlop_server._pg_schema import connect, migrate

    progress = progress or Progress()
    source = source.resolve()
    src = _source(source)
    migrate(url)
    dst = connect(url)
    try:
        _check_target(dst, source)
        source_files = source / "files"
        if (
            isinstance(files, LocalFileStore)
            and files.path(0).parent.parent.resolve() == source_files.resolve()
        ):
            files = None  # the new server reads the same folder: nothing to copy
        copier = _Copier(src, dst, source_files, files, progress)
        src.execute("BEGIN")  # one snapshot of the source for the whole run
        for spec in _TABLES:
            copier.table(spec, batch)
        for name in copier.others(batch):
            print(f"migrate-data: table {name} has no counterpart in PostgreSQL; not copied", file=sys.stderr)
        with dst.transaction():
            copier.sequences()
        counts = {}
        for spec in _TABLES:
            name = "metrics" if spec.name == "metric_chunks" else spec.name
            counts[name] = int(dst.execute(f"SELECT COUNT(*) FROM {name}").fetchone()[0])  # type: ignore[index]
        return counts
    finally:
        src.close()
        dst.close()


def _run(args: argparse.Namespace) -> int:
    from mlop_server._files import open_file_store
    from mlop_server._pg_schema import DatabaseError, describe_target

    url = args.db or os.environ.get(DB_ENV)
    if not url:
        raise SystemExit(
            f"mlop server migrate-data: give the target database: --db postgresql://... or ${DB_ENV}"
        )
    data = Path(getattr(args, "data", None) or "~/.mlop/server").expanduser().resolve()
    os.umask(0o077)
    try:
        store = open_file_store(args.files, data, check=True)
    except ValueError as exc:
        raise SystemExit(f"mlop server migrate-data: {exc}") from None
    source = Path(args.source).expanduser()
    print(f"copying {source} into {describe_target(url)} (files into {store.describe()})", file=sys.stderr)
    try:
        counts = migrate_data(source, url, store, batch=args.batch)
    except (MigrationError, DatabaseError) as exc:
        print(f"mlop server migrate-data: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nmlop server migrate-data: interrupted; run the same command again to go on", file=sys.stderr)
        return 130
    summary = ", ".join(f"{n:,} {name}" for name, n in counts.items())
    print(f"done: the database holds {summary}", file=sys.stderr)
    return 0


def add_parser(commands: Any) -> None:
    """Add ``migrate-data`` to the server's sub-commands (``commands``: an argparse subparsers object)."""
    parser = commands.add_parser(
        "migrate-data", help="copy an embedded (SQLite) server into PostgreSQL (resumable)"
    )
    parser.add_argument(
        "--from", dest="source", required=True, metavar="DATA", help="the SQLite server's --data folder"
    )
    parser.add_argument("--db", default=None, help=f"the PostgreSQL database (default: ${DB_ENV})")
    parser.add_argument(
        "--files",
        default=None,
        help="the new server's files: a folder or s3://BUCKET/PREFIX (default: <--data>/files)",
    )
    parser.add_argument(
        "--data", default=argparse.SUPPRESS, help="the new server's --data folder (for the default --files)"
    )
    parser.add_argument("--batch", type=int, default=BATCH_ROWS, help=argparse.SUPPRESS)
    parser.set_defaults(func=_run)
