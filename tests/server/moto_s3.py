"""moto's S3 server as a process on 127.0.0.1, checking the signatures of presigned URLs, for the S3 tests.

No real S3 is reachable from the test machines, so the S3 file store is tested against moto, an S3 server
in Python run here as its own process. moto checks the signatures of requests signed in the
``Authorization`` header only when its IAM checks are on, and never those of presigned URLs (SigV4 in the
query string). A store that took any presigned URL would make "a tampered URL is refused" untestable, so
this process puts a SigV4 query-string check in front of moto's WSGI app: the signature is recomputed with
the test's credentials (method, path, sorted query, the signed headers, ``UNSIGNED-PAYLOAD``) and a request
whose signature differs, or whose URL expired, gets ``403`` as S3 answers it. Everything else is moto's.

``python tests/server/moto_s3.py`` prints its port on the first line; it ends with its parent process.
:class:`MotoS3` starts it for a test.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import httpx

#: The credentials the store accepts (the same ones the mlop server under test is given).
ACCESS_KEY = "AKIAMLOPTESTKEY00001"
SECRET_KEY = "mlop-test-secret-key-never-real-0123456789"
REGION = "us-east-1"


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _quote(value: str) -> str:
    return quote(value, safe="-_.~")


def presigned_error(environ: dict[str, Any], now: float | None = None) -> str | None:
    """Why the presigned request of ``environ`` is refused, or None when it is not presigned or is valid."""
    pairs = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    query = dict(pairs)
    if "X-Amz-Signature" not in query or environ["REQUEST_METHOD"] == "OPTIONS":
        return None  # a CORS preflight is answered from the bucket's CORS rules, unsigned, as S3 does
    try:
        access, date, region, service, _ = query["X-Amz-Credential"].split("/")
        stamp = query["X-Amz-Date"]
        expires = int(query["X-Amz-Expires"])
        signed = query["X-Amz-SignedHeaders"].split(";")
    except (KeyError, ValueError):
        return "AuthorizationQueryParametersError"
    if access != ACCESS_KEY:
        return "InvalidAccessKeyId"
    start = datetime.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
    if (now if now is not None else time.time()) > start.timestamp() + expires:
        return "AccessDenied: Request has expired"
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or quote(environ.get("PATH_INFO", "/"))
    path = raw.split("?", 1)[0]
    canonical_query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(pairs) if k != "X-Amz-Signature")
    headers = []
    for name in signed:
        key = {"content-length": "CONTENT_LENGTH", "content-type": "CONTENT_TYPE"}.get(
            name, "HTTP_" + name.upper().replace("-", "_")
        )
        headers.append(f"{name}:{' '.join(str(environ.get(key, '')).split())}\n")
    request = "\n".join(
        [
            environ["REQUEST_METHOD"],
            path,
            canonical_query,
            "".join(headers),
            ";".join(signed),
            "UNSIGNED-PAYLOAD",
        ]
    )
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(request.encode()).hexdigest()])
    key = _hmac(("AWS4" + SECRET_KEY).encode(), date)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, query["X-Amz-Signature"]):
        return "SignatureDoesNotMatch"
    return None


def checking(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """``app`` behind the presigned-URL check."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        error = presigned_error(environ)
        if error is None:
            return app(environ, start_response)
        code, _, message = error.partition(": ")
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code.split(":")[0]}</Code>'
            f"<Message>{message or code}</Message></Error>"
        ).encode()
        start_response(
            "403 Forbidden", [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))]
        )
        return [body]

    return wrapped


class MotoS3:
    """The store as a process: ``with MotoS3() as s3: s3.endpoint`` (``http://127.0.0.1:PORT``)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None
        self.endpoint = ""

    @property
    def env(self) -> dict[str, str]:
        """The variables an S3 client (the mlop server, boto3) needs to reach this store."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
            "MLOP_SERVER_S3_ENDPOINT": self.endpoint,
        }

    def client(self) -> Any:
        """A boto3 client of this store."""
        import boto3  # type: ignore[import-untyped]
        import botocore.config  # type: ignore[import-untyped]

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=botocore.config.Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def __enter__(self) -> MotoS3:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLOP_"))}
        self._proc = subprocess.Popen(
            [sys.executable, str(Path(__file__))],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line.isdigit():
            self.__exit__(None, None, None)
            raise RuntimeError(f"the moto S3 server did not start: {line!r}")
        self.endpoint = f"http://127.0.0.1:{line}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(self.endpoint + "/", timeout=2)
                return self
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    self.__exit__(None, None, None)
                    raise RuntimeError("the moto S3 server does not answer") from None
                time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None


def _main() -> None:
    from moto.moto_server.werkzeug_app import create_backend_app
    from werkzeug.serving import make_server

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    os.environ["MOTO_PORT"] = str(port)
    app = create_backend_app("s3")
    server = make_server("127.0.0.1", port, checking(app), threaded=True, fd=sock.fileno())
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        server.shutdown()

    threading.Thread(target=watch, daemon=True).start()
    print(port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    _main()
