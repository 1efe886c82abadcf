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
    import sys

    import torch
    from lightning.pytorch import LightningModule, Trainer
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


    if __name__ == "__main__":
        out, strategy = sys.argv[1], sys.argv[2]
        x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
        data = DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=8)
        logger = MlopLogger(project="ddp", dir=out, log_model=True, disable_system_metrics=True)
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
        )
        trainer.fit(Tiny(), data)
        if trainer.is_global_zero:  # in ddp_spawn, the main process: its trainer did not train
            print("VERSION", logger.version)
    """
)


@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_two_cpu_processes_make_one_run(tmp_path: Path, strategy: str) -> None:
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path), strategy],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    words = out.stdout.split()
    version = words[words.index("VERSION") + 1]
    global_step = 8  # 64 samples, 2 ranks, batches of 8, 2 epochs

    (run,) = mlop.list_runs(tmp_path)
    assert run.id == version and run.status == "COMPLETED" and run.config == {"lr": 0.1}
    assert run.meta["rank"]["rank"] == 0
    losses = list(run.metrics("train/loss"))
    assert [m["step"] for m in losses] == list(range(global_step))  # once per step: one rank logs
    assert {m["value"] for m in run.metrics("rank")} == {0}
    (checkpoint,) = run.media("model")
    assert checkpoint["metadata"]["step"] == global_step
