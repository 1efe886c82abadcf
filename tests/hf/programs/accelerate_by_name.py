"""An accelerate loop with ``log_with="mlop"`` and nothing imported from mlop; run under torchrun.

Each process logs its own rank; only the main process may reach the run. Run as
``torchrun --standalone --nproc-per-node=2 accelerate_by_name.py``; the run lands under ``./.mlop``.
"""

from __future__ import annotations

from accelerate import Accelerator

accelerator = Accelerator(log_with="mlop", cpu=True)
accelerator.init_trackers("accel-ddp", config={"world_size": accelerator.num_processes})
for step in range(3):
    accelerator.log({"rank": accelerator.process_index, "loss": 1.0 / (step + 1)}, step=step)
accelerator.wait_for_everyone()
accelerator.end_training()
