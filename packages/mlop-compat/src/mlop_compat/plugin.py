"""The pluggy plugin that mlop-compat registers under the entry-point group ``mlop``: ``mlop import``."""

from __future__ import annotations

import argparse

from mlop.hookspecs import hookimpl

__all__ = ["mlop_add_commands"]


@hookimpl
def mlop_add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``mlop import tensorboard LOGDIR`` to the ``mlop`` command line."""
    # Here rather than at the top: mlop loads this plugin at every init(), and only the CLI needs it.
    from mlop_compat._tensorboard import add_import_command

    add_import_command(subparsers)
