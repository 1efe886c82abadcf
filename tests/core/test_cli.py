"""The mlop command line, run as a real subprocess."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import mlop


def _mlop(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}
    return subprocess.run(
        [sys.executable, "-m", "mlop.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _make_run(tmp_path: Path) -> mlop.Run:
    run = mlop.init(dir=tmp_path, project="cli", name="exported")
    run.log({"loss": 0.5, "acc": 1.0})
    run.log({"loss": float("nan"), "note": "hello"})
    run.finish()
    return run


def test_export_jsonl_and_csv(tmp_path: Path) -> None:
    run = _make_run(tmp_path)
    out = _mlop("export", str(run.dir), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["key"], r["step"], r["value"]) for r in rows] == [
        ("loss", 0, 0.5),
        ("acc", 0, 1.0),
        ("loss", 1, "NaN"),
        ("note", 1, "hello"),
    ]
    assert rows[3]["type"] == "string-series"
    only = _mlop("export", str(run.dir), "--key", "loss", "--format", "csv", cwd=tmp_path)
    table = list(csv.DictReader(io.StringIO(only.stdout)))
    assert [(r["key"], r["step"], r["value"]) for r in table] == [("loss", "0", "0.5"), ("loss", "1", "NaN")]


def test_export_of_a_missing_run_fails_clearly(tmp_path: Path) -> None:
    out = _mlop("export", str(tmp_path / "nope"), cwd=tmp_path)
    assert out.returncode == 1
    assert "no mlop run store" in out.stderr


def test_runs_lists_project_name_status_and_steps(tmp_path: Path) -> None:
    run = _make_run(tmp_path)
    out = _mlop("runs", "--dir", str(tmp_path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    header, line = out.stdout.splitlines()
    assert header.split()[:5] == ["PROJECT", "NAME", "ID", "STATUS", "STEPS"]
    assert line.split()[:5] == ["cli", "exported", run.id, "COMPLETED", "2"]
    (tmp_path / "empty").mkdir()
    empty = _mlop("runs", cwd=tmp_path / "empty")
    assert "no mlop runs" in empty.stdout


def test_version_names_every_package_and_its_commit(tmp_path: Path) -> None:
    out = _mlop("--version", cwd=tmp_path)
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    names = [line.split()[0] for line in lines]
    assert names == sorted(
        ["mlop-compat", "mlop-core", "mlop-hf", "mlop-lightning", "mlop-server", "mlop-torch"]
    )
    assert all(f" {mlop.__version__} (commit " in line for line in lines)
    head = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True
    )
    if head.returncode == 0:  # an editable install from a git checkout knows its commit
        assert head.stdout.strip() in lines[0]
