"""Console capture of real scripts run as their own processes: prints, loggers, children, tracebacks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import mlop


def _run_script(tmp_path: Path, body: str, *args: str) -> tuple[subprocess.CompletedProcess[str], Any]:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(body).replace("RUN_DIR", repr(str(tmp_path))))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}
    done = subprocess.run(
        [sys.executable, str(script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    [reader] = mlop.list_runs(tmp_path)
    return done, reader


def _logs(reader: Any) -> list[tuple[str, str]]:
    rows = list(reader.logs())
    assert [row["line_number"] for row in rows] == list(range(1, len(rows) + 1))
    return [(row["level"], row["message"]) for row in rows]


SCRIPT = """
    import logging, sys
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:%(name)s:%(message)s")
    log = logging.getLogger("train")  # configured before init(): its handler holds the old sys.stderr
    import mlop
    run = mlop.init(dir=RUN_DIR, mode="offline", x_sys_sampling_interval=0, CONSOLE_FD)
    print("epoch", 1, "loss", 0.5)
    log.info("checkpoint saved")
    print("working", end="")
    print("... done")
    def train():
        raise ValueError("boom")
    train()
"""


def test_a_script_that_crashes_records_its_prints_its_logger_and_its_traceback(tmp_path: Path) -> None:
    done, reader = _run_script(tmp_path, SCRIPT.replace("CONSOLE_FD", "console_fd=False"))
    assert done.returncode == 1
    assert reader.status == "FAILED"
    lines = _logs(reader)
    assert lines[:3] == [
        ("INFO", "epoch 1 loss 0.5"),
        ("ERROR", "INFO:train:checkpoint saved"),
        ("INFO", "working... done"),
    ]
    traceback = lines[3:]
    assert traceback[0] == ("ERROR", "Traceback (most recent call last):")
    assert traceback[-1] == ("ERROR", "ValueError: boom")
    assert all(level == "ERROR" for level, _message in traceback)
    assert any('raise ValueError("boom")' in message for _level, message in traceback)
    # The terminal is unchanged: everything printed once, the traceback once.
    assert done.stdout == "epoch 1 loss 0.5\nworking... done\n"
    assert done.stderr.count("Traceback (most recent call last):") == 1
    assert done.stderr.startswith("INFO:train:checkpoint saved\n")


def test_fd_capture_records_children_c_level_writes_and_the_traceback(tmp_path: Path) -> None:
    body = SCRIPT.replace("CONSOLE_FD", "console_fd=True").replace(
        "    def train():",
        textwrap.indent(
            textwrap.dedent(
                """
                import os, subprocess
                os.write(1, b"written to fd 1 directly\\n")
                child = "import sys; print('child out'); print('child err', file=sys.stderr)"
                subprocess.run([sys.executable, "-c", child])
                os.system("echo from a shell")
                import ctypes
                ctypes.CDLL(None).printf(b"printf from C\\n")  # C's own stdio, as an extension writes
                """
            ),
            "    ",
        )
        + "    def train():",
    )
    done, reader = _run_script(tmp_path, body)
    assert done.returncode == 1
    lines = _logs(reader)
    # Two descriptors, two pipes: the order within each is kept, the order between them is the kernel's
    # (as it is for any program whose output is piped).
    info = [m for level, m in lines if level == "INFO"]
    errors = [m for level, m in lines if level == "ERROR"]
    assert info == [
        "epoch 1 loss 0.5",
        "working... done",
        "written to fd 1 directly",
        "child out",
        "from a shell",
        "printf from C",
    ]
    assert errors[:3] == ["INFO:train:checkpoint saved", "child err", "Traceback (most recent call last):"]
    assert errors[-1] == "ValueError: boom"
    assert errors.count("ValueError: boom") == 1
    assert lines[-1] == ("ERROR", "ValueError: boom")
    # The process's real stdout and stderr still got every byte, the traceback once.
    assert done.stdout == (
        "epoch 1 loss 0.5\nworking... done\nwritten to fd 1 directly\nchild out\nfrom a shell\n"
        "printf from C\n"
    )
    assert done.stderr.startswith("INFO:train:checkpoint saved\nchild err\n")
    assert done.stderr.count("Traceback (most recent call last):") == 1


def test_fd_capture_does_not_wait_for_a_child_that_outlives_the_run(tmp_path: Path) -> None:
    body = """
        import subprocess, sys, mlop
        run = mlop.init(dir=RUN_DIR, mode="offline", x_sys_sampling_interval=0, console_fd=True)
        child = subprocess.Popen(["sleep", "300"])  # holds the captured descriptors open
        print(child.pid, flush=True)
        run.finish()
        print("after finish")
    """
    done, reader = _run_script(tmp_path, body)
    pid = int(done.stdout.split()[0])
    os.kill(pid, signal.SIGKILL)
    assert done.returncode == 0, done.stderr
    assert reader.status == "COMPLETED"
    assert _logs(reader) == [("INFO", str(pid))]
    assert done.stdout.endswith("after finish\n")


def test_fd_capture_under_a_terminal_keeps_it_a_terminal(tmp_path: Path) -> None:
    import fcntl
    import pty
    import struct
    import termios

    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, sys, mlop
            run = mlop.init(dir={str(tmp_path)!r}, mode="offline", x_sys_sampling_interval=0, console_fd=True)
            print("tty", sys.stdout.isatty(), os.isatty(1), "columns", os.get_terminal_size(1).columns)
            sys.stdout.write("\\x1b[32mgreen\\x1b[0m\\n")
            run.finish()
            """
        )
    )
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 123, 0, 0))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}
    child = subprocess.Popen([sys.executable, str(script)], stdout=slave, stderr=slave, env=env, cwd=tmp_path)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child and everything it started closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert child.wait(timeout=60) == 0
    [reader] = mlop.list_runs(tmp_path)
    assert _logs(reader) == [("INFO", "tty True True columns 123"), ("INFO", "green")]
    assert seen.replace(b"\r\n", b"\n") == b"tty True True columns 123\n\x1b[32mgreen\x1b[0m\n"


def test_a_forked_child_prints_freely_and_records_nothing(tmp_path: Path) -> None:
    body = """
        import os, sys, mlop
        run = mlop.init(dir=RUN_DIR, mode="offline", x_sys_sampling_interval=0)
        print("parent before")
        pid = os.fork()
        if pid == 0:  # a DataLoader worker, say: its prints reach the terminal, never the run
            for i in range(1000):
                print("from the child", i)
            sys.stdout.flush()
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print("child exit status", status)
        run.finish()
    """
    done, reader = _run_script(tmp_path, body)
    assert done.returncode == 0, done.stderr
    assert _logs(reader) == [("INFO", "parent before"), ("INFO", "child exit status 0")]
    assert done.stdout.count("from the child") == 1000
