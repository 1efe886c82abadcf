"""``MlopLogger``: an mlop run as a Lightning logger (``Trainer(logger=MlopLogger(project="x"))``)."""

from __future__ import annotations

import logging
import os
import secrets
import string
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import mlop
from mlop import _hooks
from mlop._settings import resolve_settings
from mlop._status import exception_status
from mlop_lightning._checkpoints import CheckpointTracker
from mlop_lightning._compat import NoopRun, global_rank, logger_base
from mlop_lightning._params import to_config

__all__ = ["MLOPLogger", "MlopLogger"]

logger = logging.getLogger(__name__)

_ID_ALPHABET: Final = string.ascii_lowercase + string.digits
#: The run id a Lightning ``ddp`` launcher process hands to the copies of the script it starts for the other
#: local ranks (they inherit its environment), so every rank's logger names the same run.
RUN_ID_VARIABLE: Final = "MLOP_LIGHTNING_RUN_ID"
_COMPLETED: Final = frozenset({"success"})
_FAILED: Final = frozenset({"failed"})


def _new_run_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))


def _launched_rank() -> bool:
    """Whether this process is a local rank other than 0, started by a launcher (Lightning, torchrun)."""
    local = os.environ.get("LOCAL_RANK", "").strip()
    return local not in ("", "0")


def _records(run: Any) -> bool:
    """Whether ``run`` records the user's values: a real run, and not another rank of a shared run."""
    return isinstance(run, mlop.Run) and bool(getattr(run, "primary", True))


def _lightning_status(status: str) -> tuple[str, dict[str, Any] | None]:
    """The run status for Lightning's ``finalize`` status, with an error description when there is one.

    ``"success"`` is COMPLETED. ``"failed"`` is FAILED with the exception Lightning is handling (Lightning
    finalizes its loggers inside its ``except`` block), or TERMINATED for a Ctrl-C. Anything else
    (``"finished"``: a SLURM requeue signal) is TERMINATED: the process stops before its end.
    """
    if status in _COMPLETED:
        return "COMPLETED", None
    exc_type, exc, tb = sys.exc_info()
    if status in _FAILED and exc_type is not None and exc is not None:
        return exception_status(exc_type, exc, tb)
    message = f"Lightning finalized the logger with status {status!r}"
    metadata = {"type": "LightningStatus", "message": message, "frames": [], "trace": ""}
    return ("FAILED" if status in _FAILED else "TERMINATED"), metadata


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _at(value: Any, index: int, count: int) -> Any:
    """The ``index``-th of a per-item keyword given as a list, or the one value given for every item."""
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ValueError(
                f"a list keyword needs one value per item: {len(value)} values for {count} items"
            )
        return value[index]
    return value


def _array(value: Any) -> Any:
    """A framework tensor as a numpy array, so the data types take it without a plugin."""
    detach = getattr(value, "detach", None)
    if callable(detach):
        return detach().cpu().numpy()
    return value


