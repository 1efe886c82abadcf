"""What a stream needs from the uploader that runs it: the :class:`StreamOwner` protocol.

:mod:`mlop._online._streams` takes its uploader through this protocol, and :mod:`mlop._online._uploader`
implements it, so that the uploader imports the streams and the streams import neither.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

from mlop._online._server import ServerInterface
from mlop._store import Store

__all__ = ["StreamOwner"]


class StreamOwner(Protocol):
    """The uploader as its streams see it: where to send, what the run holds, and what the streams share."""

    @property
    def server(self) -> ServerInterface:
        """The server interface every stream sends through."""

    @property
    def run_dir(self) -> Path:
        """The run directory."""

    @property
    def files_dir(self) -> Path:
        """Where the run's files are (the run directory, but for ``mlop ui``'s mirrors)."""

    @property
    def store_path(self) -> Path:
        """The run's store file; each stream opens its own connections to it."""

    @property
    def stop(self) -> threading.Event:
        """Set when the uploader is stopping."""

    @property
    def upload_id(self) -> str:
        """This upload's id: the first part of every ``Idempotency-Key``."""

    @property
    def webhook(self) -> str | None:
        """The default alert webhook."""

    @property
    def workers(self) -> int:
        """How many file uploads run at once."""

    def known(self, log_type: str) -> set[str]:
        """The names of ``log_type`` the server has already registered."""

    def register(self, names: dict[str, list[str]], key: str, store: Store) -> None:
        """Register the names the server has not seen yet."""

    def report_failure(self, stream: str, message: str) -> None:
        """Report that the server refused part of the run for good."""

    def key_refused(self, exc: Exception) -> None:
        """The server refused the API key (401/403): stop, and say so once."""

    def corrupt_record(self, stream: str, seq: int, kind: str) -> None:
        """A record of the store cannot be decoded; it is skipped."""

    def wait_drained(self, seq: int) -> None:
        """Block until every other stream sent all its records up to ``seq``."""

    def final_sent(self, status: str) -> None:
        """Record that the run's final status reached the server."""
