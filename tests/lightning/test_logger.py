"""MlopLogger with a real Lightning Trainer on CPU: what a user reads back with ``mlop.open_run``."""

from __future__ import annotations

import argparse
import math
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers.logger import DummyExperiment

import mlop
from mlop_lightning import MLOPLogger, MlopLogger


def _series(run: mlop.RunReader, key: str) -> list[tuple[int, Any]]:
    return [(m["step"], m["value"]) for m in run.metrics(key)]


def test_fit_validate_test_lands_in_one_run(
    tmp_path: Path, tiny: Any, data: Callable[..., Any], trainer_for: Callable[..., Any]
) -> None:
    logger = MlopLogger(project="lit", name="first", dir=tmp_path, tags=["lightning"], config={"seed": 7})
    model = tiny(lr=0.05, optimizer={"name": "sgd", "momentum": {"beta": 0.9}})
    trainer = trainer_for(logger)
    trainer.fit(model, data(), data(batches=2))
    assert mlop.open_run(logger.log_dir).status == "COMPLETED"
    trainer.validate(model, data(batches=2))
    trainer.test(model, data(batches=2))

    run = mlop.open_run(logger.log_dir)
    assert run.id == logger.version and run.project == "lit" == logger.name and run.name == "first"
    assert run.status == "COMPLETED" and run.tags == ["lightning"]
    assert run.config == {
        "seed": 7,
        "lr": 0.05,
        "optimizer": {"name": "sgd", "momentum": {"beta": 0.9}},
        "fail_at": -1,
    }
    # 2 epochs of 4 batches: the train loss at every global step, with the step itself and the epoch.
    loss = _series(run, "train/loss")
    assert [step for step, _ in loss] == list(range(8))
    assert all(math.isfinite(value) for _, value in loss)
    global_steps = _series(run, "trainer/global_step")
    assert all(step == value for step, value in global_steps)
    epochs = dict(_series(run, "epoch"))
    assert epochs[0] == 0 and epochs[7] == 1
    # Validation at each epoch end, then trainer.validate and trainer.test at the final step.
    val_steps = [step for step, _ in _series(run, "val/loss")]
    assert len(val_steps) == 3 and val_steps == sorted(val_steps) and val_steps[-1] == trainer.global_step
    (test_loss,) = _series(run, "test/loss")
    assert test_loss[0] == trainer.global_step == 8
    # The summary holds the last value of each metric: fit's, then validate's and test's.
    assert run.summary["train/loss"] == loss[-1][1] and run.summary["trainer/global_step"] == 8
    assert run.summary["test/loss"] == test_loss[1] and run.summary["epoch"] == _series(run, "epoch")[-1][1]
    assert run.summary["val/loss"] == _series(run, "val/loss")[-1][1]


def test_log_model_true_logs_the_final_checkpoints_with_score_path_and_step(
    tmp_path: Path, tiny: Any, data: Callable[..., Any], trainer_for: Callable[..., Any]
) -> None:
    logger = MlopLogger(project="ckpt", dir=tmp_path, log_model=True)
    checkpoint = ModelCheckpoint(monitor="val/loss", save_top_k=2, save_last=True)
    trainer = trainer_for(logger, max_epochs=3, callbacks=[checkpoint])
    trainer.fit(tiny(), data(), data(batches=2))

    run = mlop.open_run(logger.log_dir)
    files = list(run.media("model"))
    by_path = {f["metadata"]["path"]: f for f in files}
    # Lightning puts checkpoints under <save_dir>/<name>/<version> for every logger; the top 2 and
    # last.ckpt are logged once each, at the end.
    assert Path(checkpoint.dirpath) == tmp_path / "ckpt" / logger.version / "checkpoints"
    assert set(by_path) == {*checkpoint.best_k_models, checkpoint.last_model_path}
    best = by_path[checkpoint.best_model_path]["metadata"]
    assert best["score"] == pytest.approx(float(checkpoint.best_model_score))
    assert "best" in best["aliases"] and best["monitor"] == "val/loss"
    assert best["step"] == int(Path(best["path"]).stem.rsplit("step=", 1)[1])
    last = by_path[checkpoint.last_model_path]
    assert last["metadata"]["step"] == trainer.global_step == 12 and "last" in last["metadata"]["aliases"]
    for item in files:
        assert item["type"] == "ARTIFACT"
        assert Path(item["path"]).read_bytes() == Path(item["metadata"]["path"]).read_bytes()
        assert torch.load(item["path"], weights_only=False)["global_step"] == item["metadata"]["step"]


