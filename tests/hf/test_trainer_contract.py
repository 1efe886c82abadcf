"""The ``TrainerCallback`` contract with ``report_to="mlop"``, after transformers' own callback tests.

transformers checks that a callback named in ``report_to`` sits in the Trainer's handler, can be found,
popped and removed by its class, and sees every event of training, evaluation and prediction in order.
Here the events our callback sees are compared with those a plain recorder sees in the same Trainer, and
every ``on_log`` must have landed in the run at the Trainer's global step.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlop
from mlop_hf import MlopCallback
from mlop_hf._callback import SUMMARY_KEYS


def _events() -> tuple[type[Any], type[Any]]:
    from transformers import TrainerCallback

    class Recorder(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.events: list[str] = []
            self.logs: list[tuple[int, dict[str, Any]]] = []

        def __getattribute__(self, name: str) -> Any:
            value = object.__getattribute__(self, name)
            if name.startswith("on_") and callable(value):
                object.__getattribute__(self, "events").append(name)
            return value

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            self.logs.append((state.global_step, dict(logs or {})))

    class RecordingMlop(MlopCallback):
        def __init__(self) -> None:
            super().__init__()
            self.events: list[str] = []

        def __getattribute__(self, name: str) -> Any:
            value = object.__getattribute__(self, name)
            if name.startswith("on_") and callable(value):
                object.__getattribute__(self, "events").append(name)
            return value

    return Recorder, RecordingMlop


def test_the_callback_named_in_report_to_can_be_found_popped_and_removed(
    make_trainer: Callable[..., Any],
) -> None:
    trainer = make_trainer(max_steps=2)
    ours = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, MlopCallback)]
    assert len(ours) == 1
    popped = trainer.pop_callback(MlopCallback)
    assert popped is ours[0]
    assert not any(isinstance(cb, MlopCallback) for cb in trainer.callback_handler.callbacks)
    trainer.add_callback(MlopCallback)
    assert sum(isinstance(cb, MlopCallback) for cb in trainer.callback_handler.callbacks) == 1
    trainer.remove_callback(MlopCallback)
    assert not any(isinstance(cb, MlopCallback) for cb in trainer.callback_handler.callbacks)


def test_every_event_reaches_the_callback_and_every_log_lands_at_its_step(
    make_trainer: Callable[..., Any], tmp_path: Path
) -> None:
    recorder_class, ours_class = _events()
    recorder, ours = recorder_class(), ours_class()
    trainer = make_trainer(
        max_steps=6,
        eval_strategy="steps",
        eval_steps=3,
        save_strategy="steps",
        save_steps=3,
        report_to="none",
        callbacks=[recorder, ours],
    )
    trainer.train()
    trainer.evaluate()
    trainer.predict(trainer.eval_dataset)
    mlop.finish()

    assert ours.events == recorder.events  # the same events, in the same order
    for event in ("on_train_begin", "on_step_end", "on_evaluate", "on_save", "on_train_end", "on_predict"):
        assert event in ours.events, event
    (run,) = mlop.list_runs(tmp_path)
    assert run.status == "COMPLETED"
    for step, logs in recorder.logs:
        for key, value in logs.items():
            if key in SUMMARY_KEYS:  # reported once at the end: the run's summary
                assert run.summary[key] == value
                continue
            name = f"eval/{key[5:]}" if key.startswith("eval_") else f"train/{key}"
            assert (step, value) in [(m["step"], m["value"]) for m in run.metrics(name)], name
    predicted = [m["step"] for m in run.metrics("test/loss")]
    assert predicted == [trainer.state.global_step]
