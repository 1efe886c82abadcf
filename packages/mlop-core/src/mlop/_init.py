"""``mlop.init()`` and the module-level shortcuts that act on the newest run."""

from __future__ import annotations

import difflib
import json
import logging
import os
import string
import time
from pathlib import Path
from typing import Any, Final, cast

from mlop import _hooks, _runs
from mlop._exceptions import ConfigError, NoRunError, RunExistsError
from mlop._noop import NoopOp
from mlop._op import Op, SharedRankOp
from mlop._services import start_services
from mlop._settings import _ALIASES as _setting_aliases
from mlop._settings import _FIELDS as _settings_fields
from mlop._settings import Settings, resolve_settings
from mlop._store import STORE_FILE, Store
from mlop._values import has_surrogate, jsonable

__all__ = ["alert", "finish", "init", "log", "run_directory", "watch"]

logger = logging.getLogger("mlop")

_ID_ALPHABET = string.ascii_lowercase + string.digits
_MAX_NAME: Final = 128
_MAX_TEXT: Final = 512  # the longest run name or tag a server takes
_NAME_PUNCTUATION: Final = frozenset("._- ")


def _new_run_id() -> str:
    # os.urandom rather than the secrets module: that one imports hashlib, which import mlop cannot afford.
    return "".join(_ID_ALPHABET[b % len(_ID_ALPHABET)] for b in os.urandom(8))


def run_directory(root: str | os.PathLike[str] | None, project: str, run_id: str) -> Path:
    """Where a run lives: ``<root>/.mlop/<project>/<run id>/``."""
    base = Path(root) if root is not None else Path.cwd()
    return base.expanduser() / ".mlop" / project / run_id


def _check_name(what: str, value: str) -> None:
    """A project name or run id names a folder and travels in a header: letters and digits (any script),
    ``.``, ``_``, ``-`` and spaces, starting with a letter or digit, at most 128 characters."""
    ok = (
        0 < len(value) <= _MAX_NAME
        and value[0].isalnum()
        and all(c.isalnum() or c in _NAME_PUNCTUATION for c in value)
        and not has_surrogate(value)
    )
    if not ok:
        bad = sorted({c for c in value if not (c.isalnum() or c in _NAME_PUNCTUATION)})
        shown = f" (it holds {', '.join(repr(c) for c in bad[:5])})" if bad else ""
        raise ConfigError(
            f"{what} {value!r} must be 1-{_MAX_NAME} letters, digits, '.', '_', '-' or spaces, "
            f"starting with a letter or digit{shown}"
        )


def _check_text(what: str, value: str) -> None:
    """A run name or tag may hold any text that is valid Unicode (it travels as UTF-8)."""
    if has_surrogate(value):
        raise ConfigError(f"{what} {value!r} holds a lone surrogate, which is not valid Unicode text")
    if len(value) > _MAX_TEXT:
        raise ConfigError(f"{what} is longer than {_MAX_TEXT} characters")


class UnknownArgumentError(ConfigError, TypeError):
    """A keyword of ``init()`` that is neither a parameter nor a setting (a TypeError, as Python's own)."""


