"""Parsing and checking protocol bodies, as strictly as ``protocol.md`` reads.

Each ``parse_*`` function takes the raw body and returns an op from ``_ops`` or raises
:class:`~mlop_server._errors.BadRequest` naming the line (NDJSON) and the field at fault. A batch is checked
whole before anything is stored, so a bad line never leaves the lines before it half-applied.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import orjson

from mlop_server._errors import BadRequest
from mlop_server._ops import (
    DATA_TYPES,
    LOG_TYPES,
    RUN_STATUSES,
    Alert,
    ConfigUpdate,
    CreateRun,
    DataBatch,
    FileRequest,
    FilesRequest,
    GraphUpdate,
    LogBatch,
    LogNamesAdd,
    ResumeRun,
    StatusUpdate,
    TagsUpdate,
)

__all__ = [
    "CONSOLE_LOG_TYPES",
    "INT64_MAX",
    "MAX_DEPTH",
    "MAX_LINE_KEYS",
    "check_depth",
    "check_fields",
    "ndjson",
    "parse_alert",
    "parse_config_update",
    "parse_create",
    "parse_data",
    "parse_files",
    "parse_graph",
    "parse_log_names",
    "parse_logs",
    "parse_resume",
    "parse_slug",
    "parse_status",
    "parse_tags",
    "parse_trigger",
]

logger = logging.getLogger(__name__)

CONSOLE_LOG_TYPES: Final = frozenset({"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})
ALERT_LEVELS: Final = frozenset({"DEBUG", "INFO", "WARN", "WARNING", "ERROR", "CRITICAL", "FATAL"})
MAX_TAGS: Final = 50
MAX_NAME: Final = 512
_DATA_FIELDS: Final = frozenset({"time", "step", "logName", "dataType", "data"})
_LOG_FIELDS: Final = frozenset({"time", "message", "lineNumber", "logType"})
_FILE_REQUIRED: Final = frozenset({"fileName", "fileSize", "fileType", "time", "logName", "step"})
_HISTOGRAM_FIELDS: Final = frozenset({"freq", "maxFreq", "bins", "shape", "type", "v"})
_TABLE_FIELDS: Final = frozenset({"table", "col", "type", "v"})
_FILE_OPTIONAL: Final = frozenset({"sampleIndex", "caption"})
INT64_MAX: Final = 2**63 - 1
#: The deepest nesting of objects and lists accepted anywhere in a body, JSON text in it included: deeper
#: values could be stored but not answered again (the encoder stops at 255 levels).
MAX_DEPTH: Final = 64
#: The most keys one NDJSON line (or one JSON object) may hold.
MAX_LINE_KEYS: Final = 10_000
_NONE: Final[frozenset[str]] = frozenset()


# -- field checks ----------------------------------------------------------------------------------------


def check_fields(
    obj: dict[str, Any], required: frozenset[str], optional: frozenset[str], line: int | None = None
) -> None:
    """Reject unknown fields and missing required ones, naming the first at fault."""
    for name in obj:
        if name not in required and name not in optional:
            raise BadRequest("unknown field", line=line, field=name)
    for name in sorted(required):
        if name not in obj:
            raise BadRequest("missing", line=line, field=name)


def _int(value: Any, name: str, line: int | None = None, *, minimum: int = 0) -> int:
    if type(value) is not int:
        raise BadRequest("must be an integer", line=line, field=name)
    if value < minimum or value > INT64_MAX:
        raise BadRequest(f"must be an integer from {minimum} to 2**63-1", line=line, field=name)
    return value


def _opt_int(value: Any, name: str, line: int | None = None) -> int | None:
    return None if value is None else _int(value, name, line)


def _str(value: Any, name: str, line: int | None = None, *, empty: bool = False, limit: int = 0) -> str:
    if type(value) is not str:
        raise BadRequest("must be a string", line=line, field=name)
    if not empty and not value:
        raise BadRequest("must not be empty", line=line, field=name)
    if limit and len(value) > limit:
        raise BadRequest(f"is longer than {limit} characters", line=line, field=name)
    return value


def _opt_str(value: Any, name: str, line: int | None = None, *, limit: int = 0) -> str | None:
    return None if value is None else _str(value, name, line, empty=True, limit=limit)


def _json_text(value: Any, name: str, *, obj: bool = True) -> str | None:
    """A nested object sent as JSON text (``config``, ``systemMetadata``...), or None."""
    if value is None:
        return None
    text = _str(value, name, empty=True)
    try:
        decoded = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise BadRequest("must be a JSON-encoded string", field=name) from None
    check_depth(decoded, text, field=name)
    if obj and not isinstance(decoded, dict):
        raise BadRequest("must be a JSON-encoded object", field=name)
    return text


def _tags(value: Any, name: str = "tags") -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise BadRequest("must be a list of strings", field=name)
    if len(value) > MAX_TAGS:
        raise BadRequest(f"has more than {MAX_TAGS} tags", field=name)
    tags = tuple(_str(tag, f"{name}[{i}]", limit=MAX_NAME) for i, tag in enumerate(value))
    if sum(tag.startswith("group:") for tag in tags) > 1:
        raise BadRequest('has more than one "group:" tag', field=name)
    return tags


def check_depth(value: Any, raw: bytes | str, line: int | None = None, field: str | None = None) -> None:
    """Refuse ``value`` (decoded from ``raw``) when it nests deeper than :data:`MAX_DEPTH`.

    Only a text with that many brackets is walked, so flat values cost one count.
    """
    opening = (b"{", b"[") if isinstance(raw, bytes) else ("{", "[")
    if raw.count(opening[0]) + raw.count(opening[1]) <= MAX_DEPTH:  # type: ignore[arg-type]
        return
    level: list[Any] = [value]
    for _ in range(MAX_DEPTH + 1):
        deeper: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                deeper.extend(item.values())
            elif isinstance(item, list):
                deeper.extend(item)
        if not deeper:
            return
        level = deeper
    raise BadRequest(f"nests deeper than {MAX_DEPTH} levels", line=line, field=field)


def _object(body: bytes, line: int | None = None) -> dict[str, Any]:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"not valid JSON ({exc})", line=line) from None
    if type(obj) is not dict:
        raise BadRequest("must be a JSON object", line=line)
    check_depth(obj, body, line)
    if len(obj) > MAX_LINE_KEYS:
        raise BadRequest(f"has {len(obj)} fields; the most is {MAX_LINE_KEYS}", line=line)
    return obj


def _run_id(obj: dict[str, Any]) -> int:
    return _int(obj["runId"], "runId", minimum=1)


def ndjson(body: bytes) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` of every non-blank NDJSON line; an empty body is refused."""
    out = []
    for number, raw in enumerate(body.split(b"\n"), 1):
        if raw.strip():
            out.append((number, _object(raw, number)))
    if not out:
        raise BadRequest("the body holds no NDJSON line")
    return out


