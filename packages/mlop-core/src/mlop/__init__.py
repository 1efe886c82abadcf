"""mlop: experiment tracking for machine learning.

>>> import mlop
>>> run = mlop.init(project="demo", config={"lr": 1e-3})
>>> run.log({"train/loss": 0.25})
>>> run.finish()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from mlop import _runs
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
from mlop._settings import Settings
from mlop._version import __version__
from mlop.hookspecs import hookimpl

if TYPE_CHECKING:
    from mlop._data import Artifact, Audio, File, Graph, Histogram, Image, Table, Text, Video

Run = Op
#: The process's live runs, newest last (the same list as the registry's, typed as the runs init() returns).
ops = cast("list[Op]", _runs.ops)

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

# The data types load on first use: their modules (and what they import) would double `import mlop`.
_DATA_TYPES = frozenset(
    {"Artifact", "Audio", "File", "Graph", "Histogram", "Image", "Table", "Text", "Video"}
)


def __getattr__(name: str) -> Any:
    if name in _DATA_TYPES:
        from mlop import _data

        value = getattr(_data, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mlop' has no attribute {name!r}")
