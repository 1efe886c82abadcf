"""Which storage a server opens: SQLite under its data folder, or PostgreSQL (--db, MLOP_SERVER_DB)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from mlop_server._pg_schema import DatabaseError, describe_target
from mlop_server._storage import Storage

__all__ = [
    "DB_ENV",
    "DatabaseError",
    "database_url",
    "describe",
    "migrate_command",
    "open_storage",
    "url_has_password",
]

logger = logging.getLogger(__name__)

#: The environment variable that names the database when ``--db`` does not.
DB_ENV: Final = "MLOP_SERVER_DB"
SCHEMES: Final = ("postgresql", "postgres")


def database_url(given: str | None) -> str | None:
    """The database URL from ``--db`` or ``MLOP_SERVER_DB`` (None: SQLite); ``DatabaseError`` for another
    kind of URL."""
    url = given or os.environ.get(DB_ENV) or None
    if url is None:
        return None
    if urlsplit(url).scheme not in SCHEMES:
        raise DatabaseError(
            f"--db takes a postgresql://USER@HOST:PORT/DB URL, not {describe_target(url)!r} "
            "(leave it out for SQLite under --data)"
        )
    return url


def url_has_password(url: str) -> bool:
    """True when ``url`` carries a password (which a command line shows to every user of the machine)."""
    try:
        return urlsplit(url).password is not None
    except ValueError:
        return False


def describe(db: str | None, data_dir: Path) -> str:
    """Where the data lives, for the server's output: the database without its password, or the folder."""
    return describe_target(db) if db else str(data_dir)


def open_storage(db: str | None, data_dir: Path, *, max_pending: int = 1024) -> Storage:
    """The storage of a server: PostgreSQL at ``db`` (migrated on open) or SQLite in ``data_dir``.

    Raises:
        DatabaseError: the database is unreachable, refuses the login, is of a newer schema, or the
            PostgreSQL driver is not installed (the message names the extra to install).
    """
    if db:
        from mlop_server._pg_schema import require_psycopg

        require_psycopg()
        from mlop_server._postgres import PostgresStorage

        return PostgresStorage(db, max_pending=max_pending)
    from mlop_server._sqlite import SqliteStorage

    return SqliteStorage(data_dir / "mlop-server.db", max_pending=max_pending)


def migrate_command(db: str | None, *, dry_run: bool) -> int:
    """``mlop server migrate --db URL [--dry-run]``: apply (or print) the migrations the database lacks."""
    from mlop_server._pg_schema import SCHEMA_VERSION, migrate, pending

    if not db:
        print(f"mlop server migrate: give the database: --db postgresql://... or ${DB_ENV}", file=sys.stderr)
        return 2
    try:
        if dry_run:
            version, missing = pending(db)
            print(f"{describe_target(db)}: schema version {version}, this server's {SCHEMA_VERSION}")
            for step in missing:
                print(f"-- migration {step.version}: {step.name}\n{step.sql.strip()}\n")
            if not missing:
                print("nothing to apply")
            return 0
        applied = migrate(db)
    except DatabaseError as exc:
        print(f"mlop server migrate: {exc}", file=sys.stderr)
        return 2
    for step in applied:
        print(f"applied migration {step.version}: {step.name}")
    print(
        f"{describe_target(db)}: schema version {SCHEMA_VERSION}" + ("" if applied else " (nothing to apply)")
    )
    return 0
