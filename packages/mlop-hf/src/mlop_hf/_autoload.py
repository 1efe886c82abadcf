"""Registering ``"mlop"`` with transformers and accelerate when, and only when, they are imported.

Neither library lets another package add a tracker name, so mlop-hf adds it to their tables itself:
``INTEGRATION_TO_CALLBACK`` in ``transformers.integrations.integration_utils`` (for
``TrainingArguments(report_to="mlop")``) and accelerate's tracker registry (for
``Accelerator(log_with="mlop")``).

A ``.pth`` file that the wheel (and the editable install) puts into ``site-packages`` runs at every
interpreter start. It imports nothing: it defines a stub finder in place, at the front of ``sys.meta_path``,
which ignores every module but the two above, so that a process that never imports transformers or
accelerate pays for one string comparison per import and never loads this package. The first time one of
the two modules is looked up, the stub removes itself and calls :func:`install`, which puts
:class:`MlopImportHook` in its place: that finder lets the normal loader run the module and then patches
the fresh module.

This module is imported only then, or by ``import mlop_hf``; it still imports nothing heavy (``typing``
only for the type checker), and it never raises: a broken mlop install must not break
``import transformers``.

``MLOP_HF_DISABLE_AUTOLOAD=1`` turns the start-up hook off: the ``.pth`` file then defines nothing. An
explicit ``import mlop_hf`` still registers the names.
"""

from __future__ import annotations

import os
import sys

from mlop_hf._targets import ACCELERATE_MODULE, TRANSFORMERS_MODULE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import ModuleType
    from typing import Any, Final

__all__ = ["ACCELERATE_MODULE", "DISABLE_ENV", "TRANSFORMERS_MODULE", "autoload_disabled", "install"]

DISABLE_ENV: Final = "MLOP_HF_DISABLE_AUTOLOAD"
_TARGETS: Final = frozenset({TRANSFORMERS_MODULE, ACCELERATE_MODULE})
_TRUE: Final = frozenset({"1", "true", "yes", "on"})


def autoload_disabled() -> bool:
    """Whether ``MLOP_HF_DISABLE_AUTOLOAD`` switches the start-up hook off."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() in _TRUE


def _report(what: str) -> None:
    """Log a failure of the hook at DEBUG (``logging`` is imported only here, on the failure path)."""
    try:
        import logging

        logging.getLogger("mlop_hf").debug("mlop-hf could not %s", what, exc_info=True)
    except Exception:  # broad: reporting a failure must not fail in turn
        pass


def _patch(name: str, module: ModuleType) -> None:
    """Register mlop in the freshly loaded ``module``; never raises."""
    try:
        from mlop_hf import _register

        if name == TRANSFORMERS_MODULE:
            from mlop_hf._callback import MlopCallback

            _register.patch_transformers(module, MlopCallback)
        elif name == ACCELERATE_MODULE:
            tracker: type[Any] | None = None
            if getattr(module, "register_tracker_class", None) is not None:  # accelerate 1.15 and later
                from mlop_hf._tracker import MlopTracker as tracker
            _register.patch_accelerate(module, tracker)
    except Exception:  # broad: whatever fails here must not break the user's import of transformers
        _report(f"register mlop in {name}")


class MlopImportHook:
    """A ``sys.meta_path`` finder that patches transformers' and accelerate's tracker tables on import.

    It finds nothing itself: for its two modules it asks the finders after it for the spec, and wraps the
    spec's loader so that the module is patched right after it has run.
    """

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> Any:
        """The spec the other finders give for one of the two modules, with a patching loader; else None."""
        if fullname not in _TARGETS:
            return None
        try:
            return self._wrapped_spec(fullname, path, target)
        except Exception:  # broad: let the import machinery go on without us
            _report(f"hook the import of {fullname}")
            return None

    def _wrapped_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None) -> Any:
        spec = None
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            if finder is self or isinstance(finder, MlopImportHook) or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        loader: Any = getattr(spec, "loader", None)
        run = getattr(loader, "exec_module", None)
        if spec is None or run is None:
            return spec

        def exec_module(module: ModuleType) -> None:
            # The wrapper lives on this loader instance for one load only.
            try:
                del loader.exec_module
            except AttributeError:
                pass
            run(module)
            if getattr(module, "__name__", None) == fullname:
                _patch(fullname, module)

        loader.exec_module = exec_module
        return spec


def install() -> None:
    """Put the import hook in place once, and patch the target modules that are already imported."""
    try:
        if not any(isinstance(finder, MlopImportHook) for finder in sys.meta_path):
            sys.meta_path.insert(0, MlopImportHook())
        for name in (TRANSFORMERS_MODULE, ACCELERATE_MODULE):
            module = sys.modules.get(name)
            if module is not None:
                _patch(name, module)
    except Exception:  # broad: installing the hook must never break the interpreter's start
        _report("install its import hook")
