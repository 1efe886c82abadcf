"""The pluggy plugin that mlop-torch registers under the entry-point group ``mlop``."""

from __future__ import annotations
