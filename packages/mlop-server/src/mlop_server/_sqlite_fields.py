"""The SQLite backend's index of run fields: one row per run and ``flat`` key, for config sorts and filters.

Config sorts and filters are index lookups in it instead of a JSON parse per run and expression.

``run_fields (run_id, key, project, num, text)`` holds each member of ``runs.flat`` (see
:mod:`mlop_server._runfields`) with the runs table's two values of a column: ``num`` (numbers, booleans as
1 and 0) and ``text`` (strings), each NULL where it does not apply (both for a JSON null). It is kept in
step with ``runs.flat`` by triggers inside the database, so every path that writes a run (create, config
update, the backfill of older databases, and older servers that open the file again) keeps it right, and
it is filled once when a database made before it is opened.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Final

__all__ = ["FIELDS_TABLE", "NUM", "TEXT", "ensure_fields", "num_sql", "text_sql"]

logger = logging.getLogger(__name__)

FIELDS_TABLE: Final = "run_fields"


def num_sql(kind: str, value: str) -> str:
    """A JSON value's number in the runs table (booleans 1 and 0), from SQL giving its JSON type and value."""
    return (
        f"(CASE {kind} WHEN 'integer' THEN {value} WHEN 'real' THEN {value} "
        "WHEN 'true' THEN 1 WHEN 'false' THEN 0 END)"
    )


def text_sql(kind: str, value: str) -> str:
    """A JSON value's text in the runs table (strings only)."""
    return f"(CASE WHEN {kind} = 'text' THEN {value} END)"


#: A ``flat`` member's two values from ``json_each`` (alias ``j``): the same as the runs query computes from
#: ``json_type``/``json_extract`` where it reads the JSON text itself.
NUM: Final = num_sql("j.type", "j.value")
TEXT: Final = text_sql("j.type", "j.value")

# A row that is not valid JSON adds no fields rather than failing the write that carries it.
_MEMBERS: Final = "json_each(CASE WHEN json_valid({flat}) THEN {flat} END) j"

_SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS {FIELDS_TABLE} (
    run_id INTEGER NOT NULL, key TEXT NOT NULL, project TEXT NOT NULL, num, text TEXT,
    PRIMARY KEY (run_id, key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS run_fields_num ON {FIELDS_TABLE} (project, key, num);
CREATE INDEX IF NOT EXISTS run_fields_text ON {FIELDS_TABLE} (project, key, text) WHERE text IS NOT NULL;
CREATE TRIGGER IF NOT EXISTS run_fields_insert AFTER INSERT ON runs BEGIN
    INSERT OR REPLACE INTO {FIELDS_TABLE} (run_id, key, project, num, text)
    SELECT new.id, j.key, new.project, {NUM}, {TEXT} FROM {_MEMBERS.format(flat="new.flat")};
END;
CREATE TRIGGER IF NOT EXISTS run_fields_update AFTER UPDATE OF flat, project ON runs BEGIN
    DELETE FROM {FIELDS_TABLE} WHERE run_id = old.id;
    INSERT OR REPLACE INTO {FIELDS_TABLE} (run_id, key, project, num, text)
    SELECT new.id, j.key, new.project, {NUM}, {TEXT} FROM {_MEMBERS.format(flat="new.flat")};
END;
CREATE TRIGGER IF NOT EXISTS run_fields_delete AFTER DELETE ON runs BEGIN
    DELETE FROM {FIELDS_TABLE} WHERE run_id = old.id;
END;
"""

_FILL: Final = (
    f"INSERT OR REPLACE INTO {FIELDS_TABLE} (run_id, key, project, num, text) "
    f"SELECT r.id, j.key, r.project, {NUM}, {TEXT} FROM runs r, {_MEMBERS.format(flat='r.flat')}"
)


def ensure_fields(conn: sqlite3.Connection) -> None:
    """Create the fields table, its indexes and triggers when missing, and fill it from every run.

    Runs once per database, in one transaction (a crash leaves either nothing or all of it; a second
    server opening the file at the same moment fills it again to the same rows); later opens find the
    table and do nothing. Call it outside a transaction, after ``runs.flat`` exists and is filled.
    """
    present = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (FIELDS_TABLE,)
    ).fetchone()
    if present is not None:
        return
    try:
        conn.executescript(f"BEGIN IMMEDIATE;\n{_SCHEMA}\n{_FILL};\nCOMMIT;")
    except sqlite3.Error:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    (filled,) = conn.execute(f"SELECT COUNT(*) FROM {FIELDS_TABLE}").fetchone()
    if filled:
        logger.info("indexed %d config and summary fields of the existing runs", filled)