def test_log_model_true_logs_the_checkpoints_of_every_callback(
    tmp_path: Path, tiny: Any, data: Callable[..., Any], trainer_for: Callable[..., Any]
) -> None:
    logger = MlopLogger(project="ckpt", dir=tmp_path, log_model=True)
    best = ModelCheckpoint(monitor="val/loss", filename="best-{epoch}")
    latest = ModelCheckpoint(filename="latest-{epoch}")
    trainer_for(logger, callbacks=[best, latest]).fit(tiny(), data(), data(batches=2))

    files = list(mlop.open_run(logger.log_dir).media("model"))
    assert sorted(Path(f["metadata"]["path"]).name for f in files) == sorted(
        [Path(best.best_model_path).name, "latest-epoch=1.ckpt"]
    )


def test_log_model_all_logs_each_checkpoint_when_saved(
    tmp_path: Path, tiny: Any, data: Callable[..., Any], trainer_for: Callable[..., Any]
) -> None:
    logger = MlopLogger(project="ckpt", dir=tmp_path, log_model="all", checkpoint_name="weights")
    checkpoint = ModelCheckpoint(save_top_k=-1, every_n_epochs=1)
    trainer_for(logger, max_epochs=3, callbacks=[checkpoint]).fit(tiny(), data())

    files = list(mlop.open_run(logger.log_dir).media("weights"))
    assert [f["metadata"]["step"] for f in files] == [4, 8, 12]
    assert [Path(f["metadata"]["path"]).name for f in files] == [
        "epoch=0-step=4.ckpt",
        "epoch=1-step=8.ckpt",
        "epoch=2-step=12.ckpt",
    ]
    assert all(f["metadata"]["score"] is None for f in files)  # nothing monitored
    assert [f["step"] for f in files] == [3, 7, 11]  # logged at the step Lightning had just logged


def test_an_exception_in_training_step_ends_the_run_failed_with_the_trace(
    tmp_path: Path, tiny: Any, data: Callable[..., Any], trainer_for: Callable[..., Any]
) -> None:
    logger = MlopLogger(project="fail", dir=tmp_path)
    with pytest.raises(RuntimeError, match="boom at step 3"):
        trainer_for(logger).fit(tiny(fail_at=3), data())

    run = mlop.open_run(logger.log_dir)
    assert run.status == "FAILED"
    error = run.status_metadata
    assert error is not None
    assert error["type"] == "RuntimeError" and error["message"] == "boom at step 3"
    assert "training_step" in error["trace"] and any(f["name"] == "training_step" for f in error["frames"])
    assert [step for step, _ in _series(run, "train/loss")] == [0, 1, 2]


def test_ctrl_c_ends_the_run_terminated(tmp_path: Path) -> None:
    logger = MlopLogger(project="stop", dir=tmp_path)
    logger.log_metrics({"loss": 1.0}, step=0)
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        logger.finalize("failed")  # what Lightning does in its handler of the interrupt
    assert mlop.open_run(logger.log_dir).status == "TERMINATED"

    requeued = MlopLogger(project="stop", dir=tmp_path)
    requeued.log_metrics({"loss": 1.0}, step=0)
    requeued.finalize("finished")  # Lightning's status on a SLURM requeue signal: the process stops early
    run = mlop.open_run(requeued.log_dir)
    assert run.status == "TERMINATED" and run.status_metadata is not None
    assert run.status_metadata["message"] == "Lightning finalized the logger with status 'finished'"


