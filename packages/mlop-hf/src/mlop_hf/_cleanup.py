"""Which runs mlop-hf started, and the staging folders to delete once a run has finished.

An artifact's files may be copied in the background until its run finishes, so the folder a final model
is saved to for ``MLOP_LOG_MODEL=end`` is deleted by the ``mlop_run_finished`` hook (``mlop_hf.plugin``),
not right after ``run.log``.
"""

from __future__ import annotations

import shutil
import threading
import weakref
from typing import Any

__all__ = ["is_ours", "mark_ours", "remove_after_finish", "run_finished"]

_lock = threading.Lock()
_ours: weakref.WeakSet[Any] = weakref.WeakSet()
_staging: dict[int, tuple[weakref.ref[Any], list[str]]] = {}


def mark_ours(run: Any) -> None:
    """Remember that mlop-hf started ``run`` (so it is not taken for the user's own run)."""
    with _lock:
        _ours.add(run)


def is_ours(run: Any) -> bool:
    """Whether mlop-hf started ``run``."""
    with _lock:
        return run in _ours


def remove_after_finish(run: Any, path: str) -> None:
    """Delete the folder ``path`` when ``run`` finishes (a run that never finishes keeps it)."""
    with _lock:
        _ref, paths = _staging.setdefault(id(run), (weakref.ref(run), []))
        paths.append(path)


def run_finished(run: Any) -> None:
    """Delete the staging folders of ``run``; called by the plugin's ``mlop_run_finished``."""
    with _lock:
        entry = _staging.get(id(run))
        if entry is None or entry[0]() is not run:
            return
        del _staging[id(run)]
    for path in entry[1]:
        shutil.rmtree(path, ignore_errors=True)
