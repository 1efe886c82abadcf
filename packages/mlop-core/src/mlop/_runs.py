"""The process's live runs, and how they end when the process does.

- An unhandled exception marks every live run FAILED with its trace (Ctrl-C: TERMINATED), then the
  previous ``sys.excepthook`` runs.
- SIGTERM marks them TERMINATED, then the previous handler runs (the default one ends the process).
- ``atexit`` finishes what is left as COMPLETED.
- In a process forked from the run's (a DataLoader worker), runs do nothing.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
from types import FrameType, TracebackType
from typing import Any, Protocol

from mlop._status import exception_status

__all__ = ["LiveRun", "forget", "install_handlers", "ops", "register"]

logger = logging.getLogger("mlop")


class LiveRun(Protocol):
    """What the registry needs of a run (:class:`mlop.Run`, or the no-op run of other ranks)."""

    _forked: bool
    _closed: bool

    def finish(self, code: int | None = None) -> None: ...

    def _end(self, status: str, metadata: dict[str, Any] | None) -> None: ...


ops: list[LiveRun] = []
_installed = False
_lock = threading.Lock()
_previous_excepthook: Any = None
_previous_sigterm: Any = None


def register(op: LiveRun) -> None:
    with _lock:
        ops.append(op)
    install_handlers()


def forget(op: LiveRun) -> None:
    with _lock:
        if op in ops:
            ops.remove(op)


def _live() -> list[LiveRun]:
    with _lock:
        return list(reversed(ops))


def install_handlers() -> None:
    """Install the exit, exception, signal and fork handlers once per process."""
    global _installed, _previous_excepthook, _previous_sigterm
    with _lock:
        if _installed:
            return
        _installed = True
    _previous_excepthook = sys.excepthook
    sys.excepthook = _excepthook
    atexit.register(_at_exit)
    os.register_at_fork(after_in_child=_after_fork)
    if threading.current_thread() is threading.main_thread():
        try:
            _previous_sigterm = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, _on_sigterm)
        except (ValueError, OSError):  # not allowed here (an embedded interpreter): no SIGTERM status
            logger.debug("mlop could not install its SIGTERM handler")


def _excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    status, metadata = exception_status(exc_type, exc, tb)
    for op in _live():
        op._end(status, metadata)
    hook = _previous_excepthook if _previous_excepthook is not None else sys.__excepthook__
    hook(exc_type, exc, tb)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    me = threading.get_ident()
    for op in _live():
        writer = getattr(op, "_writer", None)
        if (
            writer is not None and writer.owner == me
        ):  # we interrupted this thread's own flush: finish once it is done
            writer.after_flush = lambda: _on_sigterm(signum, frame)
            return
    metadata = {"type": "Signal", "message": "terminated by SIGTERM", "frames": [], "trace": ""}
    for op in _live():
        op._end("TERMINATED", metadata)
    previous = _previous_sigterm
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_IGN:
        return
    else:  # the default action: end the process as SIGTERM would have
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def _at_exit() -> None:
    for op in _live():
        op.finish()


def _after_fork() -> None:
    # The child has copies of the runs but not their threads; its locks may be held by threads that no
    # longer exist. Mark every run as forked: log() and every other call then does nothing.
    global _lock
    _lock = threading.Lock()
    for op in ops:
        op._forked = op._closed = True
