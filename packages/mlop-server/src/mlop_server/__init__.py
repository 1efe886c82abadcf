"""mlop_server: a self-hostable server for the mlop protocol.

Start it with ``mlop server`` (or ``python -m mlop_server``); embed it as an ASGI app with
:func:`create_app`; start it as a subprocess in tests with :class:`mlop_server.testing.ServerProcess`.
The heavy parts load on first use, so the ``mlop`` plugin stays cheap to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlop_server._version import __version__

if TYPE_CHECKING:
    from mlop_server._app import create_app
    from mlop_server._config import ServerConfig
    from mlop_server._sqlite import SqliteStorage
    from mlop_server._storage import Storage

__all__ = ["ServerConfig", "SqliteStorage", "Storage", "__version__", "create_app"]

_LAZY = {
    "ServerConfig": "mlop_server._config",
    "SqliteStorage": "mlop_server._sqlite",
    "Storage": "mlop_server._storage",
    "create_app": "mlop_server._app",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mlop_server' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
