"""Hyperparameters as Lightning hands them over, turned into the nested dict of a run's config."""

from __future__ import annotations

import argparse
import dataclasses
import enum
import importlib
import types
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["to_config"]

#: Arrays and tensors with more elements than this are described (type, shape), not listed.
MAX_ELEMENTS: Final = 64
_MAX_DEPTH: Final = 32


def to_config(params: Any) -> dict[str, Any]:
    """Turn hyperparameters into a config dict that keeps their nesting.

    Takes a dict (Lightning's ``AttributeDict`` among them), an ``argparse.Namespace``, an omegaconf
    ``DictConfig`` (resolved), a dataclass, or a mapping-like object, nested in any mix. Classes and
    functions become their dotted names, large tensors and arrays a short description; the rest is left to
    the run's own config conversion.

    Raises:
        TypeError: ``params`` is not one of the shapes above.
    """
    if params is None:
        return {}
    out = _convert(params, 0)
    if not isinstance(out, dict):
        raise TypeError(
            f"hyperparameters must be a dict, a Namespace or a config object, not {type(params).__name__}"
        )
    return out


def _convert(value: Any, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        return repr(value)
    if value is None or isinstance(value, (bool, int, float, str, enum.Enum)):
        return value
    if _is_omegaconf(value):
        return _convert(_omegaconf_container(value), depth + 1)
    if isinstance(value, (argparse.Namespace, types.SimpleNamespace)):
        return {str(k): _convert(v, depth + 1) for k, v in vars(value).items()}
    if isinstance(value, Mapping):
        return {str(k): _convert(v, depth + 1) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _convert(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_convert(v, depth + 1) for v in value]
    if isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType)):
        return f"{value.__module__}.{value.__qualname__}"
    size = _element_count(value)
    if size is not None and size > MAX_ELEMENTS:
        shape = tuple(int(n) for n in value.shape)
        return f"{type(value).__name__}(shape={shape}, dtype={getattr(value, 'dtype', '?')})"
    return value  # numbers of numpy and torch, paths, dates...: the run's config conversion takes them


def _is_omegaconf(value: Any) -> bool:
    return type(value).__module__.split(".", 1)[0] == "omegaconf" and hasattr(value, "_get_node")


def _omegaconf_container(value: Any) -> Any:
    omegaconf: Any = importlib.import_module("omegaconf")  # present whenever a value of its types exists
    try:
        return omegaconf.OmegaConf.to_container(value, resolve=True)
    except Exception:  # broad: an interpolation that fails to resolve; keep the raw values instead
        return omegaconf.OmegaConf.to_container(value, resolve=False)


def _element_count(value: Any) -> int | None:
    shape = getattr(value, "shape", None)
    if shape is None or not hasattr(value, "dtype"):
        return None
    try:
        count = 1
        for n in shape:
            count *= int(n)
    except (TypeError, ValueError):
        return None
    return count
