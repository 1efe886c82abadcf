"""Console capture: what a user prints arrives in ``logs()`` line by line; their terminal is unchanged."""

from __future__ import annotations

import io
import logging
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import mlop
from mlop import _ring


def _lines(run: Any) -> list[tuple[int, str, str]]:
    reader = mlop.open_run(run.dir)
    try:
        rows = list(reader.logs())
    finally:
        reader.close()
    for row in rows:
        assert set(row) == {"time", "line_number", "level", "message"}
        assert isinstance(row["time"], int) and row["time"] > 1_600_000_000_000
    return [(row["line_number"], row["level"], row["message"]) for row in rows]


def _init(tmp_path: Path, **settings: Any) -> Any:
    return mlop.init(dir=tmp_path, mode="offline", x_sys_sampling_interval=0, **settings)


def test_print_is_one_line_with_a_number_and_stdout_info_stderr_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before_out, before_err = sys.stdout, sys.stderr
    run = _init(tmp_path)
    print("a", 1)
    print("second line")
    print("two\nlines")
    sys.stderr.write("oops\n")
    print("unfinished", end="")
    run.finish()
    assert _lines(run) == [
        (1, "INFO", "a 1"),
        (2, "INFO", "second line"),
        (3, "INFO", "two"),
        (4, "INFO", "lines"),
        (5, "ERROR", "oops"),
        (6, "INFO", "unfinished"),
    ]
    out, err = capsys.readouterr()
    assert out == "a 1\nsecond line\ntwo\nlines\nunfinished"
    assert err == "oops\n"
    assert sys.stdout is before_out and sys.stderr is before_err


def test_progress_bars_keep_their_last_frame_and_escapes_are_dropped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _init(tmp_path)
    for percent in range(0, 101, 10):
        sys.stdout.write(f"\rtraining {percent:3d}%")
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.write("windows line\r\n")
    print("\x1b[31mred\x1b[0m and \x1b[1mbold\x1b[0m")
    print()
    run.finish()
    assert [message for _n, _level, message in _lines(run)] == [
        "training 100%",
        "windows line",
        "red and bold",
        "",
    ]
    out = capsys.readouterr().out
    assert "\rtraining  50%" in out and "\x1b[31mred" in out  # the terminal got every byte


def test_a_logger_configured_before_init_is_captured_and_handed_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    early = logging.getLogger("test_console.early")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    early.addHandler(handler)
    early.propagate = False
    original = handler.stream
    try:
        run = _init(tmp_path)
        early.warning("loss is %s", "nan")
        run.finish()
        early.warning("after the run")
    finally:
        early.removeHandler(handler)
    assert _lines(run) == [(1, "ERROR", "WARNING test_console.early: loss is nan")]
    assert handler.stream is original
    assert capsys.readouterr().err.splitlines() == [
        "WARNING test_console.early: loss is nan",
        "WARNING test_console.early: after the run",
    ]


