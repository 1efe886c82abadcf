"""The web dashboard: the page shell, its static files, and the projects list it starts from.

The pages are static files (``_ui/static``) that read everything through the documented read API with the
key the browser holds. ``mlop ui`` opens ``/ui/#key=…``: the page moves the key from the URL fragment (which
browsers never send to a server, so it reaches no log) into ``sessionStorage`` and drops it from the address.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Final

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from mlop_server._errors import BadRequest
from mlop_server._http import Context, guarded, json_response

__all__ = ["MAX_LAST_KEYS", "STATIC_DIR", "dashboard_routes"]

logger = logging.getLogger(__name__)

STATIC_DIR: Final = Path(__file__).parent / "_ui" / "static"
#: The most metric columns one runs-table request may ask for.
MAX_LAST_KEYS: Final = 20

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
    value of each key in each run of the project (the runs table's metric columns).
    """

    async def root(request: Request) -> Response:
        return RedirectResponse("/ui/", status_code=307)

    async def page(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=_HEADERS)

    async def projects(request: Request) -> Response:
        ctx.authenticate(request)
        return json_response(await ctx.storage.list_projects())

    async def last(request: Request) -> Response:
        ctx.authenticate(request)
        project = request.query_params.get("project")
        if not project:
            raise BadRequest("the query parameter is needed", field="project")
        keys = list(dict.fromkeys(request.query_params.getlist("key")))
        if not keys or len(keys) > MAX_LAST_KEYS:
            raise BadRequest(f"give 1 to {MAX_LAST_KEYS} keys", field="key")
        found = await ctx.storage.last_values(project, keys)
        return json_response(
            [
                {"id": run_id, "values": {k: _wire(v) for k, v in values.items()}}
                for run_id, values in found.items()
            ]
        )

    return [
        Route("/", root, methods=["GET"]),
        Route("/ui", root, methods=["GET"]),
        Route("/ui/", page, methods=["GET"]),
        Mount("/ui/static", app=StaticFiles(directory=STATIC_DIR, check_dir=False), name="ui-static"),
        Route("/api/projects", guarded(projects), methods=["GET"]),
        Route("/api/runs/last", guarded(last), methods=["GET"]),
    ]
