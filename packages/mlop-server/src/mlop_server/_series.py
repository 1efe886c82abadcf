"""The dashboard's chart series: columns with each bucket's min-max band, cached while a run is at rest.

A series is read through :meth:`Storage.metric_points`, so a long one comes from the database's block
summaries (``_blocks``) when they can answer, else whole and downsampled here (``_readapi.downsample``).
Either way a downsampled answer carries ``total`` (the series' length) and, per point, its bucket's lowest
and highest value (``lo``, ``hi``): the band a chart draws around its line. The encoded answer of a run that
is not running and was not written to for :data:`QUIET_MS` is kept (at most :data:`CACHE_BYTES`), keyed by
the run's ``updated`` time, which every write moves on: a compare page of many long runs opens again fast.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from typing import Any, Final

import anyio.to_thread
import numpy as np
import numpy.typing as npt
import orjson

from mlop_server._blocks import BLOCK, bucket_size
from mlop_server._readapi import bands, downsample
from mlop_server._storage import Downsampled, Series, Storage

__all__ = ["CACHE_BYTES", "QUIET_MS", "SeriesCache", "columns"]

logger = logging.getLogger(__name__)

#: The most bytes of encoded answers a server process keeps.
CACHE_BYTES: Final = 64 * 1024 * 1024
#: A run is at rest once this long has passed since its last write (ms).
QUIET_MS: Final = 2000


def _wire(values: npt.NDArray[np.float64]) -> list[Any]:
    """Values for JSON: non-finite ones as the strings the read API uses."""
    out: list[Any] = values.tolist()
    for i in np.flatnonzero(~np.isfinite(values)).tolist():
        value = out[i]
        out[i] = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return out


def exact_columns(series: Series, max_points: int) -> dict[str, Any]:
    """A whole series downsampled to at most ``max_points`` points, as columns (with the band when it was)."""
    index = downsample(series, max_points)
    found: dict[str, Any] = {
        "steps": series.steps[index].tolist(),
        "times": series.times[index].tolist(),
        "values": _wire(series.values[index]),
    }
    if series.steps.size > index.size:
        lo, hi = bands(series, index, max_points)
        found.update(total=int(series.steps.size), lo=_wire(lo), hi=_wire(hi))
    return found


def _block_columns(answer: Downsampled, max_points: int) -> dict[str, Any]:
    """Columns of an answer the block summaries gave: each bucket's lowest and highest point, in order.

    A bucket gives two points, or one when its lowest and highest are the same point; when every bucket gave
    two, each pair is a bucket and its band is the pair's range. Otherwise no band is sent (the line still
    passes through every bucket's lowest and highest point).
    """
    series, total = answer.series, answer.total
    size = bucket_size(total, max_points)
    buckets = len({block * BLOCK // size for block in range(-(-total // BLOCK))})
    found: dict[str, Any] = {
        "steps": series.steps.tolist(),
        "times": series.times.tolist(),
        "values": _wire(series.values),
        "total": total,
    }
    if series.values.size == 2 * buckets:
        pairs = series.values.reshape(-1, 2)
        lo, hi = np.fmin(pairs[:, 0], pairs[:, 1]), np.fmax(pairs[:, 0], pairs[:, 1])
        found.update(lo=_wire(np.repeat(lo, 2)), hi=_wire(np.repeat(hi, 2)))
    return found


class SeriesCache:
    """Encoded answers of runs at rest, least recently used dropped first past :data:`CACHE_BYTES`."""

    def __init__(self, limit: int = CACHE_BYTES) -> None:
        self.limit = limit
        self.size = 0
        self._items: OrderedDict[tuple[int, str, int], tuple[int, bytes]] = OrderedDict()

    def get(self, run_id: int, key: str, max_points: int, updated: int) -> bytes | None:
        """The answer kept for this run as of ``updated``, or None."""
        found = self._items.get((run_id, key, max_points))
        if found is None or found[0] != updated:
            return None
        self._items.move_to_end((run_id, key, max_points))
        return found[1]

    def put(self, run_id: int, key: str, max_points: int, updated: int, encoded: bytes) -> None:
        """Keep an answer (replacing an older one of the same series)."""
        old = self._items.pop((run_id, key, max_points), None)
        if old is not None:
            self.size -= len(old[1])
        self._items[(run_id, key, max_points)] = (updated, encoded)
        self.size += len(encoded)
        while self.size > self.limit and self._items:
            _, (_, dropped) = self._items.popitem(last=False)
            self.size -= len(dropped)


async def columns(
    storage: Storage, cache: SeriesCache, run: dict[str, Any], keys: list[str], max_points: int
) -> list[bytes | None]:
    """The JSON columns of each of ``keys`` of ``run`` for a chart (None where the run has no such metric):
    the kept answers of a run at rest, the others read at once (``Storage.metric_points_many``: one read of
    their block summaries) and encoded off the event loop: the answers of block summaries (small) together,
    each series read whole (downsampled here, the heavy part) on a worker of its own."""
    updated = int(run.get("updated") or 0)
    at_rest = run.get("status") != "RUNNING" and time.time() * 1000 - updated > QUIET_MS
    out: dict[str, bytes | None] = {}
    if at_rest:
        for key in keys:
            kept = cache.get(run["id"], key, max_points, updated)
            if kept is not None:
                out[key] = kept
    missing = [key for key in keys if key not in out]
    if not missing:
        return [out[key] for key in keys]
    found = await storage.metric_points_many(run["id"], missing, max_points)
    whole = [key for key, answer in found.items() if answer.series.steps.size == answer.total]
    blocks = [key for key in found if key not in whole]

    def encode_blocks() -> list[bytes]:
        return [orjson.dumps(_block_columns(found[key], max_points)) for key in blocks]

    def encode_whole(key: str) -> bytes:
        return orjson.dumps(exact_columns(found[key].series, max_points))

    block_data, whole_data = await asyncio.gather(
        anyio.to_thread.run_sync(encode_blocks),
        asyncio.gather(*(anyio.to_thread.run_sync(encode_whole, key) for key in whole)),
    )
    for key, data in zip([*blocks, *whole], [*block_data, *whole_data], strict=True):
        out[key] = data
        if at_rest:
            cache.put(run["id"], key, max_points, updated, data)
    return [out.get(key) for key in keys]
