"""Run settings: typed fields, and where each value comes from.

Precedence, highest first: keywords to ``init()``, the ``settings`` argument (a :class:`Settings` or a
dict), the environment (``MLOP_<FIELD>``), the defaults below.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import re
from collections.abc import Mapping
from typing import Any, Final, Literal, get_args

from mlop._exceptions import ConfigError

__all__ = ["HOSTED_URLS", "Mode", "Settings", "public_url", "public_urls", "resolve_settings", "same_server"]

logger = logging.getLogger(__name__)

Mode = Literal["online", "offline", "disabled"]
_MODES: Final = get_args(Mode)
_MODE_ALIASES: Final = {"noop": "disabled", "dryrun": "offline"}

HOSTED_URLS: Final = {
    "url_app": "https://trakkur.trainy.ai",
    "url_api": "https://trakkur-api.trainy.ai",
    "url_ingest": "https://trakkur-ingest.trainy.ai",
    "url_py": "https://trakkur-py.trainy.ai",
}
_SELF_HOSTED_PORTS: Final = {"url_app": 3000, "url_api": 3001, "url_ingest": 3003, "url_py": 3004}

# Names users know from the original client or from other trackers, mapped to ours.
_ALIASES: Final = {"_auth": "api_key", "save_dir": "dir", "api_token": "api_key"}
# Environment variables whose name is not simply MLOP_<FIELD>.
_ENV_ALIASES: Final = {"MLOP_API_TOKEN": "api_key", "MLOP_API_KEY": "api_key"}
_URL_USERINFO: Final = re.compile(r"(://)[^/@\s]*@")
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})


@dataclasses.dataclass
class Settings:
    """Everything that controls a run besides its data.

    Fields starting with ``x_`` are tuning knobs: safe to leave alone.
    """

    project: str = "default"
    name: str | None = None
    dir: str | None = None
    mode: str | None = None
    run_id: str | None = None
    resume: bool = False
    host: str | None = None
    api_key: str | None = dataclasses.field(default=None, repr=False)
    url_app: str | None = None
    url_api: str | None = None
    url_ingest: str | None = None
    url_py: str | None = None
    url_webhook: str | None = dataclasses.field(default=None, repr=False)
    debug_level: str = "WARNING"
    disable_system_metrics: bool = False
    disable_console: bool = False
    console_fd: bool = False
    capture_env_vars: bool = False
    capture_git_diff: bool = False
    shared: bool = False
    insecure_disable_ssl: bool = False
    http_proxy: str | None = None
    x_flush_interval: float = 0.05
    x_sys_sampling_interval: float = 10.0
    x_finish_timeout: float = 30.0
    x_init_timeout: float = 5.0
    x_heartbeat_interval: float = 5.0
    x_upload_workers: int = 4
    x_writer_process: bool = True

    def __repr__(self) -> str:
        """The fields, without the key and the webhook, and without credentials inside URLs (a proxy's)."""
        parts = []
        for field in dataclasses.fields(self):
            if not field.repr:
                continue
            value = getattr(self, field.name)
            if isinstance(value, str) and "@" in value:
                value = _URL_USERINFO.sub(r"\1[REDACTED]@", value)
            parts.append(f"{field.name}={value!r}")
        return f"Settings({', '.join(parts)})"

    @property
    def run_mode(self) -> Mode:
        """The resolved mode: ``online`` with a key or a host configured, else ``offline``."""
        if self.mode is not None:
            return self.mode  # type: ignore[return-value]
        if self.api_key or self.host or self.url_api:
            return "online"
        return "offline"

    def urls(self) -> dict[str, str]:
        """The four base URLs, from ``host`` or the explicit ``url_*`` settings or the hosted defaults."""
        out = dict(HOSTED_URLS)
        if self.host:
            host = self.host.rstrip("/")
            if "://" in host:
                out = dict.fromkeys(HOSTED_URLS, host)
            else:
                out = {k: f"http://{host}:{port}" for k, port in _SELF_HOSTED_PORTS.items()}
        for k in HOSTED_URLS:
            explicit = getattr(self, k)
            if explicit:
                out[k] = explicit.rstrip("/")
        return out

    def update(self, values: Mapping[str, Any], source: str) -> None:
        """Set fields from ``values``; an unknown key raises :class:`ConfigError` naming the closest one."""
        for raw_key, value in values.items():
            key = _field_name(raw_key, source)
            setattr(self, key, _coerce(key, value, source))


_FIELDS: Final = {f.name: f for f in dataclasses.fields(Settings)}


def _field_name(key: str, source: str) -> str:
    key = _ALIASES.get(key, key)
    if key in _FIELDS:
        return key
    close = difflib.get_close_matches(key, list(_FIELDS) + list(_ALIASES), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown setting {key!r} in {source}{hint}")


def _coerce(key: str, value: Any, source: str) -> Any:
    kind = _FIELDS[key].type
    if value is None:
        if "None" in str(kind):
            return None
        raise ConfigError(f"setting {key!r} in {source} cannot be None")
    try:
        if kind == "bool":
            if isinstance(value, str):
                low = value.strip().lower()
                if low in _TRUE:
                    return True
                if low in _FALSE:
                    return False
                raise ValueError(value)
            return bool(value)
        if kind == "float":
            return float(value)
        if kind == "int":
            return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {key!r} in {source} must be {kind}, got {value!r}") from None
    if key == "mode":
        mode = str(value).lower()
        mode = _MODE_ALIASES.get(mode, mode)
        if mode not in _MODES:
            raise ConfigError(f"mode must be one of {', '.join(_MODES)} (or 'noop'), got {value!r}")
        return mode
    if key == "debug_level":
        return str(value).upper()
    return str(value) if not isinstance(value, str) else value


def _from_environ(environ: Mapping[str, str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in environ.items():
        if not name.startswith("MLOP_"):
            continue
        if name in _ENV_ALIASES:
            found[_ENV_ALIASES[name]] = value
            continue
        key = name[len("MLOP_") :].lower()
        if key in _FIELDS:
            found.setdefault(key, value)
    return found


def resolve_settings(
    keywords: Mapping[str, Any],
    settings: Settings | Mapping[str, Any] | None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge the sources of settings in order of precedence.

    Args:
        keywords: settings passed to ``init()`` as keywords (``None`` values are ignored).
        settings: the ``settings`` argument of ``init()``.
        environ: the environment; ``os.environ`` when omitted.

    Raises:
        ConfigError: an unknown key or a value of the wrong type.
    """
    out = Settings()
    out.update(_from_environ(os.environ if environ is None else environ), "the environment")
    if isinstance(settings, Settings):
        given = {
            f.name: getattr(settings, f.name)
            for f in dataclasses.fields(Settings)
            if getattr(settings, f.name) != f.default
        }
        out.update(given, "settings")
    elif settings is not None:
        if not isinstance(settings, Mapping):
            raise ConfigError(f"settings must be a mlop.Settings or a dict, got {type(settings).__name__}")
        out.update(settings, "settings")
    out.update({k: v for k, v in keywords.items() if v is not None}, "init()")
    _bind_key_to_host(out)
    return out


def public_url(url: str) -> str:
    """``url`` without a ``user:password@`` part (a proxy or host URL may carry one)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"


def public_urls(urls: Mapping[str, str]) -> dict[str, str]:
    """Base URLs fit to be written down: any credentials inside them removed."""
    return {k: public_url(str(v)) for k, v in urls.items()}


def same_server(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    """Whether two sets of base URLs (:meth:`Settings.urls`) name the same server (credentials inside a
    URL aside)."""
    pa, pb = public_urls(a), public_urls(b)
    return all(pa.get(k, "").rstrip("/").lower() == pb.get(k, "").rstrip("/").lower() for k in HOSTED_URLS)


def _bind_key_to_host(out: Settings) -> None:
    """Which key goes to which server.

    The key ``mlop login`` stored goes only to the server it was stored for: with no other key given, it is
    taken when no server is configured (and brings its server along) or when the configured server is
    that one. A key given another way (``MLOP_API_TOKEN``, ``init(api_key=...)``) goes to the configured
    server; with none configured, to the server of the stored login, else to the hosted service, which is
    said once.
    """
    from mlop._online._auth import load_credentials

    configured = bool(out.host) or any(getattr(out, k) for k in HOSTED_URLS)
    if out.api_key is not None and configured:
        return
    stored = load_credentials()
    if out.api_key is None:
        if stored is None:
            return
        login_urls = Settings(host=stored.host).urls()
        if not configured:
            out.host = stored.host
            out.api_key = stored.api_key
        elif same_server(out.urls(), login_urls):
            out.api_key = stored.api_key
        else:
            _say_once(
                f"stored-elsewhere {login_urls['url_api']} {out.urls()['url_api']}",
                f"mlop: the key stored by `mlop login` is for {login_urls['url_api']}, not "
                f"{out.urls()['url_api']}, so it is not sent there; run `mlop login --host URL` for that "
                "server or set MLOP_API_TOKEN",
            )
        return
    if stored is not None:
        out.host = stored.host  # None: the login was for the hosted service
    elif out.run_mode == "online":
        _say_once(
            "hosted",
            f"mlop: no server configured (MLOP_HOST or `mlop login --host`): the API key goes to the hosted "
            f"service {HOSTED_URLS['url_api']}",
        )


_SAID: Final[set[str]] = set()


def _say_once(what: str, message: str) -> None:
    if what not in _SAID:
        _SAID.add(what)
        logger.warning("%s", message)
