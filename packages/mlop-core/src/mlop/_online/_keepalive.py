"""A lean HTTP/1.1 transport for httpx: a few keep-alive connections to a plain ``http://`` server.

``mlop sync`` of many small runs spends most of its own CPU time making requests (eight small ones per run),
and httpx's default transport takes about three times the CPU of the standard library's
:mod:`http.client` per request (measured here: 0.50 against 0.15 ms), not least because it writes the
headers and the body in two system calls. This transport sends each request through a subclass of
:class:`http.client.HTTPConnection` that writes the headers and the body in one system call, and keeps the
connections open between requests. It is used only where nothing else is needed: plain ``http://`` with no
proxy (``mlop ui``'s own server, a self-hosted server on the local network); TLS, HTTP/2 and proxies stay
with httpx's own transport. Faults come out as httpx's exceptions, so the retry logic above it is the same.
"""

from __future__ import annotations

import http.client
import select
import socket
import threading
import urllib.request
from typing import Final

import httpx

__all__ = ["KeepAliveTransport", "usable"]

_DEFAULT_TIMEOUT: Final = 30.0


def usable(url: str, proxy: str | None) -> bool:
    """Whether requests to ``url`` may go through :class:`KeepAliveTransport` (plain http, no proxy)."""
    parts = httpx.URL(url)
    if parts.scheme != "http" or proxy:
        return False
    proxies = urllib.request.getproxies()  # HTTP_PROXY, ALL_PROXY and the like, which httpx honours too
    proxied = bool(proxies.get("http") or proxies.get("all"))
    return not proxied or bool(urllib.request.proxy_bypass(parts.host))


class _Connection(http.client.HTTPConnection):
    """An HTTP connection that writes a request's headers and its body (bytes) in one system call.

    :mod:`http.client` sends them in two writes, and with ``TCP_NODELAY`` (which it sets) a small request
    then reaches the server as two segments: two wake-ups of the server's event loop, and a second send
    here, per request.
    """

    def _send_output(self, message_body: object = None, encode_chunked: bool = False) -> None:
        if message_body is not None and not isinstance(message_body, bytes):
            super()._send_output(message_body, encode_chunked)  # type: ignore[misc]
            return
        self._buffer.extend((b"", b""))  # type: ignore[attr-defined]
        msg = b"\r\n".join(self._buffer)  # type: ignore[attr-defined]
        del self._buffer[:]  # type: ignore[attr-defined]
        self.send(msg + message_body if message_body else msg)


class KeepAliveTransport(httpx.BaseTransport):
    """Requests over at most ``connections`` idle keep-alive connections (more are opened while busy).

    A connection the server has closed while idle (its keep-alive timeout) is noticed before it is used
    again and replaced; one that fails during a request is dropped, and the fault raised as httpx's.
    """

    def __init__(self, connections: int = 8) -> None:
        self._keep = max(1, connections)
        self._idle: dict[tuple[str, int], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    def _take(self, host: str, port: int, timeout: float | None) -> http.client.HTTPConnection:
        with self._lock:
            idle = self._idle.get((host, port), [])
            while idle:
                conn = idle.pop()
                if _still_open(conn):
                    conn.timeout = timeout
                    if conn.sock is not None:
                        conn.sock.settimeout(timeout)
                    return conn
                conn.close()
        return _Connection(host, port, timeout=timeout)

    def _give_back(self, host: str, port: int, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault((host, port), [])
            if len(idle) < self._keep:
                idle.append(conn)
                return
        conn.close()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"{url.scheme}: this transport speaks plain http only")
        port = url.port or 80
        timeouts = request.extensions.get("timeout") or {}
        connect = timeouts.get("connect", _DEFAULT_TIMEOUT)
        read = timeouts.get("read", _DEFAULT_TIMEOUT)
        conn = self._take(url.host, port, connect)
        body = request.read()
        try:
            conn.putrequest(
                request.method, url.raw_path.decode("ascii"), skip_host=True, skip_accept_encoding=True
            )
            for name, value in request.headers.raw:
                # identity: the body is handed on as it comes, never decoded here
                given = b"identity" if name.lower() == b"accept-encoding" else value
                conn.putheader(name.decode("latin-1"), given.decode("latin-1"))
            conn.endheaders(body or None)  # headers and a body given as bytes go in one write
            if conn.sock is not None:
                conn.sock.settimeout(read)
            answer = conn.getresponse()
            content = answer.read()
        except Exception as exc:
            conn.close()
            fault = _fault(exc, request)
            if fault is exc:
                raise
            raise fault from exc
        except BaseException:  # Ctrl-C mid-request: the connection is in an unknown state
            conn.close()
            raise
        if answer.will_close:
            conn.close()
        else:
            self._give_back(url.host, port, conn)
        return httpx.Response(answer.status, headers=answer.getheaders(), content=content, request=request)

    def close(self) -> None:
        with self._lock:
            conns = [conn for idle in self._idle.values() for conn in idle]
            self._idle.clear()
        for conn in conns:
            conn.close()


def _still_open(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle connection can carry a request: nothing to read on it (a close would be)."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


def _fault(exc: Exception, request: httpx.Request) -> Exception:
    """httpx's exception for a fault of the connection (anything else is raised as it is)."""
    if isinstance(exc, socket.timeout | TimeoutError):
        return httpx.ReadTimeout(str(exc) or "timed out", request=request)
    if isinstance(exc, ConnectionRefusedError | socket.gaierror):
        return httpx.ConnectError(str(exc), request=request)
    if isinstance(exc, http.client.HTTPException):
        return httpx.RemoteProtocolError(str(exc) or type(exc).__name__, request=request)
    if isinstance(exc, OSError):
        return httpx.ReadError(str(exc) or type(exc).__name__, request=request)
    return exc
