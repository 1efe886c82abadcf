"""The runs table's read API: a page of runs (sorted, filtered, cursor-paged), groups, values, columns.

``GET /api/runs?project=P&sort=C&order=asc|desc&filter=F&limit=N&cursor=X`` answers
``{"runs": [...], "next": cursor or null, "total": n}``; without any of those parameters it answers the
plain list it always did. ``/api/runs/columns`` lists the columns a project's runs hold,
``/api/runs/groups`` groups runs by a column with counts and mean/min/max of metric columns,
``/api/runs/values`` gives chosen columns of every matching run (the charts across runs, and "select all
matching"), ``/api/runs/correlation`` ranks config columns by their Spearman correlation with a metric.
The SQL is built by :mod:`mlop_server._runquery` for the storage's dialect.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlop_server._errors import BadRequest
from mlop_server._http import Context, guarded, json_response
from mlop_server._runfields import run_times
from mlop_server._runfilter import FilterError, Node, columns_of, parse_filter
from mlop_server._runquery import (
    BUILTINS,
    Col,
    Query,
    Sql,
    after,
    bare_catalog,
    decode_cursor,
    encode_cursor,
)
from mlop_server._sqlite_fields import FIELDS_TABLE
from mlop_server._sqlite_writes import display_id
from mlop_server._storage import Storage

__all__ = ["QUERY_PARAMS", "is_query", "query_page", "runs_routes"]

logger = logging.getLogger(__name__)

#: Any of these on ``GET /api/runs`` asks for a page instead of the plain list.
QUERY_PARAMS: Final = ("cursor", "limit", "sort", "order", "filter")
DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 1000
#: Runs that one ``/values`` or ``/correlation`` request reads at most.
MAX_VALUES: Final = 20_000
MAX_VALUE_COLUMNS: Final = 50
MAX_GROUP_METRICS: Final = 20
MAX_GROUPS: Final = 1000
#: Config columns that ``/correlation`` ranks at most.
MAX_CORRELATED: Final = 200


class FilterProblem(BadRequest):
    """A filter or column that cannot be read; the message ends with ``(at position N)``, 0-based.

    The error body keeps the protocol's shape (``error``, ``message``).
    """

    def __init__(self, error: FilterError, field: str) -> None:
        super().__init__(error.message + f" (at position {error.position})", field=field)
        self.position = error.position


def is_query(request: Request) -> bool:
    """True when ``GET /api/runs`` asks for a page (any of :data:`QUERY_PARAMS`)."""
    return any(name in request.query_params for name in QUERY_PARAMS)


def _now() -> int:
    return int(time.time() * 1000)


def _wire(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def _json(value: Any) -> Any:
    """A JSON column as the driver gave it: text (SQLite) or already decoded (PostgreSQL's jsonb)."""
    return orjson.loads(value) if isinstance(value, (str, bytes)) else value


def _owner_sql(sql: Sql, project: str, owner: str | None) -> str:
    where = f"r.project = {sql.p(project)}"
    return where if owner is None else f"{where} AND r.owner = {sql.p(owner)}"


# -- the catalog of a project's columns ----------------------------------------------------------------

_CATALOGS: OrderedDict[tuple[int, str, str | None], tuple[tuple[Any, ...], dict[str, Any]]] = OrderedDict()


async def columns(storage: Storage, project: str, owner: str | None) -> dict[str, Any]:
    """``{"builtin": [...], "config": [{name, runs, numeric}], "metrics": [{name, runs}]}`` of a project."""
    sql = Sql(storage.dialect)
    where = _owner_sql(sql, project, owner)
    stamp = tuple(
        (await storage.read_sql(f"SELECT COUNT(*), MAX(r.updated) FROM runs r WHERE {where}", sql.params))[0]
    )
    cache_key = (id(storage), project, owner)
    cached = _CATALOGS.get(cache_key)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    if storage.dialect == "sqlite":  # the fields index (a covering range), not every run's JSON parsed
        mine = "" if owner is None else " JOIN runs r ON r.id = j.run_id AND r.owner = ?"
        flat = await storage.read_sql(
            f"SELECT j.key, COUNT(*), COUNT(j.num) FROM {FIELDS_TABLE} j{mine} WHERE j.project = ? "
            "GROUP BY j.key ORDER BY j.key",
            [project] if owner is None else [owner, project],
        )
    else:
        flat = await storage.read_sql(
            "SELECT j.key, COUNT(*), SUM(CASE WHEN jsonb_typeof(j.value) IN ('number', 'boolean') THEN 1 "
            f"ELSE 0 END) FROM runs r, jsonb_each(r.flat) j WHERE {where} GROUP BY j.key ORDER BY j.key",
            sql.params,
        )
    metrics = await storage.read_sql(
        "SELECT s.name, COUNT(*) FROM runs r JOIN series s ON s.run_id = r.id "
        f"WHERE {where} AND s.last_step IS NOT NULL GROUP BY s.name ORDER BY s.name",
        sql.params,
    )
    answer = {
        "builtin": ["name", "status", "tags", "user", "start", "ended", "duration", "host", "commit", "id"],
        "config": [
            {"name": k, "runs": int(n), "numeric": int(num or 0)}
            for k, n, num in flat
            if k.startswith("config.")
        ],
        "summary": [{"name": k, "runs": int(n)} for k, n, _ in flat if k.startswith("summary.")],
        "metrics": [{"name": k, "runs": int(n)} for k, n in metrics],
    }
    _CATALOGS[cache_key] = (stamp, answer)
    while len(_CATALOGS) > 64:
        _CATALOGS.popitem(last=False)
    return answer


async def _query(
    storage: Storage, project: str, owner: str | None, names: list[tuple[str, int]], now: int
) -> Query:
    """A query whose catalog is read only when a bare name needs it."""
    bare = [
        n for n, _ in names if n not in BUILTINS and n != "tags" and not n.startswith(("config.", "summary."))
    ]
    catalog = await bare_catalog(storage.dialect, storage.read_sql, project, owner, bare) if bare else None
    return Query(storage.dialect, catalog, now, project)


def _filter(text: str | None) -> Node | None:
    try:
        return parse_filter(text or "")
    except FilterError as error:
        raise FilterProblem(error, "filter") from None


def _resolve(q: Query, name: str, field: str) -> Col:
    try:
        return q.column(name)
    except FilterError as error:
        raise FilterProblem(error, field) from None


def _where(q: Query, sql: Sql, project: str, owner: str | None, node: Node | None) -> str:
    base = _owner_sql(sql, project, owner)
    try:
        return f"{base} AND {q.where(sql, node)}"
    except FilterError as error:
        raise FilterProblem(error, "filter") from None


# -- a page of runs ------------------------------------------------------------------------------------


async def query_page(
    storage: Storage,
    project: str,
    owner: str | None,
    *,
    sort: str = "created",
    order: str = "desc",
    filter_text: str | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> dict[str, Any]:
    """One page of a project's runs in the order asked, after ``cursor``, with the total that match."""
    if order not in ("asc", "desc"):
        raise BadRequest("must be asc or desc", field="order")
    node = _filter(filter_text)
    now = _now()
    q = await _query(storage, project, owner, [*columns_of(node), (sort, 0)], now)
    col = _resolve(q, sort, "sort")
    keys = q.sort_keys(col)
    names = [f"q.k{i}" for i in range(len(keys))] + ["q.id"]
    direction = "ASC" if order == "asc" else "DESC"
    directions = ["ASC"] + [direction] * (len(names) - 1)
    sql = Sql(storage.dialect)
    where = _where(q, sql, project, owner, node)
    cut = ""
    if cursor:
        try:
            key = decode_cursor(cursor, col.name, order, len(names))
        except ValueError as error:
            raise BadRequest(str(error), field="cursor") from None
        cut = "WHERE " + after(sql, names, directions, key)
    limit_sql = sql.p(limit + 1)
    select = ", ".join(f"{k} AS k{i}" for i, k in enumerate(keys))
    order_by = ", ".join(f"{n} {d}" for n, d in zip(names, directions, strict=True))
    text = (
        f"SELECT {', '.join(names)} FROM (SELECT r.id AS id, {select} FROM runs r{q.join_sql(sql)} "
        f"WHERE {where}) q {cut} ORDER BY {order_by} "
        f"LIMIT {limit_sql}"
    )
    count_sql = Sql(storage.dialect)
    count_where = _where(q, count_sql, project, owner, node)
    count_text = f"SELECT COUNT(*) FROM runs r{q.join_sql(count_sql, count_where)} WHERE {count_where}"
    # the page and the count side by side (each reader has its own connection)
    found, counted = await asyncio.gather(
        storage.read_sql(text, sql.params), storage.read_sql(count_text, count_sql.params)
    )
    total = counted[0][0]
    more = len(found) > limit
    found = found[:limit]
    runs = await _rows(storage, [int(row[-1]) for row in found], now)
    next_cursor = encode_cursor(col.name, order, list(found[-1])) if more and found else None
    return {"runs": runs, "next": next_cursor, "total": int(total), "sort": col.name, "order": order}


_ROW_COLUMNS: Final = (
    "id, number, name, project, status, tags, created, updated, external_id, owner, client_end, flat, host, "
    "git_commit"
)


async def _rows(storage: Storage, ids: list[int], now: int) -> list[dict[str, Any]]:
    """The page's runs in the order of ``ids``: fields, flattened config, summary values."""
    if not ids:
        return []
    sql = Sql(storage.dialect)
    marks = ", ".join(sql.p(i) for i in ids)
    rows = await storage.read_sql(f"SELECT {_ROW_COLUMNS} FROM runs WHERE id IN ({marks})", sql.params)
    stats = await storage.read_sql(
        f"SELECT run_id, name, vlast, vmin, vmax FROM series WHERE run_id IN ({marks}) "
        "AND last_step IS NOT NULL",
        sql.params[: len(ids)],
    )
    summaries: dict[int, dict[str, dict[str, Any]]] = {}
    for run_id, name, last, low, high in stats:
        summaries.setdefault(run_id, {})[name] = {"last": _wire(last), "min": _wire(low), "max": _wire(high)}
    out: dict[int, dict[str, Any]] = {}
    for row in rows:
        (
            run_id,
            number,
            name,
            project,
            status,
            tags,
            created,
            updated,
            external,
            owner,
            ended,
            flat,
            host,
            commit,
        ) = row
        fields = _json(flat) or {}
        summary = summaries.get(run_id, {})
        for key, value in fields.items():
            if key.startswith("summary."):
                summary.setdefault(key[8:], {"min": None, "max": None})["last"] = value
        out[run_id] = {
            "id": run_id,
            "number": number,
            "displayId": display_id(project, number),
            "name": name,
            "project": project,
            "status": status,
            "tags": _json(tags),
            "created": created,
            "updated": updated,
            "externalId": external,
            "owner": owner,
            "user": owner,
            **run_times(created, ended, status, now),
            "host": host,
            "commit": commit,
            "config": {k[7:]: v for k, v in fields.items() if k.startswith("config.")},
            "summary": summary,
        }
    return [out[i] for i in ids if i in out]


# -- groups, values, correlation -----------------------------------------------------------------------


def _group_value(q: Query, col: Col) -> list[str]:
    """The SQL that a group's value is read from (SQLite: the value and its JSON type)."""
    key = col.name
    if q.dialect == "sqlite":
        if key.startswith("config."):
            path = Sql("sqlite").lit(f'$."{key}"')
            return [f"json_extract(r.flat, {path})", f"json_type(r.flat, {path})"]
        present = [e for e in (col.num, col.text) if e]
        return [present[0] if len(present) == 1 else f"COALESCE({', '.join(present)})", "NULL"]
    if key.startswith("config."):
        return [f"r.flat -> {Sql('postgresql').lit(key)}"]
    return [f"COALESCE({', '.join(f'to_jsonb({e})' for e in (col.num, col.text) if e)})"]


async def groups(
    storage: Storage, project: str, owner: str | None, by: str, filter_text: str | None, metrics: list[str]
) -> list[dict[str, Any]]:
    """Runs grouped by the value of ``by``: count and, per metric column, n, mean, min and max."""
    node = _filter(filter_text)
    q = await _query(
        storage, project, owner, [*columns_of(node), (by, 0), *((m, 0) for m in metrics)], _now()
    )
    col = _resolve(q, by, "by")
    cols = [_resolve(q, m, "metric") for m in metrics]
    for c in cols:
        if c.num is None:
            raise BadRequest(f"{c.name} holds text; a group's mean needs numbers", field="metric")
    value = _group_value(q, col)
    aggs = "".join(f", COUNT({c.num}), AVG({c.num}), MIN({c.num}), MAX({c.num})" for c in cols)
    sql = Sql(storage.dialect)
    where = _where(q, sql, project, owner, node)
    by_cols = ", ".join(str(i + 1) for i in range(len(value)))
    found = await storage.read_sql(
        f"SELECT {', '.join(value)}, COUNT(*){aggs} FROM runs r{q.join_sql(sql)} WHERE {where} "
        f"GROUP BY {by_cols} ORDER BY {len(value) + 1} DESC, {by_cols} LIMIT {MAX_GROUPS}",
        sql.params,
    )
    out = []
    for row in found:
        got = row[0]
        if storage.dialect == "sqlite" and row[1] in ("true", "false"):
            got = row[1] == "true"
        rest = row[len(value) :]
        stats = {}
        for i, c in enumerate(cols):
            n, mean, low, high = rest[1 + 4 * i : 5 + 4 * i]
            stats[c.name] = {"n": int(n), "mean": _wire(mean), "min": _wire(low), "max": _wire(high)}
        out.append(
            {
                "value": got,  # PostgreSQL: the jsonb value, decoded by the driver
                "count": int(rest[0]),
                "metrics": stats,
            }
        )
    return out


async def values(
    storage: Storage, project: str, owner: str | None, filter_text: str | None, names: list[str], limit: int
) -> dict[str, Any]:
    """``{"ids", "names", "status", "columns": {name: [value per run]}, "total"}`` of the matching runs."""
    node = _filter(filter_text)
    q = await _query(storage, project, owner, [*columns_of(node), *((n, 0) for n in names)], _now())
    cols = [_resolve(q, n, "column") for n in names]
    select = "".join(f", {c.num or 'NULL'}, {c.text or 'NULL'}" for c in cols)
    sql = Sql(storage.dialect)
    where = _where(q, sql, project, owner, node)
    found = await storage.read_sql(
        f"SELECT r.id, r.name, r.status{select} FROM runs r{q.join_sql(sql)} WHERE {where} "
        f"ORDER BY r.id DESC LIMIT {sql.p(limit)}",
        sql.params,
    )
    return {
        "ids": [row[0] for row in found],
        "names": [row[1] for row in found],
        "status": [row[2] for row in found],
        "columns": {
            c.name: [_wire(row[3 + 2 * i] if row[3 + 2 * i] is not None else row[4 + 2 * i]) for row in found]
            for i, c in enumerate(cols)
        },
    }


def _ranks(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """0-based ranks, ties sharing their mean rank."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mean_rank = ends - (counts + 1) / 2.0
    ranked: npt.NDArray[np.float64] = mean_rank[inverse.reshape(-1)]
    return ranked


def spearman(x: list[Any], y: list[Any]) -> tuple[float | None, int]:
    """Spearman's rank correlation of the pairs where both are finite numbers, and how many pairs that is.

    None when fewer than 3 pairs remain or either side is constant.
    """
    pairs = [
        (a, b)
        for a, b in zip(x, y, strict=True)
        if isinstance(a, (int, float))
        and isinstance(b, (int, float))
        and math.isfinite(a)
        and math.isfinite(b)
    ]
    n = len(pairs)
    if n < 3:
        return None, n
    arr = np.array(pairs, dtype=np.float64)
    rx, ry = _ranks(arr[:, 0]), _ranks(arr[:, 1])
    if rx.std() == 0 or ry.std() == 0:
        return None, n
    return float(np.corrcoef(rx, ry)[0, 1]), n


async def correlation(
    storage: Storage, project: str, owner: str | None, filter_text: str | None, metric: str
) -> dict[str, Any]:
    """Each numeric config column's Spearman correlation with ``metric`` over the matching runs."""
    catalog = await columns(storage, project, owner)
    params = [c["name"] for c in catalog["config"] if c["numeric"] > 0][:MAX_CORRELATED]
    got = await values(storage, project, owner, filter_text, [metric, *params], MAX_VALUES)
    metric_name = next(iter(got["columns"]))
    target = got["columns"][metric_name]
    out = []
    for name in params:
        rho, n = spearman(got["columns"][name], target)
        out.append({"column": name, "rho": rho, "n": n})
    out.sort(key=lambda c: (c["rho"] is None, -abs(c["rho"] or 0.0), c["column"]))
    return {"metric": metric_name, "runs": len(got["ids"]), "correlations": out}


# -- routes ----------------------------------------------------------------------------------------------


def _project(request: Request) -> str:
    project = request.query_params.get("project")
    if not project:
        raise BadRequest("the query parameter is needed", field="project")
    return project


def _limit(request: Request, default: int, most: int) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= most or len(raw) > 9:
        raise BadRequest(f"must be an integer from 1 to {most}", field="limit")
    return int(raw)


def _names(request: Request, field: str, most: int) -> list[str]:
    names = list(dict.fromkeys(request.query_params.getlist(field)))
    if len(names) > most:
        raise BadRequest(f"give at most {most}", field=field)
    return names


async def page_response(ctx: Context, request: Request, owner: str | None) -> Response:
    """The answer of ``GET /api/runs`` with query parameters."""
    found = await query_page(
        ctx.storage,
        _project(request),
        owner,
        sort=request.query_params.get("sort") or "created",
        order=request.query_params.get("order") or "desc",
        filter_text=request.query_params.get("filter"),
        cursor=request.query_params.get("cursor"),
        limit=_limit(request, DEFAULT_LIMIT, MAX_LIMIT),
    )
    return Response(orjson.dumps(found), media_type="application/json")


def runs_routes(ctx: Context) -> list[Route]:
    """The runs table's routes (``GET /api/runs`` stays in the read API and calls :func:`page_response`)."""

    def owner_of(request: Request) -> str | None:
        key = ctx.authenticate(request)
        return None if key.admin else key.owner

    async def columns_route(request: Request) -> Response:
        owner = owner_of(request)
        return json_response(await columns(ctx.storage, _project(request), owner))

    async def groups_route(request: Request) -> Response:
        owner = owner_of(request)
        by = request.query_params.get("by")
        if not by:
            raise BadRequest("the query parameter is needed", field="by")
        metrics = _names(request, "metric", MAX_GROUP_METRICS)
        found = await groups(
            ctx.storage, _project(request), owner, by, request.query_params.get("filter"), metrics
        )
        return json_response({"by": by, "groups": found})

    async def values_route(request: Request) -> Response:
        owner = owner_of(request)
        names = _names(request, "column", MAX_VALUE_COLUMNS)
        limit = _limit(request, MAX_VALUES, MAX_VALUES)
        found = await values(
            ctx.storage, _project(request), owner, request.query_params.get("filter"), names, limit
        )
        return Response(orjson.dumps(found), media_type="application/json")

    async def correlation_route(request: Request) -> Response:
        owner = owner_of(request)
        metric = request.query_params.get("metric")
        if not metric:
            raise BadRequest("the query parameter is needed", field="metric")
        found = await correlation(
            ctx.storage, _project(request), owner, request.query_params.get("filter"), metric
        )
        return json_response(found)

    return [
        Route("/api/runs/columns", guarded(columns_route), methods=["GET"]),
        Route("/api/runs/groups", guarded(groups_route), methods=["GET"]),
        Route("/api/runs/values", guarded(values_route), methods=["GET"]),
        Route("/api/runs/correlation", guarded(correlation_route), methods=["GET"]),
    ]
