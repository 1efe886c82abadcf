"""Value objects for the writes a protocol request asks for, shared by the parser and the storage.

The parser (``_protocol``) turns a request into one of these after it has checked every field; storage
applies it whole or not at all. They carry no HTTP and no SQL, so another storage backend takes them as is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "DATA_TYPES",
    "LOG_TYPES",
    "RUN_STATUSES",
    "Alert",
    "ConfigUpdate",
    "CreateRun",
    "DataBatch",
    "FileRequest",
    "FilesRequest",
    "GraphUpdate",
    "LogBatch",
    "LogNamesAdd",
    "MetricBatch",
    "Op",
    "ResumeRun",
    "StatusUpdate",
    "TagsUpdate",
]

logger = logging.getLogger(__name__)

RUN_STATUSES: Final = frozenset({"RUNNING", "COMPLETED", "FAILED", "TERMINATED", "CANCELLED"})
LOG_TYPES: Final = frozenset(
    {"METRIC", "IMAGE", "VIDEO", "AUDIO", "FILE", "TEXT", "ARTIFACT", "HISTOGRAM", "TABLE", "DATA"}
)
#: ``dataType`` of an ``/ingest/data`` line, with the logType a key gets when it was not registered.
DATA_TYPES: Final = {
    "HISTOGRAM": "HISTOGRAM",
    "TABLE": "TABLE",
    "GRAPH": "DATA",
    "DATA": "DATA",
    "string-series": "DATA",
}


@dataclass(frozen=True)
class CreateRun:
    """``POST /api/runs/create``: a new run, or the existing one with the same external id."""

    name: str
    project: str
    config: str | None
    logger_settings: str | None
    system_metadata: str | None
    tags: tuple[str, ...]
    external_id: str | None
    created: int | None
    updated: int | None


@dataclass(frozen=True)
class ResumeRun:
    """``POST /api/runs/resume``: find a run by id, display id or external id (within a project)."""

    run_id: int | None
    display_id: str | None
    external_id: str | None
    project: str | None


@dataclass(frozen=True)
class StatusUpdate:
    """``POST /api/runs/status/update``."""

    run_id: int
    status: str
    metadata: str | None


@dataclass(frozen=True)
class LogNamesAdd:
    """``POST /api/runs/logName/add``: register keys with their type."""

    run_id: int
    log_type: str
    names: tuple[str, ...]


@dataclass(frozen=True)
class TagsUpdate:
    """``POST /api/runs/tags/update``: the whole new tag list."""

    run_id: int
    tags: tuple[str, ...]


@dataclass(frozen=True)
class ConfigUpdate:
    """``POST /api/runs/config/update``: a decoded config delta to deep-merge."""

    run_id: int
    delta: dict[str, Any]


@dataclass(frozen=True)
class GraphUpdate:
    """``POST /api/runs/modelGraph/create``: the graph, re-encoded as JSON text."""

    run_id: int
    graph: str


@dataclass(frozen=True)
class Alert:
    """``POST /api/runs/alert``."""

    run_id: int
    timestamp: int
    level: str
    title: str
    body: str
    email: bool
    url: str | None


@dataclass(frozen=True)
class MetricBatch:
    """``POST /ingest/metrics``: every value of the batch, grouped by key.

    ``series`` maps a key to its packed columns: little-endian int64 steps, int64 times and float64 values
    (non-finite values kept as IEEE NaN and infinities), in the order the lines came.
    """

    run_id: int
    series: dict[str, tuple[bytes, bytes, bytes]]
    count: int


@dataclass(frozen=True)
class DataBatch:
    """``POST /ingest/data``: rows of ``(step, time, logName, dataType, data)``."""

    run_id: int
    rows: list[tuple[int, int, str, str, str]]


@dataclass(frozen=True)
class LogBatch:
    """``POST /ingest/logs``: rows of ``(time, lineNumber, logType, message)``."""

    run_id: int
    rows: list[tuple[int, int, str, str]]


@dataclass(frozen=True)
class FileRequest:
    """One entry of ``POST /files``."""

    name: str
    size: int
    file_type: str
    time: int
    log_name: str
    step: int
    sample_index: int | None = None
    caption: str | None = None


@dataclass(frozen=True)
class FilesRequest:
    """``POST /files``: files to upload for one run, asked by one key."""

    run_id: int
    key_id: int
    files: tuple[FileRequest, ...] = field(default_factory=tuple)


Op = (
    CreateRun
    | ResumeRun
    | StatusUpdate
    | LogNamesAdd
    | TagsUpdate
    | ConfigUpdate
    | GraphUpdate
    | Alert
    | MetricBatch
    | DataBatch
    | LogBatch
    | FilesRequest
)
