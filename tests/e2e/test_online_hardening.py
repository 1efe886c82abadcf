"""The online client given names, values, keys and server states that used to lose data or hang: Unicode
names, values the server refuses, a refused key, a server that is down, corrupt records, Retry-After.
Against mlop-server as a real process (with the fault-injecting proxy where a fault must be made)."""

from __future__ import annotations

import pickle
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import mlop
from mlop._headers import decode_header_value

pytestmark = pytest.mark.slow

BAD_KEY = "mlps_not_a_key_this_server_issued_0000"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(online: Any, project: str, host: str | None = None, **extra: str) -> dict[str, str]:
    return online.env(host, **{"PROJECT": project, "MLOP_X_FINISH_TIMEOUT": "60", **extra})


def _runs(online: Any, project: str) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = online.api.get("/api/runs", params={"project": project}).json()
    return [online.api.get(f"/api/runs/{r['id']}").json() for r in runs]


def _points(online: Any, run_id: int, key: str) -> list[tuple[int, Any]]:
    answer = online.api.get(f"/api/runs/{run_id}/metrics", params={"key": key})
    assert answer.status_code == 200, answer.text
    return [(p["step"], p["value"]) for p in answer.json()]


def _sync(
    online: Any, *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``mlop sync``, bounded: a sync that hangs fails the test instead of the suite."""
    return subprocess.run(
        [sys.executable, "-m", "mlop.cli", "sync", *args],
        cwd=online.tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _offline_run(online: Any, project: str, steps: int = 100) -> Path:
    """An offline run of ``steps`` loss values spread over several store records."""
    body = f"""
        run = mlop.init(project=os.environ["PROJECT"], dir=sys.argv[1])
        for step in range({steps}):
            run.log({{"loss": float(step)}})
            if step % 10 == 9:
                run._writer.flush()  # one record per ten steps
        run.finish()
    """
    online.run(body, env=_env(online, project, MLOP_MODE="offline"))
    return Path(online.run_dir(project))


def test_unicode_names_tags_and_text_arrive_exactly(online: Any, fault_proxy: Any) -> None:
    proxy = fault_proxy(lambda method, path, n: None)
    body = """
        run = mlop.init(project="проект-1", name="训练-δ-🚀", tags=["标签", "ünï"], dir=sys.argv[1])
        run.log({"损失/训练": 0.5, "note": "текст ✓ 🚀"})
        run.add_tags("🚀")
        run.finish()
        other = mlop.init(project="проект-1", name="line\\nbreak", dir=sys.argv[1])
        other.log({"x": 1.0})
        other.finish()
        print("DONE", run.status, other.status)
    """
    out = online.run(body, env=_env(online, "unused", proxy.url))
    assert "DONE COMPLETED COMPLETED" in out.stdout, out.stderr
    runs = {r["name"]: r for r in _runs(online, "проект-1")}
    assert set(runs) == {"训练-δ-🚀", "line\nbreak"}
    run = runs["训练-δ-🚀"]
    assert run["status"] == "COMPLETED" and run["tags"] == ["标签", "ünï", "🚀"]
    assert _points(online, run["id"], "损失/训练") == [(0, 0.5)]
    (note,) = online.api.get(f"/api/runs/{run['id']}/data", params={"key": "note"}).json()
    assert note["data"] == "текст ✓ 🚀"
    assert runs["line\nbreak"]["status"] == "COMPLETED"
    names = {decode_header_value(h["X-Run-Name"]) for h in proxy.headers if "X-Run-Name" in h}
    assert {"训练-δ-🚀", "line\nbreak"} <= names
    assert all(h["X-Project-Name"] == "UTF-8''%D0%BF%D1%80%D0%BE%D0%B5%D0%BA%D1%82-1" for h in proxy.headers
               if "X-Project-Name" in h)  # fmt: skip


def test_values_the_server_refuses_are_dropped_alone_before_they_are_stored(online: Any) -> None:
    body = """
        run = mlop.init(project=os.environ["PROJECT"], dir=sys.argv[1], config={"big": 10**400})
        for step in range(60):
            run.log({"loss": float(step), "": 1.0, "k" * 600: 2.0, "huge": 10**400, "lone\\ud800": 3.0,
                     "text": "a \\udc00", "fine": "ok"})
        run.log({"loss": -1.0}, step=2**64)
        run.finish()
        print("DONE", run.status)
    """
    out = online.run(body, env=_env(online, "poison"))
    assert "DONE COMPLETED" in out.stdout
    (run,) = _runs(online, "poison")
    assert _points(online, run["id"], "loss") == [(s, float(s)) for s in range(60)] + [(60, -1.0)]
    assert run["config"] == {"big": str(10**400)}
    keys = {k["name"] for k in online.api.get(f"/api/runs/{run['id']}/keys").json()}
    assert keys == {"loss", "fine"}
    for needle in ("''", "longer than 512", "'huge'", "'lone", "'text'", "2**63", "beyond the range"):
        assert needle in out.stderr, needle
    assert out.stderr.count("empty key") == 1  # once per key, not once per call
    with sqlite3.connect(online.run_dir("poison") / "run.db") as db:
        assert db.execute("SELECT COUNT(*) FROM failures").fetchone()[0] == 0
    db.close()


def test_what_the_server_still_refuses_is_isolated_and_the_rest_sent(online: Any) -> None:
    run_dir = _offline_run(online, "isolate")
    # Lines that bypassed the client's checks (an older client, a crafted folder): each alone is refused.
    bad = [(100, 1.0, {"": 1.0}), (101, 1.0, {"lone\ud800": 1.0}), (2**63, 1.0, {"loss": 2.0})]
    good = [(102, 1.0, {"loss": 102.0}), (103, 1.0, {"loss": 103.0})]
    db = sqlite3.connect(run_dir / "run.db")
    items = [good[0], bad[0], bad[1], good[1], bad[2], (104, 1.0, {"huge": 10**400})]
    db.execute(
        "INSERT INTO records (kind, count, time, payload) VALUES ('metrics', ?, 0, ?)",
        (len(items), pickle.dumps(items, protocol=5)),
    )
    db.commit()
    db.close()
    synced = _sync(online, str(run_dir), env=_env(online, "isolate"))
    assert synced.returncode == 0, synced.stderr
    (run,) = _runs(online, "isolate")
    assert [s for s, _v in _points(online, run["id"], "loss")] == [*range(100), 102, 103]
    said = [line for line in synced.stderr.splitlines() if "refused part of run" in line]
    assert 1 <= len(said) <= 2  # said once per route (logName/add, ingest), the rest in the table
    assert "refused 4 part(s) for good" in synced.stderr
    with sqlite3.connect(run_dir / "run.db") as db:
        refused = db.execute("SELECT stream, status FROM failures").fetchall()
    db.close()
    assert refused == [("metrics", 400)] * 4


def test_a_refused_key_is_final_live_and_in_mlop_sync(online: Any) -> None:
    body = """
        run = mlop.init(project=os.environ["PROJECT"], dir=sys.argv[1])
        for step in range(50):
            run.log({"loss": float(step)})
            time.sleep(0.01)
        run.finish()
        print("DONE", run.status)
    """
    # finish() may wait 600 s for the uploader; the process must end long before (no retrying forever).
    env = _env(online, "badkey", MLOP_API_TOKEN=BAD_KEY, MLOP_X_FINISH_TIMEOUT="600")
    out = online.run(body, env=env, timeout=90)
    assert "DONE COMPLETED" in out.stdout
    assert out.stderr.count("did not accept the API key") == 1, out.stderr
    assert online.server.url in out.stderr and "mlop login" in out.stderr and "mlop sync" in out.stderr
    assert BAD_KEY not in out.stderr
    run_dir = online.run_dir("badkey")
    with mlop.open_run(run_dir) as stored:
        assert [m["step"] for m in stored.metrics("loss")] == list(range(50))
    assert _runs(online, "badkey") == []

    refused = _sync(online, str(run_dir), env=env, timeout=30)
    assert refused.returncode == 1
    assert "did not accept the API key" in refused.stderr and BAD_KEY not in refused.stderr

    synced = _sync(online, str(run_dir), env=_env(online, "badkey"))
    assert synced.returncode == 0, synced.stderr
    (run,) = _runs(online, "badkey")
    assert [s for s, _v in _points(online, run["id"], "loss")] == list(range(50))


def test_mlop_sync_gives_up_without_progress_and_says_what_is_left(online: Any) -> None:
    run_dir = _offline_run(online, "down")
    down = f"http://127.0.0.1:{_free_port()}"
    out = _sync(online, str(run_dir), "--host", down, "--timeout", "2", env=_env(online, "down"))
    assert out.returncode == 1
    assert "no progress for 2 s" in out.stderr and "Not sent: 100 metric lines" in out.stderr, out.stderr


def test_mlop_sync_timeout_counts_from_the_last_progress(online: Any, fault_proxy: Any) -> None:
    run_dir = _offline_run(online, "slowsync")
    # Every request takes 1 s; the run's requests (create, key names, metrics, final status) go one after
    # the other, so the whole sync takes longer than --timeout, and succeeds only because each answer
    # resets the clock.
    proxy = fault_proxy(lambda method, path, n: "slow")
    out = _sync(online, str(run_dir), "--host", proxy.url, "--timeout", "2.5", env=_env(online, "slowsync"))
    assert out.returncode == 0, out.stderr
    (run,) = _runs(online, "slowsync")
    assert [s for s, _v in _points(online, run["id"], "loss")] == list(range(100))
    sent = [p for p, _f, _b in proxy.log if p != "/api/runs/trigger"]
    assert len(sent) >= 4, sent  # create, logName/add, metrics, COMPLETED: at least 4 s in all


def test_retry_after_is_honoured(online: Any, fault_proxy: Any) -> None:
    arrived: list[float] = []

    def plan(method: str, path: str, n: int) -> str | None:
        if path == "/ingest/metrics":
            arrived.append(time.monotonic())
            return "429" if n == 1 else None  # the proxy answers 429 with Retry-After: 1
        return None

    proxy = fault_proxy(plan)
    body = """
        run = mlop.init(project=os.environ["PROJECT"], dir=sys.argv[1])
        run.log({"loss": 1.0})
        run.finish()
    """
    online.run(body, env=_env(online, "retryafter", proxy.url))
    assert len(arrived) == 2
    assert arrived[1] - arrived[0] >= 1.0  # the client's own first backoff is at most 0.25 s
    (run,) = _runs(online, "retryafter")
    assert _points(online, run["id"], "loss") == [(0, 1.0)]


def test_a_corrupt_record_is_reported_once_and_everything_else_sent(online: Any) -> None:
    run_dir = _offline_run(online, "corrupt")
    db = sqlite3.connect(run_dir / "run.db")
    seqs = [s for (s,) in db.execute("SELECT seq FROM records WHERE kind = 'metrics' ORDER BY seq")]
    assert len(seqs) >= 3
    db.execute("UPDATE records SET payload = ? WHERE seq = ?", (b"\x80\x05not a pickle", seqs[1]))
    db.commit()
    db.close()
    with mlop.open_run(run_dir) as stored:
        kept = [m["step"] for m in stored.metrics("loss")]
    assert 0 < len(kept) < 100

    synced = _sync(online, str(run_dir), env=_env(online, "corrupt"))
    assert synced.returncode == 0, synced.stderr
    assert synced.stderr.count(f"record {seqs[1]} (metrics) cannot be read") == 1, synced.stderr
    assert "Traceback" not in synced.stderr
    (run,) = _runs(online, "corrupt")
    assert [s for s, _v in _points(online, run["id"], "loss")] == kept
    assert run["status"] == "COMPLETED"
    again = _sync(online, str(run_dir), env=_env(online, "corrupt"))
    assert again.returncode == 0 and "nothing to send" in again.stderr


def test_a_store_sqlite_cannot_read_is_a_clear_error_not_a_traceback(online: Any) -> None:
    run_dir = online.runs_dir / ".mlop" / "garbage" / "r1"
    run_dir.mkdir(parents=True)
    (run_dir / "run.db").write_bytes(b"not a database at all " * 200)
    synced = _sync(online, str(run_dir), env=_env(online, "garbage"))
    assert synced.returncode == 1 and "Traceback" not in synced.stderr
    assert str(run_dir) in synced.stderr
    exported = subprocess.run(
        [sys.executable, "-m", "mlop.cli", "export", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(online, "garbage"),
    )
    assert exported.returncode == 1 and "Traceback" not in exported.stderr
    with pytest.raises(mlop.MlopError):
        mlop.open_run(run_dir)
