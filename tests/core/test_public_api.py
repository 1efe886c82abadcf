"""The public surface: what each package exports, and that every hook is documented and tested."""

from __future__ import annotations
import __future__

import importlib
import inspect
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import mlop
from mlop import hookspecs

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["mlop", "mlop_torch", "mlop_lightning", "mlop_hf", "mlop_server"]


def _is_public(name: str, value: object) -> bool:
    if name.startswith("_") or inspect.ismodule(value) or isinstance(value, __future__._Feature):
        return False
    return getattr(typing, name, None) is not value  # typing helpers imported for annotations


@pytest.mark.parametrize("name", PACKAGES)
def test_all_lists_exactly_the_public_names(name: str) -> None:
    module = importlib.import_module(name)
    exported = set(module.__all__)
    defined = {n for n, v in vars(module).items() if _is_public(n, v)} | {"__version__"}
    assert defined <= exported, f"public but not in __all__: {sorted(defined - exported)}"
    for exported_name in exported:  # names loaded lazily through a module __getattr__ resolve too
        getattr(module, exported_name)
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
