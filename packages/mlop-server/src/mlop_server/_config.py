"""The server's settings, as the command line gives them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ServerConfig"]

logger = logging.getLogger(__name__)

MIB = 1024 * 1024


@dataclass(frozen=True)
class ServerConfig:
    """How one server process runs.

    Attributes:
        data_dir: Holds the database (``mlop-server.db``) and the uploaded files (``files/``).
        org: The organization slug answered by ``/api/slug`` and ``create``.
        public_url: The base URL put into run and upload URLs; by default the one the client used.
        heartbeat_timeout: Seconds of silence after which a RUNNING run becomes FAILED.
        reap_interval: Seconds between two passes of the reaper.
        max_body: Largest JSON or NDJSON body, in bytes (413 above).
        max_file_size: Largest upload, in bytes (rejected when asked for, 413 on the PUT).
        max_uploads: Uploads streamed at once (429 above).
        max_pending_writes: Writes waiting for the database before new ones answer 503.
        body_timeout: Seconds a client may stay silent while sending a body (408 after).
        upload_ttl: Seconds an upload URL stays valid.
    """

    data_dir: Path
    org: str = "local"
    public_url: str | None = None
    heartbeat_timeout: float = 150.0
    reap_interval: float = 15.0
    max_body: int = 64 * MIB
    max_file_size: int = 5 * 1024 * MIB
    max_uploads: int = 16
    max_pending_writes: int = 1024
    body_timeout: float = 60.0
    upload_ttl: int = 3600

    @property
    def database(self) -> Path:
        """The SQLite file."""
        return self.data_dir / "mlop-server.db"

    @property
    def files_dir(self) -> Path:
        """The folder of uploaded files."""
        return self.data_dir / "files"
