"""The public surface: what each package exports, and that every hook is documented and tested."""

from __future__ import annotations
import __future__

import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mlop
from mlop import hookspecs

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["mlop", "mlop_torch", "mlop_lightning", "mlop_hf", "mlop_server"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_lists_exactly_the_public_names(name: str) -> None:
    module = importlib.import_module(name)
    exported = set(module.__all__)
    for exported_name in module.__all__:
        getattr(module, exported_name)  # every name resolves; lazy exports (PEP 562) land in vars()
    public = {
        n
        for n, v in vars(module).items()
        if not n.startswith("_") and not inspect.ismodule(v) and not isinstance(v, __future__._Feature)
    }
    public |= {"__version__"}
    assert exported == public
    assert list(module.__all__) == sorted(module.__all__)
    assert isinstance(module.__version__, str)


def _hooks() -> list[str]:
    return sorted(n for n in dir(hookspecs) if n.startswith("mlop_"))


@pytest.mark.parametrize("hook", _hooks())
def test_every_hook_is_documented_with_its_exact_signature(hook: str) -> None:
    doc = (ROOT / "docs" / "plugins.md").read_text()
    signature = str(inspect.signature(getattr(hookspecs, hook))).replace("'", "")
    assert f"### `{hook}{signature}`" in doc


@pytest.mark.parametrize("hook", _hooks())
def test_every_hook_has_a_test(hook: str) -> None:
    tests = "".join(
        p.read_text() for p in (ROOT / "tests").rglob("test_*.py") if p.name != Path(__file__).name
    )
    hook_short = hook.removeprefix("mlop_")
    assert re.search(rf"\b({hook}|_hooks\.{hook_short})\b", tests), f"no test exercises {hook}"


def test_import_mlop_is_light() -> None:
    code = "import sys, mlop; print(sorted({'numpy', 'torch', 'PIL', 'httpx', 'psutil'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_run_is_op() -> None:
    assert mlop.Run is mlop.Op
