"""``mlop server`` (also ``python -m mlop_server``): run the server, and manage its keys.

The first line the server prints on stdout is its URL (``http://HOST:PORT``), so a script that started it
with ``--port 0`` can read where it listens. When the database has no key yet and none is given, the server
creates an admin key and prints it once on the next line.

The admin key comes from ``MLOP_SERVER_ADMIN_KEY``, from standard input (``--admin-key-stdin``, a prompt on a
terminal) or, visible to every user of the machine in ``ps``, from ``--admin-key``. A start that fails (a
weak key, a port taken, a bad option) creates nothing: every check runs before the data folder is touched.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from mlop_server import _migrate_data
from mlop_server._config import MIB, ServerConfig
from mlop_server._errors import BadRequest, Conflict
from mlop_server._keys import KEY_PATTERN, generate_key, hash_key, key_prefix
from mlop_server._storage import Storage

__all__ = ["add_server_parser", "main"]

logger = logging.getLogger(__name__)

ADMIN_KEY_ENV = "MLOP_SERVER_ADMIN_KEY"
DEFAULT_DATA = "~/.mlop/server"
#: The shortest admin key accepted: a guessable admin key opens every run.
MIN_ADMIN_KEY: Final = 20


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data or DEFAULT_DATA).expanduser().resolve()


def _given_admin_key(args: argparse.Namespace) -> str | None:
    """The admin key from ``--admin-key``, ``--admin-key-stdin`` or the environment, checked; or None."""
    given = os.environ.get(ADMIN_KEY_ENV) or None
    source = ADMIN_KEY_ENV
    if args.admin_key_stdin:
        given = getpass.getpass("admin key: ") if sys.stdin.isatty() else sys.stdin.readline()
        given, source = given.strip(), "--admin-key-stdin"
    elif args.admin_key:
        print(
            "mlop server: warning: --admin-key shows the key to every user of this machine (ps); "
            f"set {ADMIN_KEY_ENV} or use --admin-key-stdin",
            file=sys.stderr,
        )
        given, source = args.admin_key, "--admin-key"
    if given is None:
        return None
    if len(given) < MIN_ADMIN_KEY:
        raise SystemExit(
            f"mlop server: the admin key ({source}) must have at least {MIN_ADMIN_KEY} characters"
        )
    if not KEY_PATTERN.match(given):
        raise SystemExit(
            f"mlop server: the admin key ({source}) must look like mlps_… or mlpi_… "
            "(letters, digits, - and _, up to 200 characters)"
        )
    return given


def _ensure_admin_key(storage: Storage, given: str | None) -> str | None:
    """Make sure an admin key exists; returns a key created now (to print once), else None."""
    if given:
        found = storage.find_key(hash_key(given))
        if found is None:
            try:
                storage.add_key(hash_key(given), key_prefix(given), "admin", admin=True)
            except Conflict:
                pass  # another process sharing the database stored it a moment ago
        elif not found.active:
            logger.warning("the admin key given was revoked (key %d); it stays revoked", found.id)
        return None
    if storage.list_keys():
        return None
    key = generate_key()
    storage.add_key(hash_key(key), key_prefix(key), "admin", admin=True)
    return key


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise SystemExit(f"mlop server: cannot listen on {host}:{port}: {exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _watch_parent(server: Any, parent: int | None = None) -> None:
    """Stop ``server`` gracefully once the process that started this one (``parent``: by default the
    present parent) is gone (a killed test run, a killed supervisor)."""
    parent = os.getppid() if parent is None else parent

    def watch() -> None:
        while not server.should_exit:
            if os.getppid() != parent:
                logger.warning("the parent process %d is gone; stopping", parent)
                server.should_exit = True
                return
            time.sleep(0.5)

    threading.Thread(target=watch, name="mlop-server-parent-watch", daemon=True).start()


_POSITIVE: Final = (
    "heartbeat_timeout",
    "max_body_mb",
    "max_file_mb",
    "max_uploads",
    "max_connections",
    "max_requests",
    "max_pending_writes",
    "upload_ttl",
    "header_timeout",
    "body_timeout",
    "failed_key_burst",
)


def _check_options(args: argparse.Namespace) -> None:
    for name in _POSITIVE:
        if getattr(args, name) <= 0:
            raise SystemExit(f"mlop server: --{name.replace('_', '-')} must be above 0")
    if args.reap_interval is not None and args.reap_interval <= 0:
        raise SystemExit("mlop server: --reap-interval must be above 0")


def _config(args: argparse.Namespace) -> ServerConfig:
    timeout = float(args.heartbeat_timeout)
    return ServerConfig(
        data_dir=_data_dir(args),
        org=args.org,
        public_url=args.public_url,
        heartbeat_timeout=timeout,
        reap_interval=float(args.reap_interval) if args.reap_interval else max(0.1, min(15.0, timeout / 5)),
        max_body=int(args.max_body_mb * MIB),
        max_file_size=int(args.max_file_mb * MIB),
        max_uploads=args.max_uploads,
        max_pending_writes=args.max_pending_writes,
        max_requests=args.max_requests,
        max_connections=args.max_connections,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        upload_ttl=args.upload_ttl,
        auth_burst=args.failed_key_burst,
        files=args.files,
        db=_db(args),
        access_log=_access_log(args),
    )


def _access_log(args: argparse.Namespace) -> str | None:
    """``--access-log``: by default stderr while the log level shows info, else nothing."""
    if args.access_log is None:
        return "-" if args.log_level in ("debug", "info") else None
    if args.access_log in ("off", "none", ""):
        return None
    if args.access_log in ("-", "stderr"):
        return "-"
    return str(Path(args.access_log).expanduser().resolve())


def _check_files(args: argparse.Namespace) -> None:
    """A bad ``--files`` (an unknown scheme, a folder this user may not write, boto3 or credentials missing,
    a bucket that does not answer) stops the start with a clear error, before anything is created."""
    from mlop_server._files import check_files_option

    try:
        check_files_option(args.files, _data_dir(args))
    except ValueError as exc:
        raise SystemExit(f"mlop server: {exc}") from None


def _db(args: argparse.Namespace) -> str | None:
    """The database URL (``--db`` or ``MLOP_SERVER_DB``), or None for SQLite; exits on another kind of URL."""
    from mlop_server._backend import DatabaseError, database_url, url_has_password

    try:
        url = database_url(getattr(args, "db", None))
    except DatabaseError as exc:
        raise SystemExit(f"mlop server: {exc}") from None
    if getattr(args, "db", None) and url and url_has_password(url):
        print(
            "mlop server: warning: a password in --db is visible to every user of this machine (ps); "
            "set MLOP_SERVER_DB, PGPASSWORD or ~/.pgpass instead",
            file=sys.stderr,
        )
    return url


def open_configured_storage(db: str | None, data_dir: Path, max_pending: int = 1024) -> Storage:
    """The storage ``--db``/``--data`` name (PostgreSQL, or SQLite in the folder); one clear line and exit 2
    when the database cannot be used (unreachable, refused, newer schema, driver missing)."""
    from mlop_server._backend import DatabaseError, open_storage

    try:
        return open_storage(db, data_dir, max_pending=max_pending)
    except DatabaseError as exc:
        print(f"mlop server: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _open_storage(args: argparse.Namespace, config: ServerConfig) -> Storage:
    """The storage the server runs on; called once per server process (each worker opens its own)."""
    return open_configured_storage(config.db, config.data_dir, config.max_pending_writes)


def _serve(args: argparse.Namespace) -> int:
    from mlop_server import _workers

    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    _check_options(args)
    _check_files(args)
    workers = _workers.checked_count(args)
    given = _given_admin_key(args)
    sock = _bind(args.host, args.port)  # before the data folder: a port taken creates nothing
    os.umask(0o077)  # everything the server creates is its user's only
    config = _config(args)
    storage = _open_storage(args, config)
    created = _ensure_admin_key(storage, given)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"http://{shown}:{port}", flush=True)
    if created:
        print(f"admin key (shown once, keep it): {created}", flush=True)
    from mlop_server._backend import describe

    print(f"mlop-server: data in {describe(config.db, config.data_dir)}", flush=True)
    if workers == 1:
        return _serve_one(args, config, storage, sock, watch_parent=args.exit_with_parent)
    storage.close()  # each worker opens its own: nothing of the parent's connections crosses a fork
    from mlop_server import _prom

    supervisor = os.getpid()
    own_metrics_dir = not os.environ.get(_prom.MULTIPROC_ENV)
    metrics_dir = _prom.prepare_multiprocess()  # the workers' metrics, summed by whichever is asked
    try:
        return _workers.supervise(
            workers,
            lambda: _serve_one(
                args, config, _open_storage(args, config), sock, watch_parent=True, parent=supervisor
            ),
            exit_with_parent=args.exit_with_parent,
            on_worker_exit=_prom.worker_exited,
        )
    finally:
        if own_metrics_dir:
            _prom.remove_multiprocess(metrics_dir)


def _serve_one(
    args: argparse.Namespace,
    config: ServerConfig,
    storage: Storage,
    sock: socket.socket,
    *,
    watch_parent: bool,
    parent: int | None = None,
) -> int:
    """Serve ``sock`` in this process until a signal (or the parent's end, with ``watch_parent``)."""
    import uvicorn

    from mlop_server._app import create_app
    from mlop_server._guard import ACCEPT_BATCH, ConnectionGuard, limit_requests

    app = create_app(config, storage)
    guard = ConnectionGuard(config)
    server = uvicorn.Server(
        uvicorn.Config(
            limit_requests(app, config.max_requests),
            http=guard.protocol_class(),
            backlog=ACCEPT_BATCH,
            log_level="warning",
            access_log=False,
            timeout_keep_alive=int(config.keep_alive),
            lifespan="on",
        )
    )
    if watch_parent:
        _watch_parent(server, parent)  # a worker names the supervisor: it may be gone before this line
    server.run(sockets=[sock])
    return 0


def _open(args: argparse.Namespace) -> Storage:
    os.umask(0o077)
    return open_configured_storage(_db(args), _data_dir(args))


def _migrate(args: argparse.Namespace) -> int:
    from mlop_server._backend import migrate_command

    return migrate_command(_db(args), dry_run=args.dry_run)


def _projects(args: argparse.Namespace) -> tuple[str, ...] | None:
    if not args.projects:
        return None
    names = tuple(dict.fromkeys(p.strip() for item in args.projects for p in item.split(",") if p.strip()))
    if not names:
        raise SystemExit("mlop server keys: --projects needs at least one project name")
    return names


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _keys_create(args: argparse.Namespace) -> int:
    projects = _projects(args)
    if not args.name.strip():
        raise SystemExit("mlop server keys: --name must not be empty")
    storage = _open(args)
    try:
        key = generate_key()
        try:
            stored = storage.add_key(
                hash_key(key), key_prefix(key), args.name, admin=args.admin, projects=projects
            )
        except Conflict:  # pragma: no cover - 256 random bits do not collide
            print("mlop server keys: try again", file=sys.stderr)
            return 1
        except BadRequest as exc:
            print(f"mlop server keys: {exc.message}", file=sys.stderr)
            return 2
    finally:
        storage.close()
    print(key)
    scope = f"; projects: {', '.join(projects)}" if projects else ""
    print(
        f"key {stored.id} (owner {args.name}{', admin' if stored.admin else ''}{scope}); shown once, keep it",
        file=sys.stderr,
    )
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    storage = _open(args)
    try:
        keys = storage.list_keys()
    finally:
        storage.close()
    rows = [("ID", "PREFIX", "NAME", "ADMIN", "PROJECTS", "CREATED", "REVOKED")]
    rows += [
        (
            str(k.id),
            k.prefix + "…",
            k.name,
            "yes" if k.admin else "no",
            "*" if k.projects is None else ",".join(k.projects),
            _when(k.created),
            _when(k.revoked),
        )
        for k in keys
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    storage = _open(args)
    try:
        key = storage.revoke_key(args.key)
    finally:
        storage.close()
    if key is None:
        print(
            f"mlop server keys: no single key matches {args.key!r} (give its ID or PREFIX)", file=sys.stderr
        )
        return 1
    print(f"revoked key {key.id} ({key.prefix}…)")
    return 0


def add_server_parser(parser: argparse.ArgumentParser) -> None:
    """Add the server's options and its ``keys`` sub-commands to ``parser``."""
    parser.allow_abbrev = False  # `keys create --admin` must not read as a prefix of `--admin-key`
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=3001, help="port; 0 picks a free one (default: 3001)")
    parser.add_argument("--data", default=None, help=f"database and files folder (default: {DEFAULT_DATA})")
    parser.add_argument(
        "--db",
        default=None,
        metavar="postgresql://USER@HOST:PORT/DB",
        help="keep the data in PostgreSQL (also $MLOP_SERVER_DB; the password from PGPASSWORD or ~/.pgpass); "
        "default: SQLite under --data",
    )
    parser.add_argument(
        "--admin-key",
        default=None,
        help=f"the admin key to create; visible to other users in ps: prefer ${ADMIN_KEY_ENV}",
    )
    parser.add_argument(
        "--admin-key-stdin", action="store_true", help="read the admin key from standard input (a prompt)"
    )
    parser.add_argument(
        "--files",
        default=None,
        metavar="DIR|s3://BUCKET/PREFIX",
        help="where uploaded files go: a folder all server processes share, or S3 with the AWS_* variables "
        "and MLOP_SERVER_S3_ENDPOINT (default: <data>/files)",
    )
    parser.add_argument(
        "--access-log",
        default=None,
        metavar="stderr|off|FILE",
        help="one JSON line per request (default: stderr when --log-level is info or debug)",
    )
    parser.add_argument("--org", default="local", help="organization slug (default: local)")
    parser.add_argument("--public-url", default=None, help="base URL for links (default: the one asked)")
    parser.add_argument(
        "--heartbeat-timeout", type=float, default=150.0, help="seconds before a silent run is FAILED"
    )
    parser.add_argument("--reap-interval", type=float, default=None, help="seconds between reaper passes")
    parser.add_argument("--max-body-mb", type=float, default=64.0, help="largest request body in MiB")
    parser.add_argument("--max-file-mb", type=float, default=5120.0, help="largest upload in MiB")
    parser.add_argument("--max-uploads", type=int, default=16, help="uploads at once before 429")
    parser.add_argument(
        "--max-connections",
        type=int,
        default=2048,
        help="open connections; slow and idle ones go first above",
    )
    parser.add_argument("--max-requests", type=int, default=256, help="requests handled at once before 503")
    parser.add_argument("--max-pending-writes", type=int, default=1024, help="writes waiting before 503")
    parser.add_argument(
        "--header-timeout", type=float, default=10.0, help="seconds, in all, for a request line and headers"
    )
    parser.add_argument(
        "--body-timeout", type=float, default=60.0, help="seconds a body may pause (and its base deadline)"
    )
    parser.add_argument("--upload-ttl", type=int, default=3600, help="seconds an upload URL is valid")
    parser.add_argument(
        "--failed-key-burst", type=int, default=100, help="wrong keys an address may send before 429"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes on the one port (above 1 needs PostgreSQL, --db; default: 1)",
    )
    parser.add_argument(
        "--exit-with-parent", action="store_true", help="stop when the process that started the server ends"
    )
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.set_defaults(func=_serve)

    keys = parser.add_subparsers(dest="server_command", metavar="keys")
    _migrate_data.add_parser(keys)  # migrate-data: an embedded server into PostgreSQL
    manage = keys.add_parser("keys", help="create, list and revoke keys")
    actions = manage.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument(
        "--data", default=argparse.SUPPRESS, help=f"the server's folder (default: {DEFAULT_DATA})"
    )
    data.add_argument("--db", default=argparse.SUPPRESS, help="the server's PostgreSQL database URL")
    create = actions.add_parser("create", parents=[data], help="create a key and print it once")
    create.add_argument("--name", default="key", help="the key's owner: keys of one name share their runs")
    create.add_argument("--admin", action="store_true", help="the key reads and changes every run")
    create.add_argument(
        "--projects", nargs="+", default=None, metavar="PROJECT", help="the projects it may create runs in"
    )
    create.set_defaults(func=_keys_create)
    listing = actions.add_parser("list", parents=[data], help="list keys (prefixes only)")
    listing.set_defaults(func=_keys_list)
    revoke = actions.add_parser("revoke", parents=[data], help="revoke a key by ID or PREFIX")
    revoke.add_argument("key", help="the key's ID or PREFIX (as `keys list` shows)")
    revoke.set_defaults(func=_keys_revoke)
    migrate = keys.add_parser(
        "migrate", parents=[data], help="bring a PostgreSQL database to this server's schema (--db URL)"
    )
    migrate.add_argument("--dry-run", action="store_true", help="print the migrations without applying them")
    migrate.set_defaults(func=_migrate)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mlop_server``: the same as ``mlop server``."""
    parser = argparse.ArgumentParser(prog="mlop server", description="the mlop server")
    add_server_parser(parser)
    args = parser.parse_args(argv)
    return int(args.func(args))
