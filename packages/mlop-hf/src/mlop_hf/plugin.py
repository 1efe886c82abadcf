"""The pluggy plugin that mlop-hf registers under the entry-point group ``mlop``.

It imports neither transformers nor accelerate: mlop loads it in every process that starts a run.
"""

from __future__ import annotations

from typing import Any

from mlop.hookspecs import hookimpl
from mlop_hf import _cleanup

__all__ = ["mlop_run_finished"]


@hookimpl
def mlop_run_finished(run: Any, status: str) -> None:
    """Delete the folders a final model was staged in for the run's artifacts."""
    _cleanup.run_finished(run)
