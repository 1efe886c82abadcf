"""Run a wandb script on mlop: ``import mlop.compat.wandb as wandb``.

The module answers the calls a typical training script makes: ``init``, ``log``, ``config``,
``summary``, ``finish``, ``watch``, ``run``, the data types (``Image``, ``Audio``, ``Video``,
``Histogram``, ``Table``, ``Artifact``), ``define_metric``, ``alert``, ``login`` and ``save``. Anything
else raises :class:`~mlop.compat.UnsupportedError` naming the call, never a silent no-op. wandb itself is
not needed.

What maps to what (see ``docs/migration.md``):

- ``init(project, name, config, tags, dir, mode, id, resume)`` → ``mlop.init``; ``group`` and
  ``job_type`` become the tags ``group:<group>`` and ``job_type:<job_type>``; ``notes`` goes into the
  config as ``notes``.
- ``log(data, step, commit)`` keeps wandb's step rules: a call without ``step`` commits and moves to the
  next step unless ``commit=False``; an explicit ``step`` sets the current step. A step lower than the
  current one is kept (wandb drops it).
- ``summary``: the last value of every logged key, readable in the script; values set by hand and the
  aggregates asked for with ``define_metric(summary=...)`` are stored in the run's config under
  ``summary``.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Final

import mlop
from mlop._values import jsonable
from mlop_compat import UnsupportedError
from mlop_compat._wandb_metrics import Metric
from mlop_compat._wandb_run import Error, Run
from mlop_compat._wandb_run import NoRun as _NoRun
from mlop_compat._wandb_run import missing as _missing
from mlop_compat._wandb_types import (
    AlertLevel,
    Artifact,
    Audio,
    Histogram,
    Image,
    Settings,
    Table,
    Video,
)

__all__ = [
    "AlertLevel",
    "Artifact",
    "Audio",
    "Error",
    "Histogram",
    "Image",
    "Metric",
    "Run",
    "Settings",
    "Table",
    "UnsupportedError",
    "Video",
    "alert",
    "config",
    "define_metric",
    "finish",
    "init",
    "log",
    "log_artifact",
    "login",
    "run",
    "save",
    "summary",
    "unwatch",
    "watch",
]

logger = logging.getLogger("mlop.compat.wandb")  # the name it had in mlop-core


_MODES: Final = {"online": None, "offline": "offline", "dryrun": "offline", "disabled": "disabled"}
_RESUME: Final = {
    True: "allow",
    False: "never",
    "allow": "allow",
    "auto": "allow",
    "must": "must",
    "never": "never",
}
#: init() arguments that only tune wandb's own service or account; accepted and left alone.
_IGNORED_INIT: Final = frozenset(
    {"entity", "reinit", "save_code", "anonymous", "allow_val_change", "magic", "force", "settings_file"}
)


run: Run | None = None
_exit_hook = False
config: Any = _NoRun("wandb.config")
summary: Any = _NoRun("wandb.summary")


def _resume_mode(resume: bool | str | None, run_id: str | None, exists: bool) -> bool:
    """Whether mlop should resume, from wandb's ``resume`` (``allow``, ``must``, ``never``, ``auto``)."""
    if resume is None:
        return False
    mode = _RESUME.get(resume)
    if mode is None:
        raise ValueError(f"resume must be one of {sorted(map(str, _RESUME))}, got {resume!r}")
    if mode == "must" and (run_id is None or not exists):
        raise Error(f"resume='must' but there is no run with id {run_id!r} to resume")
    if mode != "never" and run_id is None:
        logger.warning("mlop.compat.wandb: resume=%r without id= starts a new run", resume)
    return mode in ("allow", "must")


