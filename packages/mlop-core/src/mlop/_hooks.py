"""Typed calls of every hook: the one place that touches the untyped ``pm.hook``.

Each call is guarded: a plugin that raises is logged and treated as having no answer, because a fault in
an integration must never reach the training loop.
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING, Any

from mlop._plugins import get_plugin_manager
from mlop._rank import RankInfo, rank_from_environ

if TYPE_CHECKING:
    from mlop._types import Run

__all__ = ["add_commands", "convert", "graph", "rank", "run_finished", "run_started", "watch"]

logger = logging.getLogger("mlop.plugins")


def rank() -> RankInfo:
    try:
        out = get_plugin_manager().hook.mlop_rank()
    except Exception:  # broad: a faulty plugin falls back to the environment
        logger.exception("mlop_rank failed; using the environment")
        return rank_from_environ()
    return out if isinstance(out, RankInfo) else rank_from_environ()


def run_started(run: Run) -> None:
    try:
        get_plugin_manager().hook.mlop_run_started(run=run)
    except Exception:  # broad: a plugin's fault must not stop the run
        logger.exception("an mlop plugin failed in mlop_run_started")


def run_finished(run: Run, status: str) -> None:
    try:
        get_plugin_manager().hook.mlop_run_finished(run=run, status=status)
    except Exception:  # broad: a plugin's fault must not stop the finish
        logger.exception("an mlop plugin failed in mlop_run_finished")


def convert(value: Any) -> Any | None:
    try:
        return get_plugin_manager().hook.mlop_convert(value=value)
    except Exception:  # broad: an unconvertible value is skipped with a warning by the caller
        logger.exception("an mlop plugin failed to convert a %s", type(value).__name__)
        return None


def watch(run: Run, model: Any, log: str | None, log_freq: int, log_graph: bool, bins: int) -> Any | None:
    return get_plugin_manager().hook.mlop_watch(
        run=run, model=model, log=log, log_freq=log_freq, log_graph=log_graph, bins=bins
    )


def graph(model: Any) -> dict[str, Any] | None:
    out = get_plugin_manager().hook.mlop_graph(model=model)
    return out if isinstance(out, dict) else None


def add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    try:
        get_plugin_manager().hook.mlop_add_commands(subparsers=subparsers)
    except Exception:  # broad: a broken command plugin must not break the rest of the CLI
        logger.exception("an mlop plugin failed to add its commands")
