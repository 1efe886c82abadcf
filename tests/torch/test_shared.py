"""Shared mode in one process: every rank attaches to one run; rank 0 records the user's values."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

import mlop


def test_ranks_attach_to_one_shared_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOP_SHARED", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    options = {"project": "t", "dir": tmp_path, "run_id": "both", "disable_console": True}
    monkeypatch.setenv("RANK", "1")  # a rank other than 0 may come first
    one = mlop.init(**options, config={"lr": 2}, x_sys_sampling_interval=0.05)
    monkeypatch.setenv("RANK", "0")
    zero = mlop.init(**options, config={"lr": 1}, x_sys_sampling_interval=0.05)
    assert zero.primary and not one.primary and zero.dir == one.dir
    handle = one.watch(torch.nn.Linear(2, 2))
    handle.remove()
    for step in range(3):
        one.log({"loss": 10.0 + step})
        zero.log({"loss": float(step)})
    one.update_config({"lr": 3})
    one.add_tags("rank-one")
    time.sleep(0.3)
    one.finish()
    assert mlop.open_run(zero.dir).status == "RUNNING"  # rank 1 ending does not end the run
    zero.finish()
    reader = mlop.open_run(zero.dir)
    assert reader.status == "COMPLETED"
    assert reader.config == {"lr": 1}
    assert reader.tags == []
    assert [r["value"] for r in reader.metrics("loss")] == [0.0, 1.0, 2.0]
    assert reader.meta["last_step"] == 2
    assert reader.created_at is not None
    keys = {r["key"] for r in reader.metrics() if r["key"].startswith("sys/")}
    assert "sys/rank0/cpu.percentage" in keys and "sys/rank1/cpu.percentage" in keys


def test_without_shared_mode_an_existing_run_is_refused(tmp_path: Path) -> None:
    mlop.init(project="t", dir=tmp_path, run_id="only", disable_system_metrics=True).finish()
    with pytest.raises(mlop.RunExistsError):
        mlop.init(project="t", dir=tmp_path, run_id="only", disable_system_metrics=True)
