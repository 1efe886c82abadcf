"""Per-project dashboard settings kept on the server (the runs table's columns, the charts' layout).

``GET /api/projects/settings?project=P&name=N`` reads a setting, ``PUT`` (a JSON body, any JSON value;
``null`` forgets it) writes one. Who sees what follows who sees which runs: an admin key reads and writes the
project-wide value, which every key of the project starts from. A non-admin key may use a project's settings
only where it may log runs (its key's projects); it reads its owner's own value when it wrote one (else the
project-wide value) and writes only its owner's value, so it never changes what another owner sees.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any, Final

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlop_server._errors import BadRequest, Forbidden
from mlop_server._http import Context, body, guarded, json_response
from mlop_server._protocol import MAX_NAME
from mlop_server._storage import ADMIN_OWNER, ApiKey

__all__ = ["MAX_SETTING_BYTES", "SETTING_NAME", "settings_routes"]

logger = logging.getLogger(__name__)

#: The largest setting a PUT may keep (its JSON text).
MAX_SETTING_BYTES: Final = 64 * 1024
#: What a setting's name may be: a letter or digit, then up to 63 letters, digits, ``_``, ``.`` or ``-``.
SETTING_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")


def _place(request: Request, key: ApiKey) -> tuple[str, str]:
    """The checked ``(project, name)`` of the query, refused when the key may not use that project."""
    project = request.query_params.get("project", "")
    name = request.query_params.get("name", "")
    if not project or len(project) > MAX_NAME:
        raise BadRequest(f"the query parameter is needed (at most {MAX_NAME} characters)", field="project")
    if not SETTING_NAME.fullmatch(name):
        raise BadRequest("the query parameter must be 1 to 64 of A-Z a-z 0-9 _ . - ", field="name")
    if not key.may_write_project(project):
        raise Forbidden(f"this key may not use project {project!r}")
    return project, name


def settings_routes(ctx: Context) -> list[Route]:
    """The settings routes, bound to ``ctx``."""
    small = dataclasses.replace(ctx.config, max_body=min(ctx.config.max_body, MAX_SETTING_BYTES))

    async def answer(project: str, name: str, key: ApiKey) -> Response:
        value, scope = None, None
        if not key.admin:
            value = await ctx.storage.get_project_setting(project, name, key.owner)
            scope = None if value is None else "owner"
        if value is None:
            value = await ctx.storage.get_project_setting(project, name, ADMIN_OWNER)
            scope = None if value is None else "project"
        found: Any = None if value is None else orjson.Fragment(value)
        return json_response({"project": project, "name": name, "value": found, "scope": scope})

    async def read(request: Request) -> Response:
        key = ctx.authenticate(request)
        project, name = _place(request, key)
        return await answer(project, name, key)

    async def write(request: Request) -> Response:
        key = ctx.authenticate(request)
        project, name = _place(request, key)
        data = await body(request, small)  # 413 past the limit, before reading it all
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"the body is not JSON: {exc}") from None
        text = None if value is None else orjson.dumps(value).decode()
        await ctx.storage.put_project_setting(project, name, text, key.owner)
        return await answer(project, name, key)

    async def either(request: Request) -> Response:
        return await (write(request) if request.method == "PUT" else read(request))

    return [Route("/api/projects/settings", guarded(either), methods=["GET", "PUT"])]
