"""``python -m mlop_server``: run the server (the same as ``mlop server``)."""

from __future__ import annotations

import sys

from mlop_server._cli import main

if __name__ == "__main__":
    sys.exit(main())
