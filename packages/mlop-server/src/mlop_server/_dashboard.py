"""The web dashboard: the page shell, its static files, and the reads it adds (projects, last values, series).

The pages are static files (``_ui/static``) that read everything through the documented read API with the
key the browser holds. ``mlop ui`` opens ``/ui/#key=…``: the page moves the key from the URL fragment (which
browsers never send to a server, so it reaches no log) into ``sessionStorage`` and drops it from the address.
"""

from __future__ import annotations

import asyncio
import logging
import math
from pathlib import Path
from typing import Any, Final

import orjson
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from mlop_server._errors import BadRequest, NotFound
from mlop_server._http import Context, guarded, json_response, path_id
from mlop_server._login import login_routes  # the dashboard's login
from mlop_server._runsapi import runs_routes
from mlop_server._series import SeriesCache, columns

__all__ = ["MAX_LAST_KEYS", "MAX_SERIES_KEYS", "STATIC_DIR", "dashboard_routes"]

logger = logging.getLogger(__name__)

STATIC_DIR: Final = Path(__file__).parent / "_ui" / "static"
#: The most metric columns one runs-table request may ask for.
MAX_LAST_KEYS: Final = 20
#: The most series one ``/series`` request may ask for.
MAX_SERIES_KEYS: Final = 100
#: The most runs one ``/api/runs/many`` request may ask for.
MAX_MANY_RUNS: Final = 100
#: The largest ``max_points`` of a ``/series`` request.
MAX_SERIES_POINTS: Final = 100_000

#: The page loads only its own scripts and styles; media are shown from blob: URLs fetched with the key.
_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
        "style-src 'self' 'unsafe-inline'; script-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def _wire(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def dashboard_routes(ctx: Context) -> list[BaseRoute]:
    """The dashboard's routes, bound to ``ctx``: the pages, their files, and two reads for the runs table.

    ``GET /api/projects`` lists the projects; ``GET /api/runs/last?project=P&key=K…`` gives the last logged
    value of each key in each run of the project (the runs table's metric columns);
    ``GET /api/runs/{runId}/series?key=K…&max_points=N`` gives several downsampled metric series at once, as
    columns (the charts of a run page: one request for many keys, read in parallel); ``GET
    /api/runs/many?id=…`` several runs with their keys (the compare page: one request, not two per run).
    """

    cache = SeriesCache()  # /series answers of runs at rest (_series)

    async def root(request: Request) -> Response:
        return RedirectResponse("/ui/", status_code=307)

    page_headers = dict(_HEADERS)
    if ctx.files.origin:  # file contents: the content route redirects the page's fetch to the object store
        policy = _HEADERS["Content-Security-Policy"]
        page_headers["Content-Security-Policy"] = f"connect-src 'self' {ctx.files.origin}; {policy}"

    async def page(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=page_headers)

    async def projects(request: Request) -> Response:
        key = ctx.authenticate(request)
        return json_response(await ctx.storage.list_projects(None if key.admin else key.owner))

    async def last(request: Request) -> Response:
        key = ctx.authenticate(request)
        project = request.query_params.get("project")
        if not project:
            raise BadRequest("the query parameter is needed", field="project")
        keys = list(dict.fromkeys(request.query_params.getlist("key")))
        if not keys or len(keys) > MAX_LAST_KEYS:
            raise BadRequest(f"give 1 to {MAX_LAST_KEYS} keys", field="key")
        found = await ctx.storage.last_values(project, keys, None if key.admin else key.owner)
        return json_response(
            [
                {"id": run_id, "values": {k: _wire(v) for k, v in values.items()}}
                for run_id, values in found.items()
            ]
        )

    async def series(request: Request) -> Response:
        asker = ctx.authenticate(request)
        run_id = path_id(request, "run_id")
        run = await ctx.storage.get_run(run_id)
        if run is None or not asker.may_read(run["owner"]):
            raise NotFound(f"run {run_id} does not exist")
        keys = list(dict.fromkeys(request.query_params.getlist("key")))
        if not keys or len(keys) > MAX_SERIES_KEYS:
            raise BadRequest(f"give 1 to {MAX_SERIES_KEYS} keys", field="key")
        raw = request.query_params.get("max_points", "1000")
        if not raw.isdigit() or not 2 <= int(raw) <= MAX_SERIES_POINTS:
            raise BadRequest(f"must be an integer from 2 to {MAX_SERIES_POINTS}", field="max_points")
        max_points = int(raw)

        answers = await columns(ctx.storage, cache, run, keys, max_points)
        parts = [orjson.dumps(k) + b":" + a for k, a in zip(keys, answers, strict=True) if a is not None]
        return Response(b"{" + b",".join(parts) + b"}", media_type="application/json")

    async def many(request: Request) -> Response:
        asker = ctx.authenticate(request)
        raw = request.query_params.getlist("id")
        if not raw or len(raw) > MAX_MANY_RUNS or not all(r.isdigit() and len(r) <= 18 for r in raw):
            raise BadRequest(f"give 1 to {MAX_MANY_RUNS} run ids", field="id")

        async def one(run_id: int) -> dict[str, Any] | None:
            run = await ctx.storage.get_run(run_id)
            if run is None or not asker.may_read(run["owner"]):
                return None
            return {**run, "keys": await ctx.storage.log_names(run_id)}

        found = await asyncio.gather(*(one(run_id) for run_id in dict.fromkeys(int(r) for r in raw)))
        return json_response([run for run in found if run is not None])

    return [
        *login_routes(ctx),  # the dashboard's login: a key once, then a session cookie
        Route("/", root, methods=["GET"]),
        Route("/ui", root, methods=["GET"]),
        Route("/ui/", page, methods=["GET"]),
        Mount("/ui/static", app=StaticFiles(directory=STATIC_DIR, check_dir=False), name="ui-static"),
        Route("/api/projects", guarded(projects), methods=["GET"]),
        Route("/api/runs/last", guarded(last), methods=["GET"]),
        Route("/api/runs/{run_id:int}/series", guarded(series), methods=["GET"]),
        Route("/api/runs/many", guarded(many), methods=["GET"]),
        *runs_routes(ctx),
    ]
