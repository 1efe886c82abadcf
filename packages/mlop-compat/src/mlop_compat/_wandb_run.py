"""The run object of :mod:`mlop.compat.wandb`: ``wandb.run``, ``wandb.config`` and ``wandb.summary``."""

from __future__ import annotations

import glob as _glob
import logging
import os
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import mlop
from mlop._exceptions import MlopError
from mlop_compat import UnsupportedError, UnsupportedFeatureError, log_at
from mlop_compat._wandb_metrics import Metric, MetricRules
from mlop_compat._wandb_types import AlertLevel, Artifact, Histogram, wait_seconds

__all__ = ["Config", "Error", "NoRun", "Run", "Summary", "missing"]

logger = logging.getLogger("mlop.compat.wandb")


_PLAIN: Final = frozenset({int, float, str, bool, dict})


def _is_series(value: Any) -> bool:
    """Whether wandb would log ``value`` as a histogram: several numbers in a list, tuple or array."""
    if isinstance(value, (list, tuple)):
        return len(value) > 1 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ndim, size = getattr(value, "ndim", None), getattr(value, "size", None)
    if callable(size):  # a torch tensor: size() is its shape
        size = getattr(value, "numel", lambda: 0)()
    return (
        isinstance(ndim, int) and ndim >= 1 and isinstance(size, int) and size > 1 and hasattr(value, "dtype")
    )


def _histograms(series: Mapping[str, Any]) -> dict[str, Any]:
    """wandb logs several numbers under one key as a histogram; what cannot be one is left to mlop."""
    out: dict[str, Any] = {}
    for key, value in series.items():
        try:
            out[key] = Histogram(value)
        except (TypeError, ValueError, ImportError):
            out[key] = value  # mlop warns once about the key and skips it
    return out


class Error(MlopError):
    """``wandb.Error``: a call made in the wrong state (``wandb.log`` before ``wandb.init``)."""


