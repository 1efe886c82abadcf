"""The runs table's query API against a real server: sorting, filtering, cursor pages, groups, values,
correlation and durations, checked against what the runs were sent (on every backend the fixtures give)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest

from mlop_server.testing import ServerProcess

N_RUNS = 90
PROJECT = "rq"


def _config(i: int) -> dict[str, Any]:
    return {
        "lr": [0.1, 0.01, 0.001, 0.0001][i % 4],
        "optimizer": ["adam", "sgd", "rmsprop"][i % 3],
        "model": {"layers": i % 5, "act": "relu" if i % 2 else "gelu"},
        "seed": i,
        **({"warmup": i} if i % 10 == 0 else {}),  # a key only some runs have
        "summary": {"best_acc": i / 100},
    }


def _losses(i: int) -> list[float]:
    """The loss series of run i: its minimum is 1 + i (at step 3), its last value 2 + i."""
    return [5.0 + i, 3.0 + i, 2.5 + i, 1.0 + i, 2.0 + i]


@pytest.fixture(scope="module")
def runs(server: ServerProcess) -> Iterator[list[dict[str, Any]]]:
    """N_RUNS runs in one project, each with a config, tags, a loss series and a status; as sent."""
    made = []
    rng = random.Random(7)
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}, timeout=30
    ) as http:
        for i in range(N_RUNS):
            config = _config(i)
            tags = ["baseline"] if i % 4 == 0 else (["sweep", "x"] if i % 4 == 1 else [])
            start = 1_700_000_000_000 + i * 1000
            answer = http.post(
                "/api/runs/create",
                json={
                    "runName": f"run-{i:03d}",
                    "projectName": PROJECT,
                    "config": orjson.dumps(config).decode(),
                    "tags": tags,
                    "createdAt": start,
                    "systemMetadata": orjson.dumps(
                        {"hostname": f"node{i % 2}", "git": {"commit": "c0ffee"}}
                    ).decode(),
                },
            )
            assert answer.status_code == 200, answer.text
            run_id = answer.json()["runId"]
            lines = [
                {
                    "time": start + 10_000 * (step + 1),
                    "step": step,
                    "data": {"loss": value, "acc": rng.random()},
                }
                for step, value in enumerate(_losses(i))
            ]
            sent = http.post(
                "/ingest/metrics",
                content=b"".join(orjson.dumps(line) + b"\n" for line in lines),
                headers={"X-Run-Id": str(run_id), "Content-Type": "application/x-ndjson"},
            )
            assert sent.status_code == 200, sent.text
            status = ["COMPLETED", "FAILED", "RUNNING"][i % 3]
            if status != "RUNNING":
                done = http.post("/api/runs/status/update", json={"runId": run_id, "status": status})
                assert done.status_code == 200
            made.append(
                {"id": run_id, "i": i, "config": config, "tags": tags, "status": status, "start": start}
            )
    yield made


def _all_pages(
    client: httpx.Client, limit: int, *, project: str = PROJECT, **params: Any
) -> tuple[list[dict[str, Any]], int]:
    """Every row of a query, page by page through the cursor; and how many pages it took."""
    rows: list[dict[str, Any]] = []
    cursor = None
    pages = 0
    while True:
        query = {"project": project, "limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        answer = client.get("/api/runs", params=query)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["total"] == len(rows) + len(body["runs"]) + (
            body["total"] - len(rows) - len(body["runs"])
        )
        rows += body["runs"]
        pages += 1
        cursor = body["next"]
        if cursor is None:
            return rows, pages
        assert pages < 100


def test_sorting_through_every_page_matches_the_sent_values(
    client: httpx.Client, runs: list[dict[str, Any]]
) -> None:
    by_id = {r["id"]: r for r in runs}
    cases: list[tuple[dict[str, Any], Callable[[dict[str, Any]], Any]]] = [
        ({"sort": "config.lr", "order": "asc"}, lambda r: (r["config"]["lr"], r["id"])),
        ({"sort": "config.lr", "order": "desc"}, lambda r: (-r["config"]["lr"], -r["id"])),
        ({"sort": "summary.loss.min", "order": "asc"}, lambda r: (1.0 + r["i"], r["id"])),
        ({"sort": "summary.loss.last", "order": "desc"}, lambda r: (-(2.0 + r["i"]), -r["id"])),
        ({"sort": "config.optimizer", "order": "asc"}, lambda r: (r["config"]["optimizer"], r["id"])),
        ({"sort": "name", "order": "desc"}, lambda r: tuple(-ord(c) for c in f"run-{r['i']:03d}")),
    ]
    for params, key in cases:
        rows, pages = _all_pages(client, 13, **params)
        assert pages == math.ceil(N_RUNS / 13), params
        assert [row["id"] for row in rows] == [r["id"] for r in sorted(runs, key=key)], params
    # runs without the key sort last in both directions
    for order in ("asc", "desc"):
        rows, _ = _all_pages(client, 40, sort="config.warmup", order=order)
        having = [row for row in rows if "warmup" in row["config"]]
        assert rows[: len(having)] == having and len(having) == N_RUNS // 10
        values = [row["config"]["warmup"] for row in having]
        assert values == sorted(values, reverse=order == "desc")
    # each row carries what the run was sent
    row = client.get(
        "/api/runs", params={"project": PROJECT, "sort": "id", "order": "asc", "limit": 1}
    ).json()
    first = row["runs"][0]
    sent = by_id[first["id"]]
    assert first["config"] == {
        "lr": 0.1,
        "optimizer": "adam",
        "model.layers": 0,
        "model.act": "gelu",
        "seed": 0,
        "warmup": 0,
    }
    assert first["summary"]["loss"] == {"last": 2.0, "min": 1.0, "max": 5.0}
    assert first["summary"]["best_acc"]["last"] == 0.0
    assert first["tags"] == ["baseline"] and first["status"] == "COMPLETED"
    assert (first["host"], first["commit"], first["user"]) == ("node0", "c0ffee", "admin")
    assert first["start"] == sent["start"]


def test_durations_follow_the_clients_clock(client: httpx.Client, runs: list[dict[str, Any]]) -> None:
    rows, _ = _all_pages(client, 100, filter='status != "RUNNING"')
    assert rows
    for row in rows:
        # the last metric was stamped 50 s after the run's createdAt, whenever the server received it
        assert row["ended"] == row["start"] + 50_000
        assert row["duration"] == 50_000
    one = client.get(f"/api/runs/{rows[0]['id']}").json()
    assert (one["ended"], one["duration"]) == (rows[0]["ended"], 50_000)


def _names(client: httpx.Client, expression: str, project: str = PROJECT) -> set[str]:
    rows, _ = _all_pages(client, 1000, project=project, filter=expression)
    return {row["name"] for row in rows}


def test_filters_select_the_runs_a_user_asks_for(client: httpx.Client, runs: list[dict[str, Any]]) -> None:
    def expect(pred: Callable[[dict[str, Any]], bool]) -> set[str]:
        return {f"run-{r['i']:03d}" for r in runs if pred(r)}

    assert _names(client, 'lr < 0.01 and "baseline" in tags and status == "COMPLETED"') == expect(
        lambda r: r["config"]["lr"] < 0.01 and "baseline" in r["tags"] and r["status"] == "COMPLETED"
    )
    assert _names(client, 'config.optimizer == "sgd" or (model.layers >= 3 and not "x" in tags)') == expect(
        lambda r: (
            r["config"]["optimizer"] == "sgd"
            or (r["config"]["model"]["layers"] >= 3 and "x" not in r["tags"])
        )
    )
    assert _names(client, "summary.loss.min <= 10 and loss > 5") == expect(
        lambda r: 2 + r["i"] > 5 and 1 + r["i"] <= 10
    )
    assert _names(client, 'optimizer in ("adam", "rmsprop") and "sweep" not in tags') == expect(
        lambda r: r["config"]["optimizer"] != "sgd" and "sweep" not in r["tags"]
    )
    assert _names(client, "warmup != null") == expect(lambda r: r["i"] % 10 == 0)
    assert _names(client, 'name contains "-01"') == expect(lambda r: 10 <= r["i"] < 20)
    assert _names(client, "0.01 <= lr") == expect(lambda r: r["config"]["lr"] >= 0.01)
    assert _names(client, 'host == "node1" and best_acc > 0.5') == expect(
        lambda r: r["i"] % 2 and r["i"] / 100 > 0.5
    )
    body = client.get("/api/runs", params={"project": PROJECT, "filter": "seed < 10", "sort": "seed"}).json()
    assert body["total"] == 10 and [r["config"]["seed"] for r in body["runs"]] == list(range(9, -1, -1))


@pytest.mark.parametrize(
    ("expression", "position", "words"),
    [
        ("lr <", 4, "expected a value"),
        ("lr < 0.1 and", 12, "expected a column name"),
        ('status == "DONE', 10, "no closing"),
        ("(lr < 1", 7, "expected ')'"),
        ("lr ! 3", 3, "unexpected character"),
        ("nosuchkey > 1", 0, "no column 'nosuchkey'"),
        ("lr > 0 and name < 3", 11, "holds text"),
        ("5 in tags", 0, "a tag is a string"),
    ],
)
def test_a_bad_filter_gets_a_clear_400(
    client: httpx.Client, runs: list[dict[str, Any]], expression: str, position: int, words: str
) -> None:
    answer = client.get("/api/runs", params={"project": PROJECT, "filter": expression})
    assert answer.status_code == 400
    body = answer.json()
    assert set(body) == {"error", "message"}  # the protocol's error body
    assert words in body["message"] and body["message"].endswith(f"(at position {position})")


def test_bad_sort_order_limit_and_cursor(client: httpx.Client, runs: list[dict[str, Any]]) -> None:
    def bad(params: dict[str, Any], field: str) -> None:
        answer = client.get("/api/runs", params={"project": PROJECT, **params})
        assert answer.status_code == 400 and f"'{field}'" in answer.json()["message"], answer.text

    bad({"sort": "tags"}, "sort")
    bad({"order": "up"}, "order")
    bad({"limit": "0"}, "limit")
    bad({"limit": "5000"}, "limit")
    bad({"cursor": "not-a-cursor"}, "cursor")
    first = client.get("/api/runs", params={"project": PROJECT, "sort": "name", "limit": 5}).json()
    bad({"sort": "seed", "cursor": first["next"]}, "cursor")  # a cursor of another sort
    # without the new parameters the plain list stays as it was
    plain = client.get("/api/runs", params={"project": PROJECT}).json()
    assert isinstance(plain, list) and len(plain) == N_RUNS and plain[0]["id"] > plain[-1]["id"]


def test_groups_count_and_average_metrics(client: httpx.Client, runs: list[dict[str, Any]]) -> None:
    answer = client.get(
        "/api/runs/groups",
        params={
            "project": PROJECT,
            "by": "config.optimizer",
            "metric": ["summary.loss.min", "summary.loss.last"],
            "filter": "lr >= 0.01",
        },
    )
    assert answer.status_code == 200, answer.text
    groups = {g["value"]: g for g in answer.json()["groups"]}
    for name in ("adam", "sgd", "rmsprop"):
        members = [r for r in runs if r["config"]["optimizer"] == name and r["config"]["lr"] >= 0.01]
        mins = [1.0 + r["i"] for r in members]
        got = groups[name]
        assert got["count"] == len(members)
        assert got["metrics"]["summary.loss.min"]["mean"] == pytest.approx(sum(mins) / len(mins))
        assert got["metrics"]["summary.loss.min"]["min"] == min(mins)
        assert got["metrics"]["summary.loss.last"]["max"] == max(mins) + 1
    by_layers = client.get("/api/runs/groups", params={"project": PROJECT, "by": "model.layers"}).json()[
        "groups"
    ]
    assert sorted((g["value"], g["count"]) for g in by_layers) == [(k, N_RUNS // 5) for k in range(5)]
    assert client.get("/api/runs/groups", params={"project": PROJECT, "by": "tags"}).status_code == 400


def test_values_select_all_matching_and_correlation(client: httpx.Client, runs: list[dict[str, Any]]) -> None:
    answer = client.get(
        "/api/runs/values",
        params={"project": PROJECT, "filter": '"baseline" in tags', "column": ["lr", "summary.loss.min"]},
    ).json()
    baseline = sorted((r for r in runs if "baseline" in r["tags"]), key=lambda r: -r["id"])
    assert answer["ids"] == [r["id"] for r in baseline]
    assert answer["columns"]["config.lr"] == [r["config"]["lr"] for r in baseline]
    assert answer["columns"]["summary.loss.min"] == [1.0 + r["i"] for r in baseline]
    ids = client.get("/api/runs/values", params={"project": PROJECT}).json()["ids"]
    assert sorted(ids) == sorted(r["id"] for r in runs)
    found = client.get(
        "/api/runs/correlation", params={"project": PROJECT, "metric": "summary.loss.min"}
    ).json()
    by_column = {c["column"]: c for c in found["correlations"]}
    assert by_column["config.seed"]["rho"] == pytest.approx(1.0) and by_column["config.seed"]["n"] == N_RUNS
    assert (
        by_column["config.warmup"]["rho"] == pytest.approx(1.0)
        and by_column["config.warmup"]["n"] == N_RUNS // 10
    )
    assert found["correlations"][0]["column"] in ("config.seed", "config.warmup")
    assert "config.optimizer" not in by_column  # text: no rank correlation
    rhos = [abs(c["rho"]) for c in found["correlations"] if c["rho"] is not None]
    assert rhos == sorted(rhos, reverse=True)


def test_columns_list_what_the_runs_hold(client: httpx.Client, runs: list[dict[str, Any]]) -> None:
    found = client.get("/api/runs/columns", params={"project": PROJECT}).json()
    config = {c["name"]: c for c in found["config"]}
    assert set(config) == {
        "config.lr",
        "config.optimizer",
        "config.model.layers",
        "config.model.act",
        "config.seed",
        "config.warmup",
    }
    assert config["config.warmup"]["runs"] == N_RUNS // 10 and config["config.optimizer"]["numeric"] == 0
    assert {m["name"] for m in found["metrics"]} == {"loss", "acc"}


def test_a_key_of_another_owner_sees_only_its_own_runs(server: ServerProcess, client: httpx.Client) -> None:
    made = server.cli("keys", "create", "--name", "rq-alice")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    config = orjson.dumps({"secret_knob": 1, "lr": 0.5}).decode()
    assert client.post(
        "/api/runs/create", json={"runName": "admins", "projectName": "shared", "config": config}
    ).is_success
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as alice:
        for i in range(2):
            body = {
                "runName": f"alice-{i}",
                "projectName": "shared",
                "config": orjson.dumps({"lr": i}).decode(),
            }
            assert alice.post("/api/runs/create", json=body).is_success
        page = alice.get("/api/runs", params={"project": "shared", "sort": "name", "order": "asc"}).json()
        assert [r["name"] for r in page["runs"]] == ["alice-0", "alice-1"] and page["total"] == 2
        assert {r["user"] for r in page["runs"]} == {"rq-alice"}
        assert alice.get("/api/runs/values", params={"project": "shared"}).json()["names"] == [
            "alice-1",
            "alice-0",
        ]
        names = {
            c["name"] for c in alice.get("/api/runs/columns", params={"project": "shared"}).json()["config"]
        }
        assert names == {"config.lr"}  # the admin's run's keys stay unseen
        groups = alice.get("/api/runs/groups", params={"project": "shared", "by": "user"}).json()["groups"]
        assert [(g["value"], g["count"]) for g in groups] == [("rq-alice", 2)]
        assert (
            alice.get("/api/runs", params={"project": "shared", "filter": "secret_knob > 0"}).status_code
            == 400
        )
    everyone = client.get("/api/runs", params={"project": "shared", "sort": "name", "order": "asc"}).json()
    assert [r["name"] for r in everyone["runs"]] == ["admins", "alice-0", "alice-1"]


def test_a_database_from_before_the_derived_columns_is_filled_in_on_open(tmp_path: Any) -> None:
    """A SQLite file of an older server (no derived columns) gets them, filled in, when a server opens it."""
    import sqlite3

    with (
        ServerProcess(tmp_path) as old,
        httpx.Client(base_url=old.url, headers={"Authorization": f"Bearer {old.key}"}, timeout=30) as http,
    ):
        body = {
            "runName": "old",
            "projectName": "legacy",
            "createdAt": 1_000,
            "config": orjson.dumps({"lr": 0.1, "summary": {"best": 3}}).decode(),
            "systemMetadata": orjson.dumps({"hostname": "h1", "git": {"commit": "abc"}}).decode(),
        }
        run_id = http.post("/api/runs/create", json=body).json()["runId"]
        lines = [{"time": 5_000 + s, "step": s, "data": {"loss": v}} for s, v in enumerate([3.0, 1.0, 2.0])]
        sent = http.post(
            "/ingest/metrics",
            content=b"".join(orjson.dumps(line) + b"\n" for line in lines),
            headers={"X-Run-Id": str(run_id), "Content-Type": "application/x-ndjson"},
        )
        assert sent.status_code == 200
        http.post("/api/runs/status/update", json={"runId": run_id, "status": "COMPLETED"})
    db = sqlite3.connect(tmp_path / "mlop-server.db")
    for trigger in ("run_fields_insert", "run_fields_update", "run_fields_delete"):
        db.execute(f"DROP TRIGGER {trigger}")
    db.execute("DROP TABLE run_fields")  # and its indexes
    for table, column in (("runs", "flat"), ("runs", "host"), ("runs", "git_commit"), ("runs", "client_end")):
        db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    for column in ("vlast", "vmin", "vmax", "last_step"):
        db.execute(f"ALTER TABLE series DROP COLUMN {column}")
    db.commit()
    db.close()
    with (
        ServerProcess(tmp_path) as new,
        httpx.Client(base_url=new.url, headers={"Authorization": f"Bearer {new.key}"}, timeout=30) as http,
    ):
        page = http.get("/api/runs", params={"project": "legacy", "filter": "lr == 0.1"}).json()
    (row,) = page["runs"]
    assert row["config"] == {"lr": 0.1} and row["summary"]["loss"] == {"last": 2.0, "min": 1.0, "max": 3.0}
    assert row["summary"]["best"]["last"] == 3
    assert (row["host"], row["commit"], row["ended"], row["duration"]) == ("h1", "abc", 5_002, 4_002)


def test_paging_through_infinite_metric_values(client: httpx.Client) -> None:
    ids = {}
    for name, value in (("up", "Infinity"), ("one", 1.0), ("down", "-Infinity"), ("none", None)):
        run_id = client.post("/api/runs/create", json={"runName": name, "projectName": "inf"}).json()["runId"]
        ids[run_id] = name
        if value is not None:
            line = orjson.dumps({"time": 1, "step": 0, "data": {"loss": value}}) + b"\n"
            headers = {"X-Run-Id": str(run_id), "Content-Type": "application/x-ndjson"}
            assert client.post("/ingest/metrics", content=line, headers=headers).status_code == 200
    for order, want in (("asc", ["down", "one", "up", "none"]), ("desc", ["up", "one", "down", "none"])):
        seen, cursor = [], None
        while True:
            params = {"project": "inf", "sort": "summary.loss.last", "order": order, "limit": 1}
            body = client.get("/api/runs", params={**params, **({"cursor": cursor} if cursor else {})}).json()
            seen += [(r["name"], r["summary"].get("loss", {}).get("last")) for r in body["runs"]]
            cursor = body["next"]
            if cursor is None:
                break
        assert [name for name, _ in seen] == want
        assert dict(seen) == {"up": "Infinity", "one": 1.0, "down": "-Infinity", "none": None}


# -- one config key of every type, on every backend ------------------------------------------------------

_MISSING = object()
#: Run name -> the value of config key "v" it is created with (_MISSING: no such key).
_MIXED: dict[str, Any] = {
    "int3": 3,
    "int1": 1,
    "float": 2.5,
    "neg": -0.001,
    "true": True,
    "false": False,
    "text": "abc",
    "digits": "10",
    "list": [1, 2],
    "null": None,
    "absent": _MISSING,
    "nested": {"deep": 7},  # flattened: config.v.deep, no config.v
    "later": _MISSING,  # gets v = 1.5 and opt.lr = 0.5 by a config update after create
    "retyped": 4,  # gets v = "zzz" by a config update: its number must be gone
    "boxed": 5,  # gets v = {"x": 1}: config.v is gone, config.v.x appears
}
_UPDATES: dict[str, dict[str, Any]] = {
    "later": {"v": 1.5, "opt": {"lr": 0.5}},
    "retyped": {"v": "zzz"},
    "boxed": {"v": {"x": 1}},
}


def _final_v(name: str) -> Any:
    return _UPDATES.get(name, {}).get("v", _MIXED[name])


def _num_text(value: Any) -> tuple[float | None, str | None]:
    """The runs table's two values of a config leaf: a number (booleans 1 and 0) or a text (lists: JSON)."""
    if isinstance(value, bool):
        return float(value), None
    if isinstance(value, (int, float)):
        return float(value), None
    if isinstance(value, str):
        return None, value
    if isinstance(value, list):
        return None, orjson.dumps(value).decode()
    return None, None  # null, missing, or an object (flattened into deeper keys)


