"""Block summaries of metric series, kept on ingest, so that a long series is downsampled in SQL, unread.

A series' points, in arrival order, fall into blocks of :data:`BLOCK` points (block ``i`` holds arrival
positions ``i*BLOCK`` to ``i*BLOCK+BLOCK-1``; only the last block of a series is ever partial, and the next
batch fills it first). Each block keeps its count, its lowest and highest step, whether its points are in
step order after the previous block's (``ordered``), and its lowest and highest point the way the read API's
downsampling picks them (NaN counts as neither: its key for "lowest" is +inf, for "highest" -inf; of equal
keys, the first). Both backends keep the same blocks, so they answer the same points.

Downsampling over blocks (:data:`POINTS_SQL`) cuts the series into buckets of whole blocks: a block goes to
bucket ``(points before it) // size`` with ``size = ceil(n / (max_points // 2))`` as in the read API's exact
downsampling, and each bucket keeps its lowest and highest point. It is used when every block is ordered (so
arrival order is step order) and a bucket spans at least one block (``size >= BLOCK``); buckets then differ
from the exact equal-count buckets by less than one block at each edge. Shorter series, and series whose
steps went back, are downsampled exactly from the whole series.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from mlop_server._storage import Downsampled, Series

if TYPE_CHECKING:
    import sqlite3

__all__ = [
    "BLOCK",
    "COLUMNS",
    "POINTS_SQL",
    "SQLITE_TABLE",
    "STATS_SQL",
    "bucket_size",
    "extend_blocks",
    "sqlite_add",
    "sqlite_points",
    "usable",
]

logger = logging.getLogger(__name__)

#: Points per block.
BLOCK: Final = 1024
#: The columns of a block row, in the order :func:`extend_blocks` returns them.
COLUMNS: Final = (
    "block", "n", "min_step", "max_step", "ordered",
    "lo_key", "lo_step", "lo_time", "lo_value", "lo_pos",
    "hi_key", "hi_step", "hi_time", "hi_value", "hi_pos",
)  # fmt: skip

Row = tuple[Any, ...]

#: The blocks of one series: how many, how many points, and whether all are in step order (1/0).
STATS_SQL: Final = (
    "SELECT COUNT(*), COALESCE(SUM(n), 0), MIN(CASE WHEN ordered THEN 1 ELSE 0 END) FROM metric_blocks "
    "WHERE {where}"
)

#: The downsampled points of one series: per bucket of whole blocks, its lowest and its highest point,
#: in series order (``pos``). Every block but the last is full, so ``block * BLOCK`` points come before
#: a block. Parameters: those of ``{where}``.
POINTS_SQL: Final = """
WITH b AS (
    SELECT block, lo_key, lo_step, lo_time, lo_value, lo_pos, hi_key, hi_step, hi_time, hi_value, hi_pos,
           block * {block} / {size} AS bucket
    FROM metric_blocks WHERE {where}
), lo AS (
    SELECT lo_step AS step, lo_time AS time, lo_value AS value, block * {block} + lo_pos AS pos,
           ROW_NUMBER() OVER (PARTITION BY bucket ORDER BY lo_key, block) AS r
    FROM b
), hi AS (
    SELECT hi_step AS step, hi_time AS time, hi_value AS value, block * {block} + hi_pos AS pos,
           ROW_NUMBER() OVER (PARTITION BY bucket ORDER BY hi_key DESC, block) AS r
    FROM b
)
SELECT DISTINCT pos, step, time, value FROM (
    SELECT pos, step, time, value FROM lo WHERE r = 1
    UNION ALL
    SELECT pos, step, time, value FROM hi WHERE r = 1
) picked ORDER BY pos
"""


def bucket_size(total: int, max_points: int) -> int:
    """Points per bucket when ``total`` points are downsampled to at most ``max_points``."""
    return -(-total // (max_points // 2))


def usable(total: int, blocks_total: int, ordered: bool, max_points: int) -> bool:
    """True when the block summaries answer a downsampled read of a series of ``total`` points."""
    return (
        total > max_points and blocks_total == total and ordered and bucket_size(total, max_points) >= BLOCK
    )


def _rows(
    first_block: int, s: npt.NDArray[np.int64], t: npt.NDArray[np.int64], v: npt.NDArray[np.float64],
    prev_max: int | None, offset: int = 0,
) -> list[Row]:  # fmt: skip
    """Summaries of the equal-length rows of the 2-D arrays ``s``, ``t``, ``v`` (one block per row)."""
    nan = np.isnan(v)
    lo_keys = np.where(nan, np.inf, v)
    hi_keys = np.where(nan, -np.inf, v)
    lo = lo_keys.argmin(axis=1)
    hi = hi_keys.argmax(axis=1)
    k = np.arange(s.shape[0])
    mins, maxs = s.min(axis=1), s.max(axis=1)
    inside = (np.diff(s, axis=1) >= 0).all(axis=1)
    before = np.concatenate(([np.iinfo(np.int64).min if prev_max is None else prev_max], maxs[:-1]))
    ordered = inside & (s[:, 0] >= before)
    columns = (
        first_block + k, np.full(s.shape[0], s.shape[1]), mins, maxs, ordered,
        lo_keys[k, lo], s[k, lo], t[k, lo], v[k, lo], lo + offset,
        hi_keys[k, hi], s[k, hi], t[k, hi], v[k, hi], hi + offset,
    )  # fmt: skip
    lists = [c.tolist() for c in columns]
    return [tuple(row) for row in zip(*lists, strict=True)]


def _merge(last: Row, seg: Row) -> Row:
    """The series' partial last block ``last`` with the points that fill it (``seg``, positions after it)."""
    (block, n, mins, maxs, ordered, lo_key, lo_step, lo_time, lo_value, lo_pos,
     hi_key, hi_step, hi_time, hi_value, hi_pos) = last  # fmt: skip
    lo = (lo_key, lo_step, lo_time, lo_value, lo_pos)
    hi = (hi_key, hi_step, hi_time, hi_value, hi_pos)
    if _key(seg[5], math.inf) < _key(lo_key, math.inf):
        lo = seg[5:10]
    if _key(seg[10], -math.inf) > _key(hi_key, -math.inf):
        hi = seg[10:15]
    return (block, n + seg[1], min(mins, seg[2]), max(maxs, seg[3]), bool(ordered) and seg[4], *lo, *hi)


