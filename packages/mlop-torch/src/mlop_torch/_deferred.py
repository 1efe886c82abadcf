"""Histograms of CPU tensors, counted on mlop's background workers from copies taken at the logging step.

Counting every gradient and parameter of a model on the CPU costs a few nanoseconds a value: for a model
of ten million parameters about as much as its training step. So a logging step only copies each tensor
(about a nanosecond a value) and logs the copy; the counting runs on the run's media workers, which
store the histograms at the step they were logged at, in logging order, and whose bound on pending bytes
makes the training thread wait, not fill memory, when a loop logs faster than they count. The step's
non-finite counts are numbers of one metrics row, written once the last histogram of the step is counted.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, ClassVar

from mlop import Histogram, Loggable
from mlop_torch._histogram import TensorHistogram, copy_values, histograms

if TYPE_CHECKING:
    from mlop._loggable import Items, MediaSink

__all__ = ["Copies", "CountLater", "StepCounts", "payload"]

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


class Copies:
    """The copies of one watch's tensors, one per key, reused from one logging step to the next.

    Fresh memory costs a page fault per page on first touch, about as much as the copy itself, so a watch
    that logs every few steps copies each tensor into the memory of its previous copy, once that one is
    counted. Waiting for it, tensor by tensor, is the back-pressure that keeps one copy of each tensor in
    memory while the copies of the first tensors overlap the counting of the last.
    """

    def __init__(self, wait: float) -> None:
        self._changed = threading.Condition()
        self._wait = wait
        self._buffers: dict[str, Any] = {}
        self._busy: set[int] = set()  # id() of copies handed to the workers and not counted yet

    def copy(self, key: str, tensor: Any) -> Any:
        """A copy of ``tensor``'s values, in the memory of ``key``'s previous copy where it fits."""
        with self._changed:
            buffer = self._buffers.pop(key, None)
            if buffer is not None and not self._changed.wait_for(
                lambda: id(buffer) not in self._busy, self._wait
            ):
                buffer = None  # still not counted: leave it to its worker
        copy = copy_values(tensor, buffer)
        with self._changed:
            self._buffers[key] = copy
        return copy

    def started(self, copy: Any) -> None:
        with self._changed:
            self._busy.add(id(copy))

    def done(self, copy: Any) -> None:
        with self._changed:
            self._busy.discard(id(copy))
            self._changed.notify_all()

    def clear(self) -> None:
        with self._changed:
            self._buffers.clear()


class CountLater(Loggable):
    """The histogram of a tensor copy, counted on a background worker when the record is logged.

    Args:
        values: a one-dimensional float copy of the tensor (see ``copy_values``), owned by this value.
        bins: bins per histogram.
        counts: the step's non-finite counts, shared by the step's histograms.
        always: report the non-finite count even when it is 0 (gradients).
        copies: the watch's reused copies, ``values`` among them; None: ``values`` is freed once counted.
    """

    log_type: ClassVar[str] = "HISTOGRAM"

    def __init__(
        self, values: Any, bins: int, counts: StepCounts, always: bool, copies: Copies | None = None
    ) -> None:
        self._values: Any = values
        self._bins = bins
        self._counts = counts
        self._always = always
        self._copies = copies

    def mlop_items(self, sink: MediaSink, key: str, step: int, time: float, index: int | None) -> Items:
        values, self._values = self._values, None
        if values is None:  # logged before: its copy went with the first time
            return []
        bins, counts, always, copies = self._bins, self._counts, self._always, self._copies

        def work() -> Items:
            items: Items = []
            report: str | None = None
            result: TensorHistogram | None = None
            try:
                result = histograms([values], bins)[0]
            except Exception:  # broad: one tensor that cannot be counted must not lose the step's others
                logger.exception("mlop-torch could not count the histogram of %s", key)
            if copies is not None:
                copies.done(values)
            if result is not None:
                items.append(("data", (step, time, key, Histogram.log_type, payload(result))))
                if always or result.nonfinite:
                    report = f"{key}/nonfinite"
            row = counts.add(report, result.nonfinite if result is not None else 0)
            if row:
                items.append(("metrics", (step, time, row)))
            return items

        counts.started()
        if copies is not None:
            copies.started(values)
        try:
            sink.defer(work, values.numel() * values.element_size())
        except BaseException:  # never handed over: nothing may wait for it (run.log reports the error)
            counts.add(None, 0)
            if copies is not None:
                copies.done(values)
            raise
        return []
