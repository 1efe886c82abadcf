"""The migration layers' old import paths, kept in mlop-core: ``mlop.compat.*`` resolves to mlop-compat.

The layers live in the mlop-compat package (:mod:`mlop_compat`). ``import mlop.compat.wandb as wandb`` and
``import mlop.compat.neptune`` give its modules themselves (the same module objects, so their state is
shared), and ``from mlop.compat import UnsupportedError`` its names. Without mlop-compat they raise
:class:`ModuleNotFoundError` with the command that installs it: ``pip install mlop-compat``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlop_compat import UnsupportedError, UnsupportedFeatureError, log_at

__all__ = ["UnsupportedError", "UnsupportedFeatureError", "log_at"]


def _resolve(old: str) -> ModuleType:
    """The mlop-compat module behind the old path ``old`` (``mlop.compat`` or ``mlop.compat.<name>``).

    Raises:
        ModuleNotFoundError: mlop-compat is not installed; the message says how to install it.
    """
    try:
        importlib.import_module("mlop_compat")
    except ModuleNotFoundError as exc:
        if exc.name != "mlop_compat":  # mlop-compat is there, and something it imports is not
            raise
        raise ModuleNotFoundError(
            f"{old} is in the mlop-compat package, which is not installed: pip install mlop-compat",
            name="mlop_compat",
        ) from None
    return importlib.import_module("mlop_compat" + old.removeprefix("mlop.compat"))


def __getattr__(name: str) -> Any:
    if name in __all__:
        value = getattr(_resolve(__name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
