"""`mlop login` / `mlop logout` against mlop-server as a real process, and what a stored key changes."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from typing import Any

import pytest

pytestmark = pytest.mark.slow


def test_login_stores_the_key_for_its_owner_only_and_runs_go_online(online: Any) -> None:
    env = {k: v for k, v in online.env().items() if k not in ("MLOP_API_TOKEN", "MLOP_HOST")}
    login = online.mlop("login", online.server.key, "--host", online.server.url, env=env)
    assert login.returncode == 0, login.stderr
    assert "organization" in login.stdout and online.server.key not in login.stdout + login.stderr
    stored = online.config_dir / "credentials.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(online.config_dir.stat().st_mode) == 0o700

    body = """
        run = mlop.init(project="logged-in", dir=sys.argv[1])
        run.log({"x": 1.5})
        run.finish()
        print("MODE", run.settings.run_mode, repr(run.settings))
    """
    out = online.run(body, env=env)
    assert "MODE online" in out.stdout and online.server.key not in out.stdout
    run = online.server_run("logged-in")
    assert online.steps(run["id"], "x") == [0]

    logout = online.mlop("logout", env=env)
    assert logout.returncode == 0 and not stored.exists()
    assert "Not logged in" in online.mlop("logout", env=env).stdout
    offline = online.run(body.replace("logged-in", "after-logout"), env=env)
    assert "MODE offline" in offline.stdout


def test_login_with_a_wrong_key_stores_nothing(online: Any) -> None:
    login = online.mlop("login", "mlps_not_a_key_of_this_server", "--host", online.server.url)
    assert login.returncode == 1 and "did not accept" in login.stderr
    assert "mlps_not_a_key_of_this_server" not in login.stderr
    assert not (online.config_dir / "credentials.json").exists()


def test_the_environment_key_overrides_the_stored_one(online: Any) -> None:
    env = online.env()
    assert online.mlop("login", online.server.key, "--host", online.server.url, env=env).returncode == 0
    body = """
        run = mlop.init(project="override", dir=sys.argv[1], x_init_timeout=1, x_finish_timeout=1)
        run.log({"x": 1})
        run.finish()
    """
    out = online.run(body, env={**env, "MLOP_API_TOKEN": "mlps_revoked_or_unknown_key"})
    assert "did not accept the API key" in out.stderr and "mlps_revoked_or_unknown_key" not in out.stderr
    assert "mlop sync" in out.stderr
    assert online.api.get("/api/runs", params={"project": "override"}).json() == []


def _login_with_input(online: Any, *args: str, stdin: str, env: dict[str, str]) -> Any:
    """`mlop login` with ``stdin`` piped in (not a terminal), as a script or a CI job runs it."""
    return subprocess.run(
        [sys.executable, "-m", "mlop.cli", "login", *args],
        cwd=online.tmp,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _no_key(online: Any) -> dict[str, str]:
    return {k: v for k, v in online.env().items() if k not in ("MLOP_API_TOKEN", "MLOP_HOST")}


@pytest.mark.parametrize("how", [["--key-stdin"], []], ids=["--key-stdin", "stdin-not-a-terminal"])
def test_login_reads_the_key_from_stdin_never_from_the_command_line(online: Any, how: list[str]) -> None:
    stored = online.config_dir / "credentials.json"
    done = _login_with_input(
        online, "--host", online.server.url, *how, stdin=online.server.key + "\n", env=_no_key(online)
    )
    assert done.returncode == 0, done.stderr
    assert online.server.key not in done.stdout + done.stderr and "can be seen" not in done.stderr
    assert json.loads(stored.read_text()) == {"api_key": online.server.key, "host": online.server.url}
    stored.unlink()
    empty = _login_with_input(online, "--host", online.server.url, *how, stdin="", env=_no_key(online))
    assert empty.returncode == 1 and "no key given" in empty.stderr and not stored.exists()


def test_a_key_given_as_an_argument_still_works_with_a_warning(online: Any) -> None:
    done = online.mlop("login", online.server.key, "--host", online.server.url, env=_no_key(online))
    assert done.returncode == 0, done.stderr
    assert "can be seen by other users of this machine" in done.stderr
    assert online.server.key not in done.stdout + done.stderr


def test_the_environment_key_goes_to_the_server_of_the_login(online: Any) -> None:
    """MLOP_API_TOKEN with no MLOP_HOST: the run goes where `mlop login --host` pointed, not to the
    hosted service."""
    env = _no_key(online)
    login = online.mlop(
        "login", "--host", online.server.url, env={**env, "MLOP_API_TOKEN": online.server.key}
    )
    assert login.returncode == 0, login.stderr
    body = """
        run = mlop.init(project="env-key-login-host", dir=sys.argv[1], x_init_timeout=5, x_finish_timeout=5)
        run.log({"x": 2.5})
        run.finish()
    """
    out = online.run(body, env={**env, "MLOP_API_TOKEN": online.server.key})
    assert "hosted service" not in out.stderr
    run = online.server_run("env-key-login-host")
    assert online.steps(run["id"], "x") == [0]


def test_a_run_configured_for_another_server_does_not_get_the_stored_key(
    online: Any, fault_proxy: Any
) -> None:
    """Logged in to one server, a run whose MLOP_HOST names another (a typo, a script someone sent) sends
    that server no key, and says which server the stored key is for."""
    env = _no_key(online)
    login = online.mlop(
        "login", "--host", online.server.url, env={**env, "MLOP_API_TOKEN": online.server.key}
    )
    assert login.returncode == 0, login.stderr
    other = fault_proxy(lambda method, path, n: None)
    body = """
        run = mlop.init(project="other-host", dir=sys.argv[1], x_init_timeout=5, x_finish_timeout=5)
        run.log({"x": 1.0})
        run.finish()
    """
    out = online.run(body, env={**env, "MLOP_HOST": other.url})
    assert f"is for {online.server.url}, not {other.url}" in out.stderr
    assert online.server.key not in json.dumps(other.headers) + out.stderr + out.stdout
    assert online.api.get("/api/runs", params={"project": "other-host"}).json() == []


def test_logging_in_to_a_second_server_replaces_the_first_without_a_warning(
    online: Any, tmp_path: Any
) -> None:
    from mlop._online._auth import Credentials

    env = _no_key(online)
    online.config_dir.mkdir(parents=True, exist_ok=True)
    (online.config_dir / "credentials.json").write_text(
        json.dumps({"api_key": "mlps_for_the_other_server", "host": "http://127.0.0.1:9"})
    )
    done = _login_with_input(online, "--host", online.server.url, stdin=online.server.key, env=env)
    assert done.returncode == 0, done.stderr
    assert "is for" not in done.stderr and "plain http" not in done.stderr  # loopback: no warning
    stored = json.loads((online.config_dir / "credentials.json").read_text())
    assert Credentials(stored["api_key"], stored["host"]) == Credentials(online.server.key, online.server.url)
