"""``Accelerator(log_with="mlop")`` and ``log_with=MlopTracker(...)``, read back from the run."""

from __future__ import annotations

import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mlop
from mlop_hf import MlopTracker
from mlop_hf._register import patch_accelerate


@pytest.fixture
def accelerator_class() -> Iterator[Any]:
    """accelerate's ``Accelerator``, with its process state reset after each test."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    yield Accelerator
    AcceleratorState._reset_state(reset_partial_state=True)
    PartialState._reset_state()


def test_log_with_the_name(accelerator_class: Any, tmp_path: Path) -> None:
    accelerator = accelerator_class(log_with="mlop", cpu=True)
    accelerator.init_trackers(
        "accel-project",
        config={"lr": 0.01, "epochs": 2, "optimizer": "adamw"},
        init_kwargs={"mlop": {"name": "by name", "tags": ["accelerate"], "dir": str(tmp_path / "runs")}},
    )
    tracker = accelerator.get_tracker("mlop")
    assert isinstance(tracker, MlopTracker)
    run = accelerator.get_tracker("mlop", unwrap=True)
    assert isinstance(run, mlop.Run)
    for step in range(3):
        accelerator.log({"train/loss": 1.0 / (step + 1), "note": f"step {step}"}, step=step * 10)
    accelerator.log({"extra": 5.0})
    accelerator.end_training()
    assert run.status == "COMPLETED"

    [read] = mlop.list_runs(tmp_path / "runs")
    assert (read.project, read.name, read.status, read.tags) == (
        "accel-project",
        "by name",
        "COMPLETED",
        ["accelerate"],
    )
    assert read.config == {"lr": 0.01, "epochs": 2, "optimizer": "adamw"}
    assert [(m["step"], m["value"]) for m in read.metrics("train/loss")] == [
        (0, 1.0),
        (10, 0.5),
        (20, pytest.approx(1 / 3)),
    ]
    assert [m["step"] for m in read.metrics("extra")] == [21]
    assert [d["value"] for d in read.data("note")] == ["step 0", "step 1", "step 2"]


def test_log_with_an_instance_images_and_tables(accelerator_class: Any, tmp_path: Path) -> None:
    tracker = MlopTracker("instance-project", name="instance", dir=str(tmp_path))
    accelerator = accelerator_class(log_with=tracker, cpu=True)
    accelerator.init_trackers("ignored-for-instances", config={"batch_size": 4})
    accelerator.log({"loss": 0.5}, step=1)
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    tracker.log_images({"samples": [image, image + 255], "single": image}, step=1)
    tracker.log_table("predictions", columns=["text", "label"], data=[["a", 0], ["b", 1]], step=1)
    accelerator.end_training()

    [read] = mlop.list_runs(tmp_path)
    assert (read.project, read.name, read.status) == ("instance-project", "instance", "COMPLETED")
    assert read.config == {"batch_size": 4}
    assert [m["value"] for m in read.metrics("loss")] == [0.5]
    samples = list(read.media("samples"))
    assert sorted((m["type"], m["sample_index"], m["step"]) for m in samples) == [
        ("IMAGE", 0, 1),
        ("IMAGE", 1, 1),
    ]
    assert [m["sample_index"] for m in read.media("single")] == [None]
    [table] = list(read.data("predictions"))
    assert table["value"]["table"] == [["a", 0], ["b", 1]]
    assert [c["name"] for c in table["value"]["col"]] == ["text", "label"]


def test_a_run_given_to_the_tracker_is_left_open(accelerator_class: Any, tmp_path: Path) -> None:
    run = mlop.init(project="own", dir=str(tmp_path))
    accelerator = accelerator_class(log_with=MlopTracker(run=run), cpu=True)
    accelerator.init_trackers("own", config={"seed": 1})
    accelerator.log({"loss": 1.0}, step=0)
    accelerator.end_training()
    assert run.status == "RUNNING"
    run.finish()
    [read] = mlop.list_runs(tmp_path)
    assert read.config == {"seed": 1}
    assert [m["value"] for m in read.metrics("loss")] == [1.0]


def test_older_accelerate_explains_how_to_pass_the_tracker() -> None:
    def filter_trackers(log_with: Any, logging_dir: Any = None) -> list[Any]:
        return [log_with]

    old = types.ModuleType("accelerate.tracking")
    old.filter_trackers = filter_trackers  # type: ignore[attr-defined]
    patch_accelerate(old)
    patch_accelerate(old)  # twice: wrapped once
    assert old.filter_trackers.__wrapped__ is filter_trackers  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=r"accelerate 1\.15 or later.*MlopTracker"):
        old.filter_trackers("mlop")
    with pytest.raises(ValueError, match="MlopTracker"):
        old.filter_trackers(["tensorboard", "mlop"], "logs")
    assert old.filter_trackers("wandb") == ["wandb"]


def test_registration_by_name_happens_once(accelerator_class: Any) -> None:
    import accelerate.tracking

    assert accelerate.tracking.LOGGER_TYPE_TO_CLASS["mlop"] is MlopTracker
    patch_accelerate(accelerate.tracking)  # a second registration would warn (an error here)
    assert accelerate.tracking.LOGGER_TYPE_TO_CLASS["mlop"] is MlopTracker
