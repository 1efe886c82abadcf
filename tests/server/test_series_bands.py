"""The dashboard's series read: a downsampled series carries each bucket's lowest and highest value."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import numpy as np

from mlop_server._readapi import bands, downsample
from mlop_server._storage import Series

Api = Callable[..., httpx.Response]


def test_a_spike_between_kept_points_is_in_its_buckets_band(
    client: httpx.Client, new_run: Callable[..., int], ingest: Api
) -> None:
    run_id = new_run(project="bands")
    n, spike_at = 20_000, 12_345
    lines: list[dict[str, Any]] = [
        {"time": 1000 + s, "step": s, "data": {"y": 1000.0 if s == spike_at else (s % 10) / 10}}
        for s in range(n)
    ]
    lines[500]["data"]["y"] = "NaN"
    for start in range(0, n, 5000):
        assert ingest(run_id, "metrics", *lines[start : start + 5000]).status_code == 200
    found = client.get(f"/api/runs/{run_id}/series", params={"key": "y", "max_points": 200}).json()["y"]
    assert found["total"] == n
    assert len(found["lo"]) == len(found["hi"]) == len(found["steps"]) <= 200
    # the spike's bucket reaches 1000; every other bucket spans 0 .. 0.9
    spiky = [i for i, hi in enumerate(found["hi"]) if hi == 1000.0]
    assert spiky and all(found["steps"][i] // 200 == spike_at // 200 for i in spiky)  # buckets of 200
    assert all(hi == 0.9 for i, hi in enumerate(found["hi"]) if i not in spiky)
    assert set(found["lo"]) == {0.0}
    # a short series is not downsampled: no band, no total
    small = client.get(f"/api/runs/{run_id}/series", params={"key": "y", "max_points": 100_000}).json()["y"]
    assert len(small["steps"]) == n and "lo" not in small and "total" not in small


def test_bands_match_downsample_buckets_with_a_ragged_tail_and_nan() -> None:
    rng = np.random.default_rng(3)
    for n, max_points in ((1001, 10), (999, 40), (5, 4), (10_007, 1000)):
        values = rng.normal(size=n)
        values[rng.integers(0, n, size=max(1, n // 50))] = np.nan
        series = Series(np.arange(n, dtype=np.int64), np.arange(n, dtype=np.int64), values)
        index = downsample(series, max_points)
        lo, hi = bands(series, index, max_points)
        size = -(-n // (max_points // 2))
        for i, at in enumerate(index.tolist()):
            bucket = values[at // size * size : at // size * size + size]
            finite = bucket[~np.isnan(bucket)]
            if finite.size:
                assert lo[i] == finite.min() and hi[i] == finite.max()
                if not np.isnan(values[at]):
                    assert lo[i] <= values[at] <= hi[i]
            else:
                assert np.isnan(lo[i]) and np.isnan(hi[i])
