"""Which Lightning is installed (``lightning.pytorch`` or ``pytorch_lightning``), and this process's rank."""

from __future__ import annotations

import logging
import sys
from typing import Any

__all__ = ["NoopRun", "agree_with_rank_zero", "dummy_experiment", "global_rank", "logger_base"]

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


def dummy_experiment(base: type[Any]) -> Any:
    """Lightning's ``DummyExperiment`` of the namespace ``base`` (a Logger class) comes from.

    Lightning's loggers return it from ``experiment`` on ranks other than 0 (``rank_zero_experiment``), and
    code written for them checks for it; every attribute is a method that does nothing.
    """
    module = sys.modules[base.__module__]
    dummy = getattr(module, "DummyExperiment", None)
    if dummy is None:  # pragma: no cover - both namespaces export it from their logger module
        return NoopRun()
    return dummy()


def agree_with_rank_zero(value: str) -> str | None:
    """Rank 0's ``value``, sent to every rank by a broadcast of the default process group.

    A collective call: every rank of the group must make it at the same point (Lightning reads every
    logger's ``experiment`` on every rank while it sets up, which is where the logger calls this).

    Returns:
        Rank 0's value; None when there is no process group of more than one process.
    """
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - Lightning depends on torch
        return None
    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() < 2:
        return None
    box: list[Any] = [value]
    dist.broadcast_object_list(box, src=0)
    return str(box[0])


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
