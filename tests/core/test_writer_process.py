"""The writer process: a run hands its packed rows to a child process through a shared ring.

Real processes throughout: the run's own writer process, real SIGKILLs of it and of the training process,
real SQLite files read back with ``mlop.open_run``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

import mlop
from mlop import _ring
from mlop._store import Store

pytestmark = pytest.mark.skipif(not _ring.available(), reason="the writer process runs on Linux x86-64")


def _init(root: Path, **settings: object) -> mlop.Run:
    return mlop.init(dir=root, mode="offline", disable_system_metrics=True, disable_console=True, **settings)


def _writer_processes() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children():
        try:
            if "mlop._ring" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def _until(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _open_ring(run: mlop.Run) -> None:
    """Log until the writer process has taken the writes over (a packing turn opens its ring)."""
    step = 0

    def opened() -> bool:
        nonlocal step
        run.log({"warmup": float(step)})
        step += 1
        return run._writer._ring_open

    _until(opened)


def test_a_tight_loop_is_stored_by_the_writer_process_and_it_ends_with_the_run(tmp_path: Path) -> None:
    run = _init(tmp_path)
    _open_ring(run)
    (process,) = _writer_processes()
    first = run._step
    for step in range(3000):
        run.log({f"k{j}": step + j / 4 for j in range(100)})
    run.finish()
    assert not _writer_processes()  # it ended, and was reaped, before finish() returned
    assert not process.is_running()
    reader = mlop.open_run(run.dir)
    assert [(r["step"], r["value"]) for r in reader.metrics("k99")] == [
        (first + s, s + 99 / 4) for s in range(3000)
    ]
    assert reader.status == "COMPLETED"
    reader.close()


def test_a_loop_that_logs_is_never_made_to_hand_over_the_interpreter_lock(tmp_path: Path) -> None:
    # What the writer process is for (issue 20): no thread of the training process needs the lock while
    # the loop logs, so the loop's thread never sleeps waiting for it. Counted as the thread's voluntary
    # context switches (it sleeps for nothing else here): with the writer thread writing instead, this
    # loop's thread slept 25-37 times in its half second. A few are allowed for a machine that pauses the
    # loop past the ring's quiet time (25 ms), after which the process pokes the writer's thread (0-5
    # sleeps with three CPU hogs on the two cores here).
    import resource

    def sleeps() -> int:
        return resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw

    run = _init(tmp_path)
    _open_ring(run)
    keys = [f"k{j}" for j in range(100)]
    before = sleeps()
    for step in range(30_000):
        run.log(dict.fromkeys(keys, step + 0.25))
    slept = sleeps() - before
    run.finish()
    assert slept <= 10, f"the loop's thread slept {slept} times"
    reader = mlop.open_run(run.dir)
    assert len(list(reader.metrics("k99"))) == 30_000
    reader.close()


def test_values_logged_before_the_loop_goes_quiet_are_stored_without_a_flush(tmp_path: Path) -> None:
    # The packing turns leave what was logged within PACK_EVERY of the last one; the writer process pokes
    # the run's writer thread once the ring is quiet, and the thread packs it.
    run = _init(tmp_path, x_flush_interval=0.05)
    _open_ring(run)
    for step in range(500):
        run.log({"x": float(step)})
    reader = Store(run.dir)
    try:

        def stored() -> bool:
            items = [item for _, _, items in reader.records(["metrics"]) for item in items]
            return any(values.get("x") == 499.0 for _, _, values in items)

        _until(stored, timeout=5.0)
    finally:
        reader.close()
    run.finish()


def test_items_added_by_another_thread_while_the_loop_is_idle_are_stored(tmp_path: Path) -> None:
    # No log() call packs them: the add wakes the writer's thread, which sleeps without a timer.
    run = _init(tmp_path)
    _open_ring(run)
    time.sleep(0.2)  # the loop is idle
    thread = threading.Thread(
        target=run._writer.add, args=("logs", (time.time(), 1, "INFO", "from a thread"))
    )
    thread.start()
    thread.join()
    reader = Store(run.dir)
    try:
        _until(lambda: any(items for _, _, items in reader.records(["logs"])), timeout=5.0)
        (_, _, items), *_ = reader.records(["logs"])
        assert items[0][3] == "from a thread"
    finally:
        reader.close()
    run.finish()


def test_a_writer_process_that_dies_hands_the_writes_back_to_the_thread(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="mlop")
    run = _init(tmp_path)
    _open_ring(run)
    (process,) = _writer_processes()
    first = run._step
    for step in range(4000):
        run.log({"x": float(step)})
        if step == 1000:
            process.send_signal(signal.SIGKILL)  # what is in its ring is taken back, not lost
    run.finish()
    assert any("writer process ended unexpectedly" in r.getMessage() for r in caplog.records)
    reader = mlop.open_run(run.dir)
    assert [(r["step"], r["value"]) for r in reader.metrics("x")] == [
        (first + s, float(s)) for s in range(4000)
    ]
    assert reader.status == "COMPLETED"
    reader.close()


@pytest.mark.parametrize("how", ["setting", "no-interpreter"])
def test_without_a_writer_process_the_thread_writes_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    if how == "setting":
        run = _init(tmp_path, x_writer_process=False)
    else:  # the process cannot start (no interpreter to run it): the thread writes, nothing is lost
        monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python-here"))
        run = _init(tmp_path)
    for step in range(2000):
        run.log({"x": float(step)})
    time.sleep(0.1)
    assert not _writer_processes()
    assert not run._writer._ring_open
    run.finish()
    reader = mlop.open_run(run.dir)
    assert [r["value"] for r in reader.metrics("x")] == [float(s) for s in range(2000)]
    reader.close()


def test_a_row_larger_than_half_the_ring_is_written_in_its_place(tmp_path: Path) -> None:
    # A config of 10 MB (its row and its meta value) cannot be a frame of the 16 MiB ring: the run's own
    # connection writes it once the process has stored every frame before it.
    run = _init(tmp_path)
    _open_ring(run)
    for step in range(100):
        run.log({"x": float(step)})
    run.update_config({"blob": "b" * 10_000_000})
    for step in range(100, 200):
        run.log({"x": float(step)})
    run.finish()
    reader = mlop.open_run(run.dir)
    assert reader.config["blob"] == "b" * 10_000_000
    assert [r["value"] for r in reader.metrics("x")] == [float(s) for s in range(200)]
    reader.close()
    store = Store(run.dir)
    try:
        order = []  # (seq, what) for the config row and every x value
        for seq, kind, items in store.records(["metrics", "config"]):
            if kind == "config":
                order.extend((seq, "config") for item in items if "blob" in item[1])
            else:
                order.extend((seq, int(values["x"])) for step, _, values in items if "x" in values)
    finally:
        store.close()
    order.sort(key=lambda pair: pair[0])
    # Every x logged before the config comes before it (x logged after it may share its packing turn,
    # which packs metrics before other kinds), and every x is in logging order.
    at = [what for _, what in order].index("config")
    assert [what for _, what in order[:at]][:100] == list(range(100))
    assert [what for _, what in order if what != "config"] == list(range(200))


def test_the_writer_process_outlives_a_sigkill_of_the_run_stores_the_ring_and_ends(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            """
            import mlop, sys, time
            run = mlop.init(project="kill", dir=sys.argv[1], disable_system_metrics=True)
            i = 0
            while not run._writer._ring_open:
                run.log({"i": i}); i += 1; time.sleep(0.001)
            print(run._writer._child.pid, i, flush=True)
            while True:
                run.log({"i": i, **{f"k{j}": float(i) for j in range(200)}})
                if i % 500 == 0:
                    print(i, time.time(), flush=True)
                i += 1
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}
    root = tmp_path / "runs"
    with subprocess.Popen(
        [sys.executable, str(script), str(root)], env=env, stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        writer_pid = int(child.stdout.readline().split()[0])
        child.stdout.readline()
        time.sleep(0.5)
        killed_at = time.time()
        child.kill()
        rest = child.stdout.read()
        child.wait(timeout=30)
    writer = psutil.Process(writer_pid) if psutil.pid_exists(writer_pid) else None
    if writer is not None:
        writer.wait(timeout=20)  # it stores what the ring holds, then ends on its own
    progress = [fields for line in rest.splitlines() if len(fields := line.split()) == 2]
    due = [int(step) for step, when in progress if float(when) <= killed_at - 0.2]
    assert due
    (reader,) = mlop.list_runs(root)
    steps = sorted({row["step"] for row in reader.metrics("i")})
    assert steps == list(range(len(steps)))  # no hole: frames are stored whole and in order
    assert len(steps) > max(due)
    assert reader.status == "RUNNING"
