"""The server's settings, as the command line gives them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ServerConfig"]

logger = logging.getLogger(__name__)

MIB = 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    """How one server process runs.

    Attributes:
        data_dir: Holds the database (``mlop-server.db``) and the uploaded files (``files/``).
        files: Where uploaded files go: a folder (several server processes may share it) or
            ``s3://BUCKET/PREFIX``; None: ``<data_dir>/files``.
        org: The organization slug answered by ``/api/slug`` and ``create``.
        public_url: The base URL put into run and upload URLs; by default the one the client used.
        heartbeat_timeout: Seconds of silence after which a RUNNING run becomes FAILED.
        reap_interval: Seconds between two passes of the reaper.
        max_body: Largest JSON or NDJSON body, in bytes (413 above).
        max_file_size: Largest upload, in bytes (rejected when asked for, 413 on the PUT).
        max_uploads: Uploads streamed at once (429 above).
        max_pending_writes: Writes waiting for the database before new ones answer 503.
        max_requests: Requests handled at once (body read, parsed, stored, answered) before new ones
            answer 503 with ``Retry-After``; slow or idle connections never count here.
        max_connections: Open connections; above it the server closes idle and slow ones (those that
            have not sent their headers, oldest first, from the address holding most) to admit new ones.
        header_timeout: Seconds a connection has, in total, to send a request line and headers.
        keep_alive: Seconds an idle keep-alive connection stays open (closed early under pressure).
        body_timeout: Seconds a client may stay silent while sending a body (408 after).
        upload_min_rate: Bytes per second a body or upload must average after its first ``body_timeout``
            seconds (408 below).
        upload_ttl: Seconds an upload URL stays valid.
        metric_points: The most points ``/api/runs/{id}/metrics`` answers without ``max_points``:
            longer series are downsampled to it, as ``max_points`` would.
        auth_burst: Failed key checks an address may make at once before it gets 429.
        auth_rate: Failed key checks per second an address earns back.
        db: The PostgreSQL database URL (``--db``); None keeps the data in SQLite under ``data_dir``.
        access_log: Where the access log goes, one JSON line per request: ``"-"`` for stderr, a file
            path, or None for no access log.
    """

    data_dir: Path
    files: str | None = None
    db: str | None = field(default=None, repr=False)  # its password stays out of every repr
    org: str = "local"
    public_url: str | None = None
    heartbeat_timeout: float = 150.0
    reap_interval: float = 15.0
    max_body: int = 64 * MIB
    max_file_size: int = 5 * 1024 * MIB
    max_uploads: int = 16
    max_pending_writes: int = 1024
    max_requests: int = 256
    max_connections: int = 2048
    header_timeout: float = 10.0
    keep_alive: float = 5.0
    body_timeout: float = 60.0
    upload_min_rate: int = 64 * 1024
    upload_ttl: int = 3600
    metric_points: int = 100_000
    auth_burst: int = 100
    auth_rate: float = 2.0
    access_log: str | None = None

    @property
    def database(self) -> Path:
        """The SQLite file."""
        return self.data_dir / "mlop-server.db"

    @property
    def files_dir(self) -> Path:
        """The folder of uploaded files (when ``files`` names no object store)."""
        if self.files and "://" not in self.files:
            return Path(self.files).expanduser().resolve()
        return self.data_dir / "files"
