"""The lean HTTP/1.1 transport of `mlop sync` against a real HTTP server on 127.0.0.1 (the standard
library's, so that the test controls when a connection closes): what arrives, reuse of one connection,
a connection the server closed while idle, and faults as httpx's exceptions (which the client retries)."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mlop._online._keepalive import KeepAliveTransport, usable


class _Server:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        self.ports: set[int] = set()  # the client ports seen: one per connection
        self.close_after = False  # close each connection after its answer, without saying so
        self.delay = 0.0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.seen.append((self.command, self.path, dict(self.headers.items()), body))
                owner.ports.add(self.client_address[1])
                time.sleep(owner.delay)
                answer = b'{"ok": true}'
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                if owner.close_after:
                    self.close_connection = True

        class Quiet(http.server.ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                return  # the timeout test's client leaves before the answer: a broken pipe, expected

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[_Server]:
    made = _Server()
    yield made
    made.stop()


def test_requests_arrive_whole_over_one_kept_connection(server: _Server) -> None:
    with httpx.Client(transport=KeepAliveTransport(2), timeout=10) as client:
        for n in range(5):
            answer = client.post(
                f"{server.url}/ingest/metrics?x=1",
                content=b'{"step": %d}\n' % n,
                headers={"Idempotency-Key": f"k{n}"},
            )
            assert answer.status_code == 201 and answer.json() == {"ok": True}
    assert [(m, p, b) for m, p, _h, b in server.seen] == [
        ("POST", "/ingest/metrics?x=1", b'{"step": %d}\n' % n) for n in range(5)
    ]
    assert [h["Idempotency-Key"] for _m, _p, h, _b in server.seen] == [f"k{n}" for n in range(5)]
    assert len(server.ports) == 1  # one connection carried all five


def test_a_connection_the_server_closed_while_idle_is_replaced(server: _Server) -> None:
    server.close_after = True
    with httpx.Client(transport=KeepAliveTransport(2), timeout=10) as client:
        for _ in range(3):
            assert client.post(server.url + "/x", content=b"{}").status_code == 201
            time.sleep(0.05)  # the server's close reaches this side
    assert len(server.seen) == 3 and len(server.ports) == 3


def test_faults_are_httpx_transport_errors(server: _Server) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    with httpx.Client(transport=KeepAliveTransport(2), timeout=10) as client:
        with pytest.raises(httpx.ConnectError):
            client.post(f"http://127.0.0.1:{free}/x", content=b"{}")
        server.delay = 1.0
        with pytest.raises(httpx.ReadTimeout):
            client.post(server.url + "/x", content=b"{}", timeout=0.2)


def test_only_plain_http_without_a_proxy_uses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert usable("http://127.0.0.1:8080", None)
    assert not usable("https://mlop.example.com", None)
    assert not usable("http://127.0.0.1:8080", "http://proxy:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy:3128")
    assert not usable("http://10.0.0.5:8080", None)
    monkeypatch.setenv("NO_PROXY", "10.0.0.5")
    assert usable("http://10.0.0.5:8080", None)
