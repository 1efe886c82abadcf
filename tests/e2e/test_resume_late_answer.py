"""A resume on another machine whose server answers after ``init()`` returned (``x_init_timeout``).

The answer carries the run's last step (``lastStep``, our server's extra field). It arrives late here
because a proxy in front of the real server holds the resume answer for a second.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import mlop
from mlop_server.testing import ServerProcess

SLOW_RESUME = "/api/runs/resume"


def _first_run(server: ServerProcess, tmp_path: Path, project: str) -> None:
    run = mlop.init(
        project=project,
        run_id="r",
        dir=tmp_path / "a",
        host=server.url,
        api_key=server.key,
        disable_system_metrics=True,
    )
    for i in range(50):
        run.log({"loss": float(i)})
    run.finish()


def _steps(api: httpx.Client, project: str) -> list[int]:
    (run,) = api.get("/api/runs", params={"project": project}).json()
    deadline = time.monotonic() + 30
    while api.get(f"/api/runs/{run['id']}").json()["status"] != "COMPLETED" and time.monotonic() < deadline:
        time.sleep(0.1)
    points = api.get(f"/api/runs/{run['id']}/metrics", params={"key": "loss", "max_points": 1000}).json()
    return [p["step"] for p in points]


def _resume(proxy_url: str, server: ServerProcess, tmp_path: Path, project: str) -> Any:
    return mlop.init(
        project=project,
        run_id="r",
        resume=True,
        dir=tmp_path / "b",
        host=proxy_url,
        api_key=server.key,
        disable_system_metrics=True,
        x_init_timeout=0.1,
    )


def test_a_late_answer_before_the_first_log_still_counts_on(
    tmp_path: Path, server: ServerProcess, api: httpx.Client, fault_proxy: Callable[..., Any]
) -> None:
    _first_run(server, tmp_path, "late-before")
    proxy = fault_proxy(lambda method, path, n: "slow" if path == SLOW_RESUME else None)
    again = _resume(proxy.url, server, tmp_path, "late-before")
    assert again.step == -1  # init() returned before the answer
    deadline = time.monotonic() + 30
    while again.step != 49 and time.monotonic() < deadline:  # the answer arrives
        time.sleep(0.05)
    for i in range(50, 60):
        again.log({"loss": float(i)})
    again.finish()
    assert _steps(api, "late-before") == list(range(60))


def test_a_late_answer_after_the_first_log_is_warned(
    tmp_path: Path,
    server: ServerProcess,
    api: httpx.Client,
    fault_proxy: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _first_run(server, tmp_path, "late-after")
    proxy = fault_proxy(lambda method, path, n: "slow" if path == SLOW_RESUME else None)
    with caplog.at_level(logging.WARNING, logger="mlop"):
        again = _resume(proxy.url, server, tmp_path, "late-after")
        again.log({"loss": 0.5})  # before the answer: step 0, which the server has already
        deadline = time.monotonic() + 30
        while not any("may repeat steps" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "no warning about the late answer"
            time.sleep(0.05)
        again.finish()
    assert _steps(api, "late-after") == [0, *range(50)]  # stored as given: step 0 twice
