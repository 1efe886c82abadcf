"""How runs end when their process does: real child processes, real signals."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import mlop


def _script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "train.py"
    path.write_text("import mlop, os, sys, time\n" + textwrap.dedent(body))
    return path


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}


def _run(tmp_path: Path, body: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(_script(tmp_path, body))],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _spawn(tmp_path: Path, body: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(_script(tmp_path, body))],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _only_run(tmp_path: Path) -> mlop.RunReader:
    (run,) = mlop.list_runs(tmp_path)
    return run


def test_sigkill_loses_nothing_logged_200ms_before(tmp_path: Path) -> None:
    body = """
        run = mlop.init(project="kill", dir=sys.argv[1])
        i = 0
        while True:
            run.log({"i": i, "x": i * 0.5})
            if i % 2000 == 0:
                print(i, time.time(), flush=True)
            i += 1
    """
    script = _script(tmp_path, body)
    rng = random.Random(7)
    for attempt in range(4):
        root = tmp_path / f"attempt{attempt}"
        with subprocess.Popen(
            [sys.executable, str(script), str(root)],
            cwd=tmp_path,
            env=_env(),
            stdout=subprocess.PIPE,
            text=True,
        ) as child:
            assert child.stdout is not None
            first = child.stdout.readline()  # the loop is running
            assert first.startswith("0 ")
            time.sleep(rng.uniform(0.3, 1.5))
            killed_at = time.time()
            child.kill()
            rest = child.stdout.read()
            child.wait(timeout=30)
        # The kill may cut the last progress line short: keep only whole "step time" lines.
        progress = [fields for line in (first + rest).splitlines() if len(fields := line.split()) == 2]
        due = [int(step) for step, when in progress if float(when) <= killed_at - 0.2]
        assert due, "the child logged nothing 200 ms before the kill"
        (reader,) = mlop.list_runs(root)
        steps = sorted({row["step"] for row in reader.metrics("i")})
        assert steps[: max(due) + 1] == list(range(max(due) + 1))
        values = {row["step"]: row["value"] for row in reader.metrics("x")}
        assert all(values[s] == s * 0.5 for s in range(max(due) + 1))
        assert reader.status == "RUNNING"  # nothing could mark it: the process was killed


def test_an_unhandled_exception_marks_the_run_failed_with_the_trace(tmp_path: Path) -> None:
    done = _run(
        tmp_path,
        """
        def previous(tp, value, tb):
            print("previous hook saw", tp.__name__, file=sys.stderr)
        sys.excepthook = previous
        run = mlop.init(project="p")
        run.log({"a": 1})
        def inner():
            raise ValueError("bad batch")
        inner()
        """,
    )
    assert done.returncode == 1
    assert "previous hook saw ValueError" in done.stderr
    reader = _only_run(tmp_path)
    assert reader.status == "FAILED"
    meta = reader.status_metadata
    assert meta is not None
    assert meta["type"] == "ValueError" and meta["message"] == "bad batch"
    assert meta["frames"][-1]["name"] == "inner"
    assert "ValueError: bad batch" in meta["trace"]
    assert [r["value"] for r in reader.metrics("a")] == [1]


def test_sigterm_marks_the_run_terminated_and_the_signal_still_ends_the_process(tmp_path: Path) -> None:
    body = """
            run = mlop.init(project="p")
            i = 0
            while True:
                run.log({"i": i})
                if i == 100:
                    print("ready", flush=True)
                i += 1
        """
    with _spawn(tmp_path, body) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == -signal.SIGTERM
    reader = _only_run(tmp_path)
    assert reader.status == "TERMINATED"
    steps = [r["step"] for r in reader.metrics("i")]
    assert steps == list(range(len(steps))) and len(steps) > 100


def test_sigterm_chains_to_the_handler_the_script_had(tmp_path: Path) -> None:
    body = """
            import signal
            def mine(signum, frame):
                print("my handler ran", flush=True)
                sys.exit(3)
            signal.signal(signal.SIGTERM, mine)
            run = mlop.init(project="p")
            print("ready", flush=True)
            while True:
                run.log({"a": 1})
                time.sleep(0.001)
        """
    with _spawn(tmp_path, body) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == 3
        assert child.stdout.read().strip() == "my handler ran"
    assert _only_run(tmp_path).status == "TERMINATED"


def test_ctrl_c_marks_the_run_terminated(tmp_path: Path) -> None:
    body = """
            run = mlop.init(project="p")
            print("ready", flush=True)
            while True:
                run.log({"a": 1})
                time.sleep(0.001)
        """
    with _spawn(tmp_path, body) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        child.send_signal(signal.SIGINT)
        assert child.wait(timeout=30) != 0
    assert _only_run(tmp_path).status == "TERMINATED"


def test_a_run_never_finished_completes_at_exit(tmp_path: Path) -> None:
    done = _run(
        tmp_path,
        """
        run = mlop.init(project="p")
        for i in range(1000):
            run.log({"i": i})
    """,
    )
    assert done.returncode == 0, done.stderr
    reader = _only_run(tmp_path)
    assert reader.status == "COMPLETED"
    assert [r["value"] for r in reader.metrics("i")] == list(range(1000))


def test_a_forked_child_logs_nothing_and_never_deadlocks(tmp_path: Path) -> None:
    done = _run(
        tmp_path,
        """
        import logging, multiprocessing
        logging.basicConfig(level=logging.WARNING)
        run = mlop.init(project="p")
        run.log({"parent": 1})

        def worker(q):
            run.log({"child": 1})
            run.log({"child": 2})
            mlop.log({"child": 3})
            q.put("done")

        ctx = multiprocessing.get_context("fork")
        q = ctx.Queue()
        procs = [ctx.Process(target=worker, args=(q,)) for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(20)
        print([q.get(timeout=5) for _ in procs], [p.exitcode for p in procs])
        run.log({"parent": 2})
        run.finish()
    """,
    )
    assert done.returncode == 0, done.stderr
    assert "['done', 'done', 'done'] [0, 0, 0]" in done.stdout
    reader = _only_run(tmp_path)
    assert [r["value"] for r in reader.metrics("parent")] == [1, 2]
    assert list(reader.metrics("child")) == []
    assert reader.status == "COMPLETED"


@pytest.mark.parametrize("interval", [0.05])
def test_background_thread_flushes_when_the_loop_is_quiet(tmp_path: Path, interval: float) -> None:
    run = mlop.init(dir=tmp_path, x_flush_interval=interval)
    run.log({"a": 1})
    deadline = time.time() + 10
    reader = mlop.open_run(run.dir)
    while time.time() < deadline and not list(reader.metrics("a")):
        time.sleep(0.02)
    assert [r["value"] for r in reader.metrics("a")] == [1]
    run.finish()
