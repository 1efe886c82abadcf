"""The local store: one SQLite file per run, the single source of truth for everything a run logged.

The training process appends packed records; the uploader and ``mlop sync`` read them and record what the
server acknowledged; ``open_run`` reads them back. SQLite runs in WAL mode so that another process can read
while the run writes.

Records are written in batches: one row holds every item of one kind that one write collected, packed
with pickle and read back with an unpickler that refuses every global, so a store file can only ever
yield plain lists, dicts, strings and numbers. A row's payload is one pickled list or several written one
after the other (the writer packs items a few thousand values at a time as they are logged, and joins
what one write collected); :func:`unpack` returns them as one list. Packing keeps the number of rows
(and of times the writer takes the interpreter lock) small; see DESIGN.md, "The data path".

Item shapes by kind (times are float seconds since the epoch; readers convert to ms):

- ``metrics``: ``(step, time, {key: number})``
- ``system``: ``(sample_index, time, {"sys/...": number})``: system metrics, with their own step counter
- ``data``: ``(step, time, key, data_type, value)``; ``value`` is a str for a string series, else a dict
- ``files``: ``(step, time, key, info)``; ``info`` is a dict describing one file in the run directory
- ``logs``: ``(time, line_number, log_type, message)``
- ``config``: ``(time, delta)``; ``tags``: ``(time, [tags])``; ``status``: ``(time, status, metadata)``
- ``graph``: ``(time, graph)``; ``alert``: ``(time, alert)``; ``lognames``: ``(time, log_type, [keys])``
"""

from __future__ import annotations

import heapq
import io
import json
import logging
import pickle
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

from mlop._exceptions import StoreError

__all__ = ["KINDS", "STORE_FILE", "Record", "Store", "decode_record", "pack", "unpack"]

STORE_FILE: Final = "run.db"
_SCHEMA_VERSION: Final = 1
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    count INTEGER NOT NULL,
    time REAL NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS records_kind ON records (kind, seq);
