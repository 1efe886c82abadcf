"""A transformers Trainer that reports to mlop by name: ``report_to="mlop"``, nothing imported from mlop.

Trains a tiny BERT built from a config (no download) on a made-up task for a few steps on the CPU, evaluates
it, then reads the run back (from ./.mlop) and prints what it holds. Runs offline in seconds (plus the
import of transformers)::

    python examples/hf_trainer_tiny.py
"""

from __future__ import annotations

import tempfile

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments


class ParityData(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """Sequences of token ids labelled by whether token 5 occurs an odd number of times."""

    def __init__(self, size: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 16, (size, 8), generator=generator)
        self.labels = ((self.ids == 5).sum(dim=1) % 2).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index], "labels": self.labels[index]}


def main() -> None:
    config = BertConfig(
        vocab_size=16,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            report_to="mlop",  # resolved by name: mlop-hf registered it when transformers was imported
            run_name="tiny-bert",
            learning_rate=1e-3,
            max_steps=12,
            per_device_train_batch_size=8,
            logging_steps=2,
            eval_strategy="steps",
            eval_steps=6,
            save_strategy="no",
            use_cpu=True,
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=BertForSequenceClassification(config),
            args=args,
            train_dataset=ParityData(96, seed=0),
            eval_dataset=ParityData(32, seed=1),
        )
        trainer.train()

        import mlop

        mlop.finish()  # the Trainer's run stays open for evaluate()/predict() until the process ends
        run = mlop.list_runs()[-1]
        losses = [(m["step"], round(m["value"], 4)) for m in run.metrics("train/loss")]
        evals = [(m["step"], round(m["value"], 4)) for m in run.metrics("eval/loss")]
        print(f"run {run.name} ({run.id}) in project {run.project}: {run.status}")
        print(f"train/loss at steps: {losses}")
        print(f"eval/loss at steps: {evals}")
        print(f"config: learning_rate={run.config['learning_rate']}, hidden_size={run.config['hidden_size']}")
        print(f"summary: {run.summary}")
        print(f"stored in {run.dir}")


if __name__ == "__main__":
    main()
