"""Histograms of CPU tensors, counted on mlop's background workers from copies taken at the logging step.

Counting every gradient and parameter of a model on the CPU costs a few nanoseconds a value: for a model
of ten million parameters about as much as its training step. So a logging step only copies each tensor
(a fraction of a nanosecond a value) and logs the copy; the counting runs on the run's media workers, which
store the histograms at the step they were logged at, in logging order, and whose bound on pending bytes
makes the training thread wait, not fill memory, when a loop logs faster than they count. The step's
non-finite counts are numbers of one metrics row, written once the last histogram of the step is counted.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, ClassVar

from mlop import Histogram, Loggable
from mlop_torch._histogram import TensorHistogram, histograms

if TYPE_CHECKING:
    from mlop._loggable import Items, MediaSink

__all__ = ["CountLater", "StepCounts", "payload"]

logger = logging.getLogger(__name__)


def payload(result: TensorHistogram) -> dict[str, Any]:
    """The protocol's histogram payload of counted values."""
    return Histogram((result.counts, result.edges)).to_dict()


class StepCounts:
    """One logging step's histograms counted later: their non-finite counts, and whether they are done.

    Args:
        size: how many histograms of the step are counted later.
    """

    def __init__(self, size: int) -> None:
        self._done = threading.Condition()
        self._left = size
        self._running = 0  # handed to the workers and not counted yet
        self._values: dict[str, int] = {}

    def started(self) -> None:
        """One histogram of the step was handed to the workers."""
        with self._done:
            self._running += 1

    def add(self, key: str | None, count: int) -> dict[str, int] | None:
        """Record one histogram's count (``key`` None: none to report); the last one gets the full row."""
        with self._done:
            if key is not None:
                self._values[key] = count
            self._left -= 1
            self._running -= 1
            self._done.notify_all()
            return dict(self._values) if self._left == 0 and self._values else None

    def wait(self, timeout: float) -> bool:
        """Wait until every histogram handed to the workers is counted; False if ``timeout`` came first."""
        with self._done:
            return self._done.wait_for(lambda: self._running <= 0, timeout)


class Spares:
    """Copies whose histograms are counted, kept to take the next logging step's copies.

    Fresh memory costs a page fault per page on first touch, about as much as the copy itself, so a watch
    that logs every few steps reuses its copies' memory instead of allocating it anew each time.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: dict[tuple[int, Any], list[Any]] = {}

    def take(self, numel: int, dtype: Any) -> Any:
        """A spare one-dimensional tensor of ``numel`` values of ``dtype``, or None."""
        with self._lock:
            free = self._free.get((numel, dtype))
            return free.pop() if free else None

    def give(self, tensor: Any) -> None:
        with self._lock:
            self._free.setdefault((tensor.numel(), tensor.dtype), []).append(tensor)

    def clear(self) -> None:
        with self._lock:
            self._free.clear()


class CountLater(Loggable):
    """The histogram of a tensor copy, counted on a background worker when the record is logged.

    Args:
        values: a one-dimensional float copy of the tensor (see ``copy_values``), owned by this value.
        bins: bins per histogram.
        counts: the step's non-finite counts, shared by the step's histograms.
        always: report the non-finite count even when it is 0 (gradients).
        spares: where the copy goes once counted, for reuse; None: it is freed.
    """

    log_type: ClassVar[str] = "HISTOGRAM"

    def __init__(
        self, values: Any, bins: int, counts: StepCounts, always: bool, spares: Spares | None = None
    ) -> None:
        self._values: Any = values
        self._bins = bins
        self._counts = counts
        self._always = always
        self._spares = spares

    def mlop_items(self, sink: MediaSink, key: str, step: int, time: float, index: int | None) -> Items:
        values, self._values = self._values, None
        if values is None:  # logged before: its copy went with the first time
            return []
        bins, counts, always, spares = self._bins, self._counts, self._always, self._spares

        def work() -> Items:
            items: Items = []
            report: str | None = None
            result: TensorHistogram | None = None
            try:
                result = histograms([values], bins)[0]
            except Exception:  # broad: one tensor that cannot be counted must not lose the step's others
                logger.exception("mlop-torch could not count the histogram of %s", key)
            if spares is not None:
                spares.give(values)
            if result is not None:
                items.append(("data", (step, time, key, Histogram.log_type, payload(result))))
                if always or result.nonfinite:
                    report = f"{key}/nonfinite"
            row = counts.add(report, result.nonfinite if result is not None else 0)
            if row:
                items.append(("metrics", (step, time, row)))
            return items

        counts.started()
        sink.defer(work, values.numel() * values.element_size())
        return []
