"""``mlop.Artifact`` and ``mlop.File``: a file or a whole directory kept with the run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Final

from mlop._data._common import EAGER_READ_LIMIT, Source, check_json, file_item, read_source, store_source
from mlop._loggable import Items, Loggable, MediaSink

__all__ = ["Artifact", "File"]

_WHAT: Final = "mlop.Artifact"


class Artifact(Loggable):
    """A file or a directory (a checkpoint, a dataset split, a report), stored with the run.

    A directory is stored file by file, content-addressed like every media file, and each file's store
    item carries its path inside the directory (``artifactPath``), so the tree can be rebuilt. Files up
    to 64 MiB in all are read when the value is made; larger ones are copied in the background, so they must
    stay in place until the run finishes.

    Args:
        data: a path to a file or a directory (which must hold at least one file).
        caption: shown with the artifact.
        metadata: JSON-safe values kept with every file of the artifact (``metadata`` in its items).

    Raises:
        FileNotFoundError: nothing at ``data``, or a directory with no file in it.
        TypeError: ``data`` is not a path, or the metadata is not JSON-safe.
    """

    log_type: ClassVar[str] = "ARTIFACT"

    def __init__(
        self,
        data: str | os.PathLike[str],
        caption: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        what = f"mlop.{type(self).__name__}"
        if not isinstance(data, (str, os.PathLike)):
            raise TypeError(f"{what} takes a path to a file or a directory, not {type(data).__name__}")
        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError(f"{what}: metadata must be a dict, not {type(metadata).__name__}")
        self.caption = None if caption is None else str(caption)
        self.metadata: dict[str, Any] = dict(check_json(metadata or {}, f"{what} metadata"))
        root = Path(data).expanduser()
        if not root.exists():
            raise FileNotFoundError(f"{what}: no such file or directory: {root}")
        self.name = root.resolve().name
        self.is_dir = root.is_dir()
        if self.is_dir:
            paths = sorted(p for p in root.rglob("*") if p.is_file())
            if not paths:
                raise FileNotFoundError(f"{what}: the directory {root} holds no file")
            budget = EAGER_READ_LIMIT
            self.files: list[tuple[str, Source]] = []
            for path in paths:
                source = read_source(path, what, "", limit=budget)
                budget -= source.size if source.data is not None else 0
                self.files.append((path.relative_to(root).as_posix(), source))
        else:
            self.files = [(root.name, read_source(root, what, ""))]

    def mlop_items(self, sink: MediaSink, key: str, step: int, time: float, index: int | None) -> Items:
        """Store the files in the background; their items reach the store once they are written."""

        def work() -> Items:
            items: Items = []
            for relative, source in self.files:
                sha, target, size = store_source(sink, source)
                stem = relative.rsplit(".", 1)[0] if "." in relative.rsplit("/", 1)[-1] else relative
                items.append(
                    file_item(
                        sink,
                        key=key,
                        step=step,
                        time=time,
                        index=index,
                        log_type=self.log_type,
                        caption=self.caption,
                        stem=stem,
                        sha=sha,
                        target=target,
                        size=size,
                        ext=source.ext or "bin",
                        artifactName=self.name,
                        artifactPath=relative,
                        metadata=self.metadata,
                    )
                )
            return items

        sink.defer(work, sum(len(s.data) for _r, s in self.files if s.data is not None))
        return []


class File(Artifact):
    """A file or directory kept with the run, registered as the protocol's ``FILE`` type.

    The same as :class:`Artifact` in every other way.
    """

    log_type: ClassVar[str] = "FILE"
