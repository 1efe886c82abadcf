"""``mlop server migrate-data``: an embedded (SQLite) server copied into PostgreSQL answers the same.

Real parts only: a SQLite server process filled through the protocol (runs of two owners, metrics with
non-finite values, console lines, a histogram, uploaded files, an alert), the command as a subprocess killed
with SIGKILL half-way through and run again, and a PostgreSQL server process on the result (the session's
throwaway cluster, tests/pgcluster.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson

from mlop_server.testing import ServerProcess

T0 = 1_795_870_984_866
STEPS = 400
LOG_LINES = 600
LONG = 3000


def _ndjson(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def _fill(server: ServerProcess, alice: str) -> dict[str, int]:
    """Two runs of the admin and one of alice, with metrics, logs, data, files and an alert."""
    runs: dict[str, int] = {}
    for who, key, project, name in (
        ("admin", server.key, "vision", "a"),
        ("admin", server.key, "vision", "b"),
        ("alice", alice, "nlp", "c"),
    ):
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
            body = {
                "runName": name,
                "projectName": project,
                "config": '{"lr": 0.1, "depth": 4}',
                "tags": ["t1"],
            }
            run_id = c.post("/api/runs/create", json=body).json()["runId"]
            runs[f"{who}-{name}"] = run_id
            head = {"X-Run-Id": str(run_id), "Content-Type": "application/x-ndjson"}
            for first in range(0, STEPS, 100):  # several requests: several chunks per series
                lines = [
                    {"time": T0 + s, "step": s, "data": {"loss": 1 / (s + 1), "odd": "NaN" if s % 7 else s}}
                    for s in range(first, first + 100)
                ]
                assert c.post("/ingest/metrics", content=_ndjson(lines), headers=head).status_code == 200
            if name == "a":  # a long series: its downsampled answer comes from the block summaries
                lines = [
                    {"time": T0 + s, "step": s, "data": {"long": (s * 7919) % 1009}} for s in range(LONG)
                ]
                assert c.post("/ingest/metrics", content=_ndjson(lines), headers=head).status_code == 200
            logs = [
                {"time": T0 + i, "message": f"line {i} é ✓ \u0000 \uffff", "lineNumber": i, "logType": "INFO"}
                for i in range(LOG_LINES)
            ]
            assert c.post("/ingest/logs", content=_ndjson(logs), headers=head).status_code == 200
            hist = {
                "freq": [1, 2],
                "maxFreq": 2,
                "bins": {"min": 0, "max": 1, "num": 2},
                "shape": "uniform",
                "type": "Histogram",
                "v": 1,
            }
            data = {"time": T0, "step": 3, "logName": "h", "dataType": "HISTOGRAM", "data": json.dumps(hist)}
            assert c.post("/ingest/data", content=_ndjson([data]), headers=head).status_code == 200
            payload = f"bytes of {name}".encode() * 50
            entry = {"fileName": f"{name}.bin", "fileSize": len(payload), "fileType": "bin", "time": T0}
            asked = c.post("/files", json={"files": [{**entry, "logName": "f", "step": 1}]}, headers=head)
            assert httpx.put(asked.json()["f"][0][f"{name}.bin"], content=payload).status_code in (200, 201)
            alert = {"timestamp": T0, "level": "WARN", "title": "t", "body": "b", "email": False, "url": None}
            assert c.post("/api/runs/alert", json={"runId": run_id, "alert": alert}).status_code == 200
            setting = {"project": project, "name": "layout"}
            assert c.put("/api/projects/settings", params=setting, json={"by": who}).status_code == 200
            done = {"runId": run_id, "status": "COMPLETED", "statusMetadata": None}
            assert c.post("/api/runs/status/update", json=done).status_code == 200
    return runs


def _answers(server: ServerProcess, key: str) -> dict[str, Any]:
    """Everything the read API answers to ``key``, with the server's own URL taken out."""
    out: dict[str, Any] = {}
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        out["projects"] = c.get("/api/projects").json()
        for project in [p["name"] for p in out["projects"]]:
            out[f"runs {project}"] = c.get("/api/runs", params={"project": project}).json()
            out[f"layout {project}"] = c.get(
                "/api/projects/settings", params={"project": project, "name": "layout"}
            ).json()
            for run in out[f"runs {project}"]:
                rid = run["id"]
                out[f"run {rid}"] = c.get(f"/api/runs/{rid}").json()
                out[f"keys {rid}"] = c.get(f"/api/runs/{rid}/keys").json()
                for name in ("loss", "odd"):
                    out[f"{name} {rid}"] = c.get(f"/api/runs/{rid}/metrics", params={"key": name}).json()
                out[f"logs {rid}"] = c.get(f"/api/runs/{rid}/logs").json()
                long = c.get(f"/api/runs/{rid}/metrics", params={"key": "long", "max_points": 4})
                out[f"long {rid}"] = (long.status_code, long.headers.get("X-Total-Points"), long.json())
                out[f"data {rid}"] = c.get(f"/api/runs/{rid}/data", params={"key": "h"}).json()
                files = c.get(f"/api/runs/{rid}/files", params={"key": "f"}).json()
                out[f"files {rid}"] = files
                out[f"bytes {rid}"] = [c.get(f["url"]).content.decode() for f in files]
    cleaned: dict[str, Any] = json.loads(json.dumps(out).replace(server.url, "URL"))
    return cleaned


