"""A run's shared ring: packed rows handed from the training process to a writer process without a lock.

The ring is a file in shared memory (``memfd_create``) mapped by the training process and by one child
process running :func:`main`, that owns the store's writes while it runs. The training thread
copies each packed pickle into the ring as a frame and moves the head; the child polls the head, writes
whole frames to the store and moves the tail once SQLite has them. No lock is shared and no thread of
the training process needs the interpreter lock for the write, so a loop that holds that lock is never
made to hand it over (the last source of slow ``log()`` calls; see bench/README.md, issue 20).

Layout (little-endian): a header page, then ``capacity`` bytes of frames. A frame is its length (u32,
header included), a kind code (u8), an item count (u32) and the payload. A frame never wraps: where the
bytes left before the end cannot hold the next frame, the producer writes a zero length there (when at
least four bytes are left) and the frame starts at the beginning. ``head`` and ``tail`` count bytes ever
written and ever stored, so ``head - tail`` is what the ring holds. The producer writes a frame's bytes
before it moves the head; the ring is used only on x86-64, whose stores reach another core in order.

The child outlives a SIGKILL of its parent: it notices the parent is gone, stores what the ring holds and
exits. When the store refuses a write (a full disk), the frames stay in the ring and the child tries
again; the header says since when, and why, so the parent can say it and hold what no longer fits.
"""

from __future__ import annotations

import json
import mmap
import os
import select
import signal
import struct
import sys
import time
from typing import Any, Final

from mlop._store import KINDS

__all__ = ["CODES", "KINDS", "META", "Drainer", "Ring", "available", "main"]

#: A frame's kind is its index in KINDS (the store's kinds); META carries JSON-encoded meta values.
META: Final = 255
CODES: Final = {kind: code for code, kind in enumerate(KINDS)}

HEADER: Final = 4096
_HEAD, _TAIL, _ITEMS_PUT, _ITEMS_DONE, _FAILING, _STATE, _CLOSING, _OPENED = 0, 8, 16, 24, 32, 40, 48, 56
_ERROR: Final = 128  # u16 length, then UTF-8 text
_ERROR_MAX: Final = 1024
_FRAME: Final = struct.Struct("<IBI")
_U64: Final = struct.Struct("<Q")
_F64: Final = struct.Struct("<d")
_U32: Final = struct.Struct("<I")

#: Child states in the header.
STARTING, READY, DONE = 0, 1, 2
#: Bytes of payload one statement of the child writes at most (unless one frame is larger).
WRITE_BYTES: Final = 4 << 20
#: Seconds between the child's looks at the head: while frames come in (the ring holds 0.3 s of the widest
#: loop measured), after 0.1 s without any, after 1 s without any (an idle run's process: about 0.1% of a
#: core).
POLL_BUSY: Final = 0.005
POLL_QUIET: Final = 0.01
POLL_IDLE: Final = 0.05
#: How much lower the writer process's scheduling priority is than its parent's.
NICE: Final = 5
#: Seconds between attempts while the store refuses writes.
RETRY_EVERY: Final = 0.5
#: Seconds a child whose parent is gone keeps trying a store that refuses writes before it gives up.
ORPHAN_PATIENCE: Final = 60.0


def available() -> bool:
    """Whether this machine can run a writer process: Linux on x86-64, with ``memfd_create``."""
    return (
        sys.platform.startswith("linux")
        and os.uname().machine.lower() in ("x86_64", "amd64")
        and hasattr(os, "memfd_create")
        and bool(sys.executable)
    )


