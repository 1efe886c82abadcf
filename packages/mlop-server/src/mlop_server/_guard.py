"""Connection and request limits in front of the app: slow clients cannot starve the others.

uvicorn's HTTP protocol has an idle timer for keep-alive connections but no deadline for a request's
headers, and its ``limit_concurrency`` counts open connections, so a few hundred idle sockets make every
request answer 503. :class:`ConnectionGuard` replaces both:

- a connection must complete its request line and headers within ``header_timeout`` seconds in total,
  counted from the connection's start (or, on a keep-alive connection, from the first byte of the next
  request); every byte does not reset it. A late connection gets ``408`` and is closed;
- at most ``max_connections`` are open: a new one makes room by closing an idle keep-alive connection, or
  else the oldest connection still sending its headers from the address that holds the most such
  connections. A client that sends its request at once is never the one closed;
- under pressure (over half of ``max_connections`` open) a keep-alive connection is closed as soon as its
  answer is sent, instead of waiting ``keep_alive`` seconds;
- :func:`limit_requests` answers ``503`` with ``Retry-After`` once ``max_requests`` requests are in the
  app at once (a quarter of them from one address). Connections that have not completed their headers
  never reach it, so they never count.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import OrderedDict
from typing import Any, Final

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mlop_server._config import ServerConfig

__all__ = ["ACCEPT_BATCH", "ConnectionGuard", "limit_requests", "raise_file_limit"]

logger = logging.getLogger(__name__)

#: Connections accepted in one pass of the event loop, before any of them can make room (uvicorn's
#: ``backlog``, which asyncio also gives the listening socket).
ACCEPT_BATCH: Final = 256
#: File descriptors kept free beside the connections: one accept batch, the database, uploads.
SPARE_FILES: Final = ACCEPT_BATCH + 64
RETRY_AFTER: Final = "1"
#: The most bytes of request line and headers one request may send (431 above).
MAX_HEADER_BYTES: Final = 64 * 1024

_REFUSAL: Final = (
    b"HTTP/1.1 %s\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
)


def raise_file_limit(wanted: int) -> int:
    """Raise this process's open-file limit towards ``wanted`` + spare; returns the connections it allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + SPARE_FILES
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            logger.warning("cannot raise the open-file limit from %d", soft)
    if soft == resource.RLIM_INFINITY:
        return wanted
    allowed = max(16, min(wanted, soft - SPARE_FILES))
    if allowed < wanted:
        logger.warning("the open-file limit allows %d connections, not %d", allowed, wanted)
    return allowed


