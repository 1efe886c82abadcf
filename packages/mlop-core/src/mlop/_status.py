"""How an exception ends a run: its final status and the protocol's error description.

Shared by the run (:mod:`mlop._op`), the process's exit handlers (:mod:`mlop._runs`) and integrations
that end a run on an error.
"""

from __future__ import annotations

import traceback
from types import TracebackType
from typing import Any

__all__ = ["error_metadata", "exception_status"]


def error_metadata(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> dict[str, Any]:
    """The protocol's error description of an exception (statusMetadata), secrets redacted: an error's
    message often quotes the URL, key or password it failed with."""
    from mlop._system._redact import Redactor

    redact = Redactor().text
    frames = [
        {
            "filename": f.filename,
            "lineno": f.lineno,
            "name": f.name,
            "line": redact(f.line) if f.line else f.line,
        }
        for f in traceback.extract_tb(tb)
    ]
    return {
        "type": exc_type.__name__,
        "message": redact(str(exc)),
        "frames": frames,
        "trace": redact("".join(traceback.format_exception(exc_type, exc, tb))),
    }


def exception_status(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> tuple[str, dict[str, Any]]:
    """How an exception ends a run: TERMINATED for Ctrl-C, FAILED for anything else, with its description."""
    status = "TERMINATED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED"
    return status, error_metadata(exc_type, exc, tb)
