"""The hooks that integration packages implement: the contract between mlop-core and its plugins.

Plugins register through the entry-point group ``mlop``, for example in ``pyproject.toml``::

    [project.entry-points.mlop]
    torch = "mlop_torch.plugin"

and implement hooks with :data:`mlop.hookimpl`. Core calls the hooks through the typed wrappers in
``mlop._hooks``; it never imports an ML framework itself.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from mlop._types import RankInfo, Run

__all__ = ["hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("mlop")
hookimpl = pluggy.HookimplMarker("mlop")


# -- process --------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def mlop_rank() -> RankInfo | None:
    """Say which process of a distributed job this is.

    Called by ``init()`` before it creates a run. Implemented by integrations that know their framework's
    process groups (mlop-torch answers from ``torch.distributed``); core's built-in plugin answers from the
    environment (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``SLURM_PROCID``) and runs last.

    Stops at the first non-None result.

    Returns:
        The rank, local rank and world size, or None when this plugin cannot tell.
    """


# -- run lifecycle --------------------------------------------------------------------------------------


@hookspec
def mlop_run_started(run: Run) -> None:
    """A run was created and is ready to log.

    Called by ``init()`` once the run's store is open, on the process that owns the run. Implemented by
    integrations that set something up per run. Exceptions are logged and ignored.
    """


@hookspec
def mlop_run_finished(run: Run, status: str) -> None:
    """A run ended with ``status`` (COMPLETED, FAILED, TERMINATED or CANCELLED).

    Called by ``finish()`` after the final records were written, once per run. Implemented by integrations
    that hold per-run resources (watch hooks, say) to release them. Exceptions are logged and ignored.
    """


# -- values -----------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def mlop_convert(value: Any) -> Any | None:
    """Turn a framework value (a tensor, an array, a figure) into something ``run.log`` takes.

    Called by ``run.log`` for a value that is not a number, a string, a mapping or an mlop data type.
    Implemented by integrations that recognise the value's type; return a number, a string or an mlop data
    type object.

    Stops at the first non-None result.

    Returns:
        The converted value, or None when this plugin does not know the value's type.
    """


# -- models -----------------------------------------------------------------------------------------------


@hookspec(firstresult=True)
def mlop_watch(
    run: Run, model: Any, log: str | None, log_freq: int, log_graph: bool, bins: int
) -> Any | None:
    """Attach gradient and parameter hooks to ``model`` for ``run``.

    Called by ``run.watch``. Implemented by integrations that recognise the model's type.

    Stops at the first non-None result.

    Returns:
        A handle with a ``remove()`` method that detaches everything, or None when the model is not this
        plugin's.
    """


@hookspec(firstresult=True)
def mlop_graph(model: Any) -> dict[str, Any] | None:
    """Describe ``model`` as the protocol's model-graph payload (``{"format": ..., "nodes": {...}}``).

    Called by ``run.watch(log_graph=True)`` and by integrations' ``log_graph``. Implemented by
    integrations that recognise the model's type.

    Stops at the first non-None result.

    Returns:
        The graph payload, or None when the model is not this plugin's.
    """


# -- command line ----------------------------------------------------------------------------------------


@hookspec
def mlop_add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add sub-commands to the ``mlop`` command line.

    Called once by ``mlop`` when it builds its parser. Implemented by packages that bring commands
    (mlop-server adds ``mlop server``). Each command sets ``func`` on its parser with
    ``set_defaults(func=callable)``; the callable takes the parsed namespace and returns an exit code.
    """
