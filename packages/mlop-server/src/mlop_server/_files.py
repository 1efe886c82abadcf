"""The folder of uploaded files. Names on disk come from file ids only; no request path reaches it."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from mlop_server._errors import BadRequest, TooLarge

__all__ = ["FileStore"]

logger = logging.getLogger(__name__)


class FileStore:
    """Stores each file as ``<root>/<id // 1000>/<id>.bin``.

    Args:
        root: The folder; created when missing.
    """

    def __init__(self, root: Path) -> None:
        self._root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, file_id: int) -> Path:
        """Where the bytes of file ``file_id`` are kept."""
        return self._root / f"{file_id // 1000:06d}" / f"{file_id}.bin"

    async def write(self, file_id: int, chunks: AsyncIterator[bytes], size: int) -> None:
        """Stream ``chunks`` into the file, which must come to exactly ``size`` bytes.

        The bytes go to a temporary file that replaces the stored one only when complete, so a broken
        upload never leaves a partial file behind.

        Raises:
            TooLarge: more than ``size`` bytes arrived.
            BadRequest: fewer than ``size`` bytes arrived.
        """
        target = self.path(file_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f"{file_id}.{secrets.token_hex(8)}.part")
        received = 0
        try:
            with part.open("wb") as out:
                async for chunk in chunks:
                    received += len(chunk)
                    if received > size:
                        raise TooLarge(f"the upload is larger than the {size} bytes announced")
                    out.write(chunk)
            if received != size:
                raise BadRequest(f"the upload has {received} bytes, {size} were announced")
            os.replace(part, target)
        finally:
            part.unlink(missing_ok=True)
