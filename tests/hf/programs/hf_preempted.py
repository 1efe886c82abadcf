"""A transformers Trainer under torchrun that logs to an mlop server, saves every step and can be killed.

``python -m torch.distributed.run --nproc-per-node=2 hf_preempted.py OUTPUT_DIR MLOP_DIR RESUME HOST KEY``:
``RESUME`` is a checkpoint folder or ``none``. Process zero prints ``STEP <n>`` as each step begins.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from hf_tiny import end_process_group, make_trainer
from transformers import TrainerCallback

from mlop_hf import MlopCallback

MAX_STEPS = 12


class Slow(TrainerCallback):  # type: ignore[misc]
    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            print("STEP", state.global_step, flush=True)
        time.sleep(0.3)


def main() -> None:
    output_dir, mlop_dir, resume, host, key = sys.argv[1:6]
    callback = MlopCallback(dir=mlop_dir, host=host, api_key=key, disable_system_metrics=True)
    trainer = make_trainer(
        output_dir=output_dir,
        report_to="none",
        callbacks=[callback, Slow()],
        max_steps=MAX_STEPS,
        logging_steps=1,
        save_strategy="steps",
        save_steps=1,
        run_name="preempted",
        project="hf-preempted",
    )
    trainer.train(resume_from_checkpoint=None if resume == "none" else resume)
    if trainer.is_world_process_zero():
        print("DONE", callback.run.id, flush=True)
    end_process_group()


if __name__ == "__main__":
    main()
