"""One Lightning run online against a real mlop-server process: what the server's read API returns."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint

from mlop_lightning import MlopLogger
from mlop_server.testing import ServerProcess

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path / "server") as proc:
        yield proc


def _wait_status(api: httpx.Client, run_id: int, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        run: dict[str, Any] = api.get(f"/api/runs/{run_id}").json()
        if run["status"] == status or time.monotonic() > deadline:
            return run
        time.sleep(0.1)


def test_fit_and_test_arrive_on_the_server(
    tmp_path: Path,
    server: ServerProcess,
    tiny: Any,
    data: Callable[..., Any],
    trainer_for: Callable[..., Any],
) -> None:
    logger = MlopLogger(
        project="lit-online",
        name="online",
        dir=tmp_path / "runs",
        log_model=True,
        host=server.url,
        api_key=server.key,
        disable_system_metrics=True,
    )
    trainer = trainer_for(logger, callbacks=[ModelCheckpoint(monitor="val/loss")])
    model = tiny(optimizer={"name": "sgd"})
    trainer.fit(model, data(), data(batches=2))
    trainer.test(model, data(batches=2))  # continues the same run on the server

    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}) as api:
        (listed,) = api.get("/api/runs", params={"project": "lit-online"}).json()
        run = _wait_status(api, listed["id"], "COMPLETED")
        assert run["status"] == "COMPLETED" and run["name"] == "online"
        assert run["externalId"] == logger.version
        assert run["config"] == {"lr": 0.1, "optimizer": {"name": "sgd"}, "fail_at": -1}

        def points(key: str) -> list[tuple[int, Any]]:
            answer = api.get(f"/api/runs/{listed['id']}/metrics", params={"key": key}).json()
            return [(p["step"], p["value"]) for p in answer]

        assert [step for step, _ in points("train/loss")] == list(range(8))
        assert all(step == value for step, value in points("trainer/global_step"))
        assert [step for step, _ in points("test/loss")] == [8]
        keys = {k["name"]: k["type"] for k in api.get(f"/api/runs/{listed['id']}/keys").json()}
        assert keys["model"] == "ARTIFACT" and keys["train/loss"] == "METRIC"
        (checkpoint,) = api.get(f"/api/runs/{listed['id']}/files", params={"key": "model"}).json()
        assert checkpoint["fileType"] == "ckpt" and checkpoint["uploaded"]
        local = Path(logger.log_dir) / "checkpoints" / checkpoint["caption"]
        assert api.get(checkpoint["url"]).content == local.read_bytes()
