"""`mlop login` / `mlop logout` against mlop-server as a real process, and what a stored key changes."""

from __future__ import annotations

import stat
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
