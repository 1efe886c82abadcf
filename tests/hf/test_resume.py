"""``trainer.train(resume_from_checkpoint=...)`` on another machine continues the run the checkpoint names."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import mlop


def steps(run: mlop.RunReader, key: str) -> list[int]:
    return [m["step"] for m in run.metrics(key)]


def test_a_training_resumed_from_a_checkpoint_continues_its_run(
    make_trainer: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_trainer(max_steps=4, save_strategy="steps", save_steps=2, run_name="long").train()
    mlop.finish()
    (first,) = mlop.list_runs(tmp_path)
    checkpoint = tmp_path / "out" / "checkpoint-4"
    saved = json.loads((checkpoint / "trainer_state.json").read_text())["stateful_callbacks"]["MlopCallback"]
    assert saved["attributes"]["_checkpoint_run"] == {"run_id": first.id, "project": "huggingface"}

    # Another machine: a fresh mlop folder and output folder, only the checkpoint carried over.
    monkeypatch.setenv("MLOP_DIR", str(tmp_path / "node-b"))
    second = make_trainer(
        max_steps=6, save_steps=2, save_strategy="steps", run_name="long", output_dir=str(tmp_path / "b")
    )
    second.train(resume_from_checkpoint=str(checkpoint))
    (live,) = mlop.ops
    assert live.id == first.id and live.status == "RUNNING"
    mlop.finish()

    (run,) = mlop.list_runs(tmp_path / "node-b")
    assert (run.id, run.name, run.status) == (first.id, "long", "COMPLETED")
    assert steps(run, "train/loss") == [6]  # the steps after the checkpoint's
    assert run.summary["train_runtime"] > 0


def test_a_fresh_training_does_not_take_an_old_run(make_trainer: Callable[..., Any], tmp_path: Path) -> None:
    make_trainer(max_steps=2, save_strategy="steps", save_steps=2).train()
    mlop.finish()
    make_trainer(max_steps=2, output_dir=str(tmp_path / "other")).train()
    mlop.finish()
    assert len({r.id for r in mlop.list_runs(tmp_path)}) == 2


def test_resuming_in_the_same_process_goes_on_in_the_same_run(
    make_trainer: Callable[..., Any], tmp_path: Path
) -> None:
    trainer = make_trainer(max_steps=4, save_strategy="steps", save_steps=2)
    trainer.train()
    (live,) = mlop.ops
    trainer.args.max_steps = 6
    trainer.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-4"))
    assert mlop.ops == [live] and live.status == "RUNNING"
    mlop.finish()
    (run,) = mlop.list_runs(tmp_path)
    assert steps(run, "train/loss") == [2, 4, 6]
