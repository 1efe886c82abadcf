"""Hatch build hook: copy the dashboard's npm assets (uPlot, dagre) into ``mlop_server/_ui/static/vendor``.

The assets come from ``web/node_modules`` (``npm ci`` in ``web/``; run here when ``node_modules`` is missing
and npm is on the PATH), so both editable and wheel installs serve them. They are build outputs, not
committed files.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

ASSETS = {
    "uplot/dist/uPlot.iife.min.js": "uPlot.iife.min.js",
    "uplot/dist/uPlot.min.css": "uPlot.min.css",
    "uplot/LICENSE": "uPlot.LICENSE",
    "@dagrejs/dagre/dist/dagre.min.js": "dagre.min.js",  # the model graph's layout (graphlib bundled)
    "@dagrejs/dagre/LICENSE": "dagre.LICENSE",
}


class VendorAssets(BuildHookInterface):  # type: ignore[type-arg]
    """Copies the npm assets before every build (wheel and editable)."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root = Path(self.root)
        web = root / "web"
        modules = web / "node_modules"
        vendor = root / "src" / "mlop_server" / "_ui" / "static" / "vendor"
        if not all((modules / name).exists() for name in ASSETS) and shutil.which("npm"):
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=web, check=True)
        vendor.mkdir(parents=True, exist_ok=True)
        for source, target in ASSETS.items():
            found = modules / source
            if found.exists():
                shutil.copyfile(found, vendor / target)
            elif not (vendor / target).exists():
                raise RuntimeError(f"mlop-server: {found} is missing; run `npm ci` in {web}")
