"""Issue 20's last miss, probed: is the interpreter-lock hand-off what makes the slowest 1,000-key call?

Run: nice -n -15 .venv/bin/python bench/handoff_probe.py [--rounds 3] [--steps 2000] [--width 1000]
Prints one JSON document; bench/README.md ("The hand-off, probed") holds the latest figures.

Three loops log the same dicts, 1,000 keys a step with no work between calls, for ``--steps`` calls, and
each call is timed:

- ``mlop``: ``run.log`` of this tree (packing turns on the loop's thread, SQLite writes on the writer's
  thread, which takes the interpreter lock back a few times a write).
- ``thread``: the probe's own minimal copy of that data path: each call pickles its record, and a thread
  in this process wakes every 50 ms and writes the pickles to SQLite, one statement and commit a write.
- ``pipe``: the same packing, but the call hands each pickle to the kernel with one ``os.write`` into a
  pipe (1 MiB) whose reader is a child process that writes them to SQLite.
- ``ring``: the same packing, but the call copies each pickle into a ring of shared memory (32 MiB in
  /dev/shm) that a child process polls every 2 ms and drains into SQLite; a pickle that finds the ring
  full is kept and copied by a later call. No system call on the loop's side, and no thread of this
  process needs the lock back while the loop runs.

``pipe`` and ``ring`` are writers outside the process as issue 20's next step would build them, without
the parts a real one needs (acks for ``flush()``, a full disk, what is packed after the loop stops
logging). If ``ring`` has no slow calls where ``mlop`` has them, the hand-off is the cause and such a
writer removes it.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import mmap
import os
import pickle
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import mlop

F_SETPIPE_SZ = 1031  # Linux fcntl: set a pipe's capacity

CHILD = r"""
import os, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=NORMAL")
db.execute("CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, data BLOB)")
fd, rows = 0, 0
buf = bytearray()
while True:
    chunk = os.read(fd, 1 << 20)
    if not chunk:
        break
    buf += chunk
    frames = []
    while len(buf) >= 4:
        size = int.from_bytes(buf[:4], "little")
        if len(buf) < 4 + size:
            break
        frames.append((bytes(buf[4 : 4 + size]),))
        del buf[: 4 + size]
    if frames:
        db.executemany("INSERT INTO rows (data) VALUES (?)", frames)
        rows += len(frames)
print(rows)
"""


RING_CHILD = r"""
import mmap, os, sqlite3, struct, sys, time
path, ring_path, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
db = sqlite3.connect(path, isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=NORMAL")
db.execute("CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, data BLOB)")
fd = os.open(ring_path, os.O_RDWR)
ring = mmap.mmap(fd, 64 + size)
header = struct.Struct("<QQQ")  # head (bytes ever written), tail (bytes ever read), closed
rows = 0
while True:
    head, tail, closed = header.unpack_from(ring, 0)
    if head == tail:
        if closed:
            break
        time.sleep(0.002)
        continue
    frames = []
    while tail < head:
        at = 64 + tail % size
        length = int.from_bytes(ring[at : at + 4], "little")
        if length == 0xFFFFFFFF:  # the rest of the ring is unused: the next frame starts at its beginning
            tail += size - tail % size
            continue
        frames.append((ring[at + 4 : at + 4 + length],))
        tail += 4 + length
    db.executemany("INSERT INTO rows (data) VALUES (?)", frames)
    rows += len(frames)
    struct.pack_into("<Q", ring, 8, tail)
print(rows)
"""


def _timed(call: Callable[[dict[str, float]], Any], steps: int, width: int) -> list[int]:
    keys = [f"train/metric_{k}" for k in range(width)]
    clock = time.perf_counter_ns
    calls = [0] * steps
    switches = resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw
    for i in range(steps):
        data = {k: i * 0.001 + j for j, k in enumerate(keys)}
        start = clock()
        call(data)
        calls[i] = clock() - start
    # The loop thread's voluntary context switches: it sleeps only to wait for the interpreter lock.
    calls.append(resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw - switches)
    return calls


def _tail(timed: list[int]) -> dict[str, float]:
    """The call times' distribution; the list's last item is the loop's count of voluntary switches."""
    calls, switches = timed[:-1], timed[-1]
    ordered = sorted(calls)
    n = len(ordered)
    return {
        "median_us": ordered[n // 2] / 1000,
        "p99_us": ordered[int(n * 0.99)] / 1000,
        "p99_9_us": ordered[min(n - 1, int(n * 0.999))] / 1000,
        "max_us": ordered[-1] / 1000,
        "calls_over_1ms": sum(1 for c in calls if c > 1_000_000),
        "loop_sleeps": switches,
    }


class _Packer:
    """Each record pickled in the call that logs it (about what mlop's packing turns cost a record, spread
    evenly), and the bytes handed to ``sink``: every call costs the same, so a slow call is the sink's."""

    def __init__(self, sink: Callable[[bytes], None]) -> None:
        self.sink = sink
        self.step = 0

    def log(self, data: dict[str, float]) -> None:
        self.sink(pickle.dumps((self.step, time.time(), data), protocol=5))
        self.step += 1


def _thread_loop(path: str, steps: int, width: int) -> dict[str, Any]:
    ready: list[bytes] = []
    lock = threading.Lock()
    wake = threading.Event()
    stop = False

    def writer() -> None:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, data BLOB)")
        while True:
            wake.wait(0.05)
            wake.clear()
            with lock:
                rows, ready[:] = list(ready), []
            if rows:
                db.executemany("INSERT INTO rows (data) VALUES (?)", [(r,) for r in rows])
            if stop and not rows:
                db.close()
                return

    def sink(data: bytes) -> None:
        with lock:
            ready.append(data)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    packer = _Packer(sink)
    calls = _timed(packer.log, steps, width)
    stop = True
    wake.set()
    thread.join()
    return _tail(calls)


def _pipe_loop(path: str, steps: int, width: int) -> dict[str, Any]:
    read_end, write_end = os.pipe()
    try:
        fcntl.fcntl(write_end, F_SETPIPE_SZ, 1 << 20)
    except OSError:
        pass
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, path], stdin=read_end, stdout=subprocess.PIPE, text=True
    )
    os.close(read_end)

    def sink(data: bytes) -> None:
        view = memoryview(len(data).to_bytes(4, "little") + data)
        while view:  # blocks while the pipe is full; short only when a signal cuts a write
            view = view[os.write(write_end, view) :]

    packer = _Packer(sink)
    calls = _timed(packer.log, steps, width)
    os.close(write_end)
    out, _ = child.communicate(timeout=60)
    return {**_tail(calls), "rows": int(out)}


