"""``mlop ui``: the dashboard for local runs, one command away.

Starts mlop-server on 127.0.0.1 with a data folder of its own (a temporary one unless ``--data`` names
one) and a fresh admin key, sends every run under ``--dir`` to it (new records only, again every
``--interval`` seconds so live runs grow), prints the dashboard's URL and opens a browser where there is one.
The key travels in the URL's fragment, which browsers never send to a server; the page keeps it in
``sessionStorage``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import webbrowser
from pathlib import Path
from typing import IO, TYPE_CHECKING

from mlop_server._cli import ADMIN_KEY_ENV
from mlop_server._keys import generate_key

if TYPE_CHECKING:
    from mlop_server._mirror import Mirror

__all__ = ["add_ui_parser", "main"]

logger = logging.getLogger(__name__)


def add_ui_parser(parser: argparse.ArgumentParser) -> None:
    """Add ``mlop ui``'s options to ``parser``."""
    parser.add_argument(
        "--dir", default=None, help="the directory that holds .mlop (default: $MLOP_DIR or here)"
    )
    parser.add_argument("--port", type=int, default=0, help="port of the dashboard (default: a free one)")
    parser.add_argument("--no-browser", action="store_true", help="print the URL only")
    parser.add_argument("--data", default=None, help="the server's folder (default: a temporary one)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between syncs (default: 2)")
    parser.set_defaults(func=main)


def _has_display() -> bool:
    """Whether a graphical browser can open here (on Linux and BSD, only with a display; without one
    :mod:`webbrowser` would start a text browser in this terminal)."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _start_server(data: Path, port: int, key: str) -> subprocess.Popen[str]:
    """Start the server; it boots while this process goes on (see :func:`_server_url`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}
    env[ADMIN_KEY_ENV] = key  # in the environment, not on the command line that `ps` shows
    cmd = [sys.executable, "-m", "mlop_server", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--data", str(data), "--log-level", "warning", "--heartbeat-timeout", "86400"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)


def _server_url(proc: subprocess.Popen[str]) -> str:
    """The URL the server prints once it listens (its first line); the rest of its output is drained."""
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.wait(10)
        raise SystemExit(f"mlop ui: the server did not start (exit code {proc.returncode})")
    threading.Thread(target=_drain, args=(proc.stdout,), name="mlop-ui-server-out", daemon=True).start()
    return url


def _drain(pipe: IO[str]) -> None:
    for _ in pipe:
        pass


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(args: argparse.Namespace) -> int:
    """Run ``mlop ui`` until Ctrl-C (or SIGTERM); returns the exit code."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    root = Path(args.dir or os.environ.get("MLOP_DIR") or Path.cwd()).expanduser().resolve()
    if not root.is_dir():
        print(f"mlop ui: {root} is not a folder (give --dir the folder that holds .mlop)", file=sys.stderr)
        return 2
    own = Path(args.data).expanduser().resolve() if args.data else Path(tempfile.mkdtemp(prefix="mlop-ui-"))
    key = generate_key()
    proc = _start_server(own / "server", args.port, key)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    mirror: Mirror | None = None
    try:
        from mlop_server._mirror import Mirror  # the uploader's modules load while the server starts

        url = _server_url(proc)
        mirror = Mirror(root, own / "mirrors", url, key)
        page = f"{url}/ui/#key={key}"
        print(f"mlop ui: the runs under {root} at", flush=True)
        print(page, flush=True)
        if not args.no_browser and _has_display():
            with contextlib.suppress(webbrowser.Error):
                webbrowser.open(page)
        mirror.sync()  # the page shows runs as they arrive
        while not stop.wait(args.interval):
            if proc.poll() is not None:
                print(f"mlop ui: the server stopped (exit code {proc.returncode})", file=sys.stderr)
                return 1
            mirror.sync()
    except KeyboardInterrupt:
        pass
    finally:
        if mirror is not None:
            mirror.close()
        _stop(proc)
        if not args.data:
            shutil.rmtree(own, ignore_errors=True)
    return 0
