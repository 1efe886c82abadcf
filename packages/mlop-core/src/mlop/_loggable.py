"""The interface between ``run.log`` and the data types (media, histograms, tables, graphs)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, Final

__all__ = ["DEFAULT_MAX_PENDING", "Items", "Loggable", "MediaSink"]

logger = logging.getLogger(__name__)

Items = list[tuple[str, Any]]


def _default_max_pending() -> int:
    """An eighth of the machine's memory, between 256 MiB and 8 GiB (1 GiB where the size is unknown)."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return 1 << 30
    return min(max(total // 8, 256 << 20), 8 << 30)


#: The bytes of media copies that may wait for encoding before ``run.log`` waits (see MediaSink).
DEFAULT_MAX_PENDING: Final = _default_max_pending()


class MediaSink:
    """Where a data type puts what it logs: files in the run directory and store items.

    Heavy work (encoding an image or a video) goes through :meth:`defer`, so that the training thread
    pays only for a copy of the data. The work waiting for a worker is bounded twice: by ``max_pending``
    bytes of copies, and by ``max_drain`` seconds of work, estimated from what recent work of the same
    kind (the same type of value) took per byte. Past either bound :meth:`defer` runs the new value's
    work on the calling thread instead of queueing it: a loop that logs media faster than they can be
    encoded slows down by the cost of its own values (never by waiting for the backlog), instead of
    filling memory or leaving ``finish()`` more than it can store in time. Items reach the store in the
    order their work was deferred, whichever thread finishes first.

    Args:
        run_dir: the run directory; files go under its ``media`` folder.
        add: how items reach the store (the writer's ``add``).
        max_pending: the bytes of deferred work allowed to wait in memory.
        workers: background threads encoding media (by default 2, or 4 with 8 cores or more).
        max_drain: the seconds of deferred work allowed to wait; None: no bound but memory.
    """

    def __init__(
        self,
        run_dir: Path,
        add: Callable[[str, Any], None],
        max_pending: int = DEFAULT_MAX_PENDING,
        workers: int | None = None,
        max_drain: float | None = None,
    ) -> None:
        self.media_dir = run_dir / "media"
        self.run_dir = run_dir
        self.add = add
        self.max_pending = max_pending
        self.max_drain = max_drain
        # Seconds per byte of each kind of work (see defer's ``kind``), and its bytes waiting. The rate is
        # the ratio of decayed sums of seconds and of bytes, so that a small value's fixed cost (the first
        # one's imports above all) does not make every larger one look slow.
        self._rates: dict[str, float] = {}
        self._spent: dict[str, tuple[float, float]] = {}
        self._pending_by: dict[str, int] = {}
        self._kinds: dict[int, str] = {}  # ticket: kind, for work not finished yet
        # Two threads, four on machines with eight cores or more: encoding must not crowd out training.
        self._workers = workers or max(2, min(4, (os.cpu_count() or 2) // 2))
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._pending = 0
        self._warned = False
        # In-order delivery: work gets a ticket; finished items wait in _done until their turn.
        self._tickets = 0
        self._turn = 0
        self._done: dict[int, Items] = {}
        self._emit_lock = threading.Lock()
        self._waiting: dict[int, int] = {}  # ticket: size, for work not finished yet
        self._futures: dict[int, Future[None]] = {}

    def defer(self, work: Callable[[], Items], size: int = 0, kind: str | None = None) -> None:
        """Run ``work`` on a background thread and add the items it returns.

        Args:
            work: returns the store items; an exception is logged and the value skipped.
            size: the bytes ``work`` holds in memory until it runs (a copied array), for back-pressure.
            kind: what sort of work it is, for its cost per byte (by default the name of ``work``'s code).
        """
        sort: str = kind or str(getattr(work, "__qualname__", ""))
        with self._room:
            inline = self._full(size, sort)
            if inline and not self._warned:
                self._warned = True
                logger.warning(
                    "mlop: media are logged faster than they can be encoded; while the backlog is over "
                    "%d MiB%s, run.log encodes the value it is given itself",
                    self.max_pending >> 20,
                    "" if self.max_drain is None else f" or {self.max_drain:g} s of work",
                )
            self._pending += size
            self._pending_by[sort] = self._pending_by.get(sort, 0) + size
            ticket = self._tickets
            self._tickets += 1
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="mlop-media")
            self._waiting[ticket] = size
            self._kinds[ticket] = sort
            if not inline:
                # Under the lock, so the work's own clean-up (which takes it) comes after this entry.
                self._futures[ticket] = self._pool.submit(self._run, work, size, ticket)
                return
        # The backlog is full: the caller pays for its own value, never for the backlog (no waiting for
        # the workers), and the backlog does not grow. Its items still reach the store in logging order.
        self._run(work, size, ticket)

    @property
    def pending_bytes(self) -> int:
        """The bytes of deferred work not run yet."""
        return self._pending

    @property
    def pending_seconds(self) -> float:
        """The workers' estimated time for the deferred work not run yet (0 before any has run)."""
        with self._lock:
            return self._drain()

    def _drain(self) -> float:
        rates = self._rates
        return sum(size * rates.get(kind, 0.0) for kind, size in self._pending_by.items()) / self._workers

    def _full(self, size: int, kind: str) -> bool:
        """Whether work of ``size`` bytes must wait for room (always room when nothing is pending)."""
        if not self._pending:
            return False
        if self._pending + size > self.max_pending:
            return True
        if self.max_drain is None:
            return False
        return self._drain() + size * self._rates.get(kind, 0.0) / self._workers > self.max_drain

    def _forget(self, ticket: int, size: int) -> None:
        """Take finished (or cancelled) work out of the pending totals; the lock is held."""
        self._pending -= size
        kind = self._kinds.pop(ticket, "")
        self._pending_by[kind] = self._pending_by.get(kind, size) - size
        self._waiting.pop(ticket, None)
        self._futures.pop(ticket, None)

    def _run(self, work: Callable[[], Items], size: int, ticket: int) -> None:
        items: Items = []
        start = time.perf_counter()
        try:
            items = work()
        except Exception:  # broad: a value that fails to encode is reported and skipped, never raised
            logger.exception("mlop could not encode a logged value; it was skipped")
        finally:
            elapsed = time.perf_counter() - start
            with self._room:
                if size:
                    # What this kind of work costs a worker per byte now, the recent past weighing most.
                    kind = self._kinds.get(ticket, "")
                    seconds, count = self._spent.get(kind, (0.0, 0.0))
                    seconds, count = 0.8 * seconds + elapsed, 0.8 * count + size
                    self._spent[kind] = (seconds, count)
                    self._rates[kind] = seconds / count
                self._forget(ticket, size)
                self._room.notify_all()
            self._deliver(ticket, items)

    def _deliver(self, ticket: int, items: Items) -> None:
        """Add the items of every finished ticket whose predecessors are all in, in ticket order."""
        with self._emit_lock:
            self._done[ticket] = items
            while self._turn in self._done:
                for kind, item in self._done.pop(self._turn):
                    try:
                        self.add(kind, item)
                    except Exception:  # broad: one item the store refuses must not hold back the rest
                        logger.exception("mlop could not store a logged value; it was skipped")
                self._turn += 1

    def close(self, timeout: float | None = None) -> int:
        """Wait for deferred work to finish.

        Args:
            timeout: seconds to wait for work that has not started; past them it is dropped (work that
                has started still finishes). None waits for everything.

        Returns:
            How many deferred values were dropped.
        """
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is None:
            return 0
        if timeout is not None:
            deadline = time.monotonic() + timeout
            with self._room:
                while self._waiting and (left := deadline - time.monotonic()) > 0:
                    self._room.wait(left)
        pool.shutdown(wait=True, cancel_futures=timeout is not None)
        dropped = 0
        with self._room:
            futures = sorted(self._futures.items())
        for ticket, future in futures:
            if future.cancelled():
                dropped += 1
                with self._room:
                    self._forget(ticket, self._waiting.get(ticket, 0))
                self._deliver(ticket, [])
        self._futures.clear()
        if dropped:
            logger.warning(
                "mlop: %d logged media values were dropped: the run ended before they were stored", dropped
            )
        return dropped


class Loggable:
    """Base class of the values ``run.log`` takes besides numbers and strings.

    Subclasses set ``log_type`` (the protocol's ``logType``) and implement :meth:`mlop_items`.
    """

    log_type: ClassVar[str] = "DATA"

    def mlop_items(self, sink: MediaSink, key: str, step: int, time: float, index: int | None) -> Items:
        """Return the store items (``(kind, item)`` pairs) for this value logged under ``key``.

        ``index`` is the value's position in a list logged under one key (the protocol's sampleIndex), or
        None for a single value. Work that can wait goes through ``sink.defer`` instead.
        """
        raise NotImplementedError
