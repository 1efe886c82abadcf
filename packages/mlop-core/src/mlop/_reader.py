"""Reading a run back from its local store: ``mlop.open_run`` and ``mlop.list_runs``."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mlop._exceptions import StoreError
from mlop._store import STORE_FILE, Record, Store

__all__ = ["RunReader", "list_runs", "open_run"]


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


class RunReader:
    """A run as its store holds it. Safe to use while the run is still writing.

    A record that cannot be decoded (a damaged or crafted store) is reported once, naming the run, the
    record and the reason, and skipped; every other record is read. A store that SQLite cannot read at
    all raises :class:`mlop.StoreError`.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        path = Path(path)
        self.dir = path.parent if path.name == STORE_FILE else path
        self._store = Store(self.dir)
        try:
            self._meta = self._store.meta()
        except sqlite3.Error as exc:
            self._store.close()
            raise StoreError(f"cannot read the run store in {self.dir}: {exc}") from None

    def _records(self, kinds: Sequence[str]) -> Iterator[Record]:
        try:
            yield from self._store.records(kinds)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the run store in {self.dir}: {exc}") from None

    def __repr__(self) -> str:
        return f"<mlop run {self.project}/{self.name} id={self.id} status={self.status}>"

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> RunReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def refresh(self) -> None:
        """Read the run's meta values again (status, config, tags) while it is live."""
        try:
            self._meta = self._store.meta()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the run store in {self.dir}: {exc}") from None

    @property
    def id(self) -> str:
        return str(self._meta.get("id", self.dir.name))

    @property
    def name(self) -> str:
        return str(self._meta.get("name", self.id))

    @property
    def project(self) -> str:
        return str(self._meta.get("project", self.dir.parent.name))

    @property
    def status(self) -> str:
        return str(self._meta.get("status", "RUNNING"))

    @property
    def status_metadata(self) -> dict[str, Any] | None:
        return self._meta.get("statusMetadata")

    @property
    def config(self) -> dict[str, Any]:
        return dict(self._meta.get("config") or {})

    @property
    def tags(self) -> list[str]:
        return list(self._meta.get("tags") or [])

    @property
    def graph(self) -> dict[str, Any] | None:
        return self._meta.get("graph")

    @property
    def created_at(self) -> float | None:
        value = self._meta.get("created_at")
        return float(value) if value is not None else None

    @property
    def system_metadata(self) -> dict[str, Any]:
        """The environment the run ran in (``systemMetadata``): Python, packages, OS, GPUs, git, ..."""
        return dict(self._meta.get("systemMetadata") or {})

    @property
    def system(self) -> dict[str, Any]:
        """Same as :attr:`system_metadata`."""
        return self.system_metadata

    @property
    def meta(self) -> dict[str, Any]:
        """Every meta value the store holds (system metadata among them)."""
        return dict(self._meta)

    def metrics(self, key: str | None = None, *, system: bool = True) -> Iterator[dict[str, Any]]:
        """Yield ``{"key", "step", "time", "value"}`` per logged number, in logging order.

        ``time`` is in epoch milliseconds; values are the numbers logged (ints and floats, NaN and the
        infinities as floats).
        System metrics (keys under ``sys/``) come too unless ``system`` is False; their ``step`` is the
        monitor's sample index, not the user's step.
        """
        for _seq, _kind, items in self._records(["metrics", "system"] if system else ["metrics"]):
            for step, when, values in items:
                if key is not None:
                    if key in values:
                        yield {"key": key, "step": step, "time": _ms(when), "value": values[key]}
                    continue
                for name, value in values.items():
                    yield {"key": name, "step": step, "time": _ms(when), "value": value}

    def data(self, key: str | None = None) -> Iterator[dict[str, Any]]:
        """Yield ``{"key", "step", "time", "type", "value"}`` for string series and the data types."""
        for _seq, _kind, items in self._records(["data"]):
            for step, when, name, data_type, value in items:
                if key is None or name == key:
                    yield {"key": name, "step": step, "time": _ms(when), "type": data_type, "value": value}

    def media(self, key: str | None = None) -> Iterator[dict[str, Any]]:
        """Yield ``{"key", "step", "time", "type", "caption", "path", "sample_index"}`` for logged files."""
        for _seq, _kind, items in self._records(["files"]):
            for step, when, name, info in items:
                if key is None or name == key:
                    yield {
                        "key": name,
                        "step": step,
                        "time": _ms(when),
                        "type": info.get("logType"),
                        "caption": info.get("caption"),
                        "path": str(self.dir / info["path"]),
                        "sample_index": info.get("sampleIndex"),
                        **{
                            k: v
                            for k, v in info.items()
                            if k not in ("path", "caption", "sampleIndex", "logType")
                        },
                    }

    def logs(self) -> Iterator[dict[str, Any]]:
        """Yield console lines as ``{"time", "line_number", "level", "message"}``; level is INFO or ERROR."""
        for _seq, _kind, items in self._records(["logs"]):
            for when, line, log_type, message in items:
                yield {"time": _ms(when), "line_number": line, "level": log_type, "message": message}

    def alerts(self) -> Iterator[dict[str, Any]]:
        for _seq, _kind, items in self._records(["alert"]):
            for _when, alert in items:
                yield alert

    @property
    def summary(self) -> dict[str, Any]:
        """The run's final values (``run.summary`` while it was live): train runtime, best score..."""
        return dict(self._meta.get("summary") or {})

    def progress(self) -> dict[str, Any]:
        """For listings: how many steps have metrics, the last step, the last update (epoch ms)."""
        steps: set[int] = set()
        last_update = self.created_at or 0.0
        for _seq, _kind, items in self._records(["metrics"]):
            for step, when, _values in items:
                steps.add(step)
                last_update = max(last_update, when)
        finished = self._meta.get("finished_at")
        if finished:
            last_update = max(last_update, float(finished))
        return {
            "steps": len(steps),
            "last_step": max(steps) if steps else None,
            "updated": _ms(last_update) if last_update else None,
        }


def open_run(path: str | os.PathLike[str]) -> RunReader:
    """Open a run directory (or its store file) for reading.

    Raises:
        StoreError: there is no run store at ``path``.
    """
    return RunReader(path)


def list_runs(dir: str | os.PathLike[str] | None = None) -> list[RunReader]:
    """Every run under ``dir`` (``<dir>/.mlop/<project>/<run id>``, or ``dir`` itself as such a tree)."""
    base = Path(dir) if dir is not None else Path(os.environ.get("MLOP_DIR") or Path.cwd())
    root = base / ".mlop" if (base / ".mlop").is_dir() else base
    runs: list[RunReader] = []
    for store in sorted(root.glob(f"*/*/{STORE_FILE}")):
        try:
            runs.append(RunReader(store.parent))
        except StoreError:
            continue
    runs.sort(key=lambda r: r.created_at or 0.0)
    return runs
