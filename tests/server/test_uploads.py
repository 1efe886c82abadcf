"""Upload URLs: the signed URL is the only credential, bound to its file, run, key and expiry."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from mlop_server.testing import ServerProcess

T0 = 1_795_870_984_866


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, db_url: str | None) -> Iterator[ServerProcess]:
    args = ["--max-uploads", "1", "--max-file-mb", "1"]
    with ServerProcess(tmp_path_factory.mktemp("uploads"), extra_args=args, db=db_url) as proc:
        yield proc


def ask(client: httpx.Client, run_id: int, name: str, size: int, key: str = "img") -> str:
    entry = {"fileName": name, "fileSize": size, "fileType": "bin", "time": T0, "logName": key, "step": 0}
    answer = client.post("/files", json={"files": [entry]}, headers={"X-Run-Id": str(run_id)})
    assert answer.status_code == 200, answer.text
    url: str = answer.json()[key][0][name]
    return url


def altered(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()} | changes
    return parts._replace(query=urlencode(query)).geturl()


def stored(client: httpx.Client, run_id: int, key: str = "img") -> dict[str, bytes | None]:
    files = client.get(f"/api/runs/{run_id}/files", params={"key": key}).json()
    return {f["fileName"]: client.get(f["url"]).content if f["uploaded"] else None for f in files}


def test_upload_streams_the_bytes(client: httpx.Client, new_run: Callable[..., int]) -> None:
    run_id = new_run()
    data = bytes(range(256)) * 4000
    url = ask(client, run_id, "big.bin", len(data))
    assert httpx.put(url, content=iter([data[:1000], data[1000:]])).status_code == 200
    assert stored(client, run_id) == {"big.bin": data}
    assert httpx.put(url, content=data).status_code == 409  # uploaded already


def test_altered_urls_are_refused(client: httpx.Client, new_run: Callable[..., int]) -> None:
    run_id, other_run = new_run(), new_run()
    url = ask(client, run_id, "a.bin", 3)
    other = ask(client, other_run, "a.bin", 3)
    signature = parse_qs(urlsplit(url).query)["signature"][0]
    bad_urls = [
        altered(url, signature=("0" if signature[0] != "0" else "1") + signature[1:]),
        altered(url, expires=str(int(time.time()) + 7200)),
        altered(url, run=str(other_run)),  # replayed for another run
        altered(url, signature=""),
        url.split("?")[0],
        other.split("?")[0] + "?" + url.split("?")[1],  # this URL's signature on the other run's file
    ]
    for bad_url in bad_urls:
        answer = httpx.put(bad_url, content=b"abc")
        assert answer.status_code == 401, (bad_url, answer.text)
        assert answer.json()["error"] == "Unauthorized"
    assert stored(client, run_id) == {"a.bin": None}
    assert stored(client, other_run) == {"a.bin": None}
    assert httpx.put(url, content=b"abc").status_code == 200
    assert stored(client, run_id) == {"a.bin": b"abc"}
    assert stored(client, other_run) == {"a.bin": None}


def test_size_is_checked(client: httpx.Client, new_run: Callable[..., int]) -> None:
    run_id = new_run()
    url = ask(client, run_id, "s.bin", 10)
    assert httpx.put(url, content=b"x" * 11).status_code == 413
    assert httpx.put(url, content=iter([b"x" * 6, b"x" * 6])).status_code == 413  # chunked, no length
    assert httpx.put(url, content=b"x" * 9).status_code == 400
    assert stored(client, run_id) == {"s.bin": None}
    assert httpx.put(url, content=b"y" * 10).status_code == 200
    assert stored(client, run_id) == {"s.bin": b"y" * 10}
    entry = {
        "fileName": "huge",
        "fileSize": 2 * 1024 * 1024,
        "fileType": "",
        "time": T0,
        "logName": "img",
        "step": 0,
    }
    answer = client.post("/files", json={"files": [entry]}, headers={"X-Run-Id": str(run_id)})
    assert answer.status_code == 400
    assert "fileSize" in answer.json()["message"]


def test_revoked_key_voids_its_urls(server: ServerProcess) -> None:
    created_key = server.cli("keys", "create", "--name", "uploader")
    assert created_key.returncode == 0, created_key.stderr
    key = created_key.stdout.strip()
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as user:
        created = user.post("/api/runs/create", json={"runName": "r", "projectName": "uploads"})
        url = ask(user, created.json()["runId"], "r.bin", 3)
    prefix = key[:12]
    assert server.cli("keys", "revoke", prefix).returncode == 0
    answer = httpx.put(url, content=b"abc")
    assert answer.status_code == 401
    assert "revoked" in answer.json()["message"]


def test_too_many_uploads_at_once(client: httpx.Client, new_run: Callable[..., int]) -> None:
    run_id = new_run()
    slow_url, fast_url = ask(client, run_id, "slow.bin", 4), ask(client, run_id, "fast.bin", 4)
    release = threading.Event()
    started = threading.Event()

    def slow_body() -> Iterator[bytes]:
        yield b"ab"
        started.set()
        release.wait(10)
        yield b"cd"

    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(httpx.put(slow_url, content=slow_body(), timeout=30).status_code)
    )
    thread.start()
    try:
        assert started.wait(10)
        deadline = time.monotonic() + 5
        status = 0
        while time.monotonic() < deadline:  # the slow upload holds this server's only upload slot
            answer = httpx.put(fast_url, content=b"wxyz")
            status = answer.status_code
            if status == 429:
                assert answer.headers["retry-after"] == "1"
                break
            time.sleep(0.05)
        assert status == 429
    finally:
        release.set()
        thread.join(30)
    assert result == [200]
    assert httpx.put(fast_url, content=b"wxyz").status_code == 200
    assert stored(client, run_id) == {"slow.bin": b"abcd", "fast.bin": b"wxyz"}
