"""One slow or greedy client cannot starve the others: header deadlines, connection and request limits,
Retry-After, failed-key limits and slow uploads, tried with real sockets against a real server.

Every socket targets 127.0.0.1; the "other" client's sockets are bound to the source address 127.0.0.2 (the
whole 127/8 block is loopback on Linux), so per-address limits can tell the two apart.
"""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest

from mlop_server.testing import ServerProcess

T0 = 1_795_870_984_866
OTHER = "127.0.0.2"


def port_of(server: ServerProcess) -> int:
    return int(server.url.rsplit(":", 1)[1])


def connect(server: ServerProcess, source: str = OTHER, timeout: float = 10.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port_of(server)))
    return sock


def read_until_closed(sock: socket.socket, bound: float) -> bytes:
    """Everything the server sends until it closes the connection; fails after ``bound`` seconds."""
    deadline = time.monotonic() + bound
    out = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk
    raise AssertionError(f"the server kept the connection open for {bound} s; it sent {out!r}")


def trickle(sock: socket.socket, data: bytes, every: float, stop: threading.Event) -> int:
    """Send ``data`` a byte at a time until the server closes the socket; returns the bytes sent."""
    sent = 0
    for i in range(len(data)):
        if stop.wait(every):
            break
        try:
            sock.send(data[i : i + 1])
        except OSError:
            break
        sent += 1
    return sent


def authed(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}, timeout=10)


def test_a_request_line_and_headers_have_a_total_deadline(tmp_path: Path) -> None:
    request = b"GET /api/projects HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200 + b"\r\n\r\n"
    with ServerProcess(tmp_path, extra_args=["--header-timeout", "1.5"]) as server:
        sock = connect(server)
        stop = threading.Event()
        sender = threading.Thread(target=trickle, args=(sock, request, 0.1, stop))  # each byte 0.1 s apart
        sender.start()
        try:
            answer = read_until_closed(sock, bound=10)
        finally:
            stop.set()
            sender.join(10)
            sock.close()
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert b"took over 1.5 s" in answer
        with authed(server) as client:
            assert client.get("/api/projects").status_code == 200


def test_the_default_header_deadline_is_10_s(tmp_path: Path) -> None:
    with ServerProcess(tmp_path) as server:
        sock = connect(server)
        stop = threading.Event()
        sender = threading.Thread(target=trickle, args=(sock, b"GET /health HTTP/1.1\r\n" * 20, 0.5, stop))
        sender.start()
        try:
            answer = read_until_closed(sock, bound=25)
        finally:
            stop.set()
            sender.join(10)
            sock.close()
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert b"took over 10 s" in answer


def test_a_thousand_slow_connections_do_not_starve_normal_requests(tmp_path: Path) -> None:
    args = ["--header-timeout", "3", "--max-connections", "256"]
    with ServerProcess(tmp_path, extra_args=args) as server:
        slow = []
        for _ in range(1000):
            sock = connect(server, timeout=5)
            sock.setblocking(False)
            sock.send(b"GET /api/projects HTTP/1.1\r\n")
            slow.append(sock)
        statuses = []
        try:
            with authed(server) as client:
                for i in range(30):
                    for sock in slow[i % 5 :: 5]:  # the slow ones keep sending, a byte at a time
                        try:
                            sock.send(b"X")
                        except OSError:
                            pass
                    statuses.append(client.get("/api/projects").status_code)
                    time.sleep(0.1)
            assert statuses == [200] * 30
            # every slow connection is closed by the server: evicted, or past its header deadline
            deadline = time.monotonic() + 20
            open_ones = list(slow)
            while open_ones and time.monotonic() < deadline:
                still = []
                for sock in open_ones:
                    try:
                        data = sock.recv(4096)
                    except BlockingIOError:
                        still.append(sock)
                        continue
                    except ConnectionResetError:
                        continue
                    if data and b"408" not in data:
                        raise AssertionError(data)
                    if data:
                        still.append(sock)  # the 408 came; the close follows
                open_ones = still
                time.sleep(0.2)
            assert not open_ones, f"{len(open_ones)} slow connections are still open"
        finally:
            for sock in slow:
                sock.close()