class Ring:
    """One mapping of a run's ring (the producer's or the consumer's side)."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self.capacity = size - HEADER
        self.map = mmap.mmap(fd, size, flags=mmap.MAP_SHARED)
        self._pack_into = _U64.pack_into
        self._unpack_from = _U64.unpack_from

    @classmethod
    def create(cls, size: int) -> Ring:
        fd = os.memfd_create("mlop-ring", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            return cls(fd, size)
        except BaseException:
            os.close(fd)
            raise

    def close(self) -> None:
        try:
            self.map.close()
        except (BufferError, ValueError):  # a view still open: the mapping goes with the process
            pass
        os.close(self.fd)

    # -- the header ------------------------------------------------------------------------------------

    def _get(self, offset: int) -> int:
        return int(self._unpack_from(self.map, offset)[0])

    def _set(self, offset: int, value: int) -> None:
        self._pack_into(self.map, offset, value)

    @property
    def head(self) -> int:
        return self._get(_HEAD)

    @property
    def tail(self) -> int:
        return self._get(_TAIL)

    def used(self) -> int:
        return self._get(_HEAD) - self._get(_TAIL)

    @property
    def items_put(self) -> int:
        return self._get(_ITEMS_PUT)

    @property
    def items_done(self) -> int:
        return self._get(_ITEMS_DONE)

    @property
    def state(self) -> int:
        return self._get(_STATE)

    @state.setter
    def state(self, value: int) -> None:
        self._set(_STATE, value)

    @property
    def closing(self) -> bool:
        return bool(self._get(_CLOSING))

    def close_asked(self) -> None:
        self._set(_CLOSING, 1)

    @property
    def is_open(self) -> bool:
        """Whether the parent has begun to put frames (it opens the ring once the child is READY)."""
        return bool(self._get(_OPENED))

    def opened(self) -> None:
        self._set(_OPENED, 1)

    @property
    def failing_since(self) -> float:
        """When the store began refusing the child's writes (0.0: it takes them)."""
        return float(_F64.unpack_from(self.map, _FAILING)[0])

    @property
    def error(self) -> str:
        (length,) = struct.unpack_from("<H", self.map, _ERROR)
        return bytes(self.map[_ERROR + 2 : _ERROR + 2 + length]).decode("utf-8", "replace")

    def set_failing(self, since: float, error: str = "") -> None:
        text = error.encode("utf-8", "replace")[:_ERROR_MAX]
        struct.pack_into("<H", self.map, _ERROR, len(text))
        self.map[_ERROR + 2 : _ERROR + 2 + len(text)] = text
        _F64.pack_into(self.map, _FAILING, since)

    # -- the producer's side ---------------------------------------------------------------------------

    def fits(self, size: int) -> bool:
        """Whether a payload of ``size`` bytes can be a frame: at most half the ring, so that an empty
        ring always has room for it, wherever its head is."""
        return _FRAME.size + size <= self.capacity // 2

    def put(self, kind: int, items: int, payload: bytes | memoryview) -> bool:
        """Append one frame; False when the ring has no room for it now, or never will (see :meth:`fits`).

        One producer at a time.
        """
        need = _FRAME.size + len(payload)
        if need > self.capacity // 2:
            return False
        head = self._get(_HEAD)
        free = self.capacity - (head - self._get(_TAIL))
        at = head % self.capacity
        left = self.capacity - at
        if left < need:  # no frame wraps: skip to the start
            if left + need > free:
                return False
            if left >= 4:
                _U32.pack_into(self.map, HEADER + at, 0)
            head += left
            at = 0
        elif need > free:
            return False
        start = HEADER + at
        _FRAME.pack_into(self.map, start, need, kind, items)
        self.map[start + _FRAME.size : start + need] = payload
        self._set(_ITEMS_PUT, self._get(_ITEMS_PUT) + items)
        self._set(_HEAD, head + need)  # last: the consumer reads nothing before it
        return True

    # -- the consumer's side ---------------------------------------------------------------------------

    def frames(self, limit: int) -> tuple[list[tuple[int, int, memoryview]], int, int]:
        """Whole frames from the tail, up to about ``limit`` payload bytes: (frames, new tail, items).

        The views point into the ring; release them before the tail moves past them.
        """
        tail = self._get(_TAIL)
        head = self._get(_HEAD)
        out: list[tuple[int, int, memoryview]] = []
        size = items = 0
        view = memoryview(self.map)
        try:
            while tail < head and (not out or size < limit):
                at = tail % self.capacity
                left = self.capacity - at
                length = _U32.unpack_from(self.map, HEADER + at)[0] if left >= 4 else 0
                if left < _FRAME.size or length == 0:
                    tail += left
                    continue
                _, kind, count = _FRAME.unpack_from(self.map, HEADER + at)
                start = HEADER + at
                out.append((kind, count, view[start + _FRAME.size : start + length]))
                size += length - _FRAME.size
                items += count
                tail += length
        finally:
            view.release()
        return out, tail, items

    def done(self, tail: int, items: int) -> None:
        self._set(_ITEMS_DONE, self._get(_ITEMS_DONE) + items)
        self._set(_TAIL, tail)


