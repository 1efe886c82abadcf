"""Console capture: the run's stdout and stderr, line by line, into the store as ``logs`` records.

Two ways to capture, chosen by the ``console_fd`` setting:

- **Stream wrapping** (the default). ``sys.stdout`` and ``sys.stderr`` are replaced by tees that write
  to the stream they replaced and record what passes. Nothing about the output changes: same object
  behind it, same buffering, same ``isatty()``, same order, and it works where file descriptors mean
  nothing (notebooks, pytest's capture). Logging handlers created before ``init()`` hold the old stream
  object, so they are pointed at the tee for the run's lifetime. It cannot see output that bypasses
  ``sys.stdout``: C extensions, subprocesses, writes to ``sys.stdout.buffer``.
- **File descriptors** (``console_fd=True``). Descriptors 1 and 2 are pointed at a pipe (a
  pseudo-terminal when they were a terminal, so programs still see one) and a thread copies every byte
  to the original descriptor and records the lines: this catches C extensions and subprocesses that
  inherit the descriptors. The price is a thread in the path of every byte; a subprocess that outlives
  the run keeps being copied to the terminal (not recorded) until it closes its end.

Either way: stdout lines are ``INFO``, stderr lines ``ERROR``; a line is recorded when its newline
arrives; ``\\r`` overwrites (a progress bar yields its last frame), ANSI escapes are removed, secrets are
redacted; an uncaught exception's traceback is recorded even though Python prints it after the run ended;
a process forked from the run's records nothing; stop() undoes everything that is still ours to undo.
"""

from __future__ import annotations

import codecs
import itertools
import logging
import os
import queue
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Any, Final, TextIO

__all__ = ["ConsoleCapture", "LineSplitter"]

logger = logging.getLogger(__name__)

_MAX_LINE: Final = 64 * 1024
_ANSI: Final = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_DRAIN_TIMEOUT: Final = 2.0

Record = Callable[[str, str], None]


def _last_frame(text: str) -> str:
    """What a terminal shows of ``text`` after carriage returns: the part after the last ``\\r``."""
    body = text[:-1] if text.endswith("\r") else text
    cut = body.rfind("\r")
    return text[cut + 1 :] if cut >= 0 else text


class LineSplitter:
    """Turns one stream's writes into complete lines, handed to ``record(level, line)``.

    Each thread has its own unfinished line: ``print("a", 1)`` is three writes, and another thread's
    print between them must not cut it in two (the terminal shows them interleaved; the record does not).
    ``record`` is called outside the splitter's lock, so that a recorder which blocks or writes to the
    console itself cannot deadlock the stream.
    """

    def __init__(self, level: str, record: Record) -> None:
        self.level = level
        self._record = record
        self._partial: dict[int, str] = {}
        # Reentrant: a signal handler that ends the run (SIGTERM) may interrupt this thread inside feed()
        # and flush from the same thread; the worst outcome is one unfinished line lost, never a deadlock.
        self._lock = threading.RLock()

    def feed(self, text: str) -> None:
        if not text:
            return
        me = threading.get_ident()
        with self._lock:
            data = self._partial.pop(me, "") + text
            if "\n" not in data:
                rest = _last_frame(data)
                if len(rest) <= _MAX_LINE:
                    self._partial[me] = rest
                    return
                complete = [rest]
            else:
                *complete, rest = data.split("\n")
                if rest:
                    self._partial[me] = _last_frame(rest)
        for raw in complete:
            line = _last_frame(raw).rstrip("\r")
            if len(line) <= _MAX_LINE:
                self._record(self.level, line)
            else:  # one enormous line (a tensor printed whole) becomes several records of bounded size
                for start in range(0, len(line), _MAX_LINE):
                    self._record(self.level, line[start : start + _MAX_LINE])

    def flush(self) -> None:
        """Record every unfinished line (at the end of capture)."""
        with self._lock:
            rests, self._partial = list(self._partial.values()), {}
        for rest in rests:
            if rest.rstrip("\r"):
                self._record(self.level, rest.rstrip("\r"))


class _Local(threading.local):
    busy = False


_guard = _Local()


class _Tee:
    """Stands in for ``sys.stdout`` or ``sys.stderr``: writes through, and feeds a splitter on the way."""

    def __init__(self, stream: TextIO, splitter: LineSplitter, capture: ConsoleCapture) -> None:
        self._mlop_stream = stream
        self._mlop_splitter = splitter
        self._mlop_capture = capture

    def write(self, text: str) -> int:
        written = self._mlop_stream.write(text)
        capture = self._mlop_capture
        if capture.recording and not _guard.busy and isinstance(text, str) and os.getpid() == capture.pid:
            _guard.busy = True  # whatever recording writes to the console itself passes straight through
            try:
                self._mlop_splitter.feed(text)
            except Exception:  # broad: recording must never break print()
                logger.debug("mlop could not record console output", exc_info=True)
            finally:
                _guard.busy = False
        return written

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._mlop_stream.flush()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_mlop_"):  # not set up yet (copy, pickle): never recurse
            raise AttributeError(name)
        return getattr(self._mlop_stream, name)