# -- api routes ------------------------------------------------------------------------------------------


def parse_slug(body: bytes) -> None:
    """``POST /api/slug`` takes an empty body (or ``{}``)."""
    if body.strip() and _object(body):
        raise BadRequest("takes no fields", field=next(iter(_object(body))))


def parse_create(body: bytes) -> CreateRun:
    """``POST /api/runs/create``."""
    obj = _object(body)
    check_fields(
        obj,
        frozenset({"runName", "projectName"}),
        frozenset(
            {"config", "loggerSettings", "systemMetadata", "tags", "externalId", "createdAt", "updatedAt"}
        ),
    )
    return CreateRun(
        name=_str(obj["runName"], "runName", empty=True, limit=MAX_NAME),
        project=_str(obj["projectName"], "projectName", limit=MAX_NAME),
        config=_json_text(obj.get("config"), "config"),
        logger_settings=_json_text(obj.get("loggerSettings"), "loggerSettings"),
        system_metadata=_json_text(obj.get("systemMetadata"), "systemMetadata"),
        tags=_tags(obj.get("tags")),
        external_id=_opt_str(obj.get("externalId"), "externalId", limit=MAX_NAME) or None,
        created=_opt_int(obj.get("createdAt"), "createdAt"),
        updated=_opt_int(obj.get("updatedAt"), "updatedAt"),
    )


