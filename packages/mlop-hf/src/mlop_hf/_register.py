"""Adding ``"mlop"`` to transformers' and accelerate's tracker tables.

Called by the import hook in ``mlop_hf._autoload`` right after the module it patches has run, so importing
the framework here costs nothing more: it is being imported anyway; and by ``mlop_hf._callback`` and
``mlop_hf._tracker`` once their class exists. Every function may be called again; the second call changes
nothing. The classes come in as arguments, so that this module imports neither of theirs.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, Final

from mlop_hf._targets import ACCELERATE_MODULE, TRANSFORMERS_MODULE

__all__ = ["NAME", "include_in_all", "patch_accelerate", "patch_imported", "patch_transformers"]

logger = logging.getLogger("mlop_hf")

NAME: Final = "mlop"
_MARK: Final = "__mlop_hf_wrapped__"


def patch_imported(*, callback: type[Any] | None = None, tracker: type[Any] | None = None) -> None:
    """Patch the target modules that are already imported with the classes given; never raises.

    ``mlop_hf._callback`` and ``mlop_hf._tracker`` call it once their class is defined: when their own import
    is what loaded the framework, the import hook could not register the class yet.
    """
    for name, cls in ((TRANSFORMERS_MODULE, callback), (ACCELERATE_MODULE, tracker)):
        module = sys.modules.get(name)
        if cls is None or module is None:
            continue
        try:
            if name == TRANSFORMERS_MODULE:
                patch_transformers(module, cls)
            else:
                patch_accelerate(module, cls)
        except Exception:  # broad: whatever fails here must not break the user's import of the framework
            logger.debug("mlop-hf could not register mlop in %s", name, exc_info=True)


def patch_transformers(module: Any, callback: type[Any]) -> None:
    """Make ``report_to="mlop"`` (and ``"all"``) resolve to ``callback`` (:class:`mlop_hf.MlopCallback`).

    Args:
        module: ``transformers.integrations.integration_utils``.
        callback: the class to register.
    """
    table: dict[str, Any] = module.INTEGRATION_TO_CALLBACK
    table.setdefault(NAME, callback)
    available = module.get_available_reporting_integrations
    if getattr(available, _MARK, False):
        return
    wrapped = _with_mlop(available)
    module.get_available_reporting_integrations = wrapped
    # transformers.integrations is a lazy module that caches what it handed out once.
    package: Any = sys.modules.get("transformers.integrations")
    if package is not None and "get_available_reporting_integrations" in vars(package):
        package.get_available_reporting_integrations = wrapped


def _with_mlop(available: Callable[[], list[str]]) -> Callable[[], list[str]]:
    @functools.wraps(available)
    def get_available_reporting_integrations() -> list[str]:
        names = list(available())
        if NAME not in names:
            names.append(NAME)
        return names

    setattr(get_available_reporting_integrations, _MARK, True)
    return get_available_reporting_integrations


def patch_accelerate(module: Any, tracker: type[Any] | None = None) -> None:
    """Make ``Accelerator(log_with="mlop")`` build ``tracker`` (:class:`mlop_hf.MlopTracker`).

    accelerate 1.15 and later register custom trackers by name (``register_tracker_class``). Older versions
    have no such thing: there ``log_with="mlop"`` raises a ValueError that says to pass
    ``log_with=MlopTracker(...)`` instead.

    Args:
        module: ``accelerate.tracking``.
        tracker: the class to register by name; None registers nothing on an accelerate that registers
            trackers by name (there only the refusal of older versions needs no class).
    """
    register = getattr(module, "register_tracker_class", None)
    if register is not None:
        if tracker is not None and NAME not in module.LOGGER_TYPE_TO_CLASS:
            register(tracker)
        if NAME in module.LOGGER_TYPE_TO_CLASS:
            include_in_all(module)
        return
    filter_trackers = module.filter_trackers
    if getattr(filter_trackers, _MARK, False):
        return
    wrapped = _refusing_mlop(filter_trackers)
    module.filter_trackers = wrapped
    accelerator: Any = sys.modules.get("accelerate.accelerator")
    if accelerator is not None and getattr(accelerator, "filter_trackers", None) is filter_trackers:
        accelerator.filter_trackers = wrapped


def include_in_all(module: Any) -> bool:
    """Make ``Accelerator(log_with="all")`` start mlop too, as it starts every other installed tracker.

    ``register_tracker_class`` does not add a class to what ``"all"`` reads: a private module-level list
    (``_available_trackers``) that ``get_available_trackers()`` returns. This is the one place mlop-hf
    touches it, and only when it is exactly that; otherwise it says so and leaves accelerate alone
    (``tests/hf/test_tracker.py`` fails loudly when an accelerate release changes it).

    Args:
        module: ``accelerate.tracking``.

    Returns:
        Whether ``"all"`` now includes mlop.
    """
    available = getattr(module, "_available_trackers", None)
    getter = getattr(module, "get_available_trackers", None)
    try:
        same = isinstance(available, list) and callable(getter) and getter() is available
    except Exception:  # broad: a changed accelerate must not break importing it
        same = False
    if not same or not isinstance(available, list):
        logger.warning(
            "mlop-hf: this accelerate keeps its list of trackers differently, so log_with='all' does not "
            "start mlop; pass log_with=['all', MlopTracker(...)] instead"
        )
        return False
    if NAME not in available:
        available.append(NAME)
    return True


def _refusing_mlop(filter_trackers: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(filter_trackers)
    def wrapper(log_with: Any, *args: Any, **kwargs: Any) -> Any:
        names = log_with if isinstance(log_with, (list, tuple)) else [log_with]
        if any(isinstance(n, str) and n == NAME for n in names):
            raise ValueError(
                "log_with='mlop' needs accelerate 1.15 or later, which lets mlop-hf register its tracker "
                "by name; with this accelerate, pass the tracker itself: "
                "from mlop_hf import MlopTracker; Accelerator(log_with=MlopTracker('my-project'))"
            )
        return filter_trackers(log_with, *args, **kwargs)

    setattr(wrapper, _MARK, True)
    return wrapper
