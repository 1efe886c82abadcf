"""``MlopLogger``: an mlop run as a Lightning logger (``Trainer(logger=MlopLogger(project="x"))``)."""

from __future__ import annotations

import logging
import os
import secrets
import string
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import mlop
from mlop import _hooks
from mlop._settings import resolve_settings
from mlop_lightning._checkpoints import CheckpointTracker
from mlop_lightning._compat import agree_with_rank_zero, dummy_experiment, global_rank, logger_base
from mlop_lightning._lifecycle import end_abandoned, lightning_status, live, live_run, scalar
from mlop_lightning._params import to_config
from mlop_lightning._resume import Running, checkpoint_run, run_state_callback, setting_up

__all__ = ["MLOPLogger", "MlopLogger"]

logger = logging.getLogger(__name__)

_ID_ALPHABET: Final = string.ascii_lowercase + string.digits
#: The project of a logger given none, as for Lightning's other loggers.
DEFAULT_PROJECT: Final = "lightning_logs"


def _new_run_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))


def _project_set_elsewhere(settings: Any) -> bool:
    """Whether the project comes from the environment or from ``settings`` rather than the default."""
    if os.environ.get("MLOP_PROJECT"):
        return True
    if isinstance(settings, Mapping):
        return settings.get("project") is not None
    return settings is not None and settings.project != mlop.Settings().project


