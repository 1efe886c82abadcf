"""`mlop sync` of a run folder someone else wrote (the attacker's view): the stored key goes only to the
server it was stored for, and only regular files inside the run directory are uploaded.

The folders are real runs written offline by mlop, then changed with ``sqlite3`` as an attacker would.
The attacker's server is the fault proxy in front of the real server: it forwards everything and keeps
every request's headers, so a key sent to it is seen.
"""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

_LOGGED_TEXTS = """
    run = mlop.init(project=os.environ["PROJECT"], dir=sys.argv[1], mode="offline")
    for i in range(4):
        run.log({"note": mlop.Text(f"sample text {i}"), "x": float(i)})
    run.finish()
"""


def _no_key_env(online: Any, **extra: str) -> dict[str, str]:
    """The user's environment: logged in (MLOP_CONFIG_DIR), no MLOP_API_TOKEN, no MLOP_HOST."""
    env = {k: v for k, v in online.env().items() if k not in ("MLOP_API_TOKEN", "MLOP_HOST")}
    env.update(extra)
    return env


def _login(online: Any) -> None:
    env = {**_no_key_env(online), "MLOP_API_TOKEN": online.server.key}
    login = online.mlop("login", "--host", online.server.url, env=env)
    assert login.returncode == 0, login.stderr


def _offline_run(online: Any, project: str) -> Path:
    online.run(_LOGGED_TEXTS, env=_no_key_env(online, PROJECT=project, MLOP_MODE="offline"))
    return online.run_dir(project)


def _point_at(run_dir: Path, urls: dict[str, str]) -> None:
    with sqlite3.connect(run_dir / "run.db") as db:
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('server_urls', ?)", (json.dumps(urls),))


def _files_records(db: sqlite3.Connection) -> list[tuple[int, list[Any]]]:
    rows = db.execute("SELECT seq, payload FROM records WHERE kind = 'files' ORDER BY seq").fetchall()
    return [(seq, pickle.loads(payload)) for seq, payload in rows]


def test_the_stored_key_is_not_sent_to_the_server_a_run_folder_names(online: Any, fault_proxy: Any) -> None:
    _login(online)
    run_dir = _offline_run(online, "crafted-host")
    attacker = fault_proxy(lambda method, path, n: None)
    _point_at(run_dir, dict.fromkeys(("url_app", "url_api", "url_ingest", "url_py"), attacker.url))

    refused = online.mlop("sync", str(run_dir), env=_no_key_env(online))
    assert refused.returncode == 1, refused.stderr
    assert f"headed for {attacker.url}" in refused.stderr and "nothing was sent" in refused.stderr
    assert online.server.key not in refused.stderr + refused.stdout
    assert attacker.log == []  # not one request: the key never left
    assert online.api.get("/api/runs", params={"project": "crafted-host"}).json() == []

    # --host that server, with the stored key (for another server): no key for it, nothing sent.
    no_key = online.mlop("sync", "--host", attacker.url, str(run_dir), env=_no_key_env(online))
    assert no_key.returncode == 1 and f"no API key for {attacker.url}" in no_key.stderr
    assert attacker.log == []

    # The user's own server, named with --host: the stored key goes there, and the run arrives.
    mine = online.mlop("sync", "--host", online.server.url, str(run_dir), env=_no_key_env(online))
    assert mine.returncode == 0, mine.stderr
    run = online.server_run("crafted-host")
    assert online.steps(run["id"], "x") == [0, 1, 2, 3]
    assert attacker.log == []


def test_a_run_headed_elsewhere_is_sent_there_with_a_key_given_for_it(online: Any, fault_proxy: Any) -> None:
    _login(online)
    run_dir = _offline_run(online, "crafted-elsewhere")
    other = fault_proxy(lambda method, path, n: None)
    _point_at(run_dir, dict.fromkeys(("url_app", "url_api", "url_ingest", "url_py"), other.url))
    env = _no_key_env(online, MLOP_API_TOKEN=online.server.key)
    sent = online.mlop("sync", "--host", other.url, str(run_dir), env=env)
    assert sent.returncode == 0, sent.stderr
    assert {h.get("Authorization") for h in other.headers if "Authorization" in h} == {
        f"Bearer {online.server.key}"
    }
    run = online.server_run("crafted-elsewhere")
    assert online.steps(run["id"], "x") == [0, 1, 2, 3]


