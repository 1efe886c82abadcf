"""The writer: packs what a run logs a little at a time and hands it to the local store off the loop.

No ``run.log()`` call pays for more than a small, fixed slice of work, whatever is pending:

- The training thread appends each record to a plain list (cheap). Every few milliseconds a ``log()`` call
  packs what is pending with pickle, a few thousand values per pickle and for at most a fraction of a
  millisecond; what is left is packed by the calls that follow. Pickles are sized, from the speed of the
  last ones, to fit the time the turn has left (down to one record), so however wide the records, a turn
  stays within its budget unless a pickle runs slower than the ones before. Packing is the only work
  that must hold the interpreter lock, and this way it is spread evenly over the calls that log.
- Where a writer process can run (:mod:`mlop._ring`: Linux on x86-64), the turn copies each pickle into a
  ring of shared memory, and that process writes the rows to the store. No thread of this process needs
  the interpreter lock for the writes, so a loop that holds the lock is never made to hand it over (each
  hand-off cost such a loop 0.5-1.5 ms on this project's virtual machines: the last slow ``log()`` calls,
  bench/README.md). The writer's thread sleeps without a timer; it is woken when the ring goes quiet (to
  pack what the loop logged after its last turn), when the store begins or stops refusing writes, when
  the ring is full, or when something is added that no ``log()`` call will pack. The process starts with
  the run; until it is ready (about 40 ms) the rows wait here, and the thread writes them itself after
  START_HOLD. If it ends unexpectedly, the thread takes back what its ring holds and writes from then on.
- Otherwise the writer's own thread writes the packed bytes: one SQLite statement per write, during which
  SQLite has let go of the interpreter lock, so the training thread runs on while the bytes, the commit
  and any WAL checkpoint go to disk. In a loop that holds the interpreter lock, the thread needs it only a
  few times per write, each within the interpreter's switch interval (5 ms), so a record reaches the
  kernel about ``interval`` after its ``log()`` call, and SIGKILL loses nothing older than that. The turn
  that packs a metrics pickle also copies it into an open row buffer (a few µs for tens of kB), so a
  write binds whole buffers as they are and joins nothing; the buffers are reused, and new ones are
  mapped and their pages faulted in by this thread with the lock let go.
- When the loop stops logging (a long step, the end of training), the writer's thread packs what is left,
  in the same small slices.

When the store cannot take a write (a full disk, above all), packed values stay in memory (the ring and
this process), up to ``max_held`` bytes, and the writer retries; once the disk has room they are written,
and nothing is lost. Past the bound the values logged from then on are dropped and counted, and the
warnings say how much is held and what was lost.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Final, cast

from mlop import _ring
from mlop._checkpoint import Checkpointer
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
#: Bytes one write hands to SQLite, at most (unless one row is larger): SQLite copies them while binding,
#: holding the interpreter lock, about 30 µs a MiB.
WRITE_BYTES: Final = 2 << 20
#: Bytes of one row buffer: the training thread copies each metrics pickle into the open buffer as it packs
#: it (a few µs), so the writer's thread binds whole buffers and joins nothing while it holds the lock.
ROW_BYTES: Final = 1 << 20
#: Row buffers kept ready, their pages faulted in by the writer's thread: a fresh megabyte touched on the
#: training thread would cost it about 0.5 ms of page faults, the interpreter lock held.
SPARE_ROWS: Final = 8
#: Seconds a packed row may wait for the store before log() waits for the writer (see _keep_pace).
MAX_LAG: Final = 0.1
#: Seconds one log() call waits at most for the writer to keep pace.
MAX_WAIT: Final = 1.0
#: Bytes of packed values kept in memory while the store cannot take them (a full disk).
DEFAULT_MAX_HELD: Final = 256 << 20
#: Seconds between attempts to write while the store refuses writes.
RETRY_EVERY: Final = 0.5
#: Seconds between the reminders of how much is held while the store refuses writes.
REMIND_EVERY: Final = 60.0
#: Bytes of a run's shared ring, the writer process's input (header included).
RING_BYTES: Final = (16 << 20) + _ring.HEADER
#: Seconds a writer process may take to start before the run gives up on it and keeps its thread.
START_PATIENCE: Final = 15.0
#: Seconds the writer's thread leaves packed rows in memory while the writer process starts (about 40 ms
#: here): its writes would make a loop that logs from the start hand over the interpreter lock.
START_HOLD: Final = 0.5
#: Bytes a packing turn moves into the ring of the rows that waited for it (while it started or was full).
MOVE_BYTES: Final = 1 << 20
#: Seconds flush() waits at most for the writer process to store what it was handed.
FLUSH_PATIENCE: Final = 30.0

#: The writer process's program: mlop's package without its ``__init__`` (the store and the ring need
#: none of what it imports; the process starts in a third of the time), then ``mlop._ring.main``.
_CHILD_MAIN: Final = (
    "import sys, types; package = types.ModuleType('mlop'); package.__path__ = [sys.argv.pop(1)]; "
    "sys.modules['mlop'] = package; from mlop._ring import main; sys.exit(main())"
)

_perf = time.perf_counter
_TIME_SECOND: Final = frozenset({"metrics", "system", "data", "files"})  # (step, time, ...) items


class _Row:
    """One packed row waiting for the store: a kind's pickles, back to back.

    ``data`` is a row buffer (an anonymous mapping of ROW_BYTES) that the training thread appends pickles
    to until the writer's thread seals it for a write, or the bytes of one pickle.
    """

    __slots__ = ("at", "buffered", "data", "items", "kind", "sealed", "size")

    def __init__(self, kind: str, items: int, data: bytes | mmap.mmap, size: int, at: float) -> None:
        self.kind = kind
        self.items = items
        self.data = data
        self.size = size
        self.at = at  # when its first pickle was packed
        self.buffered = type(data) is not bytes
        self.sealed = not self.buffered


class Writer:
    """Buffers records for one run, packs them as they come and writes them to its store.

    Args:
        store: the run's store, opened for writing.
        interval: about the longest time, in seconds, a record waits in memory before it is written.
        max_held: bytes of packed values kept in memory while the store refuses writes.
        process: hand the writes to a writer process (see :mod:`mlop._ring`), started with the writer;
            where none can run (or with False), the writer's thread writes.
    """

    def __init__(
        self, store: Store, interval: float, max_held: int = DEFAULT_MAX_HELD, process: bool = True
    ) -> None:
        self.store = store
        self.interval = interval
        self.max_held = max_held
        self.process = process and _ring.available()
        # The writer process, once asked for: its ring, the process, the pipe its pokes come through.
        self._ring: _ring.Ring | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._child_started = 0.0
        self._ring_open = False  # packed rows go into the ring (the writer process stores them)
        self._poke_r: int | None = None
        self._poke_w: int | None = None
        self._pidfd: int | None = None
        self._hurry: int | None = None  # wakes the writer process from its poll (flush, close)
        self._faulted = False  # the ring's pages are in this process's memory
        self._late = False  # the writer process was slow to start: the thread was woken to write
        # The hot path appends (step, time, values) here directly; see Op.log.
        self.metrics: list[tuple[int, float, dict[str, Any]]] = []
        self._other: list[tuple[str, Any]] = []
        self._meta: dict[str, Any] = {}
        # Packed rows and JSON meta values waiting for the store, in order.
        self._ready: list[_Row] = []
        self._spare: list[mmap.mmap] = []  # row buffers free for use, their pages in memory
        self._spare_target = 2  # grows each time the training thread finds none spare (see _refill)
        self._ready_meta: dict[str, str] = {}
        self._ready_bytes = 0
        # When the training thread's next packing turn is due (time.time()); Op.log compares against it.
        self.deadline = time.time() + PACK_EVERY
        # Seconds per value of recent pickles (a moving average): sizes each pickle to a turn's time left.
        self._value_cost = FIRST_VALUE_COST
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
        try:
            self._zero: int | None = os.open("/dev/zero", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except (OSError, AttributeError):  # no /dev/zero (Windows): buffers fault in where first written
            self._zero = None
        self._thread = threading.Thread(target=self._loop, name="mlop-writer", daemon=True)
        # Checkpoints are the writer process's; this process makes them only when it writes the rows.
        self._checkpointer: Checkpointer | None = None
        if self.process:
            # Started here, before the run's services: it inherits the standard streams the script had,
            # not the pipes console capture may put in their place.
            self._start_child()
        else:
            self._checkpointer = Checkpointer(store)
        self._thread.start()

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
            self._nudge()
            return
        with self._lock:
            self._other.append((kind, item))
            if meta:
                self._meta.update(meta)
        self._nudge()

    def set_meta(self, meta: dict[str, Any]) -> None:
        """Queue meta values alone (the run's ``systemMetadata``); :meth:`flush` makes them durable."""
        with self._lock:
            self._meta.update(meta)
        self._nudge()

    def _nudge(self) -> None:
        """Wake the writer's thread for what was added, unless a log() call packs it within PACK_EVERY.

        While the writer process stores the rows, the thread sleeps until woken (it has no timer that
        would make a busy loop hand it the interpreter lock).
        """
        if self._poke_w is not None and time.time() >= self.deadline + PACK_EVERY:
            self._signal()

    def tick(self) -> None:
        """The training thread's packing turn, due at ``deadline``: pack for at most PACK_BUDGET seconds.

        Called by ``run.log()``; never raises. When more is pending than one turn packs, the next call
        takes the next turn.
        """
        try:
            if self._ring is not None and not self._ring_open:
                self._opening()
            if not (self.metrics or self._other or self._meta or self._ready):
                return  # no turn without work: the next call that brings some takes it at once
            with self._entered():
                if not self._pack_lock.acquire(blocking=False):  # the writer's thread is packing
                    self.deadline = time.time() + PACK_EVERY
                    return
                try:
                    more = self._pack(PACK_BUDGET)
                finally:
                    self._pack_lock.release()
                if self._ready and self._ring_open:  # rows that waited for the ring: a bounded share
                    self._move(MOVE_BYTES)
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
            and not self._starting()
            and self._failing_since is None
            and not self._stopped
            and time.time() - ready[0].at > MAX_LAG
            and time.monotonic() < deadline
        ):
            self._progress.clear()
            self._signal()
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
                    ring = self._ring
                    if not (
                        self._ring_open
                        and ring is not None
                        and not self._ready
                        and not self._ready_meta
                        and ring.put(_ring.META, 0, json.dumps(encoded).encode())
                    ):
                        self._ready_meta.update(encoded)
        return bool(pending)

    def _keep(self, kind: str, items: list[Any]) -> None:
        """Pack items into a row for the next write; past ``max_held`` while writes fail, drop them.

        Metrics pickles are copied into the open row buffer (the last row, until the writer's thread
        seals it), so a write binds a few whole buffers instead of joining many pickles.
        """
        payload = pack_batch(kind, items)
        size = len(payload)
        with self._lock:
            # Once dropping starts it goes on until the store takes writes again: one gap, not holes.
            if self._failing_since is not None and (self._lost_items or self._held() + size > self.max_held):
                self._drop(kind, items)
                return
            ring = self._ring
            if self._ring_open and ring is not None:
                # The writer process's turn: into the ring, unless rows wait before this one (order) or
                # the ring is full, when the row waits here and the writer's thread moves it in later.
                code = _ring.CODES.get(kind)
                if self._ready:
                    self._move(MOVE_BYTES)
                if not self._ready and code is not None and ring.put(code, len(items), payload):
                    return
                self._ready_bytes += size
                self._ready.append(_Row(kind, len(items), payload, size, time.time()))
                if code is None or not ring.fits(size) or ring.used():
                    self._signal()  # a full ring (or a row only this process writes): the thread's turn
                return
            self._ready_bytes += size
            last = self._ready[-1] if self._ready else None
            if last is not None and not last.sealed and last.kind == kind and last.size + size <= ROW_BYTES:
                last.data[last.size : last.size + size] = payload  # type: ignore[index]
                last.size += size
                last.items += len(items)
                return
            if kind != "metrics" or size > ROW_BYTES // 2 or self._failing_since is not None:
                # Other kinds come rarely; a held row keeps only its own bytes while writes fail.
                self._ready.append(_Row(kind, len(items), payload, size, time.time()))
                return
            if self._spare:
                buffer = self._spare.pop()
            else:
                buffer = mmap.mmap(-1, ROW_BYTES)
                self._spare_target = min(SPARE_ROWS, self._spare_target + 1)
            buffer[:size] = payload
            self._ready.append(_Row(kind, len(items), buffer, size, time.time()))

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
        """Write the packed rows and meta values to the store (the io lock is held). Never raises.

        With the writer process running, move them into its ring instead.
        """
        if self._ring_open:
            self._move()
            return
        # At most WRITE_BYTES a statement (and at least one row): copying the bytes to SQLite holds the
        # interpreter lock, so a large backlog goes in several statements rather than one long stall.
        ready = self._ready
        count = size = 0
        with self._lock:
            for row in ready:
                if count and size + row.size > WRITE_BYTES:
                    break
                row.sealed = True  # the training thread appends to it no more
                count += 1
                size += row.size
            meta, self._ready_meta = self._ready_meta, {}
        if not (count or meta):
            return
        rows = ready[:count]
        # Per kind, in logging order: each row buffer bound as it is (SQLite copies it while binding), the
        # single pickles between them (other kinds; metrics held while writes failed) joined into one row.
        runs: dict[str, list[list[_Row]]] = {}
        for row in rows:
            segments = runs.setdefault(row.kind, [])
            if row.buffered or not segments or segments[-1][0].buffered:
                segments.append([row])
            else:
                segments[-1].append(row)
        views: list[memoryview] = []
        packed: list[tuple[str, int, bytes | memoryview]] = []
        for kind, segments in runs.items():
            for segment in segments:
                items = sum(row.items for row in segment)
                if segment[0].buffered:
                    views.append(memoryview(segment[0].data)[: segment[0].size])
                    packed.append((kind, items, views[-1]))
                else:
                    parts = [cast(bytes, row.data) for row in segment]
                    packed.append((kind, items, parts[0] if len(parts) == 1 else b"".join(parts)))
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
        with self._lock:
            del self._ready[:count]
            self._ready_bytes -= size
            for row in rows:
                if row.buffered and len(self._spare) < SPARE_ROWS:
                    self._spare.append(cast(mmap.mmap, row.data))
        if self._checkpointer is not None:
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
                self._held() / 2**20,
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
                self._held() / 2**20,
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
        """Pack and write everything pending now, on the calling thread. Never raises.

        With the writer process running, hand it everything and wait until the store has it (at most
        FLUSH_PATIENCE seconds, and not while the store refuses writes).
        """
        try:
            with self._entered(), self._pack_lock:
                self._pack(None)
            deadline = time.monotonic() + FLUSH_PATIENCE
            while True:
                with self._entered(), self._io_lock:
                    before = len(self._ready)
                    self._write()
                    if not self._ready and not self._ready_meta:
                        break
                    if not self._ring_open:
                        if not self._ready or len(self._ready) >= before:  # all written, or refused
                            break
                        continue
                    # Rows wait for room in the ring while the writer process stores what it holds.
                    if not self._ring_alive():
                        self._lose_child()
                        continue
                    if self._sync_failing() or time.monotonic() > deadline:
                        break
                time.sleep(0.001)
            if self._ring_open:
                self._wait_stored(deadline)
        except Exception:  # broad: flushing must not raise into the run's code
            logger.exception("mlop could not flush logged values")

    def close(self) -> None:
        """Flush what is pending and stop the writer thread; say what the store could not take."""
        self._stopped = True
        self._signal()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self.flush()
        held_in_ring = self._end_child()
        if self._checkpointer is not None:
            self._checkpointer.close()
        if self._zero is not None and not self._thread.is_alive():
            os.close(self._zero)
            self._zero = None
        if (self._failing_since is not None and (self._ready or self._lost_items)) or held_in_ring:
            logger.error(
                "mlop: the run ended while its local store %s refused writes: %d records (%.1f MiB) held "
                "in memory and %d records dropped before were not stored",
                self.store.path,
                sum(row.items for row in self._ready) + held_in_ring,
                self._held() / 2**20,
                self._lost_items,
            )

    def _loop(self) -> None:
        ring = self._ring
        if ring is not None:
            # The ring's pages, in before the loop touches them (7 ms for 16 MiB, the lock let go; a loop's
            # first pass through fresh pages would cost it 10 ms), while the process starts.
            self._fault_in(ring.map, _ring.HEADER)
            self._faulted = True
        while True:
            if self._poke_r is not None:
                # The writer process stores the rows; this thread sleeps until it is woken: the ring has
                # gone quiet (pack what the loop logged last), the store began or stopped refusing
                # writes, rows wait here for room in the ring, something was added that no log() call
                # will pack, the process ended. No timer while all is well: each wake would make a
                # loop that holds the interpreter lock hand it over (bench/README.md, issue 20).
                timeout: float | None
                if not self._ring_open:
                    # Starting: the process pokes once it is ready unless a packing turn opened the ring.
                    timeout = START_PATIENCE if self._starting() else self.interval / 2
                elif self._ready or self._ready_meta or self._failing_since is not None:
                    timeout = 0.05
                else:
                    timeout = None if self._pidfd is not None else 5.0
                _ring.wait_readable(
                    [self._poke_r] + ([self._pidfd] if self._pidfd is not None else []), timeout
                )
            else:
                try:
                    self._refill()
                except Exception:  # broad: without spares the training thread maps its own buffers
                    logger.debug("mlop could not prepare row buffers", exc_info=True)
                self._wake.wait(self.interval / 2)
                self._wake.clear()
            if self._stopped:
                return
            try:
                if self._ring is not None and not self._ring_open:
                    self._try_open()
                self._step()
            except Exception:  # broad: the writer's thread must outlive any one failure
                logger.exception("mlop's writer thread failed to write; it goes on")

    def _refill(self) -> None:
        """Map row buffers up to the spare target and fault their pages in, here and not on the loop.

        Reading /dev/zero into a buffer lets the kernel fault its pages in without the interpreter lock.
        Once the buffers written come back to the spares, a loop at a steady pace needs no new ones.
        """
        while len(self._spare) < self._spare_target and not self._stopped:
            buffer = mmap.mmap(-1, ROW_BYTES)
            self._fault_in(buffer, 0)
            with self._lock:
                self._spare.append(buffer)

    def _fault_in(self, buffer: mmap.mmap, start: int) -> None:
        """Fill ``buffer[start:]`` with zeros from /dev/zero: its pages come in with the lock let go."""
        if self._zero is None:
            return
        view = memoryview(buffer)
        try:
            done, size = start, len(buffer)
            while done < size:
                got = os.readv(self._zero, [view[done:]])
                if got <= 0:
                    break
                done += got
        finally:
            view.release()

    def _step(self) -> None:
        if self._ring_open:
            if not self._ring_alive():
                self._lose_child()
            else:
                self._sync_failing()
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
        if self._starting():
            return  # the rows wait for the writer process a moment
        # One write per wake, and more at once only while a full statement's worth is waiting: in a busy
        # loop each write takes the interpreter lock back about three times, and each time the training
        # thread waits for this thread to be scheduled, so fewer, fuller writes stall it less.
        first = True
        while (
            (self._ready or self._ready_meta)
            and (first or self._ready_bytes >= WRITE_BYTES)
            and (self._failing_since is None or time.time() >= self._retry_at or self._ring_open)
            and not self._stopped
        ):
            first = False
            with self._entered(), self._io_lock:
                before = len(self._ready), len(self._ready_meta)
                self._write()
                if self._ring_open and (len(self._ready), len(self._ready_meta)) == before:
                    break  # the ring is full: the next wake tries again

    # -- the writer process ---------------------------------------------------------------------------

    def _signal(self) -> None:
        """Wake the writer's thread, whichever way it waits."""
        self._wake.set()
        if self._poke_w is not None:
            with contextlib.suppress(OSError):
                os.write(self._poke_w, b"\0")

    def _held(self) -> int:
        """Bytes of packed values not yet in the store: rows waiting here and frames in the ring."""
        ring = self._ring
        return self._ready_bytes + (ring.used() if self._ring_open and ring is not None else 0)

    def wait_started(self, timeout: float) -> None:
        """Wait, at most ``timeout`` seconds, until the writer process is ready and its ring open."""
        ring = self._ring
        deadline = time.monotonic() + timeout
        while ring is not None and not self._open_if_ready() and time.monotonic() < deadline:
            if self._child is None or self._child.poll() is not None:
                return  # the writer's thread gives up on it and writes
            time.sleep(0.001)

    def _open_if_ready(self) -> bool:
        """Open the ring once the writer process is ready and the ring's pages are in; whether it is open.

        What waits here then goes first, moved in by the packing turns and the writer's thread.
        """
        ring = self._ring
        if ring is not None and self._faulted and ring.state == _ring.READY:
            with self._lock:
                if self._ring is ring and not self._ring_open:
                    self._ring_open = True
                    ring.opened()
        return self._ring_open

    def _starting(self) -> bool:
        """Whether the writer process is starting, and the rows wait in memory for it (START_HOLD)."""
        return (
            self._ring is not None
            and not self._ring_open
            and time.monotonic() - self._child_started < START_HOLD
        )

    def _opening(self) -> None:
        """A packing turn's look at a starting writer process: open the ring once it is ready.

        Opened here, the writer's thread need not wake for it; when the process is slow to start, the
        thread is woken to write the rows itself meanwhile.
        """
        if not self._open_if_ready() and self._faulted and not self._late and not self._starting():
            self._late = True
            self._signal()

    def _hurry_child(self) -> None:
        """Wake the writer process now rather than at its next look at the ring (up to 50 ms away)."""
        if self._hurry is not None:
            with contextlib.suppress(OSError):
                os.write(self._hurry, b"\0")

    def _ring_alive(self) -> bool:
        return self._child is not None and self._child.poll() is None

    def _start_child(self) -> None:
        """Make the ring and start the writer process; the ring opens once it is ready (_opening)."""
        ring: _ring.Ring | None = None
        read = write = hurry_r = hurry_w = -1
        try:
            ring = _ring.Ring.create(RING_BYTES)
            read, write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)  # its pokes, to this process's thread
            hurry_r, hurry_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)  # flush() and close(), to it
            # The process imports mlop's modules from where this one did (a source tree works too).
            package = os.path.dirname(os.path.abspath(_ring.__file__))
            args = [
                str(ring.fd),
                str(ring.size),
                str(write),
                str(hurry_r),
                str(os.getpid()),
                str(self.interval),
            ]
            self._child = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _CHILD_MAIN, package, *args, str(self.store.path)],
                pass_fds=(ring.fd, write, hurry_r),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env={k: v for k, v in os.environ.items() if not k.startswith("MLOP_")},  # no key
            )
        except Exception:  # broad: without a writer process the writer's thread goes on writing
            logger.debug("mlop could not start its writer process", exc_info=True)
            self._thread_writes()
            if ring is not None:
                ring.close()
            for fd in (read, write, hurry_r, hurry_w):
                if fd >= 0:
                    os.close(fd)
            return
        os.close(hurry_r)
        self._child_started = time.monotonic()
        try:
            self._pidfd = os.pidfd_open(self._child.pid)  # readable once the process has ended
        except (AttributeError, OSError):  # Linux before 5.3: the thread looks every few seconds
            self._pidfd = None
        self._ring, self._poke_r, self._poke_w, self._hurry = ring, read, write, hurry_w

    def _try_open(self) -> None:
        """Hand the writes to the writer process once it is ready; give up on one that does not start."""
        ring, child = self._ring, self._child
        assert ring is not None and child is not None
        if child.poll() is not None or (
            ring.state != _ring.READY and time.monotonic() - self._child_started > START_PATIENCE
        ):
            logger.debug("mlop's writer process did not start (status %s)", child.poll())
            self._end_child()
            self._thread_writes()
            return
        self._open_if_ready()

    def _move(self, limit: int | None = None) -> None:
        """Move waiting rows, then meta values, into the ring, as far as it has room.

        From a packing turn (``limit``: about that many bytes at most), or from the writer's thread or a
        flush with the io lock held (no limit): then a row too large for the ring, or of a kind it has no
        code for, is written here once the writer process has stored every frame before it.
        """
        ring = self._ring
        if ring is None:
            return
        moved = 0
        with self._lock:
            ready = self._ready
            while ready and (limit is None or moved < limit):
                row = ready[0]
                code = _ring.CODES.get(row.kind)
                if code is None or not ring.fits(row.size):
                    if limit is not None or ring.used() or not self._write_here(row):
                        return  # the writer's thread writes it, once the ring is empty
                    continue
                row.sealed = True
                payload = cast(bytes, row.data) if not row.buffered else memoryview(row.data)[: row.size]
                try:
                    if not ring.put(code, row.items, payload):
                        return
                finally:
                    if isinstance(payload, memoryview):
                        payload.release()
                del ready[0]
                self._ready_bytes -= row.size
                moved += row.size
                self._progress.set()
            if self._ready_meta and not ready:
                encoded = json.dumps(self._ready_meta).encode()
                if ring.put(_ring.META, 0, encoded):
                    self._ready_meta = {}
                elif not ring.fits(len(encoded)) and limit is None and not ring.used():
                    try:  # too large for a frame: written here, after every frame before it
                        self.store.write_packed([], self._ready_meta)
                    except Exception as exc:  # broad: the store refused it; it waits here
                        self._refused(exc)
                    else:
                        self._ready_meta = {}

    def _write_here(self, row: _Row) -> bool:
        """Write one row with this process's own connection (the lock is held; the ring is empty)."""
        data = cast(bytes, row.data) if not row.buffered else memoryview(row.data)[: row.size]
        try:
            self.store.write_packed([(row.kind, row.items, data)])
        except Exception as exc:  # broad: the store refused it; it stays first in line
            self._refused(exc)
            return False
        finally:
            if isinstance(data, memoryview):
                data.release()
        del self._ready[0]
        self._ready_bytes -= row.size
        self._progress.set()
        return True

    def _sync_failing(self) -> bool:
        """Take the writer process's word on whether the store refuses writes; True while it does."""
        ring = self._ring
        if ring is None:
            return False
        since = ring.failing_since
        if since and self._failing_since is None:
            self._refused(OSError(ring.error))
        elif not since and self._failing_since is not None:
            self._recovered()
        return bool(since)

    def _wait_stored(self, deadline: float) -> None:
        """Wait until the writer process has stored every frame in the ring now (flush's second half)."""
        ring = self._ring
        if ring is None:
            return
        target = ring.head
        self._hurry_child()
        refused_at: float | None = None
        while ring.tail < target and time.monotonic() < deadline:
            if not self._ring_alive():
                self._lose_child()
                self.flush()
                return
            if self._sync_failing():
                # The store refuses writes: give the process its next attempt, then leave the rows held.
                refused_at = refused_at or time.monotonic()
                if time.monotonic() - refused_at > 1.5 * _ring.RETRY_EVERY:
                    return
            time.sleep(0.0005)
        self._sync_failing()

    def _lose_child(self) -> None:
        """The writer process ended while it had the writes: take what its ring holds back, write here."""
        ring, child = self._ring, self._child
        if ring is None:
            return
        with self._lock:
            if not self._ring_open:  # never opened, or another thread took it back first
                return
            self._ring_open = False
            rows: list[_Row] = []
            meta: dict[str, str] = {}
            frames, tail, items = ring.frames(ring.capacity)
            try:
                for code, count, payload in frames:
                    if code == _ring.META:
                        meta.update(json.loads(bytes(payload)))
                    else:
                        rows.append(
                            _Row(_ring.KINDS[code], count, payload.tobytes(), len(payload), time.time())
                        )
            finally:
                for _, _, payload in frames:
                    payload.release()
            ring.done(tail, items)
            self._ready[:0] = rows
            self._ready_bytes += sum(row.size for row in rows)
            meta.update(self._ready_meta)
            self._ready_meta = meta
        logger.warning(
            "mlop's writer process ended unexpectedly (status %s); the run's values are written by its "
            "own thread from now on",
            None if child is None else child.poll(),
        )
        self._end_child()
        self._thread_writes()

    def _thread_writes(self) -> None:
        """From now on the writer's thread writes (no writer process), checkpoints included."""
        self.process = False
        if self._checkpointer is None:
            self._checkpointer = Checkpointer(self.store)

    def _end_child(self) -> int:
        """Stop the writer process (it stores what the ring holds first); the items it could not store."""
        ring, child = self._ring, self._child
        if ring is None:
            return 0
        held = 0
        if child is not None:
            if self._ring_open and child.poll() is None:
                # It stores what the ring holds, says DONE and ends at once.
                ring.close_asked()
                self._hurry_child()
                deadline = time.monotonic() + 10.0
                last = ring.tail
                while ring.state != _ring.DONE and child.poll() is None and time.monotonic() < deadline:
                    if ring.tail != last:  # it is storing: give it the time it needs
                        last, deadline = ring.tail, time.monotonic() + 10.0
                    if ring.failing_since and time.monotonic() > deadline - 9.0:
                        break
                    time.sleep(0.001)
            if ring.state != _ring.DONE and child.poll() is None:
                child.kill()
            try:
                child.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                child.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(timeout=5.0)
            if self._ring_open:
                held = ring.items_put - ring.items_done
                self._sync_failing()
        with self._lock:
            self._ring_open = False
            self._ring = self._child = None
        for fd in (self._poke_r, self._poke_w, self._pidfd, self._hurry):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._poke_r = self._poke_w = self._pidfd = self._hurry = None
        ring.close()
        return held


def _item_time(kind: str, item: Any) -> float | None:
    """The time an item was logged, for the report of what was lost (None when its shape has none)."""
    try:
        return float(item[1] if kind in _TIME_SECOND else item[0])
    except (TypeError, ValueError, IndexError):
        return None


def _clock(when: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when))
