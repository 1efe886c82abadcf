"""Histograms of tensors, counted on the tensors' own device.

The counts are ``torch.histc`` over the finite values, between their smallest and largest value (widened
by half a unit either side when all values are equal), so a user can check them with ``torch.histc``.
Non-finite values are left out and counted apart, NaN and infinities separately, because a NaN gradient is
what a user most needs to see.

A batch of tensors costs two device-to-host copies per device, whatever its size: one for every tensor's
range, one for every tensor's counts. A tensor that holds a NaN or an infinity costs one copy more.

On the CPU the counts come from the same arithmetic as ``torch.histc``'s kernel (``(x - min) * bins /
(max - min)`` in the tensor's dtype, truncated, the top edge in the last bin), done with vectorised
element-wise operations and a ``bincount`` of small integers, a cache-sized chunk at a time: faster than
``torch.histc``'s scalar loop, and bin for bin the same counts. Other devices use ``torch.histc``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import torch

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = ["TensorHistogram", "copy_dtype", "copy_values", "flat_values", "histograms"]

logger = logging.getLogger(__name__)

_EXACT: Final = (torch.float32, torch.float64)
#: Device types counted by vectorised arithmetic (:func:`_cpu_counts`); the others use ``torch.histc``.
ARITHMETIC_DEVICES: frozenset[str] = frozenset({"cpu"})


@dataclasses.dataclass(frozen=True)
class TensorHistogram:
    """The counts of one tensor's finite values, its bin edges, and how many values were left out."""

    counts: npt.NDArray[Any]
    edges: npt.NDArray[Any]
    nan: int
    inf: int

    @property
    def nonfinite(self) -> int:
        """NaN and infinite values together."""
        return self.nan + self.inf


def flat_values(tensor: Any) -> Any:
    """The values of ``tensor`` as a detached, one-dimensional float32 or float64 tensor on its device.

    A distributed tensor gives its local shard, a sparse tensor its stored values.
    """
    value = _local(tensor)
    return value.to(copy_dtype(value)).reshape(-1)


def copy_values(tensor: Any, into: Any = None) -> Any:
    """What :func:`flat_values` gives, always as a copy of its own, made in one pass.

    Args:
        tensor: any tensor.
        into: a one-dimensional tensor to copy into, if it has the copy's size, dtype and device.
    """
    value = _local(tensor)
    dtype = copy_dtype(value)
    if into is None or (into.numel(), into.dtype, into.device) != (value.numel(), dtype, value.device):
        into = torch.empty(value.numel(), dtype=dtype, device=value.device)
    into.view(value.shape).copy_(value)
    return into


def copy_dtype(tensor: Any) -> Any:
    """The dtype of a tensor's values as counted: its own for float32 and float64, else float32."""
    return tensor.dtype if tensor.dtype in _EXACT else torch.float32


def _local(tensor: Any) -> Any:
    value = tensor.detach()
    if hasattr(value, "to_local"):  # a DTensor (FSDP2, tensor parallel): this rank's shard
        value = value.to_local()
    if value.is_sparse:
        value = value.coalesce().values()
    return value


def _edges(low: float, high: float, bins: int) -> npt.NDArray[Any]:
    import numpy as np

    return np.linspace(low, high, bins + 1, dtype=np.float64)


def _range(low: float, high: float) -> tuple[float, float]:
    return (low - 0.5, high + 0.5) if low == high else (low, high)


def histograms(tensors: Sequence[Any], bins: int) -> list[TensorHistogram | None]:
    """Count each tensor's values into ``bins`` equal bins between its finite extremes.

    Args:
        tensors: torch tensors of any shape, dtype and device.
        bins: the number of bins.

    Returns:
        One histogram per tensor, in order; None for an empty tensor or one without storage (meta).
    """
    flats = [flat_values(t) for t in tensors]
    out: list[TensorHistogram | None] = [None] * len(flats)
    by_device: dict[Any, list[int]] = {}
    for index, flat in enumerate(flats):
        if flat.numel() and not flat.is_meta:  # a meta tensor (deferred init) has no values yet
            by_device.setdefault(flat.device, []).append(index)
    for indices in by_device.values():
        for index, result in zip(indices, _count_device([flats[i] for i in indices], bins), strict=True):
            out[index] = result
    return out


