"""Hypothesis over the NDJSON and JSON routes: the server never answers 5xx, and every value it accepts
reads back exactly (``MLOP_FUZZ_EXAMPLES`` examples per test; ``make fuzz`` raises it)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlop_server.testing import ServerProcess

EXAMPLES = int(os.environ.get("MLOP_FUZZ_EXAMPLES", "12"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
INT64 = 2**63 - 1

keys = st.text(min_size=1, max_size=12)
floats = st.floats(allow_nan=True, allow_infinity=True)
numbers = st.one_of(floats, st.integers(-(2**70), 2**70))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), INT64)
    | st.floats(allow_nan=False, allow_infinity=False)  # JSON has no infinities (json.dumps writes Infinity)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, db_url: str | None) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("fuzz-values"), db=db_url) as proc:
        yield proc


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}, timeout=30
    ) as client:
        yield client


def wire(value: float | int) -> Any:
    """A metric value as the protocol sends it: non-finite floats as their names."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def read_value(value: Any) -> float:
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}.get(value, value)  # type: ignore[no-any-return]


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def new_run(http: httpx.Client) -> int:
    return int(http.post("/api/runs/create", json={"runName": "f", "projectName": "fuzz"}).json()["runId"])


def post_ndjson(http: httpx.Client, run_id: int, kind: str, lines: list[Any]) -> httpx.Response:
    body = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    return http.post(
        f"/ingest/{kind}",
        content=body,
        headers={"Content-Type": "application/x-ndjson", "X-Run-Id": str(run_id)},
    )


metric_lines = st.lists(
    st.fixed_dictionaries(
        {
            "time": st.integers(0, INT64),
            "step": st.integers(-2, INT64),
            "data": st.dictionaries(keys, numbers, min_size=1, max_size=4),
        }
    ),
    min_size=1,
    max_size=8,
)


@FUZZ
@given(lines=metric_lines)
def test_metrics_read_back_exactly(http: httpx.Client, lines: list[dict[str, Any]]) -> None:
    run_id = new_run(http)
    sent = [{**line, "data": {k: wire(v) for k, v in line["data"].items()}} for line in lines]
    answer = post_ndjson(http, run_id, "metrics", sent)
    assert answer.status_code < 500, answer.text
    if answer.status_code != 200:
        assert answer.status_code == 400
        assert http.get(f"/api/runs/{run_id}/keys").json() == []  # a refused batch leaves nothing
        return
    assert all(line["step"] >= 0 for line in lines)
    for key in {k for line in lines for k in line["data"]}:
        expected = [
            (line["step"], line["time"], float(line["data"][key])) for line in lines if key in line["data"]
        ]
        expected.sort(key=lambda point: point[0])  # step order; equal steps in arrival order (stable)
        points = http.get(f"/api/runs/{run_id}/metrics", params={"key": key}).json()
        got = [(p["step"], p["time"], read_value(p["value"])) for p in points]
        assert [g[:2] for g in got] == [e[:2] for e in expected]
        assert all(same(g[2], e[2]) for g, e in zip(got, expected, strict=True)), (got, expected)


text_lines = st.lists(
    st.fixed_dictionaries(
        {
            "time": st.integers(0, INT64),
            "step": st.integers(0, INT64),
            "logName": keys,
            "data": st.text(max_size=40),
        }
    ),
    min_size=1,
    max_size=6,
)


@FUZZ
@given(lines=text_lines, payload=st.dictionaries(st.text(max_size=6), json_values, max_size=4))
def test_data_and_logs_read_back_exactly(
    http: httpx.Client, lines: list[dict[str, Any]], payload: dict[str, Any]
) -> None:
    run_id = new_run(http)
    series = [{**line, "dataType": "string-series"} for line in lines]
    series.append(
        {"time": 1, "step": 0, "logName": "payload", "dataType": "DATA", "data": json.dumps(payload)}
    )
    answer = post_ndjson(http, run_id, "data", series)
    assert answer.status_code == 200, answer.text
    for name in {line["logName"] for line in series}:
        rows = http.get(f"/api/runs/{run_id}/data", params={"key": name}).json()
        mine = sorted((line for line in series if line["logName"] == name), key=lambda line: line["step"])
        want = [line["data"] if line["dataType"] == "string-series" else payload for line in mine]
        assert [row["data"] for row in rows] == want
    console = [
        {"time": line["time"], "message": line["data"], "lineNumber": i, "logType": "INFO"}
        for i, line in enumerate(lines)
    ]
    assert post_ndjson(http, run_id, "logs", console).status_code == 200
    logs = http.get(f"/api/runs/{run_id}/logs").json()
    assert [(row["message"], row["lineNumber"]) for row in logs] == [
        (c["message"], c["lineNumber"]) for c in console
    ]


@FUZZ
@given(
    config=st.dictionaries(st.text(max_size=8), json_values, max_size=5),
    tags=st.lists(st.text(min_size=1, max_size=10), max_size=5),
    name=st.text(max_size=20),
    body=st.one_of(json_values, st.dictionaries(st.text(max_size=12), json_values, max_size=6)),
)
def test_json_routes_keep_what_they_accept(
    http: httpx.Client, config: dict[str, Any], tags: list[str], name: str, body: Any
) -> None:
    created = http.post(
        "/api/runs/create",
        json={"runName": name, "projectName": "fuzz", "config": json.dumps(config), "tags": tags},
    )
    if sum(t.startswith("group:") for t in tags) > 1:
        assert created.status_code == 400
        return
    assert created.status_code == 200, created.text
    run_id = created.json()["runId"]
    run = http.get(f"/api/runs/{run_id}").json()
    assert (run["name"], run["config"], run["tags"]) == (name, config, tags)
    for route in ("create", "config/update", "tags/update", "status/update", "alert", "modelGraph/create"):
        answer = http.post(f"/api/runs/{route}", content=json.dumps(body).encode())
        assert answer.status_code < 500, (route, answer.text)
    assert http.get(f"/api/runs/{run_id}").status_code == 200
