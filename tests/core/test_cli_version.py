"""``mlop --version`` names the commit in a built wheel, where no checkout is at hand (the build hook of
mlop-core writes it into the wheel)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import mlop

CORE = Path(__file__).resolve().parents[2] / "packages" / "mlop-core"


def _head() -> str | None:
    out = subprocess.run(
        ["git", "-C", str(CORE), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True
    )
    return out.stdout.strip() if out.returncode == 0 else None


@pytest.mark.skipif(_head() is None, reason="not a git checkout: there is no commit to build from")
@pytest.mark.skipif(importlib.util.find_spec("hatchling") is None, reason="hatchling is not installed")
def test_a_built_wheel_names_its_commit(tmp_path: Path) -> None:
    head = _head()
    assert head is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOP_", "PIP_"))}
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(CORE),
         "-w", str(tmp_path / "dist")],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("mlop_core-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        info = archive.read("mlop/_build_info.py").decode()
    assert f"COMMIT = '{head}" in info

    # installed where no checkout is (no direct_url.json pointing at one): the version comes from the file
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    run = subprocess.run(
        [sys.executable, "-m", "mlop", "--version"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**env, "PYTHONPATH": str(target)},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    line = next(line for line in run.stdout.splitlines() if line.startswith("mlop-core "))
    assert line.startswith(f"mlop-core {mlop.__version__} (commit {head}")
    where = subprocess.run(
        [sys.executable, "-c", "import mlop; print(mlop.__file__)"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env={**env, "PYTHONPATH": str(target)},
    )  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(target)  # the wheel's copy answered, not the checkout
