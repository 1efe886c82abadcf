"""The one encoding of header values that HTTP cannot carry as they are (docs/online.md, "Names: Unicode
everywhere, one encoding in headers"): plain ASCII unchanged, anything else as RFC 8187 ``UTF-8''``."""

from __future__ import annotations

import time

import httpx
import pytest

from mlop import AuthError
from mlop._headers import decode_header_value, encode_header_value
from mlop._online._server import ServerInterface


@pytest.mark.parametrize("name", ["run-1", "my run (v2)", "a=b;c", "%41", "utf-8", "x'y"])
def test_plain_ascii_is_sent_byte_for_byte(name: str) -> None:
    assert encode_header_value(name) == name
    assert decode_header_value(name) == name


@pytest.mark.parametrize(
    "name",
    ["训练-δ-🚀", "проект-1", "line\nbreak", "tab\there", " padded ", "UTF-8''plain", "utf-8''x", "\x00"],
)
def test_anything_else_round_trips_through_printable_ascii(name: str) -> None:
    encoded = encode_header_value(name)
    assert encoded.startswith("UTF-8''")
    assert encoded.isascii() and encoded.isprintable() and encoded == encoded.strip()
    assert decode_header_value(encoded) == name


def test_the_encoding_is_rfc_8187() -> None:
    assert encode_header_value("δ 1") == "UTF-8''%CE%B4%201"
    assert decode_header_value("utf-8''%CE%B4") == "δ"  # the charset is case-insensitive
    assert decode_header_value("UTF-8''%FF") == "UTF-8''%FF"  # not UTF-8: kept as received


def test_the_client_sends_unicode_names_in_headers_and_in_full_in_the_body() -> None:
    """httpx.MockTransport: the request as it leaves the client (the server side is in tests/e2e)."""
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"runId": 1})

    urls = dict.fromkeys(("url_app", "url_api", "url_ingest", "url_py"), "http://test")
    with ServerInterface(urls, "mlps_k", transport=httpx.MockTransport(answer)) as server:
        server.run_name, server.project = "训练\n-δ-🚀", "проект-1"
        server.send("api", "/api/runs/create", body={"runName": server.run_name})
        server.run_name, server.project = "plain", "proj"
        server.send("api", "/api/runs/create", body={"runName": "plain"})
    first, second = seen
    assert decode_header_value(first.headers["X-Run-Name"]) == "训练\n-δ-🚀"
    assert decode_header_value(first.headers["X-Project-Name"]) == "проект-1"
    assert first.content.decode() == '{"runName":"\\u8bad\\u7ec3\\n-\\u03b4-\\ud83d\\ude80"}'
    assert (second.headers["X-Run-Name"], second.headers["X-Project-Name"]) == ("plain", "proj")


def test_retry_after_of_a_503_is_honoured_and_a_refused_key_is_not_retried() -> None:
    """httpx.MockTransport: a server that answers 503 with Retry-After on demand."""
    arrived: list[tuple[str, float]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        arrived.append((request.url.path, time.monotonic()))
        if request.url.path == "/busy" and len(arrived) == 1:
            return httpx.Response(503, headers={"Retry-After": "1"}, json={"error": "Busy"})
        if request.url.path == "/denied":
            return httpx.Response(403, json={"error": "Forbidden", "message": "not your run"})
        return httpx.Response(200, json={"ok": True})

    urls = dict.fromkeys(("url_app", "url_api", "url_ingest", "url_py"), "http://test")
    with ServerInterface(urls, "mlps_k", transport=httpx.MockTransport(answer), retry_base=0.01) as server:
        assert server.call("api", "/busy", {}) == {"ok": True}
        (_, first), (_, second) = arrived
        assert second - first >= 1.0  # the backoff alone would have waited at most 0.01 s
        arrived.clear()
        with pytest.raises(AuthError) as refused:
            server.call("api", "/denied", {}, deadline=time.monotonic() + 30)
        assert refused.value.status_code == 403 and [p for p, _t in arrived] == ["/denied"]


def test_a_key_http_cannot_carry_is_refused_at_once_not_retried() -> None:
    """httpx.MockTransport counts requests: none may be sent with such a key (httpx would raise)."""
    sent: list[httpx.Request] = []
    urls = dict.fromkeys(("url_app", "url_api", "url_ingest", "url_py"), "http://test")
    for key in ("mlps_ключ", "mlps_key\n", "mlps\tkey"):
        transport = httpx.MockTransport(lambda r: sent.append(r) or httpx.Response(200, json={}))
        with ServerInterface(urls, key, transport=transport) as server:
            with pytest.raises(AuthError) as refused:
                server.call("api", "/api/runs/create", {}, deadline=time.monotonic() + 30)
            assert key.strip() not in str(refused.value)
    assert sent == []
