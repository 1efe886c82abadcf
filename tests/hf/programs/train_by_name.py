"""Train the tiny BERT with ``report_to="mlop"`` and nothing else: no import of mlop or mlop_hf.

Run by the tests as ``python train_by_name.py OUTPUT_DIR`` and under ``torchrun --nproc-per-node=2``; the
run lands under the working directory's ``.mlop``. Exits 3 if importing transformers pulled in mlop's
Trainer callback before a Trainer asked for it.
"""

from __future__ import annotations

import sys
import time

import torch
import transformers  # noqa: F401  # the package alone must not load the callback

if "mlop_hf._callback" in sys.modules or "mlop" in sys.modules:
    sys.exit(3)

from hf_tiny import make_trainer  # after the check above, on purpose

trainer = make_trainer(
    output_dir=sys.argv[1],
    run_name="by-name",
    eval_strategy="steps",
    eval_steps=3,
    max_steps=6,
    hub_token="hf_do_not_store_me",
    ddp_find_unused_parameters=False,
)
trainer.train()

# The Trainer leaves torch's process group up, and torch asks every script to take it down before exit:
# without it a gloo rank can abort in its C++ teardown ("terminate called without an active exception", 1
# run in 17 here). The group must not be taken down while gloo's threads still free the Trainer's last
# collectives (they need the interpreter lock, the teardown holds it: a deadlock, seen 1 run in 3), so the
# ranks first meet at a barrier and give those threads a moment.
if torch.distributed.is_initialized():
    torch.distributed.barrier()
    time.sleep(0.5)
    torch.distributed.destroy_process_group()
