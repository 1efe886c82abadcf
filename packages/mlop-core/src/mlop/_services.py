"""Background services that live as long as a run: the system monitor, console capture and the like.

``start_services`` is called by ``init()`` once the run exists; each service's ``stop()`` is called by
``finish()`` before the final flush, newest first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from mlop._op import Op

__all__ = ["Service", "start_services"]


class Service(Protocol):
    """Something a run started and must stop."""

    def stop(self) -> None: ...


def start_services(op: Op) -> list[Service]:
    """Start the services the run's settings ask for."""
    services: list[Service] = []
    return services
