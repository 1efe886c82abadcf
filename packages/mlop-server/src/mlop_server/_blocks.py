"""Block summaries of metric series, kept on ingest, so that a long series is downsampled from them, unread.

A series' points, in arrival order, fall into blocks of :data:`BLOCK` points (block ``i`` holds arrival
positions ``i*BLOCK`` to ``i*BLOCK+BLOCK-1``; only the last block of a series is ever partial, and the next
batch fills it first). Each block keeps its count, its lowest and highest step, whether its points are in
step order after the previous block's (``ordered``), and its lowest and highest point the way the read API's
downsampling picks them (NaN counts as neither: its key for "lowest" is +inf, for "highest" -inf; of equal
keys, the first). Both backends keep the same blocks, so they answer the same points.

Downsampling over blocks (:func:`pick`, over the block rows that one query reads for many series) cuts
the series into buckets of whole blocks: a block goes to bucket ``(points before it) // size`` with
``size = ceil(n / (max_points // 2))`` as in the read API's exact downsampling, and each bucket keeps its
lowest and highest point. It is used when every block is ordered (so arrival order is step order) and a
bucket spans at least one block (``size >= BLOCK``); buckets then differ from the exact equal-count buckets
by less than one block at each edge. Shorter series, and series whose steps went back, are downsampled
exactly from the whole series.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from mlop_server._storage import Downsampled, Series

if TYPE_CHECKING:
    import sqlite3

__all__ = [
    "BLOCK",
    "COLUMNS",
    "PICK_COLUMNS",
    "SQLITE_TABLE",
    "STATS_SQL",
    "answerable",
    "bucket_size",
    "extend_blocks",
    "pick",
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

#: The block columns a downsampled read takes, after the series' id (:func:`pick`); a point's key (its value,
#: NaN as +inf or -inf) is not read: it follows from the value.
PICK_COLUMNS: Final = (
    "block",
    "lo_step", "lo_time", "lo_value", "lo_pos",
    "hi_step", "hi_time", "hi_value", "hi_pos",
)  # fmt: skip

#: Per series (``{where}`` names them): its blocks' points and whether every block is in step order (1/0).
STATS_SQL: Final = (
    "SELECT series_id, COALESCE(SUM(n), 0), MIN(CASE WHEN ordered THEN 1 ELSE 0 END) FROM metric_blocks "
    "WHERE {where} GROUP BY series_id"
)


def bucket_size(total: int, max_points: int) -> int:
    """Points per bucket when ``total`` points are downsampled to at most ``max_points``."""
    return -(-total // (max_points // 2))


def usable(total: int, blocks_total: int, ordered: bool, max_points: int) -> bool:
    """True when the block summaries answer a downsampled read of a series of ``total`` points."""
    return (
        total > max_points and blocks_total == total and ordered and bucket_size(total, max_points) >= BLOCK
    )


def answerable(stats: Sequence[Row], totals: Mapping[int, int], max_points: int) -> dict[int, int]:
    """The series whose blocks answer a read of ``max_points`` (:func:`usable`), with their bucket size;
    ``stats`` are :data:`STATS_SQL` rows, ``totals`` each series' length."""
    return {
        int(sid): bucket_size(int(totals[sid]), max_points)
        for sid, points, ordered in stats
        if usable(int(totals.get(sid, 0)), int(points), bool(ordered), max_points)
    }


