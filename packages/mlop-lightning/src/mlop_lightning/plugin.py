"""The pluggy plugin that mlop-lightning registers under the entry-point group ``mlop``.

It implements no hook: the rank comes from mlop-torch and the environment, and :class:`MlopLogger` talks
to its run directly. The module must stay import-light (no Lightning, no torch), because core loads every
installed plugin when it builds its plugin manager.
"""

from __future__ import annotations
