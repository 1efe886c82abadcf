"""Which Lightning is installed (``lightning.pytorch`` or ``pytorch_lightning``), and this process's rank."""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["NoopRun", "global_rank", "logger_base"]

logger = logging.getLogger(__name__)


def logger_base() -> type[Any]:
    """Lightning's logger base class: from ``lightning.pytorch``, else from ``pytorch_lightning``.

    Lightning's trainers take any logger object, so a logger built on one namespace also works with the
    other's ``Trainer`` when both are installed (``lightning`` installs both).

    Raises:
        ModuleNotFoundError: neither namespace is installed.
    """
    try:
        from lightning.pytorch.loggers import Logger
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "lightning":
            raise
    else:
        return Logger
    try:
        from pytorch_lightning.loggers import Logger as LegacyLogger
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "pytorch_lightning":
            raise
        raise ModuleNotFoundError(
            "mlop-lightning needs Lightning: pip install 'mlop-lightning[lightning]'", name="lightning"
        ) from None
    return LegacyLogger


def global_rank() -> int:
    """The process's global rank as Lightning knows it (0 outside distributed training).

    Both Lightning namespaces keep the rank on ``lightning_utilities``' ``rank_zero_only``: read from the
    launcher's environment at import, then set by the strategy, so it is right in ``ddp_spawn`` workers
    too, where no ``RANK`` variable exists.
    """
    try:
        from lightning_utilities.core.rank_zero import rank_zero_only
    except ImportError:  # pragma: no cover - a dependency of both namespaces
        return 0
    rank = getattr(rank_zero_only, "rank", None)
    return int(rank) if rank is not None else 0


class NoopRun:
    """The experiment on ranks other than 0: every attribute is a method that does nothing.

    Attribute access is open-ended (``logger.experiment.anything(...)`` works), as with Lightning's own
    dummy experiment, so user code never branches on rank.
    """

    id = None
    name = None
    project = None
    dir = None
    status = "DISABLED"

    def __init__(self) -> None:
        self.config: dict[str, Any] = {}
        self.tags: list[str] = []

    def __repr__(self) -> str:
        return "<mlop.Run (no-op: not global rank 0)>"

    def _nothing(self, *args: Any, **kwargs: Any) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._nothing

    def __getitem__(self, index: Any) -> NoopRun:
        return self
