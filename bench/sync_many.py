"""Many small finished runs to a local mlop-server: ``mlop sync`` and ``mlop ui`` (issue 22).

Run: .venv/bin/python bench/sync_many.py [--runs 1000] [--old SRC] [--ui] [--profile FILE]
Prints one JSON document; bench/README.md ("Sync of many runs (issue 22)") holds the latest figures.

- The runs are made by the real client, offline, in one process: each has a config, tags, 3 metrics x 50
  steps and 2 console lines (a typical small sweep trial).
- ``sync``: ``mlop sync --dir`` in its own process against a fresh ``mlop server`` process: wall time,
  runs per second, the CPU time of the sync process and of the server, and whether every run arrived
  whole (counted through the read API: runs, status, points of each metric).
- ``--old TREE``: the same, first, with the code of ``TREE`` (a ``git worktree`` or ``git archive`` of the
  old commit: its ``packages/mlop-core/src`` and ``packages/mlop-server/src`` put first on ``PYTHONPATH``),
  on another fresh server, in the same session: the ratio of the two is the figure to trust on a loaded
  machine. ``--new TREE`` likewise for the new code (default: the installed checkout).
- ``--ui``: ``mlop ui --no-browser`` on the same folder: seconds until every run is on its server, finished.
- ``--h2 DIR``: HTTP/2 against HTTP/1.1 over TLS. ``mlop server`` is uvicorn, which speaks HTTP/1.1 only, so
  a TLS reverse proxy served by hypercorn (installed in ``DIR``: ``pip install --target DIR hypercorn``;
  not a dependency of the project) stands in front of it, offering first ``h2`` then only ``http/1.1``
  by ALPN; the new code's ``mlop sync --host https://...`` goes through it each time. The proxy costs the
  same CPU both ways, so the two are comparable with each other (not with plain http).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from mlop_server.testing import ServerProcess

PROJECT = "many"
STEPS = 50
KEYS = ("train/loss", "train/acc", "val/loss")

_MAKE = """
import sys, mlop
root, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(first, first + count):
    run = mlop.init(project=%(project)r, name=f"trial-{i}", dir=root, mode="offline",
                    config={"lr": 0.0001 * (i + 1), "batch": 32, "opt": {"name": "adam", "beta": 0.9}},
                    tags=["sweep"], disable_system_metrics=True)
    for s in range(%(steps)d):
        run.log({"train/loss": 1.0 / (s + 1) + i, "train/acc": s / %(steps)d, "val/loss": 2.0 / (s + 1)})
    print(f"trial {i}: started")
    print(f"trial {i}: done")
    run.finish()
"""


def make_runs(root: Path, count: int) -> float:
    """Make ``count`` finished offline runs under ``root`` with the real client; returns the seconds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", _MAKE % {"project": PROJECT, "steps": STEPS}, str(root), "0", str(count)],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def _code(env: dict[str, str], src: str | None) -> dict[str, str]:
    """``env`` running the mlop-core and mlop-server code of the tree ``src`` (None: the installed one)."""
    if src:
        paths = [str(Path(src) / "packages" / name / "src") for name in ("mlop-core", "mlop-server")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in (*paths, env.get("PYTHONPATH")) if p)
    return env


def _env(server: ServerProcess, config: Path, src: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}
    env.update(MLOP_API_TOKEN=server.key, MLOP_HOST=server.url, MLOP_CONFIG_DIR=str(config))
    return _code(env, src)


