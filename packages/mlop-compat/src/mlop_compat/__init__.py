"""mlop-compat: the ways in from other trackers (drop-in layers and importers), and what they share.

- :mod:`mlop_compat.wandb`: ``import mlop.compat.wandb as wandb`` runs a wandb script on mlop.
- :mod:`mlop_compat.neptune`: ``enable()`` (or ``MLOP_NEPTUNE_COMPAT=1``) makes every
  ``neptune_scale.Run`` log to an mlop run as well, or to mlop alone.
- ``mlop import tensorboard LOGDIR``: TensorBoard event files become mlop runs
  (:mod:`mlop_compat._tensorboard`), a command this package adds through the ``mlop_add_commands`` hook
  (:mod:`mlop_compat.plugin`).

The old import paths (``mlop.compat``, ``mlop.compat.wandb``, ``mlop.compat.neptune``) are small modules in
mlop-core that resolve to these. None of these imports the library it stands in for unless asked, and
``import mlop`` imports none of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlop._exceptions import MlopError
from mlop_compat._version import __version__

__all__ = ["UnsupportedError", "UnsupportedFeatureError", "__version__", "log_at"]


class UnsupportedError(MlopError, NotImplementedError):
    """A call of the other library that the compatibility layer does not support.

    The message names the call, so that a script fails where it first needs something mlop lacks instead
    of losing data quietly.
    """


class UnsupportedFeatureError(UnsupportedError, AttributeError):
    """An attribute of the other library's module or run that the layer does not have.

    Also an :class:`AttributeError`, so that ``hasattr`` and ``getattr(obj, name, default)`` keep working.
    """


def log_at(run: Any, data: Mapping[str, Any], step: int, timestamp: float | None = None) -> None:
    """Log ``data`` at ``step`` without moving the run's own step counter.

    The layers keep their own step (wandb's ``run.step``, TensorBoard's per-event steps, Neptune's steps),
    and some values belong to an earlier step than the last one (a wandb metric with its own
    ``step_metric``, a TensorBoard tag written late). A plain ``run.log`` would warn about the lower step and
    move the counter; here the counter is set just below ``step`` for the call and restored after it.
    """
    counter = getattr(run, "_step", None)
    if not isinstance(counter, int):  # a run that does nothing (disabled mode, another rank)
        run.log(data if type(data) is dict else dict(data), step=step, timestamp=timestamp)
        return
    run._step = min(counter, step)
    try:
        run.log(data if type(data) is dict else dict(data), step=step, timestamp=timestamp)
    finally:
        run._step = max(counter, step + 1)