def parse_resume(body: bytes) -> ResumeRun:
    """``POST /api/runs/resume``: by ``runId``, ``displayId`` or ``externalId`` with ``projectName``."""
    obj = _object(body)
    check_fields(obj, frozenset(), frozenset({"runId", "displayId", "externalId", "projectName"}))
    op = ResumeRun(
        run_id=None if obj.get("runId") is None else _run_id(obj),
        display_id=_opt_str(obj.get("displayId"), "displayId", limit=MAX_NAME) or None,
        external_id=_opt_str(obj.get("externalId"), "externalId", limit=MAX_NAME) or None,
        project=_opt_str(obj.get("projectName"), "projectName", limit=MAX_NAME) or None,
    )
    if op.run_id is None and op.display_id is None and op.external_id is None:
        raise BadRequest("one of runId, displayId or externalId is needed", field="runId")
    if op.external_id is not None and op.project is None:
        raise BadRequest("is needed with externalId", field="projectName")
    return op


def parse_status(body: bytes) -> StatusUpdate:
    """``POST /api/runs/status/update``."""
    obj = _object(body)
    check_fields(obj, frozenset({"runId", "status"}), frozenset({"statusMetadata"}))
    status = obj["status"]
    if type(status) is not str or status not in RUN_STATUSES:
        raise BadRequest(f"must be one of {', '.join(sorted(RUN_STATUSES))}", field="status")
    return StatusUpdate(_run_id(obj), status, _json_text(obj.get("statusMetadata"), "statusMetadata"))


def parse_log_names(body: bytes) -> LogNamesAdd:
    """``POST /api/runs/logName/add``."""
    obj = _object(body)
    check_fields(obj, frozenset({"runId", "logType", "logName"}), frozenset())
    log_type = obj["logType"]
    if type(log_type) is not str or log_type not in LOG_TYPES:
        raise BadRequest(f"must be one of {', '.join(sorted(LOG_TYPES))}", field="logType")
    names = obj["logName"]
    if not isinstance(names, list) or not names:
        raise BadRequest("must be a non-empty list of strings", field="logName")
    return LogNamesAdd(
        _run_id(obj),
        log_type,
        tuple(_str(name, f"logName[{i}]", limit=MAX_NAME) for i, name in enumerate(names)),
    )


def parse_tags(body: bytes) -> TagsUpdate:
    """``POST /api/runs/tags/update``."""
    obj = _object(body)
    check_fields(obj, frozenset({"runId", "tags"}), frozenset())
    if obj["tags"] is None:
        raise BadRequest("must be a list of strings", field="tags")
    return TagsUpdate(_run_id(obj), _tags(obj["tags"]))


def parse_config_update(body: bytes) -> ConfigUpdate:
    """``POST /api/runs/config/update``: ``config`` is a JSON-encoded object."""
    obj = _object(body)
    check_fields(obj, frozenset({"runId", "config"}), frozenset())
    text = _json_text(_str(obj["config"], "config"), "config")
    assert text is not None  # _str rejected None
    return ConfigUpdate(_run_id(obj), orjson.loads(text))


def _check_graph(graph: Any) -> None:
    if not isinstance(graph, dict):
        raise BadRequest("must be an object", field="graph")
    check_fields(graph, frozenset({"format", "nodes"}), frozenset(), None)
    _str(graph["format"], "graph.format", limit=64)
    nodes = graph["nodes"]
    if not isinstance(nodes, dict):
        raise BadRequest("must be an object", field="graph.nodes")
    for path, node in nodes.items():
        where = f"graph.nodes[{path!r}]"
        if not isinstance(node, dict):
            raise BadRequest("must be an object", field=where)
        for name in node:
            if name not in ("type", "depth", "order", "params", "edges"):
                raise BadRequest("unknown field", field=f"{where}.{name}")
        _str(node.get("type"), f"{where}.type", limit=MAX_NAME)
        _int(node.get("depth"), f"{where}.depth")
        if "order" in node:
            _int(node["order"], f"{where}.order")
        params = node.get("params", {})
        if not isinstance(params, dict) or not all(
            isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)
            for shape in params.values()
        ):
            raise BadRequest("must map names to shapes (lists of integers)", field=f"{where}.params")
        edges = node.get("edges", [])
        if not isinstance(edges, list) or not all(
            isinstance(edge, list) and len(edge) == 2 and all(type(end) is str for end in edge)
            for edge in edges
        ):
            raise BadRequest("must be a list of [source, target] pairs", field=f"{where}.edges")


def parse_graph(body: bytes) -> GraphUpdate:
    """``POST /api/runs/modelGraph/create``."""
    obj = _object(body)
    check_fields(obj, frozenset({"runId", "graph"}), frozenset())
    _check_graph(obj["graph"])
    return GraphUpdate(_run_id(obj), orjson.dumps(obj["graph"]).decode())


