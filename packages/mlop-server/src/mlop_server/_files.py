"""The folder of uploaded files. Names on disk come from file ids only; no request path reaches it.

Files are 0600 and folders 0700: uploads are readable by the server's user only.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from mlop_server._errors import BadRequest, TooLarge

__all__ = ["FileStore"]

logger = logging.getLogger(__name__)


def _private_dir(path: Path) -> None:
    """Create ``path`` as a folder only this user can enter (0700), whatever the umask or its mode was."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != 0o700:
        os.chmod(path, 0o700)


class FileStore:
    """Stores each file as ``<root>/<id // 1000>/<id>.bin``.

    Args:
        root: The folder; created when missing.
    """

    def __init__(self, root: Path) -> None:
        self._root = root
        _private_dir(root)

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
        _private_dir(target.parent)
        part = target.with_name(f"{file_id}.{secrets.token_hex(8)}.part")
        received = 0
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.fchmod(fd, 0o600)  # whatever the umask
            with os.fdopen(fd, "wb") as out:
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
