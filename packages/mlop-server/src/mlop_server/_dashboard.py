"""The web dashboard: the page shell, its static files, and the projects list it starts from.

The pages are static files (``_ui/static``) that read everything through the documented read API with the
key the browser holds. ``mlop ui`` opens ``/ui/#key=…``: the page moves the key from the URL fragment (which
browsers never send to a server, so it reaches no log) into ``sessionStorage`` and drops it from the address.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from mlop_server._http import Context, guarded, json_response

__all__ = ["STATIC_DIR", "dashboard_routes"]

logger = logging.getLogger(__name__)

STATIC_DIR: Final = Path(__file__).parent / "_ui" / "static"

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


def dashboard_routes(ctx: Context) -> list[BaseRoute]:
    """The dashboard's routes, bound to ``ctx``: ``/``, ``/ui/``, ``/ui/static/*`` and ``/api/projects``."""

    async def root(request: Request) -> Response:
        return RedirectResponse("/ui/", status_code=307)

    async def page(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=_HEADERS)

    async def projects(request: Request) -> Response:
        ctx.authenticate(request)
        return json_response(await ctx.storage.list_projects())

    return [
        Route("/", root, methods=["GET"]),
        Route("/ui", root, methods=["GET"]),
        Route("/ui/", page, methods=["GET"]),
        Mount("/ui/static", app=StaticFiles(directory=STATIC_DIR, check_dir=False), name="ui-static"),
        Route("/api/projects", guarded(projects), methods=["GET"]),
    ]
