"""The online sub-commands of ``mlop``: ``login``, ``logout`` and ``sync``."""

from __future__ import annotations

import argparse
import getpass
import ipaddress
import os
import sys
import urllib.parse

from mlop._exceptions import AuthError, ServerError
from mlop._online._auth import Credentials, credentials_path, remove_credentials, save

__all__ = ["add_online_commands"]


def _login(args: argparse.Namespace) -> int:
    from mlop._online._server import ServerInterface
    from mlop._settings import resolve_settings

    try:
        key = _read_key(args)
    except (EOFError, KeyboardInterrupt):
        print("\nmlop login: no key given", file=sys.stderr)
        return 1
    if not key:
        print("mlop login: no key given", file=sys.stderr)
        return 1
    if not key.isprintable() or any(c.isspace() for c in key):
        print("mlop login: that is not a key (it holds spaces or control characters)", file=sys.stderr)
        return 1
    # --host, else MLOP_HOST or the host of the key stored before, else the hosted service
    settings = resolve_settings({"host": args.host, "api_key": key}, None)
    urls = settings.urls()
    if _in_clear(urls["url_api"]):
        print(
            f"mlop login: {urls['url_api']} is plain http: the key crosses the network unencrypted (use "
            "https:// for a server that is not on this machine)",
            file=sys.stderr,
        )
    with ServerInterface(urls, key, verify=not args.insecure) as server:
        try:
            slug = server.slug(timeout=15.0)
        except AuthError:
            print(f"mlop login: {urls['url_api']} did not accept this key; nothing stored", file=sys.stderr)
            return 1
        except ServerError as exc:
            print(f"mlop login: could not check the key with {urls['url_api']}: {exc}", file=sys.stderr)
            return 1
    path = save(Credentials(key, settings.host))
    print(f"Logged in to {urls['url_api']} (organization {slug}).")
    print(f"Key stored in {path} (only you can read it).")
    return 0


def _in_clear(url: str) -> bool:
    """Whether a key sent to ``url`` crosses a network unencrypted (http to a host other than this one)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http":
        return False
    host = parts.hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name
        return True


def _read_key(args: argparse.Namespace) -> str:
    """The key, from where the user put it: ``--key-stdin``, the argument (warned: ``ps`` shows it to
    everyone on the machine), ``MLOP_API_TOKEN``, else a hidden prompt on a terminal or a line of stdin.

    Raises:
        EOFError: stdin ended before a key; KeyboardInterrupt: the user gave up at the prompt.
    """
    if args.key_stdin:
        return _stdin_line()
    if args.key:
        print(
            "mlop login: a key given as an argument can be seen by other users of this machine (ps) and "
            "stays in your shell's history; next time, type it at the prompt or use --key-stdin or "
            "MLOP_API_TOKEN",
            file=sys.stderr,
        )
        return str(args.key).strip()
    from_env = os.environ.get("MLOP_API_TOKEN") or os.environ.get("MLOP_API_KEY")
    if from_env:
        return from_env.strip()
    if sys.stdin is not None and sys.stdin.isatty():
        return getpass.getpass("mlop API key (input hidden): ").strip()
    return _stdin_line()


def _stdin_line() -> str:
    if sys.stdin is None:
        raise EOFError
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.strip()


def _logout(args: argparse.Namespace) -> int:
    path = remove_credentials()
    if path is None:
        print(f"Not logged in (no {credentials_path()}).")
    else:
        print(f"Logged out: removed {path}.")
    return 0


def _sync(args: argparse.Namespace) -> int:
    from mlop._online._sync import sync_runs

    return sync_runs(
        args.run_dirs,
        every=args.all,
        root=args.dir,
        host=args.host,
        out=sys.stderr,
        timeout=args.timeout if args.timeout > 0 else None,
        jobs=args.jobs,
    )


def add_online_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``login``, ``logout`` and ``sync`` to the ``mlop`` command."""
    login = sub.add_parser("login", help="check an API key with the server and store it for this user")
    login.add_argument(
        "key",
        nargs="?",
        default=None,
        help="the key (discouraged: others see it in ps; default: MLOP_API_TOKEN, else a prompt or stdin)",
    )
    login.add_argument("--key-stdin", action="store_true", help="read the key from the first line of stdin")
    login.add_argument("--host", default=None, help="a self-hosted server (host name, or a full URL)")
    login.add_argument("--insecure", action="store_true", help="do not check the server's TLS certificate")
    login.set_defaults(func=_login)

    logout = sub.add_parser("logout", help="remove the stored API key")
    logout.set_defaults(func=_logout)

    sync = sub.add_parser("sync", help="send offline and unfinished runs to the server")
    sync.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="run directories (.mlop/<project>/<id>)")
    sync.add_argument("--all", action="store_true", help="every run under --dir, not only unsent ones")
    sync.add_argument("--dir", default=None, help="the directory that holds .mlop (default: here)")
    sync.add_argument("--host", default=None, help="send to this server instead of the run's own")
    sync.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="give up on a run after this long without progress (default 60; 0: never)",
    )
    sync.add_argument(
        "--jobs",
        type=_positive,
        default=8,
        metavar="N",
        help="send up to N runs at once, over one connection pool (default 8)",
    )
    sync.set_defaults(func=_sync)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value
