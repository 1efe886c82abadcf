"""The dashboard's login against a real server process: a key once, then a signed, expiring session cookie
(HttpOnly, SameSite=Strict, Secure over HTTPS) that the read API and the dashboard's own writes accept.
On both backends (the ``server`` fixture of conftest.py): the secret that signs it lives in the database."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx

from mlop_server._backend import open_storage
from mlop_server._session import COOKIE, sign_session
from mlop_server.testing import ServerProcess

DASHBOARD = {"X-Mlop-Dashboard": "1"}


def _login(server: ServerProcess, key: str) -> httpx.Response:
    return httpx.post(f"{server.url}/ui/session", json={"key": key}, headers=DASHBOARD, timeout=10)


def _attributes(set_cookie: str) -> tuple[str, dict[str, str]]:
    """The cookie's value and its attributes (lower-case names)."""
    first, *rest = [part.strip() for part in set_cookie.split(";")]
    name, _, value = first.partition("=")
    assert name == COOKIE
    return value, {k.lower(): v for k, _, v in (part.partition("=") for part in rest)}


def _secret(server: ServerProcess) -> bytes:
    """The server's signing secret, read from its real database (as a forger with a copy of it would)."""
    storage = open_storage(server.db, server.data_dir)
    try:
        return storage.signing_secret()
    finally:
        storage.close()


def _keys(server: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return server.cli("keys", *args)


def _new_run(server: ServerProcess, project: str = "sessions") -> int:
    answer = httpx.post(
        f"{server.url}/api/runs/create",
        json={"runName": "r", "projectName": project},
        headers={"Authorization": f"Bearer {server.key}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    run_id: int = answer.json()["runId"]
    return run_id


def test_login_sets_a_strict_httponly_cookie_that_reads_and_writes(server: ServerProcess) -> None:
    run_id = _new_run(server)
    answer = _login(server, server.key)
    assert answer.status_code == 200, answer.text
    assert answer.json()["owner"] == "admin"
    value, flags = _attributes(answer.headers["set-cookie"])
    assert "httponly" in flags and flags["samesite"] == "Strict" and flags["path"] == "/"
    assert "secure" not in flags  # plain http on loopback: a Secure cookie would never come back
    assert int(flags["max-age"]) == 12 * 3600
    assert server.key not in value and server.key[5:15] not in value  # the key itself is not in the cookie

    with httpx.Client(base_url=server.url, cookies={COOKIE: value}, timeout=10) as browser:
        assert browser.get("/ui/session").json()["admin"] is True
        assert browser.get(f"/api/runs/{run_id}").json()["name"] == "r"
        # a write on the cookie alone (what a cross-site form would send) is refused ...
        refused = browser.post("/api/runs/tags/update", json={"runId": run_id, "tags": ["forged"]})
        assert refused.status_code == 401
        # ... and taken with the dashboard's header
        taken = browser.post(
            "/api/runs/tags/update", json={"runId": run_id, "tags": ["from-the-page"]}, headers=DASHBOARD
        )
        assert taken.status_code == 200, taken.text
        assert browser.get(f"/api/runs/{run_id}").json()["tags"] == ["from-the-page"]


def test_a_wrong_key_or_a_call_without_the_dashboard_header_gets_no_cookie(server: ServerProcess) -> None:
    wrong = _login(server, "mlps_" + "x" * 43)
    assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
    no_header = httpx.post(f"{server.url}/ui/session", json={"key": server.key}, timeout=10)
    assert no_header.status_code == 400 and "set-cookie" not in no_header.headers
    garbled = httpx.post(f"{server.url}/ui/session", content=b"key=abc", headers=DASHBOARD, timeout=10)
    assert garbled.status_code in (400, 415) and "set-cookie" not in garbled.headers


def test_forged_altered_and_expired_cookies_are_refused(server: ServerProcess) -> None:
    value, _ = _attributes(_login(server, server.key).headers["set-cookie"])
    version, key_id, expires, signature = value.split(".")
    later = str(int(expires) + 10**6)
    real_secret = _secret(server)
    refused = [
        f"{version}.{key_id}.{later}.{signature}",  # a longer life, same signature
        f"{version}.{int(key_id) + 1}.{expires}.{signature}",  # another key
        f"{version}.{key_id}.{expires}.{signature[:-2]}AA",  # a changed signature
        sign_session(b"not the server's secret", int(key_id), int(expires)),  # signed by someone else
        sign_session(real_secret, int(key_id), int(time.time()) - 1),  # correctly signed, but expired
        "garbage",
    ]
    for cookie in refused:
        with httpx.Client(base_url=server.url, cookies={COOKIE: cookie}, timeout=10) as browser:
            assert browser.get("/api/projects").status_code == 401, cookie
    with httpx.Client(base_url=server.url, cookies={COOKIE: value}, timeout=10) as browser:
        assert browser.get("/api/projects").status_code == 200


def test_the_session_outlives_a_server_restart_and_ends_with_logout_or_revoke(server: ServerProcess) -> None:
    made = _keys(server, "create", "--name", "sam")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    value, _ = _attributes(_login(server, key).headers["set-cookie"])
    server.restart()  # a new process: the secret comes from the database, so the cookie still counts
    with httpx.Client(base_url=server.url, cookies={COOKIE: value}, timeout=10) as browser:
        assert browser.get("/ui/session").json()["owner"] == "sam"
        out = browser.post("/ui/logout", headers=DASHBOARD)
        assert out.status_code == 200
        _, flags = _attributes(out.headers["set-cookie"])
        assert flags["max-age"] == "0"
    listed = _keys(server, "list").stdout
    key_id = next(line.split()[0] for line in listed.splitlines() if " sam " in f" {line} ")
    revoked = _keys(server, "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    with httpx.Client(base_url=server.url, cookies={COOKIE: value}, timeout=10) as browser:
        assert browser.get("/ui/session").status_code == 401  # the key is revoked: so is its session


def test_the_cookie_is_secure_when_the_public_url_is_https(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "https", extra_args=["--public-url", "https://mlop.example.org"]) as proc:
        answer = _login(proc, proc.key)
        assert answer.status_code == 200, answer.text
        _, flags = _attributes(answer.headers["set-cookie"])
        assert "secure" in flags and flags["samesite"] == "Strict" and "httponly" in flags