def test_someone_else_replacing_stdout_never_breaks_print(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _init(tmp_path)
    print("before")
    hidden = io.StringIO()
    saved = sys.stdout
    sys.stdout = hidden  # a notebook cell or redirect_stdout: output goes elsewhere for a while
    print("into the StringIO")
    sys.stdout = saved
    print("back")

    class Wrapper:  # tqdm-style: wraps whatever stdout is now and never lets go
        def __init__(self, stream: Any) -> None:
            self.stream = stream

        def write(self, text: str) -> int:
            return int(self.stream.write(text.upper()))

        def flush(self) -> None:
            self.stream.flush()

    sys.stdout = Wrapper(sys.stdout)  # type: ignore[assignment]
    try:
        print("wrapped")
        run.finish()
        print("after finish")  # our tee is still inside the wrapper: it must just write through
    finally:
        sys.stdout = saved
    assert [m for _n, _l, m in _lines(run)] == ["before", "back", "WRAPPED"]
    assert hidden.getvalue() == "into the StringIO\n"
    assert capsys.readouterr().out == "before\nback\nWRAPPED\nAFTER FINISH\n"


def test_lines_from_many_threads_are_whole_and_numbered_once(tmp_path: Path) -> None:
    run = _init(tmp_path)

    def talk(name: str) -> None:
        for i in range(200):
            print(f"{name}-{i}")

    threads = [threading.Thread(target=talk, args=(f"t{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run.finish()
    lines = _lines(run)
    assert sorted(m for _n, _l, m in lines) == sorted(f"t{n}-{i}" for n in range(4) for i in range(200))
    assert sorted(n for n, _l, _m in lines) == list(range(1, 801))


def test_disable_console_records_nothing_and_leaves_the_streams_alone(tmp_path: Path) -> None:
    before = sys.stdout
    run = _init(tmp_path, disable_console=True)
    assert sys.stdout is before
    print("not recorded")
    run.finish()
    assert _lines(run) == []


def test_a_resumed_run_continues_the_line_numbers(tmp_path: Path) -> None:
    run = _init(tmp_path, run_id="again")
    print("one")
    print("two")
    run.finish()
    run = _init(tmp_path, run_id="again", resume=True)
    print("three")
    run.finish()
    assert _lines(run) == [(1, "INFO", "one"), (2, "INFO", "two"), (3, "INFO", "three")]


def test_an_enormous_line_is_recorded_in_bounded_pieces(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _init(tmp_path)
    print("x" * 150_000)
    sys.stdout.write("y" * 100_000)  # no newline at all
    run.finish()
    messages = [m for _n, _l, m in _lines(run)]
    assert "".join(messages) == "x" * 150_000 + "y" * 100_000
    assert max(len(m) for m in messages) <= 64 * 1024
    assert capsys.readouterr().out == "x" * 150_000 + "\n" + "y" * 100_000


@pytest.mark.parametrize("process", [False, True], ids=["thread", "writer-process"])
def test_an_error_the_writer_logs_to_the_console_while_flushing_never_deadlocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], process: bool
) -> None:
    import sqlite3

    if process and not _ring.available():
        pytest.skip("the writer process runs on Linux x86-64")
    run = _init(tmp_path, x_writer_process=process)
    # A handler on the console, as a script's logging setup would have: the writer's own error message
    # then goes through the captured stderr, which hands a line back to the writer inside its flush.
    handler = logging.StreamHandler(sys.stderr)
    logging.getLogger("mlop").addHandler(handler)
    real_write = run._store.write_packed
    child = run._writer._child
    if process:
        # The writer process's writes fail: a file size limit on it alone (it ignores SIGXFSZ).
        import resource

        assert child is not None and run._writer._ring_open
        _, hard = resource.prlimit(child.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(child.pid, resource.RLIMIT_FSIZE, (4096, hard))
    else:

        def broken(*args: Any, **kwargs: Any) -> None:
            raise sqlite3.OperationalError("disk I/O error")

        monkeypatch.setattr(run._store, "write_packed", broken)
    try:
        run.log({"loss": 1.0})
        flusher = threading.Thread(target=run._writer.flush)
        flusher.start()
        flusher.join(30)
        assert not flusher.is_alive(), "the writer deadlocked on its own console line"
        if process:
            assert child is not None
            resource.prlimit(child.pid, resource.RLIMIT_FSIZE, (hard, hard))
        else:
            monkeypatch.setattr(run._store, "write_packed", real_write)
        run.finish()
    finally:
        logging.getLogger("mlop").removeHandler(handler)
    messages = [m for _n, level, m in _lines(run) if level == "ERROR"]
    assert any("could not write to its local store" in m for m in messages)
    assert "could not write to its local store" in capsys.readouterr().err


def test_ranks_sharing_one_run_tag_their_lines_and_never_share_a_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    run = _init(tmp_path, shared=True, run_id="shared")
    print("one from rank 1")
    print("two from rank 1")
    run.finish()
    monkeypatch.setenv("RANK", "0")
    run = _init(tmp_path, shared=True, run_id="shared", resume=True)
    print("one from rank 0")
    run.finish()
    assert _lines(run) == [
        (2, "INFO", "[rank 1] one from rank 1"),
        (4, "INFO", "[rank 1] two from rank 1"),
        (5, "INFO", "[rank 0] one from rank 0"),
    ]
