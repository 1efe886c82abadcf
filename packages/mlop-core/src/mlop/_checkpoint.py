"""Checkpoints of a run's store, on a thread and connection of their own (see :class:`Checkpointer`)."""

from __future__ import annotations

import logging
import os
import threading
from typing import Final

from mlop._store import Store

__all__ = ["CHECKPOINT_BYTES", "WAL_LIMIT", "Checkpointer"]

logger = logging.getLogger(__name__)

#: Bytes written between two checkpoints (SQLite's own default is 1,000 pages, about 4 MiB).
CHECKPOINT_BYTES: Final = 4 << 20
#: Bytes of WAL past which a checkpoint makes the WAL start over, holding writes back while it runs.
WAL_LIMIT: Final = 256 << 20


class Checkpointer:
    """Moves the store's WAL into its database file on a thread and connection of its own.

    A checkpoint copies pages and waits for fsync, at times for hundreds of milliseconds on a busy disk;
    run by the writing connection (SQLite's default), it would hold back every write behind it, and values
    logged meanwhile would wait in memory longer than the flush interval. Here writes go on beside it. A
    passive checkpoint never blocks the writer; once the WAL passes WAL_LIMIT bytes anyway (a loop that
    never pauses never lets the WAL start over), a truncating one makes it start over, and the writes
    wait for that one.
    """

    def __init__(self, store: Store) -> None:
        self.path = store.path
        self._written = 0
        self._wake = threading.Event()
        self._stopped = False
        try:
            with store._lock:
                store._db.execute("PRAGMA wal_autocheckpoint = 0")
        except Exception:  # broad: without this the store keeps SQLite's own checkpoints, which is correct
            logger.debug("mlop could not move checkpoints off the writer", exc_info=True)
            self._thread: threading.Thread | None = None
            return
        self._thread = threading.Thread(target=self._loop, name="mlop-checkpoint", daemon=True)
        self._thread.start()

    def wrote(self, size: int) -> None:
        self._written += size
        if self._written >= CHECKPOINT_BYTES:
            self._wake.set()

    def close(self) -> None:
        self._stopped = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10.0)

    def _loop(self) -> None:
        import sqlite3

        try:
            # A short busy timeout: a checkpoint that must wait for readers (the uploader) tries again later
            # rather than hold up finish().
            db = sqlite3.connect(self.path, timeout=1.0, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            logger.debug("mlop could not open the store for checkpoints", exc_info=True)
            return
        try:
            while not self._stopped:
                self._wake.wait(1.0)
                self._wake.clear()
                if self._stopped or not self._written:
                    continue
                self._written = 0
                try:
                    wal = os.path.getsize(f"{self.path}-wal")
                except OSError:
                    wal = 0
                mode = "TRUNCATE" if wal > WAL_LIMIT else "PASSIVE"
                try:
                    db.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
                except sqlite3.Error:  # a full disk, above all: the WAL keeps the data; try again later
                    logger.debug("mlop: a checkpoint of %s failed", self.path, exc_info=True)
        finally:
            db.close()
