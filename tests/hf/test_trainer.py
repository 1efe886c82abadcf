"""``report_to="mlop"`` in a real transformers ``Trainer`` (tiny BERT, CPU), read back from the run."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import mlop
from mlop_hf import MlopCallback
from mlop_hf._callback import SUMMARY_KEYS, prefixed


def only_run(root: Path) -> mlop.RunReader:
    runs = mlop.list_runs(root)
    assert len(runs) == 1, [r.name for r in runs]
    return runs[0]


def steps(run: mlop.RunReader, key: str) -> list[int]:
    return [m["step"] for m in run.metrics(key)]


def test_prefixes_are_those_of_transformers_trackers() -> None:
    logs = {"loss": 0.5, "eval_loss": 0.4, "test_accuracy": 0.9, "train_runtime": 1.0, "evaluation": 2}
    assert prefixed(logs) == {
        "train/loss": 0.5,
        "eval/loss": 0.4,
        "test/accuracy": 0.9,
        "train/train_runtime": 1.0,
        "train/evaluation": 2,
    }


def test_credentials_are_masked_at_any_depth() -> None:
    from mlop_hf._config import REDACTED, redact

    values = {
        "hub_token": "<HUB_TOKEN>",
        "api_key": "k-123",
        "nested": {"db_password": "pw", "secret": "s", "tokenizer_name": "bert"},
        "push_to_hub_token": None,
        "max_tokens": 5,
    }
    assert redact(values) == {
        "hub_token": "<HUB_TOKEN>",
        "api_key": REDACTED,
        "nested": {"db_password": REDACTED, "secret": REDACTED, "tokenizer_name": "bert"},
        "push_to_hub_token": None,
        "max_tokens": 5,
    }


def test_wrong_arguments_raise_when_the_callback_is_made() -> None:
    with pytest.raises(ValueError, match="log_model"):
        MlopCallback(log_model="always")
    with pytest.raises(ValueError, match="watch"):
        MlopCallback(watch="everything")


def test_report_to_all_includes_mlop(make_trainer: Callable[..., Any]) -> None:
    trainer = make_trainer(report_to="all")
    assert "mlop" in trainer.args.report_to
    assert any(isinstance(cb, MlopCallback) for cb in trainer.callback_handler.callbacks)


def test_report_to_mlop_logs_train_and_eval_at_global_steps(
    make_trainer: Callable[..., Any], tmp_path: Path
) -> None:
    trainer = make_trainer(
        run_name="tiny bert",
        eval_strategy="steps",
        eval_steps=3,
        hub_token="hf_secret_value",
    )
    assert [type(cb).__name__ for cb in trainer.callback_handler.callbacks].count("MlopCallback") == 1
    trainer.train()
    assert only_run(tmp_path).status == "RUNNING"  # until the process ends or mlop.finish()
    mlop.finish()

    run = only_run(tmp_path)
    assert (run.name, run.project, run.status) == ("tiny bert", "huggingface", "COMPLETED")
    assert steps(run, "train/loss") == [2, 4, 6]
    assert steps(run, "eval/loss") == [3, 6]
    assert steps(run, "train/learning_rate") == [2, 4, 6]
    # What the Trainer reports once at the end is the run's summary, not one-point series.
    final = trainer.state.log_history[-1]
    assert run.summary == {k: final[k] for k in SUMMARY_KEYS}
    assert all(steps(run, f"train/{key}") == [] for key in SUMMARY_KEYS)
    global_steps = [(m["step"], m["value"]) for m in run.metrics("train/global_step")]
    assert all(step == value for step, value in global_steps)
    assert sorted({s for s, _ in global_steps}) == [2, 3, 4, 6]
    losses = [m["value"] for m in run.metrics("train/loss")]
    history = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert losses == pytest.approx(history)

    config = run.config
    assert config["hidden_size"] == 16 and config["num_hidden_layers"] == 2  # the model's config
    assert config["learning_rate"] == 1e-3 and config["max_steps"] == 6  # the training arguments
    assert config["model/num_parameters"] == trainer.model.num_parameters()
    assert "hf_secret_value" not in repr(config)
    assert config["hub_token"] == "<HUB_TOKEN>"


def test_project_comes_from_mlop_project(
    make_trainer: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOP_PROJECT", "tiny-models")
    make_trainer(max_steps=2).train()
    assert only_run(tmp_path).project == "tiny-models"


def test_evaluate_and_predict_after_training_land_in_the_same_run(
    make_trainer: Callable[..., Any], tmp_path: Path
) -> None:
    trainer = make_trainer(max_steps=4)
    trainer.train()
    (live,) = mlop.ops
    trainer.evaluate()
    trainer.predict(trainer.eval_dataset)
    assert mlop.ops == [live] and live.status == "RUNNING"  # one Trainer, one live run
    assert only_run(tmp_path).status == "RUNNING"
    mlop.finish()
    trainer.evaluate()  # after the user ended it: the same run continues, and ends with the process
    assert [op.id for op in mlop.ops] == [live.id]
    mlop.finish()

    run = only_run(tmp_path)
    assert run.id == live.id and run.status == "COMPLETED"
    assert steps(run, "eval/loss") == [4, 4]
    assert steps(run, "test/loss") == [4]
    assert run.summary["train_runtime"] > 0


def test_a_run_the_user_started_is_used_and_left_open(
    make_trainer: Callable[..., Any], tmp_path: Path
) -> None:
    run = mlop.init(project="mine", name="user run", config={"dataset": "parity"})
    make_trainer(max_steps=2).train()
    assert run.status == "RUNNING"
    run.log({"after": 1.0})
    run.finish()

    read = only_run(tmp_path)
    assert (read.project, read.name, read.status) == ("mine", "user run", "COMPLETED")
    assert read.config["dataset"] == "parity" and read.config["max_steps"] == 2
    assert steps(read, "train/loss") == [2]
    assert [m["value"] for m in read.metrics("after")] == [1.0]


def test_a_run_passed_to_the_callback_is_not_finished(
    make_trainer: Callable[..., Any], tmp_path: Path
) -> None:
    run = mlop.init(project="passed")
    make_trainer(max_steps=2, report_to="none", callbacks=[MlopCallback(run=run)]).train()
    assert run.status == "RUNNING"
    run.finish()
    assert steps(only_run(tmp_path), "train/loss") == [2]


def test_each_train_call_gets_a_fresh_run(make_trainer: Callable[..., Any], tmp_path: Path) -> None:
    trainer = make_trainer(max_steps=2, eval_strategy="steps", eval_steps=2)
    trainer.train()
    trainer.log({"custom": 1.0})  # outside training: the first run, still open
    trainer.train()  # ends the first run and starts a fresh one
    assert [r.status for r in mlop.list_runs(tmp_path)] == ["COMPLETED", "RUNNING"]
    mlop.finish()
    runs = mlop.list_runs(tmp_path)
    assert [r.status for r in runs] == ["COMPLETED", "COMPLETED"]
    assert len({r.id for r in runs}) == 2
    assert [m["step"] for m in runs[0].metrics("train/custom")] == [2]
    assert [[m["step"] for m in r.metrics("eval/loss")] for r in runs] == [[2], [2]]


def test_peft_config_is_stored(make_trainer: Callable[..., Any], tmp_path: Path) -> None:
    import enum

    from hf_tiny import tiny_model

    class PeftType(str, enum.Enum):
        LORA = "LORA"

    class LoraConfig:
        """Stands in for peft's config (peft is not installed here): ``to_dict`` with a str enum and a set."""

        def to_dict(self) -> dict[str, Any]:
            return {"peft_type": PeftType.LORA, "r": 4, "target_modules": {"query", "value"}}

    model = tiny_model()
    model.peft_config = {"default": LoraConfig()}
    make_trainer(model=model, max_steps=2).train()
    mlop.finish()
    stored = only_run(tmp_path).config["peft_config"]
    assert list(stored) == ["default"]
    assert stored["default"]["peft_type"] == "LORA" and stored["default"]["r"] == 4
    assert sorted(stored["default"]["target_modules"]) == ["query", "value"]