class ConnectionGuard:
    """The state of every connection of one server, and the uvicorn protocol class that keeps it.

    Args:
        config: Gives ``header_timeout``, ``keep_alive`` and ``max_connections``.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.header_timeout = config.header_timeout
        self.max_connections = raise_file_limit(config.max_connections)
        self.open = 0
        self.closed_slow = 0
        self._waiting: dict[str, OrderedDict[Any, None]] = {}
        self._idle: OrderedDict[Any, None] = OrderedDict()
        self._closing: set[Any] = set()

    @property
    def pressure(self) -> bool:
        """True while more than half of the allowed connections are open."""
        return self.open * 2 > self.max_connections

    def protocol_class(self) -> type[HttpToolsProtocol]:
        """The protocol class to give uvicorn (``Config(http=...)``), bound to this guard."""
        guard = self

        class GuardedProtocol(HttpToolsProtocol):
            """uvicorn's httptools protocol with a total header deadline and the guard's bookkeeping."""

            _deadline: asyncio.TimerHandle | None = None
            _address = ""
            _header_bytes = 0

            def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
                super().connection_made(transport)
                self._address = self.client[0] if self.client else ""
                guard.opened(self)
                self._wait_for_headers()

            def connection_lost(self, exc: Exception | None) -> None:
                guard.closed(self)
                self._stop_waiting()
                super().connection_lost(exc)

            def data_received(self, data: bytes) -> None:
                waiting = self._deadline is not None
                super().data_received(data)
                if waiting and self._deadline is not None:
                    self._header_bytes += len(data)
                    if self._header_bytes > MAX_HEADER_BYTES:
                        self._stop_waiting()
                        self._refuse(
                            b"431 Request Header Fields Too Large",
                            "RequestHeaderFieldsTooLarge",
                            f"the request line and headers are over {MAX_HEADER_BYTES} bytes",
                        )

            def on_message_begin(self) -> None:
                super().on_message_begin()
                guard.busy(self)
                if self._deadline is None:
                    self._wait_for_headers()

            def on_headers_complete(self) -> None:
                self._stop_waiting()
                super().on_headers_complete()

            def on_response_complete(self) -> None:
                super().on_response_complete()
                if self.transport.is_closing() or self.pipeline or self._deadline is not None:
                    return
                if guard.pressure:
                    self.transport.close()
                else:
                    guard.idle(self)

            def _wait_for_headers(self) -> None:
                self._header_bytes = 0
                self._deadline = self.loop.call_later(guard.header_timeout, self._headers_late)
                guard.waiting(self, self._address)

            def _stop_waiting(self) -> None:
                if self._deadline is not None:
                    self._deadline.cancel()
                    self._deadline = None
                guard.done_waiting(self, self._address)

            def _headers_late(self) -> None:
                self._deadline = None
                guard.closed_slow += 1
                self._refuse(
                    b"408 Request Timeout",
                    "RequestTimeout",
                    f"the request line and headers took over {guard.header_timeout:g} s",
                )

            def _refuse(self, status: bytes, kind: str, message: str) -> None:
                if not self.transport.is_closing():
                    body = orjson.dumps({"error": kind, "message": message})
                    self.transport.write(_REFUSAL % (status, len(body), body))
                    self.transport.close()

        return GuardedProtocol

    # -- bookkeeping, called by the protocol on the event loop ------------------------------------------

    def opened(self, conn: Any) -> None:
        """A new connection: make room for it when the limit is reached."""
        self.open += 1
        while self.open - len(self._closing) > self.max_connections and self._close_one():
            pass

    def closed(self, conn: Any) -> None:
        """A connection ended."""
        self.open -= 1
        self._idle.pop(conn, None)
        self._closing.discard(conn)

    def waiting(self, conn: Any, address: str) -> None:
        """``conn`` waits for a request's headers."""
        self._idle.pop(conn, None)
        self._waiting.setdefault(address, OrderedDict())[conn] = None

    def done_waiting(self, conn: Any, address: str) -> None:
        """``conn`` has its headers (or ended)."""
        queue = self._waiting.get(address)
        if queue is not None:
            queue.pop(conn, None)
            if not queue:
                del self._waiting[address]

    def idle(self, conn: Any) -> None:
        """``conn`` answered and waits for the next request on a kept-alive connection."""
        self._idle[conn] = None

    def busy(self, conn: Any) -> None:
        """``conn`` began a request."""
        self._idle.pop(conn, None)

    def _close_one(self) -> bool:
        """Close the best connection to lose: idle first, then the busiest address's oldest slow one."""
        victim = None
        if self._idle:
            victim, _ = self._idle.popitem(last=False)
        elif self._waiting:
            address = max(self._waiting, key=lambda a: len(self._waiting[a]))
            victim, _ = self._waiting[address].popitem(last=False)
            if not self._waiting[address]:
                del self._waiting[address]
            self.closed_slow += 1
        if victim is None:
            return False
        self._closing.add(victim)
        victim.transport.close()
        return True


def limit_requests(app: Any, limit: int) -> Any:
    """ASGI middleware: at most ``limit`` HTTP requests in ``app`` at once, and a quarter of them (at least
    8) from one client address; the others get 503 and ``Retry-After``. So clients that send their bodies
    slowly from one address cannot take every slot."""
    per_address = max(8, limit // 4)
    state = {"active": 0}
    by_address: dict[str, int] = {}
    body = orjson.dumps({"error": "ServiceUnavailable", "message": "the server is busy; retry later"})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", RETRY_AFTER.encode()),
    ]

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in ("/health", "/ready"):  # probes pass when busy
            await app(scope, receive, send)
            return
        client = scope.get("client")
        address = client[0] if client else ""
        mine = by_address.get(address, 0)
        if state["active"] >= limit or mine >= per_address:
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        state["active"] += 1
        by_address[address] = mine + 1
        try:
            await app(scope, receive, send)
        finally:
            state["active"] -= 1
            left = by_address[address] - 1
            if left:
                by_address[address] = left
            else:
                del by_address[address]

    return guarded