def test_hyperparameters_of_every_shape_reach_the_config(tmp_path: Path) -> None:
    omegaconf = pytest.importorskip("omegaconf")
    logger = MlopLogger(project="hp", dir=tmp_path)
    logger.log_hyperparams(argparse.Namespace(lr=0.1, model=argparse.Namespace(depth=3, act=torch.nn.ReLU)))
    logger.log_hyperparams({"data": {"batch": 32, "splits": (0.8, 0.2)}, "model": {"width": 64}})
    logger.log_hyperparams(omegaconf.OmegaConf.create({"sched": {"warmup": 10, "total": "${sched.warmup}"}}))
    logger.log_hyperparams({"scalar": torch.tensor(0.5), "big": torch.zeros(100, 100), "none": None})
    logger.finalize("success")

    assert mlop.open_run(logger.log_dir).config == {
        "lr": 0.1,
        "model": {"depth": 3, "act": "torch.nn.modules.activation.ReLU", "width": 64},
        "data": {"batch": 32, "splits": [0.8, 0.2]},
        "sched": {"warmup": 10, "total": 10},
        "scalar": 0.5,
        "big": "Tensor(shape=(100, 100), dtype=torch.float32)",
        "none": None,
    }


def test_log_metrics_by_hand_with_a_prefix(tmp_path: Path) -> None:
    logger = MlopLogger(project="hand", dir=tmp_path, prefix="fold1")
    logger.log_metrics({"loss": 0.5, "acc": torch.tensor(0.25)}, step=10)
    logger.log_metrics({"loss": 0.25})  # no step: the run's next one
    logger.finalize("success")

    run = mlop.open_run(logger.log_dir)
    # Joined with Lightning's LOGGER_JOIN_CHAR, as every Lightning logger joins its prefix.
    assert _series(run, "fold1-loss") == [(10, 0.5), (11, 0.25)]
    assert _series(run, "fold1-acc") == [(10, 0.25)]
    assert _series(run, "trainer/global_step") == [(10, 10)]


def test_media_helpers_log_at_the_last_lightning_step(tmp_path: Path) -> None:
    logger = MlopLogger(project="media", dir=tmp_path)
    logger.log_metrics({"loss": 1.0}, step=5)
    images = [torch.rand(3, 8, 8), (torch.rand(8, 8, 3).numpy() * 255).astype("uint8")]
    logger.log_image("samples", images, caption=["tensor", "array"])
    logger.log_audio("tone", torch.sin(torch.linspace(0, 100, 800)), sample_rate=8000, caption="sine")
    logger.log_text("generated", ["first text", "second text"], step=6)
    logger.log_table("preds", columns=["id", "label"], data=[[1, "cat"], [2, "dog"]])
    logger.log_text("answers", columns=["question", "answer"], data=[["2+2?", "4"]])  # wandb's form
    logger.log_video("clip", torch.rand(4, 3, 8, 8), fps=4, format="gif")
    notes = tmp_path / "notes.txt"
    notes.write_text("kept with the run")
    logger.log_file("notes", notes)
    with pytest.raises(ValueError, match="one value per item"):
        logger.log_image("bad", images, caption=["only one"])
    logger.finalize("success")

    run = mlop.open_run(logger.log_dir)
    samples = sorted(run.media("samples"), key=lambda s: s["sample_index"])  # encoded in parallel
    assert [(s["step"], s["caption"], s["sample_index"], s["type"]) for s in samples] == [
        (5, "tensor", 0, "IMAGE"),
        (5, "array", 1, "IMAGE"),
    ]
    (tone,) = run.media("tone")
    assert (tone["step"], tone["type"], tone["caption"]) == (5, "AUDIO", "sine")
    assert sorted((t["step"], Path(t["path"]).read_text()) for t in run.media("generated")) == [
        (6, "first text"),
        (6, "second text"),
    ]
    (table,) = run.data("preds")
    assert table["step"] == 5 and table["value"]["table"] == [[1, "cat"], [2, "dog"]]
    (clip,) = run.media("clip")
    assert (clip["step"], clip["type"], Path(clip["path"]).suffix) == (5, "VIDEO", ".gif")
    (answers,) = run.data("answers")
    assert answers["type"] == "TABLE" and answers["value"]["table"] == [["2+2?", "4"]]
    (note,) = run.media("notes")
    assert note["type"] == "FILE" and Path(note["path"]).read_text() == "kept with the run"


