"""The read API: JSON views of what the server stored, for tests and the dashboard, plus health and cancel."""

from __future__ import annotations

import asyncio
import logging
import math
import mimetypes
import re
from typing import Any, Final

import anyio.to_thread
import numpy as np
import numpy.typing as npt
import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from mlop_server._errors import BadRequest, NotFound
from mlop_server._files import confirm_uploads
from mlop_server._http import Context, guarded, json_response, path_id
from mlop_server._runsapi import is_query, page_response
from mlop_server._storage import FileRow, Series
from mlop_server._version import __version__

__all__ = ["bands", "downsample", "read_routes"]

logger = logging.getLogger(__name__)

MAX_LOG_LINES: Final = 100_000
#: Rows one ``/data`` read answers at most (``limit``; ``offset`` pages on).
MAX_DATA_ROWS: Final = 10_000
#: Points encoded per piece of a streamed ``/metrics`` answer.
STREAM_POINTS: Final = 20_000
#: Seconds ``/ready`` waits for the database before it answers 503.
READY_TIMEOUT_S: Final = 5.0
READY_RETRY: Final = {"Retry-After": "5"}
#: Uploaded files of these types are shown inline by the dashboard; everything else is an attachment.
INLINE_MEDIA: Final = ("image/", "audio/", "video/")
#: Every uploaded file is served sandboxed: no script runs and nothing loads as the dashboard's origin.
FILE_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox; default-src 'none'",
    "Cache-Control": "private, no-cache",
}


