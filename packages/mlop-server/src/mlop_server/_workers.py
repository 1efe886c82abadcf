"""``mlop server --workers N``: N server processes serving one listening socket, watched by their parent.

The parent binds the socket and does the one-time setup (the admin key), then forks N workers that each open
their own storage and serve the inherited socket; the kernel hands every new connection to one of them.
The parent serves nothing: it starts a worker again when one dies, stops them all on SIGTERM or SIGINT (each
finishes its requests in flight), and replaces them one at a time on SIGHUP (a restart that refuses no
connection). Every piece of state lives in the database, so any worker answers any request; that is why
more than one worker needs a database server: the embedded SQLite backend keeps one process.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Final

__all__ = ["Supervisor", "checked_count", "supervise"]

logger = logging.getLogger(__name__)

DB_ENV: Final = "MLOP_SERVER_DB"
#: A worker that ends sooner than this after its start counts as a failed start.
QUICK_EXIT_S: Final = 5.0
#: Failed starts in a row after which the parent gives up (a database that refuses every worker, say).
MAX_QUICK_EXITS: Final = 5
#: Seconds the workers have to finish their requests on SIGTERM before they are killed.
STOP_TIMEOUT_S: Final = 30.0
POLL_S: Final = 0.1
PR_SET_PDEATHSIG: Final = 1


def checked_count(args: argparse.Namespace) -> int:
    """The number of server processes asked for, refused (SystemExit) where the backend cannot share."""
    count = int(getattr(args, "workers", 1) or 1)
    if count < 1:
        raise SystemExit("mlop server: --workers must be at least 1")
    if count > 1:
        if not (getattr(args, "db", None) or os.environ.get(DB_ENV)):
            raise SystemExit(
                f"mlop server: --workers {count} needs PostgreSQL (--db postgresql://... or ${DB_ENV}); "
                "the embedded SQLite backend runs in one process"
            )
        if not hasattr(os, "fork"):
            raise SystemExit("mlop server: --workers above 1 needs a system with fork()")
    return count


@dataclass
class _Worker:
    slot: int
    pid: int
    started: float = field(default_factory=time.monotonic)
    retiring: bool = False


class Supervisor:
    """Runs ``serve`` in ``count`` forked processes and keeps that many alive until told to stop.

    Args:
        count: Worker processes.
        serve: Serves in the calling (forked) process and returns an exit code.
        exit_with_parent: Stop everything once the process that started this one is gone.
        stop_timeout: Seconds workers have to end on SIGTERM before SIGKILL.
        on_worker_exit: Called in the parent with the pid of every worker that ended (metrics clean-up).
    """

    def __init__(
        self,
        count: int,
        serve: Callable[[], int],
        *,
        exit_with_parent: bool = False,
        stop_timeout: float = STOP_TIMEOUT_S,
        on_worker_exit: Callable[[int], None] | None = None,
    ) -> None:
        self.count = count
        self._serve = serve
        self._exit_with_parent = exit_with_parent
        self._stop_timeout = stop_timeout
        self._workers: dict[int, _Worker] = {}
        self._stop: int | None = None
        self._on_exit = on_worker_exit
        self._reload = False
        self._quick_exits = 0

    @property
    def pids(self) -> list[int]:
        """The process ids of the live workers."""
        return sorted(self._workers)

    def _spawn(self, slot: int) -> None:
        parent = os.getpid()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                _term_with_parent(parent)
                code = self._serve()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # broad: whatever ends a worker is logged; the parent starts another
                logger.exception("worker %d failed", slot)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self._workers[pid] = _Worker(slot, pid)
        logger.info("worker %d started (pid %d)", slot, pid)

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGHUP:
            self._reload = True
        elif self._stop is None:
            self._stop = sig

    def _reap(self) -> list[_Worker]:
        """Collect the workers that ended; returns those that ended unasked."""
        lost: list[_Worker] = []
        while self._workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:  # none left to wait for
                self._workers.clear()
                break
            if pid == 0:
                break
            worker = self._workers.pop(pid, None)
            self._ended(pid)
            if worker is None or worker.retiring or self._stop is not None:
                continue
            how = (
                f"signal {os.WTERMSIG(status)}"
                if os.WIFSIGNALED(status)
                else f"code {os.waitstatus_to_exitcode(status)}"
            )
            logger.warning("worker %d (pid %d) ended (%s); starting another", worker.slot, pid, how)
            lost.append(worker)
        return lost

    def _ended(self, pid: int) -> None:
        if self._on_exit is not None:
            try:
                self._on_exit(pid)
            except Exception:  # broad: a clean-up hook must not take the supervisor down
                logger.exception("the clean-up after worker pid %d failed", pid)

    def _replace_all(self) -> None:
        """SIGHUP: start a new worker beside each old one, then let the old one finish and end."""
        self._reload = False
        logger.info("replacing the %d workers one at a time", len(self._workers))
        for old in list(self._workers.values()):
            if self._stop is not None:
                return
            self._spawn(old.slot)
            time.sleep(1.0)  # the new worker opens its storage and starts accepting first
            old.retiring = True
            _signal(old.pid, signal.SIGTERM)

    def run(self) -> int:
        """Start the workers and watch them until a signal; returns the exit code for the parent."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        }
        parent = os.getppid()
        code = 0
        try:
            for slot in range(self.count):
                self._spawn(slot)
            while self._stop is None:
                time.sleep(POLL_S)
                if self._exit_with_parent and os.getppid() != parent:
                    logger.warning("the parent process %d is gone; stopping", parent)
                    break
                if self._reload:
                    self._replace_all()
                for worker in self._reap():
                    if time.monotonic() - worker.started < QUICK_EXIT_S:
                        self._quick_exits += 1
                        if self._quick_exits >= MAX_QUICK_EXITS:
                            logger.error("workers keep ending as they start; stopping (see the errors above)")
                            code = 1
                            self._stop = signal.SIGTERM
                            break
                        time.sleep(min(0.1 * 2**self._quick_exits, 3.0))
                    else:
                        self._quick_exits = 0
                    self._spawn(worker.slot)
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return code

    def _stop_all(self) -> None:
        if self._stop is None:
            self._stop = signal.SIGTERM
        for pid in list(self._workers):
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + self._stop_timeout
        while self._workers and time.monotonic() < deadline:
            self._reap()
            time.sleep(POLL_S)
        for pid in list(self._workers):
            logger.warning("worker pid %d did not stop in %.0f s; killing it", pid, self._stop_timeout)
            _signal(pid, signal.SIGKILL)
        while self._workers:
            self._reap()
            time.sleep(POLL_S / 10)


def _term_with_parent(parent: int) -> None:
    """In a worker: get SIGTERM when the supervisor dies (Linux), and end now if it died already.

    The worker also polls for its parent once serving (``_cli._watch_parent``); this covers its start too,
    and a supervisor killed between the fork and that poll.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl here: the poll alone watches the parent
            logger.debug("prctl(PR_SET_PDEATHSIG) is not available")
    if os.getppid() != parent:
        os._exit(0)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:  # it ended already; the next reap collects it
        pass


def supervise(
    count: int,
    serve: Callable[[], int],
    *,
    exit_with_parent: bool = False,
    on_worker_exit: Callable[[int], None] | None = None,
) -> int:
    """Run ``serve`` in ``count`` worker processes until SIGTERM or SIGINT (see :class:`Supervisor`)."""
    return Supervisor(count, serve, exit_with_parent=exit_with_parent, on_worker_exit=on_worker_exit).run()
