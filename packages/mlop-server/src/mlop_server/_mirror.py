"""What ``mlop ui`` sends: a mirror of each local run, uploaded with the uploader's own code.

The uploader records what a server acknowledged in the run's own store, so sending a run's store to the
dashboard's private server would make a later ``mlop sync`` to the real server skip it. ``mlop ui`` therefore
never writes to a run: it copies each run's new records into a mirror store of its own (records are only
ever appended, so "new" is "after the last one copied"), links the run's media files beside it, and runs the
uploader (``once``, as ``mlop sync`` does) on the mirror. A run whose process is gone without a final status
is marked FAILED in the mirror, as ``mlop sync`` would mark it. Runs go as ``mlop sync`` sends them: in one
pass each, several at once over one shared connection pool (:mod:`mlop._online._many`).

Sending is Python work that holds the interpreter lock, about one core's worth; a pass of many runs gives
every other run to a helper process (:mod:`mlop_server._mirror_helper`) with a lock of its own, so the two
halves go at once while the server uses what is left of the machine.

A mirror is scratch: its first copy is the run's store taken whole by SQLite's backup, and it is never
synced to the disk (a lost mirror is made again from the run). A run that has ended and was sent whole is
not looked at again until its store changes. bench/README.md ("Sync of many runs") has the figures.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

from mlop._exceptions import MlopError
from mlop._online._many import DEFAULT_CONCURRENCY, Pool, has_unsent, send_once
from mlop._online._options import Options
from mlop._online._streams import FINAL
from mlop._online._uploader import LOCK_FILE, Busy, Uploader, last_status, mark_died
from mlop._settings import HOSTED_URLS
from mlop._store import STORE_FILE

__all__ = ["Mirror", "run_dirs"]

logger = logging.getLogger(__name__)

#: Meta values the uploader keeps about its own server: never copied from the run into the mirror.
_UPLOADER_META: Final = frozenset({"upload_id", "upload_lognames", "server", "server_urls"})
_COPIED: Final = "ui_copied_seq"
_COPY_BATCH: Final = 2000
#: Runs to send in one pass from which every other one goes to the helper process (starting it costs
#: about 0.4 s of a core; the runs of a pass take about 8 ms each).
SPLIT_AT: Final = 64


def run_dirs(root: Path) -> list[Path]:
    """The run directories under ``root``: ``<root>/.mlop/<project>/<run id>`` (or ``root`` is ``.mlop``)."""
    base = root / ".mlop" if (root / ".mlop").is_dir() else root
    return sorted(store.parent for store in base.glob(f"*/*/{STORE_FILE}"))


def _signature(run_dir: Path) -> tuple[int, ...]:
    """When and how far the run's store files last changed (a resumed run writes to them again). An empty
    write-ahead log counts as none: reading a store (as the copy does) makes one where none was."""
    out: list[int] = []
    for name in (STORE_FILE, STORE_FILE + "-wal"):
        try:
            info = (run_dir / name).stat()
        except FileNotFoundError:
            out += (0, 0)
            continue
        out += (info.st_size, info.st_mtime_ns if info.st_size else 0)
    return tuple(out)


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user: alive
        return True
    return True


class Mirror:
    """Mirrors of the runs under a directory, sent to one server.

    Args:
        root: The directory whose runs to send (as ``mlop runs --dir``).
        mirrors: A folder of mlop ui's own for the mirror stores.
        url: The server's base URL.
        api_key: A key of that server.
    """

    def __init__(
        self,
        root: Path,
        mirrors: Path,
        url: str,
        api_key: str,
        concurrency: int = DEFAULT_CONCURRENCY,
        split_at: int | None = SPLIT_AT,
    ) -> None:
        self.root = root
        self.mirrors = mirrors
        self.options = Options(urls=dict.fromkeys(HOSTED_URLS, url), api_key=api_key, heartbeat=5.0)
        self._done: dict[Path, tuple[int, ...]] = {}
        self._pool = Pool(self.options, concurrency)
        self._url, self._key = url, api_key
        self._split_at = split_at  # None: never a helper process
        self._helper: _Helper | None = None

    def close(self) -> None:
        """Stop the runs in flight at their next request (a later sync goes on) and close the connections."""
        self._pool.halt()
        self._pool.close()
        if self._helper is not None:
            self._helper.close()
            self._helper = None

    def mirror_dir(self, run_dir: Path) -> Path:
        """Where the mirror of ``run_dir`` lives (named by a hash of the run's path)."""
        return self.mirrors / hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:20]

    def sync(self) -> int:
        """Copy and send what is new in every run; returns how many runs had something new."""
        todo = [d for d in run_dirs(self.root) if self._done.get(d) != _signature(d)]  # else: ended, all sent
        helper = self._helper_for(len(todo))
        theirs = todo[1::2] if helper is not None else []
        if helper is not None:
            helper.send(theirs)  # it starts on them at once
            todo = todo[0::2]
        changed = sum(self.sync_runs(todo))
        if helper is not None:
            answers = helper.collect()
            if answers is None:  # the helper is gone: its runs go here, and every later pass too
                logger.warning("mlop ui: the helper process stopped; its runs are sent from here")
                self._helper = None
                self._split_at = None
                return changed + sum(self.sync_runs(theirs))
            for answer in answers:
                if answer.get("done"):
                    self._done[Path(answer["run"])] = tuple(answer["done"])
                changed += bool(answer.get("copied"))
        return changed

    def _helper_for(self, count: int) -> _Helper | None:
        """The helper process, started for the first pass of at least ``split_at`` runs."""
        if self._helper is None and self._split_at is not None and count >= self._split_at:
            try:
                self._helper = _Helper(self.root, self.mirrors, self._url, self._key)
            except OSError as exc:
                logger.warning("mlop ui: no helper process (%s); every run is sent from here", exc)
                self._split_at = None
        return self._helper

    def sync_runs(self, runs: list[Path]) -> list[bool]:
        """Copy and send these runs, several at once; whether each had something new."""
        futures = [self._pool.submit(self._sync_quietly, run_dir) for run_dir in runs]
        return [future.result() for future in futures]

    def done(self, run_dir: Path) -> tuple[int, ...] | None:
        """The signature of ``run_dir`` when it had ended and was sent whole (skipped until it changes)."""
        return self._done.get(run_dir)

    def _sync_quietly(self, run_dir: Path) -> bool:
        try:
            return self.sync_run(run_dir)
        except (Busy, MlopError, sqlite3.Error, OSError) as exc:
            logger.warning("mlop ui: %s: %s; trying again later", run_dir, exc)
            return False

    def sync_run(self, run_dir: Path) -> bool:
        """Copy and send one run; returns whether it had something new."""
        mirror = self.mirror_dir(run_dir)
        signature = _signature(run_dir)
        # Held open until the run is sent: the last connection to close a WAL file checkpoints it, and
        # this one does so without syncing the disk (see _open), so a run costs no fsync at all.
        held, copied = self._copy(run_dir, mirror)
        try:
            return self._send(run_dir, mirror, signature) or copied
        finally:
            held.close()

    def _send(self, run_dir: Path, mirror: Path, signature: tuple[int, ...]) -> bool:
        """Mark the mirror FAILED if the run's process is gone without a final status, and send what it
        holds unsent; returns whether it wrote or sent anything."""
        copied = False
        # the files are the run's; a live run is sent as far as it goes now, and again at the next sync
        uploader = Uploader(mirror, self.options, once=True, files_dir=run_dir, client=self._pool.client)
        self._pool.enter(uploader)
        try:
            store = uploader.store  # its meta is read again when the run is created or attached
            found = last_status(store)
            final = found is not None and found[1] in FINAL
            if not final and not _alive(store.meta().get("pid")):
                mark_died(store, store.meta().get("pid"))
                copied = final = True
            complete = True
            if has_unsent(store):  # stops at the first item unsent
                complete = send_once(uploader)
                copied = True
            if final and complete:
                self._done[run_dir] = signature  # ended and all sent: skipped until its store changes
        finally:
            self._pool.leave(uploader)
            uploader.close()
        return copied

    def _copy(self, run_dir: Path, mirror: Path) -> tuple[sqlite3.Connection, bool]:
        """Append the run's records not copied yet to the mirror, refresh its meta, link its files; returns
        an open connection to the mirror and whether there were new records."""
        mirror.mkdir(parents=True, exist_ok=True)
        for entry in run_dir.iterdir():
            name = entry.name
            if name.startswith(STORE_FILE) or name == LOCK_FILE or (mirror / name).exists():
                continue
            (mirror / name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
        source = sqlite3.connect(f"file:{run_dir / STORE_FILE}?mode=ro", uri=True, timeout=30.0)
        try:
            target = sqlite3.connect(mirror / STORE_FILE, timeout=30.0, isolation_level=None)
            try:
                # Never synced to disk: the mirror is mlop ui's scratch copy, made again from the run if
                # lost (a crash of the machine may at worst have a record sent twice).
                target.execute("PRAGMA synchronous = OFF")
                if _copied(target) is None:  # a new mirror, or one whose first copy was cut short
                    _whole(source, target)
                    return target, True
                return target, _append(source, target)
            except BaseException:
                target.close()
                raise
        finally:
            source.close()


class _Helper:
    """A helper process that sends the runs it is given (``python -m mlop_server._mirror_helper``).

    Its orders and answers are JSON lines on its stdin and stdout; the first line gives it the folders,
    the server and the key (never on its command line, which ``ps`` shows).
    """

    def __init__(self, root: Path, mirrors: Path, url: str, api_key: str) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "mlop_server._mirror_helper"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._write({"root": str(root), "mirrors": str(mirrors), "url": url, "key": api_key})

    def _write(self, message: dict[str, Any]) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(json.dumps(message) + "\n")
            self._proc.stdin.flush()
        except (OSError, ValueError):  # it has stopped: collect() finds no answer and says so
            pass

    def send(self, runs: list[Path]) -> None:
        self._write({"runs": [str(run) for run in runs]})

    def collect(self) -> list[dict[str, Any]] | None:
        """The answers to the last :meth:`send`, one a run; None when the helper has stopped."""
        assert self._proc.stdout is not None
        try:
            line = self._proc.stdout.readline()
            answers = json.loads(line)["answers"] if line else None
        except (OSError, ValueError, KeyError, TypeError):
            answers = None
        if not isinstance(answers, list):
            self.close()
            return None
        return [answer for answer in answers if isinstance(answer, dict) and "run" in answer]

    def close(self) -> None:
        """Stop it: at once when idle (its stdin closes), else after a second (a run cut short mid-way is
        taken up again at the next pass, its batch in flight still marked, as after Ctrl-C)."""
        if self._proc.stdin is not None:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
        try:
            self._proc.wait(1)
        except subprocess.TimeoutExpired:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


def _copied(target: sqlite3.Connection) -> int | None:
    """The seq of the run's last record copied to the mirror; None for a mirror not made whole yet."""
    try:
        row = target.execute("SELECT value FROM meta WHERE key = ?", (_COPIED,)).fetchone()
    except sqlite3.OperationalError:  # no table meta: an empty file
        return None
    return int(json.loads(row[0])) if row else None


def _whole(source: sqlite3.Connection, target: sqlite3.Connection) -> None:
    """Make the mirror whole from the run's store in one step (SQLite's backup: the file's pages, and the
    schema with them), less what belongs to the run's own uploads. The mark of the last record copied is
    written last: a mirror without it (the copy cut short) is made again from the start."""
    source.backup(target)
    (mode,) = target.execute("PRAGMA journal_mode").fetchone()
    if str(mode).lower() != "wal":  # the run's store is in WAL mode, and so its copy, unless it was not
        target.execute("PRAGMA journal_mode = WAL")
    target.execute("BEGIN IMMEDIATE")
    try:
        target.execute("DELETE FROM acks")  # the run's own server's, not this one's
        target.execute("DELETE FROM failures")
        marks = ",".join("?" * len(_UPLOADER_META))
        target.execute(f"DELETE FROM meta WHERE key IN ({marks})", tuple(_UPLOADER_META))
        (last,) = target.execute("SELECT COALESCE(MAX(seq), 0) FROM records").fetchone()
        target.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            # the uploader's own id for this mirror, made here: one write fewer when it starts
            [(_COPIED, json.dumps(last)), ("upload_id", json.dumps(os.urandom(6).hex()))],
        )
        target.execute("COMMIT")
    except BaseException:
        target.execute("ROLLBACK")
        raise


def _append(source: sqlite3.Connection, target: sqlite3.Connection) -> bool:
    """Append the records of ``source`` after the last one copied to ``target`` and refresh its meta;
    returns whether there were any."""
    after = _copied(target) or 0
    rows = source.execute(
        "SELECT seq, kind, count, time, payload FROM records WHERE seq > ? ORDER BY seq", (after,)
    ).fetchall()
    meta = [(k, v) for k, v in source.execute("SELECT key, value FROM meta") if k not in _UPLOADER_META]
    target.execute("BEGIN IMMEDIATE")
    try:
        for start in range(0, len(rows), _COPY_BATCH):
            target.executemany(
                "INSERT INTO records (kind, count, time, payload) VALUES (?, ?, ?, ?)",
                [r[1:] for r in rows[start : start + _COPY_BATCH]],
            )
        if rows:
            meta.append((_COPIED, json.dumps(rows[-1][0])))
        target.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", meta)
        target.execute("COMMIT")
    except BaseException:
        target.execute("ROLLBACK")
        raise
    return bool(rows)
