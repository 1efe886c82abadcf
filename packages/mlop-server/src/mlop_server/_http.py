"""Helpers shared by the route modules: JSON answers, bounded body reading, key checks."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import Response

from mlop_server._config import ServerConfig
from mlop_server._errors import BadRequest, NotFound, Problem, Timeout, TooLarge, Unauthorized, Unsupported
from mlop_server._files import FileStore
from mlop_server._keys import hash_key
from mlop_server._storage import ApiKey, Storage

__all__ = [
    "Context",
    "Handler",
    "body",
    "content_length",
    "error_response",
    "guarded",
    "json_response",
    "path_id",
    "stream",
]

logger = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Response]]

_BODY_TYPES = ("application/json", "application/x-ndjson", "text/plain", "")


@dataclass
class Context:
    """What every route needs: the settings, the storage, the file folder and the upload secret."""

    config: ServerConfig
    storage: Storage
    files: FileStore
    secret: bytes
    uploads: int = 0

    def authenticate(self, request: Request) -> ApiKey:
        """The key of the request's ``Authorization: Bearer`` header.

        Raises:
            Unauthorized: the header is missing, or the key is unknown or revoked.
        """
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("send a key as 'Authorization: Bearer <key>'")
        key = self.storage.find_key(hash_key(token.strip()))
        if key is None or not key.active:
            raise Unauthorized("the key is unknown or revoked")
        return key

    def base_url(self, request: Request) -> str:
        """The server's base URL as the client sees it (or as ``--public-url`` sets it)."""
        if self.config.public_url:
            return self.config.public_url.rstrip("/")
        return str(request.base_url).rstrip("/")


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer encoded with orjson."""
    return Response(orjson.dumps(content), status_code=status, media_type="application/json", headers=headers)


def error_response(problem: Problem) -> Response:
    """The protocol's error body for a refusal."""
    headers = {"Retry-After": "1"} if problem.status in (429, 503) else None
    return json_response(problem.body(), problem.status, headers)


def guarded(handler: Handler) -> Handler:
    """Turn a handler's :class:`Problem` into its error answer, and anything unexpected into a logged 500."""

    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except Problem as problem:
            return error_response(problem)
        except Exception:  # broad: one request's bug must answer 500 and keep the server up
            logger.exception("%s %s failed", request.method, request.url.path)
            return json_response({"error": "InternalServerError", "message": "the server failed"}, 500)

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run


async def stream(request: Request, idle_timeout: float) -> AsyncIterator[bytes]:
    """The request body chunk by chunk; a client silent for ``idle_timeout`` seconds gets 408."""
    chunks = request.stream().__aiter__()
    while True:
        try:
            with anyio.fail_after(idle_timeout):
                chunk = await chunks.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise Timeout(f"the body did not arrive within {idle_timeout:g} s") from None
        if chunk:
            yield chunk


def path_id(request: Request, name: str) -> int:
    """An id from the path (digits by the route's pattern); one too large to exist is a 404."""
    value: int = request.path_params[name]
    if value > 2**63 - 1:
        raise NotFound(f"no {name.replace('_id', '')} {value}")
    return value


def content_length(request: Request) -> int | None:
    """The ``Content-Length`` header, checked."""
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    if not raw.isdigit():
        raise BadRequest("Content-Length must be a number")
    return int(raw)


async def body(request: Request, config: ServerConfig) -> bytes:
    """The whole JSON or NDJSON body, at most ``config.max_body`` bytes (plain or chunked)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in _BODY_TYPES:
        raise Unsupported(f"Content-Type {media!r}: send application/json or application/x-ndjson")
    limit = config.max_body
    length = content_length(request)
    if length is not None and length > limit:
        raise TooLarge(f"the body is over this server's limit of {limit} bytes")
    parts = []
    size = 0
    async for chunk in stream(request, config.body_timeout):
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the body is over this server's limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)
