"""The pluggy plugin that mlop-hf registers under the entry-point group ``mlop``."""

from __future__ import annotations