def check(url: str, key: str, count: int) -> dict[str, Any]:
    """What arrived: runs, finished runs, and runs with every point of every metric."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as api:
        runs = api.get("/api/runs", params={"project": PROJECT}).json()
        completed = sum(1 for run in runs if run["status"] == "COMPLETED")
        whole = 0
        for run in runs[:: max(1, len(runs) // 50)]:  # a sample of 50: reading all takes longer than sending
            points = [
                int(api.get(f"/api/runs/{run['id']}/metrics", params={"key": k}).headers["X-Total-Points"])
                for k in KEYS
            ]
            whole += points == [STEPS] * len(KEYS)
        sample = len(runs[:: max(1, len(runs) // 50)])
    return {"runs": len(runs), "completed": completed, "whole_of_sample": f"{whole}/{sample}", "of": count}


def bench_sync(
    root: Path, count: int, src: str | None, profile: str | None, jobs: int | None = None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sync-many-") as tmp:
        copy = Path(tmp) / "runs"
        shutil.copytree(root, copy, symlinks=True)  # each sync gets pristine stores (it records its acks)
        with ServerProcess(Path(tmp) / "server") as server:
            cmd = [sys.executable, "-m", "mlop.cli", "sync", "--dir", str(copy)]
            if jobs is not None:
                cmd += ["--jobs", str(jobs)]
            if profile:
                cmd[1:2] = ["-m", "cProfile", "-o", profile, "-m"]
            proc_server = psutil.Process(server.pid)
            server_cpu = sum(proc_server.cpu_times()[:2])
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            out = subprocess.run(
                cmd, env=_env(server, Path(tmp) / "cfg", src), capture_output=True, text=True, check=False
            )
            wall = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            server_cpu = sum(proc_server.cpu_times()[:2]) - server_cpu
            again = subprocess.run(
                [sys.executable, "-m", "mlop.cli", "sync", "--dir", str(copy)],
                env=_env(server, Path(tmp) / "cfg", src),
                check=False,
                capture_output=True,
                text=True,
            )
            arrived = check(server.url, server.key, count)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return {
            "code": src or "this checkout",
            "jobs": jobs,
            "exit_code": out.returncode,
            "stderr_tail": out.stderr.strip().splitlines()[-2:],
            "wall_s": round(wall, 2),
            "runs_per_s": round(count / wall, 1),
            "sync_cpu_s": round(cpu, 2),
            "server_cpu_s": round(server_cpu, 2),
            "arrived": arrived,
            "rerun": again.stderr.strip().splitlines()[-1:],
        }


def bench_ui(root: Path, count: int, src: str | None) -> dict[str, Any]:
    env = _code({k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}, src)
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlop.cli", "ui", "--dir", str(root), "--no-browser", "--interval", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        page = ""
        while not page:
            line = proc.stdout.readline()
            if not line:
                raise SystemExit("mlop ui ended early")
            if "#key=" in line:
                page = line.strip()
        match = re.match(r"(http://[^/]+)/ui/#key=(\S+)", page)
        assert match is not None
        url, key = match.groups()
        done = 0
        ui_proc = psutil.Process(proc.pid)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as api:
            # How many are COMPLETED, counted by the server (the runs table's filter, one row asked for):
            # listing all 1,000 runs five times a second would cost the server and this process CPU
            # on the same two cores.
            finished = {"project": PROJECT, "filter": 'status == "COMPLETED"', "limit": 1}
            while time.perf_counter() - start < 600:
                done = int(api.get("/api/runs", params=finished).json()["total"])
                if done >= count:
                    break
                time.sleep(0.2)
        wall = time.perf_counter() - start
        # CPU from the start, all threads: mlop ui's own (with its helper process, which sends half of
        # a large pass), and its server's
        ui_cpu = sum(ui_proc.cpu_times()[:2])
        server_cpu = helper_cpu = 0.0
        for child in ui_proc.children():
            cpu = sum(child.cpu_times()[:2])
            if "_mirror_helper" in " ".join(child.cmdline()):
                helper_cpu += cpu
            else:
                server_cpu += cpu
        if done < count:
            wall = float("nan")  # not all there within the limit
        arrived = check(url, key, count)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:  # the old `mlop ui` finishes its whole sync before it stops
            proc.kill()
            proc.wait()
    return {
        "code": src or "this checkout",
        "wall_s": round(wall, 2),
        "runs_per_s": round(count / wall, 1),
        "ui_cpu_s": round(ui_cpu + helper_cpu, 2),
        "of_which_helper_cpu_s": round(helper_cpu, 2),
        "server_cpu_s": round(server_cpu, 2),
        "arrived": arrived,
    }


_PROXY = """
import asyncio, sys
import httpx
from hypercorn.asyncio import serve
from hypercorn.config import Config

target, port, cert, key, alpn, seen = sys.argv[1:7]
client = httpx.AsyncClient(base_url=target, timeout=60, limits=httpx.Limits(max_connections=32))
versions = set()
SKIP = (b"host", b"content-length", b"connection", b"transfer-encoding", b"content-encoding", b"keep-alive")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["http_version"] not in versions:
        versions.add(scope["http_version"])
        with open(seen, "a") as out:
            out.write(scope["http_version"] + "\\n")
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    path = scope["raw_path"] + (b"?" + scope["query_string"] if scope["query_string"] else b"")
    headers = [(k, v) for k, v in scope["headers"] if k.lower() not in SKIP]
    answer = await client.request(scope["method"], path.decode(), content=body, headers=headers)
    out = [(k, v) for k, v in answer.headers.raw if k.lower() not in SKIP]
    out.append((b"content-length", str(len(answer.content)).encode()))
    await send({"type": "http.response.start", "status": answer.status_code, "headers": out})
    await send({"type": "http.response.body", "body": answer.content})


