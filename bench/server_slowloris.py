"""Slow connections against the mlop server's app under several ASGI servers: who keeps answering?

    python bench/server_slowloris.py [--slow 1000] [--every 5] [--seconds 30] [CANDIDATE ...]

Candidates: ``uvicorn`` (the settings before the guard: httptools, keep-alive 30 s, limit_concurrency 512),
``uvicorn-h11`` (the same with h11), ``hypercorn`` (keep-alive 5 s, read_timeout 10 s), ``granian``
(``--http1-header-read-timeout 10000``) and ``mlop`` (``mlop server`` as shipped: uvicorn with the
connection guard). hypercorn and granian are not dependencies: install them where the bench can import
them (``pip install --target DIR hypercorn granian`` and ``PYTHONPATH=DIR``).

``--slow`` connections from 127.0.0.2 each send a partial request line, then one byte every ``--every``
seconds; meanwhile a normal client on 127.0.0.1 sends ``GET /health`` every 0.2 s (2 s timeout). Printed
per candidate: the normal requests answered 200, their median and 99th-percentile latency, and how many
slow connections the server still held after 15 s and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

APP_MODULE = """
import os
from pathlib import Path
from mlop_server._app import create_app
from mlop_server._config import ServerConfig
app = create_app(ServerConfig(data_dir=Path(os.environ["BENCH_DATA"])))
"""

SERVE = {
    "uvicorn": "import uvicorn, benchapp; uvicorn.run(benchapp.app, host='127.0.0.1', port={port}, "
    "log_level='error', timeout_keep_alive=30, limit_concurrency=512, http='httptools')",
    "uvicorn-h11": "import uvicorn, benchapp; uvicorn.run(benchapp.app, host='127.0.0.1', port={port}, "
    "log_level='error', timeout_keep_alive=30, limit_concurrency=512, http='h11')",
    "hypercorn": "import asyncio, benchapp; from hypercorn.config import Config; "
    "from hypercorn.asyncio import serve; c = Config(); c.bind = ['127.0.0.1:{port}']; c.backlog = 2048; "
    "c.keep_alive_timeout = 5; c.read_timeout = 10; c.loglevel = 'ERROR'; "
    "asyncio.run(serve(benchapp.app, c))",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(candidate: str, work: Path, nofile: int = 0) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    data = work / candidate
    env = {
        **os.environ,
        "BENCH_DATA": str(data),
        "PYTHONPATH": f"{work}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    env["MLOP_SERVER_ADMIN_KEY"] = "mlps_bench_admin_key_0123456789"
    if candidate == "mlop":
        cmd = [
            sys.executable,
            "-m",
            "mlop_server",
            "--port",
            str(port),
            "--data",
            str(data),
            "--log-level",
            "error",
        ]
    elif candidate == "granian":
        cmd = [sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1"]
        cmd += ["--port", str(port), "--backlog", "2048", "--http1-header-read-timeout", "10000"]
        cmd += ["--log-level", "error", "benchapp:app"]
    else:
        cmd = [sys.executable, "-c", SERVE[candidate].format(port=port)]

    if nofile:  # the server's open-file limit, soft and hard
        cmd = ["prlimit", f"--nofile={nofile}:{nofile}", *cmd]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                conn.close()
                return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{candidate} did not start")


def normal_client(port: int, seconds: float, out: list[float | None]) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.monotonic()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            ok = conn.getresponse().status == 200
            conn.close()
            out.append(time.monotonic() - t if ok else None)
        except OSError:
            out.append(None)
        time.sleep(max(0.0, 0.2 - (time.monotonic() - t)))


async def attack(port: int, slow: int, every: float, seconds: float) -> tuple[int, int]:
    writers = []
    for _ in range(slow):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
        except OSError:
            continue
        writer.write(b"GET /health HTTP/1.1\r\n")
        writers.append(writer)
    start = time.monotonic()
    held_at_15 = -1
    while time.monotonic() - start < seconds:
        await asyncio.sleep(every)
        for writer in writers:
            if not writer.is_closing():
                writer.write(b"X")
                try:
                    await asyncio.wait_for(writer.drain(), 0.01)
                except (OSError, TimeoutError):
                    writer.close()
        if held_at_15 < 0 and time.monotonic() - start >= 15:
            held_at_15 = sum(1 for w in writers if not w.is_closing() and not w.transport.is_closing())
    # a connection the server closed shows as EOF on its reader; probe by writing once more
    await asyncio.sleep(0.5)
    held = 0
    for writer in writers:
        if writer.is_closing():
            continue
        writer.write(b"X")
        try:
            await asyncio.wait_for(writer.drain(), 0.05)
            held += 0 if writer.transport.is_closing() else 1
        except (OSError, TimeoutError):
            pass
        writer.close()
    return held_at_15, held


def run(candidate: str, work: Path, slow: int, every: float, seconds: float, nofile: int) -> str:
    proc, port = start(candidate, work, nofile)
    try:
        latencies: list[float | None] = []
        client = threading.Thread(target=normal_client, args=(port, seconds, latencies))
        client.start()
        held_15, held_end = asyncio.run(attack(port, slow, every, seconds))
        client.join()
    finally:
        proc.terminate()
        proc.wait(30)
    ok = [t for t in latencies if t is not None]
    p50 = statistics.median(ok) * 1000 if ok else float("nan")
    p99 = sorted(ok)[int(len(ok) * 0.99) - 1] * 1000 if ok else float("nan")
    return (
        f"| {candidate} | {len(ok)}/{len(latencies)} | {p50:.1f} ms | {p99:.1f} ms | {held_15} | {held_end} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "candidates", nargs="*", default=["uvicorn", "uvicorn-h11", "hypercorn", "granian", "mlop"]
    )
    parser.add_argument("--slow", type=int, default=1000)
    parser.add_argument("--every", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument(
        "--nofile", type=int, default=0, help="the server's open-file limit (prlimit; default: inherited)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "benchapp.py").write_text(APP_MODULE)
        limit = f", server open-file limit {args.nofile}" if args.nofile else ""
        print(f"{args.slow} slow connections (a byte every {args.every:g} s), {args.seconds:g} s{limit}")
        print("| server | normal requests answered | p50 | p99 | slow held at 15 s | slow held at end |")
        print("|---|---|---|---|---|---|")
        for candidate in args.candidates:
            try:
                print(run(candidate, work, args.slow, args.every, args.seconds, args.nofile), flush=True)
            except Exception as exc:  # broad: a candidate that cannot run is reported, the others go on
                print(f"| {candidate} | failed: {exc!r} | | | | |", flush=True)


if __name__ == "__main__":
    main()
