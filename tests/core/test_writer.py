"""The writer when the disk is full: values are held in memory and stored once there is room again."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import mlop
from mlop import _ring


def _init(root: Path, process: bool = True) -> mlop.Run:
    if process and not _ring.available():
        pytest.skip("the writer process runs on Linux x86-64")
    return mlop.init(
        dir=root,
        mode="offline",
        disable_system_metrics=True,
        disable_console=True,
        x_flush_interval=0.05,
        x_writer_process=process,
    )


def _writer_process_open(run: mlop.Run) -> None:
    """Log one value and wait until the run's writer process has taken over the writes."""
    run.log({"warmup": 1.0})
    deadline = time.monotonic() + 20
    while not run._writer._ring_open:
        assert time.monotonic() < deadline, "the writer process never started"
        run.log({"warmup": 1.0})
        time.sleep(0.01)
    run._writer.flush()


def _wait_for(caplog: pytest.LogCaptureFixture, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in r.getMessage() for r in caplog.records):
            return
        time.sleep(0.02)
    raise AssertionError(f"no log line saying {text!r}")


@contextlib.contextmanager
def _tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        done = None
    if done is None or done.returncode != 0:
        pytest.skip("a small tmpfs cannot be mounted here (needs root); see the SQLITE_FULL tests below")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=10)


