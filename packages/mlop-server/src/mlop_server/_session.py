"""Dashboard sessions: the signed, expiring cookie the dashboard gets once for a key.

The browser gives a key once (``POST /ui/session``) and gets a cookie that names the key by its id, with
an expiry, signed with HMAC-SHA256 under a secret derived from the server's signing secret. That secret
lives in the database, so every server process on the same database accepts the cookie; the key itself
is never in the cookie, and revoking the key ends its sessions.

Against cross-site requests the cookie is ``SameSite=Strict`` (a browser sends it only on requests from
the dashboard's own pages) and ``HttpOnly`` (no script reads it). On top of that the server takes it only
for reads (GET, HEAD) and for writes that carry the header ``X-Mlop-Dashboard``, which a cross-site form
cannot send and a cross-site script cannot send without a CORS preflight this server never approves.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from typing import Final

__all__ = [
    "COOKIE",
    "HEADER",
    "SESSION_SECONDS",
    "cookie_header",
    "expired_cookie_header",
    "session_key_id",
    "sign_session",
]

logger = logging.getLogger(__name__)

#: The cookie's name.
COOKIE: Final = "mlop_session"
#: The header the dashboard sends with every call; without it a write is not taken on the cookie.
HEADER: Final = "x-mlop-dashboard"
#: How long a session lasts, in seconds.
SESSION_SECONDS: Final = 12 * 3600
_VERSION: Final = "v1"


def _session_secret(secret: bytes) -> bytes:
    """A secret of its own for sessions, so that no session signature can pass as an upload's."""
    return hmac.new(secret, b"mlop dashboard session", hashlib.sha256).digest()


def _signature(secret: bytes, body: str) -> str:
    digest = hmac.new(_session_secret(secret), body.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign_session(secret: bytes, key_id: int, expires: int) -> str:
    """The cookie value of a session of key ``key_id`` that ends at ``expires`` (epoch seconds)."""
    body = f"{_VERSION}.{key_id}.{expires}"
    return f"{body}.{_signature(secret, body)}"


def session_key_id(secret: bytes, token: str, now: float) -> int | None:
    """The key id of a valid, unexpired session token, else None (forged, altered, expired or garbled)."""
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != _VERSION or not parts[1].isdigit() or not parts[2].isdigit():
        return None
    if len(parts[1]) > 18 or len(parts[2]) > 12:
        return None
    body = ".".join(parts[:3])
    if not hmac.compare_digest(_signature(secret, body), parts[3]):
        return None
    if int(parts[2]) <= now:
        return None
    return int(parts[1])


def cookie_header(token: str, *, secure: bool, max_age: int = SESSION_SECONDS) -> str:
    """The ``Set-Cookie`` value that starts a session."""
    flags = f"; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Strict"
    return f"{COOKIE}={token}{flags}{'; Secure' if secure else ''}"


def expired_cookie_header(*, secure: bool) -> str:
    """The ``Set-Cookie`` value that ends a session (logout)."""
    return cookie_header("", secure=secure, max_age=0)
