"""A Lightning run tracked by mlop: a tiny classifier of synthetic 28x28 "digits", on the CPU, in seconds.

Each of the 10 classes is a bright bar at its own place in a noisy image, so the model learns quickly.
With no server and no key configured, mlop runs offline: the run, its checkpoints and the sample images
land in ./.mlop/lightning-demo/<run id>/ (read it back with ``mlop.open_run`` or the ``mlop`` CLI). With
``MLOP_API_KEY`` and ``MLOP_HOST`` set, the same script sends everything to the server.

Run: .venv/bin/python examples/lightning_mnist_like.py
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import mlop
from mlop_lightning import MlopLogger


def synthetic_digits(count: int, seed: int) -> TensorDataset:
    """Images (count, 1, 28, 28) with a bar whose row marks the class, plus noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (count,), generator=generator)
    images = 0.3 * torch.rand(count, 1, 28, 28, generator=generator)
    for index, label in enumerate(labels.tolist()):
        row = 2 + 2 * label
        images[index, 0, row : row + 2, 4:24] += 0.7
    return TensorDataset(images.clamp(0, 1), labels)


class DigitClassifier(LightningModule):
    def __init__(self, lr: float = 0.01, hidden: int = 32, optimizer: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()  # reach the run's config through the logger
        self.net = nn.Sequential(
            nn.Conv2d(1, 4, kernel_size=3, stride=2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(4 * 13 * 13, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]

    def _step(self, batch: Any, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = nn.functional.cross_entropy(logits, y)
        accuracy = (logits.argmax(dim=1) == y).float().mean()
        self.log(f"{stage}/loss", loss, prog_bar=stage == "train")
        self.log(f"{stage}/accuracy", accuracy)
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=2048, help="training images")
    parser.add_argument("--dir", default=None, help="where .mlop/ goes (default: the working directory)")
    args = parser.parse_args()
    torch.manual_seed(0)

    train = DataLoader(synthetic_digits(args.samples, seed=0), batch_size=64, shuffle=True)
    val = DataLoader(synthetic_digits(256, seed=1), batch_size=128)
    test = DataLoader(synthetic_digits(256, seed=2), batch_size=128)

    logger = MlopLogger(project="lightning-demo", dir=args.dir, tags=["example"], log_model=True)
    model = DigitClassifier(optimizer={"name": "adam", "betas": [0.9, 0.999]})
    logger.watch(model, log="all", log_freq=20)
    trainer = Trainer(
        max_epochs=args.epochs,
        accelerator="cpu",
        logger=logger,
        log_every_n_steps=5,
        callbacks=[ModelCheckpoint(monitor="val/accuracy", mode="max", save_top_k=1)],
        enable_model_summary=False,
    )
    trainer.fit(model, train, val)

    samples, labels = next(iter(val))
    predictions = model(samples[:8]).argmax(dim=1)
    pairs = zip(labels[:8].tolist(), predictions.tolist(), strict=True)
    captions = [f"label {y}, predicted {p}" for y, p in pairs]
    logger.log_image("val/samples", list(samples[:8]), caption=captions)
    trainer.test(model, test)

    run = mlop.open_run(logger.log_dir)
    accuracy = [m["value"] for m in run.metrics("test/accuracy")]
    checkpoints = [m["metadata"]["path"] for m in run.media("model")]
    print(f"run {run.id}: {run.status}, test accuracy {accuracy[-1]:.3f}, in {logger.log_dir}")
    print(f"checkpoint logged: {checkpoints}")


if __name__ == "__main__":
    main()
