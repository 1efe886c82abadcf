"""Data payloads the protocol spells out (histogram, table) are checked field by field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

T0 = 1_795_870_984_866
HIST = {
    "freq": [1, 2, 3],
    "maxFreq": 3,
    "bins": {"min": 1.0, "max": 3.0, "num": 3},
    "shape": "uniform",
    "type": "Histogram",
    "v": 1,
}
TABLE = {
    "table": [[1, "cat"]],
    "col": [{"name": "id", "dtype": "int"}, {"name": "label", "dtype": "str"}],
    "type": "Table",
    "v": 1,
}


def line(data_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "time": T0,
        "step": 1,
        "logName": "k",
        "dataType": data_type,
        "data": orjson.dumps(payload).decode(),
    }


@pytest.mark.parametrize(
    ("data_type", "payload"),
    [
        ("HISTOGRAM", HIST),
        ("HISTOGRAM", {**HIST, "bins": [0, 1, 2.5, 4], "shape": "generic"}),
        ("TABLE", TABLE),
        ("TABLE", {**TABLE, "row": ["a"]}),
        ("GRAPH", {"nodes": [1, 2], "edges": [[1, 2]]}),
    ],
)
def test_good_payloads_are_stored(
    client: httpx.Client,
    ingest: Callable[..., httpx.Response],
    new_run: Callable[..., int],
    data_type: str,
    payload: dict[str, Any],
) -> None:
    run_id = new_run()
    assert ingest(run_id, "data", line(data_type, payload)).status_code == 200
    assert [r["data"] for r in client.get(f"/api/runs/{run_id}/data", params={"key": "k"}).json()] == [
        payload
    ]


@pytest.mark.parametrize(
    ("data_type", "payload", "field"),
    [
        ("HISTOGRAM", {k: v for k, v in HIST.items() if k != "maxFreq"}, "'maxFreq'"),
        ("HISTOGRAM", {**HIST, "colour": 1}, "'colour'"),
        ("HISTOGRAM", {**HIST, "freq": [1, -2]}, "'data.freq'"),
        ("HISTOGRAM", {**HIST, "bins": [0, 1], "shape": "generic"}, "'data.bins'"),
        ("HISTOGRAM", {**HIST, "bins": {"min": 0, "max": 1}}, "'data.bins'"),
        ("HISTOGRAM", {**HIST, "shape": "round"}, "'data.shape'"),
        ("HISTOGRAM", {**HIST, "type": "Table"}, "'data.type'"),
        ("TABLE", {**TABLE, "table": "1,cat"}, "'data.table'"),
        ("TABLE", {**TABLE, "col": [{"name": "id"}]}, "'data.col'"),
        ("TABLE", {k: v for k, v in TABLE.items() if k != "col"}, "'col'"),
    ],
)
def test_bad_payloads_are_refused(
    client: httpx.Client,
    ingest: Callable[..., httpx.Response],
    new_run: Callable[..., int],
    data_type: str,
    payload: dict[str, Any],
    field: str,
) -> None:
    run_id = new_run()
    good = line(data_type, HIST if data_type == "HISTOGRAM" else TABLE)
    answer = ingest(run_id, "data", good, line(data_type, payload))
    assert answer.status_code == 400, answer.text
    assert "line 2" in answer.json()["message"]
    assert field in answer.json()["message"]
    assert client.get(f"/api/runs/{run_id}/data", params={"key": "k"}).status_code == 404  # nothing stored