class Drainer:
    """Stores the frames at a ring's tail (the writer process's side).

    Consecutive frames of one kind become one row, their pickles back to back as the store reads them,
    copied into a buffer this keeps (its pages in memory after the first writes: a fresh 4 MiB would
    cost about 2 ms of page faults per write) and bound as views of it; meta frames go in the same
    transaction.
    """

    def __init__(self, ring: Ring, store: Any) -> None:
        self.ring = ring
        self.store = store
        self._buffer = bytearray()

    def drain(self, limit: int = WRITE_BYTES) -> tuple[int, int]:
        """Store up to about ``limit`` bytes of frames: (bytes, items) stored.

        Raises what the store raises; the tail moves only once the store has the rows.
        """
        frames, tail, items = self.ring.frames(limit)
        if not frames:
            return 0, 0
        need = sum(len(payload) for code, _, payload in frames if code != META)
        if len(self._buffer) < need:
            self._buffer = bytearray(max(need, 2 * len(self._buffer)))
        buffer = self._buffer
        whole = memoryview(buffer)
        rows: list[tuple[str, int, memoryview]] = []
        meta: dict[str, str] = {}
        size = at = start = count = 0
        current = -1
        try:
            for code, count_in, payload in frames:
                size += len(payload)
                if code == META:
                    meta.update(json.loads(bytes(payload)))
                    continue
                if code != current:
                    if at > start:
                        rows.append((KINDS[current], count, whole[start:at]))
                    start, current, count = at, code, 0
                buffer[at : at + len(payload)] = payload
                at += len(payload)
                count += count_in
            if at > start:
                rows.append((KINDS[current], count, whole[start:at]))
        finally:
            for _, _, payload in frames:
                payload.release()
        try:
            self.store.write_packed(rows, meta)
        finally:
            for _, _, view in rows:
                view.release()
            whole.release()
        self.ring.done(tail, items)
        return size, items


# -- the writer process ----------------------------------------------------------------------------------


def _poke(fd: int) -> None:
    try:
        os.write(fd, b"\0")
    except (BlockingIOError, OSError):  # a full pipe has a poke waiting already; a closed one, no reader
        pass


