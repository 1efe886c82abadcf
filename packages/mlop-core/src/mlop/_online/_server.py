"""The server interface: every route of ``protocol.md`` over one pooled httpx client.

One call is one attempt (:meth:`ServerInterface.send`); :meth:`ServerInterface.call` retries the transient
faults (408, 429, 5xx, resets, timeouts) with jittered exponential backoff, or after the time a
``Retry-After`` header asks for, without a cap, until the call succeeds, the caller's ``stop`` event is
set or its deadline passes. A 401 or 403 is final: the key was refused, and retrying cannot change that
(:class:`mlop.AuthError`). Any other 4xx is permanent for that request and raised as
:class:`mlop.ServerError`.

The API key lives in one private attribute and is added to each request's headers; it is never part of a
message, a repr or an exception. The upload ``PUT`` and webhooks get no auth header at all.
"""

from __future__ import annotations

import email.utils
import json
import logging
import mimetypes
import random
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

import httpx

from mlop._exceptions import AuthError, MlopError, ServerError
from mlop._headers import encode_header_value
from mlop._version import __version__

__all__ = ["Abandoned", "Base", "Secret", "ServerInterface", "Transient", "is_transient_status", "new_client"]

logger = logging.getLogger(__name__)

Base = Literal["api", "ingest", "py", "app"]
_TRANSIENT_STATUS: Final = frozenset({408, 429})
_AUTH_STATUS: Final = frozenset({401, 403})
_MAX_RETRY_AFTER: Final = 120.0
_JSON: Final = "application/json"
_NDJSON: Final = "application/x-ndjson"


def is_transient_status(status: int) -> bool:
    """Whether an HTTP status is worth retrying (the protocol's transient faults)."""
    return status in _TRANSIENT_STATUS or status >= 500


class Secret:
    """A string that never shows itself in a repr, a str or a traceback's locals."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def reveal(self) -> str:
        return self._value


class Transient(MlopError):
    """One attempt failed in a way that is worth retrying (internal: retried, never shown to a user)."""

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class Abandoned(MlopError):
    """A retried call gave up because its caller stopped it or its deadline passed (internal)."""


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)


def _reason(response: httpx.Response) -> str:
    """The server's own words for a refusal, short."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return text[:300] if text else response.reason_phrase
    if isinstance(body, dict):
        parts = [str(body[k]) for k in ("error", "message") if body.get(k)]
        if parts:
            return ": ".join(parts)[:300]
    return json.dumps(body)[:300]


def new_client(
    api_url: str,
    *,
    verify: bool = True,
    proxy: str | None = None,
    timeout: float = 30.0,
    transport: httpx.BaseTransport | None = None,
    connections: int = 32,
    http2: bool = False,
) -> httpx.Client:
    """The httpx client of a server: a pool of keep-alive HTTP/1.1 connections.

    HTTP/2 (over TLS, needs the ``h2`` package) only when ``http2`` asks for it: the uploader's threads share
    one client, and httpx's synchronous HTTP/2 connection is not safe to share between threads (requests fail
    with errors such as "deque mutated during iteration", encode/httpx#3566).
    """
    return httpx.Client(
        http2=http2 and transport is None and api_url.startswith("https://"),
        verify=verify,
        proxy=proxy,
        transport=transport,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=min(16, connections)),
        headers={"User-Agent": f"mlop/{__version__}"},
        follow_redirects=False,
    )


