"""The example a user copies (examples/lightning_mnist_like.py) runs and leaves a complete run behind."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

import mlop

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "lightning_mnist_like.py"


def test_lightning_mnist_like_runs_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = importlib.util.spec_from_file_location("lightning_mnist_like", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    arguments = ["--epochs", "2", "--samples", "512", "--dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), *arguments])
    example.main()

    (run,) = mlop.list_runs(tmp_path)
    assert run.status == "COMPLETED" and run.tags == ["example"]
    assert run.config["optimizer"] == {"name": "adam", "betas": [0.9, 0.999]}
    assert [m["value"] for m in run.metrics("test/accuracy")][-1] > 0.5
    assert len(list(run.media("val/samples"))) == 8 and len(list(run.media("model"))) == 1
    assert run.graph is not None
    assert f"run {run.id}: COMPLETED" in capsys.readouterr().out
