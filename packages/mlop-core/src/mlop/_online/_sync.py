"""``mlop sync``: send offline and unfinished runs with the uploader's own code, run once.

A run is sent from its last acknowledged record, so an interrupted sync goes on where it stopped, and a
sync of a run that was sent already sends nothing (not even a request). A run whose process died without
``finish()`` is marked FAILED first, as the live uploader would have done. Every run sent has ended, so
it goes in one pass with none of a live run's waits, several runs at once over one shared connection pool
(:mod:`mlop._online._many`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sqlite3
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import as_completed
from pathlib import Path
from typing import IO, Any, Final

from mlop._exceptions import AuthError, ConfigError, MlopError, StoreError
from mlop._online._many import (
    DEFAULT_CONCURRENCY,
    ONE_PASS_ITEMS,
    Pool,
    has_unsent,
    send_once,
    watched,
)
from mlop._online._options import Options
from mlop._online._streams import FINAL, pending_by_stream, pending_items
from mlop._online._uploader import Busy, Uploader, last_status, mark_died
from mlop._reader import list_runs
from mlop._settings import Settings, resolve_settings, same_server
from mlop._store import STORE_FILE, Store

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_CONCURRENCY", "DEFAULT_TIMEOUT", "find_runs", "sync_run", "sync_runs"]

_BAR: Final = 30
#: ``mlop sync --timeout``: seconds without progress before a run is given up.
DEFAULT_TIMEOUT: Final = 60.0
_WHAT: Final = {
    "metrics": "metric lines",
    "data": "data points",
    "logs": "console lines",
    "files": "files",
    "control": "run updates (config, tags, status, alerts)",
}


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_runs(paths: Sequence[str], *, every: bool, root: str | None) -> list[Path]:
    """The run directories to sync: those named, else every run under ``root`` with something unsent."""
    if paths:
        return [Path(p) for p in paths]
    out: list[Path] = []
    for run in list_runs(root):
        run.close()
        if every:
            out.append(run.dir)
            continue
        store = Store(run.dir)
        try:
            total, done = pending_items(store)
        finally:
            store.close()
        if total > done:
            out.append(run.dir)
    return out


class _Progress:
    """A one-line progress bar on a terminal, a line per run elsewhere."""

    def __init__(self, label: str, store_path: Path, out: IO[str]) -> None:
        self.label = label
        self.out = out
        self.tty = out.isatty()
        self.store = Store(store_path)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="mlop-sync-progress", daemon=True)

    def __enter__(self) -> _Progress:
        if self.tty:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.show(final=True)
        self.store.close()

    def show(self, final: bool = False) -> None:
        total, done = pending_items(self.store)
        share = done / total if total else 1.0
        filled = int(share * _BAR)
        text = f"{self.label} [{'#' * filled}{'-' * (_BAR - filled)}] {done:,}/{total:,} items"
        if self.tty:
            self.out.write("\r" + text + ("\n" if final else ""))
        elif final:
            self.out.write(text + "\n")
        self.out.flush()

    def _loop(self) -> None:
        while not self._stop.wait(0.25):
            self.show()


def sync_run(
    run_dir: Path,
    options: Options,
    out: IO[str] = sys.stderr,
    transport: object = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    *,
    pool: Pool | None = None,
    progress: bool = True,
) -> bool:
    """Send one run; returns whether all of it is on the server now.

    Args:
        run_dir: the run directory.
        options: where and how to send.
        out: where to say how it went.
        transport: a custom httpx transport (tests).
        timeout: give up after this many seconds without progress (None: never).
        pool: the pool this run is sent in (its shared client; :meth:`Pool.halt` stops the run).
        progress: show a progress bar of the run's items.

    Raises:
        Busy: another process is sending this run.
        StoreError: ``run_dir`` holds no run.
        AuthError: the server refused the key; nothing more is tried.
    """
    outcome = _send(run_dir, lambda meta: options, out, transport, timeout, pool, progress, quiet=False)
    return outcome in ("sent", "nothing")


def _send(
    run_dir: Path,
    options_of: Callable[[dict[str, Any]], Options],
    out: IO[str],
    transport: object,
    timeout: float | None,
    pool: Pool | None,
    progress: bool,
    *,
    quiet: bool,
) -> str:
    """:func:`sync_run`, saying how it went: "sent", "nothing" (to send), "skipped" (alive) or "failed".

    ``options_of`` gets the run's meta values (where the run was headed); ``quiet`` leaves out the line
    of a run with nothing to send.
    """
    store = Store(run_dir)
    try:
        meta = store.meta()
        options = options_of(meta)
        found = last_status(store)
        if found is None or found[1] not in FINAL:
            if _alive(meta.get("pid")):
                out.write(f"{run_dir}: still running (pid {meta.get('pid')}); skipped\n")
                return "skipped"
            mark_died(store, meta.get("pid"))
        label = f"{meta.get('project', run_dir.parent.name)}/{meta.get('name', run_dir.name)}"
        if not has_unsent(store):
            if not quiet:
                out.write(f"{label}: nothing to send\n")
            return "nothing"
        return _upload(run_dir, label, options, out, transport, timeout, pool, progress)
    finally:
        # Closed after the uploader's: the last connection checkpoints the store (once), and the store's
        # write-ahead log and index files are not removed here only to be made again by the uploader's.
        store.close()


def _upload(
    run_dir: Path,
    label: str,
    options: Options,
    out: IO[str],
    transport: object,
    timeout: float | None,
    pool: Pool | None,
    progress: bool,
) -> str:
    """Send a run with something unsent (see :func:`_send`): "sent" or "failed"."""
    client = pool.client if pool is not None else None
    uploader = Uploader(run_dir, options, once=True, transport=transport, patience=timeout, client=client)
    if pool is not None:
        pool.enter(uploader)
    try:
        with _Progress(label, uploader.store_path, out) if progress else contextlib.nullcontext():
            if _big(uploader.store):  # the uploader's threads overlap reading and sending: worth their waits
                complete = uploader.run()
            else:
                with watched(uploader, timeout):
                    complete = send_once(uploader)
        if uploader.refused:
            raise AuthError(uploader.refused)
        if uploader.corrupt:
            seqs = ", ".join(str(seq) for seq, _kind in sorted(uploader.corrupt)[:10])
            out.write(
                f"{label}: {len(uploader.corrupt)} record(s) of the run's store cannot be read and were "
                f"skipped (record {seqs}); everything else was sent\n"
            )
        if uploader.stalled and not complete:
            out.write(
                f"{label}: no progress for {timeout:g} s (server {options.urls.get('url_api')}); gave up. "
                f"Not sent: {_unsent(uploader.store)}. Run `mlop sync {run_dir}` again to send the rest\n"
            )
            return "failed"
        if uploader.failures:
            out.write(f"{label}: the server refused {uploader.failures} part(s) for good (table failures)\n")
        url = (uploader.store.meta().get("server") or {}).get("url")
        if complete:
            out.write(f"{label}: sent{f' ({url})' if url else ''}\n")
        else:
            out.write(f"{label}: not everything was sent; run `mlop sync {run_dir}` again\n")
        return "sent" if complete else "failed"
    finally:
        if pool is not None:
            pool.leave(uploader)
        uploader.close()


def _big(store: Store) -> bool:
    """Whether a run holds more than :data:`ONE_PASS_ITEMS` items (sent or not: one cheap query)."""
    (total,) = store._db.execute("SELECT COALESCE(SUM(count), 0) FROM records").fetchone()
    return int(total) > ONE_PASS_ITEMS


def _unsent(store: Store) -> str:
    parts = [
        f"{total - done:,} {_WHAT.get(name, name)}"
        for name, (total, done) in pending_by_stream(store).items()
        if total > done
    ]
    return ", ".join(parts) or "nothing"


def sync_runs(
    paths: Sequence[str],
    *,
    every: bool = False,
    root: str | None = None,
    host: str | None = None,
    out: IO[str] = sys.stderr,
    timeout: float | None = DEFAULT_TIMEOUT,
    jobs: int = DEFAULT_CONCURRENCY,
) -> int:
    """The ``mlop sync`` command; returns its exit code.

    Up to ``jobs`` runs are sent at once. Every error it meets is said on ``out`` in a line and makes the
    exit code 1; a failed run does not stop the others. A refused key stops it at once (every other run
    would be refused too), and so does Ctrl-C; running it again goes on where it stopped.
    """
    settings = resolve_settings({"host": host} if host else {}, None)
    if not settings.api_key:
        out.write(
            f"mlop sync: no API key for {settings.urls()['url_api']}; run `mlop login --host URL` or set "
            "MLOP_API_TOKEN\n"
        )
        return 1
    # Which runs have something unsent is found by the jobs themselves, in parallel, from one look each.
    runs = [Path(p) for p in paths] if paths else _run_dirs(root)
    quiet = not paths and not every
    single = len(runs) == 1
    counts = dict.fromkeys(("sent", "nothing", "skipped", "failed"), 0)
    with Pool(Options.from_settings(settings, resume=False), min(max(1, jobs), max(1, len(runs)))) as pool:
        direct = out if single else None  # one run: its progress bar and lines as they come
        futures = [
            pool.submit(_sync_one, pool, run_dir, settings, host, timeout, direct, quiet) for run_dir in runs
        ]
        try:
            for future in as_completed(futures):
                outcome, text = future.result()
                if outcome == "refused":
                    pool.halt()
                    out.write(text)
                    return 1
                counts[outcome] += 1
                out.write(text)
        except KeyboardInterrupt:
            pool.halt()
            out.write("\nmlop sync: interrupted; run it again to send the rest\n")
            return 130
    if quiet and counts["nothing"] == len(runs):
        out.write("mlop sync: no run with anything to send\n")
        return 0
    if len(runs) > 1:
        parts = [f"{counts['sent']} sent", f"{counts['nothing']} had nothing to send"]
        if counts["skipped"]:
            parts.append(f"{counts['skipped']} still running (skipped)")
        if counts["failed"]:
            parts.append(f"{counts['failed']} not sent in full (said above): run `mlop sync` again")
        out.write(f"mlop sync: {len(runs)} runs: {', '.join(parts)}\n")
    return 1 if counts["failed"] or counts["skipped"] else 0


def _run_dirs(root: str | None) -> list[Path]:
    """Every run directory under ``root`` (as ``mlop runs --dir``), without opening their stores."""
    base = Path(root) if root is not None else Path(os.environ.get("MLOP_DIR") or Path.cwd())
    top = base / ".mlop" if (base / ".mlop").is_dir() else base
    return sorted(store.parent for store in top.glob(f"*/*/{STORE_FILE}"))


def _sync_one(
    pool: Pool,
    run_dir: Path,
    settings: Settings,
    host: str | None,
    timeout: float | None,
    direct: IO[str] | None,
    quiet: bool,
) -> tuple[str, str]:
    """One run of ``mlop sync`` on a pool's thread: its outcome (see :func:`_send`, or "refused": the key
    was refused) and what to say.

    Without ``direct`` (several runs in flight), what the run says is kept and returned whole when it
    ends, so that the lines of runs do not mix.
    """
    buffer: Any = direct if direct is not None else io.StringIO()
    if pool.stop.is_set():
        return "failed", ""
    outcome = "failed"
    try:
        if not (run_dir / STORE_FILE).exists():
            raise StoreError(f"no mlop run in {run_dir}")

        def options_of(meta: dict[str, Any]) -> Options:
            urls = _urls(run_dir, meta, settings, host)
            return Options.from_settings(settings, urls=urls, resume=False)

        outcome = _send(run_dir, options_of, buffer, None, timeout, pool, direct is not None, quiet=quiet)
    except AuthError as exc:
        return "refused", f"mlop sync: {exc}\n"
    except StoreError as exc:
        buffer.write(f"mlop sync: {exc}\n")
    except (Busy, MlopError) as exc:
        buffer.write(f"mlop sync: {run_dir}: {exc}\n")
    except sqlite3.Error as exc:
        buffer.write(f"mlop sync: {run_dir}: the run's store cannot be read: {exc}\n")
    except Exception as exc:  # broad: a fault in one run (a bug) must not stop the others; said, exit 1
        logger.debug("mlop sync: %s", run_dir, exc_info=True)
        buffer.write(f"mlop sync: {run_dir}: not sent: {type(exc).__name__}: {exc}\n")
    return outcome, "" if direct is not None else buffer.getvalue()


def _urls(run_dir: Path, meta: dict[str, Any], settings: Settings, host: str | None) -> dict[str, str]:
    """Where to send a run: ``--host``, else where the run itself was headed, else the settings."""
    if host:
        return settings.urls()
    recorded = meta.get("server_urls")
    ours = settings.urls()
    if not isinstance(recorded, dict) or not recorded:
        return ours
    # The run folder names its server, but the folder may come from anyone: the key goes only to the
    # server it is for (see Settings' key resolution), so a run headed elsewhere needs --host.
    theirs = {k: str(v) for k, v in recorded.items()}
    if not same_server(theirs, ours):
        yours = f"; to send it to yours: mlop sync --host {settings.host} {run_dir}" if settings.host else ""
        raise ConfigError(
            f"this run was headed for {theirs.get('url_api')}, and the key in use is for {ours['url_api']}; "
            "a key goes only to the server it is for, so nothing was sent. To send it to that server: "
            f"MLOP_API_TOKEN=<its key> mlop sync --host URL {run_dir}{yours}"
        )
    return ours