def init(
    project: str | None = None,
    name: str | None = None,
    config: Mapping[str, Any] | Any = None,
    tags: Sequence[str] | None = None,
    dir: str | os.PathLike[str] | None = None,
    mode: str | None = None,
    id: str | None = None,
    resume: bool | str | None = None,
    group: str | None = None,
    job_type: str | None = None,
    notes: str | None = None,
    config_exclude_keys: Sequence[str] | None = None,
    config_include_keys: Sequence[str] | None = None,
    settings: Settings | Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Run:
    """``wandb.init``: start an mlop run and make it ``wandb.run``.

    Raises:
        UnsupportedError: an argument mlop has no equivalent for (``sync_tensorboard``, ``fork_from``,
            ``resume_from``, ``monitor_gym``).
        TypeError: an argument wandb does not know either.
    """
    from mlop._init import run_directory
    from mlop._settings import resolve_settings
    from mlop._store import STORE_FILE

    for key in list(kwargs):
        if key in _IGNORED_INIT:
            kwargs.pop(key)
        elif key in ("sync_tensorboard", "monitor_gym", "fork_from", "resume_from", "tensorboard"):
            if kwargs[key]:
                raise _missing(
                    f"wandb.init({key}=...)", "for TensorBoard files use `mlop import tensorboard`"
                )
            kwargs.pop(key)
        elif key == "run_id":
            id = id or kwargs.pop(key)
    if kwargs:
        raise TypeError(f"wandb.init() got unexpected arguments: {', '.join(sorted(kwargs))}")
    fields = dict(settings.fields) if isinstance(settings, Settings) else dict(settings or {})
    project = project or fields.get("project") or os.environ.get("WANDB_PROJECT")
    name = name or fields.get("run_name") or os.environ.get("WANDB_NAME")
    id = id or fields.get("run_id") or os.environ.get("WANDB_RUN_ID")
    dir = dir or fields.get("root_dir") or os.environ.get("WANDB_DIR")
    mode = mode or fields.get("mode") or os.environ.get("WANDB_MODE")
    group = group or os.environ.get("WANDB_RUN_GROUP")
    job_type = job_type or os.environ.get("WANDB_JOB_TYPE")
    if mode is not None and mode not in _MODES:
        raise ValueError(f"mode must be one of {', '.join(_MODES)}, got {mode!r}")

    if run is not None:
        run.finish()
    config_dict = dict(jsonable(config)) if config is not None else {}
    if config_include_keys:
        config_dict = {k: v for k, v in config_dict.items() if k in config_include_keys}
    if config_exclude_keys:
        config_dict = {k: v for k, v in config_dict.items() if k not in config_exclude_keys}
    if notes:
        config_dict["notes"] = notes
    tag_list = [str(t) for t in tags or []]
    tag_list += [f"{label}:{value}" for label, value in (("group", group), ("job_type", job_type)) if value]

    where = resolve_settings({"project": project, "dir": os.fspath(dir) if dir else None}, None)
    exists = id is not None and (run_directory(where.dir, where.project, id) / STORE_FILE).exists()
    op = mlop.init(
        project=project,
        name=name,
        config=config_dict,
        tags=tag_list,
        dir=dir,
        run_id=id,
        resume=_resume_mode(resume, id, exists),
        mode=_MODES[mode] if mode is not None else None,
    )
    new = Run(op, group, job_type, notes)
    _activate(new)
    return new


def _activate(new: Run) -> None:
    global run, config, summary, _exit_hook
    run, config, summary = new, new.config, new.summary
    new.on_finish = _deactivate
    if not _exit_hook:
        # A script that never calls finish() still gets its saved files, run.dir and summary aggregates
        # stored. That must happen before the interpreter's shutdown starts, because from then on thread
        # pools refuse new work (mlop stores media on one): threading's own exit hooks run before that,
        # as concurrent.futures uses them. atexit (after mlop's handler, so run first) is the fallback.
        _exit_hook = True
        register = getattr(threading, "_register_atexit", None)
        try:
            register(finish) if register is not None else atexit.register(finish)
        except RuntimeError:  # the interpreter is shutting down already
            atexit.register(finish)


def _deactivate(old: Run) -> None:
    global run, config, summary
    if run is old:
        run, config, summary = None, _NoRun("wandb.config"), _NoRun("wandb.summary")


def _current(call: str) -> Run:
    if run is None:
        raise Error(f"You must call wandb.init() before wandb.{call}()")
    return run


def log(
    data: Mapping[str, Any], step: int | None = None, commit: bool | None = None, sync: bool | None = None
) -> None:
    """``wandb.log`` on ``wandb.run``; see :meth:`Run.log`."""
    _current("log").log(data, step=step, commit=commit)


def finish(exit_code: int | None = None, quiet: bool | None = None) -> None:
    """``wandb.finish``: finish ``wandb.run`` if there is one."""
    if run is not None:
        run.finish(exit_code)


def watch(
    models: Any,
    criterion: Any = None,
    log: str | None = "gradients",
    log_freq: int = 1000,
    idx: int | None = None,
    log_graph: bool = False,
) -> None:
    """``wandb.watch`` on ``wandb.run``; see :meth:`Run.watch`."""
    _current("watch").watch(models, criterion, log=log, log_freq=log_freq, idx=idx, log_graph=log_graph)


def unwatch(models: Any = None) -> None:
    _current("unwatch").unwatch(models)


def define_metric(name: str, step_metric: str | Metric | None = None, **kwargs: Any) -> Metric:
    """``wandb.define_metric`` on ``wandb.run``; see :meth:`Run.define_metric`."""
    return _current("define_metric").define_metric(name, step_metric, **kwargs)


def alert(
    title: str, text: str, level: str | AlertLevel | None = None, wait_duration: float | Any = None
) -> None:
    """``wandb.alert`` on ``wandb.run``; see :meth:`Run.alert`."""
    _current("alert").alert(title, text, level, wait_duration)


def log_artifact(artifact_or_path: Artifact | str | os.PathLike[str], **kwargs: Any) -> Artifact:
    return _current("log_artifact").log_artifact(artifact_or_path, **kwargs)


def save(
    glob_str: str | os.PathLike[str], base_path: str | os.PathLike[str] | None = None, policy: str = "live"
) -> bool:
    """``wandb.save`` on ``wandb.run``; see :meth:`Run.save`."""
    return _current("save").save(glob_str, base_path, policy)


def login(
    key: str | None = None,
    relogin: bool | None = None,
    host: str | None = None,
    anonymous: str | None = None,
    timeout: int | None = None,
    verify: bool = False,
    **kwargs: Any,
) -> bool:
    """``wandb.login``: store an mlop API key (as ``mlop login`` does), or say whether one is configured.

    Args:
        key: an mlop key; stored for later runs when given.
        host: the mlop server the key is for (default: the hosted service).
        verify: check the key with the server before storing it.

    Returns:
        Whether a key is configured now (given, stored, or in ``MLOP_API_KEY``).

    Raises:
        mlop.AuthError: ``verify`` and the server refused the key.
    """
    from mlop._online._auth import Credentials, load_credentials, save

    if key:
        if verify:
            from mlop._online._server import ServerInterface
            from mlop._settings import Settings as MlopSettings

            with ServerInterface(MlopSettings(host=host).urls(), key) as server:
                server.slug(timeout=float(timeout or 15))
        save(Credentials(key, host))
        return True
    return bool(os.environ.get("MLOP_API_KEY") or os.environ.get("MLOP_API_TOKEN") or load_credentials())


def __getattr__(name: str) -> Any:
    if name.startswith("_"):
        raise AttributeError(name)
    raise _missing(f"wandb.{name}")