def test_properties_name_the_run_directory(tmp_path: Path) -> None:
    logger = MlopLogger(project="props", dir=tmp_path, run_id="fixed-id")
    assert (logger.name, logger.version) == ("props", "fixed-id")
    assert logger.save_dir == str(tmp_path)
    assert logger.root_dir == str(tmp_path / ".mlop" / "props")
    assert logger.log_dir == str(tmp_path / ".mlop" / "props" / "fixed-id")
    assert not (tmp_path / ".mlop").exists()  # nothing is made before first use
    assert logger.experiment.dir == Path(logger.log_dir)
    assert MLOPLogger is MlopLogger


def test_bad_arguments_raise_when_the_logger_is_made(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="log_model"):
        MlopLogger(dir=tmp_path, log_model="best")
    with pytest.raises(mlop.ConfigError):
        MlopLogger(dir=tmp_path, not_a_setting=1)


def test_disabled_mode_stores_nothing(
    tmp_path: Path, tiny: Any, data: Callable[..., Any], trainer_for: Callable[..., Any]
) -> None:
    logger = MlopLogger(project="off", dir=tmp_path, mode="disabled", log_model=True)
    assert logger.save_dir is None and logger.log_dir is None
    trainer_for(logger, max_epochs=1).fit(tiny(), data())
    assert mlop.list_runs(tmp_path) == []


def test_a_run_passed_as_op_is_used_and_left_running(
    tmp_path: Path, tiny: Any, data: Callable[..., Any], trainer_for: Callable[..., Any]
) -> None:
    run = mlop.init(project="mine", dir=tmp_path, config={"owner": "me"})
    logger = MlopLogger(op=run)
    assert (logger.version, logger.name, logger.log_dir) == (run.id, "mine", str(run.dir))
    trainer_for(logger, max_epochs=1).fit(tiny(), data())
    assert logger.experiment is run and run.status == "RUNNING"
    run.finish()

    reader = mlop.open_run(run.dir)
    assert reader.status == "COMPLETED" and reader.config["owner"] == "me" and reader.config["lr"] == 0.1
    assert len(_series(reader, "train/loss")) == 4


def test_other_ranks_get_a_no_op_experiment_from_lightning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lightning's own rank (``rank_zero_only.rank``, set by its strategies) says rank 1: no run at all."""
    from lightning_utilities.core.rank_zero import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    logger = MlopLogger(project="ranks", dir=tmp_path, log_model="all")
    experiment = logger.experiment
    assert isinstance(experiment, DummyExperiment)
    experiment.log({"x": 1})
    experiment.anything_at_all(1, key=2)
    logger.log_metrics({"loss": 1.0}, step=0)
    logger.log_hyperparams({"lr": 0.1})
    logger.log_image("img", torch.rand(3, 4, 4))
    logger.after_save_checkpoint(object())
    assert logger.watch(torch.nn.Linear(2, 2)) is None
    logger.finalize("success")
    assert not (tmp_path / ".mlop").exists()


def test_rank_one_from_the_environment_trains_without_a_run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    tiny: Any,
    data: Callable[..., Any],
    trainer_for: Callable[..., Any],
) -> None:
    """A launcher's ``RANK=1`` (simulated in this single process): core hands out a no-op run."""
    monkeypatch.setenv("RANK", "1")
    logger = MlopLogger(project="ranks", dir=tmp_path, log_model=True)
    trainer_for(logger, max_epochs=1).fit(tiny(), data())
    assert not isinstance(logger.experiment, mlop.Run)
    assert mlop.list_runs(tmp_path) == []


