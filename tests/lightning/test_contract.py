"""The contract Lightning's own logger tests hold every logger to, checked point by point on MlopLogger.

Lightning's ``tests_pytorch/loggers/test_all.py`` and ``test_logger.py`` run each of its loggers through the
same checks; these tests make the same demands of ours, in our own words, and read back what arrived in the
run's store. The rank checks (``DummyExperiment`` on rank 1, the experiment ready at ``setup`` on rank 0)
run in real 2-process jobs in ``test_distributed.py``.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import os
import pickle
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger

import mlop
from mlop._store import Store
from mlop_lightning import MlopLogger


def _series(run: mlop.RunReader, key: str) -> list[tuple[int, Any]]:
    return [(m["step"], m["value"]) for m in run.metrics(key)]


def _statuses(run_dir: Any) -> list[str]:
    """Every status the run's store recorded, in order (the reader shows only the last)."""
    store = Store(run_dir)
    try:
        return [item[1] for _, _, items in store.records(["status"]) for item in items]
    finally:
        store.close()


def _mlop_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("mlop")}


class Recording(MlopLogger):
    """Our logger, keeping what Lightning handed to ``log_metrics``, as Lightning's tests wrap theirs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handed: list[tuple[int | None, list[str]]] = []

    def log_metrics(self, metrics: Any, step: int | None = None) -> None:
        super().log_metrics(metrics, step)
        self.handed.append((step, sorted(metrics)))


def test_fit_then_test_hands_the_logger_each_stage_at_its_step(
    tmp_path: Path, tiny: Any, data: Callable[..., Any]
) -> None:
    class Stages(tiny):  # type: ignore[misc,valid-type]
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss = self._loss(batch)
            self.log("fit_value", loss)
            return loss

        def validation_step(self, batch: Any, batch_idx: int) -> None:
            self._loss(batch)

        def test_step(self, batch: Any, batch_idx: int) -> None:
            self._loss(batch)

        def on_validation_epoch_end(self) -> None:
            self.log_dict({"stop_when": torch.tensor(1.0), "val_value": torch.tensor(0.5)})

        def on_test_epoch_end(self) -> None:
            self.log("test_value", torch.tensor(2.0))

    logger = Recording(save_dir=tmp_path)
    trainer = Trainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        logger=logger,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    model = Stages()
    trainer.fit(model, data(), data(batches=1))
    trainer.test(model, data(batches=1))

    assert logger.handed == [
        (0, ["epoch", "fit_value"]),
        (0, ["epoch", "stop_when", "val_value"]),
        (1, ["epoch", "test_value"]),
    ]
    run = mlop.open_run(logger.log_dir)
    assert run.status == "COMPLETED"
    assert [s for s, _ in _series(run, "fit_value")] == [0]
    assert _series(run, "val_value") == [(0, 0.5)] and _series(run, "test_value") == [(1, 2.0)]


def test_constructor_takes_the_keywords_lightning_looks_for(tmp_path: Path) -> None:
    """Lightning's tests read the signature (``save_dir``, ``offline``) to build each logger."""
    spec = inspect.getfullargspec(MlopLogger)
    expected = ["save_dir", "name", "version", "log_dir", "project", "offline", "log_model", "prefix"]
    assert spec.args[1 : len(expected) + 1] == expected
    assert {"checkpoint_name", "experiment"} <= set(spec.args) and spec.varkw is not None
    for parameter in [*expected, "checkpoint_name", "experiment"]:
        assert f"{parameter}:" in (MlopLogger.__doc__ or ""), parameter

    logger = MlopLogger(save_dir=str(tmp_path), offline=True, version="v1", name="shown")
    assert logger.save_dir == str(tmp_path)  # the folder given, not a folder mlop makes below it
    assert (logger.name, logger.version) == ("lightning_logs", "v1")  # Lightning's default name
    logger.log_metrics({"x": 1.0}, step=0)
    logger.finalize("success")
    run = mlop.open_run(logger.log_dir)
    assert Path(run.dir).is_relative_to(tmp_path)
    assert (run.project, run.name, run.meta["mode"]) == ("lightning_logs", "shown", "offline")
    with pytest.raises(ValueError, match="offline"):
        MlopLogger(save_dir=tmp_path, offline=True, mode="online")


def test_the_project_comes_from_mlop_project_before_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOP_PROJECT", "from-env")
    assert MlopLogger(save_dir=tmp_path).name == "from-env"
    assert MlopLogger(save_dir=tmp_path, project="given").name == "given"
    monkeypatch.delenv("MLOP_PROJECT")
    assert MlopLogger(save_dir=tmp_path, settings={"project": "set"}).name == "set"


def test_prefix_is_joined_with_lightnings_join_char(tmp_path: Path) -> None:
    logger = MlopLogger(save_dir=tmp_path, prefix="tmp")
    assert logger.LOGGER_JOIN_CHAR == "-"
    logger.log_metrics({"test": 1.0}, step=0)
    logger.finalize("success")
    run = mlop.open_run(logger.log_dir)
    assert {m["key"] for m in run.metrics(system=False)} == {"tmp-test", "trainer/global_step"}
    assert _series(run, "tmp-test") == [(0, 1.0)]


