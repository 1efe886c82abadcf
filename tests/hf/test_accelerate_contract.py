"""What accelerate's own tracker tests (``tests/test_tracking.py``) demand of a tracker, asked of ours.

Each test builds a real ``Accelerator`` on CPU and reads back what arrived in the run's store.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import mlop
from mlop_hf import MlopTracker


@pytest.fixture
def accelerator_class() -> Iterator[Any]:
    """accelerate's ``Accelerator``, with its process state reset after each test."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    yield Accelerator
    AcceleratorState._reset_state(reset_partial_state=True)
    PartialState._reset_state()


def _series(run: mlop.RunReader, key: str) -> list[tuple[int, Any]]:
    return [(m["step"], m["value"]) for m in run.metrics(key)]


def test_accelerates_list_behind_all_is_still_the_one_mlop_hf_extends() -> None:
    """If this fails, an accelerate release changed how ``log_with="all"`` finds trackers: mlop-hf's
    ``include_in_all`` must follow it, or ``"all"`` silently leaves mlop out."""
    from accelerate import tracking

    available = getattr(tracking, "_available_trackers", None)
    assert isinstance(available, list), "accelerate.tracking._available_trackers is gone or not a list"
    assert tracking.get_available_trackers() is available, "get_available_trackers() reads another list"
    assert "mlop" in available
    assert tracking.LOGGER_TYPE_TO_CLASS["mlop"] is MlopTracker


def test_log_with_all_starts_mlop_with_the_other_trackers(accelerator_class: Any, tmp_path: Path) -> None:
    accelerator = accelerator_class(log_with="all", project_dir=str(tmp_path), cpu=True)
    assert "mlop" in [str(t) for t in accelerator.log_with]
    accelerator.init_trackers("everything", config={"lr": 0.5})
    names = [t.name for t in accelerator.trackers]
    assert "mlop" in names and len(names) == len(accelerator.log_with)
    accelerator.log({"loss": 0.25}, step=2)
    accelerator.end_training()

    (run,) = mlop.list_runs(tmp_path)
    assert run.project == "everything" and run.status == "COMPLETED" and run.config == {"lr": 0.5}
    assert _series(run, "loss") == [(2, 0.25)]


