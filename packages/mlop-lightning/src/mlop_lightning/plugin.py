"""The pluggy plugin that mlop-lightning registers under the entry-point group ``mlop``."""

from __future__ import annotations