CREATE TABLE IF NOT EXISTS acks (
    stream TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    item INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS failures (
    id INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    status INTEGER,
    message TEXT NOT NULL,
    time REAL NOT NULL
);
"""

Record = tuple[int, str, list[Any]]

logger = logging.getLogger(__name__)


class _PlainUnpickler(pickle.Unpickler):
    """Loads only builtin containers and scalars: a store file can never name code to run."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"the store holds plain data only, not {module}.{name}")


def pack(items: Sequence[Any]) -> bytes:
    """Pack a list of items for one record."""
    return pickle.dumps(items, protocol=5)


def pack_batch(kind: str, items: list[Any]) -> bytes:
    """Pack a batch; an item that cannot be packed is left out (and said), never the whole batch."""
    try:
        return pack(items)
    except Exception:  # broad: pickle raises many types for odd objects; find the culprits one by one
        kept = []
        for item in items:
            try:
                pack([item])
            except Exception:  # broad: as above
                logger.warning("mlop: a %s record holding an object that cannot be stored was dropped", kind)
            else:
                kept.append(item)
        return pack(kept)


def unpack(payload: bytes) -> list[Any]:
    """Unpack what :func:`pack` wrote: one pickled list, or several one after the other, as one list.

    Raises:
        StoreError: the payload cannot be decoded (a damaged or crafted record), saying why.
    """
    stream = io.BytesIO(payload)
    out: list[Any] = []
    end = len(payload)
    while True:
        try:
            part = _PlainUnpickler(stream).load()
        except Exception as exc:  # broad: a damaged pickle raises many types; each is one bad record
            raise StoreError(f"{type(exc).__name__}: {exc}") from None
        if not isinstance(part, list):
            raise StoreError(f"the record is a {type(part).__name__}, not a list")
        if stream.tell() >= end:
            if not out:
                return part
            out.extend(part)
            return out
        out.extend(part)


# How many fields an item of each kind has (see the module docstring).
_FIELDS: Final = {
    "metrics": 3, "system": 3, "data": 5, "files": 4, "logs": 4, "config": 2, "tags": 2, "status": 3,
    "graph": 2, "alert": 2, "lognames": 3,
}  # fmt: skip
#: Every kind of record, in a fixed order (the writer process's ring names them by their index here).
KINDS: Final = tuple(_FIELDS)
_reported: set[tuple[str, int]] = set()


def decode_record(path: Path, seq: int, kind: str, payload: bytes) -> list[Any] | None:
    """The items of one record, or None for a record that cannot be decoded (said once per record).

    A record that is not a list of items of its kind's shape is damaged (or crafted): it is reported with
    the run, the record and the reason, and skipped; the records around it are read as usual.
    """
    try:
        items = unpack(payload)
        fields = _FIELDS.get(kind)
        if fields is not None:
            for item in items:
                if not isinstance(item, (list, tuple)) or len(item) != fields:
                    raise StoreError(f"an item is not a {kind} item: {str(item)[:80]}")
    except StoreError as exc:
        if (str(path), seq) not in _reported:
            _reported.add((str(path), seq))
            logger.warning(
                "mlop: run %s: record %d (%s) cannot be read and is skipped: %s", path.parent, seq, kind, exc
            )
        return None
    return items


class Store:
    """A connection to one run's store file.

    Args:
        path: the store file, or the run directory that holds it.
        create: make the file and its schema when missing; otherwise a missing file is a StoreError.
    """

    def __init__(self, path: str | Path, *, create: bool = False) -> None:
        path = Path(path)
        if path.is_dir() or (create and path.suffix != ".db"):
            path = path / STORE_FILE
        self.path = path
        # One connection serves the writer's thread and the run's own calls (set_meta): one at a time.
        self._lock = threading.Lock()
        if not create and not path.exists():
            raise StoreError(f"no mlop run store at {path}")
        try:
            if create:
                path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout = 30000")
            if create:
                self._use_wal()
                self._db.executescript(_SCHEMA)
                self._db.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                    (json.dumps(_SCHEMA_VERSION),),
                )
            # WAL commits reach the kernel on every commit; fsync only at checkpoints.
            self._db.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the run store {path}: {exc}") from exc

    def _use_wal(self) -> None:
        """Put the file in WAL mode, waiting out another process that holds it for a moment.

        Ranks of a shared run open one store at once, and SQLite may answer the journal-mode pragma with
        "database is locked" at once instead of calling the busy handler (seen while another process
        checkpoints), so the wait is ours: bounded, like the busy timeout.
        """
        deadline = time.monotonic() + 30.0
        while True:
            try:
                (mode,) = self._db.execute("PRAGMA journal_mode").fetchone()
                if str(mode).lower() != "wal":
                    self._db.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def close(self) -> None:
        self._db.close()

    # -- writing -------------------------------------------------------------------------------------

    def write(self, batches: Iterable[tuple[str, list[Any]]], meta: dict[str, Any] | None = None) -> None:
        """Append one record per (kind, items) pair and update meta values, in one transaction."""
        rows = [(kind, len(items), pack_batch(kind, items)) for kind, items in batches if items]
        self.write_packed(rows, {k: json.dumps(v) for k, v in (meta or {}).items()})

    def write_packed(
        self, rows: Sequence[tuple[str, int, bytes | memoryview]], meta: dict[str, str] | None = None
    ) -> None:
        """Append packed rows ``(kind, item count, payload)`` and set JSON-encoded meta values, atomically.

        A payload may be a memoryview (a row buffer of the writer): SQLite copies it while binding.

        Without meta values this is one statement, so a thread that writes beside a training loop holding
        the interpreter lock takes that lock back once, not once per row (see DESIGN.md, "The data path").
        """
        now = time.time()
        insert = "INSERT INTO records (kind, count, time, payload) VALUES " + ", ".join(
            ["(?, ?, ?, ?)"] * len(rows)
        )
        params = [value for kind, count, payload in rows for value in (kind, count, now, payload)]
        db = self._db
        with self._lock:
            if not meta:
                if rows:
                    db.execute(insert, params)
                return
            db.execute("BEGIN IMMEDIATE")
            try:
                if rows:
                    db.execute(insert, params)
                db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(meta.items()))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def set_meta(self, values: dict[str, Any]) -> None:
        self.write((), values)

    # -- reading -------------------------------------------------------------------------------------

    def meta(self) -> dict[str, Any]:
        """The run's meta values; one that cannot be decoded is said once and left out."""
        out: dict[str, Any] = {}
        for key, value in self._db.execute("SELECT key, value FROM meta"):
            try:
                out[key] = json.loads(value)
            except (TypeError, ValueError) as exc:
                if (str(self.path), -1) not in _reported:
                    _reported.add((str(self.path), -1))
                    logger.warning(
                        "mlop: run %s: meta value %r cannot be read: %s", self.path.parent, key, exc
                    )
        return out

    def records(self, kinds: Sequence[str] | None = None, after_seq: int = 0) -> Iterator[Record]:
        """Yield ``(seq, kind, items)`` in write order, optionally only some kinds and after a seq."""
        if not kinds:
            cur = self._db.execute(
                "SELECT seq, kind, payload FROM records WHERE seq > ? ORDER BY seq", (after_seq,)
            )
            for seq, kind, payload in cur:
                yield seq, kind, decode_record(self.path, seq, kind, payload) or []
            return
        # One query per kind walks the (kind, seq) index in order; a single "kind IN (...)" query would
        # make SQLite sort every matching payload first. Merge the per-kind streams by seq instead.
        streams = [self._kind_records(kind, after_seq) for kind in dict.fromkeys(kinds)]
        yield from heapq.merge(*streams, key=lambda record: record[0])

    def _kind_records(self, kind: str, after_seq: int) -> Iterator[Record]:
        cur = self._db.execute(
            "SELECT seq, payload FROM records WHERE kind = ? AND seq > ? ORDER BY seq", (kind, after_seq)
        )
        for seq, payload in cur:
            yield seq, kind, decode_record(self.path, seq, kind, payload) or []

    def last_seq(self) -> int:
        row = self._db.execute("SELECT MAX(seq) FROM records").fetchone()
        return int(row[0] or 0)

    # -- what the server acknowledged (the uploader's bookkeeping) ------------------------------------

    def acks(self) -> dict[str, tuple[int, int]]:
        return {s: (q, i) for s, q, i in self._db.execute("SELECT stream, seq, item FROM acks")}

    def set_ack(self, stream: str, seq: int, item: int) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO acks (stream, seq, item) VALUES (?, ?, ?)", (stream, seq, item)
            )

    def add_failure(self, stream: str, seq: int, status: int | None, message: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO failures (stream, seq, status, message, time) VALUES (?, ?, ?, ?, ?)",
                (stream, seq, status, message, time.time()),
            )

    def failures(self) -> list[dict[str, Any]]:
        cur = self._db.execute("SELECT stream, seq, status, message, time FROM failures ORDER BY id")
        return [dict(zip(("stream", "seq", "status", "message", "time"), row, strict=True)) for row in cur]