@pytest.mark.parametrize("how", ["project_dir", "logging_dir"])
def test_the_run_goes_under_the_accelerators_logging_dir(
    accelerator_class: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    from accelerate.utils import ProjectConfiguration

    monkeypatch.chdir(tmp_path)  # where the run would go if the logging dir were ignored
    logs = tmp_path / "logs"
    if how == "project_dir":
        accelerator = accelerator_class(log_with="mlop", project_dir=str(logs), cpu=True)
    else:
        configuration = ProjectConfiguration(project_dir=str(tmp_path / "p"), logging_dir=str(logs))
        accelerator = accelerator_class(log_with="mlop", project_config=configuration, cpu=True)
    accelerator.init_trackers("placed")
    accelerator.log({"x": 1.0}, step=0)
    accelerator.end_training()

    (run,) = mlop.list_runs(logs)
    assert Path(run.dir).is_relative_to(logs) and run.project == "placed"
    assert not (tmp_path / ".mlop").exists()
    # A dir given to the tracker itself still wins.
    own = tmp_path / "own"
    accelerator = accelerator_class(log_with="mlop", project_dir=str(logs), cpu=True)
    accelerator.init_trackers("placed", init_kwargs={"mlop": {"dir": str(own)}})
    accelerator.end_training()
    assert len(mlop.list_runs(own)) == 1 and len(mlop.list_runs(logs)) == 1


def test_config_types_tags_and_values_arrive_as_given(accelerator_class: Any, tmp_path: Path) -> None:
    accelerator = accelerator_class(log_with="mlop", cpu=True)
    config = {"num_iterations": 12, "learning_rate": 1e-2, "some_boolean": False, "some_string": "some_value"}
    accelerator.init_trackers("typed", config, {"mlop": {"tags": ["my_tag"], "dir": str(tmp_path)}})
    accelerator.log({"total_loss": 0.1, "iteration": 1, "my_text": "some_value"}, step=0)
    accelerator.log({"tensor": torch.tensor(1)}, step=0)
    accelerator.end_training()

    (run,) = mlop.list_runs(tmp_path)
    assert run.config == config and run.tags == ["my_tag"]
    assert _series(run, "total_loss") == [(0, 0.1)] and _series(run, "iteration") == [(0, 1)]
    assert _series(run, "tensor") == [(0, 1)]
    assert [(d["step"], d["value"]) for d in run.data("my_text")] == [(0, "some_value")]


def test_steps_count_on_when_none_is_given(accelerator_class: Any, tmp_path: Path) -> None:
    accelerator = accelerator_class(log_with="mlop", project_dir=str(tmp_path), cpu=True)
    accelerator.init_trackers("steps")
    values = {"total_loss": 0.1, "iteration": 1}
    accelerator.log(values)
    accelerator.log(values)
    accelerator.log(values, step=3)
    accelerator.end_training()
    (run,) = mlop.list_runs(tmp_path)
    assert [step for step, _ in _series(run, "total_loss")] == [0, 1, 3]


def test_making_the_tracker_leaves_the_distributed_state_alone(
    accelerator_class: Any, tmp_path: Path
) -> None:
    from accelerate.state import PartialState

    PartialState._reset_state()
    tracker = MlopTracker("deferred", dir=str(tmp_path))
    assert PartialState._shared_state == {}
    assert mlop.list_runs(tmp_path) == []  # no run before init_trackers starts it
    accelerator = accelerator_class(log_with=tracker, cpu=True)
    assert PartialState._shared_state != {}
    accelerator.init_trackers("deferred")
    assert accelerator.get_tracker("mlop", unwrap=True) is tracker.tracker
    accelerator.end_training()
    assert [run.status for run in mlop.list_runs(tmp_path)] == ["COMPLETED"]


def test_the_last_value_of_each_number_is_the_runs_summary(accelerator_class: Any, tmp_path: Path) -> None:
    accelerator = accelerator_class(log_with="mlop", project_dir=str(tmp_path), cpu=True)
    accelerator.init_trackers("summed")
    for step in range(3):
        accelerator.log(
            {"loss": 1.0 / (step + 1), "acc": torch.tensor(0.5 * step), "note": "text"}, step=step
        )
    accelerator.end_training()
    (run,) = mlop.list_runs(tmp_path)
    assert run.summary == {"loss": pytest.approx(1 / 3), "acc": 1.0}


def test_save_state_and_load_state_carry_the_run(accelerator_class: Any, tmp_path: Path) -> None:
    from accelerate.state import AcceleratorState, PartialState

    first = accelerator_class(log_with="mlop", project_dir=str(tmp_path / "node-a"), cpu=True)
    first.init_trackers("stateful", config={"lr": 0.1})
    first.log({"loss": 1.0})
    first.log({"loss": 0.75})  # steps 0 and 1
    first.save_state(str(tmp_path / "state"))
    first.end_training()
    (saved,) = mlop.list_runs(tmp_path / "node-a")
    AcceleratorState._reset_state(reset_partial_state=True)
    PartialState._reset_state()

    # Another machine: only the saved state carried over; loaded before the first log.
    second = accelerator_class(log_with="mlop", project_dir=str(tmp_path / "node-b"), cpu=True)
    second.init_trackers("stateful", config={"lr": 0.1})
    second.load_state(str(tmp_path / "state"))
    second.log({"loss": 0.5})  # no step: the step counter goes on after the saved run's
    second.log({"loss": 0.25}, step=5)
    second.log({"loss": 0.125})
    second.end_training()

    (run,) = mlop.list_runs(tmp_path / "node-b")
    assert run.id == saved.id and run.project == "stateful" and run.status == "COMPLETED"
    assert _series(run, "loss") == [(2, 0.5), (5, 0.25), (6, 0.125)] and run.config == {"lr": 0.1}
