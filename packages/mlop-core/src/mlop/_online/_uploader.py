"""The uploader: takes a run's store to the server, from the last acknowledged record.

In online mode ``init()`` starts it as a separate process (``python -m mlop._online._uploader RUN_DIR``)
so that the training process does no network I/O and no request encoding. The process reads its options,
the API key among them, as one JSON line on its standard input (never its command line or a file), and
then watches that pipe: ``finish`` means the run ended normally, end-of-file without it means the training
process died. It reports to the training process in JSON lines on its standard output (the run's URL, a
cancel from the server, whether everything was sent).

``mlop sync`` runs the same :class:`Uploader` in its own process, once (``once=True``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

from mlop._exceptions import AuthError, MlopError, ServerError
from mlop._online._options import Options
from mlop._online._server import Abandoned, ServerInterface, Transient
from mlop._online._streams import FINAL, STREAMS, Batch, Stream, pending_items, protocol_tags
from mlop._settings import public_url
from mlop._store import STORE_FILE, Store
from mlop._version import __version__

_fcntl: Any
try:
    import fcntl as _fcntl
except ImportError:  # Windows: no advisory locks; one uploader per run is then up to the user
    _fcntl = None

__all__ = ["Busy", "Options", "Uploader", "last_status", "main", "mark_died", "upload_lock"]

logger = logging.getLogger(__name__)

LOCK_FILE: Final = "upload.lock"
_POLL: Final = 0.05
_NICE: Final = 5


class Busy(MlopError):
    """Another process is uploading this run."""


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds * 1000)


def last_status(store: Store) -> tuple[int, str] | None:
    """The seq and status of the newest status item, if any."""
    found: tuple[int, str] | None = None
    for seq, _kind, items in store.records(["status"]):
        if items:
            found = (seq, str(items[-1][1]))
    return found


def mark_died(store: Store, pid: object) -> None:
    """Mark a run whose process ended without finish() as FAILED, saying why, in its store."""
    metadata = {
        "type": "ProcessDied",
        "message": f"the training process (pid {pid}) ended without finish(): killed (SIGKILL, out of "
        "memory) or crashed",
        "frames": [],
        "trace": "",
    }
    now = time.time()
    store.write(
        [("status", [(now, "FAILED", metadata)])],
        {"status": "FAILED", "statusMetadata": metadata, "finished_at": now},
    )
    logger.warning("mlop: %s; the run is marked FAILED", metadata["message"])


@contextlib.contextmanager
def upload_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run's upload lock: one uploader per run at a time (a live one, or ``mlop sync``).

    Raises:
        Busy: another process holds it.
    """
    if _fcntl is None:
        yield
        return
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            _fcntl.flock(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"another process is uploading {run_dir}") from None
        yield
    finally:
        os.close(fd)


