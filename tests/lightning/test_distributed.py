"""Real 2-process data-parallel training on CPU (gloo): one run, logged by global rank 0 only, no hang.

Each test runs a training script as its own process, because ``ddp`` relaunches the script for rank 1 and
``ddp_spawn`` pickles the logger into two fresh worker processes.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import mlop

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import os
    import sys

    import torch
    from lightning.pytorch import Callback, LightningModule, Trainer
    from lightning.pytorch.loggers.logger import DummyExperiment
    from torch.utils.data import DataLoader, TensorDataset

    from mlop_lightning import MlopLogger


    class Tiny(LightningModule):
        def __init__(self, lr=0.1):
            super().__init__()
            self.save_hyperparameters()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.layer(x), y)
            self.log("train/loss", loss)
            self.log("rank", float(self.global_rank))
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


    class Contract(Callback):
        # What Lightning's own logger tests demand of every logger in a 2-process job.

        def setup(self, trainer, pl_module, stage):
            if trainer.global_rank == 0:  # the experiment exists once Lightning has set up
                assert trainer.logger._run is not None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            experiment = trainer.logger.experiment
            if trainer.is_global_zero:
                assert not isinstance(experiment, DummyExperiment)
            else:
                assert isinstance(experiment, DummyExperiment)
                assert pl_module.logger.experiment.anything(key="value") is None


    if __name__ == "__main__":
        before = dict(os.environ)
        out, strategy, shared = sys.argv[1], sys.argv[2], sys.argv[3] == "shared"
        x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
        data = DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=8)
        logger = MlopLogger(
            project="ddp", dir=out, log_model=True, shared=shared, x_sys_sampling_interval=0.2,
            disable_system_metrics=not shared,
        )
        trainer = Trainer(
            accelerator="cpu",
            devices=2,
            strategy=strategy,
            max_epochs=2,
            logger=logger,
            log_every_n_steps=1,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=out,
            callbacks=[Contract()],
        )
        trainer.fit(Tiny(), data)
        leaked = {k: v for k, v in os.environ.items() if k.startswith("MLOP") and before.get(k) != v}
        assert not leaked, leaked
        # In ddp_spawn this is the main process, whose trainer did not train; in ddp, each rank prints.
        print("VERSION", logger.version)
    """
)


# Shared mode (every rank attached) is tested in one process in test_logger.py: each case here costs a
# Lightning import per process.
@pytest.mark.parametrize(("strategy", "shared"), [("ddp", False), ("ddp_spawn", False)])
def test_two_cpu_processes_make_one_run(tmp_path: Path, strategy: str, shared: bool) -> None:
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path), strategy, "shared" if shared else "rank0"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,  # measured 87-104 s on 2 cores at load average 10; the CPU time is about 20 s
    )
    assert out.returncode == 0, out.stderr[-4000:]
    words = out.stdout.split()
    versions = {words[i + 1] for i, word in enumerate(words) if word == "VERSION"}
    assert len(versions) == 1  # every rank's logger names the same run (rank 0's, by broadcast)
    (version,) = versions
    global_step = 8  # 64 samples, 2 ranks, batches of 8, 2 epochs

    (run,) = mlop.list_runs(tmp_path)
    assert run.id == version and run.status == "COMPLETED" and run.config == {"lr": 0.1}
    assert run.meta["rank"]["rank"] == 0
    losses = list(run.metrics("train/loss"))
    assert [m["step"] for m in losses] == list(range(global_step))  # once per step: one rank logs
    assert {m["value"] for m in run.metrics("rank")} == {0}
    (checkpoint,) = run.media("model")
    assert checkpoint["metadata"]["step"] == global_step
    system_keys = {m["key"] for m in run.metrics() if m["key"].startswith("sys/")}
    if shared:  # each rank attached to the run and sampled its own system metrics
        assert any(key.startswith("sys/rank1/") for key in system_keys), sorted(system_keys)
    else:
        assert system_keys == set()
