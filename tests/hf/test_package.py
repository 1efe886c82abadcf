"""The public surface of ``mlop_hf`` and its packaging: ``__all__``, lazy classes, the ``.pth`` file."""

from __future__ import annotations

import importlib
import sysconfig
import types
from pathlib import Path

import mlop_hf

PACKAGE = Path(__file__).parents[2] / "packages" / "mlop-hf"


def test_all_is_sorted_and_exported() -> None:
    importlib.import_module("mlop_hf.plugin")  # as mlop's plugin manager does
    assert mlop_hf.__all__ == sorted(mlop_hf.__all__)
    for name in mlop_hf.__all__:
        assert getattr(mlop_hf, name) is not None
    assert set(mlop_hf.__all__) <= set(dir(mlop_hf))
    public = {
        name
        for name in dir(mlop_hf)
        if not name.startswith("_") and not isinstance(getattr(mlop_hf, name), types.ModuleType)
    } - {"TYPE_CHECKING", "annotations"}  # submodules (mlop_hf.plugin, once mlop loaded it) are not exports
    assert public == set(mlop_hf.__all__) - {"__version__"}


def test_classes_are_framework_subclasses() -> None:
    from accelerate.tracking import GeneralTracker
    from transformers import TrainerCallback

    assert issubclass(mlop_hf.MlopCallback, TrainerCallback)
    assert issubclass(mlop_hf.MlopTracker, GeneralTracker)
    assert mlop_hf.MlopTracker.name == "mlop"


def test_the_installed_pth_file_is_the_packaged_one() -> None:
    installed = Path(sysconfig.get_paths()["purelib"]) / "mlop_hf_autoload.pth"
    packaged = PACKAGE / "mlop_hf_autoload.pth"
    assert installed.read_text() == packaged.read_text()
    assert '"mlop_hf_autoload.pth" = "mlop_hf_autoload.pth"' in (PACKAGE / "pyproject.toml").read_text()
    # One line, as site.py reads .pth files, and it must compile.
    [line] = packaged.read_text().splitlines()
    assert line.startswith("import ")
    compile(line, str(packaged), "exec")
