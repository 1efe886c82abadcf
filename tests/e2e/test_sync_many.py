"""`mlop sync` of a folder of many finished runs against a real `mlop server` process (issue 22).

The runs are made by the real client, offline, in a process of their own; `mlop sync` runs as the user runs
it (`python -m mlop.cli sync --dir ...`), several runs in flight at once. What is checked is what arrived,
through the server's read API: every run, its status, config, every metric point and console line, once.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.uiproc import mlop_ui

from mlop_server.testing import ServerProcess

pytestmark = pytest.mark.slow

RUNS = 100
STEPS = 20
KEYS = ("train/loss", "train/acc", "val/loss")

MAKE = f"""
import sys, mlop
for i in range({RUNS}):
    run = mlop.init(project="sweep", name=f"trial-{{i}}", dir=sys.argv[1], mode="offline",
                    config={{"lr": i / 1000, "opt": {{"name": "adam"}}}}, tags=["sweep"],
                    disable_system_metrics=True)
    for s in range({STEPS}):
        run.log({{"train/loss": i + 1 / (s + 1), "train/acc": s / {STEPS}, "val/loss": i * 2.0 + s}})
    print(f"trial {{i}} begins")
    print(f"trial {{i}} ends")
    run.finish()
"""


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of finished offline runs, made once; each test syncs a copy of it."""
    root = tmp_path_factory.mktemp("made")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}
    subprocess.run([sys.executable, "-c", MAKE, str(root)], env=env, check=True, timeout=180)
    assert len(list(root.glob(".mlop/sweep/*/run.db"))) == RUNS
    return root


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of this test's own: each test sends the same runs (same external ids) fresh."""
    with ServerProcess(tmp_path / "server") as proc:
        yield proc


