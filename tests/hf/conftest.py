"""Tiny transformers models and Trainers for the tests of mlop-hf: built from configs, never downloaded.

transformers and accelerate are imported inside the fixtures, not here, so that the tests which check
what a process imports do not pay for them; the first test that needs them imports them once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
PROGRAMS = HERE / "programs"
sys.path.insert(0, str(PROGRAMS))  # the programs double as the tests' model and data helpers

# transformers 5.24 and accelerate 1.15 on torch 2.13 with tiny CPU models: warnings about this set-up,
# not about mlop.
HF_WARNINGS = (
    "ignore:.*pin_memory.*:UserWarning",
    "ignore:.*TensorFlow.*:UserWarning",
    "ignore:The `use_cpu` argument is deprecated:FutureWarning",
    "ignore:.*torch.distributed.*:UserWarning",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Filter the warnings of :data:`HF_WARNINGS` in this folder's tests only."""
    for item in items:
        if item.path.is_relative_to(HERE):
            for spec in HF_WARNINGS:
                item.add_marker(pytest.mark.filterwarnings(spec))


@pytest.fixture
def make_trainer(tmp_path: Path) -> Callable[..., Any]:
    """Build a ``Trainer`` on a tiny BERT classifier; keywords go to ``TrainingArguments``.

    ``callbacks=[...]`` and ``model=...`` go to the Trainer instead.
    """
    from hf_tiny import make_trainer as build

    def make(**kwargs: Any) -> Any:
        kwargs.setdefault("output_dir", str(tmp_path / "out"))
        return build(**kwargs)

    return make
