"""The writer: packs what a run logs a little at a time and writes it to the local store off the loop.

No ``run.log()`` call pays for more than a small, fixed slice of work, whatever is pending:

- The training thread appends each record to a plain list (cheap). Every few milliseconds a ``log()`` call
  packs what is pending with pickle, a few thousand values per pickle and for at most a fraction of a
  millisecond; what is left is packed by the calls that follow. Pickles are sized, from the speed of the
  last ones, to fit the time the turn has left (down to one record), so however wide the records, a turn
  stays within its budget unless a pickle runs slower than the ones before. Packing is the only work
  that must hold the interpreter lock, and this way it is spread evenly over the calls that log.
- The writer's own thread writes the packed bytes to the store: one SQLite statement per write, during
  which SQLite has let go of the interpreter lock, so the training thread runs on while the bytes, the
  commit and any WAL checkpoint go to disk. In a loop that holds the interpreter lock, the writer's thread
  needs it only a few times per write, each within the interpreter's switch interval (5 ms), so a record
  reaches the kernel about ``interval`` after its ``log()`` call, and SIGKILL loses nothing older than that.
  While this thread holds the lock the training thread waits, so it does little then: the chunks of a
  write are joined in a buffer it keeps (a fresh megabyte would cost its page faults, about 0.5 ms here).
- When the loop stops logging (a long step, the end of training), the writer's thread packs what is left,
  in the same small slices.

When the store cannot take a write (a full disk, above all), packed values stay in memory, up to
``max_held`` bytes, and the writer retries; once the disk has room they are written, and nothing is lost.
Past the bound the values logged from then on are dropped and counted, and the warnings say how much is
held and what was lost.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

from mlop._store import Store, pack_batch

__all__ = ["CHUNK_VALUES", "DEFAULT_MAX_HELD", "PACK_BUDGET", "PACK_EVERY", "Writer"]

logger = logging.getLogger(__name__)

#: Seconds between the training thread's packing turns (each due turn runs inside one ``log()`` call).
PACK_EVERY: Final = 0.005
#: Seconds one packing turn may spend before it leaves the rest to the next calls. Pickles are sized to
#: the time left at the speed of the last ones, so a turn overruns this only when a pickle runs slower
#: than the ones before it, or by one record wider than the whole budget.
PACK_BUDGET: Final = 0.0003
#: The most values one pickle packs: 0.1 ms of work, and faster per value than one large pickle
#: (measured 23 to 34 ns a value at 4,096 against 56 to 86 ns for a whole flush; see bench/README.md).
CHUNK_VALUES: Final = 4096
#: Seconds a value is assumed to take to pack until a pickle has been timed (the slow end of the range).
FIRST_VALUE_COST: Final = 100e-9
#: Bytes one write hands to SQLite, at most (unless one row is larger): the copy holds the interpreter
#: lock, about 0.1 to 0.5 ms a MiB.
WRITE_BYTES: Final = 1 << 20
#: Seconds a packed row may wait for the store before log() waits for the writer (see _keep_pace).
MAX_LAG: Final = 0.1
#: Seconds one log() call waits at most for the writer to keep pace.
MAX_WAIT: Final = 1.0
#: Bytes written between two checkpoints (SQLite's own default is 1,000 pages, about 4 MiB).
CHECKPOINT_BYTES: Final = 4 << 20
#: Bytes of WAL past which a checkpoint makes the WAL start over, holding writes back while it runs.
WAL_LIMIT: Final = 256 << 20
#: Bytes of packed values kept in memory while the store cannot take them (a full disk).
DEFAULT_MAX_HELD: Final = 256 << 20
#: Seconds between attempts to write while the store refuses writes.
RETRY_EVERY: Final = 0.5
#: Seconds between the reminders of how much is held while the store refuses writes.
REMIND_EVERY: Final = 60.0

_perf = time.perf_counter
_TIME_SECOND: Final = frozenset({"metrics", "system", "data", "files"})  # (step, time, ...) items


class Writer:
    """Buffers records for one run, packs them as they come and writes them to its store.

    Args:
        store: the run's store, opened for writing.
        interval: about the longest time, in seconds, a record waits in memory before it is written.
        max_held: bytes of packed values kept in memory while the store refuses writes.
    """

    def __init__(self, store: Store, interval: float, max_held: int = DEFAULT_MAX_HELD) -> None:
        self.store = store
        self.interval = interval
        self.max_held = max_held
        # The hot path appends (step, time, values) here directly; see Op.log.
        self.metrics: list[tuple[int, float, dict[str, Any]]] = []
        self._other: list[tuple[str, Any]] = []
        self._meta: dict[str, Any] = {}
        # Packed rows (kind, item count, payload) and JSON meta values waiting for the store, in order.
        self._ready: list[tuple[str, int, bytes, float]] = []  # ..., and when it was packed
        self._ready_meta: dict[str, str] = {}
        self._ready_bytes = 0
        # When the training thread's next packing turn is due (time.time()); Op.log compares against it.
        self.deadline = time.time() + PACK_EVERY
        # Seconds per value of recent pickles (a moving average): sizes each pickle to a turn's time left.
        self._value_cost = FIRST_VALUE_COST
        # The writer's thread joins the chunks of a write here (see _write); only under the io lock.
        self._join = bytearray(WRITE_BYTES)
        self._lock = threading.RLock()  # the lists above (a signal handler may add while its thread adds)
        self._pack_lock = threading.Lock()  # one packer at a time keeps rows in logging order
        self._io_lock = threading.Lock()  # one write at a time
        # Threads inside a packing turn or a write, and work to run once the training thread is out: a
        # signal handler that interrupts its own thread's turn must not wait for a lock that thread holds.
        self._inside: dict[int, int] = {}
        self.after_flush: Callable[[], None] | None = None
        # Writes the store refused: since when, the next attempt, what was dropped past max_held.
        self._failing_since: float | None = None
        self._retry_at = 0.0
        self._reminded_at = 0.0
        self._lost_items = 0
        self._lost_values = 0
        self._lost_steps = 0
        self._lost_span: tuple[float, float] | None = None
        self._wake = threading.Event()
        self._progress = threading.Event()  # set after each write that the store took
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="mlop-writer", daemon=True)
        self._thread.start()
        self._checkpointer = _Checkpointer(store)

    # -- who is inside -------------------------------------------------------------------------------

    @property
    def owner(self) -> int | None:
        """The calling thread's id when it is inside a packing turn or a write of this writer, else None."""
        me = threading.get_ident()
        return me if self._inside.get(me) else None

    @contextlib.contextmanager
    def _entered(self) -> Iterator[None]:
        me = threading.get_ident()
        self._inside[me] = self._inside.get(me, 0) + 1
        try:
            yield
        finally:
            depth = self._inside.pop(me) - 1
            if depth:
                self._inside[me] = depth
        # The work a signal handler left runs on the thread it interrupted, never on the writer's own.
        if not depth and self.after_flush is not None and threading.current_thread() is not self._thread:
            callback, self.after_flush = self.after_flush, None
            if callback is not None:
                callback()

    # -- what the run hands in ------------------------------------------------------------------------

    def add(self, kind: str, item: Any, meta: dict[str, Any] | None = None) -> None:
        """Queue one item (and optionally meta values written with it).

        A ``metrics`` item, ``(step, time, values)``, joins the rows the training thread appends (work
        finished on another thread, such as a histogram's non-finite counts, logs its numbers this way).
        """
        if kind == "metrics":
            self.metrics.append(item)
            if meta:
                self.set_meta(meta)
            return
        with self._lock:
            self._other.append((kind, item))
            if meta:
                self._meta.update(meta)

    def set_meta(self, meta: dict[str, Any]) -> None:
        """Queue meta values alone (the run's ``systemMetadata``); :meth:`flush` makes them durable."""
        with self._lock:
            self._meta.update(meta)

    def tick(self) -> None:
        """The training thread's packing turn, due at ``deadline``: pack for at most PACK_BUDGET seconds.

        Called by ``run.log()``; never raises. When more is pending than one turn packs, the next call
        takes the next turn.
        """
        try:
            with self._entered():
                if not self._pack_lock.acquire(blocking=False):  # the writer's thread is packing
                    self.deadline = time.time() + PACK_EVERY
                    return
                try:
                    more = self._pack(PACK_BUDGET)
                finally:
                    self._pack_lock.release()
                self.deadline = time.time() + (0.0 if more else PACK_EVERY)
            self._keep_pace()
        except Exception:  # broad: a failure to pack must not reach the training loop
            logger.exception("mlop could not pack logged values")

    def _keep_pace(self) -> None:
        """Wait while the oldest packed row is older than MAX_LAG and the store is writing, not refusing.

        The one case where log() waits: the disk itself is slower than the loop (a 1 MiB write took
        212 ms here under kernel writeback throttling). Waiting then keeps SIGKILL from losing values
        logged long ago; the old writer made the loop wait the same way, on every flush.
        """
        ready = self._ready
        deadline = time.monotonic() + MAX_WAIT
        while (
            ready
            and self._failing_since is None
            and not self._stopped
            and time.time() - ready[0][3] > MAX_LAG
            and time.monotonic() < deadline
        ):
            self._progress.clear()
            self._wake.set()
            self._progress.wait(0.05)

    # -- packing --------------------------------------------------------------------------------------

    def _pack(self, budget: float | None) -> bool:
        """Pack pending items, for about ``budget`` seconds (None: all); True when metrics are left.

        The pack lock is held.
        """
        start = now = _perf()
        pending = self.metrics
        # What is pending now, not what the training thread appends meanwhile (never chase it).
        left = len(pending)
        while left > 0 and pending:
            limit = CHUNK_VALUES
            if budget is not None:
                # As many values as the turn's time left packs at the speed of the last pickles. After
                # the first pickle, a whole chunk or none (the next call takes the next turn): each
                # pickle repeats its records' keys, and pickles of one or two wide records made the
                # store a fifth larger (19.3 against 16.5 bytes a value, 1,000 keys). The first pickle
                # of a turn holds one record at least, whatever its size: a turn always moves on.
                limit = min(limit, int((budget - (now - start)) / self._value_cost))
                if limit < CHUNK_VALUES and now > start:
                    break
            # A prefix of the list within the limit; the training thread only ever appends to it.
            count = values = 0
            for record in pending:
                size = len(record[2])
                if count and values + size > limit:
                    break
                count += 1
                values += size
            chunk = pending[:count]
            del pending[:count]
            left -= count
            self._keep("metrics", chunk)
            took = _perf() - now
            now += took
            if values:
                # Slow to move and clamped: one pickle the OS preempted must not shrink the next ones.
                cost = min(max(took / values, 5e-9), 5e-7)
                self._value_cost += (cost - self._value_cost) / 8
            if budget is not None and now - start >= budget:
                break
        if self._other or self._meta:
            with self._lock:
                other, self._other = self._other, []
                meta, self._meta = self._meta, {}
            batches: dict[str, list[Any]] = {}
            for kind, item in other:
                batches.setdefault(kind, []).append(item)
            for kind, items in batches.items():
                self._keep(kind, items)
            if meta:
                encoded = {key: json.dumps(value) for key, value in meta.items()}
                with self._lock:
                    self._ready_meta.update(encoded)
        return bool(pending)

    def _keep(self, kind: str, items: list[Any]) -> None:
        """Pack items into a row for the next write; past ``max_held`` while writes fail, drop them."""
        payload = pack_batch(kind, items)
        with self._lock:
            # Once dropping starts it goes on until the store takes writes again: one gap, not holes.
            if self._failing_since is not None and (
                self._lost_items or self._ready_bytes + len(payload) > self.max_held
            ):
                self._drop(kind, items)
                return
            self._ready.append((kind, len(items), payload, time.time()))
            self._ready_bytes += len(payload)

    def _drop(self, kind: str, items: list[Any]) -> None:
        """Count items dropped because the store refused writes for too long (the lock is held)."""
        if not self._lost_items:
            logger.warning(
                "mlop: %.1f MiB of logged values are held in memory, the most mlop keeps, and the local "
                "store %s still cannot take them: values logged from now until it can are lost",
                self._ready_bytes / 2**20,
                self.store.path,
            )
        self._lost_items += len(items)
        if kind == "metrics":
            self._lost_steps += len(items)
            self._lost_values += sum(len(item[2]) for item in items)
        times = [float(t) for t in (_item_time(kind, item) for item in items) if t is not None]
        if times:
            low, high = min(times), max(times)
            if self._lost_span is not None:
                low, high = min(low, self._lost_span[0]), max(high, self._lost_span[1])
            self._lost_span = (low, high)

    # -- writing --------------------------------------------------------------------------------------

    def _write(self) -> None:
        """Write the packed rows and meta values to the store (the io lock is held). Never raises."""
        # At most WRITE_BYTES a statement (and at least one row): copying the bytes to SQLite holds the
        # interpreter lock, so a large backlog goes in several statements rather than one long stall.
        ready = self._ready
        count = size = 0
        for _kind, _items, payload, _at in ready:
            if count and size + len(payload) > WRITE_BYTES:
                break
            count += 1
            size += len(payload)
        with self._lock:
            meta, self._ready_meta = self._ready_meta, {}
        if not (count or meta):
            return
        rows = ready[:count]
        # One row per kind: the chunks of a kind joined, in order (unpack reads them back as one list).
        joined: dict[str, tuple[int, list[bytes]]] = {}
        for kind, items, payload, _at in rows:
            total, parts = joined.setdefault(kind, (0, []))
            parts.append(payload)
            joined[kind] = (total + items, parts)
        # Joined in the buffer this writer keeps: its pages are in memory already, where a new megabyte
        # of bytes would fault each page in on first touch (0.5 ms a MiB here, the interpreter lock held).
        buffer = memoryview(self._join)
        views: list[memoryview] = []
        packed: list[tuple[str, int, bytes | memoryview]] = []
        end = 0
        for kind, (total, parts) in joined.items():
            length = sum(len(part) for part in parts)
            if len(parts) == 1 or end + length > len(buffer):  # one chunk, or one row past WRITE_BYTES
                packed.append((kind, total, parts[0] if len(parts) == 1 else b"".join(parts)))
                continue
            begin = end
            for part in parts:
                buffer[end : end + len(part)] = part
                end += len(part)
            views.append(buffer[begin:end])
            packed.append((kind, total, views[-1]))
        try:
            self.store.write_packed(packed, meta)
        except Exception as exc:  # broad: a full disk or a broken store must not reach the training loop
            with self._lock:
                meta.update(self._ready_meta)
                self._ready_meta = meta
            self._refused(exc)
            return
        finally:
            del packed
            for view in views:
                view.release()
            buffer.release()
        with self._lock:
            del self._ready[:count]
            self._ready_bytes -= size
        self._checkpointer.wrote(size)
        self._progress.set()
        if self._failing_since is not None:
            self._recovered()

    def _refused(self, exc: Exception) -> None:
        now = time.time()
        self._retry_at = now + RETRY_EVERY
        if self._failing_since is None:
            self._failing_since = self._reminded_at = now
            logger.error(
                "mlop could not write to its local store %s: %s; the values logged are kept in memory "
                "(%.1f MiB now, at most %.1f MiB) and written once it can take them",
                self.store.path,
                exc,
                self._ready_bytes / 2**20,
                self.max_held / 2**20,
            )
        elif now - self._reminded_at >= REMIND_EVERY:
            self._reminded_at = now
            logger.warning(
                "mlop: the local store %s has refused writes for %.0f s (%s); %.1f MiB of logged values "
                "are held in memory",
                self.store.path,
                now - self._failing_since,
                exc,
                self._ready_bytes / 2**20,
            )

    def _recovered(self) -> None:
        assert self._failing_since is not None
        seconds = time.time() - self._failing_since
        with self._lock:
            lost, steps, values, span = self._lost_items, self._lost_steps, self._lost_values, self._lost_span
            self._failing_since, self._lost_span = None, None
            self._lost_items = self._lost_steps = self._lost_values = 0
        if lost:
            when = "" if span is None else f", logged between {_clock(span[0])} and {_clock(span[1])}"
            logger.warning(
                "mlop: the local store %s takes writes again after %.0f s; the values held in memory are "
                "written, but %d logged steps (%d metric values) and %d other records%s were lost while "
                "memory was full",
                self.store.path,
                seconds,
                steps,
                values,
                lost - steps,
                when,
            )
        else:
            logger.warning(
                "mlop: the local store %s takes writes again after %.0f s; every value held in memory "
                "is written",
                self.store.path,
                seconds,
            )

    # -- whole flushes and the writer's thread --------------------------------------------------------

    def flush(self) -> None:
        """Pack and write everything pending now, on the calling thread. Never raises."""
        try:
            with self._entered(), self._pack_lock:
                self._pack(None)
            with self._entered(), self._io_lock:
                while True:
                    before = len(self._ready)
                    self._write()
                    if not self._ready or len(self._ready) >= before:  # all written, or refused
                        break
        except Exception:  # broad: flushing must not raise into the run's code
            logger.exception("mlop could not flush logged values")

    def close(self) -> None:
        """Flush what is pending and stop the writer thread; say what the store could not take."""
        self._stopped = True
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self.flush()
        self._checkpointer.close()
        if self._failing_since is not None and (self._ready or self._lost_items):
            logger.error(
                "mlop: the run ended while its local store %s refused writes: %d records (%.1f MiB) held "
                "in memory and %d records dropped before were not stored",
                self.store.path,
                sum(row[1] for row in self._ready),
                self._ready_bytes / 2**20,
                self._lost_items,
            )

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.interval / 2)
            self._wake.clear()
            if self._stopped:
                return
            try:
                self._step()
            except Exception:  # broad: the writer's thread must outlive any one failure
                logger.exception("mlop's writer thread failed to write; it goes on")

    def _step(self) -> None:
        now = time.time()
        if now >= self.deadline + PACK_EVERY and (self.metrics or self._other or self._meta):
            # No log() call has taken its turn: the loop is busy elsewhere or done. Pack here, in turns of
            # the same size, giving the interpreter lock back between them.
            # Only while log() calls stay away: once they take their turns again, this thread writes.
            more = True
            while more and not self._stopped and time.time() >= self.deadline + PACK_EVERY:
                with self._entered(), self._pack_lock:
                    more = self._pack(PACK_BUDGET)
                time.sleep(0)
        # One write per wake, and more at once only while a full statement's worth is waiting: in a busy
        # loop each write takes the interpreter lock back about three times, and each time the training
        # thread waits for this thread to be scheduled, so fewer, fuller writes stall it less.
        first = True
        while (
            (self._ready or self._ready_meta)
            and (first or self._ready_bytes >= WRITE_BYTES)
            and (self._failing_since is None or time.time() >= self._retry_at)
            and not self._stopped
        ):
            first = False
            with self._entered(), self._io_lock:
                self._write()


class _Checkpointer:
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


def _item_time(kind: str, item: Any) -> float | None:
    """The time an item was logged, for the report of what was lost (None when its shape has none)."""
    try:
        return float(item[1] if kind in _TIME_SECOND else item[0])
    except (TypeError, ValueError, IndexError):
        return None


def _clock(when: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when))