@pytest.fixture
def mixed(client: httpx.Client) -> dict[str, int]:
    """The runs of project "mixed" (name -> id), their config updated after create where _UPDATES says."""
    ids = {}
    for name, value in _MIXED.items():
        config = {"other": 1, **({} if value is _MISSING else {"v": value})}
        body = {"runName": name, "projectName": "mixed", "config": orjson.dumps(config).decode()}
        answer = client.post("/api/runs/create", json=body)
        assert answer.status_code == 200, answer.text
        ids[name] = answer.json()["runId"]
    for name, delta in _UPDATES.items():
        body = {"runId": ids[name], "config": orjson.dumps(delta).decode()}
        assert client.post("/api/runs/config/update", json=body).status_code == 200
    return ids


def _expected_order(ids: dict[str, int], order: str) -> list[str]:
    """Numbers, then texts, then runs without a value (each by value, then id, in ``order``)."""
    ranked: list[list[tuple[Any, int, str]]] = [[], [], []]
    for name, run_id in ids.items():
        num, text = _num_text(_final_v(name))
        if num is not None:
            ranked[0].append((num, run_id, name))
        elif text is not None:
            ranked[1].append((text, run_id, name))
        else:
            ranked[2].append((0, run_id, name))
    return [name for group in ranked for _, _, name in sorted(group, reverse=order == "desc")]