def test_sync_uploads_only_regular_files_inside_the_run_directory(online: Any, tmp_path: Path) -> None:
    run_dir = _offline_run(online, "crafted-files")
    secret = tmp_path / "credentials.json"
    secret.write_text('{"aws_secret_access_key": "wJalrXUtnFEMI-K7MDENG-outside-the-run"}\n')
    (run_dir / "media").mkdir(exist_ok=True)
    link = run_dir / "media" / "innocent.txt"
    os.symlink(secret, link)
    folder_inside = run_dir / "media" / "a-folder"
    folder_inside.mkdir()
    with sqlite3.connect(run_dir / "run.db") as db:
        records = _files_records(db)
        items = [(seq, index) for seq, payload in records for index in range(len(payload))]
        assert len(items) == 4
        kept_path = records[0][1][0][3]["path"]
        targets = {
            items[1]: os.path.relpath(secret, run_dir),  # ../../../credentials.json
            items[2]: str(secret),  # an absolute path
            items[3]: link.relative_to(run_dir).as_posix(),  # a link inside that leads out
        }
        for seq, payload in records:
            for index, (_step, _when, _key, info) in enumerate(payload):
                if (seq, index) in targets:  # the size it announces matches, so a server takes it
                    info["path"] = targets[(seq, index)]
                    info["fileSize"] = secret.stat().st_size
            db.execute("UPDATE records SET payload = ? WHERE seq = ?", (pickle.dumps(payload), seq))
    assert ".." in targets[items[1]] and (run_dir / targets[items[1]]).resolve() == secret

    sent = online.mlop("sync", str(run_dir), env=online.env())
    assert sent.returncode == 0, sent.stderr
    assert sent.stderr.count("not uploaded") >= 3, sent.stderr
    run = online.server_run("crafted-files")
    files = online.api.get(f"/api/runs/{run['id']}/files", params={"key": "note"}).json()
    assert len(files) == 1, files
    content = online.api.get(f"/api/runs/{run['id']}/files/{files[0]['id']}/content")
    assert content.content == (run_dir / kept_path).read_bytes()
    leaked = [
        p for p in online.server.data_dir.rglob("*") if p.is_file() and b"outside-the-run" in p.read_bytes()
    ]
    assert leaked == []
    assert online.steps(run["id"], "x") == [0, 1, 2, 3]  # the rest of the run arrived


def test_a_password_inside_the_host_url_is_not_written_into_the_run(online: Any) -> None:
    """A host URL may carry credentials (``http://user:pw@host``): the run records where it was headed
    without them, and ``mlop sync`` still recognises that server as the user's own."""
    password = "Hunter2-url-password-1729"
    host = online.server.url.replace("://", f"://alice:{password}@", 1)
    env = {**online.env(), "MLOP_HOST": host, "PROJECT": "url-credentials"}
    online.run(
        """
        run = mlop.init(project=os.environ["PROJECT"], dir=sys.argv[1])
        run.log({"x": 1.0})
        run.finish()
        """,
        env=env,
    )
    run_dir = online.run_dir("url-credentials")
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path
    with sqlite3.connect(run_dir / "run.db") as db:
        (urls,) = db.execute("SELECT value FROM meta WHERE key = 'server_urls'").fetchone()
    assert set(json.loads(urls).values()) == {online.server.url}
    # httpx turns a URL's credentials into Basic auth in place of the key, so this server refuses the
    # key: what matters here is that the message naming the server does not print the password.
    again = online.mlop("sync", str(run_dir), env=env)
    assert again.returncode == 1 and online.server.url in again.stderr
    assert password not in again.stdout + again.stderr
