"""A tiny BERT classifier, its made-up data and a Trainer for it: what the mlop-hf tests train.

Shared by the in-process tests (through ``tests/hf/conftest.py``) and the programs of this folder that
run in their own processes. It imports neither mlop nor mlop_hf: ``report_to="mlop"`` must resolve by name.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments


class ParityData(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """Sequences of 8 token ids labelled by whether token 5 occurs an odd number of times."""

    def __init__(self, size: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 16, (size, 8), generator=generator)
        self.labels = ((self.ids == 5).sum(dim=1) % 2).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index], "labels": self.labels[index]}


def tiny_model() -> Any:
    """A 2-layer BERT classifier with 16-wide layers, built from a config (nothing downloaded)."""
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=16,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


def make_trainer(model: Any = None, callbacks: list[Any] | None = None, **kwargs: Any) -> Any:
    """A Trainer of :func:`tiny_model` on 64 training and 16 evaluation samples; keywords go to the args."""
    defaults: dict[str, Any] = {
        "report_to": "mlop",
        "max_steps": 6,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 8,
        "learning_rate": 1e-3,
        "logging_steps": 2,
        "save_strategy": "no",
        "disable_tqdm": True,
        "dataloader_pin_memory": False,
        "seed": 0,
        "use_cpu": True,  # also what makes torchrun on CPUs a DDP job (gloo)
    }
    defaults.update(kwargs)
    return Trainer(
        model=model if model is not None else tiny_model(),
        args=TrainingArguments(**defaults),
        train_dataset=ParityData(64, seed=0),
        eval_dataset=ParityData(16, seed=1),
        callbacks=callbacks,
    )


def end_process_group() -> None:
    """Take down torch's process group, which the Trainer leaves up, as torch asks every script to do.

    Without it a gloo rank can abort in its C++ teardown at exit ("terminate called without an active
    exception", 1 run in 17 here). Taken down while gloo's threads still free the Trainer's last collectives
    (they need the interpreter lock, which the teardown holds), it deadlocks (1 run in 3 here); so the ranks
    first meet at a barrier and give those threads a moment (50 of 50 runs ended cleanly).
    """
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        time.sleep(0.5)
        torch.distributed.destroy_process_group()
