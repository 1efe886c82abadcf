"""Adding ``"mlop"`` to transformers' and accelerate's tracker tables.

Called by the import hook in ``mlop_hf._autoload`` right after the module it patches has run, so importing
the framework here costs nothing more: it is being imported anyway. Every function may be called again;
the second call changes nothing.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, Final

__all__ = ["NAME", "patch_accelerate", "patch_transformers"]

NAME: Final = "mlop"
_MARK: Final = "__mlop_hf_wrapped__"


def patch_transformers(module: Any) -> None:
    """Make ``report_to="mlop"`` (and ``"all"``) resolve to :class:`mlop_hf.MlopCallback`.

    Args:
        module: ``transformers.integrations.integration_utils``.
    """
    from mlop_hf._callback import MlopCallback

    table: dict[str, Any] = module.INTEGRATION_TO_CALLBACK
    table.setdefault(NAME, MlopCallback)
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


def patch_accelerate(module: Any) -> None:
    """Make ``Accelerator(log_with="mlop")`` build a :class:`mlop_hf.MlopTracker`.

    accelerate 1.15 and later register custom trackers by name (``register_tracker_class``). Older versions
    have no such thing: there ``log_with="mlop"`` raises a ValueError that says to pass
    ``log_with=MlopTracker(...)`` instead.

    Args:
        module: ``accelerate.tracking``.
    """
    register = getattr(module, "register_tracker_class", None)
    if register is not None:
        from mlop_hf._tracker import MlopTracker

        if NAME not in module.LOGGER_TYPE_TO_CLASS:
            register(MlopTracker)
        return
    filter_trackers = module.filter_trackers
    if getattr(filter_trackers, _MARK, False):
        return
    wrapped = _refusing_mlop(filter_trackers)
    module.filter_trackers = wrapped
    accelerator: Any = sys.modules.get("accelerate.accelerator")
    if accelerator is not None and getattr(accelerator, "filter_trackers", None) is filter_trackers:
        accelerator.filter_trackers = wrapped


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
