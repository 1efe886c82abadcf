"""The run id in Lightning checkpoints, so a fit resumed from one (on any machine) continues the same run.

``MlopLogger`` adds a small callback to the ``Trainer`` whose setup first reads its ``experiment``; the
callback's state, saved in every checkpoint under :data:`STATE_KEY`, is the run id and project. Lightning
reads ``logger.experiment`` while it sets up, before it restores the checkpoint given as ``ckpt_path`` (or
the SLURM requeue checkpoint it finds by itself); so the logger reads the run id from that checkpoint
first, memory-mapped, and the run it creates is the checkpoint's. The Trainer and the checkpoint path are
found on the call stack of that setup (``Trainer._run``), as Lightning hands neither to its loggers.
"""

from __future__ import annotations

import logging
import os
import sys
from types import FrameType
from typing import Any, Final, NamedTuple

__all__ = ["STATE_KEY", "Running", "checkpoint_run", "run_state_callback", "setting_up"]

logger = logging.getLogger(__name__)

#: The key of the callback's state in a checkpoint's ``callbacks``.
STATE_KEY: Final = "MlopRun"
_DEPTH: Final = 12


class Running(NamedTuple):
    """A ``Trainer`` running a stage, as seen from a call its ``Trainer._run`` made to the logger."""

    trainer: Any
    #: The checkpoint the stage restores (None: none), and the ``weights_only`` it restores it with.
    ckpt_path: Any
    weights_only: bool | None
    #: Whether the call comes from the setup hook, which every rank reaches at the same point.
    in_setup: bool


def setting_up(namespace: str) -> Running | None:
    """The ``Trainer`` of ``namespace`` whose ``_run`` is on the call stack; None when there is none."""
    root = sys.modules.get(namespace)
    trainer_class = getattr(root, "Trainer", None)
    if trainer_class is None:
        return None
    frame: FrameType | None = sys._getframe(1)
    in_setup = False
    for _ in range(_DEPTH):
        if frame is None:
            return None
        name = frame.f_code.co_name
        if name == "_call_setup_hook":
            in_setup = True
        elif name == "_run":
            owner = frame.f_locals.get("self")
            if isinstance(owner, trainer_class):
                locals_ = frame.f_locals
                return Running(owner, locals_.get("ckpt_path"), locals_.get("weights_only"), in_setup)
        frame = frame.f_back
    return None


def checkpoint_run(path: Any, weights_only: bool | None) -> dict[str, Any] | None:
    """The run a checkpoint file names (``{"run_id", "project"}``), or None.

    The file is memory-mapped, so only the small callback state is read, with the ``weights_only`` choice
    Lightning itself restores it with. A remote path (``s3://...``) or an unreadable file gives None.
    """
    if path is None or "://" in str(path) or not os.path.isfile(path):
        return None
    try:
        import torch

        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=weights_only)
    except Exception as exc:  # broad: any unreadable checkpoint; Lightning reports it when it loads
        logger.warning("mlop could not read the run id from the checkpoint %s: %s", path, exc)
        return None
    state = (checkpoint.get("callbacks") or {}).get(STATE_KEY) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not isinstance(state.get("run_id"), str):
        return None
    return state


_classes: dict[str, type[Any]] = {}


def run_state_callback(namespace: str, owner: Any) -> Any:
    """A Lightning ``Callback`` (of ``namespace``) that saves ``owner``'s run id in every checkpoint.

    Restoring a checkpoint whose id the logger could not read ahead (a remote path) only warns: the run
    had to exist before Lightning restored the checkpoint.
    """
    cls = _classes.get(namespace)
    if cls is None:
        base: type[Any] = sys.modules[f"{namespace}.callbacks"].Callback

        class MlopRunState(base):  # type: ignore[misc]
            """Keeps the mlop run id in checkpoints (added by ``MlopLogger``)."""

            def __init__(self, logger: Any) -> None:
                self.mlop_logger = logger

            @property
            def state_key(self) -> str:
                return STATE_KEY

            def state_dict(self) -> dict[str, Any]:
                return {"run_id": self.mlop_logger.version, "project": self.mlop_logger.name}

            def load_state_dict(self, state_dict: dict[str, Any]) -> None:
                self.mlop_logger._restored(state_dict)

        cls = _classes[namespace] = MlopRunState
    return cls(owner)