def _key(value: float | None, missing: float) -> float:
    """A stored key (SQLite keeps no NaN: a key is never NaN, but a value read back may be None)."""
    return missing if value is None else float(value)


def extend_blocks(last: Row | None, steps: bytes, times: bytes, values: bytes) -> list[Row]:
    """The block rows a batch of one key writes: the series' last block (``last``, a row of
    :data:`COLUMNS`, or None for a new series) filled up when partial, then new blocks."""
    s = np.frombuffer(steps, dtype="<i8").astype(np.int64)
    t = np.frombuffer(times, dtype="<i8").astype(np.int64)
    v = np.frombuffer(values, dtype="<f8").astype(np.float64)
    out: list[Row] = []
    start = 0
    prev_max: int | None = None
    next_block = 0
    if last is not None:
        prev_max, next_block = int(last[3]), int(last[0]) + 1
        room = BLOCK - int(last[1])
        if room > 0 and s.size:
            fill = min(room, s.size)
            seg = _rows(int(last[0]), s[None, :fill], t[None, :fill], v[None, :fill], prev_max, int(last[1]))[
                0
            ]
            merged = _merge(last, seg)
            out.append(merged)
            prev_max = int(merged[3])
            start = fill
    whole = (s.size - start) // BLOCK * BLOCK
    if whole:
        part = slice(start, start + whole)
        shape = (-1, BLOCK)
        out += _rows(
            next_block, s[part].reshape(shape), t[part].reshape(shape), v[part].reshape(shape), prev_max
        )
        prev_max = int(out[-1][3])
        next_block += whole // BLOCK
    tail = slice(start + whole, s.size)
    if s.size - start - whole:
        out += _rows(next_block, s[None, tail], t[None, tail], v[None, tail], prev_max)
    return out


# -- the SQLite backend's side (the PostgreSQL one is in _pg_writes and _pg_reads) --------------------------

#: The table of the SQLite backend (created with its schema).
SQLITE_TABLE: Final = """
CREATE TABLE IF NOT EXISTS metric_blocks (
    series_id INTEGER NOT NULL, block INTEGER NOT NULL, n INTEGER NOT NULL, min_step INTEGER NOT NULL,
    max_step INTEGER NOT NULL, ordered INTEGER NOT NULL,
    lo_key REAL, lo_step INTEGER, lo_time INTEGER, lo_value REAL, lo_pos INTEGER,
    hi_key REAL, hi_step INTEGER, hi_time INTEGER, hi_value REAL, hi_pos INTEGER,
    PRIMARY KEY (series_id, block)) WITHOUT ROWID;
"""


def sqlite_add(conn: sqlite3.Connection, series_id: int, steps: bytes, times: bytes, values: bytes) -> None:
    """Keep the blocks of one key of a batch (called by the SQLite writer, inside the batch's savepoint)."""
    last = conn.execute(
        f"SELECT {', '.join(COLUMNS)} FROM metric_blocks WHERE series_id = ? ORDER BY block DESC LIMIT 1",
        (series_id,),
    ).fetchone()
    rows = extend_blocks(last, steps, times, values)
    conn.executemany(
        f"INSERT OR REPLACE INTO metric_blocks (series_id, {', '.join(COLUMNS)}) "
        f"VALUES ({', '.join('?' * (len(COLUMNS) + 1))})",
        [(series_id, *row) for row in rows],
    )


def sqlite_points(conn: sqlite3.Connection, run_id: int, key: str, max_points: int) -> Downsampled | None:
    """The series downsampled over its blocks, or None when they cannot answer (see the module doc)."""
    row = conn.execute("SELECT id FROM series WHERE run_id = ? AND name = ?", (run_id, key)).fetchone()
    if row is None:
        return None
    (total,) = conn.execute(
        "SELECT COALESCE(SUM(n), 0) FROM metric_chunks WHERE series_id = ?", row
    ).fetchone()
    if total <= max_points:
        return None
    _, blocks_total, ordered = conn.execute(STATS_SQL.format(where="series_id = ?"), row).fetchone()
    if not usable(int(total), int(blocks_total), bool(ordered), max_points):
        return None
    size = bucket_size(int(total), max_points)
    picked = conn.execute(POINTS_SQL.format(size=size, block=BLOCK, where="series_id = ?"), row).fetchall()
    return Downsampled(
        Series(
            np.array([p[1] for p in picked], dtype="<i8"),
            np.array([p[2] for p in picked], dtype="<i8"),
            np.array(
                [math.nan if p[3] is None else p[3] for p in picked], dtype="<f8"
            ),  # SQLite keeps no NaN
        ),
        int(total),
    )
