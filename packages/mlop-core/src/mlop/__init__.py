"""mlop: experiment tracking for machine learning.

>>> import mlop
>>> run = mlop.init(project="demo", config={"lr": 1e-3})
>>> run.log({"train/loss": 0.25})
>>> run.finish()
"""

from __future__ import annotations

from mlop._data import Artifact, Audio, File, Graph, Histogram, Image, Table, Text, Video
from mlop._exceptions import (
    AuthError,
    ConfigError,
    MlopError,
    NoRunError,
    PluginError,
    RunExistsError,
    ServerError,
    StoreError,
)
from mlop._init import alert, finish, init, log, watch
from mlop._loggable import Loggable
from mlop._op import Op
from mlop._rank import RankInfo
from mlop._reader import RunReader, list_runs, open_run
from mlop._runs import ops
from mlop._settings import Settings
from mlop._version import __version__
from mlop.hookspecs import hookimpl

Run = Op

__all__ = [
    "Artifact",
    "Audio",
    "AuthError",
    "ConfigError",
    "File",
    "Graph",
    "Histogram",
    "Image",
    "Loggable",
    "MlopError",
    "NoRunError",
    "Op",
    "PluginError",
    "RankInfo",
    "Run",
    "RunExistsError",
    "RunReader",
    "ServerError",
    "Settings",
    "StoreError",
    "Table",
    "Text",
    "Video",
    "__version__",
    "alert",
    "finish",
    "hookimpl",
    "init",
    "list_runs",
    "log",
    "open_run",
    "ops",
    "watch",
]
