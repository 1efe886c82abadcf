"""The wandb drop-in's old import path: ``import mlop.compat.wandb as wandb`` is :mod:`mlop_compat.wandb`."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from mlop.compat import _resolve

if TYPE_CHECKING:
    from mlop_compat.wandb import *  # noqa: F403  (what type checkers see here)
else:
    # The import system hands out what sys.modules holds once this module has run: mlop-compat's module.
    sys.modules[__name__] = _resolve(__name__)
