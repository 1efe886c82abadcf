"""The dashboard's series read: a downsampled series carries each bucket's lowest and highest value."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
from tests.server.test_postgres_downsample import by_blocks  # the documented block rule, from raw values

from mlop_server._readapi import bands, downsample
from mlop_server._series import _block_columns
from mlop_server._storage import Downsampled, Series

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


def test_a_long_series_from_block_summaries_keeps_its_band_and_a_run_at_rest_is_answered_again(
    client: httpx.Client, new_run: Callable[..., int], ingest: Api
) -> None:
    run_id = new_run(project="bands-blocks")
    n, spike_at = 150_000, 112_345
    steps = np.arange(n)
    values = np.sin(steps / 5000.0).tolist()
    values[spike_at] = -500.0
    for start in range(0, n, 50_000):
        body = "".join(
            f'{{"time":{1000 + s},"step":{s},"data":{{"y":{values[s]!r}}}}}\n'
            for s in range(start, start + 50_000)
        )
        answer = client.post(
            "/ingest/metrics",
            content=body.encode(),
            headers={"Content-Type": "application/x-ndjson", "X-Run-Id": str(run_id)},
        )
        assert answer.status_code == 200, answer.text
    params = {"key": "y", "max_points": 100}  # buckets of 3,000 points: the block summaries answer
    found = client.get(f"/api/runs/{run_id}/series", params=params).json()["y"]
    assert found["total"] == n and len(found["steps"]) <= 100
    assert min(found["values"]) == -500.0 and min(found["lo"]) == -500.0
    assert all(lo <= v <= hi for lo, v, hi in zip(found["lo"], found["values"], found["hi"], strict=True))
    spiky = [found["steps"][i] for i, lo in enumerate(found["lo"]) if lo == -500.0]
    assert all(abs(step - spike_at) < 6000 for step in spiky)  # the spike's bucket only
    # a run at rest is answered from the cache until something is written to it
    done = client.post("/api/runs/status/update", json={"runId": run_id, "status": "COMPLETED"})
    assert done.status_code == 200, done.text
    time.sleep(2.2)
    first = client.get(f"/api/runs/{run_id}/series", params=params).json()["y"]
    assert client.get(f"/api/runs/{run_id}/series", params=params).json()["y"] == first
    line = {"time": 9_000_000, "step": n, "data": {"y": 7000.0}}
    assert ingest(run_id, "metrics", line).status_code == 200
    after = client.get(f"/api/runs/{run_id}/series", params=params).json()["y"]
    assert after["total"] == n + 1 and max(after["hi"]) == 7000.0


def test_block_answers_pair_into_buckets_or_go_without_a_band() -> None:
    def answer(values: list[float]) -> Downsampled:
        ints = np.arange(len(values), dtype=np.int64) * 1000
        return Downsampled(Series(ints, ints, np.array(values)), total=4096)

    # 4,096 points to 4: buckets of 2,048 points, two blocks each: two buckets, two points each
    found = _block_columns(answer([1.0, 3.0, float("nan"), -2.0]), 4)
    assert found["total"] == 4096
    assert found["lo"] == [1.0, 1.0, -2.0, -2.0] and found["hi"] == [3.0, 3.0, -2.0, -2.0]
    # a bucket whose lowest and highest are one point: the pairs are unknown, no band
    found = _block_columns(answer([1.0, 3.0, 2.0]), 4)
    assert found["values"] == [1.0, 3.0, 2.0] and "lo" not in found


def test_several_keys_in_one_request_each_answered_as_alone(
    client: httpx.Client, new_run: Callable[..., int], ingest: Api
) -> None:
    """One /series request of keys of every kind: long ones from their block summaries (read together),
    one whose steps went back and a short one read whole, an unknown one left out."""
    rng = np.random.default_rng(7)
    n = 9000
    ties = rng.integers(0, 3, size=n).astype(float)  # equal extremes in many blocks: the first one counts
    ties[2048:3072] = np.nan  # a block of NaN only
    spiky = rng.normal(size=n)
    spiky[4321] = 80.0
    back = rng.normal(size=n)
    steps_back = list(range(4500, n)) + list(range(4500))  # logged again from 0: read whole
    run_id = new_run(project="bands-many")
    for start in range(0, n, 3000):
        lines = [
            {
                "time": 1000 + s,
                "step": s,
                "data": {
                    "ties": "NaN" if np.isnan(ties[s]) else float(ties[s]),
                    "spiky": float(spiky[s]),
                    **({"short": float(s)} if s < 6 else {}),
                },
            }
            for s in range(start, start + 3000)
        ]
        assert ingest(run_id, "metrics", *lines).status_code == 200
        lines = [
            {"time": 1000 + s, "step": s, "data": {"back": float(back[i])}}
            for i, s in enumerate(steps_back[start : start + 3000], start)
        ]
        assert ingest(run_id, "metrics", *lines).status_code == 200
    keys = ["ties", "spiky", "back", "short", "nothing"]
    found = client.get(f"/api/runs/{run_id}/series", params={"key": keys, "max_points": 8}).json()
    assert sorted(found) == ["back", "short", "spiky", "ties"]
    for key, values in (("ties", ties), ("spiky", spiky)):
        kept = by_blocks(values, 8)
        assert found[key]["steps"] == kept and found[key]["total"] == n
        assert found[key]["values"] == ["NaN" if np.isnan(values[i]) else values[i] for i in kept]
        assert found[key]["times"] == [1000 + i for i in kept]
    assert 80.0 in found["spiky"]["values"] and max(found["spiky"]["hi"]) == 80.0
    order = np.argsort(np.array(steps_back), kind="stable")
    whole = Series(np.array(steps_back)[order], 1000 + np.array(steps_back)[order], back[order])
    index = downsample(whole, 8)
    assert found["back"]["steps"] == whole.steps[index].tolist() and found["back"]["total"] == n
    assert found["short"]["steps"] == list(range(6)) and "total" not in found["short"]
    for key in keys[:4]:  # each key asked alone answers the same
        alone = client.get(f"/api/runs/{run_id}/series", params={"key": key, "max_points": 8}).json()
        assert alone == {key: found[key]}
