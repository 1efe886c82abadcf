"""The stored key and what settings make of it; alerts' wait rule (no server needed)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

import mlop
from mlop._online._auth import Credentials, credentials_path, load_credentials, remove_credentials, save
from mlop._settings import resolve_settings


@pytest.fixture(autouse=True)
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cfg"
    monkeypatch.setenv("MLOP_CONFIG_DIR", str(folder))
    return folder


def test_save_makes_an_owner_only_file_and_remove_deletes_it(config_dir: Path) -> None:
    path = save(Credentials("mlps_k1", "http://127.0.0.1:9"))
    assert path == credentials_path() and path.parent == config_dir
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(config_dir.stat().st_mode) == 0o700
    assert load_credentials() == Credentials("mlps_k1", "http://127.0.0.1:9")
    assert "mlps_k1" not in repr(load_credentials())
    assert remove_credentials() == path and load_credentials() is None and remove_credentials() is None


def test_a_stored_key_makes_runs_online_and_explicit_keys_win(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_settings({}, None, environ={}).run_mode == "offline"
    save(Credentials("mlps_stored", "http://127.0.0.1:9"))
    stored = resolve_settings({}, None, environ={})
    assert stored.api_key == "mlps_stored" and stored.host == "http://127.0.0.1:9"
    assert stored.run_mode == "online" and "mlps_stored" not in repr(stored)
    from_env = resolve_settings({}, None, environ={"MLOP_API_TOKEN": "mlps_env"})
    assert from_env.api_key == "mlps_env" and from_env.host == "http://127.0.0.1:9"  # the login's server
    assert resolve_settings({}, {"_auth": "mlps_alias"}, environ={}).api_key == "mlps_alias"
    assert resolve_settings({"host": "h"}, None, environ={}).urls()["url_api"] == "http://h:3001"


def test_the_stored_key_goes_only_to_the_server_it_was_stored_for(caplog: pytest.LogCaptureFixture) -> None:
    save(Credentials("mlps_for_nine", "http://127.0.0.1:9"))
    same = resolve_settings({}, None, environ={"MLOP_HOST": "http://127.0.0.1:9/"})
    assert same.api_key == "mlps_for_nine"
    elsewhere = resolve_settings({"host": "http://evil.example:8080"}, None, environ={})
    assert elsewhere.api_key is None and elsewhere.urls()["url_api"] == "http://evil.example:8080"
    by_url = resolve_settings({}, None, environ={"MLOP_URL_API": "https://evil.example"})
    assert by_url.api_key is None
    assert "is for http://127.0.0.1:9, not http://evil.example:8080" in caplog.text
    assert "mlps_for_nine" not in caplog.text
    # A key given for that other server goes there.
    given = resolve_settings({"host": "http://evil.example:8080", "api_key": "mlps_other"}, None, environ={})
    assert (given.api_key, given.host) == ("mlps_other", "http://evil.example:8080")


def test_a_key_with_no_server_configured_goes_to_the_hosted_service_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import mlop._settings

    mlop._settings._SAID.discard("hosted")
    for _ in range(3):
        settings = resolve_settings({}, None, environ={"MLOP_API_TOKEN": "mlps_env"})
        assert settings.urls()["url_api"] == "https://trakkur-api.trainy.ai"
    assert caplog.text.count("goes to the hosted service https://trakkur-api.trainy.ai") == 1
    caplog.clear()
    offline = resolve_settings({}, None, environ={"MLOP_API_TOKEN": "mlps_env", "MLOP_MODE": "offline"})
    assert offline.run_mode == "offline" and caplog.text == ""


def test_a_file_others_can_read_is_used_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    path = save(Credentials("mlps_loose"))
    path.chmod(0o644)
    assert load_credentials() == Credentials("mlps_loose")
    assert "can be read by others" in caplog.text and "mlps_loose" not in caplog.text


def test_alert_wait_drops_and_counts_repeats_without_sleeping(tmp_path: Path) -> None:
    run = mlop.init(project="alerts", dir=tmp_path, mode="offline", disable_console=True)
    for _ in range(5):
        run.alert(text="loss is flat", title="flat", wait_duration=3600)
    run.alert("other", title="other", wait=3600)
    run.alert("to slack", title="hook", url="https://hooks.example/x", remote=False)
    run.finish()
    assert run.alerts_dropped == {"flat": 4}
    with mlop.open_run(run.dir) as reader:
        alerts = list(reader.alerts())
    assert [a["title"] for a in alerts] == ["flat", "other", "hook"]
    assert alerts[0]["body"] == "loss is flat" and alerts[2]["url"] == "https://hooks.example/x"


def test_settings_repr_shows_no_key_webhook_or_url_password() -> None:
    settings = resolve_settings(
        {"api_key": "mlps_repr_key", "url_webhook": "https://hooks.slack.com/services/T1/B2/xyz"},
        None,
        environ={"MLOP_HTTP_PROXY": "http://bob:hunter2-proxy@proxy.internal:3128"},
    )
    text = repr(settings)
    assert "proxy.internal:3128" in text
    for secret in ("mlps_repr_key", "hooks.slack.com", "hunter2-proxy", "bob:"):
        assert secret not in text


def test_login_warns_when_the_key_would_cross_a_network_in_clear() -> None:
    from mlop._online._commands import _in_clear

    assert _in_clear("http://mlop.example.com:3001") and _in_clear("http://10.0.0.5:8080")
    for url in (
        "https://mlop.example.com",
        "http://127.0.0.1:8080",
        "http://localhost:3001",
        "http://[::1]:9",
    ):
        assert not _in_clear(url), url