def _count_device(flats: list[Any], bins: int) -> list[TensorHistogram]:
    """Histograms of non-empty flat tensors that share one device."""
    extremes = torch.stack([torch.stack(torch.aminmax(f)).to(torch.float64) for f in flats])
    ranges: list[list[float]] = extremes.cpu().tolist()  # the first device-to-host copy
    values = list(flats)
    nan = [0] * len(flats)
    inf = [0] * len(flats)
    for index, (low, high) in enumerate(ranges):
        if low - low != 0.0 or high - high != 0.0:  # NaN propagates into both; an infinity into one
            values[index], ranges[index], nan[index], inf[index] = _finite(flats[index])
    if flats[0].device.type in ARITHMETIC_DEVICES:
        scratch = _Scratch()
        counts = torch.stack(
            [
                _cpu_counts(v, bins, *_range(low, high), scratch)
                for v, (low, high) in zip(values, ranges, strict=True)
            ]
        )
    else:
        counts = torch.stack(
            [torch.histc(v, bins, *_range(low, high)) for v, (low, high) in zip(values, ranges, strict=True)]
        )
    host = counts.cpu().numpy()  # the second device-to-host copy
    import numpy as np

    return [
        TensorHistogram(
            counts=np.rint(host[i]).astype(np.int64),
            edges=_edges(*_range(*ranges[i]), bins),
            nan=nan[i],
            inf=inf[i],
        )
        for i in range(len(flats))
    ]


def _finite(flat: Any) -> tuple[Any, list[float], int, int]:
    """The finite values of ``flat``, their range, and the NaN and infinite values left out."""
    finite = flat[torch.isfinite(flat)]
    left = torch.stack([torch.isnan(flat).sum(), torch.isinf(flat).sum()]).to(torch.float64)
    if finite.numel():
        stats = torch.cat([left, torch.stack(torch.aminmax(finite)).to(torch.float64)]).cpu().tolist()
    else:
        stats = [*left.cpu().tolist(), 0.0, 0.0]
    return finite, stats[2:], int(stats[0]), int(stats[1])


class _Scratch:
    """One buffer per dtype, grown as needed and reused across the tensors of a batch."""

    def __init__(self) -> None:
        self._buffers: dict[Any, Any] = {}

    def take(self, size: int, dtype: Any) -> Any:
        buffer = self._buffers.get(dtype)
        if buffer is None or buffer.numel() < size:
            buffer = self._buffers[dtype] = torch.empty(size, dtype=dtype)
        return buffer[:size]


#: Values counted per pass on the CPU: their positions (a 1 MiB float buffer) stay in the core's cache
#: between the passes. Smaller chunks cost more in Python than they save (and, on a background worker,
#: in waits for the interpreter lock).
CHUNK: Final = 1 << 18
#: Inputs from this many values on are counted two bin numbers at a time (see _cpu_counts).
_PAIRED: Final = 1 << 14


def _cpu_counts(values: Any, bins: int, low: float, high: float, scratch: _Scratch) -> Any:
    """``torch.histc(values, bins, low, high)`` for values within [low, high], by its kernel's arithmetic.

    The kernel's bin is ``int((x - low) * bins / (high - low))``, the top edge's bin ``bins`` folded into
    the last one. With a power-of-two ``bins`` the product is exact, so dividing by ``(high - low) / bins``
    (exact too) rounds the same and saves a pass.

    Below 128 bins the bin numbers are cast to signed bytes (a vectorised conversion, unlike the one to
    unsigned bytes) and, for long inputs, counted two at a time: each pair of bytes read as one 16-bit
    number counted among ``(bins + 1) * 256``, whose row and column sums give back the counts. Neighbouring
    values, often in the same bin, then rarely add to the same counter one after the other.
    """
    dtype = values.dtype
    left = torch.tensor(low, dtype=dtype)
    span = float(torch.tensor(high, dtype=dtype) - left)  # computed in the dtype, as the kernel does
    start = float(left)
    exact = bins & (bins - 1) == 0 and span / bins > 1e-30  # far from the dtype's subnormals: exact
    width = span / bins
    size = min(values.numel(), CHUNK)
    small = bins < 128
    paired = small and values.numel() >= _PAIRED
    buffer = scratch.take(size, dtype)
    indices = scratch.take(size, torch.int8 if small else torch.uint8 if bins < 256 else torch.int32)
    counts = torch.zeros(bins + 1, dtype=torch.int64)
    pairs = torch.zeros((bins + 1) * 256, dtype=torch.int64) if paired else None
    for part in values.split(CHUNK):
        length = part.numel()
        positions = torch.sub(part, start, out=buffer[:length])
        if exact:
            positions.div_(width)
        else:
            positions.mul_(bins).div_(span)
        index = indices[:length].copy_(positions)  # truncation, as the kernel's cast
        if small:
            index = index.view(torch.uint8)  # the same bytes: bin numbers are below 128
        if pairs is not None:
            even = length - length % 2
            pairs += torch.bincount(index[:even].view(torch.int16), minlength=pairs.numel())
            index = index[even:]
        counts += torch.bincount(index, minlength=bins + 1)
    if pairs is not None:
        grid = pairs.view(bins + 1, 256)
        counts += grid.sum(1) + grid.sum(0)[: bins + 1]
    counts[bins - 1] += counts[bins]
    return counts[:bins].to(torch.float32)
