"""Prometheus metrics of the server at ``GET /metrics-prom``, through ``prometheus-client``.

What is counted: requests by route template and status, their durations, values stored by ingest, the
writes waiting for the database, requests in progress and, when the backend has a pool, its statistics.
Labels are route templates (``/api/runs/{run_id:int}/files``), never paths, keys, run names or values: the
page holds no run data. It needs a key (any active one; see ``docs/deploy.md``): behind a reverse proxy
every request comes from the proxy's address, so "loopback only" would protect nothing.

With several worker processes (``--workers``), prometheus-client's multiprocess mode sums every worker:
the parent makes a private folder and names it in ``PROMETHEUS_MULTIPROC_DIR`` before it forks
(:func:`prepare_multiprocess`), and clears a dead worker's live gauges (:func:`worker_exited`). Whichever
worker answers a scrape answers for all of them.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlop_server._http import Context, guarded

__all__ = ["MULTIPROC_ENV", "Metrics", "prepare_multiprocess", "prom_routes", "worker_exited"]

logger = logging.getLogger(__name__)

MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
#: Seconds between two readings of the write queue and the pool by one process.
GAUGE_EVERY: Final = 1.0
#: Request durations, in seconds.
BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


def prepare_multiprocess() -> Path:
    """In the parent of the workers, before they fork: a fresh private folder for their metric files,
    named in ``PROMETHEUS_MULTIPROC_DIR`` (an operator's own folder, when set, is emptied and kept)."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        folder = Path(given)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        for old in folder.glob("*.db"):  # counts of an earlier server would be added to this one's
            old.unlink()
    else:
        folder = Path(tempfile.mkdtemp(prefix="mlop-server-prom-"))
        os.environ[MULTIPROC_ENV] = str(folder)
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    return folder


def worker_exited(pid: int) -> None:
    """In the parent: a worker ended, so its live gauges (queue, pool, in progress) stop counting."""
    if _multiprocess():
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def remove_multiprocess(folder: Path) -> None:
    """Remove a folder :func:`prepare_multiprocess` made (when the server stops)."""
    shutil.rmtree(folder, ignore_errors=True)


class Metrics:
    """The server's metrics, one set per process.

    In multiprocess mode the values live in files of ``PROMETHEUS_MULTIPROC_DIR`` and a scrape reads them
    all; otherwise they are registered in a registry of their own (so that several apps in one process,
    as in tests, do not clash).
    """

    def __init__(self) -> None:
        self.multiprocess = _multiprocess()
        if self.multiprocess:  # the folder may have been named after prometheus_client was imported
            values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        own: Any = None if self.multiprocess else self.registry
        self.requests = Counter(
            "mlop_server_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=own,
        )
        self.duration = Histogram(
            "mlop_server_request_duration_seconds",
            "Time from a request's start to the end of its answer, by route template",
            ["route"],
            buckets=BUCKETS,
            registry=own,
        )
        self.ingested = Counter(
            "mlop_server_ingested",
            "Items stored by ingest: metric values, data rows, console lines",
            ["kind"],
            registry=own,
        )
        self.in_progress = Gauge(
            "mlop_server_requests_in_progress",
            "Requests being handled",
            registry=own,
            multiprocess_mode="livesum",
        )
        self.queue = Gauge(
            "mlop_server_write_queue_depth",
            "Writes waiting for the database",
            registry=own,
            multiprocess_mode="livesum",
        )
        self.pool = Gauge(
            "mlop_server_db_pool",
            "The database connection pool's statistics (backends with a pool)",
            ["stat"],
            registry=own,
            multiprocess_mode="livesum",
        )
        self._read_at = 0.0

    def read_storage(self, storage: Any, *, force: bool = False) -> None:
        """Update the write-queue and pool gauges from ``storage`` (at most every ``GAUGE_EVERY`` s)."""
        now = time.monotonic()
        if not force and now - self._read_at < GAUGE_EVERY:
            return
        self._read_at = now
        try:
            pending = getattr(storage, "pending_writes", None)
            if pending is not None:
                self.queue.set(pending())
            pool = getattr(storage, "pool_stats", None)
            if pool is not None:
                for stat, value in pool().items():
                    self.pool.labels(stat).set(value)
        except Exception:  # broad: a metric must never fail a request
            logger.debug("reading the storage's statistics failed", exc_info=True)

    def exposition(self) -> bytes:
        """The text format of every metric (of every worker, in multiprocess mode)."""
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


def prom_routes(ctx: Context, metrics: Metrics) -> list[Route]:
    """``GET /metrics-prom``: the metrics in Prometheus's text format; needs a key."""

    async def prom(request: Request) -> Response:
        ctx.authenticate(request)
        metrics.read_storage(ctx.storage, force=True)
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return [Route("/metrics-prom", guarded(prom), methods=["GET"])]
