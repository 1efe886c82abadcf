"""Tiny Lightning models and trainers, shared by the tests of mlop-lightning (one Lightning import)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

# Lightning 2.6 on torch 2.13 and tiny CPU loaders: warnings about this set-up, not about the logger.
LIGHTNING_WARNINGS = (
    "ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated:FutureWarning",
    "ignore:.*does not have many workers:UserWarning",
    "ignore:The number of training batches .* is smaller than the logging interval:UserWarning",
    "ignore:.*`srun` command is available:UserWarning",
    "ignore:Checkpoint directory .* exists and is not empty:UserWarning",
    "ignore:You defined a `validation_step` but have no `val_dataloader`:UserWarning",
)


HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Filter the warnings of :data:`LIGHTNING_WARNINGS` in this folder's tests only."""
    for item in items:
        if item.path.is_relative_to(HERE):
            for spec in LIGHTNING_WARNINGS:
                item.add_marker(pytest.mark.filterwarnings(spec))


class TinyModule(LightningModule):
    """A linear regression on 4 features, logging train, validation and test losses."""

    def __init__(self, lr: float = 0.1, optimizer: dict[str, Any] | None = None, fail_at: int = -1) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)  # type: ignore[no-any-return]

    def _loss(self, batch: Any) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.global_step == self.hparams.fail_at:
            raise RuntimeError(f"boom at step {self.global_step}")
        loss = self._loss(batch)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val/loss", self._loss(batch))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.log("test/loss", self._loss(batch))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def loader(batches: int = 4, batch_size: int = 8, seed: int = 0) -> DataLoader[Any]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batches * batch_size, 4, generator=generator)
    y = x.sum(dim=1, keepdim=True)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size)


def make_trainer(logger: Any, root: Path, **kwargs: Any) -> Trainer:
    """A CPU trainer that logs every step, without progress bar or model summary."""
    options: dict[str, Any] = {
        "max_epochs": 2,
        "accelerator": "cpu",
        "devices": 1,
        "logger": logger,
        "log_every_n_steps": 1,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": str(root),
        **kwargs,
    }
    return Trainer(**options)


@pytest.fixture
def tiny() -> type[TinyModule]:
    """The tiny LightningModule class."""
    return TinyModule


@pytest.fixture
def data() -> Callable[..., DataLoader[Any]]:
    """``data(batches=4, batch_size=8, seed=0)``: a loader of a linear problem."""
    return loader


@pytest.fixture
def trainer_for(tmp_path: Path) -> Callable[..., Trainer]:
    """``trainer_for(logger, **trainer_kwargs)``: a CPU trainer rooted in the test's tmp_path."""

    def make(logger: Any, **kwargs: Any) -> Trainer:
        return make_trainer(logger, tmp_path, **kwargs)

    return make
