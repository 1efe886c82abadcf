"""Helpers shared by the route modules: JSON answers, bounded body reading, key checks."""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import Response

from mlop_server._config import ServerConfig
from mlop_server._errors import (
    BadRequest,
    NotFound,
    Problem,
    Timeout,
    TooLarge,
    TooMany,
    Unauthorized,
    Unsupported,
)
from mlop_server._files import FileStore
from mlop_server._keys import hash_key
from mlop_server._session import COOKIE, HEADER, session_key_id
from mlop_server._storage import ApiKey, Storage

__all__ = [
    "AuthLimiter",
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
#: Addresses the failed-key limiter remembers at most (the fullest buckets are forgotten first).
MAX_TRACKED_ADDRESSES: Final = 10_000
#: Hashes of keys that passed, remembered so that a limited address never locks a working key out.
MAX_KNOWN_KEYS: Final = 10_000


class AuthLimiter:
    """Failed key checks per client address: a token bucket of ``burst`` that refills ``rate`` per second.

    An address whose bucket is empty gets 429 with ``Retry-After`` (seconds until one check is allowed)
    for any key the server has not seen pass before; a key that passed once keeps working from anywhere.
    """

    def __init__(self, burst: int, rate: float) -> None:
        self.burst = float(burst)
        self.rate = rate
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self.known: OrderedDict[str, None] = OrderedDict()

    def _level(self, address: str, now: float) -> float:
        level, then = self._buckets.get(address, (self.burst, now))
        return min(self.burst, level + (now - then) * self.rate)

    def retry_after(self, address: str) -> int | None:
        """Seconds to wait before ``address`` may fail again, or None while it may."""
        if address not in self._buckets:
            return None
        level = self._level(address, time.monotonic())
        if level >= 1.0:
            return None
        return max(1, math.ceil((1.0 - level) / self.rate))

    def failed(self, address: str) -> None:
        """Count one failed check of ``address``."""
        now = time.monotonic()
        self._buckets[address] = (self._level(address, now) - 1.0, now)
        self._buckets.move_to_end(address)
        if len(self._buckets) > MAX_TRACKED_ADDRESSES:
            self._buckets.popitem(last=False)

    def passed(self, key_hash: str) -> None:
        """Remember a key that passed."""
        self.known[key_hash] = None
        self.known.move_to_end(key_hash)
        if len(self.known) > MAX_KNOWN_KEYS:
            self.known.popitem(last=False)


@dataclass
class Context:
    """What every route needs: the settings, the storage, the file folder and the upload secret."""

    config: ServerConfig
    storage: Storage
    files: FileStore
    secret: bytes
    uploads: int = 0
    limiter: AuthLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.limiter = AuthLimiter(self.config.auth_burst, self.config.auth_rate)

    def authenticate(self, request: Request) -> ApiKey:
        """The key of the request's ``Authorization: Bearer`` header, else of its dashboard session.

        A session cookie counts for reads (GET, HEAD), and for other methods only with the dashboard's
        header (see :mod:`mlop_server._session`).

        Raises:
            Unauthorized: no key, or the key is unknown or revoked, or the session is not valid.
            TooMany: the client's address failed too often lately, and the key never passed before.
        """
        header = request.headers.get("authorization", "")
        cookie = request.cookies.get(COOKIE)
        if not header and cookie:
            return self._session(request, cookie)
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("send a key as 'Authorization: Bearer <key>'")
        return self.check_key(token.strip(), request)

    def _session(self, request: Request, cookie: str) -> ApiKey:
        if request.method not in ("GET", "HEAD") and not request.headers.get(HEADER):
            raise Unauthorized(f"a dashboard session changes nothing without the {HEADER} header")
        key_id = session_key_id(self.secret, cookie, time.time())
        key = None if key_id is None else self.storage.get_key(key_id)
        if key is None or not key.active:
            raise Unauthorized("the dashboard session is not valid (expired, or its key was revoked)")
        return key

    def check_key(self, token: str, request: Request) -> ApiKey:
        """The stored key ``token`` is, counted by the failed-check limiter of the request's address.

        Raises:
            Unauthorized: the key is unknown or revoked.
            TooMany: the client's address failed too often lately, and the key never passed before.
        """
        key_hash = hash_key(token)
        address = request.client.host if request.client else ""
        if key_hash not in self.limiter.known:
            wait = self.limiter.retry_after(address)
            if wait is not None:
                raise TooMany(
                    f"too many failed key checks from {address}; retry in {wait} s", retry_after=wait
                )
        key = self.storage.find_key(key_hash)
        if key is None or not key.active:
            self.limiter.failed(address)
            raise Unauthorized("the key is unknown or revoked")
        self.limiter.passed(key_hash)
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
    headers = {}
    if problem.status in (429, 503):
        headers["Retry-After"] = str(getattr(problem, "retry_after", 1))
    if problem.status in (408, 413):  # the rest of the body is not read: this connection is done
        headers["Connection"] = "close"
    return json_response(problem.body(), problem.status, headers or None)


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


async def stream(
    request: Request, idle_timeout: float, min_rate: float | None = None
) -> AsyncIterator[bytes]:
    """The request body chunk by chunk.

    A client silent for ``idle_timeout`` seconds gets 408. With ``min_rate`` (bytes per second), the body
    must also keep an average of at least that after a first ``idle_timeout`` seconds: the ``n``-th byte
    is due ``idle_timeout + n / min_rate`` seconds after the start. So a trickling client cannot hold a
    request (or an upload slot) for long, however it spaces its bytes.
    """
    chunks = request.stream().__aiter__()
    start = time.monotonic()
    received = 0
    while True:
        wait = idle_timeout
        if min_rate is not None:
            wait = min(wait, start + idle_timeout + received / min_rate - time.monotonic())
        try:
            with anyio.fail_after(max(0.0, wait)):
                chunk = await chunks.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError:
            if wait < idle_timeout:
                raise Timeout(
                    f"the body arrives slower than {min_rate:g} bytes/s ({received} bytes in "
                    f"{time.monotonic() - start:.3g} s)"
                ) from None
            raise Timeout(f"the body did not arrive within {idle_timeout:g} s") from None
        received += len(chunk)
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
    async for chunk in stream(request, config.body_timeout, config.upload_min_rate):
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the body is over this server's limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)
