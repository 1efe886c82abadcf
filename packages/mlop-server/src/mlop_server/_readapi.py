"""The read API: JSON views of what the server stored, for tests and the dashboard, plus health and cancel."""

from __future__ import annotations

import logging
import math
import mimetypes
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from mlop_server._errors import BadRequest, Forbidden, NotFound
from mlop_server._http import Context, guarded, json_response, path_id
from mlop_server._storage import FileRow, Series
from mlop_server._version import __version__

__all__ = ["downsample", "read_routes"]

logger = logging.getLogger(__name__)

MAX_LOG_LINES: Final = 100_000


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


def _points(series: Series, index: npt.NDArray[np.intp]) -> list[dict[str, Any]]:
    steps = series.steps[index].tolist()
    times = series.times[index].tolist()
    values: list[Any] = series.values[index].tolist()
    for i in np.flatnonzero(~np.isfinite(series.values[index])).tolist():
        value = values[i]
        values[i] = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return [{"step": s, "time": t, "value": v} for s, t, v in zip(steps, times, values, strict=True)]


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
        ctx.authenticate(request)
        run_id = path_id(request, "run_id")
        if await ctx.storage.get_run(run_id) is None:
            raise NotFound(f"run {run_id} does not exist")
        return run_id

    async def health(request: Request) -> Response:
        return json_response({"status": "ok", "version": __version__})

    async def runs(request: Request) -> Response:
        ctx.authenticate(request)
        project = request.query_params.get("project")
        if not project:
            raise BadRequest("the query parameter is needed", field="project")
        return json_response(await ctx.storage.list_runs(project))

    async def run(request: Request) -> Response:
        ctx.authenticate(request)
        run_id = path_id(request, "run_id")
        found = await ctx.storage.get_run(run_id, detail=True)
        if found is None:
            raise NotFound(f"run {run_id} does not exist")
        return json_response(found)

    async def metrics(request: Request) -> Response:
        run_id = await run_of(request)
        key = _key_param(request)
        max_points = _int_param(request, "max_points", None, 2)
        series = await ctx.storage.metric(run_id, key)
        if series is None:
            raise NotFound(f"run {run_id} has no metric {key!r}")
        index = np.arange(series.steps.size) if max_points is None else downsample(series, max_points)
        return json_response(_points(series, index))

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
        rows = await ctx.storage.data(run_id, key)
        if rows is None:
            raise NotFound(f"run {run_id} has no key {key!r}")
        return json_response(rows)

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
        return json_response([file_view(request, row) for row in rows])

    async def content(request: Request) -> Response:
        run_id = await run_of(request)
        file_id = path_id(request, "file_id")
        row = await ctx.storage.get_file(file_id)
        if row is None or row.run_id != run_id or not row.uploaded:
            raise NotFound(f"run {run_id} has no uploaded file {file_id}")
        media, _ = mimetypes.guess_type(f"x.{row.file_type}") if row.file_type else (None, None)
        return FileResponse(
            ctx.files.path(file_id),
            media_type=media or "application/octet-stream",
            filename=row.name,
            content_disposition_type="inline",
        )

    async def cancel(request: Request) -> Response:
        key = ctx.authenticate(request)
        if not key.admin:
            raise Forbidden("cancelling a run needs an admin key")
        run_id = path_id(request, "run_id")
        await ctx.storage.request_cancel(run_id)
        return json_response({"success": True})

    return [
        Route("/health", guarded(health), methods=["GET"]),
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