def test_a_key_of_mixed_types_sorts_and_filters_alike_on_every_backend(
    client: httpx.Client, mixed: dict[str, int]
) -> None:
    by_id = {run_id: name for name, run_id in mixed.items()}

    def names(**params: Any) -> list[str]:
        query = {"project": "mixed", "limit": 1000, **params}
        body = client.get("/api/runs", params=query).json()
        assert body["total"] == len(body["runs"]), body
        return [by_id[row["id"]] for row in body["runs"]]

    for order in ("asc", "desc"):
        assert names(sort="config.v", order=order) == _expected_order(mixed, order)
        # page by page through the cursor too, 3 rows at a time
        rows, _ = _all_pages(client, 3, project="mixed", sort="v", order=order)
        assert [by_id[row["id"]] for row in rows] == _expected_order(mixed, order)

    def matching(pred: Callable[[float | None, str | None], bool]) -> set[str]:
        return {name for name in mixed if pred(*_num_text(_final_v(name)))}

    def found(expression: str) -> set[str]:
        return set(names(filter=expression))

    assert found("v > 1") == matching(lambda n, t: n is not None and n > 1) == {"int3", "float", "later"}
    assert found("v == 1") == {"int1", "true"}  # a boolean counts as 1
    assert found("v == false") == {"false"}
    assert found("v < 0") == {"neg"}
    assert found('v == "abc"') == {"text"}
    assert found('v >= "a"') == {"text", "retyped"}
    assert found('v == "[1,2]"') == {"list"}
    assert found('v == "10"') == {"digits"} and found("v == 10") == set()
    assert found("v != null") == matching(lambda n, t: n is not None or t is not None)
    assert found("v == null") == {"null", "absent", "nested", "boxed"}
    assert found("not v > 1") == set(mixed) - {"int3", "float", "later"}
    assert found('v != "abc"') == matching(lambda n, t: t is not None and t != "abc")
    assert found("v != 4") == matching(lambda n, t: n is not None)  # retyped's old 4 is gone
    assert found('v contains "b"') == {"text"}
    assert found('v in (3, "zzz", 1.5)') == {"int3", "retyped", "later"}
    assert found("v not in (3, 2.5)") == set(mixed) - {"int3", "float"}
    assert found("v in (3, null)") == {"int3", "null", "absent", "nested", "boxed"}
    assert found('not (v > 2 or v contains "z") and v != null') == matching(
        lambda n, t: (n is not None and n <= 2) or (t is not None and "z" not in t)
    )
    assert found("v.deep == 7 or config.opt.lr == 0.5") == {"nested", "later"}
    assert found("v.x == 1") == {"boxed"}
    assert found("opt.lr == 0.5") == {"later"}  # a bare name that only a config update brought
    assert found("other == 1 and v > 2") == {"int3", "float"}
    assert names(sort="config.v.deep", order="asc")[0] == "nested"
    assert names(sort="config.opt.lr", order="desc")[0] == "later"
    rows = {
        r["name"]: r
        for r in client.get("/api/runs", params={"project": "mixed", "limit": 100}).json()["runs"]
    }
    assert rows["later"]["config"] == {"other": 1, "v": 1.5, "opt.lr": 0.5}
    assert rows["retyped"]["config"]["v"] == "zzz"


