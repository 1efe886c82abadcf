"""A dependency-free reader of TensorBoard event files.

An event file is a sequence of TFRecords (a little-endian length, its masked CRC-32C, the bytes, their
masked CRC-32C), each holding one serialized ``Event`` protocol buffer. This module decodes the few
fields the importer needs with a minimal protobuf wire-format decoder, so that importing needs neither
TensorFlow nor TensorBoard nor protobuf:

- ``Event``: wall_time (1), step (2), summary (5).
- ``Summary.Value``: tag (1), simple_value (2), image (4), histo (5), audio (6), tensor (8), metadata (9).
- ``HistogramProto``, ``Summary.Image``, ``Summary.Audio``, ``TensorProto`` with its shape, and the plugin
  name in ``SummaryMetadata`` (TF2 writers put scalars, histograms, images and text in tensors and name
  the plugin only on the first value of each tag).

A record cut short at the end of a file (a writer still running, or killed) ends the reading before it,
so that a later import resumes there.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Final

__all__ = [
    "CorruptRecordError",
    "EventValue",
    "TensorBoardEvent",
    "parse_event",
    "read_events",
    "read_records",
]

_MASK_DELTA: Final = 0xA282EAD8


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE: Final = _crc_table()


def crc32c(data: bytes | memoryview) -> int:
    """CRC-32C (Castagnoli) of ``data``."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes | memoryview) -> int:
    """The masked CRC that TFRecord framing stores."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


class CorruptRecordError(ValueError):
    """A record whose checksum does not match: the file is damaged at that offset."""


def read_records(stream: BinaryIO, offset: int = 0, verify: bool = True) -> Iterator[tuple[bytes, int]]:
    """Yield each complete record of a TFRecord stream with the offset just past it.

    Args:
        stream: the file, opened in binary mode.
        offset: where to start (the end offset of the last record read before).
        verify: check the data checksum of each record (the length's is always checked).

    Raises:
        CorruptRecordError: a checksum does not match.
    """
    size = os.fstat(stream.fileno()).st_size
    if size < offset + 12:
        return
    # A map of the file as it is now: slicing it costs no system call per record.
    with mmap.mmap(stream.fileno(), size, access=mmap.ACCESS_READ) as view:
        while offset + 12 <= size:
            header = view[offset : offset + 12]
            length, length_crc = struct.unpack("<QI", header)
            if masked_crc(header[:8]) != length_crc:
                raise CorruptRecordError(f"bad length checksum at offset {offset}")
            end = offset + 12 + length + 4
            if end > size:
                return
            data = view[offset + 12 : end - 4]
            if verify and masked_crc(data) != struct.unpack("<I", view[end - 4 : end])[0]:
                raise CorruptRecordError(f"bad data checksum at offset {offset}")
            offset = end
            yield data, offset


# -- the protobuf wire format ----------------------------------------------------------------------------


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, Any]]:
    """Yield ``(field number, wire type, value)``: an int for varints, a memoryview for the rest."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, wire, value
        elif wire == 1:
            yield number, wire, buf[pos : pos + 8]
            pos += 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            yield number, wire, buf[pos : pos + size]
            pos += size
        elif wire == 5:
            yield number, wire, buf[pos : pos + 4]
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _packed_varints(data: memoryview) -> list[int]:
    out, pos = [], 0
    while pos < len(data):
        value, pos = _varint(data, pos)
        out.append(_signed(value))
    return out


def _repeated(acc: list[Any], wire: int, value: Any, fmt: str, size: int) -> None:
    """Add a repeated fixed-width field, packed (wire type 2) or one by one."""
    if wire == 2:
        acc.extend(struct.unpack(f"<{len(value) // size}{fmt}", value))
    else:
        acc.append(struct.unpack(f"<{fmt}", value)[0])


# -- the messages -----------------------------------------------------------------------------------------

#: TensorFlow dtype numbers and the struct format of their ``tensor_content``.
_CONTENT_FORMATS: Final = {1: "f", 2: "d", 3: "i", 4: "B", 5: "h", 6: "b", 9: "q", 10: "?", 17: "H", 19: "e"}
DT_STRING: Final = 7


@dataclasses.dataclass(frozen=True)
class Tensor:
    """A decoded ``TensorProto``: its dtype number, shape and values in row-major order."""

    dtype: int
    shape: tuple[int, ...]
    values: list[Any]


def _tensor(buf: memoryview) -> Tensor:
    dtype, shape, content = 0, [], None
    values: list[Any] = []
    for number, wire, value in _fields(buf):
        if number == 1:
            dtype = value
        elif number == 2:
            for n, _w, dim in _fields(value):
                if n == 2:
                    shape.append(next((_signed(v) for f, _, v in _fields(dim) if f == 1), 0))
        elif number == 4:
            content = bytes(value)
        elif number == 5:
            _repeated(values, wire, value, "f", 4)
        elif number == 6:
            _repeated(values, wire, value, "d", 8)
        elif number in (7, 10, 11, 13):  # int_val, int64_val, bool_val, half_val (as bits)
            values.extend(_packed_varints(value) if wire == 2 else [_signed(value)])
        elif number == 8:
            values.append(bytes(value))
    if content is not None and dtype in _CONTENT_FORMATS:
        fmt = _CONTENT_FORMATS[dtype]
        values = list(struct.unpack(f"<{len(content) // struct.calcsize(fmt)}{fmt}", content))
    elif dtype == 19 and values:  # half_val holds the float16 bit patterns
        values = [struct.unpack("<e", struct.pack("<H", v & 0xFFFF))[0] for v in values]
    if dtype == 10:
        values = [bool(v) for v in values]
    count = 1
    for dim in shape:
        count *= dim
    if len(values) == 1 and count > 1:  # a splat: one value fills the tensor
        values = values * count
    return Tensor(dtype, tuple(shape), values)


@dataclasses.dataclass(frozen=True)
class EventValue:
    """One value of an event's summary.

    ``kind`` is ``scalar`` (a float), ``histogram`` (``(counts, edges)``), ``images`` (a list of encoded
    images), ``audio`` (a list of encoded sounds; ``extra`` holds the sample rate), ``text`` (a string, or a
    list of rows of strings), ``hparams`` (a dict of hyperparameters) or ``other`` (a value the importer
    skips; ``extra`` says what it was).
    """

    tag: str
    kind: str
    value: Any
    extra: Any = None


@dataclasses.dataclass(frozen=True)
class TensorBoardEvent:
    """An event with a summary: its wall time (seconds), step and values."""

    wall_time: float
    step: int
    values: list[EventValue]


def _histogram_proto(buf: memoryview) -> tuple[list[float], list[float], float, float]:
    low = high = 0.0
    limits: list[float] = []
    counts: list[float] = []
    for number, wire, value in _fields(buf):
        if number == 1:
            low = struct.unpack("<d", value)[0]
        elif number == 2:
            high = struct.unpack("<d", value)[0]
        elif number == 6:
            _repeated(limits, wire, value, "d", 8)
        elif number == 7:
            _repeated(counts, wire, value, "d", 8)
    return counts, limits, low, high


def _edges_from_limits(limits: list[float], low: float, high: float) -> list[float]:
    """Bucket edges from TensorBoard's right limits: bucket i covers (limit[i-1], limit[i]]."""
    edges = [*limits]
    # The last limit may be DBL_MAX (TensorFlow's default buckets): the largest value ends it instead.
    if len(edges) > 1 and edges[-1] > 1e300:
        edges[-1] = max(high, edges[-2] + (edges[-2] - edges[-3] if len(edges) > 2 else 1.0))
    first = edges[0]
    width = edges[1] - edges[0] if len(edges) > 1 else 1.0
    left = low if low < first else first - width
    return [left, *edges]


def _from_tensor_histogram(tensor: Tensor) -> tuple[list[float], list[float]] | None:
    """TF2 histograms: a (k, 3) tensor of (left edge, right edge, count) rows."""
    if len(tensor.shape) != 2 or tensor.shape[1] != 3 or not tensor.shape[0]:
        return None
    rows = [tensor.values[i : i + 3] for i in range(0, len(tensor.values), 3)]
    edges = [float(rows[0][0])] + [float(r[1]) for r in rows]
    if edges[-1] <= edges[0]:  # all values equal: TF writes one bucket of width 0
        edges[-1] = edges[0] + 1.0
    return [float(r[2]) for r in rows], edges


def _text(tensor: Tensor) -> Any:
    strings = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in tensor.values]
    if len(strings) <= 1:
        return strings[0] if strings else ""
    if len(tensor.shape) == 1:
        return [[s] for s in strings]
    width = tensor.shape[-1] or 1
    return [strings[i : i + width] for i in range(0, len(strings), width)]


