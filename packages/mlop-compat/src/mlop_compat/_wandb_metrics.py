"""``define_metric`` for :mod:`mlop.compat.wandb`: step metrics and summary aggregates."""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["Metric", "MetricRules"]

_SUMMARIES: Final = frozenset({"min", "max", "mean", "first", "last", "best", "none", "copy"})


@dataclasses.dataclass(frozen=True)
class Metric:
    """What ``define_metric`` returns: the rule for a key or a glob of keys."""

    name: str
    step_metric: str | None = None
    summary: tuple[str, ...] = ()
    goal: str | None = None
    hidden: bool | None = None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", 0) == 0:
        try:
            out = item()
        except Exception:  # broad: a foreign scalar's item() may raise anything; not a number then
            return None
        return float(out) if isinstance(out, (int, float)) else None
    return None


@dataclasses.dataclass
class _Stats:
    first: float
    last: float
    low: float
    high: float
    total: float = 0.0
    count: int = 0

    def add(self, value: float) -> None:
        self.last = value
        self.low = min(self.low, value)
        self.high = max(self.high, value)
        self.total += value
        self.count += 1


class MetricRules:
    """The rules of ``define_metric`` for one run, and the values they need."""

    def __init__(self) -> None:
        self._rules: dict[str, Metric] = {}
        self._last: dict[str, float] = {}
        self._stats: dict[str, _Stats] = {}
        self._step_metrics: set[str] = set()

    def define(
        self,
        name: str,
        step_metric: str | Metric | None,
        summary: str | None,
        goal: str | None,
        hidden: bool | None,
    ) -> Metric:
        """Add (or replace) the rule for ``name``.

        Raises:
            ValueError: an unknown summary or goal.
        """
        kinds = tuple(s.strip() for s in summary.split(",") if s.strip()) if summary else ()
        unknown = [k for k in kinds if k not in _SUMMARIES]
        if unknown:
            raise ValueError(
                f"define_metric: unknown summary {unknown[0]!r}; use {', '.join(sorted(_SUMMARIES))}"
            )
        if goal is not None and goal not in ("minimize", "maximize"):
            raise ValueError(f"define_metric: goal must be 'minimize' or 'maximize', got {goal!r}")
        step = step_metric.name if isinstance(step_metric, Metric) else step_metric
        metric = Metric(name, step, kinds, goal, hidden)
        self._rules[name] = metric
        if step:
            self._step_metrics.add(step)
        return metric

    def _rule(self, key: str) -> Metric | None:
        rule = self._rules.get(key)
        if rule is not None:
            return rule
        for pattern, candidate in self._rules.items():
            if "*" in pattern and fnmatch.fnmatchcase(key, pattern):
                return candidate
        return None

    @property
    def active(self) -> bool:
        """Whether any rule was defined (without one, a log call needs no work here)."""
        return bool(self._rules)

    def observe(self, values: Mapping[str, Any]) -> None:
        """Remember the numbers of a log call that step metrics and aggregates need."""
        for key, value in values.items():
            if key not in self._step_metrics and self._rule(key) is None:
                continue
            number = _number(value)
            if number is None:
                continue
            self._last[key] = number
            rule = self._rule(key)
            if rule is not None and rule.summary and not math.isnan(number):
                stats = self._stats.get(key)
                if stats is None:
                    self._stats[key] = _Stats(number, number, number, number, number, 1)
                else:
                    stats.add(number)

    def split(self, values: Mapping[str, Any], step: int) -> dict[int, dict[str, Any]]:
        """Group a log call's values by the step each is stored at.

        A key whose rule names a step metric goes to that metric's value (from this call, else its last
        value); every other key to ``step``.
        """
        out: dict[int, dict[str, Any]] = {step: {}}
        for key, value in values.items():
            rule = self._rule(key) if self._rules else None
            at = step
            if rule is not None and rule.step_metric and rule.step_metric != key:
                known = self._last.get(rule.step_metric)
                if known is not None and math.isfinite(known) and known >= 0:
                    at = int(known)
            out.setdefault(at, {})[key] = value
        return out

    def aggregates(self) -> dict[str, dict[str, float]]:
        """The summary values the rules ask for, by key: ``{"loss": {"min": 0.1}}``."""
        out: dict[str, dict[str, float]] = {}
        for key, stats in self._stats.items():
            rule = self._rule(key)
            if rule is None:
                continue
            entry: dict[str, float] = {}
            for kind in rule.summary:
                if kind == "min" or (kind == "best" and rule.goal == "minimize"):
                    entry["min"] = stats.low
                elif kind == "max" or (kind == "best" and rule.goal == "maximize"):
                    entry["max"] = stats.high
                elif kind == "mean":
                    entry["mean"] = stats.total / stats.count
                elif kind == "first":
                    entry["first"] = stats.first
                elif kind in ("last", "copy"):
                    entry["last"] = stats.last
            if entry:
                out[key] = entry
        return out
