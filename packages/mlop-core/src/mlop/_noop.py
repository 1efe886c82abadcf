"""The run that other ranks (and ``disabled`` mode) get: every method does nothing."""

from __future__ import annotations

from typing import Any

from mlop._settings import Settings
from mlop._summary import Summary

__all__ = ["NoopOp"]


class NoopOp:
    """A stand-in for :class:`mlop.Run` whose methods do nothing, so user code never branches on rank."""

    status = "DISABLED"
    dir = None
    resumed = False

    def __init__(self, settings: Settings, config: dict[str, Any], tags: list[str]) -> None:
        self.settings = settings
        self.id = settings.run_id or "disabled"
        self.name = settings.name or self.id
        self.project = settings.project
        self.config = config
        self.tags = tags
        self.summary = Summary(None)  # kept in this object only, as every other value here
        self._forked = self._closed = False

    def __repr__(self) -> str:
        return f"<mlop.Run (disabled) {self.project}/{self.name}>"

    def _nothing(self, *args: Any, **kwargs: Any) -> None:
        return None

    log = update_config = add_tags = remove_tags = watch = unwatch = log_graph = alert = _nothing

    def finish(self, code: int | None = None) -> None:
        from mlop import _runs

        _runs.forget(self)

    def _end(self, status: str, metadata: object) -> None:
        self.finish()

    def __enter__(self) -> NoopOp:
        return self

    def __exit__(self, *exc: object) -> None:
        return None
