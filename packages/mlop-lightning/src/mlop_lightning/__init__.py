"""mlop_lightning: the mlop-lightning integration package."""

from __future__ import annotations

from mlop_lightning._version import __version__

__all__ = ["__version__"]
