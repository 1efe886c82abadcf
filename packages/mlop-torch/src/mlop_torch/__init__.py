"""mlop_torch: the mlop-torch integration package."""

from __future__ import annotations

from mlop_torch._version import __version__

__all__ = ["__version__"]
