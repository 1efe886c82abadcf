"""The exceptions mlop raises.

Every error mlop raises on purpose derives from :class:`MlopError`::

    MlopError
    ├── ConfigError        wrong arguments to init(), an unknown setting, a bad mode
    ├── NoRunError         a module-level call (mlop.log, mlop.finish, ...) with no live run
    ├── RunExistsError     init() with the id of an existing run, without resume
    ├── StoreError         a local store that cannot be opened or read
    ├── PluginError        an integration that is missing or failed to load
    └── ServerError        the server refused a request (raised by the online client and `mlop sync`)
        └── AuthError      the key is missing, unknown or revoked (401), or not allowed (403): final

The online client's own signals (a fault worth retrying, a retry given up, a run another process is
uploading) derive from :class:`MlopError` too, so that nothing mlop raises is anything else.

Wrong arguments raise at once. Faults of the disk, the network or a plugin that happen after ``init()``
returned are logged and never reach the training loop.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "ConfigError",
    "MlopError",
    "NoRunError",
    "PluginError",
    "RunExistsError",
    "ServerError",
    "StoreError",
]


class MlopError(Exception):
    """Base class of every error mlop raises on purpose."""


class ConfigError(MlopError, ValueError):
    """An argument to ``init()`` or a setting is wrong."""


class NoRunError(MlopError):
    """A module-level call needs a live run and there is none."""


class RunExistsError(MlopError):
    """A run with this id exists already and ``resume`` was not asked for."""


class StoreError(MlopError):
    """A run's local store cannot be opened or read."""


class PluginError(MlopError):
    """An integration package is missing or broken."""


class ServerError(MlopError):
    """The server refused a request."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class AuthError(ServerError):
    """The server did not accept the API key."""