def test_shared_mode_other_ranks_attach_and_rank_0_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``shared=True``: rank 1 (simulated in this process) attaches to rank 0's run, which alone records."""
    from lightning_utilities.core.rank_zero import rank_zero_only

    rank0 = MlopLogger(project="shared", dir=tmp_path, run_id="one", shared=True, log_model="all")
    rank0.log_hyperparams({"lr": 0.1})
    rank0.log_metrics({"loss": 1.0}, step=0)
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    rank1 = MlopLogger(project="shared", dir=tmp_path, run_id="one", shared=True, log_model="all")
    # Lightning's convention holds on other ranks; the attachment records this rank's system metrics.
    assert isinstance(rank1.experiment, DummyExperiment)
    assert isinstance(rank1._attached, mlop.Run) and str(rank1._attached.dir) == rank0.log_dir
    rank1.log_metrics({"loss": 99.0}, step=0)
    rank1.log_hyperparams({"lr": 99})
    rank1.log_image("img", torch.rand(3, 4, 4))
    rank1.finalize("success")
    rank0.finalize("success")

    (run,) = mlop.list_runs(tmp_path)
    assert run.status == "COMPLETED" and run.config == {"lr": 0.1}
    assert _series(run, "loss") == [(0, 1.0)] and list(run.media("img")) == []


def test_the_logger_pickles_before_its_run_exists(
    tmp_path: Path, tiny: Any, data: Callable[..., Any], trainer_for: Callable[..., Any]
) -> None:
    logger = MlopLogger(project="pickle", dir=tmp_path, log_model=True)
    copy = pickle.loads(pickle.dumps(logger))  # what ddp_spawn does to reach its workers
    assert copy.version == logger.version and copy.log_dir == logger.log_dir
    trainer_for(copy, max_epochs=1).fit(tiny(), data())
    logger.log_metrics({"after": 1.0}, step=4)  # the original continues the run its copy made
    logger.finalize("success")

    (run,) = mlop.list_runs(tmp_path)
    assert run.id == logger.version and run.status == "COMPLETED"
    assert len(_series(run, "train/loss")) == 4 and _series(run, "after") == [(4, 1.0)]


def test_a_live_run_pickles_and_the_copy_continues_it(tmp_path: Path) -> None:
    logger = MlopLogger(project="pickle", dir=tmp_path, run_id="given", config={"a": 1})
    logger.log_metrics({"loss": 1.0}, step=0)
    copy = pickle.loads(pickle.dumps(logger))
    logger.finalize("success")
    copy.log_metrics({"loss": 0.5}, step=1)
    copy.finalize("success")

    (run,) = mlop.list_runs(tmp_path)
    assert _series(run, "loss") == [(0, 1.0), (1, 0.5)] and run.config == {"a": 1}


def test_pytorch_lightning_namespace(tmp_path: Path) -> None:
    """``pytorch_lightning`` (installed here with ``lightning``) takes the same logger."""
    pl = pytest.importorskip("pytorch_lightning")

    class Legacy(pl.LightningModule):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.save_hyperparameters({"width": 4})
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            loss = self.layer(batch[0]).pow(2).mean()
            self.log("loss", loss)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(16, 4)), batch_size=4)
    logger = MlopLogger(project="legacy", dir=tmp_path, log_model=True)
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=logger,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(Legacy(), loader)

    run = mlop.open_run(logger.log_dir)
    assert run.status == "COMPLETED" and run.config == {"width": 4}
    assert [step for step, _ in _series(run, "loss")] == [0, 1, 2, 3]
    assert len(list(run.media("model"))) == 1


def test_lightning_logs_the_model_graph_once_and_watch_delegates_to_the_run(
    tmp_path: Path, tiny: Any, data: Callable[..., Any], trainer_for: Callable[..., Any]
) -> None:
    logger = MlopLogger(project="graph", dir=tmp_path)
    model = tiny()
    assert logger.watch(model, log="all", log_freq=1, log_graph=False) is not None
    trainer = trainer_for(logger, max_epochs=1)
    trainer.fit(model, data())  # Lightning calls log_graph(model) at the start of each stage
    trainer.test(model, data(batches=1))

    graph = mlop.open_run(logger.log_dir).graph
    assert graph is not None and graph["format"] == "torch"
    assert graph["nodes"]["."]["type"] == "TinyModule"
    assert graph["nodes"]["layer"]["params"] == {"weight": [1, 4], "bias": [1]}
    histograms = {(d["key"], d["step"]) for d in mlop.open_run(logger.log_dir).data()}
    assert {key for key, _ in histograms} >= {"grad/layer.weight", "param/layer.weight"}
    assert {step for _, step in histograms} <= set(range(4))  # at the training steps of the one epoch
