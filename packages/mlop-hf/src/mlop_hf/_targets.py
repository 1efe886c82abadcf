"""The two framework modules that mlop-hf patches, named once for the import hook and the patching code."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = ["ACCELERATE_MODULE", "TRANSFORMERS_MODULE"]

#: Holds ``INTEGRATION_TO_CALLBACK``, which ``TrainingArguments(report_to=...)`` resolves names with.
TRANSFORMERS_MODULE: Final = "transformers.integrations.integration_utils"
#: Holds accelerate's tracker registry, which ``Accelerator(log_with=...)`` resolves names with.
ACCELERATE_MODULE: Final = "accelerate.tracking"