def serve(ring: Ring, store: Any, poke: int, hurry: int, parent: int, interval: float) -> int:
    """The writer process's loop: store what the ring holds until asked to stop or orphaned; exit status.

    Pokes the parent's writer thread (one byte into ``poke``) when the ring has gone quiet, so that it
    packs what the loop logged last, and when the store begins or stops refusing writes. Between looks
    at the ring it waits on ``hurry``, which the parent writes to when it waits for the store (flush,
    close).
    """
    from mlop._checkpoint import Checkpointer

    checkpointer = Checkpointer(store)
    drainer = Drainer(ring, store)
    ring.state = READY  # the parent's next packing turn opens the ring: no poke, no wake of its thread
    last_head = ring.head
    ready_at = changed_at = poked_at = time.monotonic()
    failing = False
    retry_at = 0.0
    orphaned_at: float | None = None
    try:
        while True:
            now = time.monotonic()
            if ring.head != ring.tail and (not failing or now >= retry_at):
                try:
                    size, _ = drainer.drain()
                except Exception as exc:  # broad: a full disk, above all; the frames stay in the ring
                    retry_at = now + RETRY_EVERY
                    if not failing:
                        failing = True
                        ring.set_failing(time.time(), str(exc) or type(exc).__name__)
                        _poke(poke)
                else:
                    checkpointer.wrote(size)
                    if failing:
                        failing = False
                        ring.set_failing(0.0)
                        _poke(poke)
                    continue  # more may be waiting: no sleep
            if orphaned_at is None and os.getppid() != parent:
                orphaned_at = now
            gone = orphaned_at is not None
            if (ring.closing or gone) and (ring.head == ring.tail):
                return 0
            if gone and failing and now - (orphaned_at or now) > ORPHAN_PATIENCE:
                print(
                    f"mlop: the run's store {store.path} refused writes after its process ended; "
                    f"{ring.items_put - ring.items_done} logged records are lost",
                    file=sys.stderr,
                )
                return 1
            if ready_at and now - ready_at >= interval / 2:
                # Still not opened by a packing turn: the loop is not logging; the parent's writer thread
                # opens the ring and moves in what waits.
                if not ring.is_open:
                    _poke(poke)
                ready_at = 0.0
            head = ring.head
            if head != last_head:
                last_head, changed_at = head, now
            elif not gone and now - changed_at >= interval / 2 and poked_at < changed_at:
                # Quiet since frames last came: the loop logs no more (or slowly); the parent's writer
                # thread packs what it logged after its last packing turn. Once per quiet spell.
                poked_at = now
                _poke(poke)
            quiet = now - changed_at
            wait_readable([hurry], POLL_BUSY if quiet < 0.1 else POLL_QUIET if quiet < 1.0 else POLL_IDLE)
    finally:
        checkpointer.close()


def main(argv: list[str] | None = None) -> int:
    """The writer process: ``main()`` with the arguments FD SIZE POKE HURRY PARENT_PID INTERVAL STORE."""
    args = sys.argv[1:] if argv is None else argv
    fd, size, poke, hurry, parent = (int(value) for value in args[:5])
    interval = float(args[5])
    path = args[6]
    # Ctrl-C and a terminal's SIGTERM reach the whole process group; this process ends when its parent
    # says so or is gone, after storing what it was handed. A file size limit gives an error, not death.
    for name in ("SIGINT", "SIGTERM", "SIGXFSZ", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    # A background process: where cores are short, the training loop's processes go first (this one
    # needs a few percent of a core, and a ring of 0.3 s covers the rest).
    try:
        os.nice(NICE)
        # Batch scheduling: its wake-ups (every few ms) never preempt a running task, such as the loop.
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (OSError, AttributeError):
        pass
    from mlop._store import Store

    if os.getppid() != parent:
        return 0
    ring = Ring(fd, size)
    store = Store(path)
    status = 1
    try:
        status = serve(ring, store, poke, hurry, parent, interval)
    finally:
        store.close()
        ring.state = DONE
        # Nothing is left to tear down that the parent waits for: end now (the interpreter's own exit
        # would take it tens of milliseconds, which finish() would wait out).
        sys.stderr.flush()
        os._exit(status)


def wait_readable(fds: list[int], timeout: float | None) -> None:
    """Wait until the first of ``fds`` (a pipe) has bytes or another is readable, or ``timeout`` passes.

    Reads what the pipe holds.
    """
    ready, _, _ = select.select(fds, [], [], timeout)
    if fds[0] in ready:
        try:
            os.read(fds[0], 4096)
        except (BlockingIOError, OSError):
            pass


if __name__ == "__main__":
    sys.exit(main())
