"""Parsing ``POST /ingest/metrics`` into packed columns per key, checked line by line, fast.

The hot path of the server. Each line is checked with a few C-level operations (one set test of the value
types, one tuple of the keys); lines with the same keys are stacked into one float64 matrix by numpy, and
each key's column is cut from it. Only a line with a non-finite marker or a bad value takes the slow path,
which also names the line and field at fault.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from mlop_server._errors import BadRequest, TooLarge
from mlop_server._ops import MetricBatch
from mlop_server._protocol import INT64_MAX, MAX_LINE_KEYS, check_fields, ndjson

__all__ = ["parse_metrics"]

logger = logging.getLogger(__name__)

MAX_KEY: Final = 512
#: The most distinct keys one batch may bring (413 above): each is a series row to write.
MAX_BATCH_KEYS: Final = 100_000
_FIELDS: Final = frozenset({"time", "step", "data"})
_NUMBERS: Final = frozenset({int, float})
_NON_FINITE: Final = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}

# one group per set of keys (in line order): line numbers, steps, times, value rows
_Group = tuple[list[int], list[int], list[int], list[list[Any]]]


def _value(value: Any, line: int, key: str) -> float | int:
    """One value that failed the fast type test: a non-finite marker, or an error naming it."""
    kind = type(value)
    if kind is float or kind is int:
        number: float | int = value
        return number
    if kind is str and value in _NON_FINITE:
        return _NON_FINITE[value]
    if kind is bool:
        raise BadRequest("is a boolean; send 0 or 1", line=line, field=f"data.{key}")
    raise BadRequest('must be a number or "NaN", "Infinity", "-Infinity"', line=line, field=f"data.{key}")


def _columns(groups: dict[tuple[str, ...], _Group]) -> dict[str, tuple[bytes, bytes, bytes]]:
    """Per key: little-endian int64 steps, int64 times and float64 values, in line order."""
    parts: dict[str, list[tuple[npt.NDArray[Any], ...]]] = {}
    for names, (lines, steps, times, rows) in groups.items():
        matrix = np.array(rows, dtype="<f8")
        line_arr, step_arr, time_arr = (np.array(x, dtype="<i8") for x in (lines, steps, times))
        for j, name in enumerate(names):
            parts.setdefault(name, []).append((line_arr, step_arr, time_arr, matrix[:, j]))
    if len(parts) > MAX_BATCH_KEYS:
        raise TooLarge(f"the batch has {len(parts)} keys; the most in one batch is {MAX_BATCH_KEYS}")
    out = {}
    for name, pieces in parts.items():
        if len(pieces) == 1:
            _, step_arr, time_arr, values = pieces[0]
        else:  # a key in lines with different key sets: back into line order
            line_arr, step_arr, time_arr, values = (
                np.concatenate(column) for column in zip(*pieces, strict=True)
            )
            order = np.argsort(line_arr, kind="stable")
            step_arr, time_arr, values = step_arr[order], time_arr[order], values[order]
        out[name] = (step_arr.tobytes(), time_arr.tobytes(), np.ascontiguousarray(values).tobytes())
    return out


def parse_metrics(body: bytes, run_id: int) -> MetricBatch:
    """``POST /ingest/metrics``: check every line and pack the values by key.

    Args:
        body: The NDJSON body.
        run_id: The run the batch belongs to.

    Raises:
        BadRequest: naming the first line and field that breaks the protocol.
    """
    groups: dict[tuple[str, ...], _Group] = {}
    count = 0
    for line, obj in ndjson(body):
        if obj.keys() != _FIELDS:
            check_fields(obj, _FIELDS, frozenset(), line)
        time, step, data = obj["time"], obj["step"], obj["data"]
        if type(time) is not int or not 0 <= time <= INT64_MAX:
            raise BadRequest("must be a non-negative integer (ms since the epoch)", line=line, field="time")
        if type(step) is not int or not 0 <= step <= INT64_MAX:
            raise BadRequest("must be a non-negative integer", line=line, field="step")
        if type(data) is not dict:
            raise BadRequest("must be an object of key: number", line=line, field="data")
        if not data:
            raise BadRequest("must not be empty", line=line, field="data")
        if len(data) > MAX_LINE_KEYS:
            raise BadRequest(
                f"has {len(data)} keys; the most in one line is {MAX_LINE_KEYS}", line=line, field="data"
            )
        values = list(data.values())
        if not _NUMBERS.issuperset(map(type, values)):
            values = [_value(value, line, key) for key, value in data.items()]
        names = tuple(data)
        group = groups.get(names)
        if group is None:
            for name in names:
                if not name or len(name) > MAX_KEY:
                    raise BadRequest(f"a key must be 1 to {MAX_KEY} characters", line=line, field="data")
            group = groups[names] = ([], [], [], [])
        group[0].append(line)
        group[1].append(step)
        group[2].append(time)
        group[3].append(values)
        count += len(values)
    return MetricBatch(run_id, _columns(groups), count)
