"""The pluggy plugin that mlop-torch registers under the entry-point group ``mlop``.

Every hook first checks that the user's program imported torch: without it no value can be a tensor, no
model a module, and no process group exist, so a program that never uses torch never pays for importing it.
"""

from __future__ import annotations

import logging
import sys
import weakref
from typing import TYPE_CHECKING, Any

from mlop import hookimpl

if TYPE_CHECKING:
    from mlop import Op, RankInfo

__all__ = [
    "mlop_convert",
    "mlop_graph",
    "mlop_rank",
    "mlop_run_finished",
    "mlop_watch",
]

logger = logging.getLogger(__name__)

#: Every live watch, by the run it logs to, so that a finished run leaves no hook behind.
_watches: weakref.WeakKeyDictionary[Any, list[Any]] = weakref.WeakKeyDictionary()


def _torch() -> Any | None:
    return sys.modules.get("torch")


class NoWatch:
    """The handle of a watch that records nothing (a rank other than 0 of a shared run)."""

    def remove(self) -> None:
        """Nothing to detach."""


@hookimpl
def mlop_rank() -> RankInfo | None:
    """The rank from ``torch.distributed`` once its default process group exists."""
    torch = _torch()
    if torch is None or "torch.distributed" not in sys.modules:
        return None
    from mlop_torch._rank import distributed_rank

    return distributed_rank()


@hookimpl
def mlop_convert(value: Any) -> Any | None:
    """A tensor as a number (one element) or a host numpy array; None for other values."""
    torch = _torch()
    if torch is None or not isinstance(value, torch.Tensor):
        return None
    from mlop_torch._convert import convert_tensor

    return convert_tensor(value)


@hookimpl
def mlop_watch(run: Op, model: Any, log: str | None, log_freq: int, log_graph: bool, bins: int) -> Any | None:
    """Watch a ``torch.nn.Module``; None for other models."""
    torch = _torch()
    if torch is None or not isinstance(model, torch.nn.Module):
        return None
    from mlop_torch._graph import unwrap
    from mlop_torch._watch import Watch, check_arguments, parameter_names

    check_arguments(log, log_freq, bins)
    if not getattr(run, "primary", True):
        return NoWatch()
    inner = unwrap(model)
    for earlier in _watches.get(run, []):
        if earlier.model is inner:  # watching a model again replaces its earlier watch
            earlier.remove()
    watches = [w for w in _watches.get(run, []) if w.hooks]
    taken = {name for w in watches for name in w.names}
    prefix = ""
    if taken.intersection(parameter_names(inner)):
        # Another watched model logs under the same names (two Linear layers, say): number this one.
        prefix = f"model{len(watches)}."
        logger.info(
            "mlop-torch: the parameters of this %s are logged as %s<name>", type(model).__name__, prefix
        )
    watch = Watch(run, model, log, log_freq, log_graph, bins, prefix=prefix)
    _watches[run] = [*watches, watch]
    return watch


@hookimpl
def mlop_graph(model: Any) -> dict[str, Any] | None:
    """The module tree of a ``torch.nn.Module``; None for other models."""
    torch = _torch()
    if torch is None or not isinstance(model, torch.nn.Module):
        return None
    from mlop_torch._graph import model_graph

    return model_graph(model)


@hookimpl
def mlop_run_finished(run: Op, status: str) -> None:
    """Detach every hook the run's watches still hold."""
    for watch in _watches.pop(run, []):
        watch.remove()