def pick(rows: Sequence[Row], sizes: Mapping[int, int], totals: Mapping[int, int]) -> dict[int, Downsampled]:
    """Series downsampled over their blocks: per bucket of whole blocks, its lowest and its highest point
    (NaN neither; the first block's of equal values; one point when both are the same), in series order.

    ``rows`` are ``(series_id, *PICK_COLUMNS)`` of the series in ``sizes`` (each one's bucket size, from
    :func:`answerable`), ordered by series and block; ``totals`` each series' length. By series id.
    """
    if not rows:
        return {}
    c = list(zip(*rows, strict=True))
    sid = np.array(c[0], dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]])
    ids = sid[starts].tolist()
    which = np.repeat(np.arange(len(ids)), np.diff(np.r_[starts, sid.size]))
    block = np.array(c[1], dtype=np.int64)
    bucket = block * BLOCK // np.array([sizes[i] for i in ids], dtype=np.int64)[which]
    lo_values = np.array(c[4], dtype=np.float64)  # SQLite keeps no NaN: None reads as NaN here
    hi_values = np.array(c[8], dtype=np.float64)
    lo_key = np.where(np.isnan(lo_values), math.inf, lo_values)
    hi_key = np.where(np.isnan(hi_values), -math.inf, hi_values)
    by_lo = np.lexsort((block, lo_key, bucket, which))  # per bucket, the lowest first (then the first block)
    by_hi = np.lexsort((block, -hi_key, bucket, which))
    w, b = which[by_lo], bucket[by_lo]  # the same sequence in both orders
    first = np.r_[True, (w[1:] != w[:-1]) | (b[1:] != b[:-1])]
    lo_rows, hi_rows = by_lo[first], by_hi[first]

    def points(at: int, values: npt.NDArray[np.float64], chosen: npt.NDArray[np.intp]) -> tuple[Any, ...]:
        pos = block[chosen] * BLOCK + np.array(c[at + 3], dtype=np.int64)[chosen]
        steps = np.array(c[at], dtype=np.int64)[chosen]
        times = np.array(c[at + 1], dtype=np.int64)[chosen]
        return which[chosen], pos, steps, times, values[chosen]

    lo, hi = points(2, lo_values, lo_rows), points(6, hi_values, hi_rows)
    w, pos, steps, times, values = (np.concatenate(pair) for pair in zip(lo, hi, strict=True))
    order = np.lexsort((pos, w))
    w, pos, steps, times, values = w[order], pos[order], steps[order], times[order], values[order]
    new = np.r_[True, (w[1:] != w[:-1]) | (pos[1:] != pos[:-1])]  # a bucket's lowest and highest: one point
    w, steps, times, values = w[new], steps[new], times[new], values[new]
    bounds = np.searchsorted(w, np.arange(len(ids) + 1))
    return {
        series_id: Downsampled(
            Series(
                steps[bounds[j] : bounds[j + 1]].astype("<i8"),
                times[bounds[j] : bounds[j + 1]].astype("<i8"),
                values[bounds[j] : bounds[j + 1]].astype("<f8"),
            ),
            int(totals[series_id]),
        )
        for j, series_id in enumerate(ids)
    }


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


def sqlite_points(
    conn: sqlite3.Connection, run_id: int, keys: Sequence[str], max_points: int
) -> dict[str, Downsampled]:
    """Of a run's ``keys``, those its block summaries answer, downsampled (see the module doc); the others
    (unknown, short, steps that went back) are left out. Four queries, whatever the number of keys."""
    if not keys:
        return {}
    named: dict[int, str] = dict(
        conn.execute(
            f"SELECT id, name FROM series WHERE run_id = ? AND name IN ({', '.join('?' * len(keys))})",
            (run_id, *keys),
        ).fetchall()
    )
    if not named:
        return {}
    totals: dict[int, int] = dict(
        conn.execute(
            f"SELECT series_id, SUM(n) FROM metric_chunks WHERE series_id IN ({', '.join('?' * len(named))}) "
            "GROUP BY series_id",
            tuple(named),
        ).fetchall()
    )
    wanted = [
        sid for sid, total in totals.items() if total > max_points and bucket_size(total, max_points) >= BLOCK
    ]
    if not wanted:
        return {}
    marks = ", ".join("?" * len(wanted))
    stats = conn.execute(STATS_SQL.format(where=f"series_id IN ({marks})"), wanted).fetchall()
    sizes = answerable(stats, totals, max_points)
    if not sizes:
        return {}
    rows = conn.execute(
        f"SELECT series_id, {', '.join(PICK_COLUMNS)} FROM metric_blocks "
        f"WHERE series_id IN ({', '.join('?' * len(sizes))}) ORDER BY series_id, block",
        list(sizes),
    ).fetchall()
    return {named[sid]: found for sid, found in pick(rows, sizes, totals).items()}
