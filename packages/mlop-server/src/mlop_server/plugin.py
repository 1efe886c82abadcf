"""The pluggy plugin that mlop-server registers under the entry-point group ``mlop``."""

from __future__ import annotations