def parse_trigger(body: bytes) -> int:
    """``POST /api/runs/trigger``: the heartbeat; returns the run id."""
    obj = _object(body)
    check_fields(obj, frozenset({"runId"}), frozenset())
    return _run_id(obj)


def parse_alert(body: bytes) -> Alert:
    """``POST /api/runs/alert``."""
    obj = _object(body)
    check_fields(obj, frozenset({"runId", "alert"}), frozenset())
    alert = obj["alert"]
    if not isinstance(alert, dict):
        raise BadRequest("must be an object", field="alert")
    for name in alert:
        if name not in ("timestamp", "level", "title", "body", "email", "url"):
            raise BadRequest("unknown field", field=f"alert.{name}")
    for name in ("timestamp", "level", "title"):
        if name not in alert:
            raise BadRequest("missing", field=f"alert.{name}")
    level = alert["level"]
    if type(level) is not str or level not in ALERT_LEVELS:
        raise BadRequest(f"must be one of {', '.join(sorted(ALERT_LEVELS))}", field="alert.level")
    email = alert.get("email", False)
    if type(email) is not bool:
        raise BadRequest("must be a boolean", field="alert.email")
    return Alert(
        run_id=_run_id(obj),
        timestamp=_int(alert["timestamp"], "alert.timestamp"),
        level=level,
        title=_str(alert["title"], "alert.title", empty=True, limit=4096),
        body=_opt_str(alert.get("body"), "alert.body", limit=65536) or "",
        email=email,
        url=_opt_str(alert.get("url"), "alert.url", limit=4096),
    )


def parse_files(body: bytes, run_id: int, key_id: int, max_file_size: int) -> FilesRequest:
    """``POST /files``: upload requests for ``run_id``, each file at most ``max_file_size`` bytes."""
    obj = _object(body)
    check_fields(obj, frozenset({"files"}), frozenset())
    entries = obj["files"]
    if not isinstance(entries, list) or not entries:
        raise BadRequest("must be a non-empty list", field="files")
    files = []
    seen = set()
    for i, entry in enumerate(entries):
        where = f"files[{i}]"
        if not isinstance(entry, dict):
            raise BadRequest("must be an object", field=where)
        for name in entry:
            if name not in _FILE_REQUIRED and name not in _FILE_OPTIONAL:
                raise BadRequest("unknown field", field=f"{where}.{name}")
        for name in sorted(_FILE_REQUIRED):
            if name not in entry:
                raise BadRequest("missing", field=f"{where}.{name}")
        file_name = _str(entry["fileName"], f"{where}.fileName", limit=255)
        if any(c in file_name for c in "/\\\0") or file_name in (".", "..") or not file_name.isprintable():
            raise BadRequest("must be a plain file name", field=f"{where}.fileName")
        size = _int(entry["fileSize"], f"{where}.fileSize")
        if size > max_file_size:
            raise BadRequest(
                f"is over this server's limit of {max_file_size} bytes", field=f"{where}.fileSize"
            )
        log_name = _str(entry["logName"], f"{where}.logName", limit=MAX_NAME)
        if (log_name, file_name) in seen:
            raise BadRequest("is asked for twice in one request", field=f"{where}.fileName")
        seen.add((log_name, file_name))
        files.append(
            FileRequest(
                name=file_name,
                size=size,
                file_type=_str(entry["fileType"], f"{where}.fileType", empty=True, limit=32),
                time=_int(entry["time"], f"{where}.time"),
                log_name=log_name,
                step=_int(entry["step"], f"{where}.step"),
                sample_index=_opt_int(entry.get("sampleIndex"), f"{where}.sampleIndex"),
                caption=_opt_str(entry.get("caption"), f"{where}.caption", limit=4096),
            )
        )
    return FilesRequest(run_id, key_id, tuple(files))


# -- ingest routes ---------------------------------------------------------------------------------------


def _number(value: Any) -> bool:
    return type(value) is float or type(value) is int


