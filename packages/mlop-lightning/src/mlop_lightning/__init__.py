"""mlop_lightning: the mlop logger for Lightning.

>>> from lightning.pytorch import Trainer
>>> from mlop_lightning import MlopLogger
>>> trainer = Trainer(logger=MlopLogger(project="demo", log_model=True))

The logger lives in a private module that imports Lightning (seconds of import time); it is loaded on
first use, so that ``mlop.init()``, which loads this package's plugin, never pays for Lightning.
"""

from __future__ import annotations

import typing

from mlop_lightning._version import __version__

if typing.TYPE_CHECKING:
    from mlop_lightning._logger import MLOPLogger, MlopLogger

__all__ = ["MLOPLogger", "MlopLogger", "__version__"]

_LAZY = frozenset({"MLOPLogger", "MlopLogger"})


def __getattr__(name: str) -> typing.Any:
    if name in _LAZY:
        from mlop_lightning import _logger

        value = getattr(_logger, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
