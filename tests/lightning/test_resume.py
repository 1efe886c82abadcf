"""A fit resumed from a checkpoint, in a fresh directory, continues the run the checkpoint names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

import mlop
from mlop_lightning import MlopLogger

# The second Trainer's ModelCheckpoint writes to another folder than the first's: Lightning says so.
pytestmark = pytest.mark.filterwarnings("ignore:The dirpath has changed from:UserWarning")


def _series(run: mlop.RunReader, key: str) -> list[tuple[int, Any]]:
    return [(m["step"], m["value"]) for m in run.metrics(key)]


def test_fit_from_a_checkpoint_in_a_fresh_directory_continues_the_run(
    tmp_path: Path, tiny: Any, data: Callable[..., Any], trainer_for: Callable[..., Any]
) -> None:
    first = MlopLogger(save_dir=tmp_path / "node-a", project="resumed", offline=True)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer_for(first, max_epochs=1, callbacks=[checkpoint]).fit(tiny(), data())
    saved = torch.load(checkpoint.last_model_path, map_location="cpu", weights_only=True)
    assert saved["callbacks"]["MlopRun"] == {"run_id": first.version, "project": "resumed"}

    # Another machine: none of the first one's files but the checkpoint; a logger that names no run.
    second = MlopLogger(save_dir=tmp_path / "node-b", offline=True)
    trainer_for(second, max_epochs=2).fit(tiny(), data(), ckpt_path=checkpoint.last_model_path)
    assert (second.version, second.name) == (first.version, "resumed")

    (run,) = mlop.list_runs(tmp_path / "node-b")
    assert run.id == first.version and run.status == "COMPLETED"
    assert [step for step, _ in _series(run, "train/loss")] == [4, 5, 6, 7]  # where the checkpoint left off


def test_a_version_given_wins_over_the_checkpoint(
    tmp_path: Path, tiny: Any, data: Callable[..., Any], trainer_for: Callable[..., Any]
) -> None:
    first = MlopLogger(save_dir=tmp_path, project="resumed", offline=True)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer_for(first, max_epochs=1, callbacks=[checkpoint]).fit(tiny(), data())
    other = MlopLogger(save_dir=tmp_path, project="resumed", version="fresh", offline=True)
    trainer_for(other, max_epochs=2).fit(tiny(), data(), ckpt_path=checkpoint.last_model_path)
    assert other.version == "fresh"
    assert sorted(r.id for r in mlop.list_runs(tmp_path)) == sorted(["fresh", first.version])