def _check_histogram(payload: dict[str, Any], line: int) -> None:
    check_fields(payload, _HISTOGRAM_FIELDS, _NONE, line)
    freq = payload["freq"]
    if not isinstance(freq, list) or not freq or not all(type(f) is int and f >= 0 for f in freq):
        raise BadRequest("must be a non-empty list of counts", line=line, field="data.freq")
    if type(payload["maxFreq"]) is not int:
        raise BadRequest("must be an integer", line=line, field="data.maxFreq")
    shape, bins = payload["shape"], payload["bins"]
    if shape == "uniform":
        ok = isinstance(bins, dict) and bins.keys() == {"min", "max", "num"} and type(bins["num"]) is int
        if not ok or not (_number(bins["min"]) and _number(bins["max"])):
            raise BadRequest(
                'must be {"min", "max", "num"} for a uniform histogram', line=line, field="data.bins"
            )
    elif shape == "generic":
        if not isinstance(bins, list) or len(bins) != len(freq) + 1 or not all(map(_number, bins)):
            raise BadRequest("must be the len(freq) + 1 bin edges", line=line, field="data.bins")
    else:
        raise BadRequest('must be "uniform" or "generic"', line=line, field="data.shape")
    if payload["type"] != "Histogram":
        raise BadRequest('must be "Histogram"', line=line, field="data.type")


def _check_table(payload: dict[str, Any], line: int) -> None:
    check_fields(payload, _TABLE_FIELDS, frozenset({"row"}), line)
    table, columns = payload["table"], payload["col"]
    if not isinstance(table, list) or not all(isinstance(row, list) for row in table):
        raise BadRequest("must be a list of rows", line=line, field="data.table")
    if not isinstance(columns, list) or not all(
        isinstance(c, dict) and c.keys() == {"name", "dtype"} for c in columns
    ):
        raise BadRequest('must be a list of {"name", "dtype"}', line=line, field="data.col")
    if "row" in payload and not isinstance(payload["row"], list):
        raise BadRequest("must be a list of row labels", line=line, field="data.row")
    if payload["type"] != "Table":
        raise BadRequest('must be "Table"', line=line, field="data.type")


def _check_payload(data_type: str, payload: dict[str, Any], line: int) -> None:
    """The payloads the protocol spells out (histogram, table) must have exactly their fields."""
    if data_type == "HISTOGRAM":
        _check_histogram(payload, line)
    elif data_type == "TABLE":
        _check_table(payload, line)


def parse_data(body: bytes, run_id: int) -> DataBatch:
    """``POST /ingest/data``: histograms, tables, graphs and string series."""
    rows = []
    for line, obj in ndjson(body):
        if obj.keys() != _DATA_FIELDS:
            check_fields(obj, _DATA_FIELDS, _NONE, line)
        data_type = obj["dataType"]
        if type(data_type) is not str or data_type not in DATA_TYPES:
            raise BadRequest(f"must be one of {', '.join(sorted(DATA_TYPES))}", line=line, field="dataType")
        data = obj["data"]
        if type(data) is not str:
            raise BadRequest(
                "must be a string (JSON text, or a string series' raw text)", line=line, field="data"
            )
        if data_type != "string-series":
            try:
                decoded = orjson.loads(data)
            except orjson.JSONDecodeError:
                decoded = None
            if not isinstance(decoded, dict):
                raise BadRequest("must be a JSON-encoded object", line=line, field="data")
            check_depth(decoded, data, line, "data")
            _check_payload(data_type, decoded, line)
        step = obj["step"]
        if type(step) is not int or not 0 <= step <= INT64_MAX:
            raise BadRequest("must be a non-negative integer", line=line, field="step")
        rows.append(
            (
                step,
                _int(obj["time"], "time", line),
                _str(obj["logName"], "logName", line, limit=MAX_NAME),
                data_type,
                data,
            )
        )
    return DataBatch(run_id, rows)


def parse_logs(body: bytes, run_id: int) -> LogBatch:
    """``POST /ingest/logs``: console lines."""
    rows = []
    for line, obj in ndjson(body):
        if obj.keys() != _LOG_FIELDS:
            check_fields(obj, _LOG_FIELDS, _NONE, line)
        log_type = obj["logType"]
        if type(log_type) is not str or log_type not in CONSOLE_LOG_TYPES:
            raise BadRequest(
                f"must be one of {', '.join(sorted(CONSOLE_LOG_TYPES))}", line=line, field="logType"
            )
        rows.append(
            (
                _int(obj["time"], "time", line),
                _int(obj["lineNumber"], "lineNumber", line),
                log_type,
                _str(obj["message"], "message", line, empty=True),
            )
        )
    return LogBatch(run_id, rows)
