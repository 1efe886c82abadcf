"""Start-up hook for ``MLOP_NEPTUNE_COMPAT``: enable the Neptune layer when ``neptune_scale`` is imported.

``mlop_neptune_compat.pth`` (installed with mlop-compat) calls :func:`install` at interpreter start-up
when the variable is set, so that an unchanged Neptune script logs to mlop. Nothing is imported from
Neptune until the script imports it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

__all__ = ["install"]

logger = logging.getLogger("mlop.compat._neptune_hook")  # the name it had in mlop-core

_TARGET = "neptune_scale"


def _enable() -> None:
    try:
        import mlop_compat.neptune  # noqa: F401  (the import enables the layer from the environment)
    except Exception:  # broad: a start-up hook must never break the program it starts
        logger.exception("mlop.compat.neptune could not be enabled")


class _Finder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of ``neptune_scale`` to enable the layer once it ran."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        loader: Any = spec.loader
        exec_module = loader.exec_module

        def run_then_enable(module: ModuleType) -> None:
            exec_module(module)
            _enable()

        loader.exec_module = run_then_enable
        return spec


def install() -> None:
    """Enable the layer now if ``neptune_scale`` is loaded, else as soon as it is imported."""
    if _TARGET in sys.modules:
        _enable()
    elif not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
