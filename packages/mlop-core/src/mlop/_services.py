"""Background services that live as long as a run: the system monitor, console capture and the like.

``start_services`` is called by ``init()`` once the run exists; each service's ``stop()`` is called by
``finish()`` before the final flush, newest first. It also records the run's environment
(``systemMetadata``) once. None of it may fail ``init()``: a part that cannot start is logged and skipped.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mlop._op import Op
    from mlop._rank import RankInfo
    from mlop._system._gpu import Nvml
    from mlop._system._redact import Redactor

__all__ = ["Service", "start_services"]

logger = logging.getLogger(__name__)


class Service(Protocol):
    """Something a run started and must stop."""

    def stop(self) -> None: ...


def start_services(op: Op) -> list[Service]:
    """Record the environment and start the system monitor and console capture, as the settings ask.

    Args:
        op: the run, already registered, its writer running.

    Returns:
        The services started, oldest first.
    """
    from mlop._system import _gpu
    from mlop._system._redact import Redactor

    settings = op.settings
    services: list[Service] = []
    redactor = Redactor(extra=[settings.api_key])
    monitor = not settings.disable_system_metrics and settings.x_sys_sampling_interval > 0
    nvml = _gpu.load() if monitor else None
    _record_environment(op, redactor, nvml)
    rank = _shared_rank(op)
    if monitor:
        try:
            services.append(_start_monitor(op, nvml, rank))
        except Exception:  # broad: a broken psutil must cost the run its system metrics, not its start
            logger.exception("mlop could not start the system monitor; no system metrics for this run")
            if nvml is not None:
                nvml.close()
    if not settings.disable_console:
        try:
            services.append(_start_console(op, redactor, rank))
        except Exception:  # broad: as above, for console capture
            logger.exception("mlop could not start console capture; no console lines for this run")
    return services


def _record_environment(op: Op, redactor: Redactor, nvml: Nvml | None) -> None:
    from mlop._system._environment import collect

    settings = op.settings
    try:
        environment = collect(
            op.dir,
            redactor,
            nvml=nvml,
            env_vars=settings.capture_env_vars,
            git_diff=settings.capture_git_diff,
            started_at=time.time(),
        )
        op._writer.set_meta({"systemMetadata": environment})
        op._writer.flush()
    except Exception:  # broad: describing the machine is best effort
        logger.exception("mlop could not record the run's environment")


def _last_items(op: Op, kind: str) -> list[Any]:
    """The last item of ``kind`` a resumed run stored, read through a connection of our own."""
    if not op.resumed:
        return []
    from mlop._store import Store, unpack

    store = Store(op.dir)
    try:
        # Only the newest record: a long run's console may hold millions of lines.
        row = store._db.execute(
            "SELECT payload FROM records WHERE kind = ? ORDER BY seq DESC LIMIT 1", (kind,)
        ).fetchone()
        return unpack(row[0])[-1:] if row else []
    finally:
        store.close()


def _shared_rank(op: Op) -> RankInfo | None:
    """This process's rank when several ranks share one run (``shared=True``), else None."""
    if not op.settings.shared:
        return None
    from mlop import _hooks

    info = _hooks.rank()
    return info if info.world_size > 1 else None


def _start_monitor(op: Op, nvml: Nvml | None, rank: RankInfo | None) -> Service:
    """The monitor; ranks sharing a run log under ``sys/rank<r>/`` so their samples never collide."""
    from mlop._system._monitor import Sampler, SystemMonitor

    last = _last_items(op, "system")
    first = int(last[0][0]) + 1 if last else 0
    writer = op._writer
    prefix = f"sys/rank{rank.rank}/" if rank is not None else None

    def emit(index: int, when: float, values: dict[str, float]) -> None:
        if prefix is not None:
            values = {prefix + key[4:]: value for key, value in values.items()}
        writer.add("system", (index, when, values))

    sampler = Sampler(str(op.dir), nvml)
    return SystemMonitor(sampler, op.settings.x_sys_sampling_interval, emit, first).start()


def _start_console(op: Op, redactor: Redactor, rank: RankInfo | None) -> Service:
    """Console capture; ranks sharing a run tag their lines ``[rank r]`` and number them apart.

    Rank r of n numbers its lines r+1, r+1+n, r+1+2n, ...: unique in the run, in order per rank.
    """
    from mlop._system._console import ConsoleCapture

    last = _last_items(op, "logs")
    last_number = int(last[0][1]) if last else 0
    writer = op._writer
    if rank is None:
        first, stride, tag = last_number + 1, 1, ""
    else:
        stride = rank.world_size
        first = -(-last_number // stride) * stride + rank.rank + 1
        tag = f"[rank {rank.rank}] "

    def emit(when: float, number: int, level: str, message: str) -> None:
        writer.add("logs", (when, number, level, tag + message))

    capture = ConsoleCapture(
        emit, redactor.lines(), fd=op.settings.console_fd, first_line=first, line_step=stride
    )
    return capture.start()