class Config(MutableMapping[str, Any]):
    """``wandb.config``: the run's config, by attribute and by item; every change reaches the run."""

    def __init__(self, run: Any) -> None:
        object.__setattr__(self, "_run", run)

    def _data(self) -> dict[str, Any]:
        data: dict[str, Any] = self._run.config
        return data

    def __getitem__(self, key: str) -> Any:
        return self._data()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._run.update_config({key: value})

    def __delitem__(self, key: str) -> None:
        raise UnsupportedError(
            "mlop.compat.wandb does not support deleting a config key (del wandb.config[...])"
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return self._data()[name]
        except KeyError:
            raise AttributeError(f"wandb.config has no key {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __repr__(self) -> str:
        return f"wandb.config({self._data()!r})"

    def update(self, *args: Any, allow_val_change: bool | None = None, **kwargs: Any) -> None:
        """Merge a dict (or an object with attributes, like an argparse namespace) into the config."""
        delta: dict[str, Any] = {}
        for arg in args:
            delta.update(arg if isinstance(arg, Mapping) else vars(arg))
        delta.update(kwargs)
        if delta:
            self._run.update_config(delta)

    def setdefaults(self, values: Mapping[str, Any]) -> None:
        """Set the keys the config does not have yet."""
        missing = {k: v for k, v in values.items() if k not in self._data()}
        if missing:
            self._run.update_config(missing)

    def as_dict(self) -> dict[str, Any]:
        return dict(self._data())


class Summary(MutableMapping[str, Any]):
    """``run.summary``: the last value of each key; values set here are stored in the config's ``summary``."""

    def __init__(self, owner: Run) -> None:
        self._owner = owner
        self._values: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._values[key] = value
        self._owner._store_summary({key: value})

    def __delitem__(self, key: str) -> None:
        del self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"wandb.summary({self._values!r})"

    def update(self, *args: Any, **kwargs: Any) -> None:
        delta = dict(*args, **kwargs)
        self._values.update(delta)
        self._owner._store_summary(delta)

    def _observe(self, values: Mapping[str, Any]) -> None:
        self._values.update(values)


class Run:
    """``wandb.run``: a live run, backed by an :class:`mlop.Run`."""

    def __init__(self, op: Any, group: str | None, job_type: str | None, notes: str | None) -> None:
        self._op = op
        self.group = group
        self.job_type = job_type
        self.notes = notes
        self.config = Config(op)
        self.summary = Summary(self)
        self._metrics = MetricRules()
        # A resumed run goes on after its last step, as wandb's does.
        start = getattr(op, "_step", 0)
        self._step = start if isinstance(start, int) else 0
        self._saved: list[tuple[str, str | None]] = []
        self._artifacts: list[Artifact] = []
        self._finished = False
        self.on_finish: Callable[[Run], None] | None = None  # wandb.py clears wandb.run with it
        files = Path(op.dir) / "files" if op.dir is not None else None
        if files is not None:
            files.mkdir(parents=True, exist_ok=True)
        self._files_dir = files

    def __repr__(self) -> str:
        return f"<wandb.Run on mlop {self.project}/{self.name} id={self.id}>"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise missing(f"wandb.run.{name}")

    # -- who the run is -------------------------------------------------------------------------------

    @property
    def id(self) -> str:
        return str(self._op.id)

    @property
    def name(self) -> str:
        return str(self._op.name)

    @name.setter
    def name(self, value: str) -> None:
        raise UnsupportedError(
            "mlop.compat.wandb does not support renaming a run (wandb.run.name = ...): pass name= to init()"
        )

    @property
    def project(self) -> str:
        return str(self._op.project)

    @property
    def entity(self) -> None:
        return None

    @property
    def path(self) -> str:
        return f"{self.project}/{self.id}"

    @property
    def dir(self) -> str:
        """A folder for files to keep with the run: what is in it when the run finishes is stored."""
        return str(self._files_dir) if self._files_dir is not None else os.getcwd()

    @property
    def url(self) -> str | None:
        url: str | None = getattr(self._op, "url", None)
        return url

    @property
    def resumed(self) -> bool:
        return bool(self._op.resumed)

    @property
    def offline(self) -> bool:
        return bool(self._op.settings.run_mode != "online")

    @property
    def disabled(self) -> bool:
        return bool(self._op.settings.run_mode == "disabled")

    @property
    def step(self) -> int:
        """The current step: the one the next ``log`` without ``step`` goes to."""
        return self._step

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(self._op.tags)

    @tags.setter
    def tags(self, value: Sequence[str]) -> None:
        wanted = [str(t) for t in value]
        self._op.remove_tags([t for t in self._op.tags if t not in wanted])
        self._op.add_tags(wanted)

    @property
    def mlop_run(self) -> Any:
        """The :class:`mlop.Run` underneath."""
        return self._op

    # -- logging --------------------------------------------------------------------------------------

    def log(
        self,
        data: Mapping[str, Any],
        step: int | None = None,
        commit: bool | None = None,
        sync: bool | None = None,
    ) -> None:
        """``wandb.log``: log values at the current step, or at ``step``.

        Without ``step``, the call commits the current step and moves to the next one, unless
        ``commit=False``. With ``step``, that step becomes the current one (committed when ``commit=True``).
        Values are stored at once in both cases, so nothing waits for a commit.
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"wandb.log takes a dict, not {type(data).__name__}")
        if step is not None:
            target = int(step)
            self._step = max(target, self._step)
            advance = commit is True
        else:
            target = self._step
            advance = commit is not False
        values = data if type(data) is dict else dict(data)
        series = {k: v for k, v in values.items() if type(v) not in _PLAIN and _is_series(v)}
        if series:
            values = {**values, **_histograms(series)}
        self.summary._observe(values)
        if self._metrics.active:
            self._metrics.observe(values)
            for at, part in self._metrics.split(values, target).items():
                if part:
                    log_at(self._op, part, at)
        else:
            log_at(self._op, values, target)
        if advance and target >= self._step:
            self._step = target + 1

    def define_metric(
        self,
        name: str,
        step_metric: str | Metric | None = None,
        step_sync: bool | None = None,
        hidden: bool | None = None,
        summary: str | None = None,
        goal: str | None = None,
        overwrite: bool | None = None,
    ) -> Metric:
        """``wandb.define_metric``: a key (or a glob like ``val/*``) logged against ``step_metric``.

        Values of a key with a step metric are stored at the step metric's value in the same call (or
        its last value), so they line up with it; ``summary`` (``min``, ``max``, ``mean``, ``first``,
        ``last``, ``best`` with ``goal``, ``none``) adds aggregates to the summary.
        """
        metric = self._metrics.define(name, step_metric, summary, goal, hidden)
        return metric

    def _store_summary(self, values: Mapping[str, Any]) -> None:
        if values:
            self._op.update_config({"summary": dict(values)})

    # -- models, alerts, files ------------------------------------------------------------------------

    def watch(
        self,
        models: Any,
        criterion: Any = None,
        log: str | None = "gradients",
        log_freq: int = 1000,
        idx: int | None = None,
        log_graph: bool = False,
    ) -> None:
        """``wandb.watch``: gradients and/or parameters of a model or a list of models (needs mlop-torch)."""
        for model in models if isinstance(models, (list, tuple)) else [models]:
            self._op.watch(model, log=log, log_freq=log_freq, log_graph=log_graph)

    def unwatch(self, models: Any = None) -> None:
        for model in models if isinstance(models, (list, tuple)) else [models]:
            self._op.unwatch(model)

    def alert(
        self,
        title: str,
        text: str,
        level: str | AlertLevel | None = None,
        wait_duration: float | Any = None,
    ) -> None:
        """``wandb.alert``: an alert with a title and a text (INFO, WARN or ERROR)."""
        level_name = level.value if isinstance(level, AlertLevel) else str(level or "INFO")
        self._op.alert(message=text, title=title, level=level_name.upper(), wait=wait_seconds(wait_duration))

    def log_artifact(
        self,
        artifact_or_path: Artifact | str | os.PathLike[str],
        name: str | None = None,
        type: str | None = None,
        aliases: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
    ) -> Artifact:
        """``wandb.log_artifact``: store an artifact's files with the run, under ``artifacts/<name>``."""
        if isinstance(artifact_or_path, Artifact):
            artifact = artifact_or_path
        else:
            path = Path(artifact_or_path)
            artifact = Artifact(name or path.name, type or "unspecified")
            if path.is_dir():
                artifact.add_dir(path)
            else:
                artifact.add_file(path)
        self._artifacts.append(artifact)
        log_at(
            self._op, {f"artifacts/{artifact.name}": artifact.to_mlop(aliases, tags)}, max(self._step - 1, 0)
        )
        return artifact

    def use_artifact(self, *args: Any, **kwargs: Any) -> Any:
        raise missing("wandb.use_artifact", "mlop keeps artifacts with the run that logged them")

    def save(
        self,
        glob_str: str | os.PathLike[str],
        base_path: str | os.PathLike[str] | None = None,
        policy: str = "live",
    ) -> bool:
        """``wandb.save``: files matching a glob are stored with the run when it finishes.

        ``policy="now"`` stores the files that match now, at once.
        """
        pattern = os.fspath(glob_str)
        base = os.fspath(base_path) if base_path is not None else None
        if policy == "now":
            self._store_files(pattern, base)
        else:
            self._saved.append((pattern, base))
        return True

    def _store_files(self, pattern: str, base: str | None) -> None:
        paths = sorted(p for p in _glob.glob(pattern, recursive=True) if os.path.isfile(p))
        for path in paths:
            relative = os.path.relpath(path, base) if base else os.path.basename(path)
            log_at(self._op, {f"files/{relative}": mlop.File(path)}, max(self._step - 1, 0))

    # -- the end --------------------------------------------------------------------------------------

    def finish(self, exit_code: int | None = None, quiet: bool | None = None) -> None:
        """``wandb.finish``: store what ``save`` and ``run.dir`` collected, then finish the run."""
        self._end(lambda: self._op.finish(exit_code))

    def _end(self, end_op: Callable[[], None]) -> None:
        if self._finished:
            return
        self._finished = True
        if not getattr(self._op, "_closed", False):  # ended already (an unhandled exception): nothing to add
            try:
                for pattern, base in self._saved:
                    self._store_files(pattern, base)
                if self._files_dir is not None and any(self._files_dir.rglob("*")):
                    self._store_files(str(self._files_dir / "**" / "*"), str(self._files_dir))
                self._store_summary(self._metrics.aggregates())
            except Exception:  # broad: storing the extras must not keep the run from finishing
                logger.exception("mlop.compat.wandb could not store the run's files or summary")
        end_op()
        for artifact in self._artifacts:
            artifact.cleanup()
        if self.on_finish is not None:
            self.on_finish(self)

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None or exc is None:
            self.finish()
            return
        from mlop._status import exception_status

        status, metadata = exception_status(exc_type, exc, tb)
        self._end(lambda: self._op._end(status, metadata))


class NoRun:
    """What ``wandb.config`` and ``wandb.summary`` are before ``init``: any use raises :class:`Error`."""

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_name", name)

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        raise Error(f"You must call wandb.init() before using {self._name}")

    __getitem__ = __setitem__ = __iter__ = __len__ = __contains__ = _fail

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        self._fail()

    def __setattr__(self, name: str, value: Any) -> None:
        self._fail()


def missing(call: str, hint: str = "") -> UnsupportedFeatureError:
    """The error for a wandb call the layer does not have."""
    message = f"mlop.compat.wandb does not support {call}"
    return UnsupportedFeatureError(message + (f": {hint}" if hint else ""))