def test_a_pickled_trainer_carries_a_logger_that_continues_the_run(tmp_path: Path) -> None:
    logger = MlopLogger(save_dir=tmp_path, version="same")
    assert isinstance(logger.experiment, mlop.Run)
    logger.log_metrics({"a": 1.0})  # no step: the run's next one
    logger.save()
    pickle.dumps(logger)
    trainer = Trainer(max_epochs=1, logger=logger, enable_progress_bar=False)
    copy = pickle.loads(pickle.dumps(trainer)).logger
    copy.log_metrics({"acc": 1.0}, step=5)
    assert (copy.name, copy.save_dir, copy.version) == (logger.name, logger.save_dir, logger.version)

    # In the process that holds the run, the copy logs into the same live run; the run ends once.
    assert copy.experiment is logger.experiment
    logger.finalize("success")
    copy.finalize("success")
    (run,) = mlop.list_runs(tmp_path)
    assert run.id == "same" and run.status == "COMPLETED"
    assert _series(run, "a") == [(0, 1.0)] and _series(run, "acc") == [(5, 1.0)]
    assert _statuses(run.dir) == ["RUNNING", "COMPLETED"]


def test_with_another_logger_both_receive_the_metrics(
    tmp_path: Path, tiny: Any, data: Callable[..., Any], trainer_for: Callable[..., Any]
) -> None:
    ours = MlopLogger(save_dir=tmp_path / "mlop", project="pair")
    csv = CSVLogger(save_dir=tmp_path / "csv")
    trainer = trainer_for([ours, csv], max_epochs=1)
    trainer.fit(tiny(), data())
    run = mlop.open_run(ours.log_dir)
    assert run.status == "COMPLETED" and len(_series(run, "train/loss")) == 4
    assert "train/loss" in (Path(csv.log_dir) / "metrics.csv").read_text()


def test_numpy_hyperparameters_become_plain_values(tmp_path: Path) -> None:
    logger = MlopLogger(save_dir=tmp_path)
    params = {
        "flag": np.bool_(1),
        "byte": np.byte(2),
        "int": np.int_(4),
        "single": np.single(6.0),
        "double": np.double(8.5),
        "complex": np.cdouble(9 + 4j),
    }
    logger.log_hyperparams(argparse.Namespace(**params))
    logger.finalize("success")
    config = mlop.open_run(logger.log_dir).config
    assert config == {"flag": True, "byte": 2, "int": 4, "single": 6.0, "double": 8.5, "complex": "(9+4j)"}
    assert type(config["flag"]) is bool and type(config["int"]) is int


@pytest.mark.parametrize("to_logger", [True, False])
def test_hyperparameters_reach_the_run_only_when_saved_for_the_logger(
    tmp_path: Path, to_logger: bool, data: Callable[..., Any], trainer_for: Callable[..., Any]
) -> None:
    class Quiet(LightningModule):
        def __init__(self, width: int = 3) -> None:
            super().__init__()
            self.save_hyperparameters(logger=to_logger)
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    logger = MlopLogger(save_dir=tmp_path)
    trainer_for(logger, max_epochs=1).fit(Quiet(), data())
    assert mlop.open_run(logger.log_dir).config == ({"width": 3} if to_logger else {})


def test_a_step_logged_by_the_user_is_the_step_the_run_stores(
    tmp_path: Path, tiny: Any, data: Callable[..., Any], trainer_for: Callable[..., Any]
) -> None:
    """Lightning takes a logged ``step`` as the step of that log call; the run stores it as such."""

    class OwnStep(tiny):  # type: ignore[misc,valid-type]
        def on_train_epoch_end(self) -> None:
            self.log_dict({"step": float(10 * (self.current_epoch + 1)), "epoch_acc": 0.5})

    logger = MlopLogger(save_dir=tmp_path)
    trainer_for(logger, max_epochs=2).fit(OwnStep(), data())
    run = mlop.open_run(logger.log_dir)
    assert [step for step, _ in _series(run, "epoch_acc")] == [10, 20]


def test_os_environ_is_left_as_found(tmp_path: Path, tiny: Any, data: Callable[..., Any]) -> None:
    before = dict(os.environ)
    logger = MlopLogger(save_dir=tmp_path)
    copy = pickle.loads(pickle.dumps(logger))
    logger.log_metrics({"x": 1.0}, step=0)
    logger.finalize("success")
    copy.finalize("success")
    assert dict(os.environ) == before


def test_a_logger_never_finalized_ends_its_run_when_collected(tmp_path: Path) -> None:
    before = _mlop_threads()
    logger = MlopLogger(save_dir=tmp_path, x_flush_interval=0.05)
    logger.log_metrics({"loss": 1.0}, step=0)
    run_dir = logger.log_dir
    assert _mlop_threads() - before  # the run's threads are running
    del logger
    gc.collect()
    assert _mlop_threads() - before == set()
    run = mlop.open_run(run_dir)
    assert run.status == "COMPLETED" and _series(run, "loss") == [(0, 1.0)]


def test_a_script_that_never_finalizes_exits_and_completes_its_run(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys, threading
        from mlop_lightning import MlopLogger

        logger = MlopLogger(save_dir=sys.argv[1], version="left")
        logger.log_metrics({"loss": 0.5}, step=3)
        print("THREADS", sorted(t.name for t in threading.enumerate() if t.name.startswith("mlop")))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "mlop-writer" in out.stdout  # the run was live when the script ended
    (run,) = mlop.list_runs(tmp_path)
    assert run.id == "left" and run.status == "COMPLETED" and _series(run, "loss") == [(3, 0.5)]


def test_a_dropped_copy_leaves_the_originals_run_running(tmp_path: Path) -> None:
    logger = MlopLogger(save_dir=tmp_path, version="kept")
    logger.log_metrics({"a": 1.0}, step=0)
    copy = pickle.loads(pickle.dumps(logger))
    copy.log_metrics({"b": 1.0}, step=1)
    del copy
    gc.collect()
    assert logger.experiment.status == "RUNNING"
    logger.finalize("success")
    (run,) = mlop.list_runs(tmp_path)
    assert _statuses(run.dir) == ["RUNNING", "COMPLETED"] and _series(run, "b") == [(1, 1.0)]