def _records(run: Any) -> bool:
    """Whether ``run`` records the user's values: a real run, and not another rank of a shared run."""
    return isinstance(run, mlop.Run) and bool(getattr(run, "primary", True))


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

    The logger follows the contract of Lightning's own loggers: ``save_dir`` is the folder given, ``name``
    the project (``lightning_logs`` unless one is given), ``version`` the run id, ``experiment`` the
    :class:`mlop.Run` on global rank 0 and Lightning's ``DummyExperiment`` on every other rank, metric keys
    prefixed with ``prefix`` and :attr:`LOGGER_JOIN_CHAR`. The run is created on first use of
    ``experiment``, on global rank 0 only, so the logger can be pickled before it exists (``ddp_spawn``).
    When Lightning sets up a distributed job, every rank takes rank 0's run id (a broadcast of the
    strategy's process group), so ``version`` agrees everywhere. With the ``shared=True`` setting every
    rank also attaches to the run to record its own system metrics. Each ``fit``, ``validate`` or ``test``
    ends the run (Lightning calls :meth:`finalize`) with its status; the next one continues the same run.
    A logger that is never finalized ends its run (COMPLETED) when it is garbage-collected or the process
    exits, so no mlop thread outlives it.

    Args:
        save_dir: the folder under which mlop keeps its files (``<save_dir>/.mlop/<project>/<run id>/``);
            default ``MLOP_DIR`` or the working directory.
        name: the run's display name (default: its id).
        version: the run's id (its external id on the server); a new random one by default. Give the id of
            an existing run together with ``resume=True`` to continue it.
        log_dir: another name for ``save_dir`` (``dir`` is one too).
        project: the mlop project, which Lightning calls the experiment's :attr:`name` (default
            ``MLOP_PROJECT``, else ``"lightning_logs"``).
        offline: keep the run on this machine only (``mode="offline"``); ``mlop sync`` uploads it later.
        log_model: log checkpoints as artifacts: ``True`` the final ones when training ends, ``"all"``
            each one when it is saved, ``False`` none.
        prefix: put before every metric key, joined with :attr:`LOGGER_JOIN_CHAR` (``"-"``).
        checkpoint_name: the key the checkpoints are logged under (default ``"model"``).
        experiment: an existing run to log to instead of creating one; the logger never ends it.
        config: the run's starting config; Lightning's hyperparameters are merged into it.
        tags: one tag or a list.
        settings: a :class:`mlop.Settings` or a dict of settings.
        **kwargs: any other argument of :func:`mlop.init` (``host=...``, ``resume=True``, ``shared=True``).

    Raises:
        ValueError: ``log_model`` is not True, False or ``"all"``, or ``offline`` contradicts ``mode``.
        mlop.ConfigError: an unknown or malformed setting.
    """

    #: What joins ``prefix`` to a metric key, as in Lightning's own loggers.
    LOGGER_JOIN_CHAR: Final = "-"

    def __init__(
        self,
        save_dir: str | os.PathLike[str] | None = None,
        name: str | None = None,
        version: str | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        project: str | None = None,
        offline: bool = False,
        log_model: bool | Literal["all"] = False,
        prefix: str = "",
        checkpoint_name: str | None = None,
        experiment: mlop.Run | None = None,
        config: Mapping[str, Any] | Any | None = None,
        tags: str | Sequence[str] | None = None,
        settings: mlop.Settings | Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if log_model not in (True, False, "all"):
            raise ValueError(f"log_model must be True, False or 'all', not {log_model!r}")
        # The names of earlier releases (and of mlop.init): dir, run_id, op.
        folder = next((d for d in (save_dir, log_dir, kwargs.pop("dir", None)) if d is not None), None)
        version = version if version is not None else kwargs.pop("run_id", None)
        kwargs.pop("run_id", None)
        experiment = experiment if experiment is not None else kwargs.pop("op", None)
        kwargs.pop("op", None)
        if offline:
            if kwargs.get("mode", "offline") != "offline":
                raise ValueError(f"offline=True contradicts mode={kwargs['mode']!r}")
            kwargs["mode"] = "offline"
        self._resume = bool(kwargs.pop("resume", False))
        if project is None and not _project_set_elsewhere(settings):
            project = DEFAULT_PROJECT
        keywords = {"project": project, "name": name, "run_id": version, **kwargs}
        if folder is not None:
            keywords["dir"] = os.fspath(folder)
        resolved = resolve_settings(keywords, settings)
        self._project: str = resolved.project
        self._run_name = name
        self._root = Path(resolved.dir).expanduser() if resolved.dir else Path.cwd()
        # A drawn id is this logger's own: if its run exists, a copy of this logger made it (ddp_spawn).
        self._own_id = resolved.run_id is None
        self._run_id: str = resolved.run_id if resolved.run_id is not None else _new_run_id()
        self._agreed = False  # the ranks of a process group took rank 0's id
        self._shared = resolved.shared
        self._disabled = resolved.run_mode == "disabled"
        self._config = to_config(config) if config is not None else None
        self._tags = [tags] if isinstance(tags, str) else None if tags is None else [str(t) for t in tags]
        self._settings = dict(settings) if isinstance(settings, Mapping) else settings
        self._init_kwargs = kwargs
        self._log_model: bool | str = log_model
        self._prefix = prefix
        self._checkpoint_name = checkpoint_name or "model"
        self._owns_run = experiment is None
        if experiment is not None:
            self._run_id = str(experiment.id)
            self._own_id = False
            self._project = str(experiment.project)
            if experiment.dir is not None:
                self._root = Path(experiment.dir).parent.parent.parent
            self._disabled = experiment.dir is None
        self._run: Any = experiment
        self._attached: Any = None  # shared=True on a rank other than 0: this rank's attachment
        self._finalized = False  # finalize() ended the run: the next use continues it
        self._created = False  # this logger created its run once: later creations continue it
        self._ender: weakref.finalize[Any, Any] | None = None  # ends an abandoned run (GC, exit)
        self._step: int | None = None  # the last step Lightning logged at
        self._final: dict[str, Any] = {}  # the last value of each metric, for the run's summary
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
        """The run id (on every rank, once Lightning has set up a distributed job)."""
        return self._run_id

    @property
    def save_dir(self) -> str | None:
        """The folder given as ``save_dir`` (or the default one); None when mlop is disabled."""
        return None if self._disabled else str(self._root)

    @property
    def root_dir(self) -> str | None:
        """``<save_dir>/.mlop/<project>``: where the project's runs live (None when disabled)."""
        return None if self._disabled else str(self._root / ".mlop" / self._project)

    @property
    def log_dir(self) -> str | None:
        """The run directory, ``<save_dir>/.mlop/<project>/<run id>`` (None when disabled)."""
        root = self.root_dir
        return None if root is None else os.path.join(root, self._run_id)

    @property
    def experiment(self) -> Any:
        """The :class:`mlop.Run` on global rank 0, created on first use; Lightning's ``DummyExperiment`` on
        other ranks (with ``shared=True`` they attach to the run for their system metrics all the same).

        Lightning reads it on every rank while it sets up; in a distributed job that is where the ranks
        take rank 0's run id.
        """
        running = setting_up(_namespace())
        if running is not None:
            self._from_checkpoint(running)
            if running.in_setup and int(getattr(running.trainer, "world_size", 1) or 1) > 1:
                self._agree()  # every rank of the job reads the experiment here, at the same point
        if global_rank() != 0:
            if self._shared and (self._agreed or not self._own_id):
                self._attach()
            return dummy_experiment(logger_base())
        run = self._run
        if run is not None and not self._finalized and (not self._owns_run or live(run)):
            return run
        shared = live_run(self.log_dir)  # a pickled copy, in the process that holds the run live
        if shared is not None:
            self._run = shared
        else:
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
            if isinstance(self._run, mlop.Run):  # the copy that made the run ends it if abandoned
                self._watch_for_abandonment(self._run)
        self._created = True
        self._finalized = False
        return self._run

    def _from_checkpoint(self, running: Running) -> None:
        """When a Trainer running a stage reads the experiment: keep the run id in its checkpoints, and
        take the run id of the checkpoint it restores (on rank 0, before the run exists)."""
        callbacks = getattr(running.trainer, "callbacks", None)
        if isinstance(callbacks, list) and not any(
            getattr(c, "mlop_logger", None) is self for c in callbacks
        ):
            callbacks.append(run_state_callback(_namespace(), self))
        fresh = self._run is None and not self._created and self._owns_run and self._own_id
        if running.ckpt_path is None or not fresh or global_rank() != 0:
            return
        state = checkpoint_run(running.ckpt_path, running.weights_only)
        if state is not None:
            self._adopt(state)

    def _adopt(self, state: Mapping[str, Any]) -> None:
        """Continue the run a checkpoint names (its id and project) instead of starting one."""
        self._run_id = str(state["run_id"])
        project = state.get("project")
        if isinstance(project, str) and project:
            self._project = project
        self._resume = True

    def _restored(self, state: Mapping[str, Any]) -> None:
        """Lightning restored a checkpoint that names a run (called by the callback, on every rank)."""
        run_id = state.get("run_id")
        if not isinstance(run_id, str) or run_id == self._run_id or not self._own_id:
            return
        if self._run is None and not self._created:
            self._adopt(state)
            return
        logger.warning(
            "mlop: the checkpoint names run %s, but this fit logs to run %s, which existed before Lightning "
            "restored the checkpoint (its run id could not be read ahead); pass version=%r to continue it",
            run_id,
            self._run_id,
            run_id,
        )

    def _agree(self) -> None:
        """Take rank 0's run id, once, by a broadcast in the process group of a job of several ranks."""
        if self._agreed or not self._own_id or not self._owns_run:
            return
        agreed = agree_with_rank_zero(self._run_id)
        if agreed is not None:
            self._agreed = True
            self._run_id = agreed

    def _attach(self) -> None:
        if self._attached is None:
            self._attached = mlop.init(
                project=self._project,
                dir=self._root,
                settings=self._settings,
                run_id=self._run_id,
                **self._init_kwargs,
            )
            if isinstance(self._attached, mlop.Run):
                self._watch_for_abandonment(self._attached)

    def _watch_for_abandonment(self, run: mlop.Run) -> None:
        """End ``run`` when this logger is garbage-collected or the process exits without a finalize."""
        if self._owns_run:
            self._ender = weakref.finalize(self, end_abandoned, run)

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log metrics at Lightning's step, with the step itself as ``trainer/global_step``.

        Lightning adds ``epoch`` to the metrics it logs, so charts can use either axis.
        """
        run = self.experiment
        prefix = self._prefix
        join = self.LOGGER_JOIN_CHAR
        data = {f"{prefix}{join}{k}": v for k, v in metrics.items()} if prefix else dict(metrics)
        if step is not None:
            data["trainer/global_step"] = step
            self._step = step
        run.log(data, step=step)
        if _records(run):
            self._final.update(data)  # references only: a tensor is read once, at finalize

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
        Ctrl-C), anything else TERMINATED. A run passed as ``experiment`` is left running. A run that has
        ended already (a copy of this logger finalized it) is not ended again.
        """
        attached, self._attached = self._attached, None
        if attached is not None:
            attached.finish()
        run = self._run
        if run is None or self._finalized:
            return
        if self._owns_run and not live(run):
            self._finalized = True
            return
        callbacks, self._checkpoint_callbacks = self._checkpoint_callbacks, {}
        for callback in callbacks.values():
            self._log_checkpoints(callback)
        self._store_summary(run)
        if not self._owns_run:
            return
        final, metadata = lightning_status(status)
        self._finalized = True
        if self._ender is not None:
            self._ender.detach()
            self._ender = None
        if final == "COMPLETED":
            run.finish()
        else:
            run._end(final, metadata)

    def _store_summary(self, run: Any) -> None:
        """Put the last value of every metric Lightning logged into the run's summary."""
        final, self._final = self._final, {}
        values = {k: v for k, v in ((k, scalar(v)) for k, v in final.items()) if v is not None}
        if values and isinstance(run, mlop.Run):
            run.summary.update(values)

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
        """The logger without its run: a copy continues the same run id on first use (the same run
        object when the copy is made in the process that holds it live)."""
        state = self.__dict__.copy()
        live = isinstance(self._run, mlop.Run) and not self._finalized
        state["_created"] = self._created or live
        state["_run"] = self._run if not self._owns_run else None
        state["_attached"] = None
        state["_ender"] = None
        state["_graphs"] = set()
        state["_finalized"] = False
        state["_checkpoint_callbacks"] = {}
        state["_final"] = {}
        return state


def _namespace() -> str:
    """The Lightning package the logger is built on: ``lightning.pytorch`` or ``pytorch_lightning``."""
    return str(logger_base().__module__).split(".loggers", 1)[0]


#: The original mlop client's name for the logger.
MLOPLogger = MlopLogger
