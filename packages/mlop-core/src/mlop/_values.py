"""Turning what users log into what the store holds, and config values into JSON."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import enum
import math
import re
import types
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any, Final

__all__ = [
    "MAX_KEY",
    "MAX_STEP",
    "flatten",
    "has_surrogate",
    "jsonable",
    "key_problem",
    "number_problem",
    "wire_number",
]

#: The longest key a server takes (characters).
MAX_KEY: Final = 512
#: The largest step (and time in milliseconds) a server takes: a signed 64-bit integer.
MAX_STEP: Final = 2**63 - 1
#: The largest int that a float (and so the protocol's numbers) can hold.
MAX_INT: Final = int(1.7976931348623157e308)
_MAX_DEPTH: Final = 32
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


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


def has_surrogate(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate (a code point no UTF-8 text, and so no server, can hold)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def key_problem(key: str) -> str | None:
    """Why a server would refuse ``key`` as a logged key, or None when it takes it."""
    if not key:
        return "an empty key"
    if len(key) > MAX_KEY:
        return f"a key longer than {MAX_KEY} characters"
    if has_surrogate(key):
        return "a key with a lone surrogate (not valid Unicode text)"
    return None


def number_problem(value: int | float) -> str | None:
    """Why a server would refuse a number, or None: an int beyond the range of a float."""
    if type(value) is not float and not -MAX_INT <= value <= MAX_INT:
        return "an integer beyond the range of a float"
    return None


def wire_number(value: float | int) -> float | int | str:
    """A number as the protocol sends it: a non-finite float becomes "NaN", "Infinity" or "-Infinity"."""
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            return "NaN"
        return "Infinity" if value > 0 else "-Infinity"
    return value


def jsonable(value: Any, _depth: int = 0, problems: list[str] | None = None) -> Any:
    """Convert a config value into something ``json.dumps`` takes, never raising.

    Numpy and torch scalars become numbers, paths and enums their value, dataclasses and mappings dicts,
    sets and tuples lists, dates ISO strings; anything else its ``repr``. What a server cannot take is
    turned into text and said in ``problems`` (when given): an integer beyond the range of a float, a
    container that holds itself, nesting deeper than 32 levels.
    """
    return _jsonable(value, _depth, problems if problems is not None else [], set())


def _jsonable(value: Any, depth: int, problems: list[str], path: set[int]) -> Any:
    if depth > _MAX_DEPTH:
        problems.append(f"nesting deeper than {_MAX_DEPTH} levels (kept as text)")
        return f"<{type(value).__name__} nested deeper than {_MAX_DEPTH} levels>"
    if isinstance(value, enum.Enum):  # first: a str or int enum (peft's PeftType) must not stay an enum
        return _jsonable(value.value, depth + 1, problems, path)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _text(value, problems)
    if isinstance(value, int):
        number = int(value)
        if number_problem(number):
            problems.append("an integer beyond the range of a float (kept as text)")
            return str(number)
        return number
    if isinstance(value, float):
        return float(value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if id(value) in path:
        problems.append("a value that holds itself (a cycle, kept as text)")
        return f"<cycle: {type(value).__name__}>"
    path.add(id(value))
    try:
        return _container(value, depth, problems, path)
    finally:
        path.discard(id(value))


def _container(value: Any, depth: int, problems: list[str], path: set[int]) -> Any:
    def inner(v: Any) -> Any:
        return _jsonable(v, depth + 1, problems, path)

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: inner(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {_text(str(k), problems): inner(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [inner(v) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [inner(v) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return inner(item())
        except Exception:  # broad: .item() of a foreign object may raise anything; fall back to repr
            pass
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        try:
            return inner(tolist())
        except Exception:  # broad: as above
            pass
    if isinstance(value, (argparse.Namespace, types.SimpleNamespace)):
        return {str(k): inner(v) for k, v in vars(value).items()}
    return _repr(value)


def _text(value: str, problems: list[str]) -> str:
    if has_surrogate(value):
        problems.append("text with a lone surrogate (replaced by U+FFFD)")
        return _SURROGATE.sub("\ufffd", value)
    return str(value)


def _repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:  # broad: a foreign __repr__ may raise anything (RecursionError among them)
        return f"<{type(value).__name__}>"
