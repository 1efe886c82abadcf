"""The dashboard's login: a key traded for a session cookie, the logout, and who is logged in.

``POST /ui/session`` trades a key for a session cookie, ``POST /ui/logout`` ends it, ``GET /ui/session`` says
who is logged in. What the cookie is and why it is safe: :mod:`mlop_server._session`.
"""

from __future__ import annotations

import logging
import time

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from mlop_server._errors import BadRequest, Unauthorized
from mlop_server._http import Context, body, guarded, json_response
from mlop_server._session import HEADER, SESSION_SECONDS, cookie_header, expired_cookie_header, sign_session
from mlop_server._storage import ApiKey

__all__ = ["login_routes"]

logger = logging.getLogger(__name__)


def _who(key: ApiKey, expires: int | None = None) -> dict[str, object]:
    return {"owner": key.owner, "admin": key.admin, "keyPrefix": key.prefix, "expires": expires}


def login_routes(ctx: Context) -> list[BaseRoute]:
    """The login routes, bound to ``ctx``."""

    def secure(request: Request) -> bool:
        """Whether the browser reaches the server over HTTPS (then the cookie is ``Secure``)."""
        return ctx.base_url(request).startswith("https://") or request.url.scheme == "https"

    def dashboard_only(request: Request) -> None:
        if not request.headers.get(HEADER):
            raise BadRequest(f"the dashboard sends the {HEADER} header with this call")

    async def login(request: Request) -> Response:
        dashboard_only(request)  # a cross-site form cannot log a browser in with someone else's key
        try:
            given = orjson.loads(await body(request, ctx.config))
        except orjson.JSONDecodeError:
            raise BadRequest('send {"key": "<API key>"} as JSON') from None
        token = given.get("key") if isinstance(given, dict) else None
        if not isinstance(token, str) or not token.strip() or len(token) > 400:
            raise BadRequest('send {"key": "<API key>"} as JSON', field="key")
        key = ctx.check_key(token.strip(), request)
        expires = int(time.time()) + SESSION_SECONDS
        cookie = cookie_header(sign_session(ctx.secret, key.id, expires), secure=secure(request))
        return json_response(_who(key, expires * 1000), headers={"Set-Cookie": cookie})

    async def logout(request: Request) -> Response:
        dashboard_only(request)
        return json_response(
            {"success": True}, headers={"Set-Cookie": expired_cookie_header(secure=secure(request))}
        )

    async def whoami(request: Request) -> Response:
        if request.headers.get("authorization"):
            raise Unauthorized("this call answers for the dashboard's session cookie only")
        return json_response(_who(ctx.authenticate(request)))

    return [
        Route("/ui/session", guarded(login), methods=["POST"]),
        Route("/ui/session", guarded(whoami), methods=["GET"]),
        Route("/ui/logout", guarded(logout), methods=["POST"]),
    ]
