"""The pluggy plugin that mlop-server registers under the entry-point group ``mlop``: ``mlop server``."""

from __future__ import annotations

import argparse
import logging

import mlop
from mlop_server._cli import add_server_parser
from mlop_server._uicmd import add_ui_parser

__all__ = ["mlop_add_commands"]

logger = logging.getLogger(__name__)


@mlop.hookimpl
def mlop_add_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``mlop server`` (and ``mlop server keys ...``) and ``mlop ui`` to the ``mlop`` command line."""
    parser = subparsers.add_parser("server", help="run the mlop server, or manage its keys")
    add_server_parser(parser)
    add_ui_parser(subparsers.add_parser("ui", help="the dashboard for the runs under a directory"))
