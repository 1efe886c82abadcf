"""``run.watch(model)``: histograms of gradients and parameters, and the model graph.

The clock is the optimizer: a global step pre-hook of ``torch.optim`` fires before every optimizer step,
and the first optimizer seen stepping any of the model's parameters becomes the model's clock. Before its
step number 0, ``log_freq``, ``2 * log_freq``... the gradients are final (under DistributedDataParallel
already averaged across ranks, under a gradient scaler already unscaled) and the parameters are those that
produced them. All of one step's histograms go to the run in one ``log`` call, at the user's current step:
when the user logged since the model's last forward pass (``log`` before ``optimizer.step()``), that is the
step logged last; otherwise (``log`` after ``optimizer.step()``, the usual loop) the values of this step are
still to come, and the histograms join them (``commit=False``) instead of taking a step of their own.
Between logging steps the hooks return after a comparison and a counter increment.
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any, Final

from torch.optim.optimizer import register_optimizer_step_pre_hook

from mlop_torch._graph import GraphCapture, is_compiled, model_graph, module_key, no_trace, unwrap
from mlop_torch._histogram import TensorHistogram, histograms

if TYPE_CHECKING:
    from mlop import Op

__all__ = ["LOG_CHOICES", "Watch", "check_arguments", "parameter_names"]

logger = logging.getLogger(__name__)

LOG_CHOICES: Final = ("gradients", "parameters", "all", None)
_MAX_BINS: Final = 4096


def check_arguments(log: str | None, log_freq: int, bins: int) -> None:
    """Raise at once for arguments ``watch`` cannot use.

    Raises:
        ValueError: ``log`` is not one of :data:`LOG_CHOICES`, ``log_freq`` is below 1, ``bins`` is
            outside 1..4096.
    """
    if log not in LOG_CHOICES:
        raise ValueError(f"watch(log=...) takes 'gradients', 'parameters', 'all' or None, not {log!r}")
    if isinstance(log_freq, bool) or not isinstance(log_freq, int) or log_freq < 1:
        raise ValueError(f"watch(log_freq=...) must be a positive integer, got {log_freq!r}")
    if isinstance(bins, bool) or not isinstance(bins, int) or not 1 <= bins <= _MAX_BINS:
        raise ValueError(f"watch(bins=...) must be an integer between 1 and {_MAX_BINS}, got {bins!r}")


def parameter_names(model: Any) -> list[str]:
    """The names under which the trainable parameters of an (unwrapped) module are logged."""
    return [module_key(n) for n, p in model.named_parameters() if p.requires_grad]


class Watch:
    """The handle ``run.watch`` returns: it owns every hook on one model; :meth:`remove` detaches them.

    Args:
        run: the run that receives the histograms and the graph.
        model: a ``torch.nn.Module``, wrapped or not.
        log: ``"gradients"``, ``"parameters"``, ``"all"`` or None.
        log_freq: log every this many optimizer steps, starting with the first.
        log_graph: record the graph on the model's first forward pass.
        bins: bins per histogram.
        prefix: put before every parameter name (told apart from another watched model's names).
    """

    def __init__(
        self,
        run: Op,
        model: Any,
        log: str | None,
        log_freq: int,
        log_graph: bool,
        bins: int,
        prefix: str = "",
    ) -> None:
        compiled = is_compiled(model)
        self.model = unwrap(model)
        self.log_freq = log_freq
        self.bins = bins
        self.gradients = log in ("gradients", "all")
        self.parameters = log in ("parameters", "all")
        self.steps = 0
        self.failures = 0  # logging steps that failed: the first is logged with its trace, the rest quietly
        self._run: weakref.ReferenceType[Op] = weakref.ref(run)
        self._named = [
            (prefix + module_key(n), p) for n, p in self.model.named_parameters() if p.requires_grad
        ]
        self._ids = frozenset(id(p) for _, p in self._named)
        self._clock: weakref.ReferenceType[Any] | None = None
        self._others: weakref.WeakSet[Any] = weakref.WeakSet()
        self._step_hook: Any = None
        self._forward_hook: Any = None
        self._forward_step: int | None = None  # the run's last step when the model last ran forward
        self._graph: GraphCapture | None = None
        if (self.gradients or self.parameters) and self._named:
            # Outside torch.compile's tracing (a compiled model or optimizer step): plain Python bookkeeping.
            self._step_hook = register_optimizer_step_pre_hook(no_trace(self._on_step))
            self._forward_hook = self.model.register_forward_pre_hook(no_trace(self._on_forward))
        if log_graph and compiled:
            # Hooks on every module would break a compiled forward into pieces: describe it statically.
            self._log_graph(model_graph(self.model))
        elif log_graph:
            self._graph = GraphCapture(self.model, self._log_graph)

    @property
    def names(self) -> list[str]:
        """The names under which the model's parameters are logged (``grad/<name>``, ``param/<name>``)."""
        return [name for name, _ in self._named]

    @property
    def hooks(self) -> int:
        """How many hooks are still attached (0 after :meth:`remove`)."""
        graph = self._graph.hooks if self._graph is not None else 0
        return graph + (self._step_hook is not None) + (self._forward_hook is not None)

    def remove(self) -> None:
        """Detach every hook; the model is left as it was before ``watch``."""
        if self._step_hook is not None:
            self._step_hook.remove()
            self._step_hook = None
        if self._forward_hook is not None:
            self._forward_hook.remove()
            self._forward_hook = None
        if self._graph is not None:
            self._graph.remove()
            self._graph = None

    # -- the graph ----------------------------------------------------------------------------------------

    def _log_graph(self, graph: dict[str, Any]) -> None:
        run = self._run()
        if run is not None:
            run.log_graph(graph)

    # -- the optimizer clock ------------------------------------------------------------------------------

    def _ticks(self, optimizer: Any) -> bool:
        """Whether ``optimizer`` is the model's clock; the first one to hold its parameters becomes it."""
        clock = self._clock() if self._clock is not None else None
        if clock is optimizer:
            return True
        if clock is not None or optimizer in self._others:
            return False
        ids = self._ids
        if any(id(p) in ids for group in optimizer.param_groups for p in group["params"]):
            self._clock = weakref.ref(optimizer)
            return True
        self._others.add(optimizer)
        return False

    def _on_forward(self, module: Any, args: Any) -> None:
        run = self._run()
        self._forward_step = run.step if run is not None else None

    def _on_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        try:
            if not self._ticks(optimizer):
                return
            step, self.steps = self.steps, self.steps + 1
            if step % self.log_freq:
                return
            self.record()
        except Exception:  # broad: a failing histogram must never stop the user's optimizer step
            self.failures += 1
            if self.failures == 1:
                logger.exception("mlop-torch could not log the histograms of this step")
            else:
                logger.debug("mlop-torch could not log the histograms of this step", exc_info=True)

    # -- the histograms -----------------------------------------------------------------------------------

    def record(self) -> None:
        """Log the histograms of the model's gradients and/or parameters now, in one record."""
        run = self._run()
        if run is None:
            return
        record: dict[str, Any] = {}
        if self.gradients:
            named = [(n, p.grad) for n, p in self._named if p.grad is not None]
            self._add(record, "grad", named, always_count=True)
        if self.parameters:
            self._add(record, "param", [(n, p) for n, p in self._named], always_count=False)
        if not record:
            return
        step = run.step
        if step >= 0 and self._forward_step is not None and step != self._forward_step:
            run.log(record, step=step)  # the user logged this step's values already
        else:
            run.log(record, commit=False)  # they are still to come: join them

    def _add(
        self, record: dict[str, Any], prefix: str, named: list[tuple[str, Any]], always_count: bool
    ) -> None:
        from mlop import Histogram

        results: list[TensorHistogram | None] = histograms([t for _, t in named], self.bins)
        for (name, _), result in zip(named, results, strict=True):
            if result is None:
                continue
            key = f"{prefix}/{name}"
            histogram = Histogram((result.counts, result.edges))
            histogram.nonfinite = result.nonfinite
            record[key] = histogram
            if always_count or result.nonfinite:
                record[f"{key}/nonfinite"] = result.nonfinite
