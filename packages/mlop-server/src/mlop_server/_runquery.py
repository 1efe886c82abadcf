"""The runs table's queries (page, count, groups, values, columns) built as SQL for SQLite or PostgreSQL.

Sorting, filtering and paging happen in the database, over a run's own columns and the derived columns of
:mod:`mlop_server._runfields` (``runs.flat``, ``runs.host``, ``runs.git_commit``, ``runs.client_end`` and
the per-key metric stats of ``series``); on SQLite a config or summary key is read from the indexed
``run_fields`` rows of :mod:`mlop_server._sqlite_fields` (joined per run for sorts, an index range for most
tests), with the values the JSON text gives. A column of the table is one of:

- a built-in: ``id``, ``number``, ``name``, ``status``, ``user`` (or ``owner``), ``host``, ``commit``,
  ``project``, ``created`` (or ``start``), ``updated``, ``ended``, ``duration``; and ``tags`` in
  ``"x" in tags``;
- ``config.<dotted key>``: a leaf of the run's config;
- ``summary.<key>`` or ``summary.<key>.last``: ``run.summary[key]`` as stored, else the metric's value at
  its highest step; ``summary.<key>.min`` / ``.max``: the metric's least and greatest value;
- a bare name (``lr``) is ``config.lr`` when the project's runs have that config key, else
  ``summary.lr.last`` when they log that metric.

Every column has a numeric value (booleans count as 1 and 0) and a text value, each NULL where it does not
apply; runs without a value sort last in either direction. Pages are cut by keyset (the cursor holds the
last row's sort key), so a page costs the same wherever it is.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from mlop_server._runfilter import (
    And,
    Compare,
    Contains,
    FilterError,
    InList,
    Node,
    Not,
    Or,
    TagIn,
    Value,
)
from mlop_server._sqlite_fields import FIELDS_TABLE, num_sql, text_sql

__all__ = [
    "AGGREGATES",
    "BUILTINS",
    "Catalog",
    "Col",
    "Query",
    "Sql",
    "bare_catalog",
    "decode_cursor",
    "encode_cursor",
]

logger = logging.getLogger(__name__)

#: The summary aggregates a metric column can show.
AGGREGATES: Final = ("last", "min", "max")
#: Built-in columns: name -> (numeric SQL, text SQL); ``{now}`` is the server's clock in ms.
BUILTINS: Final[dict[str, tuple[str | None, str | None]]] = {
    "id": ("r.id", None),
    "number": ("r.number", None),
    "name": (None, "r.name"),
    "status": (None, "r.status"),
    "user": (None, "r.owner"),
    "owner": (None, "r.owner"),
    "host": (None, "r.host"),
    "commit": (None, "r.git_commit"),
    "project": (None, "r.project"),
    "created": ("r.created", None),
    "start": ("r.created", None),
    "updated": ("r.updated", None),
    "ended": ("r.client_end", None),
    "duration": (
        "(CASE WHEN r.status = 'RUNNING' THEN {now} - r.created ELSE r.client_end - r.created END)",
        None,
    ),
}
#: Config columns read through a join of the fields index (SQLite); further ones parse the JSON text.
MAX_FIELD_JOINS: Final = 16
_SQL_OPS: Final = {"==": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


@dataclass(frozen=True)
class Catalog:
    """What a project's runs hold: their config keys (as ``config.<key>``) and metric keys."""

    config: frozenset[str]
    metrics: frozenset[str]


@dataclass(frozen=True)
class Col:
    """A resolved column: its canonical name and its SQL values (either may be None)."""

    name: str
    num: str | None
    text: str | None


@dataclass
class Sql:
    """SQL text and its parameters for one dialect, built left to right."""

    dialect: str
    parts: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)

    def p(self, value: Any) -> str:
        """A placeholder for ``value``."""
        self.params.append(value)
        return "?" if self.dialect == "sqlite" else "%s"

    def lit(self, text: str) -> str:
        """``text`` as a SQL string literal (column keys only: they hold no backslash or control)."""
        quoted = "'" + text.replace("'", "''") + "'"
        return quoted if self.dialect == "sqlite" else quoted.replace("%", "%%")


def _packed(value: Any) -> Any:
    """A sort key's value as JSON: infinities (a metric can end there) as ``{"f": "inf"}``."""
    return {"f": repr(value)} if isinstance(value, float) and not math.isfinite(value) else value


