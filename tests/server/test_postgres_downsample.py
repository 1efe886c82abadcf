"""A long series' chart is downsampled in the database, on both backends, with the answers the docs promise.

``/api/runs/{id}/metrics?max_points=N`` of a series long enough for its block summaries (``_blocks``: arrival
blocks of 1,024 points) keeps, per bucket of whole blocks, the lowest and the highest point (NaN counts as
neither); shorter series, and series whose steps went back, are downsampled exactly from the whole series.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest

from mlop_server._readapi import downsample
from mlop_server._storage import Series

BLOCK = 1024


def series(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=n)
    values[rng.random(n) < 0.05] = np.nan
    values[1234] = 50.0  # a spike inside a bucket
    values[3300:3400] = np.nan  # a NaN stretch
    return values


def send(ingest: Callable[..., httpx.Response], run_id: int, steps: list[int], values: np.ndarray) -> None:
    """Send the points in batches of 2,500 (so blocks are filled across batches)."""
    for start in range(0, len(steps), 2500):
        lines = [
            {"step": s, "time": 1000 + s, "data": {"y": "NaN" if math.isnan(v) else float(v)}}
            for s, v in zip(steps[start : start + 2500], values[start : start + 2500].tolist(), strict=True)
        ]
        assert ingest(run_id, "metrics", *lines).status_code == 200


def read(client: httpx.Client, run_id: int, max_points: int) -> tuple[list[dict[str, Any]], int]:
    answer = client.get(f"/api/runs/{run_id}/metrics", params={"key": "y", "max_points": max_points})
    assert answer.status_code == 200, answer.text
    return answer.json(), int(answer.headers["x-total-points"])


def wire(value: float) -> Any:
    return "NaN" if math.isnan(value) else value


def by_blocks(values: np.ndarray, max_points: int) -> list[int]:
    """The positions the documented block rule keeps (written here independently of the server's SQL)."""
    n = values.size
    size = -(-n // (max_points // 2))
    buckets: dict[int, list[int]] = {}
    for block in range(-(-n // BLOCK)):
        buckets.setdefault(block * BLOCK // size, []).append(block)
    keep: set[int] = set()
    for blocks in buckets.values():
        lo, hi = blocks[0] * BLOCK, min(n, (blocks[-1] + 1) * BLOCK)
        part = values[lo:hi]
        low = np.where(np.isnan(part), np.inf, part)
        high = np.where(np.isnan(part), -np.inf, part)
        keep |= {lo + int(low.argmin()), lo + int(high.argmax())}
    return sorted(keep)


def test_a_long_series_keeps_each_buckets_extremes(
    client: httpx.Client, new_run: Callable[..., int], ingest: Callable[..., httpx.Response]
) -> None:
    n = 6000
    values = series(n, 1)
    run_id = new_run(name="long")
    send(ingest, run_id, list(range(n)), values)
    points, total = read(client, run_id, 8)
    assert total == n
    assert len(points) <= 8
    expected = by_blocks(values, 8)
    assert [p["step"] for p in points] == expected
    assert [p["value"] for p in points] == [wire(float(values[i])) for i in expected]
    assert [p["time"] for p in points] == [1000 + i for i in expected]
    assert {"step": 1234, "time": 2234, "value": 50.0} in points  # the spike survives
    # a chart wide enough for every point gets the whole series
    whole, total = read(client, run_id, n)
    assert total == n and [p["step"] for p in whole] == list(range(n))


@pytest.mark.parametrize("max_points", [6, 200])
def test_steps_that_went_back_or_a_fine_chart_are_downsampled_exactly(
    client: httpx.Client, new_run: Callable[..., int], ingest: Callable[..., httpx.Response], max_points: int
) -> None:
    n = 5000
    values = series(n, 2)
    run_id = new_run(name="back")
    steps = list(range(n))
    if max_points == 6:
        steps = steps[2500:] + steps[:2500]  # logged again from 0 after step 4999: blocks are out of order
    send(ingest, run_id, steps, values)
    order = np.argsort(np.array(steps), kind="stable")
    whole = Series(np.array(steps)[order], 1000 + np.array(steps)[order], values[order])
    expected = downsample(whole, max_points)
    points, total = read(client, run_id, max_points)
    assert total == n
    assert [p["step"] for p in points] == whole.steps[expected].tolist()
    assert [p["value"] for p in points] == [wire(float(v)) for v in whole.values[expected]]