class Uploader:
    """Sends one run's store to the server: creates (or attaches to) the run, then one thread per stream.

    Args:
        run_dir: the run directory.
        options: where and how to send.
        once: send what the store holds now and return (``mlop sync``); otherwise run until the run's final
            status is sent, the process is told to stop, or the training process is gone for too long.
        notify: called with each event for the training process (``{"event": "run", ...}``).
        transport: a custom httpx transport (tests).
        patience: with ``once``, give up after this many seconds without progress (nothing acknowledged);
            progress resets the clock. None: no limit.
        files_dir: where the run's files are, when not in ``run_dir`` (``mlop ui``'s mirrors); only
            regular files inside it are uploaded.
        client: an httpx client shared by the uploaders of many runs (see :mod:`mlop._online._many`).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        options: Options,
        *,
        once: bool = False,
        notify: Callable[[dict[str, Any]], object] | None = None,
        transport: Any = None,
        patience: float | None = None,
        files_dir: str | os.PathLike[str] | None = None,
        client: Any = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.files_dir = Path(files_dir) if files_dir is not None else self.run_dir
        self.store_path = self.run_dir / STORE_FILE if self.run_dir.is_dir() else self.run_dir
        self.options = options
        self.once = once
        self.notify = notify or (lambda event: None)
        self.webhook = options.webhook
        self.workers = options.workers
        self.stop = threading.Event()
        self.draining = threading.Event()
        self.finished = threading.Event()
        self.exit = threading.Event()
        self.cancelled = False
        self.final_status: str | None = None
        self.failures = 0
        self.patience = patience
        self.stalled = False
        self.refused: str | None = None  # what to tell the user once the server refused the key
        self.corrupt: set[tuple[int, str]] = set()  # (seq, kind) of records that cannot be decoded
        self._refused_lock = threading.Lock()
        self._reported: set[tuple[str, str]] = set()
        self._names_lock = threading.Lock()
        self._streams: list[Stream] = []
        self.server = ServerInterface(
            options.urls,
            options.api_key,
            verify=options.verify,
            proxy=options.proxy,
            timeout=options.timeout,
            transport=transport,
            retry_base=options.retry_base,
            client=client,
        )
        self.store = Store(self.store_path)
        meta = self.store.meta()
        self.meta = meta
        self.upload_id = str(meta.get("upload_id") or os.urandom(6).hex())
        if "upload_id" not in meta:
            self.store.set_meta({"upload_id": self.upload_id})
        self._known: dict[str, set[str]] = {
            t: set(names) for t, names in (meta.get("upload_lognames") or {}).items()
        }
        self.server.run_name = str(meta.get("name") or meta.get("id") or self.run_dir.name)
        self.server.project = str(meta.get("project") or self.run_dir.parent.name)

    def __repr__(self) -> str:
        return f"<Uploader {self.run_dir}>"

    def close(self) -> None:
        self.server.close()
        self.store.close()

    # -- the run on the server --------------------------------------------------------------------------

    def _create_body(self) -> dict[str, Any]:
        meta = self.meta
        system = meta.get("systemMetadata")
        finished = meta.get("finished_at")
        return {
            "runName": self.server.run_name,
            "projectName": self.server.project,
            "config": json.dumps(meta.get("config") or {}),
            "loggerSettings": json.dumps({"client": "mlop-core", "version": __version__, "mode": "online"}),
            "systemMetadata": None if system is None else json.dumps(system),
            "tags": protocol_tags([str(t) for t in meta.get("tags") or []]),
            "externalId": str(meta.get("id") or self.run_dir.name),
            "createdAt": _ms(meta.get("created_at")),
            "updatedAt": _ms(finished if finished is not None else time.time()),
        }

    def attach(self, deadline: float | None) -> bool:
        """Create the run on the server or attach to it; a refusal is said and kept in the store.

        Returns False when the run must not (or cannot) be uploaded; raises ``Abandoned`` when
        ``deadline`` passes first.
        """
        try:
            return self._attach(deadline)
        except AuthError as exc:
            self.key_refused(exc)
        except ServerError as exc:
            logger.error("mlop: the server refused run %s: %s", self.server.run_name, exc)
            self.store.add_failure("run", 0, exc.status_code, str(exc))
        return False

    def _attach(self, deadline: float | None) -> bool:
        """Create the run on the server or attach to it; returns False when it must not be uploaded."""
        self.meta = self.store.meta()
        known = self.meta.get("server") or {}
        if known.get("api") == self.server.urls.get("api") and known.get("runId") is not None:
            self.server.attach(known)
            if self._still_there(deadline):
                self.notify({"event": "run", **known, "resumed": True})
                return True
        answer: Any = None
        if self.options.resume:
            answer = self._resume(deadline)
        if answer is None:
            answer = self.server.call(
                "api", "/api/runs/create", self._create_body(), stop=self.stop, deadline=deadline
            )
            if answer.get("resumed") and self.options.check_exists:
                self.notify(
                    {
                        "event": "conflict",
                        "message": f"run {self._create_body()['externalId']!r} exists on the server "
                        f"in project {self.server.project!r}; pass resume=True to continue it",
                    }
                )
                return False
        self.server.attach(answer)
        info = {
            "api": self.server.urls.get("api"),
            "runId": self.server.run_id,
            "url": answer.get("url"),
            "number": answer.get("number"),
            "displayId": answer.get("displayId"),
            "projectName": self.server.project,
        }
        self.store.set_meta({"server": info})
        # lastStep: our server's extra field (the run's highest step); a stock server sends none.
        last = answer.get("lastStep")
        last = last if type(last) is int and last >= 0 else None
        self.notify({"event": "run", **info, "resumed": bool(answer.get("resumed")), "lastStep": last})
        return True

    def _still_there(self, deadline: float | None) -> bool:
        """Whether the server still has the run this store was sent to (one heartbeat).

        A server that lost it (its data wiped) gets the whole run again, as a new run: the store forgets
        what that server had acknowledged.
        """
        try:
            self.server.retry(lambda: self.server.trigger(timeout=10.0), stop=self.stop, deadline=deadline)
        except ServerError as exc:
            if exc.status_code != 404:
                raise
        else:
            return True
        logger.warning(
            "mlop: the server no longer has run %s (%s); sending all of it again as a new run",
            self.server.run_name,
            self.server.run_id,
        )
        self.server.run_id = None
        self.store._db.execute("DELETE FROM acks")  # the Store class has no method for this
        self.upload_id = os.urandom(6).hex()
        self._known = {}
        self.store.set_meta({"upload_id": self.upload_id, "upload_lognames": {}, "server": None})
        return False

    def _resume(self, deadline: float | None) -> Any:
        external = str(self.meta.get("id") or self.run_dir.name)
        bodies: list[dict[str, Any]] = [{"externalId": external, "projectName": self.server.project}]
        if external.isdigit():
            bodies.append({"runId": int(external)})
        for body in bodies:
            try:
                return self.server.call("api", "/api/runs/resume", body, stop=self.stop, deadline=deadline)
            except ServerError as exc:
                if exc.status_code != 404:
                    raise
        return None

    # -- what the streams share -------------------------------------------------------------------------

    def known(self, log_type: str) -> set[str]:
        return self._known.get(log_type, set())

    def register(self, names: dict[str, list[str]], key: str, store: Store) -> None:
        """Send ``logName/add`` for the names the server has not seen, once per type and batch."""
        with self._names_lock:
            for log_type, batch in names.items():
                fresh = [n for n in batch if n not in self.known(log_type)]
                if not fresh:
                    continue
                self.server.register(log_type, fresh, f"{key}-names-{log_type}", stop=self.stop)
                self._known.setdefault(log_type, set()).update(fresh)
                store.set_meta({"upload_lognames": {t: sorted(n) for t, n in self._known.items()}})

    def report_failure(self, stream: str, message: str) -> None:
        """Say once, loudly, that the server refused part of the run for good."""
        self.failures += 1
        if (stream, message.split(":", 1)[0]) in self._reported:
            logger.debug("mlop: refused again: %s", message)
            return
        self._reported.add((stream, message.split(":", 1)[0]))
        logger.error(
            "mlop: the server refused part of run %s for good and it was skipped: %s. The rest of the run "
            "is still sent; the refusal is kept in the run's store (%s, table failures).",
            self.server.run_name,
            message,
            self.store_path,
        )

    def key_refused(self, exc: Exception) -> None:
        """The server refused the key (401/403): stop sending, keep everything, say once how to fix it."""
        host = public_url(self.server.urls.get("api", ""))
        with self._refused_lock:
            if self.refused is not None:
                return
            self.refused = (
                f"the server at {host} did not accept the API key ({exc}); nothing more of run "
                f"{self.server.run_name} is sent, and all of it stays in {self.run_dir}. Store a valid key "
                f"with `mlop login --host {host}`, then send the run with:\n    "
                f"mlop sync {shlex.quote(str(self.run_dir))}"
            )
        self.stop.set()
        if not self.once:  # `mlop sync` says it itself
            logger.error("mlop: %s", self.refused)
            self.notify({"event": "refused", "message": self.refused})

    def corrupt_record(self, stream: str, seq: int, kind: str) -> None:
        """A record that cannot be decoded is skipped (the store said which and why, once)."""
        self.corrupt.add((seq, kind))

    def wait_drained(self, seq: int) -> None:
        """Block the control stream until every other stream sent all its records up to ``seq``."""
        self.draining.set()
        others = [s for s in self._streams if s.name != "control"]
        while not all(s.caught >= seq for s in others):
            if self.stop.wait(_POLL):
                raise Abandoned("final status")

    def final_sent(self, status: str) -> None:
        self.final_status = status
        self.finished.set()

    # -- the training process ---------------------------------------------------------------------------

    def parent_finished(self) -> None:
        """The training process called finish(): send everything now, without waiting to batch."""
        self.draining.set()

    def parent_gone(self, finished: bool) -> None:
        """The training process ended; without finish() its run is marked FAILED with the reason."""
        self.draining.set()
        if finished:
            return
        store = Store(self.store_path)  # this thread's own connection
        try:
            found = last_status(store)
            if found is None or found[1] not in FINAL:
                mark_died(store, self.meta.get("pid"))
        finally:
            store.close()

    def cancel(self) -> None:
        """The server cancelled the run: stop sending and tell the training process."""
        if self.cancelled or self.once:
            return
        self.cancelled = True
        logger.warning("mlop: run %s was cancelled on the server; stopping", self.server.run_name)
        self.stop.set()
        metadata = {
            "type": "Cancelled",
            "message": "the run was cancelled on the server",
            "frames": [],
            "trace": "",
        }
        try:
            self.server.status(
                "CANCELLED", metadata, f"{self.upload_id}-cancel", deadline=time.monotonic() + 10.0
            )
        except (Abandoned, ServerError) as exc:
            logger.debug("mlop: could not confirm the cancel: %s", exc)
        self.notify({"event": "cancelled"})

    # -- running ----------------------------------------------------------------------------------------

    def has_work(self) -> bool:
        total, done = pending_items(self.store)
        return total > done

    def run(self, deadline: float | None = None) -> bool:
        """Upload until done; returns whether everything in the store reached the server.

        Args:
            deadline: a ``time.monotonic()`` value after which the uploader stops (``mlop sync`` has none).

        Raises:
            Busy: another process is uploading this run.
        """
        with upload_lock(self.run_dir):
            return self._run(deadline)

    def _run(self, deadline: float | None) -> bool:
        if self.once:
            self.draining.set()
            if not self.has_work():
                return True
        first = deadline  # creating the run counts as progress too: it may take ``patience`` at most
        if self.once and self.patience is not None:
            limit = time.monotonic() + self.patience
            first = limit if deadline is None else min(deadline, limit)
        try:
            if not self.attach(first):
                return False
        except Abandoned:
            self.stalled = self.once and self.patience is not None
            return False
        target = self.store.last_seq()
        self._streams = [kind(self) for kind in STREAMS]
        threads = [
            threading.Thread(target=self._loop, args=(s,), name=f"mlop-up-{s.name}", daemon=True)
            for s in self._streams
        ]
        threads.append(threading.Thread(target=self._heartbeat, name="mlop-heartbeat", daemon=True))
        for thread in threads:
            thread.start()
        marks: list[Any] = []
        moved = time.monotonic()
        try:
            while not self.stop.is_set():
                if self.patience is not None:
                    now = time.monotonic()
                    progress = [s.ack for s in self._streams]
                    if progress != marks:
                        marks, moved = progress, now
                    elif now - moved > self.patience:
                        self.stalled = True
                        self.stop.set()
                        break
                if deadline is not None and time.monotonic() > deadline:
                    break
                if self.once and all(s.caught >= target for s in self._streams):
                    break
                if not self.once and self.finished.is_set():
                    break
                self.stop.wait(_POLL)
        except BaseException:
            self.stop.set()  # interrupted (Ctrl-C in `mlop sync`): in-flight batches stay marked
            raise
        finally:
            if not self.finished.is_set() and not self.once:
                self.stop.set()
            self.exit.set()
            if deadline is not None and time.monotonic() > deadline:
                self.stop.set()
            until = time.monotonic() + 10.0
            for thread in threads:
                if self.once and not self.stop.is_set():
                    thread.join()
                else:
                    thread.join(timeout=max(0.0, until - time.monotonic()))
        return not self.has_work()

    def _loop(self, stream: Stream) -> None:
        """Read and encode a stream's batches; a sending thread sends them, one in flight at a time."""
        interval = self.options.batch_interval
        outbox: queue.Queue[tuple[Batch, Any] | None] = queue.Queue(maxsize=1)
        sender = threading.Thread(
            target=self._send_loop, args=(stream, outbox), name=f"mlop-send-{stream.name}", daemon=True
        )
        sender.start()
        last = 0.0
        full = False
        try:
            while not self.stop.is_set():
                if not full and not self.draining.is_set():
                    wait = last + interval - time.monotonic()
                    if wait > 0:
                        self.draining.wait(wait)
                seen = self.store_seq(stream)
                batch = stream.read()
                if batch is not None:
                    full = batch.full
                    last = time.monotonic()
                    item = (batch, stream.prepare(batch))
                    while not self.stop.is_set():
                        try:
                            outbox.put(item, timeout=_POLL)
                            break
                        except queue.Full:
                            continue
                    continue
                full = False
                if stream.cursor == stream.ack and outbox.empty():
                    stream.caught = seen
                    if self.exit.is_set():
                        return
                self.exit.wait(_POLL if self.draining.is_set() else interval)
        except Exception:  # broad: a bug in one stream ends this upload; the store keeps the rest
            logger.exception("mlop: the %s uploader failed", stream.name)
        finally:
            if not self.exit.is_set():
                self.stop.set()
            with contextlib.suppress(queue.Full):
                outbox.put_nowait(None)
            sender.join()
            stream.close()

    def _send_loop(self, stream: Stream, outbox: queue.Queue[tuple[Batch, Any] | None]) -> None:
        try:
            while not self.stop.is_set():
                try:
                    item = outbox.get(timeout=1.0)  # woken at once by a batch or the end (None)
                except queue.Empty:
                    continue
                if item is None:
                    return
                stream.deliver(*item)
        except Abandoned:
            return
        except Exception:  # broad: as in _loop; the batch stays in flight for the next uploader
            logger.exception("mlop: the %s uploader failed", stream.name)
            self.stop.set()

    @staticmethod
    def store_seq(stream: Stream) -> int:
        return stream.store.last_seq()

    def _heartbeat(self) -> None:
        every = max(0.2, self.options.heartbeat)
        while not self.exit.wait(every) and not self.stop.is_set():
            try:
                answer = self.server.trigger(timeout=min(10.0, every * 2))
            except AuthError as exc:
                self.key_refused(exc)
                return
            except (Transient, ServerError) as exc:
                logger.debug("mlop: heartbeat failed: %s", exc)
                continue
            if isinstance(answer, dict) and answer.get("status") == "CANCELLED":
                self.cancel()