def _unpacked(value: Any) -> Any:
    if isinstance(value, dict) and value.get("f") in ("inf", "-inf", "nan"):
        return float(value["f"])
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        return value
    raise ValueError("not a cursor of this server")


def encode_cursor(sort: str, order: str, key: list[Any]) -> str:
    """An opaque cursor after the row whose sort key is ``key``."""
    raw = orjson.dumps({"s": sort, "o": order, "k": [_packed(v) for v in key]})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str, order: str, width: int) -> list[Any]:
    """The sort key a cursor holds; ``ValueError`` for a cursor of another sort or not one of ours."""
    try:
        raw = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        raise ValueError("not a cursor of this server") from None
    if not isinstance(raw, dict) or raw.get("s") != sort or raw.get("o") != order:
        raise ValueError("this cursor belongs to another sort order; start again without it")
    key = raw.get("k")
    if not isinstance(key, list) or len(key) != width:
        raise ValueError("not a cursor of this server")
    return [_unpacked(v) for v in key]


class Query:
    """One query's state: the dialect, the columns it resolved and the metric joins they need.

    Args:
        dialect: ``"sqlite"`` or ``"postgresql"``.
        catalog: The project's columns, to resolve bare names (None: bare names are config keys).
        now: The server's clock (ms), for the duration of running runs.
        project: The project the query reads (SQLite: a config test then reads the fields index by range).
    """

    def __init__(self, dialect: str, catalog: Catalog | None, now: int, project: str | None = None) -> None:
        if dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"no runs query for the dialect {dialect!r}")
        self.dialect = dialect
        self.catalog = catalog
        self.now = now
        self.project = project
        self.joins: dict[str, str] = {}  # metric key -> alias
        self.fields: dict[str, str] = {}  # SQLite: flat key -> alias of its run_fields row

    # -- columns ---------------------------------------------------------------------------------------

    def _metric(self, key: str) -> str:
        alias = self.joins.get(key)
        if alias is None:
            alias = self.joins[key] = f"s{len(self.joins)}"
        return alias

    def join_sql(self, sql: Sql, used: str | None = None) -> str:
        """The LEFT JOINs of the metric stats and (SQLite) the config fields the resolved columns use.

        With ``used`` (the SQL that will follow), only the joins it names: a count needs those of its
        filter, not those of the page's sort.
        """

        def wanted(alias: str) -> bool:
            return used is None or re.search(rf"\b{alias}\.", used) is not None

        fields = "".join(
            f" LEFT JOIN {FIELDS_TABLE} {alias} ON {alias}.run_id = r.id AND {alias}.key = {sql.lit(key)}"
            for key, alias in self.fields.items()
            if wanted(alias)
        )
        return fields + "".join(
            f" LEFT JOIN series {alias} ON {alias}.run_id = r.id AND {alias}.name = {sql.lit(key)}"
            for key, alias in self.joins.items()
            if wanted(alias)
        )

    def _json(self, key: str) -> tuple[str, str]:
        """A ``flat`` key's numeric and text SQL values."""
        lit = Sql(self.dialect).lit
        if self.dialect == "sqlite":
            # one indexed row per run and key (_sqlite_fields), its values those json_type/json_extract give;
            # past MAX_FIELD_JOINS keys (SQLite joins at most 64 tables) the same values from the JSON text
            alias = self.fields.get(key)
            if alias is None and len(self.fields) < MAX_FIELD_JOINS:
                alias = self.fields[key] = f"f{len(self.fields)}"
            if alias is not None:
                return f"{alias}.num", f"{alias}.text"
            path = lit(f'$."{key}"')
            value, kind = f"json_extract(r.flat, {path})", f"json_type(r.flat, {path})"
            return num_sql(kind, value), text_sql(kind, value)
        k = lit(key)
        kind = f"jsonb_typeof(r.flat -> {k})"
        num = (
            f"(CASE {kind} WHEN 'number' THEN (r.flat ->> {k})::float8 "
            f"WHEN 'boolean' THEN (CASE WHEN (r.flat ->> {k}) = 'true' THEN 1.0 ELSE 0.0 END) END)"
        )
        return num, f"(CASE WHEN {kind} = 'string' THEN r.flat ->> {k} END)"

    def column(self, name: str, position: int = 0) -> Col:
        """The column called ``name``; ``FilterError`` (at ``position``) when there is none."""
        if any(ord(c) < 32 for c in name) or '"' in name or "\\" in name or not name:
            raise FilterError(f"{name!r} cannot be a column name", position)
        if name in BUILTINS:
            num, text = BUILTINS[name]
            return Col(name, num.format(now=int(self.now)) if num else None, text)
        if name == "tags":
            raise FilterError('tags can only be tested with "name" in tags', position)
        if name.startswith("config."):
            return Col(name, *self._json(name))
        if name.startswith("summary."):
            rest = name[len("summary.") :]
            key, _, agg = rest.rpartition(".")
            if agg not in AGGREGATES or not key:
                key, agg = rest, "last"
            alias = self._metric(key)
            if agg == "last":
                num, text = self._json(f"summary.{key}")
                return Col(f"summary.{key}.last", f"COALESCE({num}, {alias}.vlast)", text)
            return Col(f"summary.{key}.{agg}", f"{alias}.v{agg}", None)
        if self.catalog is None or f"config.{name}" in self.catalog.config:
            return self.column(f"config.{name}", position)
        if name in self.catalog.metrics:
            return self.column(f"summary.{name}.last", position)
        raise FilterError(
            f"no column {name!r}: the runs have no config key or metric of that name "
            f"(write config.{name}, summary.{name}, or a built-in: {', '.join(sorted(BUILTINS))})",
            position,
        )

    # -- filters ---------------------------------------------------------------------------------------

    def where(self, sql: Sql, node: Node | None) -> str:
        """The SQL condition of a filter; its parameters go to ``sql`` in order."""
        if node is None:
            return "1 = 1"
        if isinstance(node, And):
            return "(" + " AND ".join(self.where(sql, n) for n in node.items) + ")"
        if isinstance(node, Or):
            return "(" + " OR ".join(self.where(sql, n) for n in node.items) + ")"
        if isinstance(node, Not):
            return f"NOT COALESCE({self.where(sql, node.item)}, {self._false()})"
        if isinstance(node, TagIn):
            if self.dialect == "sqlite":
                return f"EXISTS (SELECT 1 FROM json_each(r.tags) WHERE json_each.value = {sql.p(node.tag)})"
            return f"(r.tags::jsonb @> jsonb_build_array({sql.p(node.tag)}::text))"
        joined = dict(self.fields)
        col = self.column(node.column, node.position)
        if self.dialect == "sqlite" and self.project is not None and _missing_is_false(node):
            key = next((k for k, a in self.fields.items() if col.num == f"{a}.num"), None)
            if key is not None:
                # a test that no run without the key passes: the runs whose index row passes it, found
                # by an index range (the same values and operators, so the same runs)
                self.fields = joined
                head = f"r.id IN (SELECT run_id FROM {FIELDS_TABLE} WHERE project = {sql.p(self.project)}"
                test = self._test(sql, Col(col.name, "num", "text"), node)
                return f"({head} AND key = {sql.lit(key)} AND {test}))"
        return self._test(sql, col, node)

    def _test(self, sql: Sql, col: Col, node: Compare | InList | Contains) -> str:
        if isinstance(node, Contains):
            text = col.text or self._as_text(col)
            if self.dialect == "sqlite":
                return f"(instr({text}, {sql.p(node.text)}) > 0)"
            return f"(strpos({text}, {sql.p(node.text)}) > 0)"
        if isinstance(node, InList):
            return (
                "(" + " OR ".join(self._compare(sql, col, "==", v, node.position) for v in node.values) + ")"
            )
        return self._compare(sql, col, node.op, node.value, node.position)

    def _false(self) -> str:
        return "0" if self.dialect == "sqlite" else "FALSE"

    def _as_text(self, col: Col) -> str:
        assert col.num is not None
        return f"CAST({col.num} AS TEXT)"

    def _compare(self, sql: Sql, col: Col, op: str, value: Value, position: int) -> str:
        if value is None:
            present = " OR ".join(f"{e} IS NOT NULL" for e in (col.num, col.text) if e)
            if op not in ("==", "!="):
                raise FilterError("null can only be compared with == or !=", position)
            return f"NOT ({present})" if op == "==" else f"({present})"
        if isinstance(value, bool):
            value = 1.0 if value else 0.0
        if isinstance(value, float):
            if col.num is None:
                raise FilterError(f'{col.name} holds text; compare it with a "string"', position)
            return f"({col.num} {_SQL_OPS[op]} {sql.p(value)})"
        if col.text is None:
            raise FilterError(f"{col.name} holds numbers; compare it with a number", position)
        if col.name == "status":
            value = value.upper()
        return f"({col.text} {_SQL_OPS[op]} {sql.p(value)})"

    # -- sorting ---------------------------------------------------------------------------------------

    def sort_keys(self, col: Col) -> list[str]:
        """The SQL of a column's sort key: a rank (0 number, 1 text, 2 none), then the values."""
        if col.num and col.text:
            rank = f"(CASE WHEN {col.num} IS NOT NULL THEN 0 WHEN {col.text} IS NOT NULL THEN 1 ELSE 2 END)"
            return [rank, f"COALESCE({col.num}, 0)", f"COALESCE({col.text}, '')"]
        if col.num:
            return [f"(CASE WHEN {col.num} IS NOT NULL THEN 0 ELSE 2 END)", f"COALESCE({col.num}, 0)"]
        assert col.text is not None
        return [f"(CASE WHEN {col.text} IS NOT NULL THEN 1 ELSE 2 END)", f"COALESCE({col.text}, '')"]


