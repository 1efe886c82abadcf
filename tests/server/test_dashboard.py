"""The dashboard's server side: the page and its files are served (the charting library too), the reads
the pages use need a key, and the key given in the page's URL fragment never reaches the server's output."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from mlop_server.testing import ServerProcess

Api = Callable[..., httpx.Response]


def test_the_page_and_its_files_need_no_key_and_carry_no_data(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        root = anonymous.get("/")
        assert root.status_code == 307 and root.headers["location"] == "/ui/"
        page = anonymous.get("/ui/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["referrer-policy"] == "no-referrer"
        scripts = [part.split('"')[0] for part in page.text.split('src="')[1:]]
        assert "static/vendor/uPlot.iife.min.js" in scripts
        for path in [*scripts, "static/vendor/uPlot.min.css", "static/app.css"]:
            answer = anonymous.get(f"/ui/{path}")
            assert answer.status_code == 200, path
            assert len(answer.content) > 100, path
        assert "uPlot" in anonymous.get("/ui/static/vendor/uPlot.iife.min.js").text
        assert anonymous.get("/ui/static/../_dashboard.py").status_code == 404
        assert anonymous.get("/api/projects").status_code == 401


def test_projects_list_runs_count_and_last_update(client: httpx.Client, new_run: Callable[..., int]) -> None:
    new_run(project="dash-a")
    new_run(project="dash-a", name="second")
    new_run(project="dash-b")
    projects = {p["name"]: p for p in client.get("/api/projects").json()}
    assert projects["dash-a"]["runs"] == 2 and projects["dash-b"]["runs"] == 1
    assert projects["dash-a"]["updated"] > 0
    listed = [p["name"] for p in client.get("/api/projects").json()]
    assert listed.index("dash-b") < listed.index("dash-a")  # most recently updated first


def test_runs_list_carries_each_runs_summary(client: httpx.Client, new_run: Callable[..., int]) -> None:
    """``run.summary`` reaches the server as ``config["summary"]``; the runs table reads it from the list."""
    config = orjson.dumps({"lr": 0.1, "summary": {"train_loss": 0.5}}).decode()
    first = new_run(project="dash-summary", config=config)
    second = new_run(project="dash-summary", name="plain", config=orjson.dumps({"lr": 0.2}).decode())
    odd = new_run(project="dash-summary", name="odd", config=orjson.dumps({"summary": 3}).decode())
    update = {"train_runtime": 12.5, "eval": {"acc": 0.9}, "note": "best"}
    answer = client.post(
        "/api/runs/config/update", json={"runId": first, "config": orjson.dumps({"summary": update}).decode()}
    )
    assert answer.status_code == 200, answer.text
    listed = {
        run["id"]: run["summary"]
        for run in client.get("/api/runs", params={"project": "dash-summary"}).json()
    }
    assert listed == {
        first: {"train_loss": 0.5, "train_runtime": 12.5, "eval": {"acc": 0.9}, "note": "best"},
        second: {},
        odd: {},  # a config whose "summary" is not an object has no summary
    }


def test_last_values_of_chosen_keys(client: httpx.Client, new_run: Callable[..., int], ingest: Api) -> None:
    first = new_run(project="dash-last")
    second = new_run(project="dash-last", name="other")
    lines: list[dict[str, Any]] = [
        {"time": 1, "step": s, "data": {"loss": 1.0 / (s + 1), "acc": s / 10}} for s in range(600)
    ]
    assert ingest(first, "metrics", *lines[:300]).status_code == 200
    assert ingest(first, "metrics", *lines[300:]).status_code == 200
    assert ingest(second, "metrics", {"time": 1, "step": 0, "data": {"loss": "NaN"}}).status_code == 200
    answer = client.get("/api/runs/last", params=[("project", "dash-last"), ("key", "loss"), ("key", "acc")])
    found = {row["id"]: row["values"] for row in answer.json()}
    assert found == {first: {"loss": 1.0 / 600, "acc": 59.9}, second: {"loss": "NaN"}}
    assert client.get("/api/runs/last", params={"project": "dash-last"}).status_code == 400
    many = [("project", "p")] + [("key", f"k{i}") for i in range(21)]
    assert client.get("/api/runs/last", params=many).status_code == 400


@pytest.mark.parametrize("path", ["/api/projects", "/api/runs/last?project=p&key=a"])
def test_reads_need_a_valid_key(server: ServerProcess, path: str) -> None:
    wrong = {"Authorization": "Bearer mlps_not_a_key"}
    assert httpx.get(f"{server.url}{path}", headers=wrong).status_code == 401


def test_the_documented_reads(client: httpx.Client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "get" in paths["/api/projects"] and "get" in paths["/api/runs/last"]


def test_a_key_in_the_fragment_reaches_no_log(server: ServerProcess) -> None:
    # Browsers never send the fragment; a client that sends the whole URL as a path is refused quietly.
    with httpx.Client(base_url=server.url, timeout=30) as anonymous:
        assert anonymous.get(f"/ui/#key={server.key}").status_code == 200
    assert server.key not in server.output()


def test_series_answers_what_metrics_answers_in_columns(
    client: httpx.Client, new_run: Callable[..., int], ingest: Api
) -> None:
    run_id = new_run(project="dash-series")
    lines: list[dict[str, Any]] = [
        {"time": 1000 + s, "step": s, "data": {"a": (s * 7919) % 1000 / 10, "b": -s}} for s in range(5000)
    ]
    lines.append({"time": 9000, "step": 5000, "data": {"a": "NaN", "b": "-Infinity"}})
    assert ingest(run_id, "metrics", *lines).status_code == 200
    answer = client.get(
        f"/api/runs/{run_id}/series",
        params=[("key", "a"), ("key", "b"), ("key", "nope"), ("max_points", "200")],
    )
    assert answer.status_code == 200, answer.text
    found = answer.json()
    assert set(found) == {"a", "b"}  # an unknown key is left out
    for key in ("a", "b"):
        points = client.get(f"/api/runs/{run_id}/metrics", params={"key": key, "max_points": 200}).json()
        columns = {k: found[key][k] for k in ("steps", "times", "values")}
        assert columns == {
            "steps": [p["step"] for p in points],
            "times": [p["time"] for p in points],
            "values": [p["value"] for p in points],
        }
        assert len(points) <= 200
    assert found["b"]["values"][-1] == "-Infinity" and found["b"]["values"][0] == 0
    bad = [
        [("max_points", "200")],
        [("key", "a"), ("max_points", "1")],
        [("key", "a"), ("max_points", "x")],
        [("key", f"k{i}") for i in range(101)],
    ]
    for params in bad:
        assert client.get(f"/api/runs/{run_id}/series", params=params).status_code == 400, params
    assert client.get("/api/runs/999999/series", params={"key": "a"}).status_code == 404