class ServerInterface:
    """A client for one server's routes, shared by the threads of one process.

    Args:
        urls: the four base URLs, as :meth:`mlop.Settings.urls` returns them.
        api_key: the key sent as ``Authorization: Bearer``.
        verify: check TLS certificates.
        proxy: a proxy URL for every request (the usual ``HTTPS_PROXY`` variables work too).
        timeout: seconds for one attempt's read, write and pool waits.
        transport: a custom httpx transport (tests).
        retry_base: the first retry delay in seconds; each next one doubles, up to ``retry_cap``.
        retry_cap: the longest delay between two retries.
        client: an httpx client shared with other interfaces (``mlop sync`` of many runs: one connection
            pool for all); :meth:`close` leaves it open, and ``verify``, ``proxy`` and ``transport`` are
            then the shared client's.
    """

    def __init__(
        self,
        urls: Mapping[str, str],
        api_key: str | None,
        *,
        verify: bool = True,
        proxy: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        retry_base: float = 0.25,
        retry_cap: float = 15.0,
        client: httpx.Client | None = None,
    ) -> None:
        self.urls = {k.removeprefix("url_"): v.rstrip("/") for k, v in urls.items()}
        self._key = Secret(api_key or "")
        self.run_id: int | None = None
        self.run_name: str | None = None
        self.project: str | None = None
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self._failing = False
        self._fail_lock = threading.Lock()
        self._shared = client is not None
        if client is None:
            client = new_client(
                self.urls.get("api", ""), verify=verify, proxy=proxy, timeout=timeout, transport=transport
            )
        self._client = client

    def __repr__(self) -> str:
        return f"<ServerInterface {self.urls.get('api')} run={self.run_id}>"

    def close(self) -> None:
        if not self._shared:
            self._client.close()

    def __enter__(self) -> ServerInterface:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one attempt ----------------------------------------------------------------------------------

    def _headers(self, content_type: str | None, idempotency_key: str | None) -> dict[str, str]:
        key = self._key.reveal()
        if not (key.isascii() and key.isprintable()):
            raise AuthError(
                "the API key holds characters an HTTP header cannot carry (a line break, a tab, a "
                "non-ASCII letter): check MLOP_API_TOKEN or run `mlop login` again"
            )
        headers = {"Authorization": f"Bearer {key}"}
        if content_type:
            headers["Content-Type"] = content_type
        if self.run_id is not None:
            headers["X-Run-Id"] = str(self.run_id)
        if self.run_name is not None:
            headers["X-Run-Name"] = encode_header_value(self.run_name)
        if self.project is not None:
            headers["X-Project-Name"] = encode_header_value(self.project)
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return headers

    def send(
        self,
        base: Base,
        path: str,
        *,
        body: Any = None,
        ndjson: bytes | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """One POST to a route; returns the answer's JSON (None for an empty answer).

        Raises:
            Transient: a fault worth retrying.
            AuthError: the server refused the key (401 or 403).
            ServerError: a permanent refusal (4xx other than 408 and 429) or an answer that is not JSON.
        """
        url = self.urls[base] + path
        if ndjson is not None:
            content, content_type = ndjson, _NDJSON
        else:
            content, content_type = json.dumps(body, separators=(",", ":")).encode(), _JSON
        extra: dict[str, Any] = {}
        if timeout is not None:
            extra["timeout"] = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        try:
            response = self._client.post(
                url, content=content, headers=self._headers(content_type, idempotency_key), **extra
            )
        except httpx.TransportError as exc:
            raise Transient(f"POST {path}: {type(exc).__name__}: {exc}") from None
        return self._answer("POST", path, response)

    def _answer(self, method: str, path: str, response: httpx.Response) -> Any:
        status = response.status_code
        if status >= 400:
            message = f"{method} {path}: HTTP {status}: {_reason(response)}"
            if status in _AUTH_STATUS and method != "WEBHOOK":
                raise AuthError(message, status)
            if is_transient_status(status):
                raise Transient(message, status, _retry_after(response.headers.get("Retry-After")))
            raise ServerError(message, status)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            if method != "POST":
                return None
            raise ServerError(f"{method} {path}: the answer is not JSON", status) from None

    def put_file(self, url: str, path: Path, timeout: float | None = None) -> None:
        """One ``PUT`` of a file to an upload URL, streamed from disk (no auth header: the URL is the key).

        A 409 (the file is there already, from an attempt whose reply was lost) counts as success; a 401
        or 403 means the URL was refused (it expired) and is permanent for that file.

        Raises:
            Transient: a fault worth retrying.
            ServerError: a permanent refusal, or a file that is gone.
        """
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        try:
            size = path.stat().st_size
            handle = path.open("rb")
        except OSError as exc:
            raise ServerError(f"cannot read {path.name}: {exc.strerror}") from None
        extra: dict[str, Any] = {}
        if timeout is not None:
            extra["timeout"] = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        with handle:
            try:
                response = self._client.put(
                    url,
                    content=_chunks(handle),
                    headers={"Content-Type": content_type, "Content-Length": str(size)},
                    **extra,
                )
            except httpx.TransportError as exc:
                raise Transient(f"PUT {path.name}: {type(exc).__name__}: {exc}") from None
        if response.status_code == 409:  # uploaded already: an earlier attempt whose reply was lost
            return
        if response.status_code in (401, 403):  # the URL itself is refused (expired): retrying cannot help
            raise ServerError(f"PUT {path.name}: HTTP {response.status_code}: {_reason(response)}", 401)
        self._answer("PUT", path.name, response)

    def post_webhook(self, url: str, body: Mapping[str, Any]) -> None:
        """One POST of a JSON body to a webhook (Slack, Discord); no auth header."""
        try:
            response = self._client.post(url, json=dict(body))
        except httpx.TransportError as exc:
            raise Transient(f"webhook: {type(exc).__name__}: {exc}") from None
        self._answer("WEBHOOK", "", response)

    # -- retried calls --------------------------------------------------------------------------------

    def delay(self, attempt: int, fault: Transient) -> float:
        """How long to wait before the next attempt: jittered exponential backoff, or Retry-After."""
        if fault.retry_after is not None:
            return fault.retry_after + random.uniform(0.0, self.retry_base)
        ceiling = min(self.retry_cap, self.retry_base * (2 ** min(attempt, 30)))
        return random.uniform(ceiling / 2, ceiling)

    def retry(
        self,
        attempt: Any,
        *,
        stop: threading.Event | None = None,
        deadline: float | None = None,
        what: str = "request",
    ) -> Any:
        """Call ``attempt()`` until it does not raise :class:`Transient`.

        Raises:
            Abandoned: ``stop`` was set or ``deadline`` (a ``time.monotonic()`` value) passed first.
            ServerError: a permanent refusal, from ``attempt``.
        """
        tries = 0
        while True:
            if stop is not None and stop.is_set():
                raise Abandoned(what)
            try:
                out = attempt()
            except Transient as fault:
                self._note_failure(fault)
                wait = self.delay(tries, fault)
                tries += 1
                if deadline is not None and time.monotonic() + wait > deadline:
                    raise Abandoned(what) from None
                if stop is not None:
                    if stop.wait(wait):
                        raise Abandoned(what) from None
                else:
                    time.sleep(wait)
                continue
            self._note_success()
            return out

    def call(
        self,
        base: Base,
        path: str,
        body: Any = None,
        *,
        ndjson: bytes | None = None,
        idempotency_key: str | None = None,
        stop: threading.Event | None = None,
        deadline: float | None = None,
    ) -> Any:
        """:meth:`send`, retried while the fault is transient. See :meth:`retry`."""
        return self.retry(
            lambda: self.send(base, path, body=body, ndjson=ndjson, idempotency_key=idempotency_key),
            stop=stop,
            deadline=deadline,
            what=path,
        )

    def _note_failure(self, fault: Transient) -> None:
        with self._fail_lock:
            first, self._failing = not self._failing, True
        if first:
            logger.warning("mlop: the server is not answering (%s); retrying with backoff", fault)
        else:
            logger.debug("mlop: still retrying: %s", fault)

    def _note_success(self) -> None:
        with self._fail_lock:
            recovered, self._failing = self._failing, False
        if recovered:
            logger.warning("mlop: the server answers again")

    # -- the routes -----------------------------------------------------------------------------------

    def slug(self, timeout: float | None = None) -> str:
        """Check the key; return the organization's slug.

        Raises:
            AuthError: the server did not accept the key.
            ServerError: any other refusal or fault.
        """
        try:
            answer = self.send("api", "/api/slug", body={}, timeout=timeout)
        except AuthError as exc:
            raise AuthError("the server did not accept the API key", exc.status_code) from None
        except Transient as exc:
            raise ServerError(str(exc), exc.status) from None
        try:
            return str(answer["organization"]["slug"])
        except (KeyError, TypeError):
            raise ServerError("/api/slug answered without an organization slug") from None

    def attach(self, answer: Mapping[str, Any]) -> None:
        """Take the run id (and names) from a create or resume answer."""
        self.run_id = int(answer["runId"])
        if answer.get("projectName"):
            self.project = str(answer["projectName"])

    def ingest(self, route: str, lines: bytes, key: str, **kw: Any) -> Any:
        """Send NDJSON lines to ``/ingest/<route>``."""
        return self.call("ingest", f"/ingest/{route}", ndjson=lines, idempotency_key=key, **kw)

    def register(self, log_type: str, names: list[str], key: str, **kw: Any) -> Any:
        body = {"runId": self.run_id, "logType": log_type, "logName": names}
        return self.call("api", "/api/runs/logName/add", body, idempotency_key=key, **kw)

    def status(self, status: str, metadata: Any, key: str, **kw: Any) -> Any:
        meta = None if metadata is None else json.dumps(metadata)
        body = {"runId": self.run_id, "status": status, "statusMetadata": meta}
        return self.call("api", "/api/runs/status/update", body, idempotency_key=key, **kw)

    def trigger(self, timeout: float | None = None) -> Any:
        """One heartbeat; returns the answer (``{status, triggers}``)."""
        return self.send("py", "/api/runs/trigger", body={"runId": self.run_id}, timeout=timeout)


def _chunks(handle: Any, size: int = 1 << 20) -> Any:
    while True:
        block = handle.read(size)
        if not block:
            return
        yield block