@pytest.fixture
def runs(made: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "runs"
    shutil.copytree(made, copy)
    return copy


def _env(server: ServerProcess, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}
    env.update(MLOP_API_TOKEN=server.key, MLOP_HOST=server.url, MLOP_CONFIG_DIR=str(tmp / "config"))
    return env


def _sync(runs: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mlop.cli", "sync", "--dir", str(runs), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _arrived(api: httpx.Client, keys: tuple[str, ...] = KEYS) -> dict[str, dict[str, Any]]:
    """Per run name: status, config, the steps and values of each metric (duplicates kept), log lines."""
    out: dict[str, dict[str, Any]] = {}
    for run in api.get("/api/runs", params={"project": "sweep"}).json():
        detail = api.get(f"/api/runs/{run['id']}").json()
        points = {}
        for key in keys:
            answer = api.get(f"/api/runs/{run['id']}/metrics", params={"key": key})
            assert answer.status_code == 200, answer.text
            points[key] = [(p["step"], p["value"]) for p in answer.json()]
        lines = [line["message"] for line in api.get(f"/api/runs/{run['id']}/logs").json()]
        assert run["name"] not in out, f"{run['name']} is on the server twice"
        out[run["name"]] = {
            "status": run["status"],
            "config": detail["config"],
            "points": points,
            "logs": lines,
        }
    return out


def _check_whole(found: dict[str, dict[str, Any]], names: set[str]) -> None:
    assert set(found) == names
    for name in names:
        i = int(name.removeprefix("trial-"))
        run = found[name]
        assert run["status"] == "COMPLETED", (name, run["status"])
        assert run["config"]["lr"] == i / 1000 and run["config"]["opt"] == {"name": "adam"}, name
        want = {
            "train/loss": [(s, i + 1 / (s + 1)) for s in range(STEPS)],
            "train/acc": [(s, s / STEPS) for s in range(STEPS)],
            "val/loss": [(s, i * 2.0 + s) for s in range(STEPS)],
        }
        assert run["points"] == {k: want[k] for k in run["points"]}, name  # every point, once, in order
        assert [line for line in run["logs"] if line.startswith("trial")] == [
            f"trial {i} begins",
            f"trial {i} ends",
        ], name


ALL = {f"trial-{i}" for i in range(RUNS)}


def test_a_folder_of_finished_runs_arrives_whole_and_a_second_sync_sends_nothing(
    runs: Path, server: ServerProcess, api: httpx.Client, tmp_path: Path, fault_proxy: Any
) -> None:
    synced = _sync(runs, _env(server, tmp_path))
    assert synced.returncode == 0, synced.stderr
    assert f"mlop sync: {RUNS} runs: {RUNS} sent" in synced.stderr
    _check_whole(_arrived(api), ALL)
    # Every run's store was closed cleanly: its acknowledgements checkpointed into it, no log left over.
    assert not list(runs.glob(".mlop/sweep/*/run.db-wal"))

    # Again, through a proxy that counts the requests: nothing to send, and not one request made.
    proxy = fault_proxy(lambda method, path, n: None)
    again = _sync(runs, _env(server, tmp_path), "--host", proxy.url)
    assert again.returncode == 0, again.stderr
    assert again.stderr.strip() == "mlop sync: no run with anything to send"
    assert proxy.log == []
    assert len(api.get("/api/runs", params={"project": "sweep"}).json()) == RUNS


def test_a_sync_killed_mid_way_then_run_again_sends_every_run_once(
    runs: Path, server: ServerProcess, api: httpx.Client, tmp_path: Path, fault_proxy: Any
) -> None:
    # Through a proxy, so that the test sees the sync's progress and kills it mid-way (SIGKILL).
    proxy = fault_proxy(lambda method, path, n: None)
    env = _env(server, tmp_path)
    sync = subprocess.Popen(
        [sys.executable, "-m", "mlop.cli", "sync", "--dir", str(runs), "--host", proxy.url],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while proxy.counts.get("/ingest/logs", 0) < RUNS // 3 and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(sync.pid, signal.SIGKILL)
    finally:
        sync.wait(30)
    before = {run["name"]: run["status"] for run in api.get("/api/runs", params={"project": "sweep"}).json()}
    assert 0 < sum(status == "COMPLETED" for status in before.values()) < RUNS, before  # really mid-way

    again = _sync(runs, env, "--host", proxy.url)
    assert again.returncode == 0, again.stderr
    _check_whole(_arrived(api), ALL)
    assert _sync(runs, env).stderr.strip() == "mlop sync: no run with anything to send"


def test_a_run_the_server_refuses_does_not_stop_the_others_and_is_reported(
    runs: Path, server: ServerProcess, api: httpx.Client, tmp_path: Path, fault_proxy: Any
) -> None:
    # The server answers 400 to the 7th run created, and 500 twice to a metrics batch (retried).
    def plan(method: str, path: str, n: int) -> str | None:
        if path == "/api/runs/create" and n == 7:
            return "400"
        if path == "/ingest/metrics" and n in (3, 4):
            return "500"
        return None

    proxy = fault_proxy(plan)
    env = _env(server, tmp_path)
    synced = _sync(runs, env, "--host", proxy.url)
    assert synced.returncode == 1, synced.stderr
    found = _arrived(api, keys=("val/loss",))
    (refused,) = ALL - set(found)
    assert f"sweep/{refused}: not everything was sent; run `mlop sync" in synced.stderr
    assert f"the server refused run {refused}: POST /api/runs/create: HTTP 400" in synced.stderr
    assert f"mlop sync: {RUNS} runs: {RUNS - 1} sent, " in synced.stderr
    assert "1 not sent in full" in synced.stderr
    _check_whole(found, ALL - {refused})

    # Run again without faults: the refused run arrives, and nothing of the others is sent twice.
    again = _sync(runs, env)
    assert again.returncode == 0, again.stderr
    assert f"sweep/{refused}: sent" in again.stderr
    _check_whole(_arrived(api), ALL)


EDITED = """
import sys, mlop
root = sys.argv[1]
plain = mlop.init(project="edits", name="plain", dir=root, mode="offline", config={"lr": 0.1}, tags=["a"],
                  disable_system_metrics=True)
plain.log({"loss": 1.0})
plain.finish()
run = mlop.init(project="edits", name="edited", dir=root, mode="offline",
                config={"lr": 0.1, "opt": {"name": "adam", "beta": 0.9}}, tags=["a", "b"],
                disable_system_metrics=True)
run.log({"loss": 1.0})
run.update_config({"opt": {"beta": 0.5}, "wd": 0.01})
run.update_config({"opt": "sgd"})
run.add_tags("c")
run.remove_tags("a")
run.finish()
"""


def test_updates_a_fresh_create_holds_already_are_not_sent_and_the_end_state_is_the_same(
    server: ServerProcess, api: httpx.Client, tmp_path: Path, fault_proxy: Any
) -> None:
    # A run created by the sync carries the store's latest config and tags and is RUNNING: the config,
    # tags and RUNNING records that change none of that are acknowledged without a request. A run whose
    # config and tags changed after init() still gets every update that changes something, in order.
    root = tmp_path / "edits"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}
    subprocess.run([sys.executable, "-c", EDITED, str(root)], env=env, check=True, timeout=120)
    proxy = fault_proxy(lambda method, path, n: None)
    synced = _sync(root, _env(server, tmp_path), "--host", proxy.url)
    assert synced.returncode == 0, synced.stderr

    found = {run["name"]: run for run in api.get("/api/runs", params={"project": "edits"}).json()}
    assert set(found) == {"plain", "edited"}
    plain = api.get(f"/api/runs/{found['plain']['id']}").json()
    edited = api.get(f"/api/runs/{found['edited']['id']}").json()
    assert (plain["status"], plain["config"], plain["tags"]) == ("COMPLETED", {"lr": 0.1}, ["a"])
    assert edited["status"] == "COMPLETED"
    assert edited["config"] == {"lr": 0.1, "opt": "sgd", "wd": 0.01}
    assert edited["tags"] == ["b", "c"]

    bodies = [body for path, _fault, body in proxy.log if path == "/api/runs/config/update"]
    # Only the edited run's: its init config (which undoes the create's "opt": "sgd"), then both updates.
    assert len(bodies) == 3, bodies
    assert proxy.counts.get("/api/runs/status/update") == 2  # COMPLETED, once per run; never RUNNING
    statuses = [body for path, _fault, body in proxy.log if path == "/api/runs/status/update"]
    assert all(b'"COMPLETED"' in body for body in statuses), statuses
    # The edited run's tags: its init tags ["a", "b"] (differ from the create's), then the two edits.
    assert proxy.counts.get("/api/runs/tags/update") == 3


@pytest.mark.parametrize("split_at", [None, 2], ids=["one process", "half to the helper process"])
def test_mlop_ui_mirrors_runs_sent_elsewhere_whole_once_and_a_second_pass_sends_nothing(
    runs: Path,
    server: ServerProcess,
    api: httpx.Client,
    tmp_path: Path,
    fault_proxy: Any,
    split_at: int | None,
) -> None:
    # The runs were sent to another server first, so their stores hold that server's acknowledgements,
    # refusals and run ids: mlop ui's mirror (made whole from a run's store in one step) must leave all
    # of that behind and send every run whole to its own server, and leave the runs' stores as they were.
    # With split_at=2 every other run goes through the helper process (a pass of 64 runs or more).
    from mlop._store import Store
    from mlop_server._mirror import Mirror

    with ServerProcess(tmp_path / "elsewhere") as elsewhere:
        assert _sync(runs, _env(elsewhere, tmp_path)).returncode == 0
    some = next(iter(sorted(runs.glob(".mlop/sweep/*"))))
    store = Store(some)
    try:
        before = (store.acks(), store.meta()["server"])
    finally:
        store.close()
    assert before[0] and before[1]["runId"] is not None

    proxy = fault_proxy(lambda method, path, n: None)
    mirror = Mirror(runs, tmp_path / "mirrors", proxy.url, server.key, split_at=split_at)
    # One mirror as a first copy cut short leaves it (the run's pages, the mark of the copy not yet
    # written): it is made again from the start, not appended to.
    mirror.mirror_dir(some).mkdir(parents=True)
    shutil.copyfile(some / "run.db", mirror.mirror_dir(some) / "run.db")
    try:
        assert mirror.sync() == RUNS
        _check_whole(_arrived(api), ALL)
        assert proxy.counts["/api/runs/create"] == RUNS
        sent = len(proxy.log)
        stores = sorted((tmp_path / "mirrors").glob("*/run.db"))
        assert len(stores) == RUNS
        written = [path.stat().st_mtime_ns for path in stores]
        assert mirror.sync() == 0  # every run ended and is all there: not even its mirror is written again
        assert len(proxy.log) == sent
        assert [path.stat().st_mtime_ns for path in stores] == written
    finally:
        mirror.close()
    store = Store(some)
    try:
        assert (store.acks(), store.meta()["server"]) == before  # the run's own store: untouched
    finally:
        store.close()


def test_mlop_ui_sends_the_runs_of_a_helper_process_that_died_itself(
    runs: Path, server: ServerProcess, api: httpx.Client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The helper process is killed between two passes: the next pass finds it gone when it asks for its
    # answers, sends its half from mlop ui's own process, says so, and every run arrives once.
    from mlop_server._mirror import Mirror

    mirror = Mirror(runs, tmp_path / "mirrors", server.url, server.key, split_at=2)
    try:
        half = sorted(runs.glob(".mlop/sweep/*"))
        (tmp_path / "later").mkdir()
        hidden = [run.rename(tmp_path / "later" / run.name) for run in half[: len(half) // 2]]
        assert mirror.sync() == RUNS - len(hidden)
        helper = mirror._helper
        assert helper is not None and helper._proc.poll() is None
        helper._proc.kill()
        helper._proc.wait()
        for run in hidden:
            run.rename(runs / ".mlop" / "sweep" / run.name)
        with caplog.at_level("WARNING", logger="mlop_server._mirror"):
            assert mirror.sync() == len(hidden)
        assert "the helper process stopped" in caplog.text
        _check_whole(_arrived(api), ALL)
        assert mirror.sync() == 0
    finally:
        mirror.close()


def test_the_mlop_ui_command_sends_a_large_folder_through_its_helper_and_ctrl_c_stops_both(
    runs: Path, tmp_path: Path
) -> None:
    # `mlop ui` as a user runs it, on 100 runs (a pass of 64 or more: half go through the helper process).
    # Every run arrives whole, once; Ctrl-C stops mlop ui, its server and its helper.
    import psutil

    with mlop_ui(runs, "--data", str(tmp_path / "ui")) as (ui, page):
        base, key = page.split("/ui/#key=")
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as api:
            finished = {"project": "sweep", "filter": 'status == "COMPLETED"', "limit": 1}
            deadline = time.monotonic() + 120
            while api.get("/api/runs", params=finished).json()["total"] < RUNS:
                assert time.monotonic() < deadline, "not every run arrived"
                time.sleep(0.2)
            helpers = [
                p for p in psutil.Process(ui.pid).children() if "_mirror_helper" in " ".join(p.cmdline())
            ]
            assert len(helpers) == 1  # started for the first pass (100 runs)
            assert key not in " ".join(helpers[0].cmdline())  # the key reached it on its stdin
            _check_whole(_arrived(api), ALL)
        ui.send_signal(signal.SIGINT)
        assert ui.wait(30) == 0
    helpers[0].wait(10)  # raises if the helper outlived mlop ui
