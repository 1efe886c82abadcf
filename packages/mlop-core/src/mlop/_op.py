"""The run: what ``mlop.init()`` returns."""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from mlop import _hooks
from mlop._loggable import Loggable, MediaSink
from mlop._settings import Settings
from mlop._status import exception_status
from mlop._store import Store
from mlop._summary import Summary, summary_of
from mlop._values import (
    MAX_INT,
    MAX_KEY,
    MAX_STEP,
    flatten,
    has_surrogate,
    jsonable,
    key_problem,
    number_problem,
)
from mlop._writer import Writer

__all__ = ["FINAL_STATUSES", "Op", "SharedRankOp"]

_now: Final = time.time

logger = logging.getLogger("mlop")

FINAL_STATUSES: Final = frozenset({"COMPLETED", "FAILED", "TERMINATED", "CANCELLED"})
_MAX_TAGS: Final = 50


def _merge(into: dict[str, Any], delta: Mapping[str, Any]) -> None:
    for key, value in delta.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def _tag_list(tags: str | Iterable[str] | None) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, str):
        return [tags]
    return [str(t) for t in tags]


class Op:
    """A live run. Create it with :func:`mlop.init`; log with :meth:`log`; end it with :meth:`finish`.

    ``Op`` is also exported as ``mlop.Run``.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        run_id: str,
        run_dir: Path,
        store: Store,
        config: dict[str, Any],
        tags: list[str],
        start_step: int = 0,
        resumed: bool = False,
    ) -> None:
        self.settings = settings
        self.id = run_id
        self.name: str = settings.name or run_id
        self.project = settings.project
        self.dir = run_dir
        self.resumed = resumed
        self.status = "RUNNING"
        self.config: dict[str, Any] = config
        self._tags = tags
        self._store = store
        self._writer = Writer(store, settings.x_flush_interval, process=settings.x_writer_process)
        # Media waiting to be encoded may take the workers at most half the finish timeout, so that
        # finish() stores every value logged and still leaves the uploader its time.
        self._sink = MediaSink(run_dir, self._writer.add, max_drain=settings.x_finish_timeout / 2)
        self._step = start_step
        # The writer never replaces this list (it deletes what it wrote), so the bound method stays valid.
        self._append_metrics = self._writer.metrics.append
        self._pending: dict[str, Any] = {}
        self._warned: set[str] = set()
        # Keys checked against the server's limits (see _values.key_problem): the hot path's one set test.
        self._keys_ok: set[str] = set()
        self._finished = False
        self._forked = False
        self._closed = False  # finished or forked: the one flag log() checks
        self._finish_lock = threading.RLock()
        self._watches: list[Any] = []
        self._uploader: Any = None
        self.url: str | None = None  # the run's page on the server, once the uploader knows it
        self._alert_last: dict[str, float] = {}
        self.alerts_dropped: dict[str, int] = {}
        self._services: list[Any] = []

    #: False on a rank other than 0 of a shared run (:class:`SharedRankOp`): rank 0 logs the user's values.
    primary: bool = True

    def __repr__(self) -> str:
        return f"<mlop.Run {self.project}/{self.name} id={self.id} status={self.status}>"

    @property
    def step(self) -> int:
        """The step of the last values logged; -1 before the first ``log()``."""
        return self._step - 1

    # -- logging: the hot path ------------------------------------------------------------------------

    def log(
        self,
        data: Mapping[str, Any],
        step: int | None = None,
        commit: bool | None = None,
        timestamp: float | None = None,
    ) -> None:
        """Log a dict of values at a step.

        Args:
            data: keys to values: numbers (bools as 0/1, NaN and infinities kept), strings (a string
                series), nested dicts (flattened with ``/``), mlop data types or lists of them.
            step: the step; by default the one after the last. A lower step than the last is kept.
            commit: ``False`` holds the values and merges them into the next call that commits.
            timestamp: seconds since the epoch; by default now.

        Never raises: a value that cannot be logged is skipped with a warning naming its key.
        """
        if self._closed:
            self._warn_closed()
            return
        try:
            now = _now()
            raw: Any = data
            if type(raw) is not dict or commit is not None or self._pending:
                raw = self._prepare(raw, commit)
                if raw is None:
                    return
            if step is None:
                step = self._step
            elif type(step) is not int or step < self._step - 1 or step < 0 or step > MAX_STEP:
                step = self._check_step(step)
            self._step = step + 1
            when = now if timestamp is None else self._check_time(timestamp, now)
            # Keys already checked against the server's limits pass in one set operation (C speed);
            # then each value's type, as before the checks existed.
            if not self._keys_ok.issuperset(raw):
                values = self._convert(raw, step, when)
            else:
                for key, value in raw.items():
                    kind = type(value)
                    if type(key) is not str or (
                        kind is not float and (kind is not int or not -MAX_INT <= value <= MAX_INT)
                    ):
                        values = self._convert(raw, step, when)
                        break
                else:
                    values = raw.copy()
            if values:
                self._append_metrics((step, when, values))
            if now >= self._writer.deadline:  # a packing turn is due (bounded; see _writer.py)
                self._writer.tick()
        except Exception:  # broad: log() must never raise into the training loop after init()
            logger.exception("mlop.log failed; the values of this call were skipped")

    def _prepare(self, data: Any, commit: bool | None) -> dict[str, Any] | None:
        """The rarer shapes of a log() call: a mapping that is not a dict, and commit=False/True."""
        if type(data) is not dict:
            if not isinstance(data, Mapping):
                self._warn_once("<data>", f"run.log takes a dict, not {type(data).__name__}; ignored")
                return None
            data = dict(data)
        prepared: dict[str, Any] = data
        if commit is False:
            self._pending.update(prepared)
            return None
        if self._pending:
            prepared = {**self._pending, **prepared}
            self._pending = {}
        return prepared

    def _check_step(self, step: Any) -> int:
        try:
            value = int(step.item() if hasattr(step, "item") else step)
            if isinstance(step, bool) or value != step or value < 0 or value > MAX_STEP:
                raise ValueError(step)
        except (TypeError, ValueError, OverflowError):
            self._warn_once(
                "<step>",
                f"step must be an integer from 0 to 2**63-1, got {step!r}; using {self._step}",
            )
            return self._step
        if value < self._step - 1:
            self._warn_once(
                "<lower step>",
                f"step {value} is lower than the last step {self._step - 1}; it is stored as given",
            )
        return value

    def _check_time(self, timestamp: Any, now: float) -> float:
        """A timestamp in seconds since the epoch that a server takes; else now, warned once."""
        try:
            when = float(timestamp)
            if 0.0 <= when < MAX_STEP / 1000:
                return when
        except (TypeError, ValueError, OverflowError):
            pass
        self._warn_once(
            "<timestamp>", f"timestamp must be seconds since the epoch, got {timestamp!r}; using now"
        )
        return now

    def _key_ok(self, key: str) -> bool:
        """Whether a server takes ``key``; a key it refuses is warned about once and its value skipped."""
        if key in self._keys_ok and type(key) is str:
            return True
        problem = key_problem(key)
        if problem is not None:
            shown = repr(key) if len(key) <= 80 else f"{key[:60]!r}... ({len(key)} characters)"
            self._warn_once(key, f"cannot log under {shown}: {problem}; the value was skipped")
            return False
        self._keys_ok.add(str(key))
        return True

    def _convert(self, data: Mapping[str, Any], step: int, now: float) -> dict[str, Any]:
        """The slow path of log(): everything that is not a plain int or float, and keys not yet checked.

        Plain numbers under string keys take a short way (a call's first 1,000 keys: 0.57 -> 0.2 ms).
        """
        metrics: dict[str, Any] = {}
        for key, value in data.items():
            kind = type(value)
            if type(key) is str and (kind is float or (kind is int and -MAX_INT <= value <= MAX_INT)):
                if self._key_ok(key):
                    metrics[key] = value
                continue
            self._convert_one(metrics, str(key), value, step, now)
        return metrics

    def _convert_one(self, metrics: dict[str, Any], key: str, value: Any, step: int, now: float) -> None:
        kind = type(value)
        if isinstance(value, Mapping):
            for sub_key, sub_value in flatten(value, key + "/").items():
                self._convert_one(metrics, sub_key, sub_value, step, now)
            return
        if not self._key_ok(key):
            return
        if kind is float or kind is int:
            self._put_number(metrics, key, value)
        elif kind is bool:
            metrics[key] = int(value)
        elif isinstance(value, str):
            if has_surrogate(value):
                self._warn_once(
                    key, f"the text under {key!r} holds a lone surrogate (not valid Unicode); skipped"
                )
                return
            self._writer.add("data", (step, now, key, "string-series", str(value)))
        elif isinstance(value, Loggable):
            self._log_loggable(key, [value], step, now, single=True)
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Loggable) for v in value):
            self._log_loggable(key, list(value), step, now, single=False)
        elif isinstance(value, (int, float)):  # subclasses of int and float (IntEnum, numpy.float64)
            self._put_number(metrics, key, float(value) if isinstance(value, float) else int(value))
        else:
            converted = self._scalar(value)
            if converted is None:
                converted = _hooks.convert(value)
                if converted is not None and converted is not value:
                    self._convert_one(metrics, key, converted, step, now)
                    return
                self._warn_bad_value(key, value)
            else:
                self._put_number(metrics, key, converted)

    def _put_number(self, metrics: dict[str, Any], key: str, value: int | float) -> None:
        problem = number_problem(value)
        if problem is not None:
            self._warn_once(key, f"cannot log {value!r:.40} under {key!r}: {problem}; skipped")
            return
        metrics[key] = value

    @staticmethod
    def _scalar(value: Any) -> float | int | None:
        """A numpy, torch or other scalar with ``.item()``, as a Python number; None otherwise."""
        item = getattr(value, "item", None)
        if item is None or not callable(item) or getattr(value, "ndim", 0) not in (0, None):
            return None
        try:
            out = item()
        except Exception:  # broad: .item() of a foreign object may raise anything
            return None
        if isinstance(out, bool):
            return int(out)
        return out if isinstance(out, (int, float)) else None

    def _log_loggable(self, key: str, values: list[Loggable], step: int, now: float, single: bool) -> None:
        for index, value in enumerate(values):
            try:
                items = value.mlop_items(self._sink, key, step, now, None if single else index)
            except Exception as exc:  # broad: a value that fails to store is skipped, the rest kept
                self._warn_once(key, f"could not log {type(value).__name__} under {key!r}: {exc}")
                continue
            for kind, item in items:
                self._writer.add(kind, item)

    def _warn_bad_value(self, key: str, value: Any) -> None:
        if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float)) for v in value):
            hint = "log a list of numbers as mlop.Histogram(values), or each number under its own key"
        elif value is None:
            hint = "None is not a value"
        else:
            hint = "log a number, a string, a dict or an mlop data type (mlop.Image, mlop.Histogram, ...)"
        self._warn_once(key, f"cannot log {type(value).__name__} under {key!r}; skipped: {hint}")

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning("mlop: %s", message)

    def _warn_closed(self) -> None:
        if self._forked:
            self._warn_once("<forked>", "run.log in a forked process (a DataLoader worker?) does nothing")
        else:
            self._warn_once("<finished>", f"run {self.name} is finished; log() does nothing")

    @property
    def summary(self) -> Summary:
        """The run's final values, a dict-like kept apart from the step series; ``open_run(...).summary``."""
        return summary_of(self)

    # -- config and tags ------------------------------------------------------------------------------

    @property
    def tags(self) -> list[str]:
        return list(self._tags)

    def update_config(self, config: Mapping[str, Any]) -> None:
        """Deep-merge ``config`` into the run's config. Values JSON cannot hold are converted."""
        if self._closed:
            return
        try:
            problems: list[str] = []
            delta = jsonable(dict(config), problems=problems)
            for problem in dict.fromkeys(problems):
                self._warn_once(f"<config {problem}>", f"the config holds {problem}")
            _merge(self.config, delta)
            self._writer.add("config", (time.time(), delta), meta={"config": self.config})
        except Exception:  # broad: a config update must never raise into the training loop
            logger.exception("mlop could not update the config")

    def add_tags(self, tags: str | Iterable[str]) -> None:
        """Add one tag or several; tags the run has already are ignored."""
        new = [t for t in dict.fromkeys(_tag_list(tags)) if t not in self._tags]
        if new:
            self._set_tags(self._tags + new)

    def remove_tags(self, tags: str | Iterable[str]) -> None:
        """Remove one tag or several; tags the run does not have are ignored."""
        gone = set(_tag_list(tags))
        if gone & set(self._tags):
            self._set_tags([t for t in self._tags if t not in gone])

    def _set_tags(self, tags: list[str]) -> None:
        if self._closed:
            return
        if any(has_surrogate(t) or not t or len(t) > MAX_KEY for t in tags):
            self._warn_once(
                "<bad tags>", f"tags must be 1-{MAX_KEY} characters of valid Unicode; the others were dropped"
            )
            tags = [t for t in tags if t and len(t) <= MAX_KEY and not has_surrogate(t)]
        if len(tags) > _MAX_TAGS:
            self._warn_once("<tags>", f"a run has at most {_MAX_TAGS} tags; the rest were dropped")
            tags = tags[:_MAX_TAGS]
        self._tags = tags
        self._writer.add("tags", (time.time(), list(tags)), meta={"tags": list(tags)})

    # -- models ---------------------------------------------------------------------------------------

    def watch(
        self,
        model: Any,
        log: str | None = "gradients",
        log_freq: int = 1000,
        log_graph: bool = True,
        bins: int = 64,
        **kwargs: Any,
    ) -> Any:
        """Record gradients and/or parameters of ``model`` and its graph (needs mlop-torch for torch)."""
        from mlop._exceptions import PluginError

        log_freq = int(kwargs.pop("freq", log_freq))
        if kwargs.pop("disable_graph", False):
            log_graph = False
        no_grad, no_param = kwargs.pop("disable_grad", False), kwargs.pop("disable_param", False)
        if no_grad or no_param:
            log = None if no_grad and no_param else ("parameters" if no_grad else "gradients")
        if kwargs:
            raise TypeError(f"watch() got unexpected arguments: {', '.join(sorted(kwargs))}")
        handle = _hooks.watch(self, model, log, log_freq, log_graph, bins)
        if handle is None:
            raise PluginError(
                f"no installed mlop integration can watch a {type(model).__module__}.{type(model).__name__}; "
                "for PyTorch models: pip install mlop-torch"
            )
        self._watches.append((model, handle))
        return handle

    def unwatch(self, model: Any = None) -> None:
        """Remove the hooks of ``watch`` from ``model`` (from every watched model when None)."""
        keep = []
        for watched, handle in self._watches:
            if model is None or watched is model:
                try:
                    handle.remove()
                except Exception:  # broad: detaching a plugin's hooks must not raise into user code
                    logger.exception("mlop could not remove the watch hooks")
            else:
                keep.append((watched, handle))
        self._watches = keep

    def log_graph(self, graph: Mapping[str, Any]) -> None:
        """Store a model graph payload (``{"format", "nodes"}``) for the run."""
        self._writer.add("graph", (time.time(), jsonable(dict(graph))), meta={"graph": jsonable(dict(graph))})

    def alert(
        self,
        message: str | None = None,
        title: str | None = None,
        level: str = "INFO",
        wait: float = 0.0,
        url: str | None = None,
        remote: bool = True,
        **kwargs: Any,
    ) -> None:
        """Record an alert for the run; online, the uploader sends it to the server or a webhook.

        Args:
            message: the alert's text (``text`` is the original client's name for it).
            title: a short title; by default the start of the message.
            level: ``INFO``, ``WARNING``, ``ERROR``...
            wait: the least time in seconds between two alerts of the same title; one that comes sooner
                is dropped and counted in ``run.alerts_dropped`` (``wait_duration`` is the original name).
                Never a sleep.
            url: a Slack or Discord webhook to send it to instead of the server (default: the
                ``url_webhook`` setting).
            remote: send it at all (False: only recorded in the run's store).
        """
        message = kwargs.pop("text", message)
        wait = float(kwargs.pop("wait_duration", wait))
        if kwargs:
            raise TypeError(f"alert() got unexpected arguments: {', '.join(sorted(kwargs))}")
        if self._closed:
            return
        title = title or (message or "alert")[:80]
        now = time.time()
        last = self._alert_last.get(title)
        if last is not None and now - last < wait:
            self.alerts_dropped[title] = self.alerts_dropped.get(title, 0) + 1
            return
        self._alert_last[title] = now
        alert = {
            "timestamp": int(now * 1000),
            "level": str(level).upper(),
            "title": title,
            "body": message or "",
            "email": bool(remote),
            "url": url,
            "remote": remote,
            "wait": wait,
        }
        self._writer.add("alert", (time.time(), alert))

    # -- the end --------------------------------------------------------------------------------------

    def finish(self, code: int | None = None) -> None:
        """End the run: write what is pending and set its status. Calling it again does nothing.

        Args:
            code: an exit code; None or 0 means COMPLETED, anything else FAILED.
        """
        if code:
            self._end(
                "FAILED", {"type": "ExitCode", "message": f"exit code {code}", "frames": [], "trace": ""}
            )
        else:
            self._end("COMPLETED", None)

    def _end(self, status: str, metadata: dict[str, Any] | None) -> None:
        with self._finish_lock:
            if self._closed:
                return
            self._finished = self._closed = True
        try:
            if self._pending:
                pending, self._pending = self._pending, {}
                self._closed = False  # let this last log() through
                self.log(pending)
                self._closed = True
            self.unwatch()
            for service in reversed(self._services):
                try:
                    service.stop()
                except Exception:  # broad: a service that fails to stop must not block the finish
                    logger.exception("mlop could not stop %r", service)
            # Media still waiting to be encoded gets the finish timeout (a few seconds after SIGTERM,
            # whose sender will not wait long); what has not started by then is dropped and counted.
            wait = self.settings.x_finish_timeout
            dropped = self._sink.close(timeout=min(wait, 5.0) if status == "TERMINATED" else wait)
            if dropped:
                logger.warning("mlop: %d logged media values were not encoded before the run ended", dropped)
            self.status = status
            now = time.time()
            if self.primary:  # a shared run's status and last step are rank 0's
                self._writer.add(
                    "status",
                    (now, status, metadata),
                    meta={
                        "status": status,
                        "statusMetadata": metadata,
                        "finished_at": now,
                        "last_step": self._step - 1,
                    },
                )
            self._writer.close()
            _hooks.run_finished(self, status)
            if self._uploader is not None:
                self._uploader.finish(self.settings.x_finish_timeout)
        except Exception:  # broad: finishing must end the run whatever failed on the way
            logger.exception("mlop could not finish the run cleanly")
        finally:
            self._store.close()
            from mlop import _runs

            _runs.forget(self)

    def __enter__(self) -> Op:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None or exc is None:
            self.finish()
        else:
            self._end(*exception_status(exc_type, exc, tb))


class SharedRankOp(Op):
    """A rank other than 0 of a shared run (``shared=True``): it records its own system metrics into the
    run, while the user's values, config, tags, alerts and the run's status are rank 0's to record."""

    primary = False

    def log(
        self,
        data: Mapping[str, Any],
        step: int | None = None,
        commit: bool | None = None,
        timestamp: float | None = None,
    ) -> None:
        """Does nothing: rank 0 logs what the user logs."""

    def update_config(self, config: Mapping[str, Any]) -> None:
        """Does nothing: rank 0 records the config."""

    def _set_tags(self, tags: list[str]) -> None:
        """Does nothing: rank 0 records the tags."""

    def alert(self, *args: Any, **kwargs: Any) -> None:
        """Does nothing: rank 0 sends alerts."""
