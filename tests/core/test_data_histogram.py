"""mlop.Histogram: counts of the finite values, as the protocol's payload."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mlop
from mlop._loggable import MediaSink


def _data(tmp_path: Path, data: dict[str, Any]) -> list[dict[str, Any]]:
    run = mlop.init(dir=tmp_path, mode="offline", disable_system_metrics=True, disable_console=True)
    run.log(data)
    run.finish()
    reader = mlop.open_run(run.dir)
    try:
        return list(reader.data())
    finally:
        reader.close()


def test_payload_matches_the_protocol_field_for_field(tmp_path: Path) -> None:
    [row] = _data(tmp_path, {"hist": mlop.Histogram([1, 2, 2, 3, 3, 3], bins=3)})
    assert row["key"] == "hist" and row["type"] == "HISTOGRAM" and row["step"] == 0
    assert row["value"] == {
        "freq": [1, 2, 3],
        "maxFreq": 3,
        "bins": {"min": 1.0, "max": 3.0, "num": 3},
        "shape": "uniform",
        "type": "Histogram",
        "v": 1,
    }
    json.dumps(row["value"], allow_nan=False)


def test_counts_sum_to_the_finite_values(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "mlop")
    values = np.random.default_rng(0).normal(size=(50, 40))
    values[0, :7] = np.nan
    values[1, :3] = np.inf
    values[2, :2] = -np.inf
    histogram = mlop.Histogram(values, bins=16)
    [row] = _data(tmp_path, {"w": histogram})
    payload = row["value"]
    assert sum(payload["freq"]) == 2000 - 12
    assert histogram.nonfinite == 12
    assert len(payload["freq"]) == 16 == payload["bins"]["num"]
    finite = values[np.isfinite(values)]
    assert payload["bins"]["min"] == finite.min() and payload["bins"]["max"] == finite.max()
    assert payload["maxFreq"] == max(payload["freq"])
    assert "12 non-finite" in caplog.text


def test_large_inputs_are_counted_too(tmp_path: Path) -> None:
    values = np.arange(200_000, dtype=np.float32)
    [row] = _data(tmp_path, {"big": mlop.Histogram(values, bins=4)})
    assert row["value"]["freq"] == [50_000] * 4


def test_a_precomputed_pair_uniform_and_not(tmp_path: Path) -> None:
    counts, edges = np.histogram(np.arange(10), bins=5)
    rows = _data(
        tmp_path,
        {
            "uniform": mlop.Histogram((counts, edges)),
            "generic": mlop.Histogram(([4, 0, 1], [0.0, 1.0, 10.0, 100.0])),
        },
    )
    by_key = {r["key"]: r["value"] for r in rows}
    assert by_key["uniform"]["freq"] == [2, 2, 2, 2, 2]
    assert by_key["uniform"]["bins"] == {"min": 0.0, "max": 9.0, "num": 5}
    assert by_key["generic"] == {
        "freq": [4, 0, 1],
        "maxFreq": 4,
        "bins": [0.0, 1.0, 10.0, 100.0],
        "shape": "generic",
        "type": "Histogram",
        "v": 1,
    }


def test_explicit_edges_and_constant_values() -> None:
    edges = mlop.Histogram([0.5, 1.5, 1.6, 9.0], bins=[0, 1, 2, 10]).to_dict()
    assert edges["freq"] == [1, 2, 1] and edges["shape"] == "generic"
    constant = mlop.Histogram([2.0, 2.0, 2.0], bins=4).to_dict()
    assert sum(constant["freq"]) == 3
    assert constant["bins"]["min"] < 2.0 < constant["bins"]["max"]


def test_only_non_finite_values_give_empty_counts() -> None:
    payload = mlop.Histogram([float("nan")], bins=2).to_dict()
    assert payload["freq"] == [0, 0] and payload["maxFreq"] == 0


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (([],), ValueError, "no values"),
        (([1, 2], 0), ValueError, "bins"),
        (([1, 2], 10_000), ValueError, "bins"),
        (([1, 2], [3, 2, 1]), ValueError, "increasing"),
        ((([1, -1], [0, 1, 2]),), ValueError, "non-negative"),
        ((["a", "b"],), TypeError, "numbers"),
        ((object(),), TypeError, "object"),
    ],
)
def test_bad_input_fails_when_the_value_is_made(
    args: tuple[Any, ...], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        mlop.Histogram(*args)


FIXTURE = Path(__file__).parents[1] / "server" / "fixtures" / "original-client-session.jsonl"


def test_the_original_clients_data_lines_are_what_these_types_make(tmp_path: Path) -> None:
    """The histogram and table of the recorded session (protocol.md, "A real session"), rebuilt."""
    requests = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    lines = [
        json.loads(line)
        for request in requests
        if request["path"] == "/ingest/data"
        for line in request["body"].splitlines()
    ]
    by_type = {line["dataType"]: json.loads(line["data"]) for line in lines}
    histogram = mlop.Histogram([1, 2, 2, 3, 3, 3], bins=3)
    table = mlop.Table([[1, "cat"], [2, "dog"]], columns=["id", "label"])
    assert by_type == {"HISTOGRAM": histogram.to_dict(), "TABLE": table.to_dict()}
    sink = MediaSink(tmp_path, lambda kind, item: None)
    for value, data_type in ((histogram, "HISTOGRAM"), (table, "TABLE")):
        [(kind, (_step, _time, _key, stored_type, payload))] = value.mlop_items(sink, "k", 0, 0.0, None)
        assert (kind, stored_type, payload) == ("data", data_type, value.to_dict())


def test_integer_boolean_and_float32_values() -> None:
    ints = mlop.Histogram(np.array([1, 1, 2, 9], dtype=np.int64), bins=2).to_dict()
    assert ints["freq"] == [3, 1] and ints["bins"] == {"min": 1.0, "max": 9.0, "num": 2}
    flags = mlop.Histogram(np.array([True, False, True]), bins=2).to_dict()
    assert flags["freq"] == [1, 2]
    source = np.array([0.5, np.nan, 1.5], dtype=np.float32)
    histogram = mlop.Histogram(source, bins=1)
    source[:] = 100.0  # the histogram counts the values as they were when it was made
    assert histogram.to_dict()["freq"] == [2] and histogram.nonfinite == 1
