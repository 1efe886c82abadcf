"""``MlopTracker``: mlop as an accelerate tracker (``Accelerator(log_with="mlop")``)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import Any, ClassVar

from accelerate.tracking import GeneralTracker

import mlop
from mlop_hf import _register

__all__ = ["MlopTracker"]

logger = logging.getLogger("mlop_hf")


def _calling_accelerator() -> Any:
    """The Accelerator whose ``init_trackers`` starts this tracker, found on the call stack.

    accelerate hands its logging dir only to trackers that require one (and then refuses to run without
    it), and never hands them itself; mlop's tracker requires neither, so it looks one frame or so up.
    """
    frame: FrameType | None = sys._getframe(1)
    for _ in range(8):
        if frame is None:
            break
        if frame.f_code.co_name == "init_trackers":
            owner = frame.f_locals.get("self")
            return owner if hasattr(owner, "register_for_checkpointing") else None
        frame = frame.f_back
    return None


def _number(value: Any) -> float | int | None:
    """A logged value as a plain number (a one-element tensor or array read now); None otherwise."""
    item = getattr(value, "item", None)
    if callable(item):
        try:
            value = item()
        except (RuntimeError, ValueError):  # more than one element
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def _is_main_process() -> bool:
    from accelerate.state import PartialState

    return bool(PartialState().is_main_process)


class MlopTracker(GeneralTracker):  # type: ignore[misc]  # accelerate is untyped here
    """An accelerate tracker that logs to an mlop run.

    ``Accelerator(log_with="mlop")`` builds it in ``init_trackers(project_name, config, init_kwargs)``:
    ``project_name`` becomes the mlop project, ``init_kwargs={"mlop": {...}}`` goes to :func:`mlop.init`
    (``name``, ``tags``, ``dir``, ``settings``, ...), and ``config`` becomes the run's config. An instance
    works too, with accelerate versions that cannot register the name:
    ``Accelerator(log_with=MlopTracker("my-project", name="baseline"))``.

    Only the main process starts a run and logs; ``tracker`` (the run) is None on the others. After
    ``finish`` the tracker logs nothing more. The run goes under the Accelerator's logging dir
    (``project_dir``) unless ``init_kwargs`` name a ``dir``.

    The run is created at its first use (a log, ``tracker``, ``end_training``), not by ``init_trackers``:
    the tracker registers itself for ``accelerator.save_state`` / ``load_state``, whose checkpoints keep the
    run id, and a ``load_state`` before the first log continues that run instead of starting one.

    Args:
        run_name: the mlop project (accelerate passes its ``project_name`` here).
        run: a run to log into instead of starting one; ``finish`` then leaves it open.
        **init_kwargs: passed to :func:`mlop.init`.
    """

    name: ClassVar[str] = "mlop"
    requires_logging_directory: ClassVar[bool] = False
    main_process_only: ClassVar[bool] = True

    def __init__(self, run_name: str | None = None, run: Any = None, **init_kwargs: Any) -> None:
        super().__init__()
        self.run_name = run_name
        self.init_kwargs = init_kwargs
        self._run: Any = run
        self._owned = False
        self._finished = False
        self._last: dict[str, Any] = {}  # the last value of each key logged, for the summary
        self._started = False  # init_trackers started the tracker: the run may be created on use
        self._logging_dir: str | None = None  # the Accelerator's, read when it starts the tracker
        self._config: dict[str, Any] = {}  # init_trackers' config, stored when the run is created
        self._resume: dict[str, str] | None = None  # the run a loaded state names
        self._next_step: int | None = None  # after a load_state: the step of the next log() without one

    def state_dict(self) -> dict[str, Any]:
        """What ``accelerator.save_state`` keeps of the tracker: the run's id, project and last step."""
        run = self._run if isinstance(self._run, mlop.Run) else None
        if run is None and self._resume is not None:
            return {**self._resume, "step": (self._next_step or 0) - 1}
        if run is None:
            return {"run_id": None, "project": None, "step": -1}
        last = run.step if self._next_step is None else self._next_step - 1
        return {"run_id": str(run.id), "project": run.project, "step": last}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the run a ``save_state`` checkpoint names (``accelerator.load_state``)."""
        run_id, project = state.get("run_id"), state.get("project")
        if not isinstance(run_id, str):
            return
        if self._run is None:
            self._resume = {"run_id": run_id, "project": str(project or "")}
            step = state.get("step")
            if isinstance(step, int):  # log() without a step counts on from the saved run's last step
                self._next_step = step + 1
        elif getattr(self._run, "id", None) != run_id:
            logger.warning(
                "mlop: the loaded state names run %s, but this tracker logs to run %s already; "
                "load the state before the first log to continue it",
                run_id,
                getattr(self._run, "id", None),
            )

    @property
    def tracker(self) -> Any:
        """The mlop run (None before ``start`` and on processes other than the main one)."""
        if self._run is None and self._started:
            self._active()
        return self._run

    def _active(self) -> bool:
        """Whether this process logs; starts the run on first use."""
        if self._finished or not _is_main_process():
            return False
        if self._run is None:
            kwargs = dict(self.init_kwargs)
            kwargs.setdefault("project", self.run_name)
            if kwargs.get("dir") is None and kwargs.get("save_dir") is None and self._logging_dir:
                kwargs["dir"] = self._logging_dir  # as accelerate's own trackers write under it
            if self._resume is not None:
                kwargs.update(run_id=self._resume["run_id"], resume=True)
                if self._resume["project"]:
                    kwargs["project"] = self._resume["project"]
            self._run = mlop.init(**kwargs)
            self._owned = True
            if self._config:
                self._run.update_config(self._config)
        return True

    def start(self) -> None:
        """Called by ``Accelerator.init_trackers``: note its logging dir, and register the tracker for
        ``save_state`` / ``load_state``. The run itself is created at first use."""
        self._started = True
        accelerator = _calling_accelerator()
        if accelerator is None:
            return
        configuration = getattr(accelerator, "project_configuration", None)
        logging_dir = getattr(configuration, "logging_dir", None)
        self._logging_dir = os.fspath(logging_dir) if logging_dir else None
        try:
            if not any(obj is self for obj in getattr(accelerator, "_custom_objects", [])):
                accelerator.register_for_checkpointing(self)
        except Exception:  # broad: checkpointing the run id is a convenience; logging goes on without it
            logger.warning("mlop: the tracker could not register for accelerator.save_state", exc_info=True)

    def store_init_configuration(self, values: Mapping[str, Any]) -> None:
        """Store ``values`` (the ``config`` of ``init_trackers``) as the run's config."""
        if self._run is None:
            self._config.update(values)
        elif self._active():
            self._run.update_config(dict(values))

    def log(self, values: Mapping[str, Any], step: int | None = None, **kwargs: Any) -> None:
        """Log ``values`` at ``step`` (the next step when None). Extra keywords go to ``run.log``.

        The last value of each key becomes the run's summary when the tracker finishes.
        """
        if self._active():
            step = self._step(step)
            self._run.log(dict(values), step=step, **kwargs)
            self._last.update(values)

    def _step(self, step: int | None) -> int | None:
        """The step to log at: the one given, else after a ``load_state`` the next after the saved run's."""
        if self._next_step is None:
            return step
        if step is None:
            step = self._next_step
        self._next_step = max(self._next_step, step + 1)
        return step

    def log_images(self, values: Mapping[str, Any], step: int | None = None, **kwargs: Any) -> None:
        """Log images: each key maps to one image or a list (numpy arrays, PIL images, tensors, paths)."""
        if not self._active():
            return
        images: dict[str, Any] = {}
        for key, value in values.items():
            many = isinstance(value, (list, tuple)) or getattr(value, "ndim", 0) == 4
            images[key] = [mlop.Image(v) for v in value] if many else mlop.Image(value)
        self._run.log(images, step=self._step(step), **kwargs)

    def log_table(
        self,
        table_name: str,
        columns: Sequence[str] | None = None,
        data: Sequence[Sequence[Any]] | None = None,
        dataframe: Any = None,
        step: int | None = None,
        **kwargs: Any,
    ) -> None:
        """Log a table from ``columns`` and ``data`` rows, or from a pandas ``dataframe``."""
        if self._active():
            table = mlop.Table(data=data, columns=columns, dataframe=dataframe)
            self._run.log({table_name: table}, step=self._step(step), **kwargs)

    def finish(self) -> None:
        """Finish the run if this tracker started it (called by ``Accelerator.end_training``).

        The last value of every number logged goes into the run's summary first.
        """
        if self._started and self._run is None:
            self._active()  # a tracker that logged nothing still leaves its run (and config) behind
        run, owned = self._run, self._owned
        last, self._last = self._last, {}
        if run is not None and not self._finished:
            numbers = {k: v for k, v in ((k, _number(v)) for k, v in last.items()) if v is not None}
            if numbers:
                run.summary.update(numbers)
        self._finished = True
        if run is not None and owned:
            self._owned = False
            run.finish()


# When this module's own import is what loaded the framework, the import hook could not register the class
# yet (it was not defined); register it now.
_register.patch_imported(tracker=MlopTracker)
