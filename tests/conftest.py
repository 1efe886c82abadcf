"""Shared fixtures: a clean environment and a fresh plugin manager for every test."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

import mlop
from mlop._plugins import reset_plugin_manager

# CI runs the fuzz tests' short budgets on fixed examples, so that a landing never hangs on a chance draw;
# local runs (and `make fuzz`) draw new examples every time, which is where new findings come from.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI") == "true":
    hypothesis_settings.load_profile("ci")

# A suite started in the background by a non-interactive shell (`make test &`, a CI step runner) inherits
# SIGINT ignored, and so would every process it starts: the tests that stop a run, `mlop ui` or `mlop sync`
# with Ctrl-C would wait for a process that never hears it. Handled here, it is the default again after exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

_LEAKY = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No MLOP_* or rank variables leak in; runs without a dir land in the test's tmp_path."""
    for name in list(os.environ):
        if name.startswith("MLOP_") or name in _LEAKY:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    reset_plugin_manager()
    yield
    for op in list(mlop.ops):
        op.finish()
    reset_plugin_manager()
