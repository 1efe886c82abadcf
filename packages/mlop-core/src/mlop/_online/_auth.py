"""The stored API key: ``mlop login`` writes it, ``mlop logout`` removes it, settings read it.

The key lives in ``<config dir>/credentials.json``, a file only its owner can read or write (0600) in a
folder only its owner can enter (0700). The config dir is ``$MLOP_CONFIG_DIR``, else
``$XDG_CONFIG_HOME/mlop``, else ``~/.config/mlop``. The key is stored with the server it was checked
against and is sent to that server only (see ``_bind_key_to_host`` in :mod:`mlop._settings`);
``MLOP_API_TOKEN`` and the ``api_key`` setting (alias ``_auth``) override the file.

No httpx here: settings read this module in the training process.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import stat
from pathlib import Path
from typing import Final

__all__ = ["Credentials", "config_dir", "credentials_path", "load_credentials", "remove_credentials", "save"]

logger = logging.getLogger(__name__)

CREDENTIALS_FILE: Final = "credentials.json"


@dataclasses.dataclass(frozen=True)
class Credentials:
    """A key and the server it is for (None: the hosted service)."""

    api_key: str = dataclasses.field(repr=False)
    host: str | None = None


def config_dir() -> Path:
    explicit = os.environ.get("MLOP_CONFIG_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".config"
    return base / "mlop"


def credentials_path() -> Path:
    return config_dir() / CREDENTIALS_FILE


def load_credentials() -> Credentials | None:
    """The stored key, if any. A file others could read is still used, with a warning to fix it."""
    path = credentials_path()
    try:
        info = path.stat()
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("mlop: cannot read the stored key %s (%s); ignored", path, type(exc).__name__)
        return None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("mlop: %s can be read by others; run `chmod 600 %s` or `mlop login` again", path, path)
    key = raw.get("api_key") if isinstance(raw, dict) else None
    if not isinstance(key, str) or not key:
        return None
    host = raw.get("host")
    return Credentials(key, host if isinstance(host, str) and host else None)


def save(credentials: Credentials) -> Path:
    """Store a key for this user only (0600 file in a 0700 folder), replacing any stored one."""
    folder = config_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / CREDENTIALS_FILE
    temp = folder / f".{CREDENTIALS_FILE}.{os.getpid()}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        body = {"api_key": credentials.api_key, "host": credentials.host}
        os.write(fd, (json.dumps(body) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    return path


def remove_credentials() -> Path | None:
    """Delete the stored key; returns the file removed, or None when there was none."""
    path = credentials_path()
    try:
        path.unlink()
    except FileNotFoundError:
        return None
    return path
