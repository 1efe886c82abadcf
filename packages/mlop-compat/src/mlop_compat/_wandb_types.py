"""The data types of :mod:`mlop.compat.wandb`: wandb's constructors over mlop's types.

Each class takes wandb's arguments and is (or becomes, when logged) the mlop type that holds the same
thing. Arguments that mlop cannot honour (bounding boxes, masks, references) raise
:class:`~mlop.compat.UnsupportedError` naming them rather than being dropped.
"""

from __future__ import annotations

import datetime
import enum
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, ClassVar

import mlop
from mlop._data._common import as_array, optional, safe_name
from mlop._loggable import Items, Loggable, MediaSink
from mlop._values import jsonable
from mlop_compat import UnsupportedError

__all__ = ["AlertLevel", "Artifact", "Audio", "Histogram", "Image", "Settings", "Table", "Video"]


def _unsupported(call: str, hint: str = "") -> UnsupportedError:
    return UnsupportedError(f"mlop.compat.wandb does not support {call}" + (f": {hint}" if hint else ""))


class Image(mlop.Image):
    """``wandb.Image(data_or_path, mode=None, caption=None, ...)`` as an :class:`mlop.Image`.

    Raises:
        UnsupportedError: ``boxes``, ``masks`` or ``classes`` were given.
    """

    def __init__(
        self,
        data_or_path: Any,
        mode: str | None = None,
        caption: str | None = None,
        grouping: int | None = None,
        classes: Any = None,
        boxes: Any = None,
        masks: Any = None,
        file_type: str | None = None,
        normalize: bool = True,
    ) -> None:
        for name, given in (("boxes", boxes), ("masks", masks), ("classes", classes)):
            if given is not None:
                raise _unsupported(f"wandb.Image({name}=...)", "log the overlay as its own image")
        if mode is not None and not isinstance(data_or_path, (str, os.PathLike, bytes)):
            pil = optional("PIL.Image", "wandb.Image(mode=...)")
            array = as_array(data_or_path, "wandb.Image")
            data_or_path = pil.fromarray(array).convert(mode)
        super().__init__(data_or_path, caption=caption)


class Audio(mlop.Audio):
    """``wandb.Audio(data_or_path, sample_rate=None, caption=None)`` as an :class:`mlop.Audio`."""

    def __init__(self, data_or_path: Any, sample_rate: int | None = None, caption: str | None = None) -> None:
        super().__init__(data_or_path, rate=sample_rate, caption=caption)


class Video(mlop.Video):
    """``wandb.Video(data_or_path, caption=None, fps=None, format=None)`` as an :class:`mlop.Video`.

    Frames are (T, C, H, W) as in wandb (or (T, H, W, C)); wandb's default of 4 frames per second is kept.
    """

    def __init__(
        self,
        data_or_path: Any,
        caption: str | None = None,
        fps: float | None = None,
        format: str | None = None,
    ) -> None:
        if not isinstance(data_or_path, (str, os.PathLike)) and fps is None:
            fps = 4
        super().__init__(data_or_path, caption=caption, format=format, fps=fps)


class Histogram(mlop.Histogram):
    """``wandb.Histogram(sequence=None, np_histogram=None, num_bins=64)`` as an :class:`mlop.Histogram`."""

    def __init__(self, sequence: Any = None, np_histogram: Any = None, num_bins: int = 64) -> None:
        if np_histogram is not None:
            super().__init__(tuple(np_histogram))
        elif sequence is not None:
            super().__init__(sequence, bins=num_bins)
        else:
            raise ValueError("wandb.Histogram needs a sequence or np_histogram")


class Table(Loggable):
    """``wandb.Table(columns=None, data=None, rows=None, dataframe=None)``: rows can be added until logged.

    wandb's ``rows`` is another name for ``data`` (mlop's own :class:`mlop.Table` uses ``rows`` for row
    labels). Logged, it is an :class:`mlop.Table` with the rows it has at that moment.
    """

    log_type: ClassVar[str] = "TABLE"

    def __init__(
        self,
        columns: Sequence[Any] | None = None,
        data: Sequence[Any] | None = None,
        rows: Sequence[Any] | None = None,
        dataframe: Any = None,
        dtype: Any = None,
        optional: Any = True,
        allow_mixed_types: bool = False,
    ) -> None:
        self._dataframe = dataframe
        self.columns: list[Any] = list(columns) if columns is not None else []
        if dataframe is not None and not self.columns:
            self.columns = [str(c) for c in dataframe.columns]
        given = data if data is not None else rows
        self.data: list[list[Any]] = [list(row) for row in given] if given is not None else []
        if self.data and not self.columns:
            self.columns = [f"Column {i + 1}" for i in range(len(self.data[0]))]

    def add_data(self, *row: Any) -> None:
        """Append a row.

        Raises:
            ValueError: the row has not one cell per column.
        """
        if self._dataframe is not None:
            raise _unsupported("wandb.Table.add_data on a table made from a dataframe")
        if self.columns and len(row) != len(self.columns):
            raise ValueError(f"this table has {len(self.columns)} columns, the row has {len(row)} cells")
        self.data.append(list(row))

    def add_column(self, name: str, data: Sequence[Any]) -> None:
        """Append a column with one cell per row.

        Raises:
            ValueError: not one cell per row.
        """
        if self._dataframe is not None:
            raise _unsupported("wandb.Table.add_column on a table made from a dataframe")
        if len(data) != len(self.data):
            raise ValueError(f"this table has {len(self.data)} rows, the column has {len(data)} cells")
        self.columns.append(name)
        for row, cell in zip(self.data, data, strict=True):
            row.append(cell)

    def get_column(self, name: str) -> list[Any]:
        index = self.columns.index(name)
        return [row[index] for row in self.data]

    def to_mlop(self) -> mlop.Table:
        """The :class:`mlop.Table` with the rows the table has now."""
        if self._dataframe is not None:
            return mlop.Table(dataframe=self._dataframe)
        return mlop.Table(self.data, columns=self.columns)

    def mlop_items(self, sink: MediaSink, key: str, step: int, time: float, index: int | None) -> Items:
        return self.to_mlop().mlop_items(sink, key, step, time, index)


