"""Files in S3 or an S3-compatible store: presigned URLs, so file bytes never pass through the server.

``--files s3://BUCKET/PREFIX`` keeps file ``id`` as the object ``PREFIX/<id // 1000>/<id>.bin``.
``POST /files`` answers presigned ``PUT`` URLs of the store (the announced size is signed, so the store
refuses any other length); the content route answers a redirect to a presigned ``GET``. The server learns
that an upload arrived by asking the store (``HEAD``) the first time the file is listed or read.
Credentials come from the usual AWS chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a profile, an
instance role); the region from ``AWS_REGION`` or ``AWS_DEFAULT_REGION``; ``MLOP_SERVER_S3_ENDPOINT``
points at an S3-compatible store. Needs ``boto3``: ``pip install "mlop-server[s3]"``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlsplit

import anyio.to_thread
from starlette.responses import RedirectResponse, Response

from mlop_server._errors import NotFound, Unavailable
from mlop_server._filestore import FileStore, object_name

__all__ = ["ENDPOINT_ENV", "S3FileStore"]

logger = logging.getLogger(__name__)

ENDPOINT_ENV: Final = "MLOP_SERVER_S3_ENDPOINT"
#: Seconds a download URL handed out by the content route stays valid (a read starts right away).
DOWNLOAD_TTL: Final = 900
#: HEAD requests to the store one process makes at once.
MAX_HEADS: Final = 16


def _disposition(kind: str, filename: str) -> str:
    quoted = quote(filename)
    if quoted != filename:
        return f"{kind}; filename*=utf-8''{quoted}"
    return f'{kind}; filename="{filename}"'


class S3FileStore(FileStore):
    """Objects ``<prefix>/<id // 1000>/<id>.bin`` in one bucket.

    Args:
        client: A boto3 S3 client.
        bucket: The bucket.
        prefix: The key prefix (no leading or trailing slash; may be empty).
    """

    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self._client = client
        self._bucket = bucket
        self._prefix = prefix
        self._heads: anyio.CapacityLimiter | None = None
        self.direct = True
        probe = urlsplit(self._presign("get_object", {"Key": self.key(0)}, 60))
        self.origin = f"{probe.scheme}://{probe.netloc}"

    @classmethod
    def from_env(cls, bucket: str, prefix: str, *, check: bool = False) -> S3FileStore:
        """A store with a client made from the environment (see the module's docstring).

        Raises:
            ValueError: boto3 is missing, there are no credentials, or (with ``check``) the bucket does
                not answer; the message says which.
        """
        try:
            import boto3  # type: ignore[import-untyped]
            import botocore.config  # type: ignore[import-untyped]
            import botocore.exceptions  # type: ignore[import-untyped]
        except ImportError:
            raise ValueError('--files s3://… needs boto3: pip install "mlop-server[s3]"') from None
        endpoint = os.environ.get(ENDPOINT_ENV) or None
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
        session = boto3.session.Session(region_name=region)
        if session.get_credentials() is None:
            raise ValueError(
                f"--files s3://{bucket}/{prefix}: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or run with an instance role)"
            )
        config = botocore.config.Config(
            signature_version="s3v4",
            s3={"addressing_style": "path" if endpoint else "auto"},
            connect_timeout=5,
            read_timeout=30,
            retries={"max_attempts": 3, "mode": "standard"},
        )
        client = session.client("s3", endpoint_url=endpoint, region_name=region or "us-east-1", config=config)
        if check:
            try:
                client.head_bucket(Bucket=bucket)
            except botocore.exceptions.ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                why = {
                    "404": "does not exist",
                    "NoSuchBucket": "does not exist",
                    "403": "refuses these credentials (access denied)",
                }.get(code, f"answered {code or 'an error'}")
                raise ValueError(f"--files s3://{bucket}/{prefix}: the bucket {bucket!r} {why}") from None
            except botocore.exceptions.BotoCoreError as exc:
                where = endpoint or "S3"
                raise ValueError(f"--files s3://{bucket}/{prefix}: cannot reach {where}: {exc}") from None
        return cls(client, bucket, prefix)

    def key(self, file_id: int) -> str:
        """The object key of file ``file_id``."""
        name = object_name(file_id)
        return f"{self._prefix}/{name}" if self._prefix else name

    def describe(self) -> str:
        return f"s3://{self._bucket}/{self._prefix}"

    def _presign(self, method: str, params: dict[str, Any], ttl: int) -> str:
        url: str = self._client.generate_presigned_url(
            method, Params={"Bucket": self._bucket, **params}, ExpiresIn=ttl
        )
        return url

    def upload_url(self, file_id: int, size: int, ttl: int) -> str:
        """A presigned ``PUT`` of exactly ``size`` bytes (``Content-Length`` is signed)."""
        return self._presign("put_object", {"Key": self.key(file_id), "ContentLength": size}, ttl)

    async def write(self, file_id: int, chunks: AsyncIterator[bytes], size: int) -> None:
        raise NotFound("this server keeps files in object storage: upload to the URL that POST /files gave")

    def put_file(self, file_id: int, source: Path) -> None:
        """Upload ``source`` as the object of ``file_id`` (multipart when large)."""
        self._client.upload_file(str(source), self._bucket, self.key(file_id))

    def _head(self, file_id: int) -> int | None:
        import botocore.exceptions

        try:
            answer = self._client.head_object(Bucket=self._bucket, Key=self.key(file_id))
        except botocore.exceptions.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                return None
            logger.warning("the object store answered %s to HEAD of file %d", code, file_id)
            raise Unavailable("the object store did not answer; retry later") from None
        except botocore.exceptions.BotoCoreError as exc:
            logger.warning("the object store did not answer a HEAD of file %d: %s", file_id, exc)
            raise Unavailable("the object store did not answer; retry later") from None
        return int(answer["ContentLength"])

    async def stored_size(self, file_id: int) -> int | None:
        if self._heads is None:  # made in the event loop
            self._heads = anyio.CapacityLimiter(MAX_HEADS)
        return await anyio.to_thread.run_sync(self._head, file_id, limiter=self._heads)

    def download(
        self, file_id: int, *, media_type: str, filename: str, inline: bool, headers: Mapping[str, str]
    ) -> Response:
        """A ``307`` to a presigned ``GET`` that makes the store answer with the file's type and name.

        The redirect itself is never cached (its URL is a credential for a while); the store's answer is
        on the store's origin, so nothing it holds runs as the dashboard's.
        """
        params = {
            "Key": self.key(file_id),
            "ResponseContentType": media_type,
            "ResponseContentDisposition": _disposition("inline" if inline else "attachment", filename),
            "ResponseCacheControl": "private, no-cache",
        }
        url = self._presign("get_object", params, DOWNLOAD_TTL)
        return RedirectResponse(
            url, status_code=307, headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
        )

    def close(self) -> None:
        self._client.close()
