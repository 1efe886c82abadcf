"""The README's demo: examples/quickstart.py trains for real and leaves a complete offline run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import mlop

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_trains_and_leaves_a_complete_offline_run(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (run,) = mlop.list_runs(tmp_path)
    assert f"stored in {run.dir}" in done.stdout
    assert (run.project, run.status) == ("quickstart", "COMPLETED")
    assert run.config["epochs"] == 30 and run.tags == ["demo", "mlp"]
    losses = [row["value"] for row in run.metrics("train/loss")]
    assert len(losses) == 840
    val = [row["value"] for row in run.metrics("val/loss")]
    assert len(val) == 30 and val[-1] < val[0] / 2 and val[-1] < 0.1  # it really learned the curve
    summaries = list(run.data("val/summary"))
    assert summaries[-1]["value"].startswith("epoch 29: val loss")
