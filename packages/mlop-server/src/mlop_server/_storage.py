"""The storage interface: everything the HTTP layer asks of a database.

The server talks to storage only through :class:`Storage`, so a backend for a database server can take the
embedded SQLite backend's place (``_sqlite.SqliteStorage``) without touching the routes. Writes are
:mod:`mlop_server._ops` value objects applied whole or not at all; an answer is committed before it is
returned, so an acknowledged request survives a crash of the server.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from mlop_server._ops import Op

__all__ = ["ADMIN_OWNER", "ApiKey", "Downsampled", "FileRow", "Series", "Storage"]

logger = logging.getLogger(__name__)


#: The owner of the runs that admin keys create (a name no other key may take).
ADMIN_OWNER = "admin"


@dataclass(frozen=True)
class ApiKey:
    """A key the server issued. The secret itself is never stored, only its hash.

    The key's ``name`` is its owner: every key of one name shares that owner's runs. A non-admin key reads
    and changes only its owner's runs and creates runs only in ``projects`` (any project when None); an
    admin key reads and changes every run.
    """

    id: int
    name: str
    prefix: str
    admin: bool
    created: int
    revoked: int | None
    projects: tuple[str, ...] | None = None

    @property
    def active(self) -> bool:
        """True while the key is not revoked."""
        return self.revoked is None

    @property
    def owner(self) -> str:
        """The owner recorded on the runs this key creates."""
        return ADMIN_OWNER if self.admin else self.name

    def may_read(self, owner: str | None) -> bool:
        """True when this key may see (and change) a run of ``owner``."""
        return self.admin or owner == self.owner

    def may_write_project(self, project: str) -> bool:
        """True when this key may create runs in ``project``."""
        return self.admin or self.projects is None or project in self.projects


@dataclass(frozen=True)
class FileRow:
    """An uploaded (or announced) file of a run."""

    id: int
    run_id: int
    key_id: int
    log_name: str
    name: str
    size: int
    file_type: str
    time: int
    step: int
    sample_index: int | None
    caption: str | None
    uploaded: bool


@dataclass(frozen=True)
class Series:
    """A metric series in step order: steps, times (ms) and values (float64, non-finite kept)."""

    steps: npt.NDArray[np.int64]
    times: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]


@dataclass(frozen=True)
class Downsampled:
    """What :meth:`Storage.metric_points` answers: the points to show and how many the whole series holds."""

    series: Series
    total: int


class Storage(abc.ABC):
    """What the server needs from a database. Implementations must be safe to call from the event loop.

    Key management and metadata are synchronous (the CLI uses them without a server); writes and reads of
    run data are coroutines.
    """

    # -- keys and metadata (synchronous) ---------------------------------------------------------------

    @abc.abstractmethod
    def find_key(self, key_hash: str) -> ApiKey | None:
        """The key with this hash, revoked or not, or None."""

    @abc.abstractmethod
    def get_key(self, key_id: int) -> ApiKey | None:
        """The key with this id, revoked or not, or None."""

    @abc.abstractmethod
    def add_key(
        self, key_hash: str, prefix: str, name: str, *, admin: bool, projects: tuple[str, ...] | None = None
    ) -> ApiKey:
        """Store a new key by its hash; ``projects``: those it may create runs in (None: any).

        Raises ``Conflict`` if the hash exists, ``BadRequest`` for a non-admin key named ``admin``.
        """

    @abc.abstractmethod
    def list_keys(self) -> list[ApiKey]:
        """Every key, oldest first."""

    @abc.abstractmethod
    def revoke_key(self, ident: str) -> ApiKey | None:
        """Revoke the key with this id or prefix; returns it, or None when nothing matches."""

    @abc.abstractmethod
    def signing_secret(self) -> bytes:
        """The secret that signs upload URLs, created once and kept across restarts."""

    # -- lifecycle ---------------------------------------------------------------------------------------

    @abc.abstractmethod
    def start(self) -> None:
        """Start background work (the writer); called once before the first write.

        RUNNING runs get a fresh heartbeat here: while the server was down their clients could not reach
        it, which is no sign that they died.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Finish pending writes and release everything."""

    async def aclose(self) -> None:  # noqa: B027 - an optional hook: nothing to release by default
        """Release what the backend holds in the server's event loop; called before :meth:`close`."""

    async def lead(self) -> bool:
        """True when this process is the one to do the periodic work (the reaper) now.

        Several processes may share one database; one at a time does that work (PostgreSQL elects it with an
        advisory lock, taken over when its holder goes away). One process over SQLite always leads.
        """
        return True

    async def readiness(self) -> dict[str, Any]:
        """What ``/ready`` reports, e.g. ``{"database": "ok", "schema": 3, "expected": 3}``.

        Raises when the database cannot be reached. The default asks the database a real question; a
        backend whose schema can lag behind the code overrides it and adds ``"ready": False`` (with both
        versions) when the schema is not the one the code expects.
        """
        await self.get_run(0)
        return {"database": "ok"}

    # -- writes ----------------------------------------------------------------------------------------------

    @abc.abstractmethod
    async def apply(
        self, op: Op, idempotency: tuple[str, str] | None = None, key: ApiKey | None = None
    ) -> dict[str, Any]:
        """Apply one op atomically and return its answer.

        Args:
            op: The write, already checked.
            idempotency: ``(scope, key)``: when given, an op with the same pair applied before is not
                applied again, and its first answer is returned.
            key: The key that asks: a non-admin key changes only its owner's runs (``Forbidden``), creates
                runs only in its projects, and never gets another owner's run back from ``create`` or
                ``resume``. None acts as an admin.

        Returns:
            A JSON-able answer: ``{"run": {...}, "resumed": bool}`` for create and resume,
            ``{"files": [[logName, fileName, fileId], ...]}`` for files, else ``{"success": True}``.

        Raises:
            NotFound: the op names a run that does not exist.
            Forbidden: the run belongs to another owner, or the project is not the key's.
            Unavailable: too many writes are waiting.
        """

    @abc.abstractmethod
    async def heartbeat(self, run_id: int, key: ApiKey | None = None) -> str:
        """Record that the run is alive; returns the status to answer (``CANCELLED`` once cancelled)."""

    @abc.abstractmethod
    async def request_cancel(self, run_id: int, key: ApiKey | None = None) -> None:
        """Make the run's next heartbeat answer ``CANCELLED``."""

    @abc.abstractmethod
    async def reap(self, silent_since: int) -> list[int]:
        """Mark RUNNING runs not heard from since ``silent_since`` (ms) as FAILED; returns their ids."""

    @abc.abstractmethod
    async def file_uploaded(self, file_id: int, size: int) -> None:
        """Record that the bytes of a file arrived."""

    @abc.abstractmethod
    async def prune(self, before: int) -> None:
        """Forget idempotency answers older than ``before`` (ms)."""

    # -- reads -------------------------------------------------------------------------------------------

    #: The SQL dialect of :meth:`read_sql`: ``"sqlite"`` or ``"postgresql"`` (``_runquery`` builds for it).
    dialect: str = "sqlite"

    @abc.abstractmethod
    async def read_sql(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """The rows of one read-only ``SELECT`` that :mod:`mlop_server._runquery` built for :attr:`dialect`
        (the runs table's queries: sorting, filtering, grouping over the derived columns of ``_runfields``).
        """

    @abc.abstractmethod
    async def list_projects(self, owner: str | None = None) -> list[dict[str, Any]]:
        """Every project with runs (of ``owner`` only, when given): ``[{"name", "runs", "updated"}]``,
        most recently updated first."""

    @abc.abstractmethod
    async def list_runs(self, project: str, owner: str | None = None) -> list[dict[str, Any]]:
        """The runs of a project (of ``owner`` only, when given), newest first, as read-API summaries, each
        with its ``summary`` (``config["summary"]``, ``{}`` when it has none)."""

    @abc.abstractmethod
    async def last_values(
        self, project: str, keys: list[str], owner: str | None = None
    ) -> dict[int, dict[str, float]]:
        """The last logged value of each of ``keys`` in each run of a project (of ``owner`` only, when
        given) that has it, by run id."""

    @abc.abstractmethod
    async def get_run(self, run_id: int, *, detail: bool = False) -> dict[str, Any] | None:
        """A run's summary with its ``owner`` (with config, metadata and graph when ``detail``), or None."""

    @abc.abstractmethod
    async def metric(self, run_id: int, key: str) -> Series | None:
        """A metric series in step order (equal steps in arrival order), or None for an unknown key."""

    async def metric_points(self, run_id: int, key: str, max_points: int) -> Downsampled | None:
        """A metric series for a chart of at most ``max_points`` points, or None for an unknown key.

        A long series is answered from the backend's block summaries (``_blocks``: its lowest and highest
        point per bucket) when they can; otherwise the whole series is, which the caller downsamples
        (``_readapi.downsample``). ``total`` is always the whole series' length.
        """
        return (await self.metric_points_many(run_id, [key], max_points)).get(key)

    async def metric_points_many(
        self, run_id: int, keys: list[str], max_points: int
    ) -> dict[str, Downsampled]:
        """:meth:`metric_points` of several keys of a run, by key (unknown keys left out): the block summaries
        of all of them in one read (:meth:`block_points`), the other series read whole."""
        found = await self.block_points(run_id, keys, max_points)
        rest = [key for key in keys if key not in found]
        whole = await asyncio.gather(*(self.metric(run_id, key) for key in rest))
        found.update(
            (key, Downsampled(series, int(series.steps.size)))
            for key, series in zip(rest, whole, strict=True)
            if series is not None
        )
        return found

    async def block_points(self, run_id: int, keys: list[str], max_points: int) -> dict[str, Downsampled]:
        """Of a run's ``keys``, those the block summaries answer, downsampled (``_blocks.pick``); this
        default keeps no summaries."""
        return {}

    @abc.abstractmethod
    async def log_names(self, run_id: int) -> list[dict[str, str]]:
        """Every key of a run with its type: ``[{"name", "type"}]``."""

    @abc.abstractmethod
    async def logs(self, run_id: int, limit: int, offset: int) -> list[dict[str, Any]]:
        """Console lines in arrival order."""

    @abc.abstractmethod
    async def data(
        self, run_id: int, key: str, limit: int | None = None, offset: int = 0
    ) -> list[dict[str, Any]] | None:
        """Rows of a data key (histograms, tables, string series) in step order, at most ``limit`` from
        ``offset``, or None if the key is unknown."""

    @abc.abstractmethod
    async def files(self, run_id: int, key: str) -> list[FileRow] | None:
        """The files of a key in step order, or None for an unknown key."""

    @abc.abstractmethod
    async def get_file(self, file_id: int) -> FileRow | None:
        """One file by id."""

    # -- per-project settings ----------------------------------------------------------------------------

    @abc.abstractmethod
    async def get_project_setting(self, project: str, name: str, owner: str = ADMIN_OWNER) -> str | None:
        """The JSON text ``owner`` keeps as setting ``name`` of ``project`` (``ADMIN_OWNER``: the project-wide
        value), or None."""

    @abc.abstractmethod
    async def put_project_setting(
        self, project: str, name: str, value_json: str | None, owner: str = ADMIN_OWNER
    ) -> None:
        """Keep ``value_json`` (JSON text) as ``owner``'s setting ``name`` of ``project``; None forgets it."""
