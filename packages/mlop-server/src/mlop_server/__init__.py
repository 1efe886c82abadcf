"""mlop_server: the mlop-server integration package."""

from __future__ import annotations

from mlop_server._version import __version__

__all__ = ["__version__"]
