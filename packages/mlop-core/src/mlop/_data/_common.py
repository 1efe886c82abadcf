"""What the data types share: optional imports, array conversion, and content-addressed media files.

Media bytes live under ``<run dir>/media/<sha256[:2]>/<sha256>.<ext>``: the name is the content's hash, so
the same bytes logged twice are written once, and a file is never rewritten once it is there. Each logged
file still gets its own store item with a file name that is unique within the run and key, as the
protocol's ``/files`` route asks.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import re
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Final

from mlop._loggable import Items, Loggable, MediaSink

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = [
    "EAGER_READ_LIMIT",
    "Media",
    "Source",
    "as_array",
    "check_json",
    "file_item",
    "numpy",
    "optional",
    "read_source",
    "safe_name",
    "store_bytes",
    "store_file",
    "store_source",
]

logger = logging.getLogger("mlop")

#: Files up to this size are read when the value is made, so a file that is overwritten right after
#: ``run.log`` (a plot saved to the same name every step) is stored as it was; larger ones are copied in
#: the background.
EAGER_READ_LIMIT: Final = 64 * 1024 * 1024

_EXTRA: Final = "pip install 'mlop-core[media]'"
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_.-]+")


def optional(module: str, what: str) -> ModuleType:
    """Import an optional dependency, or raise an ImportError that names the extra to install.

    Args:
        module: the module to import (``numpy``, ``PIL.Image``, ``imageio_ffmpeg``).
        what: what needs it, for the message (``mlop.Image``).

    Raises:
        ImportError: the module is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".", maxsplit=1)[0]
        raise ImportError(f"{what} needs {top}, which is not installed: {_EXTRA}") from exc


def numpy(what: str) -> None:
    """Check that numpy is installed (then ``import numpy`` inside a function is safe).

    Raises:
        ImportError: numpy is missing; the message names the extra.
    """
    optional("numpy", what)


def as_array(data: Any, what: str) -> npt.NDArray[Any]:
    """Turn an array-like value (numpy, a framework tensor through the convert hook, nested lists) into
    a numpy array without copying when it already is one.

    Raises:
        TypeError: the value is not array-like.
    """
    numpy(what)
    import numpy as np

    if isinstance(data, np.ndarray):
        return data
    if type(data).__module__.split(".", maxsplit=1)[0] not in ("builtins", "numpy"):
        from mlop import _hooks

        converted = _hooks.convert(data)
        if isinstance(converted, np.ndarray):
            return converted
    if all(hasattr(data, name) for name in ("detach", "cpu", "numpy")):  # a tensor, without its plugin
        try:
            tensor = data.detach().cpu()
            try:
                return np.asarray(tensor.numpy())
            except TypeError:  # a dtype numpy lacks (bfloat16): widen it first
                return np.asarray(tensor.float().numpy())
        except Exception as exc:  # broad: a foreign tensor type may raise anything
            raise TypeError(f"{what} could not turn a {type(data).__name__} into an array: {exc}") from exc
    if hasattr(data, "__array__") or isinstance(data, (list, tuple)):
        try:
            return np.asarray(data)
        except Exception as exc:  # broad: a foreign __array__ may raise anything
            raise TypeError(f"{what} could not turn a {type(data).__name__} into an array: {exc}") from exc
    raise TypeError(f"{what} does not take a {type(data).__name__}")


def check_json(value: Any, what: str) -> Any:
    """Return ``value`` when JSON can hold it exactly (no NaN, no foreign objects).

    Raises:
        TypeError: JSON cannot hold the value.
    """
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{what} must be JSON-safe (dicts, lists, str, finite numbers, bool, None): {exc}"
        ) from exc
    return value


def safe_name(name: str, fallback: str) -> str:
    """A file-name-safe stem made from a caption or key."""
    out = _UNSAFE.sub("-", name).strip("-.")[:64]
    return out or fallback


# -- sources: what a path or bytes value holds ----------------------------------------------------------


class Source:
    """The bytes of a value given as a file: in memory when small, else the path to copy later."""

    __slots__ = ("data", "ext", "path", "size")

    def __init__(self, data: bytes | None, path: Path | None, ext: str, size: int) -> None:
        self.data = data
        self.path = path
        self.ext = ext
        self.size = size


