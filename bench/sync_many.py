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
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
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
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as api:
            while time.perf_counter() - start < 600:
                runs = api.get("/api/runs", params={"project": PROJECT}).json()
                done = sum(1 for run in runs if run["status"] == "COMPLETED")
                if done >= count:
                    break
                time.sleep(0.2)
        wall = time.perf_counter() - start
        arrived = check(url, key, count)
    finally:
        proc.terminate()
        proc.wait(30)
    return {
        "code": src or "this checkout",
        "wall_s": round(wall, 2),
        "runs_per_s": round(count / wall, 1),
        "arrived": arrived,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--old", default=None, help="a tree of the old code, run first")
    parser.add_argument("--new", default=None, help="a tree of the new code (default: here)")
    parser.add_argument("--ui", action="store_true", help="also time `mlop ui` bringing the runs up")
    parser.add_argument("--profile", default=None, help="cProfile the new code's `mlop sync` into FILE")
    parser.add_argument("--jobs", type=int, nargs="*", default=[], help="the new code's --jobs (each)")
    parser.add_argument("--keep", default=None, help="make the runs here (or reuse those made before)")
    args = parser.parse_args()
    report: dict[str, Any] = {"load_average_before": os.getloadavg(), "cpus": os.cpu_count()}
    root = Path(args.keep or tempfile.mkdtemp(prefix="sync-many-runs-"))
    try:
        if not (root / ".mlop" / PROJECT).is_dir():
            report["make_runs_s"] = round(make_runs(root, args.runs), 1)
        results = []
        if args.old:
            results.append(bench_sync(root, args.runs, args.old, None))
        for jobs in args.jobs or [None]:
            results.append(bench_sync(root, args.runs, args.new, args.profile, jobs))
        report["sync"] = results
        if args.old:
            report["after_over_before_wall"] = round(results[1]["wall_s"] / results[0]["wall_s"], 3)
        if args.ui:
            uis = []
            if args.old:
                uis.append(bench_ui(root, args.runs, args.old))
            uis.append(bench_ui(root, args.runs, args.new))
            report["ui"] = uis
        report["load_average_after"] = os.getloadavg()
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
