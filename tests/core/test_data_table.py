"""mlop.Table and mlop.Graph: rows, columns and dtypes, nodes and edges, as the protocol's payloads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mlop


def _data(tmp_path: Path, data: dict[str, Any]) -> list[dict[str, Any]]:
    run = mlop.init(dir=tmp_path, mode="offline", disable_system_metrics=True, disable_console=True)
    run.log(data, step=5)
    run.finish()
    reader = mlop.open_run(run.dir)
    try:
        return list(reader.data())
    finally:
        reader.close()


def test_rows_payload_matches_the_protocol(tmp_path: Path) -> None:
    [row] = _data(tmp_path, {"preds": mlop.Table([[1, "cat"], [2, "dog"]], columns=["id", "label"])})
    assert row["key"] == "preds" and row["type"] == "TABLE" and row["step"] == 5
    # the same payload the original client sent for this table (fixtures/original-client-session.jsonl)
    assert row["value"] == {
        "table": [[1, "cat"], [2, "dog"]],
        "col": [{"name": "id", "dtype": "int"}, {"name": "label", "dtype": "str"}],
        "type": "Table",
        "v": 1,
    }


def test_dtypes_and_cells_of_every_kind() -> None:
    table = mlop.Table(
        [
            [1, 0.5, True, "a", None, np.int64(3), float("nan"), [1, 2]],
            [2, 1, False, "b", None, np.int64(4), float("inf"), "x"],
        ],
        columns=["i", "f", "b", "s", "n", "np", "nonfinite", "mixed"],
        rows=["first", "second"],
    )
    payload = table.to_dict()
    assert [c["dtype"] for c in payload["col"]] == [
        "int",
        "float",
        "bool",
        "str",
        "null",
        "int",
        "float",
        "object",
    ]
    assert payload["table"] == [
        [1, 0.5, True, "a", None, 3, "NaN", [1, 2]],
        [2, 1, False, "b", None, 4, "Infinity", "x"],
    ]
    assert payload["row"] == ["first", "second"]
    assert list(payload) == ["table", "col", "row", "type", "v"]
    json.dumps(payload, allow_nan=False)


def test_a_numpy_matrix_and_numpy_scalars() -> None:
    matrix = mlop.Table(np.array([[1.5, 2.0], [3.0, np.nan]]), columns=["a", "b"]).to_dict()
    assert matrix["table"] == [[1.5, 2.0], [3.0, "NaN"]]
    assert [c["dtype"] for c in matrix["col"]] == ["float", "float"]
    scalars = mlop.Table([[np.True_, np.int32(2), np.float32(0.5), np.str_("s")]]).to_dict()
    assert scalars["table"] == [[True, 2, 0.5, "s"]]
    assert [c["dtype"] for c in scalars["col"]] == ["bool", "int", "float", "str"]


def test_a_dict_of_columns() -> None:
    payload = mlop.Table({"epoch": [1, 2], "acc": np.array([0.5, 0.75])}).to_dict()
    assert payload["table"] == [[1, 0.5], [2, 0.75]]
    assert payload["col"] == [{"name": "epoch", "dtype": "int"}, {"name": "acc", "dtype": "float"}]
    with pytest.raises(ValueError, match="different lengths"):
        mlop.Table({"a": [1, 2], "b": [1]})
    with pytest.raises(TypeError, match="not a list of cells"):
        mlop.Table({"a": 1})


def test_rows_as_dicts_and_default_column_names() -> None:
    by_name = mlop.Table([{"a": 1, "b": "x"}, {"b": "y", "c": 2.5}]).to_dict()
    assert [c["name"] for c in by_name["col"]] == ["a", "b", "c"]
    assert by_name["table"] == [[1, "x", None], [None, "y", 2.5]]
    unnamed = mlop.Table([[1, 2], [3, 4]]).to_dict()
    assert [c["name"] for c in unnamed["col"]] == ["0", "1"]
    empty = mlop.Table(columns=["a"]).to_dict()
    assert empty["table"] == [] and empty["col"] == [{"name": "a", "dtype": "null"}]


def test_dataframe_positionally_or_by_keyword(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(
        {
            "id": np.array([1, 2, 3], dtype=np.int64),
            "score": [0.25, np.nan, 1.0],
            "ok": [True, False, True],
            "label": pd.Series(["a", "b", None], dtype="string"),
            "when": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"]),
        }
    )
    rows = _data(tmp_path, {"pos": mlop.Table(frame), "kw": mlop.Table(dataframe=frame)})
    assert rows[0]["value"] == rows[1]["value"]
    payload = rows[0]["value"]
    assert payload["col"] == [
        {"name": "id", "dtype": "int"},
        {"name": "score", "dtype": "float"},
        {"name": "ok", "dtype": "bool"},
        {"name": "label", "dtype": "str"},
        {"name": "when", "dtype": "datetime"},
    ]
    assert payload["table"] == [
        [1, 0.25, True, "a", "2024-01-01T00:00:00"],
        [2, "NaN", False, "b", "2024-01-02T00:00:00"],
        [3, 1.0, True, None, "2024-01-03T00:00:00"],
    ]
    assert "row" not in payload
    labelled = mlop.Table(frame.set_index("label")).to_dict()
    assert labelled["row"] == ["a", "b", None]
    assert [c["name"] for c in labelled["col"]] == ["id", "score", "ok", "when"]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"data": [[1, 2], [3]]}, ValueError, "row 1 has 1 cells"),
        ({"data": [[1, 2]], "columns": ["a"]}, ValueError, "row 0 has 2 cells"),
        ({"data": [[1]], "rows": ["a", "b"]}, ValueError, "row labels"),
        ({"data": [[1]], "dataframe": [[1]]}, TypeError, "not both"),
        ({"data": "abc"}, TypeError, "str"),
        ({"data": [1, 2]}, TypeError, "row 0"),
    ],
)
def test_bad_tables_fail_when_made(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        mlop.Table(**kwargs)


def test_graph_payload(tmp_path: Path) -> None:
    graph = mlop.Graph(
        nodes={"a": {"label": "input"}, "b": {}, 3: {"weight": 0.5}},
        edges=[("a", "b"), ("b", 3, {"kind": "skip"})],
        attributes={"name": "tiny"},
    )
    [row] = _data(tmp_path, {"g": graph})
    assert row["type"] == "GRAPH"
    assert row["value"] == {
        "nodes": [{"label": "input", "id": "a"}, {"id": "b"}, {"weight": 0.5, "id": 3}],
        "edges": [{"source": "a", "target": "b"}, {"kind": "skip", "source": "b", "target": 3}],
        "directed": True,
        "attributes": {"name": "tiny"},
        "type": "Graph",
        "v": 1,
    }
    assert mlop.Graph.log_type == "DATA"


def test_graph_nodes_from_edges_and_from_pairs() -> None:
    implicit = mlop.Graph(edges=[(1, 2), (2, 3)], directed=False).to_dict()
    assert [n["id"] for n in implicit["nodes"]] == [1, 2, 3] and implicit["directed"] is False
    pairs = mlop.Graph(nodes=[("x", {"c": 1}), "y"], edges=[("x", "y")]).to_dict()
    assert pairs["nodes"] == [{"c": 1, "id": "x"}, {"id": "y"}]


class _NetworkxLike:
    def __init__(self) -> None:
        self.graph = {"title": "g"}

    def is_directed(self) -> bool:
        return False

    def nodes(self, data: bool = False) -> list[tuple[str, dict[str, Any]]]:
        return [("u", {"size": 1}), ("v", {})]

    def edges(self, data: bool = False) -> list[tuple[str, str, dict[str, Any]]]:
        return [("u", "v", {"w": 2})]


def test_graph_from_a_networkx_style_graph() -> None:
    payload = mlop.Graph(_NetworkxLike()).to_dict()
    assert payload["directed"] is False and payload["attributes"] == {"title": "g"}
    assert payload["edges"] == [{"w": 2, "source": "u", "target": "v"}]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"nodes": ["a"], "edges": [("a", "b")]}, ValueError, "not a node"),
        ({"nodes": ["a", "a"]}, ValueError, "twice"),
        ({"nodes": [1.5]}, TypeError, "str or an int"),
        ({"nodes": {"a": {"x": object()}}}, TypeError, "JSON-safe"),
        ({"edges": [("a",)]}, TypeError, "edge 0"),
    ],
)
def test_bad_graphs_fail_when_made(kwargs: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        mlop.Graph(**kwargs)