def _literal(value: Any) -> str:
    """``value`` as one would type it (JSON where it is JSON, else Python's repr)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return repr(value) if isinstance(value, bool) or value is None else json.dumps(value)
    return repr(value)


def _check_keywords(kwargs: dict[str, Any]) -> None:
    """Refuse keywords that are not settings, suggesting ``config=`` for what looks like a hyperparameter."""
    unknown = [k for k in kwargs if k not in _settings_fields and k not in _setting_aliases]
    if not unknown:
        return
    key = unknown[0]
    close = difflib.get_close_matches(key, [*_settings_fields, *_setting_aliases], n=1)
    hint = (
        f"did you mean {close[0]!r}? If it is a hyperparameter, " if close else "if it is a hyperparameter, "
    )
    example = ", ".join(f'"{k}": {_literal(kwargs[k])}' for k in unknown)
    raise UnknownArgumentError(
        f"init() got an unexpected keyword argument {key!r} (unknown setting {key!r}); {hint}"
        f"pass it as config={{{example}}}"
    )


#: Seconds init() waits at most for the run's writer process to be ready (the rows wait in memory for it
#: meanwhile, then its thread writes them).
START_WAIT: Final = 2.0


def init(
    project: str | None = None,
    name: str | None = None,
    config: dict[str, Any] | Any | None = None,
    tags: str | list[str] | None = None,
    dir: str | os.PathLike[str] | None = None,
    settings: Settings | dict[str, Any] | None = None,
    run_id: str | None = None,
    resume: bool = False,
    **kwargs: Any,
) -> Op:
    """Start a run and return it.

    Args:
        project: the project the run belongs to (``MLOP_PROJECT``, else ``"default"``).
        name: the run's display name; by default its id.
        config: hyperparameters: a dict, or an object (argparse.Namespace, a dataclass) turned into one.
        tags: one tag or a list.
        dir: the folder under which ``.mlop/<project>/<run id>/`` is made (``save_dir`` is an alias).
        settings: a :class:`mlop.Settings` or a dict of settings.
        run_id: the run's id (its external id on the server); by default a new random one.
        resume: continue the run with ``run_id`` instead of refusing an id that exists.
        **kwargs: any other setting, by name (``mode="offline"``, ``host=...``).

    Returns:
        The run. On a rank other than 0 of a distributed job, and in ``disabled`` mode, a run whose
        methods do nothing.

    Raises:
        ConfigError: an unknown setting, a bad value, or a bad project or run id.
        RunExistsError: ``run_id`` names a run that exists and ``resume`` is False.
    """
    _check_keywords(kwargs)
    if "save_dir" in kwargs:
        dir = dir if dir is not None else kwargs.pop("save_dir")
        kwargs.pop("save_dir", None)
    keywords = {
        "project": project,
        "name": name,
        "dir": os.fspath(dir) if dir is not None else None,
        "run_id": run_id,
        **kwargs,
    }
    if resume:
        keywords["resume"] = True
    resolved = resolve_settings(keywords, settings)
    logging.getLogger("mlop").setLevel(
        resolved.debug_level if resolved.debug_level in logging.getLevelNamesMapping() else "WARNING"
    )
    config_dict = _config_dict(config)
    tag_list = [tags] if isinstance(tags, str) else [str(t) for t in (tags or [])]

    rank = _hooks.rank() if resolved.run_mode != "disabled" else None
    if rank is None or (rank.rank != 0 and not resolved.shared):
        noop = NoopOp(resolved, config_dict, tag_list)
        _runs.register(noop)
        return noop  # type: ignore[return-value]

    _check_name("project", resolved.project)
    rid = resolved.run_id or _new_run_id()
    _check_name("run_id", rid)
    if resolved.name is not None:
        _check_text("run name", resolved.name)
    for tag in tag_list:
        _check_text("tag", tag)
        if not tag:
            raise ConfigError("a tag must not be empty")
    run_dir = run_directory(resolved.dir, resolved.project, rid)
    exists = (run_dir / STORE_FILE).exists()
    primary = rank.rank == 0
    if exists and not resolved.resume and not resolved.shared:
        raise RunExistsError(f"run {rid!r} exists in {run_dir}; pass resume=True to continue it")

    store = Store(run_dir, create=True)
    start_step = 0
    meta: dict[str, Any] = {}
    if exists:
        meta = store.meta()
        start_step = int(meta.get("last_step", -1)) + 1
        merged = dict(meta.get("config") or {})
        merged.update(config_dict)
        config_dict = merged
        tag_list = list(dict.fromkeys([*(meta.get("tags") or []), *tag_list]))
        resolved.name = resolved.name or meta.get("name")
    now = time.time()
    info: dict[str, Any] = {
        "id": rid,
        "name": resolved.name or rid,
        "project": resolved.project,
        "mode": resolved.run_mode,
        "status": "RUNNING",
        "statusMetadata": None,
        "config": config_dict,
        "tags": tag_list,
        "rank": {"rank": rank.rank, "local_rank": rank.local_rank, "world_size": rank.world_size},
        "pid": os.getpid(),
    }
    if not exists or "created_at" not in meta:  # a shared run's other ranks may have made the file
        info["created_at"] = now
    if primary:  # every rank of a shared run attaches to it; rank 0 records what the run is
        # Resumed where its store is not (another machine), a run that names no tags keeps the server's:
        # a tags record would replace them with an empty list.
        keep_tags = resolved.resume and not exists and not tag_list
        store.write(
            [
                ("config", [(now, config_dict)]),
                ("tags", [] if keep_tags else [(now, tag_list)]),
                ("status", [(now, "RUNNING", None)]),
            ],
            info,
        )
    op = (Op if primary else SharedRankOp)(
        settings=resolved,
        run_id=rid,
        run_dir=run_dir,
        store=store,
        config=config_dict,
        tags=tag_list,
        start_step=start_step,
        resumed=exists,
    )
    uploader = None
    if resolved.run_mode == "online" and primary:  # rank 0's uploader sends what every rank stored
        from mlop._online._client import spawn_uploader

        uploader = spawn_uploader(op, new_run=not exists)
    _runs.register(op)
    op._services = start_services(op)
    if uploader is not None:
        uploader.start(new_run=not exists)  # waits at most x_init_timeout; raises RunExistsError
        op._uploader = uploader
    _hooks.run_started(op)
    # The writer process starts beside init() (about 30 ms of CPU on another core); a loop that began
    # logging before it was ready would share two cores three ways for that while (bench/README.md).
    op._writer.wait_started(START_WAIT)
    return op


def _config_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    problems: list[str] = []
    out = jsonable(config, problems=problems)
    for problem in dict.fromkeys(problems):
        logger.warning("mlop: the config holds %s", problem)
    if not isinstance(out, dict):
        raise ConfigError(f"config must be a dict or an object with attributes, got {type(config).__name__}")
    return out


def _newest(call: str) -> Op:
    if not _runs.ops:
        raise NoRunError(f"mlop.{call}() needs a run: call mlop.init() first")
    return cast("Op", _runs.ops[-1])  # the registry holds what init() registered


def log(
    data: dict[str, Any], step: int | None = None, commit: bool | None = None, timestamp: float | None = None
) -> None:
    """Log to the newest run; see :meth:`mlop.Run.log`."""
    _newest("log").log(data, step=step, commit=commit, timestamp=timestamp)


def finish(code: int | None = None) -> None:
    """Finish the newest run; see :meth:`mlop.Run.finish`."""
    _newest("finish").finish(code)


def watch(model: Any, *args: Any, **kwargs: Any) -> Any:
    """Watch a model in the newest run; see :meth:`mlop.Run.watch`."""
    return _newest("watch").watch(model, *args, **kwargs)


def alert(*args: Any, **kwargs: Any) -> None:
    """Send an alert from the newest run; see :meth:`mlop.Run.alert`."""
    _newest("alert").alert(*args, **kwargs)