class _FdPump:
    """Points file descriptor ``fd`` at a pipe and copies what arrives to the original and the splitter."""

    def __init__(self, fd: int, splitter: LineSplitter) -> None:
        self.fd = fd
        self._splitter = splitter
        self._sentinel = b"\x00mlop-console-end-" + os.urandom(8).hex().encode() + b"\x00"
        self._recording = True
        self._stopped = False
        self._drained = threading.Event()
        self._saved = os.dup(fd)
        self._read, self._write = self._channel()
        os.dup2(self._write, fd)
        self._thread = threading.Thread(target=self._pump, name=f"mlop-console-fd{fd}", daemon=True)
        self._thread.start()

    def _channel(self) -> tuple[int, int]:
        if os.isatty(self._saved):
            try:
                import fcntl
                import pty
                import termios
                import tty

                master, slave = pty.openpty()
                tty.setraw(slave)  # no \n to \r\n translation, no echo: bytes pass unchanged
                size = fcntl.ioctl(self._saved, termios.TIOCGWINSZ, b"\0" * 8)
                fcntl.ioctl(slave, termios.TIOCSWINSZ, size)
                return master, slave
            except (ImportError, OSError):
                logger.debug("no pseudo-terminal here; capturing through a pipe", exc_info=True)
        return os.pipe()

    def stop(self) -> None:
        """Give the descriptor back; wait until what this process wrote before is recorded. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        os.dup2(self._saved, self.fd)
        try:
            os.write(self._write, self._sentinel)  # behind everything written so far: a pipe is FIFO
        finally:
            os.close(self._write)
        if not self._drained.wait(_DRAIN_TIMEOUT):
            logger.debug("mlop: console capture of fd %d did not drain in time", self.fd)
        self._recording = False

    def _forward(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._saved, view) :]
            except InterruptedError:
                continue
            except OSError:  # the terminal went away: keep draining, stop copying
                return

    def _pump(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        held = b""
        try:
            while True:
                try:
                    chunk = os.read(self._read, 65536)
                except InterruptedError:
                    continue
                except OSError:  # EIO: every end of a pseudo-terminal was closed
                    chunk = b""
                if not chunk:
                    break
                data = held + chunk
                if not self._drained.is_set():
                    at = data.find(self._sentinel)
                    if at >= 0:
                        self._take(data[:at], decoder)
                        self._take_end(decoder)
                        self._drained.set()
                        data = data[at + len(self._sentinel) :]
                    else:
                        data, held = self._hold_back(data)
                        self._take(data, decoder)
                        continue
                held = b""
                self._forward(data)
        finally:
            self._drained.set()
            os.close(self._read)
            os.close(self._saved)

    def _take(self, data: bytes, decoder: codecs.IncrementalDecoder) -> None:
        self._forward(data)
        if self._recording and data:
            try:
                self._splitter.feed(decoder.decode(data))
            except Exception:  # broad: recording must never stop the copying to the terminal
                logger.debug("mlop could not record console output", exc_info=True)

    def _take_end(self, decoder: codecs.IncrementalDecoder) -> None:
        try:
            self._splitter.feed(decoder.decode(b"", final=True))
        except Exception:  # broad: as in _take
            logger.debug("mlop could not record console output", exc_info=True)

    def _hold_back(self, data: bytes) -> tuple[bytes, bytes]:
        """Split off a tail of ``data`` that may be the start of the sentinel."""
        if b"\x00" in data[-len(self._sentinel) :]:
            for size in range(min(len(self._sentinel) - 1, len(data)), 0, -1):
                if data.endswith(self._sentinel[:size]):
                    return data[:-size], data[-size:]
        return data, b""


class ConsoleCapture:
    """Records the process's console output while a run lives.

    Args:
        record: called with ``(time, line number, level, message)`` for every line (from any thread).
        redact: applied to every message before it is recorded.
        fd: capture at the file-descriptor level rather than by wrapping ``sys.stdout``/``sys.stderr``.
        first_line: the first line number (a resumed run continues after its last line).
        line_step: the difference between consecutive line numbers (ranks sharing a run interleave).
    """

    def __init__(
        self,
        record: Callable[[float, int, str, str], None],
        redact: Callable[[str], str],
        *,
        fd: bool = False,
        first_line: int = 1,
        line_step: int = 1,
    ) -> None:
        self._emit = record
        self._redact = redact
        self._fd = fd
        self._numbers = itertools.count(first_line, line_step)
        self.pid = os.getpid()
        self.recording = False
        self._stdout = LineSplitter("INFO", self._line)
        self._stderr = LineSplitter("ERROR", self._line)
        self._tees: list[tuple[str, _Tee, TextIO]] = []
        self._handlers: list[tuple[logging.StreamHandler[Any], _Tee, TextIO]] = []
        self._pumps: list[_FdPump] = []
        self._queue: queue.SimpleQueue[tuple[float, str, str] | None] = queue.SimpleQueue()
        self._deliverer: threading.Thread | None = None
        self._previous_hook: Callable[[type[BaseException], BaseException, TracebackType | None], Any] | None
        self._previous_hook = None

    def _line(self, level: str, text: str) -> None:
        if self._deliverer is not None:  # fd mode: the pump thread must never wait for the store
            self._queue.put((time.time(), level, text))
        else:
            self._store_line(time.time(), level, text)

    def _store_line(self, when: float, level: str, text: str) -> None:
        message = self._redact(_ANSI.sub("", text) if "\x1b" in text else text)
        self._emit(when, next(self._numbers), level, message)

    def _deliver(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                self._store_line(*item)
            except Exception:  # broad: a failing store must not end console copying
                logger.debug("mlop could not store a console line", exc_info=True)

    def start(self) -> ConsoleCapture:
        """Start capturing; returns self."""
        self.recording = True
        if self._fd:
            self._start_fd()
        else:
            self._start_wrap()
        self._previous_hook = sys.excepthook
        sys.excepthook = self._excepthook
        return self

    def _start_wrap(self) -> None:
        for name, splitter in (("stdout", self._stdout), ("stderr", self._stderr)):
            stream = getattr(sys, name)
            if stream is None:  # pythonw and some embedded interpreters have no console
                continue
            tee = _Tee(stream, splitter, self)
            setattr(sys, name, tee)
            self._tees.append((name, tee, stream))
            for handler in _stream_handlers():
                if handler.stream is stream:
                    handler.setStream(tee)
                    self._handlers.append((handler, tee, stream))

    def _start_fd(self) -> None:
        self._deliverer = threading.Thread(target=self._deliver, name="mlop-console-lines", daemon=True)
        self._deliverer.start()
        for fd, stream, splitter in ((1, sys.stdout, self._stdout), (2, sys.stderr, self._stderr)):
            _flush(stream)
            try:
                self._pumps.append(_FdPump(fd, splitter))
            except OSError as exc:
                logger.warning(
                    "mlop: cannot capture file descriptor %d (%s); its output is not recorded", fd, exc
                )

    def _excepthook(
        self, exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        # Python prints an uncaught exception's traceback after the exception hooks that end the run, so
        # capture could not see it: record what came before, then the traceback, then record nothing more
        # (the traceback is not recorded twice).
        if self.recording and os.getpid() == self.pid:
            try:
                self._end_recording()
                for line in "".join(traceback.format_exception(exc_type, exc, tb)).rstrip("\n").split("\n"):
                    self._line("ERROR", line)
            except Exception:  # broad: the traceback must still be printed by the hooks below
                logger.debug("mlop could not record the traceback", exc_info=True)
        hook = self._previous_hook or sys.__excepthook__
        hook(exc_type, exc, tb)

    def _end_recording(self) -> None:
        """Record everything written so far, unfinished lines included, then record no more."""
        _flush(sys.stdout)
        _flush(sys.stderr)
        if self._pumps:
            _flush_c_stdio()
        for pump in self._pumps:
            try:
                pump.stop()
            except OSError:
                logger.debug("mlop could not restore file descriptor %d", pump.fd, exc_info=True)
        self.recording = False
        self._stdout.flush()
        self._stderr.flush()

    def stop(self) -> None:
        """Stop capturing: record unfinished lines and restore what is still ours to restore."""
        if sys.excepthook == self._excepthook:
            sys.excepthook = self._previous_hook or sys.__excepthook__
        self._end_recording()
        for name, tee, stream in reversed(self._tees):
            if getattr(sys, name) is tee:
                setattr(sys, name, stream)
            # Otherwise someone wrapped our tee since: it stays in their chain, writing through only.
        for handler, tee, stream in self._handlers:
            if handler.stream is tee:
                handler.setStream(stream)
        if self._deliverer is not None:
            self._queue.put(None)
            self._deliverer.join(_DRAIN_TIMEOUT)
        self._tees, self._handlers, self._pumps = [], [], []


def _flush(stream: Any) -> None:
    try:
        if stream is not None:
            stream.flush()
    except Exception:  # broad: a closed or broken stream is not ours to fix
        logger.debug("could not flush %r", stream, exc_info=True)


def _flush_c_stdio() -> None:
    """Flush the C library's stdio buffers (``printf`` in a C extension), so that they reach the pipe."""
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError, TypeError):  # no C library to load (Windows), or no fflush in it
        logger.debug("could not flush the C library's stdio buffers", exc_info=True)


def _stream_handlers() -> list[logging.StreamHandler[Any]]:
    """Every console handler of every logger that exists (file handlers are StreamHandlers too: not those)."""
    loggers: list[logging.Logger] = [logging.getLogger()]
    loggers += [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    found: dict[int, logging.StreamHandler[Any]] = {}
    for lg in loggers:
        for handler in lg.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                found[id(handler)] = handler
    return list(found.values())
