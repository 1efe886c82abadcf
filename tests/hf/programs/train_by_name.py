"""Train the tiny BERT with ``report_to="mlop"`` and nothing else: no import of mlop or mlop_hf.

Run by the tests as ``python train_by_name.py OUTPUT_DIR`` and under ``torchrun --nproc-per-node=2``; the
run lands under the working directory's ``.mlop``. Exits 3 if importing transformers pulled in mlop's
Trainer callback before a Trainer asked for it.
"""

from __future__ import annotations

import sys

import transformers  # noqa: F401  # the package alone must not load the callback

if "mlop_hf._callback" in sys.modules or "mlop" in sys.modules:
    sys.exit(3)

from hf_tiny import end_process_group, make_trainer  # after the check above, on purpose

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

end_process_group()
