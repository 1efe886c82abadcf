"""Runs that have ended, sent in one pass each and several at once (``mlop sync``, ``mlop ui``).

The live uploader waits for things only a live run has: batching intervals, the training process's next
records, heartbeats, the other streams before the final status. A run that has ended has its whole store
on disk, so :func:`send_once` reads each stream to its end in turn, in the calling thread, with no wait,
through the live uploader's own streams and bookkeeping (acknowledgements, in-flight marks, idempotency
keys): what one of them sent, the other never sends again. Many runs go at once on a bounded thread
pool (:class:`Pool`) whose requests share one httpx client: a small pool of keep-alive HTTP/1.1
connections (``mlop server`` is uvicorn, HTTP/1.1 only; over TLS too, HTTP/1.1: see :func:`shared_client`
for why not HTTP/2).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final, TypeVar

import httpx

from mlop._online._keepalive import KeepAliveTransport, usable
from mlop._online._options import Options
from mlop._online._server import Abandoned, new_client
from mlop._online._streams import FINAL, STREAMS, Batch, ControlStream, Stream, protocol_tags
from mlop._online._uploader import Uploader, upload_lock
from mlop._store import Store

__all__ = [
    "DEFAULT_CONCURRENCY",
    "ONE_PASS_ITEMS",
    "Pool",
    "has_unsent",
    "send_once",
    "shared_client",
    "watched",
]

logger = logging.getLogger(__name__)

#: Runs in flight at once by default: enough to keep a server busy while this process encodes the next.
DEFAULT_CONCURRENCY: Final = 8
#: A run with more items unsent than this goes through the live uploader's threads (reading and encoding
#: one batch while the one before is sent), where that overlap pays for its waits.
ONE_PASS_ITEMS: Final = 100_000
_WATCH_EVERY: Final = 0.25

T = TypeVar("T")


def shared_client(
    options: Options, concurrency: int, transport: httpx.BaseTransport | None = None
) -> httpx.Client:
    """One client for every run in flight: as many keep-alive HTTP/1.1 connections as runs, through the
    lean transport where that can be.

    Not HTTP/2, even over TLS: httpx's synchronous HTTP/2 connection is not safe to share between threads
    (encode/httpx#3566: its HPACK tables and stream maps are changed without a lock), and every run in
    flight, and a run's file uploads, are threads. Measured here through an HTTP/2 proxy: runs lost to
    "deque mutated during iteration" and frames the proxy could not parse (bench/README.md, "Sync of many
    runs (issue 22)").
    """
    lean = transport is None and all(usable(url, options.proxy) for url in options.urls.values() if url)
    if lean:
        transport = KeepAliveTransport(concurrency)
    client = new_client(
        options.urls.get("url_api", ""),
        verify=options.verify,
        proxy=options.proxy,
        timeout=options.timeout,
        transport=transport,
        connections=max(1, concurrency),
        http2=False,
    )
    if lean and hasattr(client, "_cookies"):
        # No cookie jar: the protocol keeps no state in cookies (mlop server sets none on these routes),
        # and httpx's jar costs about 0.1 ms of CPU per request, a sixth of a small request's here.
        client._cookies = _NoCookies()
    return client


class _NoCookies(httpx.Cookies):
    """A cookie jar that keeps nothing and adds nothing to a request."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return

    def set_cookie_header(self, request: httpx.Request) -> None:
        return


class _Watchdog:
    """Stops an uploader that made no progress for its patience (one thread for every run in flight)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[Uploader, tuple[float, object, float]] = {}  # patience, last marks, when they moved
        self._thread: threading.Thread | None = None

    def add(self, up: Uploader, patience: float) -> None:
        with self._lock:
            self._runs[up] = (patience, _marks(up), time.monotonic())
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="mlop-sync-watchdog", daemon=True)
                self._thread.start()

    def remove(self, up: Uploader) -> None:
        with self._lock:
            self._runs.pop(up, None)

    def _loop(self) -> None:
        while True:
            time.sleep(_WATCH_EVERY)
            now = time.monotonic()
            with self._lock:
                for up, (patience, marks, moved) in list(self._runs.items()):
                    current = _marks(up)
                    if current != marks:
                        self._runs[up] = (patience, current, now)
                    elif now - moved > patience:
                        up.stalled = True
                        up.stop.set()
                        del self._runs[up]


def _marks(up: Uploader) -> object:
    """What moves while a run is sent: its id on the server, then each stream's acknowledgement."""
    return up.server.run_id, tuple(stream.ack for stream in up._streams)


_watchdog = _Watchdog()


@contextlib.contextmanager
def watched(up: Uploader, patience: float | None) -> Iterator[Uploader]:
    """While inside, ``up`` is stopped (``up.stalled`` set) after ``patience`` seconds without progress."""
    if patience is not None:
        _watchdog.add(up, patience)
    try:
        yield up
    finally:
        _watchdog.remove(up)


def has_unsent(store: Store) -> bool:
    """Whether the store holds an item the server has not acknowledged: what
    :func:`~mlop._online._streams.pending_items` says, in a query per stream that stops at the first."""
    acks = store.acks()
    for stream in STREAMS:
        a_seq, a_n = acks.get(stream.name, (0, 0))
        marks = ",".join("?" * len(stream.kinds))
        row = store._db.execute(  # the Store class has no method for this question
            f"SELECT 1 FROM records WHERE kind IN ({marks}) AND ((seq > ? AND count > 0) OR "
            "(seq = ? AND count > ?)) LIMIT 1",
            (*stream.kinds, a_seq, a_seq, a_n),
        ).fetchone()
        if row is not None:
            return True
    return False


def send_once(up: Uploader) -> bool:
    """Send what ``up``'s store holds, stream after stream, in this thread; returns whether all of it is on
    the server.

    Its outcomes are those of :meth:`Uploader.run` with ``once=True`` (``refused``, ``stalled``,
    ``failures``, ``corrupt``, the failures table). Each stream is read to its end before the next starts
    and the control stream (config, tags, statuses) comes last, so the final status is sent after
    everything logged before it, as the live uploader's wait for the other streams ensures.

    Raises:
        Busy: another process is sending this run.
    """
    with upload_lock(up.run_dir):
        up.draining.set()
        if not has_unsent(up.store):  # sent meanwhile by another process
            return True
        events: list[dict[str, Any]] = []
        notify = up.notify

        def seen(event: dict[str, Any]) -> object:
            events.append(event)
            return notify(event)

        up.notify = seen
        try:
            if not up.attach(None):
                return False
        except Abandoned:
            return False
        finally:
            up.notify = notify
        # A run created just now holds the store's latest config and tags, and is RUNNING: the control
        # records that would change none of that are acknowledged without a request (see _Created).
        fresh = any(e.get("event") == "run" and e.get("resumed") is False for e in events)
        created = _Created(up.meta) if fresh else None
        streams = [kind(up, up.store) for kind in STREAMS]  # one connection; the control stream last
        up._streams = streams
        end = up.store.last_seq()  # one store: the same end for every stream (a run that has ended)
        try:
            for stream in streams:
                while True:
                    if up.stop.is_set():
                        return False
                    batch = stream.read()
                    if batch is None:  # read to the end, and all of it acknowledged (or refused for good)
                        stream.caught = end
                        break
                    if created is not None and isinstance(stream, ControlStream) and created.same(batch):
                        _skip(stream, batch)
                        continue
                    stream.deliver(batch, stream.prepare(batch))
        except Abandoned:  # stopped: the batch in flight stays marked, for the next sync to resend
            return False
        finally:
            up.exit.set()
            for stream in streams:
                stream.close()
        return True


def _merged(base: Any, delta: Any) -> Any:
    """``delta`` deep-merged into ``base`` as the server merges a config update: nested objects merge,
    anything else replaces (mlop_server's ``_merge``, on both backends)."""
    if not isinstance(base, dict) or not isinstance(delta, dict):
        return delta
    out = dict(base)
    for key, value in delta.items():
        out[key] = _merged(out[key], value) if isinstance(out.get(key), dict) else value
    return out


class _Created:
    """What the server holds of a run this pass has just created (not resumed): the create body's config
    and tags, status RUNNING with no metadata. Only this process sends the run (the upload lock), and
    control records go one at a time in order, so this is the server's state before each of them.

    :meth:`same` says whether a control batch would leave all of that as it is: a config delta whose
    deep-merge changes nothing, a tags list equal to the run's tags, a non-final status equal to the
    run's with no metadata. Such a request would change only the run's ``updated`` / ``last_seen``
    (server receive times that the final status, always sent, sets again), so it is not sent; any other
    record is sent as before and its effect tracked. A final status is always sent.
    """

    def __init__(self, meta: dict[str, Any]) -> None:
        # As in Uploader._create_body: the JSON text the server stores, read back as the server would.
        self.config: Any = json.loads(json.dumps(meta.get("config") or {}))
        self.tags: list[str] | None = protocol_tags([str(t) for t in meta.get("tags") or []])
        self.status = "RUNNING"

    def same(self, batch: Batch) -> bool:
        try:
            return self._same(batch)
        except Exception:  # broad: a record of an odd shape is sent as before (the stream reports it)
            self.config, self.tags, self.status = None, None, ""
            return False

    def _same(self, batch: Batch) -> bool:
        for _seq, kind, item in batch.items:
            if kind == "config":
                delta = json.loads(json.dumps(item[1]))
                if not isinstance(delta, dict) or not isinstance(self.config, dict):
                    self.config = None  # not an update the server applies as tracked: send from here on
                    return False
                merged = _merged(self.config, delta)
                if merged != self.config:
                    self.config = merged
                    return False
            elif kind == "tags":
                tags = protocol_tags([str(t) for t in item[1]])
                if tags != self.tags:
                    self.tags = tags
                    return False
            elif kind == "status":
                status, metadata = item[1], item[2]
                if status in FINAL or metadata is not None or status != self.status:
                    self.status = ""  # unknown from here on: every later status is sent
                    return False
            else:
                return False
        return bool(batch.items)


def _skip(stream: Stream, batch: Batch) -> None:
    """Acknowledge a batch without sending it (the server holds its effect already)."""
    stream.acknowledge(batch)


class Pool:
    """Jobs on at most ``concurrency`` threads, with one shared httpx client for their runs.

    Args:
        options: where and how to send (every run of the pool goes to the same server).
        concurrency: runs in flight at once.
        transport: a custom httpx transport (tests).
    """

    def __init__(
        self, options: Options, concurrency: int = DEFAULT_CONCURRENCY, transport: Any = None
    ) -> None:
        self.concurrency = max(1, concurrency)
        self.client = shared_client(options, self.concurrency, transport)
        self.stop = threading.Event()  # no new job starts once set
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="mlop-sync")
        self._lock = threading.Lock()
        self._live: set[Uploader] = set()

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, job: Callable[..., T], *args: Any) -> Future[T]:
        return self._executor.submit(job, *args)

    def enter(self, up: Uploader) -> None:
        """Count ``up`` among the runs in flight (so that :meth:`halt` reaches it)."""
        with self._lock:
            self._live.add(up)
            if self.stop.is_set():
                up.stop.set()

    def leave(self, up: Uploader) -> None:
        with self._lock:
            self._live.discard(up)

    def halt(self) -> None:
        """Stop every run in flight at its next request (its batch in flight stays marked) and start none."""
        with self._lock:
            self.stop.set()
            for up in self._live:
                up.stop.set()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.client.close()