def read_source(
    path: str | os.PathLike[str], what: str, default_ext: str = "bin", limit: int = EAGER_READ_LIMIT
) -> Source:
    """Check that ``path`` is a readable file and take its bytes now when they are at most ``limit``.

    Raises:
        FileNotFoundError: there is no file at ``path``.
        IsADirectoryError: ``path`` is a directory.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"{what}: no such file: {p}")
    if p.is_dir():
        raise IsADirectoryError(f"{what}: {p} is a directory, not a file")
    size = p.stat().st_size
    ext = p.suffix[1:].lower() if p.suffix else default_ext
    if size <= limit:
        return Source(p.read_bytes(), None, ext, size)
    return Source(None, p.resolve(), ext, size)


# -- content-addressed files ----------------------------------------------------------------------------


def _target(sink: MediaSink, sha: str, ext: str) -> Path:
    folder = sink.media_dir / sha[:2]
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{sha}.{ext}" if ext else folder / sha


def store_bytes(sink: MediaSink, data: bytes, ext: str) -> tuple[str, Path]:
    """Write ``data`` into the run's media folder unless the same bytes are there already.

    Returns:
        The sha256 hex digest and the file's path.
    """
    sha = hashlib.sha256(data).hexdigest()
    target = _target(sink, sha, ext)
    if not target.exists():
        tmp = target.with_name(f".{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    return sha, target


def store_file(sink: MediaSink, path: Path, ext: str) -> tuple[str, Path, int]:
    """Copy the file at ``path`` into the media folder, hashing it on the way, once per content.

    Returns:
        The sha256 hex digest, the stored file's path and its size.
    """
    sink.media_dir.mkdir(parents=True, exist_ok=True)
    tmp = sink.media_dir / f".{uuid.uuid4().hex}.tmp"
    digest = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as src, tmp.open("wb") as dst:
            while chunk := src.read(1024 * 1024):
                digest.update(chunk)
                dst.write(chunk)
                size += len(chunk)
        sha = digest.hexdigest()
        target = _target(sink, sha, ext)
        if target.exists():
            tmp.unlink()
        else:
            os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return sha, target, size


def store_source(sink: MediaSink, source: Source) -> tuple[str, Path, int]:
    """Store a :class:`Source`; see :func:`store_bytes` and :func:`store_file`."""
    if source.data is not None:
        sha, target = store_bytes(sink, source.data, source.ext)
        return sha, target, len(source.data)
    assert source.path is not None
    return store_file(sink, source.path, source.ext)


def file_item(
    sink: MediaSink,
    *,
    key: str,
    step: int,
    time: float,
    index: int | None,
    log_type: str,
    caption: str | None,
    stem: str,
    sha: str,
    target: Path,
    size: int,
    ext: str,
    **extra: Any,
) -> tuple[str, Any]:
    """The store item (kind ``files``) that describes one stored file."""
    info: dict[str, Any] = {
        "fileName": f"{safe_name(stem, 'file')}.{uuid.uuid4().hex[:16]}.{ext}",
        "fileType": ext,
        "fileSize": size,
        "path": target.relative_to(sink.run_dir).as_posix(),
        "logType": log_type,
        "caption": caption,
        "sampleIndex": index,
        "sha256": sha,
        **extra,
    }
    return "files", (step, time, key, info)


# -- the base of every file-backed type -----------------------------------------------------------------


class Media(Loggable):
    """A value stored as one file of the run (Image, Audio, Video, Text).

    Subclasses set ``log_type`` and implement :meth:`_encode`, which runs on a background thread and
    returns the file's bytes (or a :class:`Source`), its extension and extra fields for the store item.
    ``_nbytes`` says how much memory the pending value holds, for the sink's back-pressure. Once encoded,
    a value keeps its encoding and drops its copy of the data (:meth:`_release`), so logging it again
    stores the same file without encoding it again.
    """

    log_type: ClassVar[str] = "FILE"
    caption: str | None

    def __init__(self, caption: object) -> None:
        self.caption = None if caption is None else str(caption)
        self._nbytes = 0
        self._lock = threading.Lock()
        self._encoded: tuple[bytes | Source, str, dict[str, Any]] | None = None

    def _encode(self) -> tuple[bytes | Source, str, dict[str, Any]]:
        raise NotImplementedError

    def _release(self) -> None:
        """Drop the copy of the data that :meth:`_encode` used."""

    def encoded(self) -> tuple[bytes | Source, str, dict[str, Any]]:
        """The value's file (bytes, or a Source to copy), extension and extra item fields, encoded once."""
        with self._lock:
            if self._encoded is None:
                self._encoded = self._encode()
                self._release()
            return self._encoded

    def _stem(self, key: str) -> str:
        return self.caption or key.rsplit("/", 1)[-1]

    def mlop_items(self, sink: MediaSink, key: str, step: int, time: float, index: int | None) -> Items:
        """Store the value's file in the background; its item reaches the store when it is written."""
        size = 0 if self._encoded else self._nbytes
        sink.defer(self._work(sink, key, step, time, index), size, kind=type(self).__qualname__)
        return []

    def _work(
        self, sink: MediaSink, key: str, step: int, time: float, index: int | None
    ) -> Callable[[], Items]:
        def work() -> Items:
            payload, ext, extra = self.encoded()
            if isinstance(payload, Source):
                sha, target, size = store_source(sink, payload)
            else:
                sha, target = store_bytes(sink, payload, ext)
                size = len(payload)
            return [
                file_item(
                    sink,
                    key=key,
                    step=step,
                    time=time,
                    index=index,
                    log_type=self.log_type,
                    caption=self.caption,
                    stem=self._stem(key),
                    sha=sha,
                    target=target,
                    size=size,
                    ext=ext,
                    **extra,
                )
            ]

        return work
