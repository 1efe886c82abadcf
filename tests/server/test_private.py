"""What the server keeps is its user's only, its admin key is strong and out of ``ps``, a failed start
creates nothing, and uploaded files are served so a browser never runs them as pages of the server."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from mlop_server.testing import DEFAULT_TEST_KEY, ServerProcess

T0 = 1_795_870_984_866


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def start(
    data: Path, *args: str, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run ``mlop server`` that must fail to start (it exits; a start that succeeds would hang)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}
    return subprocess.run(
        [sys.executable, "-m", "mlop_server", "--port", "0", "--data", str(data), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
        input=stdin,
    )


@pytest.mark.parametrize("how", ["--admin-key", "env", "--admin-key-stdin"])
def test_a_short_admin_key_is_refused_and_creates_nothing(tmp_path: Path, how: str) -> None:
    data = tmp_path / "data"
    short = "mlps_" + "x" * 14  # 19 characters
    if how == "--admin-key":
        out = start(data, "--admin-key", short)
    elif how == "env":
        out = start(data, env={"MLOP_SERVER_ADMIN_KEY": short})
    else:
        out = start(data, "--admin-key-stdin", stdin=short + "\n")
    assert out.returncode != 0
    assert "at least 20 characters" in out.stderr
    assert not data.exists()


def test_a_port_taken_or_a_bad_option_creates_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        data = tmp_path / "data"
        out = subprocess.run(
            [sys.executable, "-m", "mlop_server", "--port", str(port), "--data", str(data)],
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if not k.startswith("MLOP_")},
        )
        assert out.returncode != 0
        assert "cannot listen" in out.stderr
        assert not data.exists()
    for bad in (["--max-body-mb", "0"], ["--header-timeout", "-1"], ["--no-such-option"]):
        out = start(data, *bad, env={"MLOP_SERVER_ADMIN_KEY": DEFAULT_TEST_KEY})
        assert out.returncode != 0, bad
        assert not data.exists(), bad


def test_the_admin_key_stays_out_of_the_command_line(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "a") as server:
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes()
        assert server.key.encode() not in cmdline
        assert (
            httpx.get(
                f"{server.url}/api/projects", headers={"Authorization": f"Bearer {server.key}"}
            ).status_code
            == 200
        )
    key = "mlps_given_on_stdin_0123456789"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlop_server",
            "--port",
            "0",
            "--data",
            str(tmp_path / "b"),
            "--admin-key-stdin",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("MLOP_")},
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(key + "\n")
        proc.stdin.close()
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert (
            httpx.get(
                f"{url}/api/projects", headers={"Authorization": f"Bearer {key}"}, timeout=30
            ).status_code
            == 200
        )
    finally:
        proc.terminate()
        proc.wait(30)
        for pipe in (proc.stdout, proc.stderr):
            assert pipe is not None
            pipe.close()
    with ServerProcess(tmp_path / "c", extra_args=["--admin-key", "mlps_on_the_command_line_01"]) as server:
        assert "visible" in server.output() or "ps" in server.output()


@pytest.fixture(scope="module")
def loose(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server started with umask 000 in an existing 0755 data folder."""
    data = tmp_path_factory.mktemp("loose") / "data"
    data.mkdir()
    os.chmod(data, 0o755)
    old = os.umask(0)
    try:
        server = ServerProcess(data).start()
    finally:
        os.umask(old)
    try:
        yield server
    finally:
        server.stop()


def upload(
    server: ServerProcess, client: httpx.Client, run_id: int, name: str, kind: str, content: bytes
) -> dict:
    entry = {
        "fileName": name,
        "fileSize": len(content),
        "fileType": kind,
        "time": T0,
        "logName": name,
        "step": 0,
    }
    urls = client.post("/files", json={"files": [entry]}, headers={"X-Run-Id": str(run_id)})
    assert urls.status_code == 200, urls.text
    url = urls.json()[name][0][name]
    assert httpx.put(url, content=content).status_code == 200
    files = client.get(f"/api/runs/{run_id}/files", params={"key": name}).json()
    return files[0]


def test_database_journals_files_and_folders_are_private(loose: ServerProcess) -> None:
    headers = {"Authorization": f"Bearer {loose.key}"}
    with httpx.Client(base_url=loose.url, headers=headers, timeout=30) as client:
        run_id = client.post("/api/runs/create", json={"runName": "r", "projectName": "p"}).json()["runId"]
        line = orjson.dumps({"time": T0, "step": 0, "data": {"v": 1.0}}) + b"\n"
        sent = client.post(
            "/ingest/metrics",
            content=line,
            headers={"Content-Type": "application/x-ndjson", "X-Run-Id": str(run_id)},
        )
        assert sent.status_code == 200
        upload(loose, client, run_id, "f.bin", "bin", b"abc")
    data = loose.data_dir
    db = data / "mlop-server.db"
    made = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]
    made += [p for p in (data / "files").rglob("*") if p.is_file()]
    assert len(made) == 4
    assert {str(p): oct(mode(p)) for p in made} == {str(p): oct(0o600) for p in made}
    folders = [data, *[p for p in (data / "files").rglob("*") if p.is_dir()], data / "files"]
    assert {str(p): oct(mode(p)) for p in folders} == {str(p): oct(0o700) for p in folders}


def test_keys_create_makes_a_private_database_before_any_server(tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    old = os.umask(0)
    try:
        out = subprocess.run(
            [sys.executable, "-m", "mlop_server", "keys", "create", "--name", "dora", "--data", str(data)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        os.umask(old)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith("mlps_")
    assert mode(data) == 0o700
    assert {p.name: mode(p) for p in data.iterdir()} == {p.name: 0o600 for p in data.iterdir()}


@pytest.mark.parametrize(
    ("name", "kind", "disposition"),
    [
        ("page.html", "html", "attachment"),
        ("image.svg", "svg", "attachment"),
        ("script.js", "js", "attachment"),
        ("no-type", "", "attachment"),
        ("photo.png", "png", "inline"),
        ("sound.wav", "wav", "inline"),
        ("clip.mp4", "mp4", "inline"),
    ],
)
def test_uploaded_files_are_served_sandboxed(
    loose: ServerProcess, name: str, kind: str, disposition: str
) -> None:
    headers = {"Authorization": f"Bearer {loose.key}"}
    with httpx.Client(base_url=loose.url, headers=headers, timeout=30) as client:
        run_id = client.post("/api/runs/create", json={"runName": "r", "projectName": "files"}).json()[
            "runId"
        ]
        content = b"<script>alert(document.cookie)</script>"
        row = upload(loose, client, run_id, name, kind, content)
        answer = client.get(row["url"])
    assert answer.status_code == 200
    assert answer.content == content
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["content-security-policy"] == "sandbox; default-src 'none'"
    assert answer.headers["content-disposition"].startswith(disposition)
