"""Building the plugin manager and loading integrations from the entry-point group ``mlop``.

Environment switches:

- ``MLOP_DISABLE_PLUGIN_AUTOLOAD=1``: load no entry point but those named in ``MLOP_PLUGINS``.
- ``MLOP_PLUGINS=name,other``: with autoload off, the entry points (by name) or modules (by dotted path)
  to load.
- ``MLOP_TRACE_PLUGINS=1``: log every hook call and its result at DEBUG level on ``mlop.plugins``.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from typing import Final

import pluggy

from mlop import hookspecs
from mlop._rank import EnvironmentRank

__all__ = ["ENTRY_POINT_GROUP", "get_plugin_manager", "reset_plugin_manager"]

logger = logging.getLogger("mlop.plugins")

ENTRY_POINT_GROUP: Final = "mlop"
_TRUE: Final = frozenset({"1", "true", "yes", "on"})

_pm: pluggy.PluginManager | None = None
_lock = threading.Lock()


def get_plugin_manager() -> pluggy.PluginManager:
    """The process's plugin manager, built and loaded on first use."""
    global _pm
    with _lock:
        if _pm is None:
            _pm = _build()
        return _pm


def reset_plugin_manager() -> None:
    """Forget the plugin manager so that the next use builds a fresh one (for tests)."""
    global _pm
    with _lock:
        _pm = None


def _build() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("mlop")
    pm.add_hookspecs(hookspecs)
    pm.register(EnvironmentRank(), name="mlop.environment-rank")
    wanted = [p.strip() for p in os.environ.get("MLOP_PLUGINS", "").split(",") if p.strip()]
    autoload = os.environ.get("MLOP_DISABLE_PLUGIN_AUTOLOAD", "").strip().lower() not in _TRUE
    import importlib.metadata  # here, not at import: it costs tens of milliseconds

    entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    by_name = {ep.name: ep for ep in entry_points}
    for ep in entry_points:
        if autoload or ep.name in wanted:
            _load(pm, ep.name, ep.value, ep.load)
    for name in wanted:
        if name not in by_name:
            _load(pm, name, name, functools.partial(importlib.import_module, name))
    if os.environ.get("MLOP_TRACE_PLUGINS", "").strip().lower() in _TRUE:
        pm.trace.root.setwriter(lambda msg: logger.debug("%s", msg.rstrip()))
        pm.enable_tracing()
    return pm


def _load(pm: pluggy.PluginManager, name: str, target: str, load: object) -> None:
    """Load one plugin with an answer for each way it can fail; never raises."""
    if pm.has_plugin(name):
        return
    try:
        plugin = load()  # type: ignore[operator]
    except ModuleNotFoundError as exc:
        own = target.split(":", maxsplit=1)[0].split(".", maxsplit=1)[0]
        if exc.name and not exc.name.startswith(own):
            # The framework this plugin integrates is not installed: nothing to integrate with.
            logger.debug("mlop plugin %r skipped: %s is not installed", name, exc.name)
        else:
            logger.warning("mlop plugin %r (%s) is broken and was skipped: %s", name, target, exc)
        return
    except Exception as exc:  # broad: a plugin's import may raise anything; telemetry never crashes training
        logger.warning("mlop plugin %r (%s) is broken and was skipped: %r", name, target, exc)
        return
    try:
        pm.register(plugin, name=name)
    except Exception as exc:  # broad: a plugin with bad hook signatures fails registration
        logger.warning("mlop plugin %r (%s) could not be registered and was skipped: %s", name, target, exc)
