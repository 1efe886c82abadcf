"""Lightning runs online against a real mlop-server process: what the server's read API returns."""

from __future__ import annotations

import json
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


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("server")) as proc:
        yield proc


@pytest.fixture
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}) as client:
        yield client


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
    api: httpx.Client,
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

    (listed,) = api.get("/api/runs", params={"project": "lit-online"}).json()
    run = _wait_status(api, listed["id"], "COMPLETED")
    assert run["status"] == "COMPLETED" and run["name"] == "online"
    assert run["externalId"] == logger.version
    summary = run["config"].pop("summary")  # the run's summary travels as a config merge
    assert run["config"] == {"lr": 0.1, "optimizer": {"name": "sgd"}, "fail_at": -1}
    assert summary["trainer/global_step"] == 8 and set(summary) >= {"train/loss", "test/loss", "epoch"}

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
    local = Path(logger.save_dir) / "lit-online" / logger.version / "checkpoints" / checkpoint["caption"]
    assert api.get(checkpoint["url"]).content == local.read_bytes()


def test_a_failed_training_step_reaches_the_server_with_its_trace(
    tmp_path: Path,
    server: ServerProcess,
    api: httpx.Client,
    tiny: Any,
    data: Callable[..., Any],
    trainer_for: Callable[..., Any],
) -> None:
    logger = MlopLogger(
        project="lit-failed",
        dir=tmp_path / "runs",
        host=server.url,
        api_key=server.key,
        disable_system_metrics=True,
    )
    with pytest.raises(RuntimeError, match="boom at step 2"):
        trainer_for(logger).fit(tiny(fail_at=2), data())

    (listed,) = api.get("/api/runs", params={"project": "lit-failed"}).json()
    run = _wait_status(api, listed["id"], "FAILED")
    assert run["status"] == "FAILED"
    error = run["statusMetadata"]
    error = json.loads(error) if isinstance(error, str) else error
    assert error["type"] == "RuntimeError" and "training_step" in error["trace"]
