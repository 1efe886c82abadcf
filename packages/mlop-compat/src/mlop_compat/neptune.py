"""Neptune → mlop: every ``neptune_scale.Run`` also logs to an mlop run, or to mlop alone.

>>> import mlop.compat.neptune
>>> mlop.compat.neptune.enable()          # or set MLOP_NEPTUNE_COMPAT=1 and import nothing
>>> from neptune_scale import Run
>>> run = Run(experiment_name="exp")      # unchanged Neptune code from here on
>>> run.log_metrics({"loss": 0.5}, step=0)
>>> run.close()

``enable()`` patches ``neptune_scale.Run`` in place, so every run made after it carries an mlop run,
whatever name the script imported the class under:

- ``log_metrics`` → metrics at the same step and time (a fractional step is stored at its floor;
  previews, which Neptune later replaces, are not mirrored); ``log_configs`` (and the legacy ``log``) →
  the config, keys as Neptune writes them (``parameters/lr``); ``log_string_series`` → string series;
  ``log_histograms`` → histograms (counts; densities are skipped with a warning); ``assign_files`` /
  ``log_files`` → files (images as images); ``add_tags`` / ``remove_tags`` → the run's tags (group tags
  too); ``close`` → COMPLETED, ``terminate`` → TERMINATED, leaving a ``with`` block on an exception →
  FAILED.
- A failure on the mlop side is logged and never reaches the Neptune call; a Neptune call that raises
  still reaches mlop first.
- ``enable(mlop_only=True)`` (or ``MLOP_NEPTUNE_COMPAT=mlop-only``), for teams whose Neptune service is
  gone: Neptune runs in its ``disabled`` mode, so its calls are checked and answered locally (no token or
  server needed), and everything goes to mlop.

The mlop run's project is the one given to ``enable(project=...)``, else ``MLOP_PROJECT``, else the
project part of Neptune's ``workspace/project``; its id is Neptune's run id when mlop accepts it (so a
Neptune run continued later continues the same mlop run) and its name the experiment name or run id.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import math
import mimetypes
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Final

__all__ = ["COMPAT_ENV", "disable", "enable", "is_enabled"]

logger = logging.getLogger("mlop.compat.neptune")  # the name it had in mlop-core

#: ``1`` (or ``true``, ``dual``): log to Neptune and mlop; ``mlop-only``: to mlop alone.
COMPAT_ENV: Final = "MLOP_NEPTUNE_COMPAT"
_ONLY_VALUES: Final = frozenset({"mlop-only", "mlop_only", "only", "mlop"})
_ON_VALUES: Final = frozenset({"1", "true", "yes", "on", "dual"})
_BRIDGE: Final = "_mlop_bridge"
_IMAGE_TYPES: Final = frozenset({"png", "jpg", "jpeg", "gif", "webp", "bmp"})
_SAFE_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,127}$")
#: The calls whose time, when the script gives none, is fixed once so that both sides store the same one.
_TIMED: Final = frozenset({"log_metrics", "log_string_series", "log_histograms", "log_files"})
_PATCHED: Final = (
    "__init__",
    "__exit__",
    "log_metrics",
    "log_configs",
    "log_string_series",
    "log_histograms",
    "assign_files",
    "log_files",
    "add_tags",
    "remove_tags",
    "log",
    "close",
    "terminate",
    "get_run_url",
    "get_experiment_url",
)


@dataclasses.dataclass
class _State:
    run_class: Any = None
    originals: dict[str, Any] = dataclasses.field(default_factory=dict)
    mlop_only: bool = False
    init_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)


_state = _State()
_lock = threading.Lock()


def is_enabled() -> bool:
    """Whether ``neptune_scale.Run`` is patched."""
    return _state.run_class is not None


def enable(mlop_only: bool | None = None, **init_kwargs: Any) -> None:
    """Make every ``neptune_scale.Run`` log to an mlop run too (or only).

    Args:
        mlop_only: send to mlop alone and answer Neptune's calls locally; by default from
            ``MLOP_NEPTUNE_COMPAT`` (``mlop-only``), else False.
        **init_kwargs: passed to ``mlop.init`` for each run (``project``, ``dir``, ``mode``, ``host``...).

    Raises:
        ImportError: neptune-scale is not installed.
    """
    from neptune_scale.api.run import Run

    if mlop_only is None:
        mlop_only = os.environ.get(COMPAT_ENV, "").strip().lower() in _ONLY_VALUES
    with _lock:
        _state.mlop_only = bool(mlop_only)
        _state.init_kwargs = dict(init_kwargs)
        if _state.run_class is Run:
            return
        _state.run_class = Run
        for name in _PATCHED:
            original = Run.__dict__[name]
            _state.originals[name] = original
            setattr(Run, name, _patched(name, original))


def disable() -> None:
    """Undo :func:`enable`; runs made before keep their mlop runs until they close."""
    with _lock:
        run_class, _state.run_class = _state.run_class, None
        if run_class is None:
            return
        for name, original in _state.originals.items():
            setattr(run_class, name, original)
        _state.originals.clear()


# -- the bridge from one Neptune run to its mlop run -----------------------------------------------------


def _seconds(timestamp: Any) -> float | None:
    if timestamp is None:
        return None
    if isinstance(timestamp, datetime):
        return timestamp.timestamp()
    return float(timestamp)


class _Bridge:
    """The mlop run of one Neptune run, and the mapping of Neptune's calls onto it."""

    def __init__(self, arguments: Mapping[str, Any], mlop_only: bool) -> None:
        import mlop

        self.mlop_only = mlop_only
        self.warned: set[str] = set()
        self.last_step = 0
        self.scratch: Path | None = None
        keywords = dict(_state.init_kwargs)
        neptune_project = arguments.get("project") or os.environ.get("NEPTUNE_PROJECT") or ""
        project = keywords.pop("project", None) or os.environ.get("MLOP_PROJECT")
        if not project and neptune_project:
            project = re.sub(r"[^A-Za-z0-9._ -]+", "-", str(neptune_project).rsplit("/", 1)[-1]).strip("-. ")
        run_id = arguments.get("run_id")
        self.op = mlop.init(
            project=project or None,
            name=keywords.pop("name", None) or arguments.get("experiment_name") or run_id,
            run_id=run_id if isinstance(run_id, str) and _SAFE_ID.match(run_id) else None,
            resume=True,
            **keywords,
        )

    def warn_once(self, key: str, message: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            logger.warning("mlop.compat.neptune: %s", message)

    def step(self, value: Any) -> int:
        """A Neptune step (int or float, or None) as an mlop step."""
        if value is None:
            return self.last_step
        number = float(value)
        if not math.isfinite(number) or number < 0:
            self.warn_once("<step>", f"step {value!r} is not a non-negative number; stored at step 0")
            return 0
        step = math.floor(number)
        if step != number:
            self.warn_once("<fraction>", f"mlop steps are integers: step {value!r} is stored at step {step}")
        self.last_step = max(self.last_step, step)
        return step

    def log(self, data: Mapping[str, Any], step: Any, timestamp: Any) -> None:
        from mlop_compat import log_at

        if data:
            log_at(self.op, data, self.step(step), _seconds(timestamp))

    # -- the calls ----------------------------------------------------------------------------------

    def log_metrics(self, a: Mapping[str, Any]) -> None:
        if a.get("preview"):
            return  # a provisional value that Neptune replaces; the final one is mirrored
        self.log(dict(a["data"]), a["step"], a.get("timestamp"))

    def log_configs(self, a: Mapping[str, Any]) -> None:
        data = a["data"]
        if data is None:
            return
        if dataclasses.is_dataclass(data) and not isinstance(data, type):
            data = dataclasses.asdict(data)
        data = dict(data)
        if a.get("flatten"):
            from mlop._values import flatten

            data = flatten(data)
        if a.get("cast_unsupported"):
            data = {k: _cast(v) for k, v in data.items()}
        self.op.update_config(data)

    def log_string_series(self, a: Mapping[str, Any]) -> None:
        self.log({k: str(v) for k, v in dict(a["data"]).items()}, a["step"], a.get("timestamp"))

    def log_histograms(self, a: Mapping[str, Any]) -> None:
        import mlop

        values: dict[str, Any] = {}
        for key, histogram in dict(a["histograms"]).items():
            if getattr(histogram, "counts", None) is None:
                self.warn_once(
                    f"density:{key}", f"histogram {key!r} has densities, not counts; mlop skips it"
                )
                continue
            values[key] = mlop.Histogram((histogram.counts_as_list(), histogram.bin_edges_as_list()))
        self.log(values, a["step"], a.get("timestamp"))

    def assign_files(self, a: Mapping[str, Any]) -> None:
        self.log(self._files(a["files"]), None, None)

    def log_files(self, a: Mapping[str, Any]) -> None:
        self.log(self._files(a["files"]), a["step"], a.get("timestamp"))

    def add_tags(self, a: Mapping[str, Any]) -> None:
        self.op.add_tags([str(t) for t in a["tags"]])

    def remove_tags(self, a: Mapping[str, Any]) -> None:
        self.op.remove_tags([str(t) for t in a["tags"]])

    def log_legacy(self, a: Mapping[str, Any]) -> None:
        if a.get("configs"):
            self.op.update_config(dict(a["configs"]))
        if a.get("metrics"):
            self.log(dict(a["metrics"]), a.get("step"), a.get("timestamp"))
        for tags in (a.get("tags_add") or {}).values():
            self.op.add_tags([str(t) for t in tags])
        for tags in (a.get("tags_remove") or {}).values():
            self.op.remove_tags([str(t) for t in tags])

    def finish(self, status: str, metadata: dict[str, Any] | None = None) -> None:
        if status == "COMPLETED":
            self.op.finish()
        else:
            self.op._end(status, metadata)
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def _files(self, files: Mapping[str, Any]) -> dict[str, Any]:
        import mlop

        out: dict[str, Any] = {}
        for key, value in dict(files).items():
            source, mime = (value.source, value.mime_type) if hasattr(value, "source") else (value, None)
            if isinstance(source, (bytes, bytearray)):
                if self.scratch is None:
                    self.scratch = Path(tempfile.mkdtemp(prefix="mlop-neptune-"))
                ext = (mimetypes.guess_extension(mime) if mime else None) or ".bin"
                path = self.scratch / f"{len(list(self.scratch.iterdir()))}-{key.rsplit('/', 1)[-1]}{ext}"
                path.write_bytes(bytes(source))
            else:
                path = Path(source)
            if path.suffix[1:].lower() in _IMAGE_TYPES or (mime or "").startswith("image/"):
                try:
                    out[key] = mlop.Image(path)
                    continue
                except (ValueError, ImportError):
                    pass  # not an image pillow reads (or no pillow): kept as a plain file
            out[key] = mlop.File(path)
        return out


def _cast(value: Any) -> Any:
    if isinstance(value, (float, bool, int, str, datetime)):
        return value
    if isinstance(value, (list, set, tuple)) and all(isinstance(v, str) for v in value):
        return value
    return "" if value is None else str(value)


# -- the patched methods -----------------------------------------------------------------------------------

_MIRRORS: Final[dict[str, Callable[[_Bridge, Mapping[str, Any]], None]]] = {
    "log_metrics": _Bridge.log_metrics,
    "log_configs": _Bridge.log_configs,
    "log_string_series": _Bridge.log_string_series,
    "log_histograms": _Bridge.log_histograms,
    "assign_files": _Bridge.assign_files,
    "log_files": _Bridge.log_files,
    "add_tags": _Bridge.add_tags,
    "remove_tags": _Bridge.remove_tags,
    "log": _Bridge.log_legacy,
}


def _bridge(run: Any) -> _Bridge | None:
    bridge: _Bridge | None = run.__dict__.get(_BRIDGE)
    return bridge


def _mirror(run: Any, name: str, original: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Repeat a Neptune call on the mlop run; never raises."""
    bridge = _bridge(run)
    if bridge is None:
        return
    try:
        bound = inspect.signature(original).bind(run, *args, **kwargs)
    except TypeError:
        return  # Neptune itself rejects these arguments and will say so
    bound.apply_defaults()
    try:
        _MIRRORS[name](bridge, bound.arguments)
    except Exception as exc:  # broad: a failure on the mlop side must never break the Neptune call
        bridge.warn_once(f"call:{name}", f"could not log {name} to mlop ({exc!r}); Neptune is unaffected")


def _finish(run: Any, status: str, metadata: dict[str, Any] | None = None) -> None:
    bridge = _bridge(run)
    if bridge is None:
        return
    try:
        bridge.finish(status, metadata)
    except Exception:  # broad: finishing the mlop run must never break Neptune's close
        logger.exception("mlop.compat.neptune could not finish the mlop run")


def _patched(name: str, original: Any) -> Any:
    if name == "__init__":
        return _patched_init(original)
    if name in ("close", "terminate"):
        status = "COMPLETED" if name == "close" else "TERMINATED"

        @functools.wraps(original)
        def end(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                return original(self, *args, **kwargs)
            finally:
                _finish(self, status)

        return end
    if name == "__exit__":

        @functools.wraps(original)
        def exit_(self: Any, exc_type: Any, exc: Any, tb: Any) -> Any:
            if exc is not None:
                from mlop._status import exception_status

                _finish(self, *exception_status(exc_type, exc, tb))
            return original(self, exc_type, exc, tb)

        return exit_
    if name in ("get_run_url", "get_experiment_url"):

        @functools.wraps(original)
        def url(self: Any, *args: Any, **kwargs: Any) -> Any:
            bridge = _bridge(self)
            if bridge is not None and bridge.mlop_only:
                return bridge.op.url or str(bridge.op.dir)
            return original(self, *args, **kwargs)

        return url

    timed = name in _TIMED

    @functools.wraps(original)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        if timed and kwargs.get("timestamp") is None and _bridge(self) is not None:
            kwargs["timestamp"] = datetime.now()
        _mirror(self, name, original, args, kwargs)
        return original(self, *args, **kwargs)

    return method


def _patched_init(original: Any) -> Any:
    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        mlop_only = _state.mlop_only
        if mlop_only:
            # Neptune checks every call in disabled mode but keeps and sends nothing: no token, no server.
            kwargs["mode"] = "disabled"
            if not (kwargs.get("project") or os.environ.get("NEPTUNE_PROJECT")):
                kwargs["project"] = "mlop/" + (os.environ.get("MLOP_PROJECT") or "default")
        original(self, *args, **kwargs)
        try:
            bound = dict(inspect.signature(original).bind(self, *args, **kwargs).arguments)
            # What Neptune settled on: the id it generated, the project from NEPTUNE_PROJECT.
            bound["run_id"] = getattr(self, "_run_id", None) or bound.get("run_id")
            bound["project"] = getattr(self, "_project", None) or bound.get("project")
            self.__dict__[_BRIDGE] = _Bridge(bound, mlop_only)
        except Exception as exc:
            if mlop_only:  # mlop is the only destination: losing it silently is not an option
                raise
            # broad: in dual mode a failure on the mlop side must never break the Neptune run
            logger.warning(
                "mlop.compat.neptune: no mlop run for this Neptune run (%r); Neptune is unaffected", exc
            )

    return __init__


def _autoenable() -> None:
    """Honour ``MLOP_NEPTUNE_COMPAT`` when this module is imported."""
    value = os.environ.get(COMPAT_ENV, "").strip().lower()
    if value in _ON_VALUES or value in _ONLY_VALUES:
        try:
            enable()
        except ImportError:
            logger.warning("mlop.compat.neptune: %s is set but neptune-scale is not installed", COMPAT_ENV)
    elif value not in ("", "0", "false", "no", "off"):
        logger.warning(
            "mlop.compat.neptune: %s=%r is not understood (use 1 or mlop-only); Neptune is not patched",
            COMPAT_ENV,
            value,
        )


_autoenable()
