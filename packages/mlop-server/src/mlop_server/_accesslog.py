"""The access log (one JSON line per request) and the ASGI middleware that feeds it and the metrics.

A line holds the time, the client's address, the method, the path without its query (upload URLs carry
their signature there), the route template, the status, the duration in ms and the bytes in and out:

    {"ts":"2026-12-06T03:01:02.345Z","remote":"10.0.0.7","method":"POST","path":"/ingest/metrics",
     "route":"/ingest/metrics","status":200,"ms":1.84,"in":5120,"out":16}

No header is logged, so neither the ``Authorization`` key nor a cookie ever reaches it. ``--access-log``
picks where it goes (stderr by default while ``--log-level`` shows info; a file is reopened when
logrotate moves it).
"""

from __future__ import annotations

import datetime
import logging
import logging.handlers
import sys
import time
from typing import Any, Final

import orjson

from mlop_server._prom import Metrics

__all__ = ["ACCESS_LOGGER", "Observer", "access_logger"]

logger = logging.getLogger(__name__)

#: The logger the lines go to (its own handler; it does not propagate to the root logger).
ACCESS_LOGGER: Final = "mlop_server.access"
#: What a request that matched no route is counted as (paths are never labels).
UNMATCHED: Final = "unmatched"
#: The scope entry where an ingest route leaves how many items it stored.
STORED: Final = "mlop.stored"


def access_logger(where: str | None) -> logging.Logger | None:
    """The logger of the access log: ``"-"`` for stderr, a file path, or None for none."""
    if where is None:
        return None
    log = logging.getLogger(ACCESS_LOGGER)
    for old in list(log.handlers):
        log.removeHandler(old)
        old.close()
    handler: logging.Handler
    if where == "-":
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.handlers.WatchedFileHandler(where, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return log


def _route(scope: dict[str, Any]) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    return UNMATCHED


class Observer:
    """ASGI middleware: counts and times every HTTP request, and writes its access-log line.

    Args:
        app: The app it wraps.
        metrics: The metrics to count in.
        storage: Read for the write-queue and pool gauges (at most once a second).
        log: The access log, or None.
    """

    def __init__(self, app: Any, *, metrics: Metrics, storage: Any, log: logging.Logger | None) -> None:
        self.app = app
        self.metrics = metrics
        self.storage = storage
        self.log = log

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        counts = {"status": 500, "in": 0, "out": 0}

        async def counted_receive() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                counts["in"] += len(message.get("body", b""))
            return message

        async def counted_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                counts["status"] = message["status"]
            elif message["type"] == "http.response.body":
                counts["out"] += len(message.get("body", b""))
            await send(message)

        metrics = self.metrics
        metrics.in_progress.inc()
        try:
            await self.app(scope, counted_receive, counted_send)
        finally:
            metrics.in_progress.dec()
            seconds = time.perf_counter() - start
            route = _route(scope)
            status = counts["status"]
            metrics.requests.labels(route, scope["method"], str(status)).inc()
            metrics.duration.labels(route).observe(seconds)
            stored = scope.get(STORED)
            if stored:
                metrics.ingested.labels(route.rsplit("/", 1)[-1]).inc(stored)
            metrics.read_storage(self.storage)
            if self.log is not None:
                self._write(scope, route, status, seconds, counts)

    def _write(
        self, scope: dict[str, Any], route: str, status: int, seconds: float, counts: dict[str, int]
    ) -> None:
        client = scope.get("client")
        now = datetime.datetime.now(datetime.timezone.utc)
        line = {
            "ts": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
            "remote": client[0] if client else None,
            "method": scope["method"],
            "path": scope["path"],
            "route": route,
            "status": status,
            "ms": round(seconds * 1000, 2),
            "in": counts["in"],
            "out": counts["out"],
        }
        assert self.log is not None
        try:
            self.log.info(orjson.dumps(line).decode())
        except Exception:  # broad: a log line must never fail a request
            logger.debug("writing the access log failed", exc_info=True)
