"""Where uploaded files live: the folder store, and the store a ``--files`` value names.

``--files DIR`` (default ``<data>/files``) keeps the bytes in a folder, which several server processes may
share: names on disk come from file ids only (no request path reaches them) and a file appears whole, by
rename, or not at all. Files are 0600 and folders 0700: uploads are readable by the server's user only.
``--files s3://BUCKET/PREFIX`` keeps them in object storage instead (``_s3.S3FileStore``). The interface
both implement is ``_filestore.FileStore`` (re-exported here).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.responses import FileResponse, Response

from mlop_server._errors import BadRequest, TooLarge
from mlop_server._filestore import FileStore, object_name

if TYPE_CHECKING:
    from mlop_server._storage import FileRow, Storage

__all__ = [
    "FileStore",
    "LocalFileStore",
    "check_files_option",
    "confirm_uploads",
    "object_name",
    "open_file_store",
    "parse_files_option",
]

logger = logging.getLogger(__name__)

#: Files not yet recorded as uploaded that one read looks up in a direct store, at most.
MAX_CONFIRM = 256


def _private_dir(path: Path) -> None:
    """Create ``path`` as a folder only this user can enter (0700), whatever the umask or its mode was."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != 0o700:
        os.chmod(path, 0o700)


class LocalFileStore(FileStore):
    """Stores each file as ``<root>/<id // 1000>/<id>.bin``.

    Args:
        root: The folder; created when missing. Several server processes may share it.
    """

    def __init__(self, root: Path) -> None:
        self._root = root
        _private_dir(root)

    def describe(self) -> str:
        return str(self._root)

    def path(self, file_id: int) -> Path:
        """Where the bytes of file ``file_id`` are kept."""
        return self._root / object_name(file_id)

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

    def put_file(self, file_id: int, source: Path) -> None:
        """Copy ``source`` in (0600), whole or not at all."""
        target = self.path(file_id)
        _private_dir(target.parent)
        part = target.with_name(f"{file_id}.{secrets.token_hex(8)}.part")
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as out, source.open("rb") as src:
                shutil.copyfileobj(src, out, 1024 * 1024)
            os.replace(part, target)
        finally:
            part.unlink(missing_ok=True)

    async def stored_size(self, file_id: int) -> int | None:
        try:
            return self.path(file_id).stat().st_size
        except FileNotFoundError:
            return None

    def download(
        self, file_id: int, *, media_type: str, filename: str, inline: bool, headers: Mapping[str, str]
    ) -> Response:
        return FileResponse(
            self.path(file_id),
            media_type=media_type,
            filename=filename,
            content_disposition_type="inline" if inline else "attachment",
            headers=dict(headers),
        )


def parse_files_option(value: str | None, data_dir: Path) -> tuple[str, Path | tuple[str, str]]:
    """Check a ``--files`` value: ``("local", folder)`` or ``("s3", (bucket, prefix))``.

    Raises:
        ValueError: the value is not a folder or an ``s3://BUCKET/PREFIX`` URL (the message says why).
    """
    if value is None or not value.strip():
        return "local", data_dir / "files"
    value = value.strip()
    scheme, sep, rest = value.partition("://")
    if not sep:
        return "local", Path(value).expanduser().resolve()
    if scheme.lower() != "s3":
        raise ValueError(f"--files {value!r}: give a folder or s3://BUCKET/PREFIX (not {scheme}://)")
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ValueError(f"--files {value!r}: the bucket is missing (s3://BUCKET/PREFIX)")
    if (
        not (3 <= len(bucket) <= 63)
        or not all(c.isalnum() or c in ".-" for c in bucket)
        or bucket != bucket.lower()
    ):
        raise ValueError(
            f"--files {value!r}: {bucket!r} is not a bucket name (3 to 63 lowercase letters, digits, . and -)"
        )
    prefix = prefix.strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise ValueError(f"--files {value!r}: the prefix has an empty, . or .. part")
    return "s3", (bucket, prefix)


def check_files_option(value: str | None, data_dir: Path) -> None:
    """Make sure a ``--files`` value can work, creating nothing: a folder this user may write (or create),
    or a bucket that answers with the credentials found.

    Raises:
        ValueError: it cannot; the message says why.
    """
    kind, where = parse_files_option(value, data_dir)
    if kind == "s3":
        open_file_store(value, data_dir, check=True).close()
        return
    assert isinstance(where, Path)
    existing = where
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"--files {where}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--files {where}: this user may not write in {existing}")


def open_file_store(value: str | None, data_dir: Path, *, check: bool = False) -> FileStore:
    """The store a ``--files`` value names (None: ``<data_dir>/files``).

    Args:
        value: A folder, or ``s3://BUCKET/PREFIX``.
        data_dir: The server's ``--data`` folder.
        check: For object storage, make sure the bucket answers now (a clear error at start).

    Raises:
        ValueError: the value is bad, ``boto3`` is missing, credentials are missing, or the bucket
            cannot be reached; the message says which and how to fix it.
    """
    kind, where = parse_files_option(value, data_dir)
    if kind == "local":
        assert isinstance(where, Path)
        return LocalFileStore(where)
    from mlop_server._s3 import S3FileStore

    assert isinstance(where, tuple)
    return S3FileStore.from_env(where[0], where[1], check=check)


async def confirm_uploads(files: FileStore, storage: Storage, rows: list[FileRow]) -> list[FileRow]:
    """``rows`` with the uploads that reached a direct store (object storage) recorded.

    The server never sees a direct upload, so a file not yet marked uploaded is looked up in the store; when
    its bytes are there, at the announced size, the row is marked uploaded (once; a later read finds it so).
    """
    if not files.direct:
        return rows
    pending = [row for row in rows if not row.uploaded][:MAX_CONFIRM]  # the rest on a later read
    if not pending:
        return rows
    sizes = await asyncio.gather(*(files.stored_size(row.id) for row in pending))
    arrived: dict[int, FileRow] = {}
    for row, size in zip(pending, sizes, strict=True):
        if size is None:
            continue
        if size != row.size:
            logger.warning("file %d holds %d bytes in the store, %d were announced", row.id, size, row.size)
            continue
        await storage.file_uploaded(row.id, size)
        arrived[row.id] = dataclasses.replace(row, uploaded=True)
    return [arrived.get(row.id, row) for row in rows]
