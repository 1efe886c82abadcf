"""mlop_hf: the mlop-hf integration package."""

from __future__ import annotations

from mlop_hf._version import __version__

__all__ = ["__version__"]
