"""The OpenAPI 3.1 document of every route, served at ``/openapi.json``.

Request bodies carry an ``example`` each: the fuzz tests start from them.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from mlop_server._ops import DATA_TYPES, LOG_TYPES, RUN_STATUSES
from mlop_server._protocol import ALERT_LEVELS, CONSOLE_LOG_TYPES
from mlop_server._version import __version__

__all__ = ["openapi_document"]

logger = logging.getLogger(__name__)

_INT = {"type": "integer", "minimum": 0}
_RUN_ID = {"type": "integer", "minimum": 1}
_STR = {"type": "string"}
_JSON_TEXT = {"type": ["string", "null"], "description": "a JSON-encoded object"}
_ERROR = {
    "description": "refused",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"error": _STR, "message": _STR},
                "required": ["error", "message"],
            }
        }
    },
}

#: 429 and 503: retry after the seconds the ``Retry-After`` header gives.
_RETRY = {
    **_ERROR,
    "description": "refused for now",
    "headers": {"Retry-After": {"required": True, "schema": {"type": "string", "pattern": "^[0-9]+$"}}},
}


def _obj(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {**required, **(optional or {})},
        "required": sorted(required),
        "additionalProperties": False,
    }


def _enum(values: Any) -> dict[str, Any]:
    return {"type": "string", "enum": sorted(values)}


def _op(
    summary: str,
    *,
    body: dict[str, Any] | None = None,
    example: Any = None,
    media: str = "application/json",
    params: list[dict[str, Any]] | None = None,
    auth: bool = True,
    answer: dict[str, Any] | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            "200": {"description": "done", "content": {"application/json": {"schema": answer or {}}}},
            "400": _ERROR,
            "404": _ERROR,
        },
    }
    if auth:
        op["security"] = [{"bearer": []}]
        op["responses"]["403"] = _ERROR
    if auth or body is not None:  # a key, or an upload URL's signature
        op["responses"]["401"] = _ERROR
        op["responses"]["429"] = _RETRY
    op["responses"]["503"] = _RETRY
    if body is not None:
        op["requestBody"] = {"required": True, "content": {media: {"schema": body, "example": example}}}
        op["responses"].update({"408": _ERROR, "409": _ERROR, "413": _ERROR, "415": _ERROR})
    if params:
        op["parameters"] = params
    return op


def _query(name: str, required: bool, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema}


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": _RUN_ID}


_RUN_HEADER = {"name": "X-Run-Id", "in": "header", "required": True, "schema": {"type": "string"}}
_IDEMPOTENCY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
}

#: The runs table's query parameters of ``GET /api/runs`` (mlop_server._runsapi).
_RUNS_QUERY = [
    {
        **_query("sort", False, _STR),
        "description": "a column: name, created, config.lr, summary.loss.min, ...",
    },
    _query("order", False, {"type": "string", "enum": ["asc", "desc"]}),
    {**_query("filter", False, _STR), "description": 'e.g. lr < 0.01 and "baseline" in tags'},
    _query("limit", False, {"type": "integer", "minimum": 1, "maximum": 1000}),
    _query("cursor", False, _STR),
]

_NDJSON_NOTE = (
    "NDJSON: one object per line (each line is one of the schema), also accepted as application/json."
)


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The document (built once)."""
    tags = {"type": ["array", "null"], "items": _STR, "maxItems": 50}
    create = _obj(
        {"runName": _STR, "projectName": _STR},
        {
            "config": _JSON_TEXT,
            "loggerSettings": _JSON_TEXT,
            "systemMetadata": _JSON_TEXT,
            "tags": tags,
            "externalId": {"type": ["string", "null"]},
            "createdAt": {"type": ["integer", "null"]},
            "updatedAt": {"type": ["integer", "null"]},
        },
    )
    run_answer = _obj(
        {
            "runId": _RUN_ID,
            "number": _INT,
            "displayId": _STR,
            "projectName": _STR,
            "organizationSlug": _STR,
            "url": _STR,
            "resumed": {"type": "boolean"},
            "lastStep": {"type": ["integer", "null"]},
        }
    )
    metric_line = _obj(
        {
            "time": _INT,
            "step": _INT,
            "data": {
                "type": "object",
                "minProperties": 1,
                "additionalProperties": {
                    "anyOf": [
                        {"type": "number"},
                        {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]},
                    ]
                },
            },
        }
    )
    data_line = _obj(
        {"time": _INT, "step": _INT, "logName": _STR, "dataType": _enum(DATA_TYPES), "data": _STR}
    )
    log_line = _obj({"time": _INT, "message": _STR, "lineNumber": _INT, "logType": _enum(CONSOLE_LOG_TYPES)})
    file_entry = _obj(
        {"fileName": _STR, "fileSize": _INT, "fileType": _STR, "time": _INT, "logName": _STR, "step": _INT},
        {"sampleIndex": {"type": ["integer", "null"]}, "caption": {"type": ["string", "null"]}},
    )
    ok = _obj({"success": {"type": "boolean"}})
    setting = _obj(
        {"project": _STR, "name": _STR, "value": {}, "scope": {"enum": ["owner", "project", None]}}
    )
    t = 1_795_870_984_866

    def ingest(summary: str, line: dict[str, Any], example: str) -> dict[str, Any]:
        op = _op(
            f"{summary}. {_NDJSON_NOTE}",
            body=line,
            example=example,
            media="application/x-ndjson",
            params=[_RUN_HEADER, _IDEMPOTENCY],
            answer=_obj({"success": {"type": "boolean"}}, {"count": _INT}),
        )
        return {"post": op}

    def api(
        summary: str, schema: dict[str, Any], example: Any, answer: dict[str, Any] = ok
    ) -> dict[str, Any]:
        return {"post": _op(summary, body=schema, example=example, params=[_IDEMPOTENCY], answer=answer)}

    def read(summary: str, *params: dict[str, Any]) -> dict[str, Any]:
        return {"get": _op(summary, params=[_path("runId"), *params])}

    paths: dict[str, Any] = {
        "/health": {
            "get": _op("Liveness; needs no key", auth=False, answer=_obj({"status": _STR}, {"version": _STR}))
        },
        "/ready": {
            "get": _op(
                "Readiness: the database answers, its schema is the server's (else 503); needs no key",
                auth=False,
                answer=_obj(
                    {"status": _STR, "database": _STR},
                    {"schema": {"type": "integer"}, "expected": {"type": "integer"}, "backend": _STR},
                ),
            )
        },
        "/api/slug": {"post": _op("Check the key; answers the organization slug")},
        "/api/runs/create": api(
            "Create a run, or attach to the run with the same externalId in the project",
            create,
            {"runName": "r", "projectName": "p", "config": '{"lr": 0.1}', "tags": ["a"], "externalId": None},
            run_answer,
        ),
        "/api/runs/resume": api(
            "Resume a run by runId, displayId or externalId with projectName",
            _obj({}, {"runId": _RUN_ID, "displayId": _STR, "externalId": _STR, "projectName": _STR}),
            {"runId": 1},
            run_answer,
        ),
        "/api/runs/status/update": api(
            "Set a run's status",
            _obj({"runId": _RUN_ID, "status": _enum(RUN_STATUSES)}, {"statusMetadata": _JSON_TEXT}),
            {"runId": 1, "status": "COMPLETED", "statusMetadata": None},
        ),
        "/api/runs/logName/add": api(
            "Register keys with their type",
            _obj(
                {
                    "runId": _RUN_ID,
                    "logType": _enum(LOG_TYPES),
                    "logName": {"type": "array", "items": _STR, "minItems": 1},
                }
            ),
            {"runId": 1, "logType": "METRIC", "logName": ["train/loss"]},
        ),
        "/api/runs/tags/update": api(
            "Replace the tag list",
            _obj({"runId": _RUN_ID, "tags": tags}),
            {"runId": 1, "tags": ["x", "group:g"]},
        ),
        "/api/runs/config/update": api(
            "Deep-merge a config delta",
            _obj({"runId": _RUN_ID, "config": {"type": "string", "description": "a JSON-encoded object"}}),
            {"runId": 1, "config": '{"model": {"depth": 5}}'},
        ),
        "/api/runs/modelGraph/create": api(
            "Store the model graph",
            _obj({"runId": _RUN_ID, "graph": _obj({"format": _STR, "nodes": {"type": "object"}})}),
            {"runId": 1, "graph": {"format": "torch", "nodes": {".": {"type": "Net", "depth": 0}}}},
        ),
        "/api/runs/trigger": api(
            "Heartbeat; answers CANCELLED once the run was cancelled",
            _obj({"runId": _RUN_ID}),
            {"runId": 1},
            _obj({"status": _enum(RUN_STATUSES), "triggers": {"type": "array"}}),
        ),
        "/api/runs/alert": api(
            "Record an alert",
            _obj(
                {
                    "runId": _RUN_ID,
                    "alert": _obj(
                        {"timestamp": _INT, "level": _enum(ALERT_LEVELS), "title": _STR},
                        {"body": _STR, "email": {"type": "boolean"}, "url": {"type": ["string", "null"]}},
                    ),
                }
            ),
            {"runId": 1, "alert": {"timestamp": t, "level": "WARNING", "title": "t", "body": "b"}},
        ),
        "/ingest/metrics": ingest(
            "Numbers", metric_line, f'{{"time": {t}, "step": 1, "data": {{"train/loss": 0.5}}}}\n'
        ),
        "/ingest/data": ingest(
            "Histograms, tables, graphs and string series",
            data_line,
            f'{{"time": {t}, "step": 1, "logName": "s", "dataType": "string-series", "data": "hello"}}\n',
        ),
        "/ingest/logs": ingest(
            "Console lines",
            log_line,
            f'{{"time": {t}, "message": "hi", "lineNumber": 1, "logType": "INFO"}}\n',
        ),
        "/files": {
            "post": _op(
                "Ask for upload URLs: answers {logName: [{fileName: url}]}; PUT the bytes to each URL",
                body=_obj({"files": {"type": "array", "items": file_entry, "minItems": 1}}),
                example={
                    "files": [
                        {
                            "fileName": "a.png",
                            "fileSize": 3,
                            "fileType": "png",
                            "time": t,
                            "logName": "img",
                            "step": 1,
                        }
                    ]
                },
                params=[_RUN_HEADER, _IDEMPOTENCY],
            )
        },
        "/uploads/{fileId}": {
            "put": _op(
                "Upload a file's bytes to the signed URL /files gave (the URL is the credential)",
                body={"type": "string", "format": "binary"},
                example="abc",
                media="application/octet-stream",
                auth=False,
                params=[
                    _path("fileId"),
                    _query("run", True, _RUN_ID),
                    _query("expires", True, _INT),
                    _query("signature", True, _STR),
                ],
            )
        },
        "/api/runs": {
            "get": _op(
                "The runs of a project, newest first; with any of sort, order, filter, limit, cursor: a page "
                "{runs, next, total} sorted and filtered in the database (the runs table)",
                params=[_query("project", True, _STR), *_RUNS_QUERY],
            )
        },
        "/api/runs/columns": {
            "get": _op(
                "The columns a project's runs hold: config keys (with how many runs hold a number), summary "
                "keys, metrics",
                params=[_query("project", True, _STR)],
            )
        },
        "/api/runs/groups": {
            "get": _op(
                "The matching runs grouped by a column's value: count, and n/mean/min/max of metric columns",
                params=[
                    _query("project", True, _STR),
                    _query("by", True, _STR),
                    _query("filter", False, _STR),
                    _query("metric", False, {"type": "array", "items": _STR, "maxItems": 20}),
                ],
            )
        },
        "/api/runs/values": {
            "get": _op(
                "Chosen columns of every matching run, newest first, as lists (charts across runs; with no "
                "column: the ids of all matching runs)",
                params=[
                    _query("project", True, _STR),
                    _query("filter", False, _STR),
                    _query("column", False, {"type": "array", "items": _STR, "maxItems": 50}),
                    _query("limit", False, {"type": "integer", "minimum": 1, "maximum": 20000}),
                ],
            )
        },
        "/api/runs/correlation": {
            "get": _op(
                "Each numeric config column's Spearman correlation with a metric column over the matching "
                "runs, with the number of runs, strongest first",
                params=[
                    _query("project", True, _STR),
                    _query("metric", True, _STR),
                    _query("filter", False, _STR),
                ],
            )
        },
        "/api/runs/{runId}": read("A run with its config, metadata and graph"),
        "/api/runs/{runId}/metrics": read(
            "A metric in step order, at most max_points (default 100,000) points (each bucket's min and max);"
            " X-Total-Points gives the series' length",
            _query("key", True, _STR),
            _query("max_points", False, {"type": "integer", "minimum": 2}),
        ),
        "/api/runs/{runId}/keys": read("Every key with its type"),
        "/api/runs/{runId}/logs": read(
            "Console lines",
            _query("limit", False, {"type": "integer", "minimum": 1}),
            _query("offset", False, _INT),
        ),
        "/api/runs/{runId}/data": read(
            "Rows of a data key in step order, at most limit (default and most: 10,000) from offset",
            _query("key", True, _STR),
            _query("limit", False, {"type": "integer", "minimum": 1}),
            _query("offset", False, _INT),
        ),
        "/api/runs/{runId}/files": read("Files of a key, with download links", _query("key", True, _STR)),
        "/api/runs/{runId}/files/{fileId}/content": {
            "get": _op("Download a file", params=[_path("runId"), _path("fileId")])
        },
        "/api/runs/{runId}/cancel": {
            "post": _op(
                "Ask the run to stop (admin key): its next heartbeat answers CANCELLED",
                params=[_path("runId")],
            )
        },
        "/api/projects": {
            "get": _op(
                "Every project with runs, most recently updated first (the dashboard's start page)",
                answer={
                    "type": "array",
                    "items": _obj({"name": _STR, "runs": _INT, "updated": _INT}),
                },
            )
        },
        "/api/runs/last": {
            "get": _op(
                "The last logged value of each key in each run of a project (the runs table's columns)",
                params=[_query("project", True, _STR), _query("key", True, {"type": "array", "items": _STR})],
                answer={
                    "type": "array",
                    "items": _obj({"id": _RUN_ID, "values": {"type": "object"}}),
                },
            )
        },
        "/api/runs/{runId}/series": {
            "get": _op(
                "Several metric series at once, each downsampled to max_points (min and max per bucket), as "
                "columns: {key: {steps, times, values}}, a downsampled one with total (its length) and lo, "
                "hi (each point's bucket's lowest and highest value); unknown keys are left out",
                params=[
                    _path("runId"),
                    _query("key", True, {"type": "array", "items": _STR, "maxItems": 100}),
                    _query("max_points", False, {"type": "integer", "minimum": 2, "maximum": 100000}),
                ],
            )
        },
        "/api/runs/many": {
            "get": _op(
                "Several runs at once, each with its keys ([{name, type}]): the compare page; runs that do "
                "not exist or that the key may not read are left out",
                params=[_query("id", True, {"type": "array", "items": _RUN_ID, "maxItems": 100})],
                answer={"type": "array", "items": {"type": "object"}},
            )
        },
        "/api/projects/settings": {
            "get": _op(
                "A dashboard setting of a project (name: columns, layout, ...); an admin key's value is the "
                "project's, a non-admin key's its owner's own (else the project's)",
                params=[_query("project", True, _STR), _query("name", True, _STR)],
                answer=setting,
            ),
            "put": _op(
                "Keep a dashboard setting of a project: any JSON value up to 64 KiB (null forgets it); "
                "an admin key writes the project's value, a non-admin key its owner's own",
                body={},
                example={"groups": {"sys": {"collapsed": True}}},
                params=[_query("project", True, _STR), _query("name", True, _STR)],
                answer=setting,
            ),
        },
        "/openapi.json": {"get": _op("This document")},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "mlop-server", "version": __version__},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }
