"""The uploader's options: what it needs besides the run's store, passed as one JSON line on its stdin.

Kept apart from the uploader so that the training process builds them without importing httpx.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from mlop._settings import Settings

__all__ = ["Options"]


@dataclasses.dataclass
class Options:
    """Where and how the uploader sends a run."""

    urls: dict[str, str]
    api_key: str | None = dataclasses.field(default=None, repr=False)
    verify: bool = True
    proxy: str | None = None
    heartbeat: float = 5.0
    workers: int = 4
    finish_timeout: float = 30.0
    webhook: str | None = dataclasses.field(default=None, repr=False)
    resume: bool = False
    check_exists: bool = False
    batch_interval: float = 0.25
    retry_base: float = 0.25
    timeout: float = 30.0
    debug_level: str = "WARNING"

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> Options:
        """The options of a run's settings."""
        values: dict[str, Any] = {
            "urls": settings.urls(),
            "api_key": settings.api_key,
            "verify": not settings.insecure_disable_ssl,
            "proxy": settings.http_proxy,
            "heartbeat": settings.x_heartbeat_interval,
            "workers": settings.x_upload_workers,
            "finish_timeout": settings.x_finish_timeout,
            "webhook": settings.url_webhook,
            "resume": settings.resume,
            "debug_level": settings.debug_level,
        }
        values.update(overrides)
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Options:
        raw = json.loads(text)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})