class Artifact:
    """``wandb.Artifact(name, type, description=None, metadata=None)``: files and folders kept with a run.

    ``add_file``, ``add_dir`` and ``new_file`` collect content; ``run.log_artifact(artifact)`` stores it as
    one :class:`mlop.Artifact` under the key ``artifacts/<name>``, with the name, type, description,
    metadata and aliases in its metadata.
    """

    def __init__(
        self,
        name: str,
        type: str,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
        incremental: bool = False,
        use_as: str | None = None,
    ) -> None:
        if incremental:
            raise _unsupported("wandb.Artifact(incremental=True)")
        self.name = name
        self.type = type
        self.description = description
        self.metadata: dict[str, Any] = dict(metadata or {})
        # The folder is named after the artifact: mlop.Artifact takes its name from the folder's.
        self._scratch = Path(tempfile.mkdtemp(prefix="mlop-wandb-artifact-"))
        self._staging = self._scratch / safe_name(name, "artifact")
        self._staging.mkdir()
        self._count = 0

    def __repr__(self) -> str:
        return f"<wandb.Artifact {self.name} ({self.type}), {self._count} entries>"

    def _place(self, name: str) -> Path:
        target = self._staging / name
        if target.exists() or target.is_symlink():
            raise ValueError(f"artifact {self.name!r} has an entry {name!r} already")
        target.parent.mkdir(parents=True, exist_ok=True)
        self._count += 1
        return target

    def add_file(self, local_path: str | os.PathLike[str], name: str | None = None, **kwargs: Any) -> None:
        """Add one file, under ``name`` (default: its file name) inside the artifact.

        Raises:
            FileNotFoundError: no file at ``local_path``.
        """
        source = Path(local_path).expanduser()
        if not source.is_file():
            raise FileNotFoundError(f"wandb.Artifact.add_file: no such file: {source}")
        os.symlink(source.resolve(), self._place(name or source.name))

    def add_dir(self, local_path: str | os.PathLike[str], name: str | None = None, **kwargs: Any) -> None:
        """Add every file under a folder, under ``name/`` (default: the artifact's root).

        Raises:
            FileNotFoundError: no folder at ``local_path``.
        """
        root = Path(local_path).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"wandb.Artifact.add_dir: no such folder: {root}")
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            relative = path.relative_to(root).as_posix()
            os.symlink(path.resolve(), self._place(f"{name}/{relative}" if name else relative))

    @contextmanager
    def new_file(self, name: str, mode: str = "x", encoding: str | None = None) -> Iterator[IO[Any]]:
        """Write a new file inside the artifact."""
        target = self._place(name)
        with target.open(mode.replace("x", "w"), encoding=encoding if "b" not in mode else None) as handle:
            yield handle

    def add_reference(self, uri: str, *args: Any, **kwargs: Any) -> None:
        raise _unsupported("wandb.Artifact.add_reference", "add the files themselves with add_file/add_dir")

    def add(self, obj: Any, name: str) -> None:
        raise _unsupported("wandb.Artifact.add", "log the object with run.log instead")

    def to_mlop(
        self, aliases: Sequence[str] | None = None, tags: Sequence[str] | None = None
    ) -> mlop.Artifact:
        """The :class:`mlop.Artifact` that holds the files added so far.

        Raises:
            ValueError: nothing was added.
        """
        if not self._count:
            raise ValueError(f"artifact {self.name!r} is empty: add files with add_file or add_dir first")
        metadata = {
            "name": self.name,
            "type": self.type,
            "description": self.description,
            "metadata": jsonable(self.metadata),
            "aliases": list(aliases or []),
            "tags": list(tags or []),
        }
        return mlop.Artifact(self._staging, caption=self.name, metadata=metadata)

    def cleanup(self) -> None:
        """Remove the folder of links that stages the artifact."""
        shutil.rmtree(self._scratch, ignore_errors=True)


class AlertLevel(str, enum.Enum):
    """``wandb.AlertLevel``: the level of an alert."""

    INFO = "INFO"
    WARN = "WARN"
    ERROR = "ERROR"


def wait_seconds(value: float | datetime.timedelta | None) -> float:
    """wandb's ``wait_duration`` (seconds or a timedelta) in seconds."""
    if value is None:
        return 0.0
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    return float(value)


class Settings:
    """``wandb.Settings(...)``: accepted for scripts that pass it; its fields tune wandb's own process.

    The fields mlop has an equivalent for are read by ``init``: ``mode``, ``project``, ``run_id``,
    ``run_name``, ``root_dir``.
    """

    def __init__(self, **fields: Any) -> None:
        self.fields = fields

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["fields"][name]
        except KeyError:
            raise AttributeError(name) from None