def downsample(series: Series, max_points: int) -> npt.NDArray[np.intp]:
    """The indices of the points to keep so at most ``max_points`` remain, in step order.

    The series is cut into at most ``max_points // 2`` buckets of equal count; each bucket keeps its
    lowest and its highest value (NaN counts as neither; an all-NaN bucket keeps its first point), so
    spikes survive any zoom level.
    """
    n = series.steps.size
    if n <= max_points:
        return np.arange(n)
    size = -(-n // (max_points // 2))
    whole = n // size * size
    values = series.values
    low, high = values, values
    if np.isnan(values).any():
        nan = np.isnan(values)
        low, high = np.where(nan, np.inf, values), np.where(nan, -np.inf, values)
    starts = np.arange(0, whole, size)
    parts = [
        low[:whole].reshape(-1, size).argmin(axis=1) + starts,
        high[:whole].reshape(-1, size).argmax(axis=1) + starts,
    ]
    if whole < n:
        parts.append(np.array([low[whole:].argmin() + whole, high[whole:].argmax() + whole]))
    return np.unique(np.concatenate(parts))


def bands(
    series: Series, index: npt.NDArray[np.intp], max_points: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """For each kept point of :func:`downsample` (``index``), its bucket's lowest and highest value.

    The buckets are :func:`downsample`'s, whose kept points are each bucket's lowest and highest, so the
    kept points alone give them (NaN counts as neither; an all-NaN bucket gives NaN for both). A chart
    draws the band between the two around its line, so no spike hides between points.
    """
    n = series.steps.size
    size = -(-n // (max_points // 2)) if n > max_points else 1
    kept = series.values[index]
    bucket = index // size
    starts = np.flatnonzero(np.concatenate(([True], bucket[1:] != bucket[:-1])))
    counts = np.diff(np.concatenate((starts, [kept.size])))
    lo = np.repeat(np.fmin.reduceat(kept, starts), counts) if kept.size else kept
    hi = np.repeat(np.fmax.reduceat(kept, starts), counts) if kept.size else kept
    return lo, hi


def _points(series: Series, index: npt.NDArray[np.intp]) -> list[dict[str, Any]]:
    steps = series.steps[index].tolist()
    times = series.times[index].tolist()
    values: list[Any] = series.values[index].tolist()
    for i in np.flatnonzero(~np.isfinite(series.values[index])).tolist():
        value = values[i]
        values[i] = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return [{"step": s, "time": t, "value": v} for s, t, v in zip(steps, times, values, strict=True)]


def _encoded(series: Series, index: npt.NDArray[np.intp], start: int, stop: int) -> bytes:
    """The JSON of points ``index[start:stop]``, without the list's brackets."""
    return orjson.dumps(_points(series, index[start:stop]))[1:-1]


async def _stream_points(series: Series, index: npt.NDArray[np.intp]) -> Any:
    """A JSON list of the points at ``index``, encoded piece by piece on worker threads."""
    yield b"["
    for start in range(0, index.size, STREAM_POINTS):
        piece = await anyio.to_thread.run_sync(_encoded, series, index, start, start + STREAM_POINTS)
        yield piece if start == 0 else b"," + piece
    yield b"]"


def _secret_free(message: str) -> str:
    """``message`` without the credentials of any URL in it, cut to a readable length."""
    return re.sub(r"://[^@/\s]*@", "://***@", message).strip()[:300]


def _int_param(request: Request, name: str, default: int | None, minimum: int) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < minimum or len(raw) > 18:
        raise BadRequest(f"must be an integer of at least {minimum}", field=name)
    return int(raw)


def _key_param(request: Request) -> str:
    key = request.query_params.get("key")
    if not key:
        raise BadRequest("the query parameter is needed", field="key")
    return key


def read_routes(ctx: Context) -> list[Route]:
    """The read API's routes, bound to ``ctx``."""

    async def run_of(request: Request) -> int:
        """The run of the path, when it exists and the key may read it (404 otherwise)."""
        key = ctx.authenticate(request)
        run_id = path_id(request, "run_id")
        found = await ctx.storage.get_run(run_id)
        if found is None or not key.may_read(found["owner"]):
            raise NotFound(f"run {run_id} does not exist")
        return run_id

    async def health(request: Request) -> Response:
        return json_response({"status": "ok", "version": __version__})

    async def ready(request: Request) -> Response:
        try:
            state = await asyncio.wait_for(ctx.storage.readiness(), READY_TIMEOUT_S)
        except Exception as exc:  # broad: whatever keeps the database from answering makes this not ready
            message = "no answer in time" if isinstance(exc, asyncio.TimeoutError) else _secret_free(str(exc))
            logger.warning("not ready: %s: %s", type(exc).__name__, message)
            state = {"database": "unreachable", "message": message or type(exc).__name__}
            return json_response(
                {"error": "ServiceUnavailable", "status": "unavailable", **state}, 503, READY_RETRY
            )
        state = dict(state)
        if state.pop("ready", True) is not False:
            return json_response({"status": "ready", **state})
        message = state.pop("message", "the database schema is not the one this server expects")
        body = {"error": "ServiceUnavailable", "status": "unavailable", "message": message, **state}
        return json_response(body, 503, READY_RETRY)

    async def runs(request: Request) -> Response:
        key = ctx.authenticate(request)
        project = request.query_params.get("project")
        if not project:
            raise BadRequest("the query parameter is needed", field="project")
        if is_query(request):  # sorted, filtered, paged: the runs table's page (see _runsapi)
            return await page_response(ctx, request, None if key.admin else key.owner)
        return json_response(await ctx.storage.list_runs(project, None if key.admin else key.owner))

    async def run(request: Request) -> Response:
        key = ctx.authenticate(request)
        run_id = path_id(request, "run_id")
        found = await ctx.storage.get_run(run_id, detail=True)
        if found is None or not key.may_read(found["owner"]):
            raise NotFound(f"run {run_id} does not exist")
        return json_response(found)

    async def metrics(request: Request) -> Response:
        run_id = await run_of(request)
        key = _key_param(request)
        max_points = _int_param(request, "max_points", ctx.config.metric_points, 2)
        assert max_points is not None
        found = await ctx.storage.metric_points(run_id, key, max_points)  # downsampled in SQL when it can
        if found is None:
            raise NotFound(f"run {run_id} has no metric {key!r}")
        series = found.series
        index = await anyio.to_thread.run_sync(downsample, series, max_points)  # all of it when short
        headers = {"X-Total-Points": str(found.total)}
        return StreamingResponse(
            _stream_points(series, index), media_type="application/json", headers=headers
        )

    async def keys(request: Request) -> Response:
        run_id = await run_of(request)
        return json_response(await ctx.storage.log_names(run_id))

    async def logs(request: Request) -> Response:
        run_id = await run_of(request)
        limit = _int_param(request, "limit", MAX_LOG_LINES, 1)
        offset = _int_param(request, "offset", 0, 0)
        assert limit is not None and offset is not None
        return json_response(await ctx.storage.logs(run_id, min(limit, MAX_LOG_LINES), offset))

    async def data(request: Request) -> Response:
        run_id = await run_of(request)
        key = _key_param(request)
        limit = _int_param(request, "limit", MAX_DATA_ROWS, 1)
        offset = _int_param(request, "offset", 0, 0)
        assert limit is not None and offset is not None
        rows = await ctx.storage.data(run_id, key, min(limit, MAX_DATA_ROWS), offset)
        if rows is None:
            raise NotFound(f"run {run_id} has no key {key!r}")
        encoded = await anyio.to_thread.run_sync(orjson.dumps, rows)  # big tables: off the event loop
        return Response(encoded, media_type="application/json")

    def file_view(request: Request, row: FileRow) -> dict[str, Any]:
        return {
            "id": row.id,
            "fileName": row.name,
            "fileSize": row.size,
            "fileType": row.file_type,
            "time": row.time,
            "step": row.step,
            "sampleIndex": row.sample_index,
            "caption": row.caption,
            "uploaded": row.uploaded,
            "url": f"{ctx.base_url(request)}/api/runs/{row.run_id}/files/{row.id}/content"
            if row.uploaded
            else None,
        }

    async def files(request: Request) -> Response:
        run_id = await run_of(request)
        key = _key_param(request)
        rows = await ctx.storage.files(run_id, key)
        if rows is None:
            raise NotFound(f"run {run_id} has no key {key!r}")
        rows = await confirm_uploads(ctx.files, ctx.storage, rows)
        return json_response([file_view(request, row) for row in rows])

    async def content(request: Request) -> Response:
        run_id = await run_of(request)
        file_id = path_id(request, "file_id")
        row = await ctx.storage.get_file(file_id)
        if row is not None and row.run_id == run_id:
            row = (await confirm_uploads(ctx.files, ctx.storage, [row]))[0]
        if row is None or row.run_id != run_id or not row.uploaded:
            raise NotFound(f"run {run_id} has no uploaded file {file_id}")
        media, _ = mimetypes.guess_type(f"x.{row.file_type}") if row.file_type else (None, None)
        media = media or "application/octet-stream"
        inline = media.startswith(INLINE_MEDIA) and media != "image/svg+xml"  # SVG can carry script
        return ctx.files.download(
            file_id, media_type=media, filename=row.name, inline=inline, headers=FILE_HEADERS
        )

    async def cancel(request: Request) -> Response:
        key = ctx.authenticate(request)
        await ctx.storage.request_cancel(path_id(request, "run_id"), key)  # 404, or 403 for another's run
        return json_response({"success": True})

    return [
        Route("/health", guarded(health), methods=["GET"]),
        Route("/ready", guarded(ready), methods=["GET"]),
        Route("/api/runs", guarded(runs), methods=["GET"]),
        Route("/api/runs/{run_id:int}", guarded(run), methods=["GET"]),
        Route("/api/runs/{run_id:int}/metrics", guarded(metrics), methods=["GET"]),
        Route("/api/runs/{run_id:int}/keys", guarded(keys), methods=["GET"]),
        Route("/api/runs/{run_id:int}/logs", guarded(logs), methods=["GET"]),
        Route("/api/runs/{run_id:int}/data", guarded(data), methods=["GET"]),
        Route("/api/runs/{run_id:int}/files", guarded(files), methods=["GET"]),
        Route("/api/runs/{run_id:int}/files/{file_id:int}/content", guarded(content), methods=["GET"]),
        Route("/api/runs/{run_id:int}/cancel", guarded(cancel), methods=["POST"]),
    ]