class MlopLogger(logger_base()):  # type: ignore[misc]
    """Log a Lightning run to mlop: ``Trainer(logger=MlopLogger(project="x"))``.

    The run is created on first use, on global rank 0 only, so the logger can be pickled before it exists
    (``ddp_spawn``) and other ranks never create one; there :attr:`experiment` is an object whose methods do
    nothing. With the ``shared=True`` setting every rank attaches to the one run (for its own system
    metrics) while rank 0 records what is logged. Each ``fit``, ``validate`` or ``test`` ends the run
    (Lightning calls :meth:`finalize`) with its status; the next one continues the same run.

    Args:
        project: the mlop project; Lightning's :attr:`name`.
        name: the run's display name.
        config: the run's starting config; Lightning's hyperparameters are merged into it.
        tags: one tag or a list.
        dir: the folder under which ``.mlop/<project>/<run id>/`` is made (default: ``MLOP_DIR`` or the
            working directory). Checkpoints go to ``<run directory>/checkpoints`` unless the
            ``ModelCheckpoint`` has its own ``dirpath``.
        settings: a :class:`mlop.Settings` or a dict of settings.
        run_id: the run's id (its external id on the server); by default a new random one, drawn when
            the logger is made, so every copy of the logger (``ddp_spawn``) and every rank Lightning's
            ``ddp`` launcher starts names the same run.
        log_model: log checkpoints as artifacts: ``True`` the final ones when training ends, ``"all"``
            each one when it is saved, ``False`` none.
        prefix: put before every metric key, joined with ``/``.
        checkpoint_name: the key the checkpoints are logged under (default ``"model"``).
        op: an existing run to log to instead of creating one; the logger never finishes it.
        **init_kwargs: any other argument of :func:`mlop.init` (``mode="offline"``, ``host=...``,
            ``resume=True``).

    Raises:
        ValueError: ``log_model`` is not True, False or ``"all"``.
        mlop.ConfigError: an unknown or malformed setting.
    """

    def __init__(
        self,
        project: str | None = None,
        name: str | None = None,
        config: Mapping[str, Any] | Any | None = None,
        tags: str | Sequence[str] | None = None,
        dir: str | os.PathLike[str] | None = None,
        settings: mlop.Settings | Mapping[str, Any] | None = None,
        run_id: str | None = None,
        log_model: bool | Literal["all"] = False,
        prefix: str = "",
        checkpoint_name: str | None = None,
        op: mlop.Run | None = None,
        **init_kwargs: Any,
    ) -> None:
        super().__init__()
        if log_model not in (True, False, "all"):
            raise ValueError(f"log_model must be True, False or 'all', not {log_model!r}")
        if "save_dir" in init_kwargs:
            saved = init_kwargs.pop("save_dir")
            dir = dir if dir is not None else saved
        self._resume = bool(init_kwargs.pop("resume", False))
        keywords = {"project": project, "name": name, "run_id": run_id, **init_kwargs}
        if dir is not None:
            keywords["dir"] = os.fspath(dir)
        resolved = resolve_settings(keywords, settings)
        self._project: str = resolved.project
        self._run_name = name
        self._root = Path(resolved.dir).expanduser() if resolved.dir else Path.cwd()
        # A drawn id is this logger's own: if its run exists, a copy of this logger made it (ddp_spawn).
        self._own_id = resolved.run_id is None
        if resolved.run_id is not None:
            self._run_id: str = resolved.run_id
        elif _launched_rank():
            self._run_id = os.environ.get(RUN_ID_VARIABLE) or _new_run_id()
        else:
            self._run_id = _new_run_id()
            os.environ[RUN_ID_VARIABLE] = self._run_id
        self._shared = resolved.shared
        self._disabled = resolved.run_mode == "disabled"
        self._config = to_config(config) if config is not None else None
        self._tags = [tags] if isinstance(tags, str) else None if tags is None else [str(t) for t in tags]
        self._settings = dict(settings) if isinstance(settings, Mapping) else settings
        self._init_kwargs = init_kwargs
        self._log_model: bool | str = log_model
        self._prefix = prefix
        self._checkpoint_name = checkpoint_name or "model"
        self._owns_run = op is None
        if op is not None:
            self._run_id = str(op.id)
            self._project = str(op.project)
            self._root = Path(op.dir).parent.parent.parent if op.dir is not None else self._root
            self._disabled = op.dir is None
        self._run: Any = op
        self._noop: NoopRun | None = None
        self._finalized = False  # finalize() ended the run: the next use continues it
        self._created = False  # this logger created its run once: later creations continue it
        self._step: int | None = None  # the last step Lightning logged at
        self._graphs: set[int] = set()
        self._checkpoints = CheckpointTracker()
        self._checkpoint_callbacks: dict[int, Any] = {}  # log_model=True: logged at finalize

    # -- Lightning's logger interface -----------------------------------------------------------------

    @property
    def name(self) -> str:
        """The mlop project (Lightning's experiment name)."""
        return self._project

    @property
    def version(self) -> str:
        """The run id."""
        return self._run_id

    @property
    def save_dir(self) -> str | None:
        """``<dir>/.mlop``: under it, ``<project>/<run id>`` is the run directory (None when disabled)."""
        return None if self._disabled else str(self._root / ".mlop")

    @property
    def root_dir(self) -> str | None:
        """``<dir>/.mlop/<project>``: where the project's runs live (None when disabled)."""
        save_dir = self.save_dir
        return None if save_dir is None else os.path.join(save_dir, self._project)

    @property
    def log_dir(self) -> str | None:
        """The run directory, ``<dir>/.mlop/<project>/<run id>`` (None when disabled)."""
        root = self.root_dir
        return None if root is None else os.path.join(root, self._run_id)

    @property
    def experiment(self) -> Any:
        """The :class:`mlop.Run` on global rank 0, created on first use; elsewhere a no-op object.

        With ``shared=True``, other ranks get their attachment to the same run (core's shared mode).
        """
        run = self._run
        if run is not None and not self._finalized:
            return run
        if self._noop is not None:
            return self._noop
        if global_rank() != 0 and not self._shared:
            self._noop = NoopRun()
            return self._noop
        self._run = mlop.init(
            project=self._project,
            name=self._run_name,
            config=None if self._created else self._config,
            tags=None if self._created else self._tags,
            dir=self._root,
            settings=self._settings,
            run_id=self._run_id,
            resume=self._resume or self._created or self._own_id,
            **self._init_kwargs,
        )
        self._created = True
        self._finalized = False
        return self._run

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log metrics at Lightning's step, with the step itself as ``trainer/global_step``.

        Lightning adds ``epoch`` to the metrics it logs, so charts can use either axis.
        """
        run = self.experiment
        prefix = self._prefix
        data = {f"{prefix}/{k}": v for k, v in metrics.items()} if prefix else dict(metrics)
        if step is not None:
            data["trainer/global_step"] = step
            self._step = step
        run.log(data, step=step)

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Merge hyperparameters into the run's config (nesting kept), so they reach the server.

        Args:
            params: a dict, an ``argparse.Namespace``, an omegaconf config or a dataclass, nested in any mix.
            *args: ignored (other loggers take metrics here).
            **kwargs: ignored.
        """
        config = to_config(params)
        if config:
            self.experiment.update_config(config)

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        """Store the model's graph (needs mlop-torch); once per model, as Lightning calls it every stage.

        Args:
            model: the model; a torch module with mlop-torch installed.
            input_array: unused: mlop's graph is read from the module tree, not traced.
        """
        run = self.experiment
        if not _records(run) or id(model) in self._graphs:
            return
        try:
            graph = _hooks.graph(model)
        except Exception:  # broad: a plugin's fault must not stop training; the graph is skipped
            logger.exception("mlop could not describe the model graph")
            return
        if graph is None:
            logger.debug("no mlop integration describes a %s; graph skipped", type(model).__name__)
            return
        self._graphs.add(id(model))
        run.log_graph(graph)

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        """Note a checkpoint save; with ``log_model="all"`` log the new files now."""
        if not self._log_model or not _records(self.experiment):
            return
        self._checkpoints.saved(checkpoint_callback, self._step)
        if self._log_model == "all":
            self._log_checkpoints(checkpoint_callback)
        else:
            self._checkpoint_callbacks[id(checkpoint_callback)] = checkpoint_callback

    def finalize(self, status: str) -> None:
        """End the run with the status Lightning reports, after logging the final checkpoints.

        ``"success"`` is COMPLETED, ``"failed"`` FAILED with the trace of the exception (TERMINATED for
        Ctrl-C), anything else TERMINATED. A run passed as ``op`` is left running.
        """
        run = self._run
        if run is None or self._finalized:
            return
        callbacks, self._checkpoint_callbacks = self._checkpoint_callbacks, {}
        for callback in callbacks.values():
            self._log_checkpoints(callback)
        if not self._owns_run:
            return
        final, metadata = _lightning_status(status)
        self._finalized = True
        if final == "COMPLETED":
            run.finish()
        else:
            run._end(final, metadata)

    # -- mlop additions -------------------------------------------------------------------------------

    def watch(
        self,
        model: Any,
        log: str | None = "gradients",
        log_freq: int = 100,
        log_graph: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Record gradients and/or parameters of ``model`` and its graph; see :meth:`mlop.Run.watch`.

        Returns:
            The watch handle on rank 0; None elsewhere.
        """
        return self.experiment.watch(model, log=log, log_freq=log_freq, log_graph=log_graph, **kwargs)

    def log_image(self, key: str, images: Any, step: int | None = None, **kwargs: Any) -> None:
        """Log one image or a list as :class:`mlop.Image` (arrays, tensors, PIL images, paths).

        Args:
            key: the key.
            images: one image or a list.
            step: the step; by default the last one Lightning logged at.
            **kwargs: arguments of :class:`mlop.Image` (``caption``), one value or a list with one per image.
        """
        self._log_media(key, images, step, kwargs, lambda item, kw: mlop.Image(_array(item), **kw))

    def log_audio(self, key: str, audios: Any, step: int | None = None, **kwargs: Any) -> None:
        """Log one sound or a list as :class:`mlop.Audio`; ``sample_rate`` and ``caption`` in kwargs."""
        self._log_media(key, audios, step, kwargs, lambda item, kw: mlop.Audio(_array(item), **kw))

    def log_video(self, key: str, videos: Any, step: int | None = None, **kwargs: Any) -> None:
        """Log one video or a list as :class:`mlop.Video`; ``fps``, ``caption``, ``format`` in kwargs."""
        self._log_media(key, videos, step, kwargs, lambda item, kw: mlop.Video(_array(item), **kw))

    def log_text(
        self,
        key: str,
        texts: Any = None,
        step: int | None = None,
        columns: Sequence[Any] | None = None,
        data: Any = None,
        dataframe: Any = None,
        **kwargs: Any,
    ) -> None:
        """Log one text or a list as :class:`mlop.Text` documents (``caption`` in kwargs).

        Called as Lightning's wandb logger takes it, with ``columns`` and ``data`` (or ``dataframe``) and
        no texts, it logs a table of texts instead.
        """
        if texts is None:
            self.log_table(key, columns=columns, data=data, dataframe=dataframe, step=step)
            return
        self._log_media(key, texts, step, kwargs, lambda item, kw: mlop.Text(item, **kw))

    def log_file(self, key: str, paths: Any, step: int | None = None, **kwargs: Any) -> None:
        """Log a file, a directory or a list as :class:`mlop.File`; ``caption``, ``metadata`` as kwargs."""
        self._log_media(key, paths, step, kwargs, lambda item, kw: mlop.File(item, **kw))

    def log_table(
        self,
        key: str,
        columns: Sequence[Any] | None = None,
        data: Any = None,
        dataframe: Any = None,
        step: int | None = None,
        rows: Sequence[Any] | None = None,
    ) -> None:
        """Log a table as :class:`mlop.Table`: ``columns`` and ``data`` (a list of rows), or a DataFrame."""
        table = mlop.Table(data=data, columns=columns, rows=rows, dataframe=dataframe)
        self.experiment.log({key: table}, step=self._media_step(step))

    def _log_media(
        self,
        key: str,
        items: Any,
        step: int | None,
        kwargs: dict[str, Any],
        make: Callable[[Any, dict[str, Any]], Any],
    ) -> None:
        run = self.experiment
        if not _records(run):
            return
        values = _as_list(items)
        count = len(values)
        media = [
            item
            if isinstance(item, mlop.Loggable)
            else make(item, {k: _at(v, i, count) for k, v in kwargs.items()})
            for i, item in enumerate(values)
        ]
        run.log({key: media if isinstance(items, (list, tuple)) else media[0]}, step=self._media_step(step))

    def _media_step(self, step: int | None) -> int | None:
        return step if step is not None else self._step

    def _log_checkpoints(self, callback: Any) -> None:
        run = self.experiment
        if not _records(run):
            return
        for checkpoint in self._checkpoints.pending(callback):
            try:
                artifact = mlop.Artifact(
                    checkpoint.path, caption=os.path.basename(checkpoint.path), metadata=checkpoint.metadata()
                )
            except (OSError, TypeError) as exc:  # deleted since, or unreadable: the others still count
                logger.warning("mlop could not log the checkpoint %s: %s", checkpoint.path, exc)
                continue
            run.log({self._checkpoint_name: artifact}, step=self._media_step(None))
            self._checkpoints.logged(checkpoint)

    # -- pickling (ddp_spawn) -------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        """The logger without its run: a copy in another process continues the same run id on first use."""
        state = self.__dict__.copy()
        live = isinstance(self._run, mlop.Run) and not self._finalized
        state["_created"] = self._created or live
        state["_run"] = None
        state["_graphs"] = set()
        state["_noop"] = None
        state["_finalized"] = False
        state["_checkpoint_callbacks"] = {}
        return state


#: The original mlop client's name for the logger.
MLOPLogger = MlopLogger
