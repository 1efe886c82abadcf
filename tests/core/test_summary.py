"""``run.summary``: final values kept in the local store, read back by ``open_run``, sent to the server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import mlop
from mlop_server.testing import ServerProcess


def test_summary_values_are_stored_apart_from_config_and_series(tmp_path: Path) -> None:
    run = mlop.init(project="sum", dir=tmp_path, config={"lr": 0.1})
    run.log({"loss": 1.0})
    run.summary["train_runtime"] = 12.5
    run.summary.update({"best": {"acc": 0.9}, "epochs": 3})
    assert dict(run.summary) == {"train_runtime": 12.5, "best": {"acc": 0.9}, "epochs": 3}
    run.finish()
    run.summary["late"] = 1  # after the end: kept in the object only

    read = mlop.open_run(run.dir)
    assert read.summary == {"train_runtime": 12.5, "best": {"acc": 0.9}, "epochs": 3}
    assert read.config == {"lr": 0.1}  # the config is the user's alone
    assert {m["key"] for m in read.metrics(system=False)} == {"loss"}  # no series for summary values
    assert read.progress()["steps"] == 1


def test_a_resumed_run_keeps_its_summary(tmp_path: Path) -> None:
    first = mlop.init(project="sum", dir=tmp_path, run_id="again")
    first.summary["a"] = 1
    first.finish()
    again = mlop.init(project="sum", dir=tmp_path, run_id="again", resume=True)
    assert dict(again.summary) == {"a": 1}
    again.summary["b"] = 2
    again.finish()
    assert mlop.open_run(again.dir).summary == {"a": 1, "b": 2}


def test_a_disabled_run_keeps_a_summary_that_stores_nothing(tmp_path: Path) -> None:
    off = mlop.init(project="sum", dir=tmp_path, mode="disabled")
    off.summary["x"] = 1
    assert off.summary["x"] == 1
    off.finish()
    assert mlop.list_runs(tmp_path) == []


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("server")) as proc:
        yield proc


def test_the_summary_reaches_the_server_as_a_config_merge(tmp_path: Path, server: ServerProcess) -> None:
    run = mlop.init(
        project="sum-online",
        dir=tmp_path,
        config={"lr": 0.1},
        host=server.url,
        api_key=server.key,
        disable_system_metrics=True,
    )
    run.summary["train_runtime"] = 3.5
    run.summary["train_loss"] = 0.25
    run.finish()

    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}) as api:
        (listed,) = api.get("/api/runs", params={"project": "sum-online"}).json()
        deadline = time.monotonic() + 30
        detail: dict[str, Any] = {}
        while time.monotonic() < deadline:
            detail = api.get(f"/api/runs/{listed['id']}").json()
            if detail["status"] == "COMPLETED":
                break
            time.sleep(0.1)
    assert detail["status"] == "COMPLETED"
    assert detail["config"] == {"lr": 0.1, "summary": {"train_runtime": 3.5, "train_loss": 0.25}}
