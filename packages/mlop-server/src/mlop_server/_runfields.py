"""The runs table's derived columns, computed as a run is written so that sorting and filtering are plain SQL.

Every backend keeps, beside a run's own columns:

- ``flat``: a JSON object of the run's scalar fields by column name: ``"config.<dotted key>"`` for each leaf
  of the config (the ``summary`` key left out) and ``"summary.<key>"`` for each leaf of ``config["summary"]``
  (``run.summary``; nested keys joined with ``/``). Lists are kept as their JSON text.
- ``host`` and ``git_commit``: read from the system metadata (``hostname``, ``git.commit``).
- ``client_end``: the latest time the client stamped on anything of the run (the create's ``updatedAt``,
  the ``time`` of metrics, data, console lines and files), so durations follow the client's clock.

and per metric key (``series``): ``vlast`` (the value at the highest step), ``vmin``, ``vmax`` (NaN ignored)
and ``last_step``. The functions here are pure; each backend stores what they return.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import orjson

__all__ = [
    "MAX_FLAT_KEYS",
    "BatchStats",
    "backfill_sqlite",
    "batch_stats",
    "flat_fields",
    "host_commit",
    "run_times",
]

logger = logging.getLogger(__name__)

#: A config with more leaves than this keeps only the first ones as columns.
MAX_FLAT_KEYS: Final = 1000
#: Nesting deeper than this is kept as JSON text.
MAX_DEPTH: Final = 8
_BAD_KEY_CHARS: Final = frozenset('"\\') | frozenset(chr(c) for c in range(32))


def _usable(key: str) -> bool:
    """Column names must be quotable in a JSON path of every backend: no quotes, backslashes or controls."""
    return bool(key) and not (_BAD_KEY_CHARS & set(key))


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return orjson.dumps(value).decode()


def _walk(obj: dict[str, Any], prefix: str, sep: str, out: dict[str, Any], depth: int) -> None:
    for key, value in obj.items():
        if len(out) >= MAX_FLAT_KEYS:
            return
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and depth < MAX_DEPTH:
            _walk(value, name + sep, sep, out, depth + 1)
        elif _usable(name):
            out[name] = _scalar(value)


def flat_fields(config: str | dict[str, Any] | None) -> str:
    """The ``flat`` column of a run with this config (JSON text or a decoded object), as JSON text."""
    if isinstance(config, str):
        try:
            config = orjson.loads(config)
        except orjson.JSONDecodeError:
            config = None
    if not isinstance(config, dict):
        return "{}"
    out: dict[str, Any] = {}
    _walk({k: v for k, v in config.items() if k != "summary"}, "config.", ".", out, 0)
    summary = config.get("summary")
    if isinstance(summary, dict):
        _walk(summary, "summary.", "/", out, 0)
    return orjson.dumps(out).decode()


def host_commit(system_metadata: str | None) -> tuple[str | None, str | None]:
    """The host name and git commit that a run's system metadata (JSON text) names, each None when absent."""
    if not system_metadata:
        return None, None
    try:
        meta = orjson.loads(system_metadata)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(meta, dict):
        return None, None
    host = meta.get("hostname")
    git = meta.get("git")
    commit = git.get("commit") if isinstance(git, dict) else None
    return (host if isinstance(host, str) else None, commit if isinstance(commit, str) else None)


def run_times(created: int, ended: int | None, status: str, now: int) -> dict[str, int | None]:
    """The read API's ``start``, ``ended`` and ``duration`` (ms) of a run, on the client's clock.

    ``duration`` is ``ended - start`` once the run is over (None when the client stamped nothing) and
    ``now - start`` while it runs.
    """
    if status == "RUNNING":
        duration: int | None = max(0, now - created)
    else:
        duration = None if ended is None else max(0, ended - created)
    return {"start": created, "ended": ended, "duration": duration}


@dataclass(frozen=True)
class BatchStats:
    """What one batch of a metric key adds to the key's stats."""

    vmin: float | None
    vmax: float | None
    last_step: int
    vlast: float | None
    max_time: int


def batch_stats(steps: bytes, times: bytes, values: bytes) -> BatchStats | None:
    """The stats of a packed batch (little-endian int64 steps and times, float64 values); None when empty.

    The last value is the one at the highest step (of equal steps, the last sent); min and max skip NaN (None
    when every value is NaN); a NaN last value is None.
    """
    s = np.frombuffer(steps, dtype="<i8")
    if s.size == 0:
        return None
    t = np.frombuffer(times, dtype="<i8")
    v = np.frombuffer(values, dtype="<f8")
    top = int(s.max())
    last = float(v[int(np.flatnonzero(s == top)[-1])])
    finite = v[~np.isnan(v)]
    return BatchStats(
        vmin=float(finite.min()) if finite.size else None,
        vmax=float(finite.max()) if finite.size else None,
        last_step=top,
        vlast=None if math.isnan(last) else last,
        max_time=int(t.max()),
    )


def backfill_sqlite(conn: Any) -> None:
    """Fill the derived columns of a SQLite database made before they existed (run once, on open)."""
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN IMMEDIATE")
    runs = conn.execute("SELECT id, config, system_metadata FROM runs WHERE flat IS NULL").fetchall()
    for run_id, config, system in runs:
        conn.execute(
            "UPDATE runs SET flat = ?, host = ?, git_commit = ? WHERE id = ?",
            (flat_fields(config), *host_commit(system), run_id),
        )
    series = conn.execute(
        "SELECT id, run_id FROM series WHERE type = 'METRIC' AND last_step IS NULL"
    ).fetchall()
    ends: dict[int, int] = {}
    for series_id, run_id in series:
        chunks = conn.execute(
            "SELECT steps, times, vals FROM metric_chunks WHERE series_id = ? ORDER BY id", (series_id,)
        ).fetchall()
        stats = batch_stats(*(b"".join(c[i] for c in chunks) for i in range(3)))
        if stats is None:
            continue
        ends[run_id] = max(ends.get(run_id, stats.max_time), stats.max_time)
        conn.execute(
            "UPDATE series SET vmin = ?, vmax = ?, vlast = ?, last_step = ? WHERE id = ?",
            (stats.vmin, stats.vmax, stats.vlast, stats.last_step, series_id),
        )
    for sql in (
        "SELECT s.run_id, MAX(d.time) FROM data_points d JOIN series s ON s.id = d.series_id "
        "GROUP BY s.run_id",
        "SELECT run_id, MAX(time) FROM logs GROUP BY run_id",
        "SELECT run_id, MAX(time) FROM files GROUP BY run_id",
    ):
        for run_id, latest in conn.execute(sql).fetchall():
            if latest is not None:
                ends[run_id] = max(ends.get(run_id, latest), latest)
    conn.executemany(
        "UPDATE runs SET client_end = ? WHERE id = ? AND client_end IS NULL",
        [(t, r) for r, t in ends.items()],
    )
    if own:
        conn.execute("COMMIT")
