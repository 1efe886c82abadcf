"""The types the hook contract shares with core: :class:`RankInfo` and the :class:`Run` protocol.

They live here, apart from the modules that produce them, so that :mod:`mlop.hookspecs` and
:mod:`mlop._hooks` need not import the run (:mod:`mlop._op`), which calls the hooks itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

__all__ = ["RankInfo", "Run"]


@dataclasses.dataclass(frozen=True)
class RankInfo:
    """A process's place in a distributed job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1


class Run(Protocol):
    """A run as hooks receive it: what :class:`mlop.Run` offers a plugin.

    The object passed is the :class:`mlop.Run` that ``mlop.init()`` returned.
    """

    @property
    def id(self) -> str:
        """The run's id."""

    @property
    def name(self) -> str:
        """The run's name."""

    @property
    def dir(self) -> Path:
        """The run directory."""

    @property
    def config(self) -> dict[str, Any]:
        """The run's config."""

    @property
    def primary(self) -> bool:
        """False on a rank other than 0 of a shared run, which does not log the user's values."""

    @property
    def step(self) -> int:
        """The step of the last values logged; -1 before the first ``log()``."""

    def log(
        self,
        data: Mapping[str, Any],
        step: int | None = None,
        commit: bool | None = None,
        timestamp: float | None = None,
    ) -> None:
        """Log a dict of values at a step."""
