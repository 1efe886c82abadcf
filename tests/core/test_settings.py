"""Where settings come from, and what happens to the ones that do not exist."""

from __future__ import annotations

from pathlib import Path

import pytest

import mlop
from mlop._settings import HOSTED_URLS, resolve_settings


def test_precedence_keywords_over_settings_over_environment_over_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert resolve_settings({}, None).project == "default"
    monkeypatch.setenv("MLOP_PROJECT", "from-env")
    monkeypatch.setenv("MLOP_X_FLUSH_INTERVAL", "0.2")
    assert resolve_settings({}, None).project == "from-env"
    assert resolve_settings({}, None).x_flush_interval == 0.2
    assert resolve_settings({}, {"project": "from-settings"}).project == "from-settings"
    assert resolve_settings({}, mlop.Settings(project="from-object")).project == "from-object"
    both = resolve_settings({"project": "from-kw"}, {"project": "from-settings"})
    assert both.project == "from-kw"
    assert both.x_flush_interval == 0.2


def test_environment_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MLOP_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("MLOP_MODE", "offline")
    monkeypatch.setenv("MLOP_RUN_ID", "env-run")
    monkeypatch.setenv("MLOP_DEBUG_LEVEL", "info")
    monkeypatch.setenv("MLOP_URL_APP", "http://app.example")
    monkeypatch.setenv("MLOP_URL_API", "http://api.example")
    monkeypatch.setenv("MLOP_URL_INGEST", "http://ingest.example")
    monkeypatch.setenv("MLOP_URL_PY", "http://py.example")
    s = resolve_settings({}, None)
    assert s.dir == str(tmp_path / "d")
    assert s.run_id == "env-run"
    assert s.debug_level == "INFO"
    assert s.urls() == {
        "url_app": "http://app.example",
        "url_api": "http://api.example",
        "url_ingest": "http://ingest.example",
        "url_py": "http://py.example",
    }
    run = mlop.init(project="p")
    run.finish()
    assert run.id == "env-run"
    assert run.dir == tmp_path / "d" / ".mlop" / "p" / "env-run"


def test_default_mode_is_offline_without_key_or_host_and_online_with_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert resolve_settings({}, None).run_mode == "offline"
    assert resolve_settings({"host": "10.0.0.5"}, None).run_mode == "online"
    monkeypatch.setenv("MLOP_API_TOKEN", "mlps_secret")
    online = resolve_settings({}, None)
    assert online.run_mode == "online"
    assert online.api_key == "mlps_secret"
    assert resolve_settings({"mode": "noop"}, None).run_mode == "disabled"
    assert "mlps_secret" not in repr(online)


def test_host_layouts() -> None:
    assert resolve_settings({}, None).urls() == HOSTED_URLS
    assert resolve_settings({"host": "10.1.2.3"}, None).urls() == {
        "url_app": "http://10.1.2.3:3000",
        "url_api": "http://10.1.2.3:3001",
        "url_ingest": "http://10.1.2.3:3003",
        "url_py": "http://10.1.2.3:3004",
    }
    single = resolve_settings({"host": "http://127.0.0.1:8080/"}, None).urls()
    assert set(single.values()) == {"http://127.0.0.1:8080"}


def test_unknown_setting_names_the_closest_valid_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(mlop.ConfigError, match="did you mean 'project'"):
        mlop.init(projcet="x")
    with pytest.raises(mlop.ConfigError, match="did you mean 'x_flush_interval'"):
        mlop.init(settings={"x_flush_intervl": 1})
    with pytest.raises(mlop.ConfigError, match="must be float"):
        mlop.init(x_flush_interval="soon")
    monkeypatch.setenv("MLOP_DISABLE_CONSOLE", "maybe")
    with pytest.raises(mlop.ConfigError, match="disable_console"):
        resolve_settings({}, None)


def test_original_client_aliases() -> None:
    s = resolve_settings({}, {"_auth": "mlpi_abc", "save_dir": "/tmp/x"})
    assert s.api_key == "mlpi_abc"
    assert s.dir == "/tmp/x"