def _fill(disk: Path) -> Path:
    """Fill the file system until it refuses a write; return the filler file."""
    filler = disk / f"filler-{uuid.uuid4().hex}"
    block = b"\0" * 65536
    with open(filler, "wb", buffering=0) as out:
        try:
            while True:
                out.write(block)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        try:
            while True:
                out.write(b"\0" * 512)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def test_values_logged_while_the_disk_is_full_are_stored_once_it_has_room(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mlop")
    with _tmpfs(tmp_path / "disk", "2m") as disk:
        run = _init(disk)
        run.log({"loss": -1.0})
        run._writer.flush()  # the store has its first row before the disk fills
        filler = _fill(disk)
        for step in range(2000):
            run.log({"loss": step * 0.5, "acc": float(step)})
        _wait_for(caplog, "kept in memory")  # a write was refused (ENOSPC) and the values held
        held = [r.getMessage() for r in caplog.records if "kept in memory" in r.getMessage()]
        assert "MiB now" in held[0]
        filler.unlink()
        run.finish()
        reader = mlop.open_run(run.dir)
        assert [r["value"] for r in reader.metrics("loss")] == [-1.0] + [s * 0.5 for s in range(2000)]
        assert [r["value"] for r in reader.metrics("acc")] == [float(s) for s in range(2000)]
        assert reader.status == "COMPLETED"
        reader.close()
        assert any("every value held in memory is written" in r.getMessage() for r in caplog.records)


def _refuse_writes(run: mlop.Run, refuse: bool) -> None:
    """Make the store refuse the run's writes (or take them again), on whichever side writes them."""
    child = run._writer._child
    if run._writer._ring_open and child is not None:
        # The writer process: a file size limit on it alone (it ignores SIGXFSZ, so writes past the
        # limit fail with EFBIG), below any offset SQLite writes a page at. Linux only, like the process.
        import resource

        _, hard = resource.prlimit(child.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(child.pid, resource.RLIMIT_FSIZE, (4096 if refuse else hard, hard))
    else:
        _limit_pages(run, 0 if refuse else None)


def _limit_pages(run: mlop.Run, pages: int | None) -> None:
    # SQLite's own "database or disk is full" (SQLITE_FULL), the error a full disk gives, produced by
    # capping the store's page count on the writer's connection: runs anywhere, without root.
    db = run._store._db
    with run._store._lock:
        if pages is None:
            db.execute("PRAGMA max_page_count = 1073741823")
        else:
            current = db.execute("PRAGMA page_count").fetchone()[0]
            db.execute(f"PRAGMA max_page_count = {max(pages, current)}")


@pytest.mark.parametrize("process", [False, True], ids=["thread", "writer-process"])
def test_a_store_that_is_full_takes_the_held_values_once_it_has_room(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, process: bool
) -> None:
    caplog.set_level(logging.INFO, logger="mlop")
    run = _init(tmp_path, process)
    if process:
        _writer_process_open(run)
    run._writer.flush()
    _refuse_writes(run, True)  # no page more than it has now
    for step in range(3000):
        run.log({"x": float(step)})
    _wait_for(caplog, "kept in memory")
    refusal = "database or disk is full" if not process else "could not write to its local store"
    assert any(refusal in r.getMessage() for r in caplog.records)
    _refuse_writes(run, False)
    run.finish()
    reader = mlop.open_run(run.dir)
    assert [r["value"] for r in reader.metrics("x")] == [float(s) for s in range(3000)]
    reader.close()


@pytest.mark.parametrize("process", [False, True], ids=["thread", "writer-process"])
def test_past_the_memory_bound_later_values_are_dropped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, process: bool
) -> None:
    caplog.set_level(logging.INFO, logger="mlop")
    run = _init(tmp_path, process)
    if process:  # the bytes the ring holds count against the bound too
        _writer_process_open(run)
    run._writer.max_held = 200_000  # bytes: a few thousand steps of ten values
    run._writer.flush()
    _refuse_writes(run, True)
    first = run._step  # after the values that waited for the writer process
    for step in range(20_001):
        run.log({f"k{j}": float(step) for j in range(10)})
        if step == 1000:
            _wait_for(caplog, "kept in memory")
    run._writer.flush()
    assert any("values logged from now until it can are lost" in r.getMessage() for r in caplog.records)
    _refuse_writes(run, False)
    run.finish()
    lost = [r.getMessage() for r in caplog.records if "were lost while memory was full" in r.getMessage()]
    assert len(lost) == 1
    reader = mlop.open_run(run.dir)
    steps = [r["step"] for r in reader.metrics("k0")]
    reader.close()
    # What was held is stored, in order, from the start; the rest is missing and counted exactly.
    assert steps == list(range(first, first + len(steps)))
    assert 100 < len(steps) < 20_001
    missing = 20_001 - len(steps)
    assert f"{missing} logged steps ({missing * 10} metric values)" in lost[0]
    assert os.path.exists(run.dir)


def test_records_of_every_width_come_back_whole_and_in_order(tmp_path: Path) -> None:
    # Narrow and wide records, one wider than a whole write (its row alone passes 1 MiB), and a string
    # series beside them: packed in turns sized to the time left, joined in the writer's reused buffer,
    # several writes of it in a row. Every value must read back at its step, in logging order.
    run = mlop.init(
        dir=tmp_path, mode="offline", disable_system_metrics=True, disable_console=True, x_flush_interval=0.01
    )
    widths = [1, 10, 300, 5000, 10, 1000]
    expected: dict[int, dict[str, float]] = {}
    for step in range(1200):
        width = 120_000 if step == 700 else widths[step % len(widths)]
        values = {f"m/{j}": step + j / 8 for j in range(width)}
        expected[step] = values
        run.log({**values, "note": f"step {step}"} if step % 7 == 0 else values)
    run.finish()
    reader = mlop.open_run(run.dir)
    got: dict[int, dict[str, float]] = {}
    order = []
    for row in reader.metrics(system=False):
        if row["step"] not in got:
            order.append(row["step"])
        got.setdefault(row["step"], {})[row["key"]] = row["value"]
    notes = [(row["step"], row["value"]) for row in reader.data("note")]
    reader.close()
    assert order == list(range(1200))
    assert got == expected
    assert notes == [(step, f"step {step}") for step in range(0, 1200, 7)]


def test_one_log_call_packs_a_bounded_share_of_a_wide_backlog(tmp_path: Path) -> None:
    # The training thread's packing turn stops after about PACK_BUDGET seconds, checking between records
    # however wide they are; the calls that follow pack the rest and nothing is lost.
    run = _init(tmp_path)
    writer = run._writer
    writer.deadline = float("inf")  # no turn while the backlog builds, on either thread
    for step in range(200):
        run.log({f"k{j}": float(step) for j in range(1000)})
    assert len(writer.metrics) == 200
    writer.tick()
    left = len(writer.metrics)
    assert 0 < left < 200  # at least one record packed, far from all 200,000 values in one call
    writer.deadline = 0.0
    while writer.metrics:
        writer.tick()
    run.finish()
    reader = mlop.open_run(run.dir)
    assert [r["value"] for r in reader.metrics("k999")] == [float(s) for s in range(200)]
    reader.close()