def _value(buf: memoryview, plugins: dict[str, str]) -> EventValue | None:
    tag = ""
    plugin = None
    simple = histo = image = audio = tensor = content = None
    for number, _wire, value in _fields(buf):
        if number == 1:
            tag = bytes(value).decode("utf-8", "replace")
        elif number == 2:
            simple = struct.unpack("<f", value)[0]
        elif number == 4:
            image = value
        elif number == 5:
            histo = value
        elif number == 6:
            audio = value
        elif number == 8:
            tensor = value
        elif number == 9:
            for n, _w, data in _fields(value):
                if n == 1:
                    for f, _, v in _fields(data):
                        if f == 1:
                            plugin = bytes(v).decode("utf-8", "replace")
                        elif f == 2:
                            content = v
    if plugin:
        plugins[tag] = plugin
    plugin = plugins.get(tag, plugin)
    if simple is not None:
        return EventValue(tag, "scalar", float(simple))
    if histo is not None:
        counts, limits, low, high = _histogram_proto(histo)
        if not counts or len(counts) != len(limits):
            return EventValue(tag, "other", None, "empty histogram")
        return EventValue(tag, "histogram", (counts, _edges_from_limits(limits, low, high)))
    if image is not None:
        encoded = next((bytes(v) for f, _, v in _fields(image) if f == 4), b"")
        return EventValue(tag, "images", [encoded])
    if audio is not None:
        rate, encoded = 0.0, b""
        for f, _w, v in _fields(audio):
            if f == 1:
                rate = struct.unpack("<f", v)[0]
            elif f == 4:
                encoded = bytes(v)
        return EventValue(tag, "audio", [encoded], rate)
    if plugin == "hparams" and content is not None:
        hparams = _hparams(content)
        if hparams is not None:
            return EventValue(tag, "hparams", hparams)
    if tensor is not None:
        return _tensor_value(tag, plugin, _tensor(tensor))
    if plugin and plugin != "hparams":
        return EventValue(tag, "other", None, f"{plugin} data")
    return None