def test_checkpoints_are_stored_as_artifacts(
    make_trainer: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOP_LOG_MODEL", "checkpoint")
    make_trainer(max_steps=4, save_strategy="steps", save_steps=2).train()
    mlop.finish()

    run = only_run(tmp_path)
    files = list(run.media("model/checkpoint"))
    assert sorted({f["step"] for f in files}) == [2, 4]
    assert {f["type"] for f in files} == {"ARTIFACT"}
    at_4 = {f["artifactPath"] for f in files if f["step"] == 4}
    assert {"config.json", "model.safetensors", "trainer_state.json"} <= at_4
    saved = tmp_path / "out" / "checkpoint-4" / "model.safetensors"
    stored = next(f for f in files if f["step"] == 4 and f["artifactPath"] == "model.safetensors")
    assert Path(stored["path"]).read_bytes() == saved.read_bytes()
    assert stored["caption"] == "checkpoint-4"
    assert stored["metadata"]["global_step"] == 4


def test_the_final_model_is_stored_at_the_end(
    make_trainer: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    monkeypatch.setenv("MLOP_LOG_MODEL", "end")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    trainer = make_trainer(max_steps=2)
    trainer.train()
    mlop.finish()

    run = only_run(tmp_path)
    files = list(run.media("model/final"))
    assert {f["artifactPath"] for f in files} >= {"config.json", "model.safetensors"}
    assert {f["step"] for f in files} == {2}
    assert list(run.media("model/checkpoint")) == []
    assert run.status == "COMPLETED"
    assert os.listdir(tmp_path / "tmp") == []  # the staging folder is gone


def test_the_final_model_of_a_plain_torch_module_is_its_weights(
    make_trainer: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from safetensors.torch import load_file

    class Plain(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(16, 4)
            self.head = torch.nn.Linear(4, 2)

        def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
            logits = self.head(self.embed(input_ids).mean(dim=1))
            return {"loss": torch.nn.functional.cross_entropy(logits, labels), "logits": logits}

    monkeypatch.setenv("MLOP_LOG_MODEL", "end")
    model = Plain()
    make_trainer(model=model, max_steps=2).train()
    mlop.finish()
    [stored] = list(only_run(tmp_path).media("model/final"))
    assert stored["artifactPath"] == "model.safetensors"
    weights = load_file(stored["path"])
    assert torch.equal(weights["head.weight"], model.head.weight.detach())


def test_the_final_model_of_a_users_run_is_kept_until_the_run_finishes(
    make_trainer: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tempfile

    monkeypatch.setenv("MLOP_LOG_MODEL", "end")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    run = mlop.init(project="mine")
    make_trainer(max_steps=2).train()
    assert len(os.listdir(tmp_path / "tmp")) == 1  # staged until the run, which is the user's, finishes
    run.finish()  # the mlop_run_finished hook of mlop_hf.plugin deletes it
    assert os.listdir(tmp_path / "tmp") == []
    stored = {f["artifactPath"]: Path(f["path"]) for f in only_run(tmp_path).media("model/final")}
    assert stored["config.json"].read_bytes().startswith(b"{")


def test_watch_when_mlop_watch_asks(
    make_trainer: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlop_torch._watch")
    monkeypatch.setenv("MLOP_WATCH", "all")
    make_trainer(max_steps=2, logging_steps=1).train()
    mlop.finish()
    run = only_run(tmp_path)
    keys = {d["key"] for d in run.data()}
    assert run.graph is not None
    assert any(k.startswith("grad/bert.") for k in keys), sorted(keys)[:5]
    assert any(k.startswith("param/bert.") for k in keys), sorted(keys)[:5]


def test_a_bad_mlop_log_model_is_ignored_with_a_warning(
    make_trainer: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    monkeypatch.setenv("MLOP_LOG_MODEL", "sometimes")
    with caplog.at_level(logging.WARNING, logger="mlop_hf"):
        make_trainer(max_steps=2).train()
    assert "MLOP_LOG_MODEL='sometimes'" in caplog.text
    assert list(only_run(tmp_path).media()) == []


def test_other_processes_log_nothing(make_trainer: Callable[..., Any], tmp_path: Path) -> None:
    callback = MlopCallback()
    trainer = make_trainer(max_steps=2, report_to="none", callbacks=[callback])
    trainer.state.is_world_process_zero = False
    args, state, control = trainer.args, trainer.state, trainer.control
    callback.on_train_begin(args, state, control, model=trainer.model)
    callback.on_log(args, state, control, logs={"loss": 1.0})
    callback.on_train_end(args, state, control, model=trainer.model)
    assert callback.run is None
    assert mlop.list_runs(tmp_path) == []


def test_hyperparameter_search_gives_each_trial_a_run(
    make_trainer: Callable[..., Any], tmp_path: Path
) -> None:
    pytest.importorskip("optuna")
    import optuna
    from hf_tiny import tiny_model

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trainer = make_trainer(max_steps=2, run_name="sweep", model=None)
    trainer.model_init = lambda trial=None: tiny_model()
    best = trainer.hyperparameter_search(
        hp_space=lambda trial: {"learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)},
        backend="optuna",
        n_trials=2,
        hp_name=lambda trial: f"trial-{trial.number}",
    )
    # Each trial's run ends when the next trial starts; the last one with the process (here: finish()).
    assert [r.status for r in mlop.list_runs(tmp_path)] == ["COMPLETED", "RUNNING"]
    mlop.finish()
    runs = mlop.list_runs(tmp_path)
    assert [r.name for r in runs] == ["trial-0", "trial-1"]
    assert [r.status for r in runs] == ["COMPLETED", "COMPLETED"]
    for run in runs:
        assert "group:sweep" in run.tags
        assert steps(run, "train/loss") == [2]
        assert run.config["learning_rate"] == pytest.approx(run.config["trial_params"]["learning_rate"])
    assert best.run_id in {"0", "1"}
