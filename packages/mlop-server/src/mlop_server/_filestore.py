"""The interface of a file store (where uploaded bytes live), shared by the folder and the S3 stores."""

from __future__ import annotations

import abc
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from starlette.responses import Response

__all__ = ["FileStore", "object_name"]

logger = logging.getLogger(__name__)


def object_name(file_id: int) -> str:
    """The name of file ``file_id`` inside the store: ``<id // 1000>/<id>.bin`` (the same in both stores,
    so a folder and a bucket can be copied into each other as they are)."""
    return f"{file_id // 1000:06d}/{file_id}.bin"


class FileStore(abc.ABC):
    """Keeps the bytes of uploaded files, by file id.

    A store either receives the bytes through the server (:meth:`upload_url` answers None: the client
    ``PUT``s to the server's ``/uploads/{id}`` route, which calls :meth:`write`) or hands out URLs of its
    own, so that the bytes never pass through the server (object storage).
    """

    #: The origin (``scheme://host[:port]``) of the URLs the store hands out, or None when it hands out none.
    origin: str | None = None
    #: True when clients upload to the store itself: the server learns of an upload by asking the store.
    direct: bool = False

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the files are, for the server's start line (no credentials)."""

    def upload_url(self, file_id: int, size: int, ttl: int) -> str | None:
        """A URL the client ``PUT``s exactly ``size`` bytes to, valid ``ttl`` seconds; None: the server's
        own upload route."""
        return None

    @abc.abstractmethod
    async def write(self, file_id: int, chunks: AsyncIterator[bytes], size: int) -> None:
        """Store ``chunks``, which must come to exactly ``size`` bytes (the server's upload route)."""

    @abc.abstractmethod
    def put_file(self, file_id: int, source: Path) -> None:
        """Store the file at ``source`` as ``file_id`` (``migrate-data``: files of another server)."""

    @abc.abstractmethod
    async def stored_size(self, file_id: int) -> int | None:
        """The size of the stored bytes of ``file_id``, or None when they are not there."""

    @abc.abstractmethod
    def download(
        self, file_id: int, *, media_type: str, filename: str, inline: bool, headers: Mapping[str, str]
    ) -> Response:
        """The answer to a read of the file's content: the bytes, or a redirect to the store."""

    def close(self) -> None:  # noqa: B027 - most stores hold nothing to release
        """Release what the store holds."""