# -- the process --------------------------------------------------------------------------------------


_emit_lock = threading.Lock()


def _emit(event: dict[str, Any]) -> bool:
    """Send an event to the training process; False when it is gone."""
    line = json.dumps(event) + "\n"
    with _emit_lock:
        try:
            sys.stdout.write(line)
            sys.stdout.flush()
        except (OSError, ValueError):  # the training process is gone: nobody to tell
            return False
    return True


class _Relay(logging.Handler):
    """Hands the uploader's messages to the training process, which logs them where its user looks (a
    notebook's cell, say); writes them to stderr itself once that process is gone."""

    def emit(self, record: logging.LogRecord) -> None:
        message = self.format(record)
        if not _emit({"event": "log", "level": record.levelno, "message": message}):
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(message + "\n")


def _watch_parent(uploader: Uploader, parent: int) -> None:
    """Follow the training process through the stdin pipe and its pid; start the orphan deadline."""
    finished = False

    def read() -> None:
        nonlocal finished
        for line in sys.stdin:
            if line.strip() == "finish":
                finished = True
                uploader.parent_finished()
        gone.set()

    gone = threading.Event()
    threading.Thread(target=read, name="mlop-stdin", daemon=True).start()
    while not gone.wait(0.25):
        if os.getppid() != parent:
            break
    uploader.parent_gone(finished)
    limit = uploader.options.finish_timeout + 5.0 if finished else max(60.0, uploader.options.finish_timeout)
    if not uploader.exit.wait(limit):
        logger.warning("mlop: the training process is gone; leaving what is unsent for `mlop sync`")
        uploader.stop.set()


