"""The package's surface: exports, and a plugin that never makes ``mlop.init()`` import Lightning."""

from __future__ import annotations

import subprocess
import sys

import pytest

import mlop_lightning


def test_exports() -> None:
    assert mlop_lightning.__all__ == ["MLOPLogger", "MlopLogger", "__version__"]
    assert mlop_lightning.MLOPLogger is mlop_lightning.MlopLogger
    assert isinstance(mlop_lightning.__version__, str)


def test_loading_the_plugin_does_not_import_lightning() -> None:
    code = (
        "import sys, mlop, mlop_lightning.plugin\n"
        "from mlop._plugins import get_plugin_manager\n"
        "assert get_plugin_manager().has_plugin('lightning')\n"
        "print(sorted({'lightning', 'pytorch_lightning'} & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"


def test_the_base_class_comes_from_pytorch_lightning_when_lightning_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlop_lightning._compat import logger_base

    legacy = pytest.importorskip("pytorch_lightning.loggers")
    monkeypatch.setitem(sys.modules, "lightning.pytorch.loggers", None)  # as if not installed
    assert logger_base() is legacy.Logger
    monkeypatch.setitem(sys.modules, "pytorch_lightning.loggers", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'mlop-lightning\[lightning\]'"):
        logger_base()
