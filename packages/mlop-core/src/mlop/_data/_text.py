"""``mlop.Text``: a text document (a literal string or a file) stored as a file of the run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Final

from mlop._data._common import Media, Source, read_source

__all__ = ["Text"]

_WHAT: Final = "mlop.Text"
#: A string longer than this, or with a line break, is always text, never a path.
_MAX_PATH: Final = 4096


def _names_file(data: str) -> bool:
    if len(data) > _MAX_PATH or "\n" in data or "\0" in data:
        return False
    try:
        return Path(data).expanduser().is_file()
    except (OSError, ValueError):
        return False


class Text(Media):
    """A text document, stored as a file of the run (UTF-8 ``.txt`` for a string).

    Unlike a plain string logged under a key (a string series, one value per step), a Text is a document:
    a generated sample, a report, a config file.

    Args:
        data: the text, or a path to a text file: a ``pathlib.Path`` always, a ``str`` when it names an
            existing file (one line, no longer than 4096 characters); bytes are taken as UTF-8 text.
        caption: shown with the text; also names the uploaded file.

    Raises:
        FileNotFoundError: ``data`` is a ``Path`` with no file.
        TypeError: ``data`` is neither text nor a path.
    """

    log_type: ClassVar[str] = "TEXT"

    def __init__(self, data: str | bytes | os.PathLike[str], caption: str | None = None) -> None:
        super().__init__(caption)
        if isinstance(data, os.PathLike) or (isinstance(data, str) and _names_file(data)):
            self._source = read_source(data, _WHAT, "txt")
        elif isinstance(data, str):
            raw = data.encode("utf-8", "surrogatepass")
            self._source = Source(raw, None, "txt", len(raw))
        elif isinstance(data, (bytes, bytearray)):
            raw = bytes(data)
            self._source = Source(raw, None, "txt", len(raw))
        else:
            raise TypeError(f"{_WHAT} takes a str or a path, not {type(data).__name__}")

    def _encode(self) -> tuple[bytes | Source, str, dict[str, Any]]:
        return self._source, self._source.ext, {}
