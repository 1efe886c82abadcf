"""What MlopLogger costs a Lightning epoch, beside Lightning's own CSVLogger (and no logger at all).

A small MLP trains on random data on the CPU, one epoch per Trainer, logging two metrics at every step
(``log_every_n_steps=1``: the worst case; Lightning's default logs every 50th). Each repeat runs the
three set-ups in a rotating order, and the epoch is timed from ``on_train_epoch_start`` to
``on_train_epoch_end``, so imports, run creation and ``finish`` are not counted: in wall time, and in the
CPU time of the whole process (every thread: mlop's writer and system monitor included). On a shared
machine those ratios move by ±10 % from one run to the next, so the script also adds up the time spent
inside each logger's own calls on the training thread, as a share of the epoch: the logger's cost
itself, which the noise does not drown. torch uses one thread. The figures are medians, plus the median
of each repeat's own MlopLogger/CSVLogger ratio and the ratio of the fastest epochs.

Run: .venv/bin/python bench/lightning_overhead.py [--repeats 7] [--batches 400]
Prints one JSON document; bench/README.md holds the latest figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mlop_lightning import MlopLogger


class Small(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self.net(x)
        loss = nn.functional.cross_entropy(logits, y)
        self.log("train/loss", loss)
        self.log("train/accuracy", (logits.argmax(dim=1) == y).float().mean())
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class TimedMlopLogger(MlopLogger):
    """MlopLogger that adds up the time its ``log_metrics`` takes on the training thread."""

    spent = 0.0

    def log_metrics(self, metrics: Any, step: int | None = None) -> None:
        start = time.perf_counter()
        super().log_metrics(metrics, step)
        self.spent += time.perf_counter() - start


class TimedCSVLogger(CSVLogger):
    """CSVLogger that adds up the time its ``log_metrics`` and ``save`` take on the training thread."""

    spent = 0.0

    def log_metrics(self, metrics: Any, step: int | None = None) -> None:
        start = time.perf_counter()
        super().log_metrics(metrics, step)
        self.spent += time.perf_counter() - start

    def save(self) -> None:
        start = time.perf_counter()
        super().save()
        self.spent += time.perf_counter() - start


class EpochTimer(Callback):
    def __init__(self) -> None:
        self.seconds = self.cpu_seconds = 0.0
        self._start = self._cpu_start = 0.0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start, self._cpu_start = time.perf_counter(), time.process_time()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.seconds = time.perf_counter() - self._start
        self.cpu_seconds = time.process_time() - self._cpu_start


def epoch_seconds(kind: str, data: DataLoader[Any], root: Path) -> tuple[float, float, float]:
    """Wall and process CPU seconds of one epoch, and the seconds spent inside the logger's calls."""
    logger: Any
    if kind == "mlop":
        logger = TimedMlopLogger(project="bench", dir=root / "mlop")
    elif kind == "csv":
        logger = TimedCSVLogger(root / "csv")
    else:
        logger = False
    timer = EpochTimer()
    trainer = Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=logger,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=[timer],
        default_root_dir=root,
    )
    torch.manual_seed(0)
    trainer.fit(Small(), data)
    return timer.seconds, timer.cpu_seconds, getattr(logger, "spent", 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description="MlopLogger against CSVLogger, per Lightning epoch")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batches", type=int, default=400)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")  # Lightning's advice about workers and the like
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.batches * 32, 32, generator=generator)
    y = torch.randint(0, 10, (args.batches * 32,), generator=generator)
    data = DataLoader(TensorDataset(x, y), batch_size=32)
    kinds = ["none", "csv", "mlop"]
    times: dict[str, list[float]] = {kind: [] for kind in kinds}
    cpu: dict[str, list[float]] = {kind: [] for kind in kinds}
    inside: dict[str, list[float]] = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        epoch_seconds("mlop", data, Path(tmp) / "warmup")
        for repeat in range(args.repeats):
            order = kinds[repeat % 3 :] + kinds[: repeat % 3]
            for kind in order:
                wall, used, spent = epoch_seconds(kind, data, Path(tmp) / f"{kind}-{repeat}")
                times[kind].append(wall)
                cpu[kind].append(used)
                inside[kind].append(spent / wall)
    median = {kind: statistics.median(values) for kind, values in times.items()}
    median_cpu = {kind: statistics.median(values) for kind, values in cpu.items()}
    best = {kind: min(values) for kind, values in times.items()}
    # The machine's speed drifts between slow and fast stretches that outlast an epoch: the three epochs of
    # one repeat run back to back, so their ratio is steadier than a ratio of medians over all repeats.
    paired = statistics.median(m / c for m, c in zip(times["mlop"], times["csv"], strict=True))
    print(
        json.dumps(
            {
                "batches_per_epoch": args.batches,
                "repeats": args.repeats,
                "median_epoch_s": median,
                "per_step_ms": {kind: 1000 * m / args.batches for kind, m in median.items()},
                "median_epoch_cpu_s": median_cpu,
                "logger_calls_share_of_epoch": {
                    kind: statistics.median(inside[kind]) for kind in ("csv", "mlop")
                },
                "mlop_over_csv": median["mlop"] / median["csv"],
                "mlop_over_csv_cpu": median_cpu["mlop"] / median_cpu["csv"],
                "csv_over_none": median["csv"] / median["none"],
                "csv_over_none_cpu": median_cpu["csv"] / median_cpu["none"],
                "mlop_over_csv_same_repeat": paired,
                "best_epoch_s": best,
                "mlop_over_csv_best": best["mlop"] / best["csv"],
                "all_epoch_s": times,
                "all_epoch_cpu_s": cpu,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
