"""Turning what users log into what the store holds, and config values into JSON."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import enum
import math
import types
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

__all__ = ["flatten", "jsonable", "wire_number"]


def flatten(data: Mapping[Any, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into one level, joining keys with ``/``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "/"))
        else:
            out[name] = value
    return out


def wire_number(value: float | int) -> float | int | str:
    """A number as the protocol sends it: a non-finite float becomes "NaN", "Infinity" or "-Infinity"."""
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            return "NaN"
        return "Infinity" if value > 0 else "-Infinity"
    return value


def jsonable(value: Any, _depth: int = 0) -> Any:
    """Convert a config value into something ``json.dumps`` takes, never raising.

    Numpy and torch scalars become numbers, paths and enums their value, dataclasses and mappings dicts,
    sets and tuples lists, dates ISO strings; anything else its ``repr``.
    """
    if _depth > 32:
        return repr(value)
    if isinstance(value, enum.Enum):  # first: a str or int enum (peft's PeftType) must not stay an enum
        return jsonable(value.value, _depth + 1)
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name), _depth + 1) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, _depth + 1) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [jsonable(v, _depth + 1) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return jsonable(item(), _depth + 1)
        except Exception:  # broad: .item() of a foreign object may raise anything; fall back to repr
            pass
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        try:
            return jsonable(tolist(), _depth + 1)
        except Exception:  # broad: as above
            pass
    if isinstance(value, (argparse.Namespace, types.SimpleNamespace)):
        return {str(k): jsonable(v, _depth + 1) for k, v in vars(value).items()}
    return repr(value)