def main(argv: list[str] | None = None) -> int:
    """The uploader process: ``python -m mlop._online._uploader RUN_DIR``, options on stdin."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m mlop._online._uploader RUN_DIR  (options as JSON on stdin)\n")
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: no os.nice on Windows
        os.nice(_NICE)  # when CPUs are short, the training loop goes first; the uploader catches up
    parent = os.getppid()
    options = Options.from_json(sys.stdin.readline())
    relay = _Relay()
    relay.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger().addHandler(relay)
    logging.getLogger().setLevel(options.debug_level)
    for noisy in ("httpx", "httpcore", "hpack", "h2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    uploader = Uploader(args[0], options, notify=_emit)
    signal.signal(signal.SIGTERM, lambda signum, frame: uploader.stop.set())
    # The training process says "start" once the run's environment is in the store (or dies first).
    sys.stdin.readline()
    threading.Thread(target=_watch_parent, args=(uploader, parent), name="mlop-parent", daemon=True).start()
    complete = False
    try:
        complete = uploader.run()
    except Busy as exc:
        logger.error("mlop: %s", exc)
    finally:
        if uploader.failures > 1:
            logger.error(
                "mlop: the server refused %d parts of run %s in all; see the failures table of %s",
                uploader.failures,
                uploader.server.run_name,
                uploader.store_path,
            )
        _emit({"event": "done", "complete": complete, "cancelled": uploader.cancelled})
        uploader.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
