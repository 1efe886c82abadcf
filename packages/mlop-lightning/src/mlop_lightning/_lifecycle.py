"""How a Lightning logger's run ends, and the small facts about runs the logger asks of them."""

from __future__ import annotations

import logging
import sys
from typing import Any, Final

import mlop
from mlop._status import exception_status

__all__ = ["end_abandoned", "lightning_status", "live", "live_run", "scalar"]

logger = logging.getLogger(__name__)

_COMPLETED: Final = frozenset({"success"})
_FAILED: Final = frozenset({"failed"})


def lightning_status(status: str) -> tuple[str, dict[str, Any] | None]:
    """The run status for Lightning's ``finalize`` status, with an error description when there is one.

    ``"success"`` is COMPLETED. ``"failed"`` is FAILED with the exception Lightning is handling (Lightning
    finalizes its loggers inside its ``except`` block), or TERMINATED for a Ctrl-C. Anything else
    (``"finished"``: a SLURM requeue signal) is TERMINATED: the process stops before its end.
    """
    if status in _COMPLETED:
        return "COMPLETED", None
    exc_type, exc, tb = sys.exc_info()
    if status in _FAILED and exc_type is not None and exc is not None:
        return exception_status(exc_type, exc, tb)
    message = f"Lightning finalized the logger with status {status!r}"
    metadata = {"type": "LightningStatus", "message": message, "frames": [], "trace": ""}
    return ("FAILED" if status in _FAILED else "TERMINATED"), metadata


def scalar(value: Any) -> float | int | None:
    """A metric's value as a plain number (a one-element tensor read now); None for anything else."""
    item = getattr(value, "item", None)
    if callable(item):
        try:
            value = item()
        except (RuntimeError, ValueError):  # not a one-element tensor
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def live(run: Any) -> bool:
    """Whether ``run`` has not ended (a copy of the logger, or the user, may have ended it)."""
    return getattr(run, "status", "RUNNING") == "RUNNING"


def live_run(run_dir: str | None) -> Any:
    """The live run of this process that lives in ``run_dir``, if any (a pickled copy's original's)."""
    if run_dir is None:
        return None
    for op in reversed(mlop.ops):
        if isinstance(op, mlop.Run) and op.primary and live(op) and str(op.dir) == run_dir:
            return op
    return None


def end_abandoned(run: Any) -> None:
    """End a run whose logger was garbage-collected (or whose process exits) without a finalize."""
    try:
        run.finish()
    except Exception:  # broad: called from the garbage collector or at exit, where nothing may raise
        logger.exception("mlop could not end the run of an abandoned logger")