def _kind_of_name(sql: Sql, project: str, owner: str | None, name: str) -> str:
    """SQL that is 1 where a project's runs hold the config key ``name``, 2 for such a metric, else 0."""

    def mine() -> str:
        return "" if owner is None else f" AND r.owner = {sql.p(owner)}"

    def field(key: str) -> str:
        if sql.dialect == "sqlite":
            join = "" if owner is None else " JOIN runs r ON r.id = f.run_id"
            test = f"f.project = {sql.p(project)} AND f.key = {sql.p(key)}"
            return f"EXISTS (SELECT 1 FROM {FIELDS_TABLE} f{join} WHERE {test}{mine()})"
        test = f"r.project = {sql.p(project)}{mine()}"
        return f"EXISTS (SELECT 1 FROM runs r WHERE {test} AND r.flat ? {sql.p(key)})"

    config = field(f"config.{name}")
    metric = f"EXISTS (SELECT 1 FROM runs r JOIN series s ON s.run_id = r.id AND s.name = {sql.p(name)} "
    metric += f"WHERE r.project = {sql.p(project)}{mine()} AND s.last_step IS NOT NULL)"
    summary = field(f"summary.{name}")
    # a config key first, as Query.column resolves a bare name
    return f"CASE WHEN {config} THEN 1 WHEN {metric} OR {summary} THEN 2 ELSE 0 END"


