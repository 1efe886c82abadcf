"""The interface between ``run.log`` and the data types (media, histograms, tables, graphs)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

__all__ = ["Loggable", "MediaSink"]

logger = logging.getLogger(__name__)

Items = list[tuple[str, Any]]


class MediaSink:
    """Where a data type puts what it logs: files in the run directory and store items.

    Heavy work (encoding an image or a video) goes through :meth:`defer`, so that the training thread
    pays only for a copy of the data.
    """

    def __init__(self, run_dir: Path, add: Callable[[str, Any], None]) -> None:
        self.media_dir = run_dir / "media"
        self.run_dir = run_dir
        self.add = add
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def defer(self, work: Callable[[], Items]) -> None:
        """Run ``work`` on a background thread and add the items it returns."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mlop-media")
            pool = self._pool
        pool.submit(self._run, work)

    def _run(self, work: Callable[[], Items]) -> None:
        try:
            for kind, item in work():
                self.add(kind, item)
        except Exception:  # broad: a value that fails to encode is reported and skipped, never raised
            logger.exception("mlop could not encode a logged value; it was skipped")

    def close(self) -> None:
        """Wait for deferred work to finish."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


class Loggable:
    """Base class of the values ``run.log`` takes besides numbers and strings.

    Subclasses set ``log_type`` (the protocol's ``logType``) and implement :meth:`mlop_items`.
    """

    log_type: ClassVar[str] = "DATA"

    def mlop_items(self, sink: MediaSink, key: str, step: int, time: float, index: int | None) -> Items:
        """Return the store items (``(kind, item)`` pairs) for this value logged under ``key``.

        ``index`` is the value's position in a list logged under one key (the protocol's sampleIndex), or
        None for a single value. Work that can wait goes through ``sink.defer`` instead.
        """
        raise NotImplementedError
