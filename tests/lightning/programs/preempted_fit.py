"""A Lightning fit under ``torchrun --nproc-per-node=2`` (CPU, gloo) that logs online and can be killed.

``python -m torch.distributed.run --nproc-per-node=2 preempted_fit.py SAVE_DIR CKPT_DIR CKPT_PATH HOST KEY``:
a checkpoint (``last.ckpt``) after every step in ``CKPT_DIR``; ``CKPT_PATH`` (or ``none``) to resume from.
Rank 0 prints ``STEP <n>`` as each step starts, so a test knows when to stop it.
"""

from __future__ import annotations

import sys
import time

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from mlop_lightning import MlopLogger

MAX_STEPS = 12


class Tiny(LightningModule):
    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.global_rank == 0:
            print("STEP", self.global_step, flush=True)
        time.sleep(0.3)  # slow enough to be stopped in the middle
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def main() -> None:
    save_dir, ckpt_dir, ckpt_path, host, key = sys.argv[1:6]
    x = torch.randn(256, 4, generator=torch.Generator().manual_seed(0))
    data = DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=8)
    logger = MlopLogger(
        save_dir=save_dir, project="preempted", host=host, api_key=key, disable_system_metrics=True
    )
    trainer = Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_steps=MAX_STEPS,
        logger=logger,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=save_dir,
        callbacks=[ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=1, save_last=True, save_top_k=0)],
    )
    trainer.fit(Tiny(), data, ckpt_path=None if ckpt_path == "none" else ckpt_path)
    if trainer.global_rank == 0:
        print("DONE", logger.version, flush=True)


if __name__ == "__main__":
    main()
