"""``python -m mlop ...``: the ``mlop`` command, for environments whose script folder is not on PATH."""

from __future__ import annotations

import sys

from mlop.cli import main

if __name__ == "__main__":
    sys.exit(main())