def _ring_loop(path: str, steps: int, width: int, size: int = 32 << 20) -> dict[str, Any]:
    """Pickles copied into a ring of shared memory that a child process drains into SQLite."""
    with tempfile.NamedTemporaryFile(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as backing:
        backing.truncate(64 + size)
        ring = mmap.mmap(backing.fileno(), 64 + size)
        child = subprocess.Popen(
            [sys.executable, "-c", RING_CHILD, path, backing.name, str(size)],
            stdout=subprocess.PIPE,
            text=True,
        )
        state = {"head": 0, "held": 0}
        held: list[bytes] = []

        def put(data: bytes) -> bool:
            head = state["head"]
            tail = int.from_bytes(ring[8:16], "little")
            need = 4 + len(data)
            at = head % size
            wrap = size - at if at + need > size else 0
            if head + wrap + need - tail > size:
                return False  # full: the caller keeps the bytes and tries again later
            if wrap:
                if size - at >= 4:
                    ring[64 + at : 64 + at + 4] = b"\xff\xff\xff\xff"
                head += wrap
                at = 0
            ring[64 + at : 64 + at + 4] = len(data).to_bytes(4, "little")
            ring[64 + at + 4 : 64 + at + need] = data
            head += need
            state["head"] = head
            ring[0:8] = head.to_bytes(8, "little")  # published last: the child reads up to here
            return True

        def sink(data: bytes) -> None:
            while held and put(held[0]):
                held.pop(0)
            if held or not put(data):
                held.append(data)
                state["held"] += 1

        packer = _Packer(sink)
        calls = _timed(packer.log, steps, width)
        while held:
            if put(held[0]):
                held.pop(0)
            else:
                time.sleep(0.001)
        ring[16:24] = (1).to_bytes(8, "little")
        out, _ = child.communicate(timeout=60)
        ring.close()
    return {**_tail(calls), "rows": int(out), "held_when_full": state["held"]}


def _mlop_loop(root: str, steps: int, width: int) -> dict[str, Any]:
    run = mlop.init(project="probe", dir=root, disable_system_metrics=True, disable_console=True)
    calls = _timed(run.log, steps, width)
    run.finish()
    return _tail(calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--width", type=int, default=1000)
    args = parser.parse_args()
    results: dict[str, list[dict[str, Any]]] = {"mlop": [], "thread": [], "pipe": [], "ring": []}
    with tempfile.TemporaryDirectory() as root:
        _timed(lambda d: None, args.steps, args.width)  # warm the dict-building code
        for r in range(args.rounds):
            results["mlop"].append(_mlop_loop(os.path.join(root, f"m{r}"), args.steps, args.width))
            results["thread"].append(_thread_loop(os.path.join(root, f"t{r}.db"), args.steps, args.width))
            results["pipe"].append(_pipe_loop(os.path.join(root, f"p{r}.db"), args.steps, args.width))
            results["ring"].append(_ring_loop(os.path.join(root, f"r{r}.db"), args.steps, args.width))
    print(json.dumps({"steps": args.steps, "width": args.width, **results}, indent=2))


if __name__ == "__main__":
    main()
