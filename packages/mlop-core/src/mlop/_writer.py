"""The writer: an in-memory buffer in front of the local store.

The training thread appends to plain lists (cheap), and whichever thread notices that the oldest pending
item is older than the flush interval writes everything pending in one transaction. In a tight loop that
never lets a background thread run, that is ``run.log()`` itself; in quiet periods it is the writer's own
thread. Either way an item reaches the kernel (the WAL file) within about one flush interval of its
``log()`` call, so SIGKILL loses nothing older than that.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from mlop._store import Store

__all__ = ["Writer"]

logger = logging.getLogger(__name__)


class Writer:
    """Buffers records for one run and writes them to its store.

    Args:
        store: the run's store, opened for writing.
        interval: the longest time, in seconds, an item waits in memory.
    """

    def __init__(self, store: Store, interval: float) -> None:
        self.store = store
        self.interval = interval
        # The hot path appends (step, time, values) here directly; see Op.log.
        self.metrics: list[tuple[int, float, dict[str, Any]]] = []
        self._other: list[tuple[str, Any]] = []
        self._meta: dict[str, Any] = {}
        # Time (time.time()) of the next flush: at most one interval after the last one, so an item
        # appended now is written by ``now + interval`` at the latest.
        self.deadline = time.time() + interval
        self._lock = threading.Lock()
        # The thread inside flush(), and work to run once it is out: a signal handler that interrupts a
        # flush on the same thread must not wait for a lock its own thread holds.
        self.owner: int | None = None
        self.after_flush: Callable[[], None] | None = None
        self._wake = threading.Event()
        self._stopped = False
        self._failed_once = False
        self._thread = threading.Thread(target=self._loop, name="mlop-writer", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def _held(self) -> Iterator[None]:
        with self._lock:
            self.owner = threading.get_ident()
            try:
                yield
            finally:
                self.owner = None
        callback, self.after_flush = self.after_flush, None
        if callback is not None:
            callback()

    def add(self, kind: str, item: Any, meta: dict[str, Any] | None = None) -> None:
        """Queue one item (and optionally meta values written with it).

        A ``metrics`` item, ``(step, time, values)``, joins the rows the training thread appends (work
        finished on another thread, such as a histogram's non-finite counts, logs its numbers this way).
        """
        if kind == "metrics":
            self.metrics.append(item)
            if meta:
                self._queue(None, meta)
            return
        self._queue((kind, item), meta)

    def set_meta(self, meta: dict[str, Any]) -> None:
        """Queue meta values alone (the run's ``systemMetadata``); :meth:`flush` makes them durable."""
        self._queue(None, meta)

    def _queue(self, entry: tuple[str, Any] | None, meta: dict[str, Any] | None) -> None:
        # Called from inside this thread's own flush (a console line that an error logged by the flush
        # wrote, a signal handler), the lock is already ours: the entry simply goes into the next flush.
        held = contextlib.nullcontext() if self.owner == threading.get_ident() else self._held()
        with held:
            if entry is not None:
                self._other.append(entry)
            if meta:
                self._meta.update(meta)

    def flush(self) -> None:
        """Write everything pending now, in one transaction. Never raises."""
        with self._held():
            self.deadline = time.time() + self.interval
            # The training thread appends to self.metrics without the lock: take a prefix and delete
            # it (each one atomic under the interpreter lock), never swap the list from under it.
            pending = self.metrics
            count = len(pending)
            metrics = pending[:count]
            del pending[:count]
            other, self._other = self._other, []
            meta, self._meta = self._meta, {}
            if not (metrics or other or meta):
                return
            batches: dict[str, list[Any]] = {}
            for kind, item in other:
                batches.setdefault(kind, []).append(item)
            try:
                self.store.write([("metrics", metrics), *batches.items()], meta)
            except Exception:  # broad: a full disk or a broken store must not reach the training loop
                if not self._failed_once:
                    self._failed_once = True
                    logger.exception("mlop could not write to its local store %s", self.store.path)

    def close(self) -> None:
        """Flush what is pending and stop the writer thread."""
        self._stopped = True
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self.flush()

    def _loop(self) -> None:
        while not self._stopped:
            self._wake.wait(self.interval / 2)
            if time.time() >= self.deadline and (self.metrics or self._other or self._meta):
                self.flush()
