"""The errors the server answers with.

Every refusal is one :class:`Problem`, which the app turns into the protocol's error body
``{"error": "<kind>", "message": "<text>"}`` with its HTTP status::

    Problem                 any refusal, with its status code
    ├── BadRequest      400 a body or parameter that breaks the protocol (names the line and the field)
    ├── Unauthorized    401 a missing, unknown or revoked key, or a bad upload signature
    ├── Forbidden       403 a valid key without the right (cancel needs an admin key)
    ├── NotFound        404 no such run, key or file
    ├── Conflict        409 the request cannot apply to the current state
    ├── Timeout         408 the body did not arrive in time
    ├── TooLarge        413 a body or file over the configured cap
    ├── Unsupported     415 a body whose Content-Type is not JSON or NDJSON
    ├── TooMany         429 too many uploads at once, or too many failed keys (with Retry-After)
    └── Unavailable     503 the writer is behind; retry later (with Retry-After)
"""

from __future__ import annotations

import logging

__all__ = [
    "BadRequest",
    "Conflict",
    "Forbidden",
    "NotFound",
    "Problem",
    "Timeout",
    "TooLarge",
    "TooMany",
    "Unauthorized",
    "Unavailable",
    "Unsupported",
]

logger = logging.getLogger(__name__)


class Problem(Exception):
    """A request the server refuses, with the status and the error body it answers."""

    status = 500
    kind = "InternalServerError"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, str]:
        """The JSON error body: ``{"error": kind, "message": message}``."""
        return {"error": self.kind, "message": self.message}


class BadRequest(Problem):
    """The body or a parameter breaks the protocol."""

    status = 400
    kind = "BadRequest"

    def __init__(self, message: str, *, line: int | None = None, field: str | None = None) -> None:
        where = []
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
        self.line = line
        self.field = field


class Unauthorized(Problem):
    """No valid key (or no valid upload signature)."""

    status = 401
    kind = "Unauthorized"


class Forbidden(Problem):
    """A valid key that lacks the right for this route."""

    status = 403
    kind = "Forbidden"


class NotFound(Problem):
    """The run, key or file does not exist."""

    status = 404
    kind = "NotFound"


class Conflict(Problem):
    """The request cannot apply to the current state."""

    status = 409
    kind = "Conflict"


class Timeout(Problem):
    """The body did not arrive in time."""

    status = 408
    kind = "RequestTimeout"


class TooLarge(Problem):
    """A body or file over the configured cap."""

    status = 413
    kind = "PayloadTooLarge"


class Unsupported(Problem):
    """A body labelled with a Content-Type the route does not take."""

    status = 415
    kind = "UnsupportedMediaType"


class TooMany(Problem):
    """Too many concurrent uploads, or failed key checks; retry after ``retry_after`` seconds."""

    status = 429
    kind = "TooManyRequests"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(Problem):
    """The server is overloaded; retry after ``retry_after`` seconds."""

    status = 503
    kind = "ServiceUnavailable"

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after