def test_idle_keep_alive_connections_close_early_under_pressure(tmp_path: Path) -> None:
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    with ServerProcess(tmp_path, extra_args=["--max-connections", "20"]) as server:
        quiet = connect(server, source="127.0.0.1")
        quiet.sendall(request)
        first = http.client.HTTPResponse(quiet)
        first.begin()
        first.read()
        quiet.settimeout(1.0)
        with pytest.raises(TimeoutError):  # no pressure: kept alive for the next request
            quiet.recv(1)
        crowd = [connect(server) for _ in range(15)]  # over half of the limit open
        try:
            time.sleep(0.3)  # let the server accept them all
            quiet.settimeout(10)
            quiet.sendall(request)
            second = http.client.HTTPResponse(quiet)
            second.begin()
            assert second.status == 200
            second.read()
            assert read_until_closed(quiet, bound=3) == b""  # closed at once, not after the keep-alive
        finally:
            for sock in [quiet, *crowd]:
                sock.close()


def ingest_request(port: int, run_id: int, key: str, lines: bytes) -> tuple[bytes, bytes]:
    head = (
        f"POST /ingest/metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/x-ndjson\r\nX-Run-Id: {run_id}\r\nContent-Length: {len(lines)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return head, lines


async def ingest_all(port: int, run_id: int, key: str, n: int) -> list[tuple[int, bytes, int]]:
    """``n`` ingests at once: every header first with half a body, then the rest of every body."""
    conns = []
    for i in range(n):
        lines = orjson.dumps({"time": T0, "step": i, "data": {"v": i + 0.5}}) + b"\n"
        head, body = ingest_request(port, run_id, key, lines)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.3", 0))
        writer.write(head + body[:10])
        conns.append((reader, writer, body[10:]))
    await asyncio.sleep(0.5)
    for _, writer, rest in conns:
        if not writer.is_closing():
            writer.write(rest)

    async def answer(i: int, reader: asyncio.StreamReader) -> tuple[int, bytes, int]:
        raw = await asyncio.wait_for(reader.read(), 60)
        status = int(raw.split(b" ", 2)[1])
        return status, raw, i

    try:
        return await asyncio.gather(*(answer(i, c[0]) for i, c in enumerate(conns)))
    finally:
        for _, writer, _ in conns:
            writer.close()


def test_a_thousand_ingests_at_once_get_503_with_retry_after_and_lose_nothing_acknowledged(
    tmp_path: Path, fresh_db: str | None
) -> None:
    with ServerProcess(tmp_path, db=fresh_db) as server, authed(server) as client:
        run_id = client.post("/api/runs/create", json={"runName": "r", "projectName": "busy"}).json()["runId"]
        answers = asyncio.run(ingest_all(port_of(server), run_id, server.key, 1000))
        statuses = {status for status, _, _ in answers}
        assert statuses == {200, 503}, statuses
        for status, raw, _ in answers:
            if status == 503:
                assert b"\r\nretry-after: " in raw.lower()
        acknowledged = sorted(i for status, _, i in answers if status == 200)
        points = client.get(f"/api/runs/{run_id}/metrics", params={"key": "v"}).json()
        assert [p["step"] for p in points] == acknowledged
        assert [p["value"] for p in points] == [i + 0.5 for i in acknowledged]


def wrong_key_status(server: ServerProcess, key: str, source: str) -> tuple[int, str | None]:
    conn = http.client.HTTPConnection("127.0.0.1", port_of(server), timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", "/api/projects", headers={"Authorization": f"Bearer {key}"})
        answer = conn.getresponse()
        answer.read()
        return answer.status, answer.getheader("Retry-After")
    finally:
        conn.close()


def test_failed_keys_are_limited_per_address_and_never_lock_out_a_valid_key(
    tmp_path: Path, fresh_db: str | None
) -> None:
    with ServerProcess(tmp_path, db=fresh_db) as server:
        assert wrong_key_status(server, server.key, OTHER)[0] == 200
        answers = [wrong_key_status(server, f"mlps_guess_{i:06d}_xxxxxxxxxxxx", OTHER) for i in range(300)]
        statuses = [status for status, _ in answers]
        assert set(statuses) == {401, 429}
        assert statuses.index(429) < 150
        assert all(int(retry or 0) >= 1 for status, retry in answers if status == 429)
        assert wrong_key_status(server, "mlps_one_more_guess_xxxxxxxxxx", OTHER)[0] == 429
        assert wrong_key_status(server, server.key, OTHER)[0] == 200  # the valid key still works there
        assert wrong_key_status(server, "mlps_one_more_guess_xxxxxxxxxx", "127.0.0.1")[0] == 401


def test_a_trickling_upload_is_cut_and_frees_its_slot(tmp_path: Path) -> None:
    args = ["--body-timeout", "1", "--max-uploads", "1"]
    with ServerProcess(tmp_path, extra_args=args) as server, authed(server) as client:
        run_id = client.post("/api/runs/create", json={"runName": "r", "projectName": "up"}).json()["runId"]
        entries = [
            {"fileName": name, "fileSize": 2000, "fileType": "bin", "time": T0, "logName": "f", "step": 0}
            for name in ("slow.bin", "fast.bin")
        ]
        urls = client.post("/files", json={"files": entries}, headers={"X-Run-Id": str(run_id)}).json()
        slow_url, fast_url = (next(iter(entry.values())) for entry in urls["f"])
        target = slow_url.removeprefix(server.url)
        sock = connect(server)
        sock.sendall(f"PUT {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n".encode())
        stop = threading.Event()
        sender = threading.Thread(target=trickle, args=(sock, b"x" * 2000, 0.05, stop))
        sender.start()
        try:
            answer = read_until_closed(sock, bound=15)
        finally:
            stop.set()
            sender.join(10)
            sock.close()
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert httpx.put(fast_url, content=b"y" * 2000, timeout=10).status_code == 200
        files = client.get(f"/api/runs/{run_id}/files", params={"key": "f"}).json()
        assert {f["fileName"]: f["uploaded"] for f in files} == {"slow.bin": False, "fast.bin": True}


def test_slow_bodies_from_one_address_cannot_take_every_request_slot(tmp_path: Path) -> None:
    args = ["--max-requests", "16", "--body-timeout", "3"]
    with ServerProcess(tmp_path, extra_args=args) as server, authed(server) as client:
        run_id = client.post("/api/runs/create", json={"runName": "r", "projectName": "slow"}).json()["runId"]
        line = orjson.dumps({"time": T0, "step": 0, "data": {"v": 1.0}}) + b"\n"
        head, body = ingest_request(port_of(server), run_id, server.key, line * 100)
        held = []
        stop = threading.Event()
        senders = []
        try:
            for n in range(10):  # a quarter of the slots, at least 8, per address: the last two are refused
                sock = connect(server)
                sock.sendall(head + body[:5])
                held.append(sock)
                if n < 8:  # the first eight trickle the rest, a byte every 0.1 s (well under the 3 s pause)
                    senders.append(threading.Thread(target=trickle, args=(sock, body[5:], 0.1, stop)))
                    senders[-1].start()
            refused = [read_until_closed(sock, bound=5) for sock in held[8:]]
            assert all(raw.startswith(b"HTTP/1.1 503 ") for raw in refused), refused
            assert all(b"\r\nretry-after: " in raw.lower() for raw in refused)
            assert client.get("/api/projects").status_code == 200  # another address is served
            # the trickling bodies fall below the floor rate: each is cut with 408, not kept for ever
            cut = [read_until_closed(sock, bound=15) for sock in held[:8]]
            assert all(raw.startswith(b"HTTP/1.1 408 ") for raw in cut), cut
            assert all(b"slower than" in raw for raw in cut), cut
        finally:
            stop.set()
            for sender in senders:
                sender.join(10)
            for sock in held:
                sock.close()
        assert client.get(f"/api/runs/{run_id}/keys").json() == []


def test_oversized_headers_get_431_and_a_close(tmp_path: Path) -> None:
    with ServerProcess(tmp_path) as server:
        sock = connect(server)
        try:
            pads = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 1024) for i in range(66))
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + pads)  # never ended, over 64 KiB
            answer = read_until_closed(sock, bound=10)
        finally:
            sock.close()
        assert answer.startswith(b"HTTP/1.1 431 "), answer
        assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200
