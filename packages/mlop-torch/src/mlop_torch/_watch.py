"""``run.watch(model)``: histograms of gradients and parameters, and the model graph.

The clock is the optimizer: a global step pre-hook of ``torch.optim`` fires before every optimizer step,
and the first optimizer seen stepping any of the model's parameters becomes the model's clock. Before its
step number 0, ``log_freq``, ``2 * log_freq``... the gradients are final (under DistributedDataParallel
already averaged across ranks, under a gradient scaler already unscaled) and the parameters are those that
produced them. All of one step's histograms go to the run in one ``log`` call, at the user's current step:
when the user logged since the model's last forward pass (``log`` before ``optimizer.step()``), that is the
step logged last; otherwise (``log`` after ``optimizer.step()``, the usual loop) the values of this step are
still to come, and the histograms join them (``commit=False``) instead of taking a step of their own.
Between logging steps the hooks return after a comparison and a counter increment. When torch leaves a
CPU idle, large CPU tensors are only copied at the logging step and counted on mlop's workers
(``mlop_torch._deferred``); the record carries the copies.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import TYPE_CHECKING, Any, Final

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from mlop._loggable import DEFAULT_MAX_PENDING
from mlop_torch._deferred import Copies, CountLater, StepCounts
from mlop_torch._graph import GraphCapture, is_compiled, model_graph, module_key, no_trace, unwrap
from mlop_torch._histogram import TensorHistogram, copy_dtype, copy_values, histograms

if TYPE_CHECKING:
    from mlop import Op

__all__ = ["LOG_CHOICES", "Watch", "check_arguments", "parameter_names"]

logger = logging.getLogger(__name__)

LOG_CHOICES: Final = ("gradients", "parameters", "all", None)
_MAX_BINS: Final = 4096
#: Tensors of up to this many values (and those on an accelerator) are counted at the logging step itself.
INLINE: Final = 1 << 14
#: A watch logging at least this often keeps its copies' memory for the next logging step (see Copies).
_REUSE_FREQ: Final = 16
#: The longest a logging step waits for the previous one's histograms to be counted.
_WAIT: Final = 60.0


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
        # Histograms counted later: the last logging step's, and the copies kept from step to step when
        # steps come often (else each step gets fresh copies, once the previous step's are counted).
        self._later: StepCounts | None = None
        self._copies = Copies(_WAIT) if log_freq <= _REUSE_FREQ else None
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
        if self._copies is not None:
            self._copies.clear()

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
        tensors: list[tuple[str, Any, bool]] = []  # key, tensor, its non-finite count always logged
        if self.gradients:
            tensors += [(f"grad/{n}", p.grad, True) for n, p in self._named if p.grad is not None]
        if self.parameters:
            tensors += [(f"param/{n}", p, False) for n, p in self._named]
        record = self._histograms(tensors)
        if not record:
            return
        step = run.step
        if step >= 0 and self._forward_step is not None and step != self._forward_step:
            run.log(record, step=step)  # the user logged this step's values already
        else:
            run.log(record, commit=False)  # they are still to come: join them

    def _histograms(self, tensors: list[tuple[str, Any, bool]]) -> dict[str, Any]:
        """The record of one logging step: large CPU tensors copied to be counted later, the rest counted."""
        from mlop import Histogram

        later = {key for key, tensor, _ in tensors if _counts_later(tensor)} if _spare_cpus() else set()
        if sum(_nbytes(t) for key, t, _ in tensors if key in later) > DEFAULT_MAX_PENDING:
            later = set()  # no room for a copy of everything: count now
        if later and self._later is not None and self._copies is None:
            # The previous step's copies are still being counted: wait, so that memory holds one step's.
            self._later.wait(_WAIT)
        now = [(key, tensor) for key, tensor, _ in tensors if key not in later]
        counted: dict[str, TensorHistogram | None] = dict(
            zip([k for k, _ in now], histograms([t for _, t in now], self.bins), strict=True)
        )
        step_counts = StepCounts(len(later))
        if later:
            self._later = step_counts
        copies = self._copies
        record: dict[str, Any] = {}
        for key, tensor, always in tensors:
            if key in later:
                copy = copies.copy(key, tensor) if copies is not None else copy_values(tensor)
                record[key] = CountLater(copy, self.bins, step_counts, always, copies)
                continue
            result = counted[key]
            if result is None:
                continue
            histogram = Histogram((result.counts, result.edges))
            histogram.nonfinite = result.nonfinite
            record[key] = histogram
            if always or result.nonfinite:
                record[f"{key}/nonfinite"] = result.nonfinite
        return record


def _counts_later(tensor: Any) -> bool:
    """Whether a tensor is counted on a background worker: a large one in CPU memory (see _deferred)."""
    return tensor.device.type == "cpu" and tensor.numel() > INLINE and not tensor.is_sparse


def _spare_cpus() -> bool:
    """Whether torch leaves CPUs of this process idle, on which mlop's workers can count.

    When torch's threads already use every CPU, counting later costs a copy and gains nothing: the
    counting competes with training either way.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    return torch.get_num_threads() < cpus


def _nbytes(tensor: Any) -> int:
    """The bytes of a tensor's copy (see ``copy_values``)."""
    return int(tensor.numel()) * int(copy_dtype(tensor).itemsize)