config = Config()
config.bind = [f"127.0.0.1:{port}"]
config.certfile, config.keyfile = cert, key
config.alpn_protocols = alpn.split(",")
config.loglevel = "WARNING"
asyncio.run(serve(app, config))
"""


def _problems(stderr: str) -> list[str]:
    """What ``mlop sync`` said besides runs sent and retries that worked."""
    quiet = (": sent", "answers again", "not answering")
    return [line for line in stderr.splitlines() if not any(q in line for q in quiet)][-12:]


def bench_h2(root: Path, count: int, src: str | None, hypercorn: str) -> list[dict[str, Any]]:
    """``mlop sync`` over TLS through a hypercorn proxy: HTTP/2 offered, then HTTP/1.1 only."""
    out = []
    with tempfile.TemporaryDirectory(prefix="sync-many-h2-") as tmp:
        cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        openssl = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        openssl += ["-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"]
        subprocess.run(
            [*openssl, "-addext", "subjectAltName=IP:127.0.0.1"],
            check=True,
            capture_output=True,
        )
        for alpn in ("h2,http/1.1", "http/1.1")[: 1 if os.environ.get("SYNC_MANY_H2_ONLY") else 2]:
            tag = "h2" if "h2" in alpn else "h1"
            copy = Path(tmp) / f"runs-{tag}"
            shutil.copytree(root, copy, symlinks=True)
            with ServerProcess(Path(tmp) / f"server-{tag}") as server:
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", 0))
                    port = probe.getsockname()[1]
                seen = Path(tmp) / f"seen-{tag}"
                env = {**os.environ, "PYTHONPATH": hypercorn}
                args = [server.url, str(port), str(cert), str(key), alpn, str(seen)]
                proxy = subprocess.Popen([sys.executable, "-c", _PROXY, *args], env=env)
                try:
                    url = f"https://127.0.0.1:{port}"
                    deadline = time.monotonic() + 30
                    while time.monotonic() < deadline:
                        try:
                            httpx.get(url + "/health", verify=str(cert), timeout=2)
                            break
                        except httpx.TransportError:
                            time.sleep(0.2)
                    env = _env(server, Path(tmp) / "cfg", src)
                    env.update(MLOP_HOST=url, SSL_CERT_FILE=str(cert))
                    cmd = [sys.executable, "-m", "mlop.cli", "sync", "--dir", str(copy), "--host", url]
                    before = resource.getrusage(resource.RUSAGE_CHILDREN)
                    start = time.perf_counter()
                    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
                    wall = time.perf_counter() - start
                    after = resource.getrusage(resource.RUSAGE_CHILDREN)
                    arrived = check(server.url, server.key, count)
                finally:
                    proxy.terminate()
                    proxy.wait(30)
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            out.append(
                {
                    "alpn_offered": alpn,
                    "protocols_seen": seen.read_text().split() if seen.exists() else [],
                    "exit_code": done.returncode,
                    "stderr_problems": _problems(done.stderr),
                    "wall_s": round(wall, 2),
                    "runs_per_s": round(count / wall, 1),
                    "sync_cpu_s": round(cpu, 2),
                    "arrived": arrived,
                }
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--old", default=None, help="a tree of the old code, run first")
    parser.add_argument("--new", default=None, help="a tree of the new code (default: here)")
    parser.add_argument("--ui", action="store_true", help="also time `mlop ui` bringing the runs up")
    parser.add_argument("--ui-only", action="store_true", help="time `mlop ui` only (old, new, new, old)")
    parser.add_argument("--profile", default=None, help="cProfile the new code's `mlop sync` into FILE")
    parser.add_argument("--jobs", type=int, nargs="*", default=[], help="the new code's --jobs (each)")
    parser.add_argument("--h2", default=None, metavar="DIR", help="hypercorn installed here: HTTP/2 vs 1.1")
    parser.add_argument("--keep", default=None, help="make the runs here (or reuse those made before)")
    args = parser.parse_args()
    report: dict[str, Any] = {"load_average_before": os.getloadavg(), "cpus": os.cpu_count()}
    root = Path(args.keep or tempfile.mkdtemp(prefix="sync-many-runs-"))
    try:
        if not (root / ".mlop" / PROJECT).is_dir():
            report["make_runs_s"] = round(make_runs(root, args.runs), 1)
        results: list[dict[str, Any]] = []
        report["sync"] = results

        def note(what: dict[str, Any]) -> dict[str, Any]:
            print(json.dumps(what), file=sys.stderr, flush=True)  # each figure as it comes
            return what

        if args.ui_only:
            trees = [args.old, args.new, args.new, args.old] if args.old else [args.new]
            report["ui"] = [note(bench_ui(root, args.runs, tree)) for tree in trees]
            report["load_average_after"] = os.getloadavg()
            print(json.dumps(report, indent=2))
            return
        if args.old:
            results.append(note(bench_sync(root, args.runs, args.old, None)))
        for jobs in args.jobs or [None]:
            results.append(note(bench_sync(root, args.runs, args.new, args.profile, jobs)))
        if args.old:
            report["after_over_before_wall"] = round(results[-1]["wall_s"] / results[0]["wall_s"], 3)
        if args.h2:
            report["h2"] = [note(one) for one in bench_h2(root, args.runs, args.new, args.h2)]
        if args.ui:
            report["ui"] = [note(bench_ui(root, args.runs, args.new))]
            if args.old:
                report["ui"].append(note(bench_ui(root, args.runs, args.old)))
        report["load_average_after"] = os.getloadavg()
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