async def bare_catalog(
    dialect: str,
    read_sql: Callable[[str, Sequence[Any]], Awaitable[list[tuple[Any, ...]]]],
    project: str,
    owner: str | None,
    names: list[str],
) -> Catalog:
    """What bare ``names`` are in a project's runs, each found by lookups that stop at the first run.

    The same answer as the project's full column catalog for those names (a config key held by any run,
    even as null; a metric with values or a ``run.summary`` key), without reading every run: on SQLite an
    index lookup in the fields table, on PostgreSQL a key test on ``flat``.
    """
    config, metrics = set(), set()
    for name in dict.fromkeys(names):
        sql = Sql(dialect)
        ((kind,),) = await read_sql(f"SELECT {_kind_of_name(sql, project, owner, name)}", sql.params)
        if kind == 1:
            config.add(f"config.{name}")
        elif kind == 2:
            metrics.add(name)
    return Catalog(frozenset(config), frozenset(metrics))


def _missing_is_false(node: Compare | InList | Contains) -> bool:
    """Whether a run without the column's value fails the test (all but ``== null`` and ``in (.., null)``)."""
    if isinstance(node, Compare):
        return not (node.value is None and node.op == "==")
    if isinstance(node, InList):
        return None not in node.values
    return True


def after(sql: Sql, names: list[str], directions: list[str], key: list[Any]) -> str:
    """The keyset condition: the row comes after ``key`` in the order of ``names`` (each ASC or DESC)."""
    name, direction, value = names[0], directions[0], key[0]
    strict = f"{name} {'>' if direction == 'ASC' else '<'} {sql.p(value)}"
    if len(names) == 1:
        return strict
    equal = f"{name} = {sql.p(value)}"
    return f"({strict} OR ({equal} AND {after(sql, names[1:], directions[1:], key[1:])}))"
