"""``mlop.Histogram``: the distribution of values (weights, gradients, predictions) at a step."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final

from mlop._data._buffers import copy_array
from mlop._data._common import as_array, numpy
from mlop._loggable import Items, Loggable, MediaSink

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["Histogram"]

logger = logging.getLogger("mlop")

_WHAT: Final = "mlop.Histogram"
DATA_TYPE: Final = "HISTOGRAM"
#: The most bins a histogram may have.
MAX_BINS: Final = 4096
#: Inputs up to this many values are counted at once; larger ones on a background thread.
_INLINE: Final = 1 << 12
_warned_nonfinite = False


def _is_pair(data: Any) -> bool:
    """Whether ``data`` is a ``(counts, edges)`` pair as ``numpy.histogram`` returns it."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        return False
    counts, edges = data
    try:
        return len(counts) + 1 == len(edges) and len(counts) > 0
    except TypeError:
        return False


class Histogram(Loggable):
    """A histogram, sent to the server as data (the protocol's ``HISTOGRAM`` type).

    Args:
        data: values (a sequence or an array of any shape), or a precomputed ``(counts, edges)`` pair
            such as ``numpy.histogram`` returns, with ``len(edges) == len(counts) + 1`` (uniform or not).
        bins: for values, the number of equal bins between the smallest and largest finite value, or the
            bin edges (increasing). Ignored for a pair.

    Non-finite values (NaN, infinities) are left out of the counts; :attr:`nonfinite` says how many, and
    the first time it happens mlop warns.

    Raises:
        ValueError: no values, a bin count outside 1..4096, edges that do not increase, negative counts.
        TypeError: ``data`` is not numeric.
    """

    log_type: ClassVar[str] = "HISTOGRAM"

    def __init__(self, data: Any, bins: int | Sequence[float] = 64) -> None:
        numpy(_WHAT)
        import numpy as np

        self.nonfinite = 0
        self._payload: dict[str, Any] | None = None
        self._values: npt.NDArray[Any] | None = None
        self._counts: npt.NDArray[Any] | None = None
        self._edges: npt.NDArray[Any] | None = None
        if _is_pair(data):
            counts = np.asarray(as_array(data[0], _WHAT), dtype=np.float64).ravel()
            edges = np.asarray(as_array(data[1], _WHAT), dtype=np.float64).ravel()
            if not np.all(np.isfinite(counts)) or (counts < 0).any():
                raise ValueError(f"{_WHAT}: counts must be finite and non-negative")
            self._check_edges(edges)
            self._counts, self._edges = np.rint(counts).astype(np.int64), edges
            return
        values = as_array(data, _WHAT)
        if values.dtype.kind not in "biuf":
            raise TypeError(f"{_WHAT} takes numbers, not an array of dtype {values.dtype}")
        if values.size == 0:
            raise ValueError(f"{_WHAT}: no values")
        if isinstance(bins, (int, np.integer)) and not isinstance(bins, bool):
            if not 1 <= int(bins) <= MAX_BINS:
                raise ValueError(f"{_WHAT}: bins must be between 1 and {MAX_BINS}, got {bins}")
            self._bins: int | npt.NDArray[Any] = int(bins)
        else:
            edges = np.asarray(as_array(bins, _WHAT), dtype=np.float64).ravel()
            self._check_edges(edges)
            self._bins = edges
        # A copy in the caller's dtype (a float32 gradient stays float32); counting converts what it must.
        self._values = copy_array(values).ravel()

    @staticmethod
    def _check_edges(edges: npt.NDArray[Any]) -> None:
        import numpy as np

        if edges.size < 2 or edges.size > MAX_BINS + 1:
            raise ValueError(f"{_WHAT}: between 2 and {MAX_BINS + 1} bin edges are needed, got {edges.size}")
        if not np.all(np.isfinite(edges)) or not np.all(np.diff(edges) > 0):
            raise ValueError(f"{_WHAT}: bin edges must be finite and increasing")

    def _count(self) -> None:
        global _warned_nonfinite
        import numpy as np

        values, self._values = self._values, None
        if values is None:
            return
        if values.dtype.kind == "b":
            values = values.astype(np.uint8)
        finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
        self.nonfinite = int(values.size - finite.size)
        if self.nonfinite and not _warned_nonfinite:
            _warned_nonfinite = True
            logger.warning(
                "mlop: a histogram left out %d non-finite values (NaN or infinite)", self.nonfinite
            )
        if isinstance(self._bins, int):
            if finite.size:
                low, high = float(finite.min()), float(finite.max())
            else:
                low, high = 0.0, 0.0
            if low == high:
                low, high = low - 0.5, high + 0.5
            counts, edges = np.histogram(finite, bins=self._bins, range=(low, high))
        else:
            counts, edges = np.histogram(finite, bins=self._bins)
        self._counts, self._edges = counts.astype(np.int64), edges

    def to_dict(self) -> dict[str, Any]:
        """The protocol's histogram payload: ``freq``, ``maxFreq``, ``bins``, ``shape``, ``type``, ``v``.

        ``bins`` is ``{"min", "max", "num"}`` with ``shape: "uniform"`` for equal bins, else the list of
        edges with ``shape: "generic"``.
        """
        if self._payload is not None:
            return self._payload
        import numpy as np

        self._count()
        assert self._counts is not None and self._edges is not None
        counts, edges = self._counts, self._edges
        widths = np.diff(edges)
        uniform = bool(np.allclose(widths, widths[0], rtol=1e-6, atol=0.0))
        freq = [int(c) for c in counts]
        self._payload = {
            "freq": freq,
            "maxFreq": max(freq),
            "bins": (
                {"min": float(edges[0]), "max": float(edges[-1]), "num": len(freq)}
                if uniform
                else [float(e) for e in edges]
            ),
            "shape": "uniform" if uniform else "generic",
            "type": "Histogram",
            "v": 1,
        }
        return self._payload

    def mlop_items(self, sink: MediaSink, key: str, step: int, time: float, index: int | None) -> Items:
        """One ``data`` item; large inputs are counted on a background thread."""
        if self._values is not None and self._values.size > _INLINE:
            sink.defer(lambda: [("data", (step, time, key, DATA_TYPE, self.to_dict()))], self._values.nbytes)
            return []
        return [("data", (step, time, key, DATA_TYPE, self.to_dict()))]
