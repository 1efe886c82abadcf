"""mlop for Hugging Face: ``report_to="mlop"`` in transformers and ``log_with="mlop"`` in accelerate.

After ``pip install mlop-hf`` both names work without importing this package: a ``.pth`` file registers them
when transformers or accelerate is imported (``MLOP_HF_DISABLE_AUTOLOAD=1`` turns that off). Importing
``mlop_hf`` registers them too. The classes are also usable directly:

>>> from mlop_hf import MlopCallback, MlopTracker
>>> trainer = Trainer(..., callbacks=[MlopCallback()])  # doctest: +SKIP
>>> accelerator = Accelerator(log_with=MlopTracker("my-project"))  # doctest: +SKIP

This module imports neither transformers nor accelerate: ``MlopCallback`` and ``MlopTracker`` are loaded
on first use, and only then import their framework.
"""

from __future__ import annotations

from mlop_hf import _autoload
from mlop_hf._version import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from mlop_hf._callback import MlopCallback
    from mlop_hf._tracker import MlopTracker

__all__ = ["MlopCallback", "MlopTracker", "__version__", "register"]

_LAZY = {"MlopCallback": "mlop_hf._callback", "MlopTracker": "mlop_hf._tracker"}


def register() -> None:
    """Register ``"mlop"`` with transformers and accelerate now, and with them whenever they are imported.

    Importing ``mlop_hf`` does this already; it is here for code that wants to say so.
    """
    _autoload.install()


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mlop_hf' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


_autoload.install()
