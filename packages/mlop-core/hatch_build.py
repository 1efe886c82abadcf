"""Hatch build hook: write the git commit a wheel or sdist is built from into ``mlop/_build_info.py``.

``mlop --version`` reads it in an installed wheel, where no checkout is at hand. An editable install gets
no file: there ``mlop --version`` asks git at run time, so the commit follows the checkout. A build from an
sdist (no ``.git``) keeps the file the sdist carries.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

TARGET = "src/mlop/_build_info.py"


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


class BuildInfo(BuildHookInterface):  # type: ignore[type-arg]
    """Adds ``mlop/_build_info.py`` (``COMMIT = "<12 hex digits>[-dirty]"``) to wheels and sdists."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version == "editable":
            return
        root = Path(self.root)
        commit = _git(root, "rev-parse", "--short=12", "HEAD")
        if commit is None:
            return  # no checkout (built from an sdist): the sdist's own _build_info.py is packaged as is
        if _git(root, "status", "--porcelain", "--untracked-files=no", "--", "."):
            commit += "-dirty"
        folder = Path(tempfile.mkdtemp(prefix="mlop-build-info-"))
        info = folder / "_build_info.py"
        info.write_text(
            '"""Written by hatch_build.py when this package was built: the commit it was built from."""\n\n'
            f"COMMIT = {commit!r}\n",
            encoding="utf-8",
        )
        where = "mlop/_build_info.py" if self.target_name == "wheel" else TARGET
        build_data.setdefault("force_include", {})[str(info)] = where