def _struct_value(buf: memoryview) -> Any:
    """A ``google.protobuf.Value``: a number, string, bool or None (lists and structs as None)."""
    for number, _wire, value in _fields(buf):
        if number == 2:
            number_value = struct.unpack("<d", value)[0]
            return (
                int(number_value) if number_value.is_integer() and abs(number_value) < 2**53 else number_value
            )
        if number == 3:
            return bytes(value).decode("utf-8", "replace")
        if number == 4:
            return bool(value)
    return None


def _hparams(content: memoryview) -> dict[str, Any] | None:
    """The hyperparameters of an hparams plugin's ``session_start_info`` (what ``add_hparams`` writes)."""
    for number, _wire, value in _fields(content):
        if number != 3:  # session_start_info; the experiment (2) and session_end_info (4) hold no values
            continue
        out: dict[str, Any] = {}
        for n, _w, entry in _fields(value):
            if n == 1:  # map<string, Value> hparams
                key, item = "", None
                for f, _, v in _fields(entry):
                    if f == 1:
                        key = bytes(v).decode("utf-8", "replace")
                    elif f == 2:
                        item = _struct_value(v)
                out[key] = item
        return out
    return None


def _tensor_value(tag: str, plugin: str | None, tensor: Tensor) -> EventValue:
    if plugin == "text" or (plugin is None and tensor.dtype == DT_STRING):
        return EventValue(tag, "text", _text(tensor))
    if plugin == "histograms":
        pair = _from_tensor_histogram(tensor)
        if pair is not None:
            return EventValue(tag, "histogram", pair)
    if plugin == "images" and tensor.dtype == DT_STRING and len(tensor.values) > 2:
        return EventValue(tag, "images", [bytes(v) for v in tensor.values[2:]])  # width, height, images
    if plugin == "audio" and tensor.dtype == DT_STRING and tensor.values:
        # (k, 2) rows of (encoded sound, label); the rate is in the plugin content, which is not kept.
        return EventValue(tag, "other", None, "audio tensor")
    if plugin in (None, "scalars") and tensor.dtype != DT_STRING and len(tensor.values) == 1:
        return EventValue(tag, "scalar", float(tensor.values[0]))
    return EventValue(tag, "other", None, f"{plugin or 'tensor'} data")


#: Event fields that hold something other than a summary: reported as skipped.
_NOT_SUMMARIES: Final = {4: "graph", 8: "run metadata", 9: "meta graph"}


def parse_event(record: bytes, plugins: dict[str, str]) -> TensorBoardEvent | None:
    """Decode one record into an event with its summary values; None for events without a summary.

    Args:
        record: the bytes of one TFRecord.
        plugins: tag → plugin name seen so far in this run; updated with the names this event brings.
    """
    wall_time, step = 0.0, 0
    values: list[EventValue] = []
    for number, _wire, value in _fields(memoryview(record)):
        if number == 1:
            wall_time = struct.unpack("<d", value)[0]
        elif number == 2:
            step = _signed(value)
        elif number == 5:
            for n, _w, data in _fields(value):
                if n == 1:
                    decoded = _value(data, plugins)
                    if decoded is not None:
                        values.append(decoded)
        elif number in _NOT_SUMMARIES:
            values.append(EventValue("", "other", None, _NOT_SUMMARIES[number]))
    return TensorBoardEvent(wall_time, step, values) if values else None


def read_events(
    path: Path, offset: int = 0, plugins: dict[str, str] | None = None, verify: bool = True
) -> Iterator[tuple[TensorBoardEvent | None, int]]:
    """Yield each event of an event file (None for events without a summary) with the offset past it.

    Raises:
        CorruptRecordError: the file is damaged; the events before the damage have been yielded.
    """
    plugins = {} if plugins is None else plugins
    with path.open("rb") as stream:
        for record, end in read_records(stream, offset, verify):
            yield parse_event(record, plugins), end
