"""``run.summary``: a run's final values (train runtime, best score), kept apart from its step series.

A summary is a dict of JSON values. Setting a key stores the whole summary in the run's local store (the
``summary`` meta value, which ``open_run(...).summary`` reads back) and queues a ``config`` record with the
change under ``"summary"``, so the stock protocol's ``config/update`` (a deep merge) carries it to the
server, where it lands in the run's config as ``config["summary"]`` (where ``mlop.compat.wandb`` stores its
summary too). The run's own ``config`` is left as it was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any, Final, Protocol

from mlop._values import jsonable

if TYPE_CHECKING:
    from mlop._store import Store
    from mlop._writer import Writer

__all__ = ["SUMMARY_META", "Summary"]

logger = logging.getLogger(__name__)

#: The store's meta key for the summary.
SUMMARY_META: Final = "summary"


class Op(Protocol):
    """What a summary needs of its run (:class:`mlop.Run`), named here so that this module need not import
    the run's, which imports this one."""

    id: str
    primary: bool
    resumed: bool
    _closed: bool
    _writer: Writer
    _store: Store


class Summary(MutableMapping[str, Any]):
    """The final values of a run: ``run.summary["best_acc"] = 0.91`` or ``run.summary.update({...})``.

    Values are turned into JSON values as a config's are. Deleting a key drops it from the local summary
    (the server keeps what it was sent: a config merge cannot delete). Once the run has ended, or on a
    rank that does not record (another rank of a shared run), changes stay in this object only.
    """

    def __init__(self, op: Op | None, values: Mapping[str, Any] | None = None) -> None:
        self._op = op
        self._values: dict[str, Any] = dict(values or {})

    def __repr__(self) -> str:
        return f"mlop.Summary({self._values!r})"

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def __delitem__(self, key: str) -> None:
        del self._values[key]
        self._store({})

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """Set several values at once: one store write, one server update."""
        delta = dict(other, **kwargs)
        if not delta:
            return
        try:
            converted = jsonable({str(k): v for k, v in delta.items()})
        except Exception:  # broad: a value that cannot be stored must not reach the training loop
            logger.exception("mlop could not store the summary values %s", sorted(delta))
            return
        self._values.update(converted)
        self._store(converted)

    def _store(self, delta: dict[str, Any]) -> None:
        op = self._op
        if op is None or op._closed or not op.primary:
            return
        try:
            op._writer.add(
                "config",
                (time.time(), {SUMMARY_META: delta}),
                meta={SUMMARY_META: dict(self._values)},
            )
        except Exception:  # broad: storing must never raise into the training loop
            logger.exception("mlop could not store the summary")


def summary_of(op: Op) -> Summary:
    """The summary of ``op``, made on first use with what a resumed run's store holds."""
    found = op.__dict__.get("_summary")
    if isinstance(found, Summary):
        return found
    initial: dict[str, Any] = {}
    if op.resumed:
        try:
            initial = dict(op._store.meta().get(SUMMARY_META) or {})
        except Exception:  # broad: an unreadable store gives an empty summary, not an error
            logger.debug("mlop could not read the summary of %s", op.id, exc_info=True)
    made = Summary(op, initial)
    op.__dict__["_summary"] = made
    return made