def test_many_config_columns_in_one_query(client: httpx.Client) -> None:
    """More config columns than SQLite joins tables (64): correlation, values and long filters answer."""
    ids = []
    for i in range(5):
        config = {f"k{j:02d}": i * (j + 1) for j in range(80)}
        body = {"runName": f"wide-{i}", "projectName": "wide", "config": orjson.dumps(config).decode()}
        run_id = client.post("/api/runs/create", json=body).json()["runId"]
        ids.append(run_id)
        line = orjson.dumps({"time": 1, "step": 0, "data": {"loss": float(i)}}) + b"\n"
        headers = {"X-Run-Id": str(run_id), "Content-Type": "application/x-ndjson"}
        assert client.post("/ingest/metrics", content=line, headers=headers).status_code == 200
    found = client.get("/api/runs/correlation", params={"project": "wide", "metric": "loss"})
    assert found.status_code == 200, found.text
    correlations = found.json()["correlations"]
    assert len(correlations) == 80 and all(
        c["rho"] == pytest.approx(1.0) and c["n"] == 5 for c in correlations
    )
    columns = [f"k{j:02d}" for j in range(0, 80, 2)]
    got = client.get("/api/runs/values", params={"project": "wide", "column": columns}).json()
    assert got["ids"] == ids[::-1]
    assert got["columns"]["config.k78"] == [i * 79 for i in range(4, -1, -1)]
    tests = " and ".join(f"k{j:02d} >= {j + 1}" for j in range(70))  # each key holds i * (j + 1)
    assert _names(client, tests, project="wide") == {f"wide-{i}" for i in range(1, 5)}
    absent = " and ".join(f"config.gone{j} == null" for j in range(30))
    assert _names(client, f"{absent} and k79 > 80", project="wide") == {f"wide-{i}" for i in range(2, 5)}