def _count(cluster: Any, url: str, table: str) -> int:
    rows = cluster.execute(f"SELECT COUNT(*) FROM {table}", url.rsplit("/", 1)[1])
    return int(str(rows[0][0]))


def _migrate(source: Path, url: str, files: Path, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")} | {"MLOP_SERVER_DB": url}
    cmd = [sys.executable, "-m", "mlop_server", "migrate-data", "--from", str(source), "--files", str(files)]
    return subprocess.Popen([*cmd, *extra], env=env, stderr=subprocess.PIPE, text=True)


def test_migrate_data_copies_everything_and_survives_a_kill(
    tmp_path: Path, pg_cluster: Any, pg_url: str
) -> None:
    old = tmp_path / "old"
    with ServerProcess(old) as server:
        made = subprocess.run(
            [sys.executable, "-m", "mlop_server", "keys", "create", "--name", "alice", "--data", str(old)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        alice = made.stdout.strip()
        runs = _fill(server, alice)
        before_admin, before_alice = _answers(server, server.key), _answers(server, alice)
    assert len(before_admin["logs " + str(runs["admin-a"])]) == LOG_LINES
    assert before_admin["long " + str(runs["admin-a"])][:2] == [200, str(LONG)]
    assert before_alice["layout nlp"]["value"] == {"by": "alice"}
    assert before_alice["projects"] == [
        {"name": "nlp", "runs": 1, "updated": before_alice["projects"][0]["updated"]}
    ]
    files = tmp_path / "new" / "files"

    # One row per transaction, killed (SIGKILL) once the console lines are partly copied.
    first = _migrate(old, pg_url, files, "--batch", "1")
    assert first.stderr is not None
    seen = []
    for line in first.stderr:
        seen.append(line)
        if line.startswith("logs: 3"):
            first.send_signal(signal.SIGKILL)
            break
    first.wait(60)
    first.stderr.close()
    assert first.returncode == -signal.SIGKILL, "".join(seen)
    copied = _count(pg_cluster, pg_url, "logs")
    assert 0 < copied < 3 * LOG_LINES  # stopped half-way

    again = _migrate(old, pg_url, files)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert "done:" in err

    # Nothing doubled: every row once.
    assert _count(pg_cluster, pg_url, "logs") == 3 * LOG_LINES
    assert _count(pg_cluster, pg_url, "metrics") == 3 * 2 * STEPS + LONG
    assert _count(pg_cluster, pg_url, "runs") == 3 and _count(pg_cluster, pg_url, "api_keys") == 2
    assert _count(pg_cluster, pg_url, "files") == 3 and _count(pg_cluster, pg_url, "data_points") == 3

    # A third run finds nothing left to do and changes nothing.
    third = _migrate(old, pg_url, files)
    _, err = third.communicate(timeout=120)
    assert third.returncode == 0, err
    assert _count(pg_cluster, pg_url, "logs") == 3 * LOG_LINES

    with ServerProcess(tmp_path / "new", db=pg_url, extra_args=["--files", str(files)]) as server:
        assert _answers(server, server.key) == before_admin  # the admin key works: its hash was copied
        assert _answers(server, alice) == before_alice  # so does alice's, and it still sees only her run
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {alice}"}) as c:
            created = c.post("/api/runs/create", json={"runName": "d", "projectName": "nlp"}).json()
            assert created["runId"] > max(runs.values())  # new ids come after the copied ones
            assert c.get(f"/api/runs/{runs['admin-a']}").status_code == 404  # another owner's run


def test_migrate_data_refuses_a_database_a_server_used(tmp_path: Path, pg_url: str) -> None:
    with ServerProcess(tmp_path / "old"):
        pass
    with ServerProcess(tmp_path / "pg", db=pg_url):  # creates its admin key in the database
        pass
    proc = _migrate(tmp_path / "old", pg_url, tmp_path / "files")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "holds runs or keys already" in err
    assert "pg-test-password" not in err  # the password never shows
