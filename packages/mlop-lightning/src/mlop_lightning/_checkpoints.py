"""Which checkpoint files a ``ModelCheckpoint`` holds, and which of them the run has not logged yet."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

__all__ = ["CheckpointTracker", "SavedCheckpoint"]


@dataclasses.dataclass(frozen=True)
class SavedCheckpoint:
    """One checkpoint file to log, with what the artifact's metadata says about it."""

    path: str
    score: float | None
    step: int | None
    aliases: tuple[str, ...]
    monitor: str | None
    mtime: int

    def metadata(self) -> dict[str, Any]:
        """The artifact's metadata: the monitored score, the file's path and the step it was saved at."""
        return {
            "score": self.score,
            "path": self.path,
            "step": self.step,
            "aliases": list(self.aliases),
            "monitor": self.monitor,
            "filename": os.path.basename(self.path),
        }


def _score(value: Any) -> float | None:
    if value is None:
        return None
    try:
        return float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError):
        return None


class CheckpointTracker:
    """Remembers the checkpoints logged so far (by path and modification time) and the step of each save.

    Works on any object with ``ModelCheckpoint``'s attributes (``best_k_models``, ``best_model_path``,
    ``best_model_score``, ``last_model_path``, ``current_score``, ``monitor``), read with defaults, so it
    serves both Lightning namespaces and subclasses.
    """

    def __init__(self) -> None:
        self._logged: dict[str, int] = {}
        self._steps: dict[str, tuple[int, int | None]] = {}

    def __len__(self) -> int:
        return len(self._logged)

    def saved(self, callback: Any, step: int | None) -> None:
        """Note the step of every file of ``callback`` that is new or rewritten since the last call."""
        saved_at = getattr(callback, "_last_global_step_saved", None)
        step = saved_at if isinstance(saved_at, int) and saved_at >= 0 else step
        for path in self._candidates(callback):
            mtime = _mtime(path)
            if mtime is None:
                continue
            known = self._steps.get(path)
            if known is None or known[0] != mtime:
                self._steps[path] = (mtime, step)

    def pending(self, callback: Any) -> list[SavedCheckpoint]:
        """The checkpoint files of ``callback`` not logged yet (or rewritten since), oldest first."""
        best = str(getattr(callback, "best_model_path", "") or "")
        last = str(getattr(callback, "last_model_path", "") or "")
        top_k = {str(p) for p in (getattr(callback, "best_k_models", None) or {})}
        monitor = getattr(callback, "monitor", None)
        out: list[SavedCheckpoint] = []
        for path, score in self._candidates(callback).items():
            mtime = _mtime(path)
            if mtime is None or self._logged.get(path) == mtime:
                continue
            aliases = tuple(
                name
                for name, hit in (("best", path == best), ("last", path == last), ("top_k", path in top_k))
                if hit
            )
            known = self._steps.get(path)
            out.append(
                SavedCheckpoint(
                    path=path,
                    score=score,
                    step=known[1] if known is not None and known[0] == mtime else None,
                    aliases=aliases,
                    monitor=str(monitor) if monitor is not None else None,
                    mtime=mtime,
                )
            )
        out.sort(key=lambda c: c.mtime)
        return out

    def logged(self, checkpoint: SavedCheckpoint) -> None:
        """Mark ``checkpoint`` as logged, so it is logged again only if its file is rewritten."""
        self._logged[checkpoint.path] = checkpoint.mtime

    @staticmethod
    def _candidates(callback: Any) -> dict[str, float | None]:
        found: dict[str, float | None] = {}
        for path, score in (getattr(callback, "best_k_models", None) or {}).items():
            found[str(path)] = _score(score)
        best = getattr(callback, "best_model_path", "")
        if best:
            found[str(best)] = _score(getattr(callback, "best_model_score", None))
        last = getattr(callback, "last_model_path", "")
        if last:
            found.setdefault(str(last), _score(getattr(callback, "current_score", None)))
        return found


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:  # deleted (a top-k file replaced by a better one) or on a remote file system
        return None