def test_the_fields_index_follows_writes_made_outside_this_server(tmp_path: Any) -> None:
    """Runs written by another program (an older server, a restore) sort and filter by what they hold."""
    import sqlite3

    def page(http: httpx.Client, **params: Any) -> list[str]:
        body = http.get("/api/runs", params={"project": "outside", "sort": "lr", "order": "asc", **params})
        assert body.status_code == 200, body.text
        return [r["name"] for r in body.json()["runs"]]

    with (
        ServerProcess(tmp_path) as server,
        httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}) as http,
    ):
        for name, lr in (("a", 0.3), ("b", 0.1), ("c", 0.2)):
            config = orjson.dumps({"lr": lr, "opt": "adam"}).decode()
            body = {"runName": name, "projectName": "outside", "config": config}
            assert http.post("/api/runs/create", json=body).status_code == 200
        assert page(http) == ["b", "c", "a"]
    db = sqlite3.connect(tmp_path / "mlop-server.db")
    with db:  # what an older server's config update and create write: config and flat only
        db.execute("""UPDATE runs SET flat = '{"config.lr": 0.05, "config.opt": "sgd"}' WHERE name = 'a'""")
        db.execute(
            "INSERT INTO runs (project, number, name, status, tags, config, created, updated, last_seen, "
            "owner, flat) SELECT project, 9, 'd', 'RUNNING', '[]', '{}', 1, 1, 1, owner, "
            """'{"config.lr": 0.15}' FROM runs WHERE name = 'a'"""
        )
    db.close()
    with (
        ServerProcess(tmp_path) as server,
        httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}) as http,
    ):
        assert page(http) == ["a", "b", "d", "c"]
        assert page(http, filter='opt == "sgd" or lr > 0.12') == ["a", "d", "c"]
        assert page(http, filter='opt == "adam"') == ["b", "c"]
