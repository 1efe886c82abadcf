"""The run page's overview and the dashboard's login in a real browser (headless Chromium, Playwright) against
a real ``mlop server``, with runs logged by the real client: what the client recorded is shown, tags and
notes edited in the page survive a reload, a run synced later shows when it ran (client clock), and a key
given once keeps the browser logged in through a reload (a session cookie, not the key)."""

from __future__ import annotations

import datetime
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import zoneinfo
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from tests.e2e.test_ui_browser import chromium_browser
from tests.e2e.uiproc import mlop_ui

from mlop_server.testing import ServerProcess

pytestmark = pytest.mark.slow

WAIT_MS: Final = 30_000
#: Screenshots kept as test artifacts (the folder is not tracked).
ARTIFACTS: Final = Path(__file__).resolve().parents[2] / "bench" / "out" / "screenshots"

FAILING = """
run = mlop.init(project="overview", name="ov", dir=sys.argv[1], tags=["base"],
                config={"lr": 0.01, "model": {"depth": 4}})
for step in range(5):
    run.log({"train/loss": 1.0 / (step + 1)})
run.summary["best_loss"] = 0.2
print("warming up")
print("the needle line", flush=True)
time.sleep(0.8)  # a few system-metric samples
raise ValueError("boom at the end")
"""

OFFLINE = """
run = mlop.init(project="synced", name="later", dir=sys.argv[1], mode="offline")
run.log({"x": 1.0})
time.sleep(3)
run.log({"x": 2.0})
run.finish()
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium_browser()


@pytest.fixture
def page(browser: Any, server: ServerProcess) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    opened.set_default_timeout(WAIT_MS)
    opened.goto(f"{server.url}/ui/#key={server.key}")  # as `mlop ui` opens it
    opened.wait_for_selector("body[data-ready]", state="attached")
    yield opened
    context.close()
    assert not errors, errors


def open_run(page: Any, run_id: int, tab: str = "overview") -> None:
    page.evaluate(
        "where => { delete document.body.dataset.ready; "
        "if (location.hash === where) mlop.route(); else location.hash = where; }",
        f"#/run/{run_id}/{tab}",
    )
    page.wait_for_selector(f"body[data-ready='run-{tab}']", state="attached")


def cell(page: Any, selector: str) -> str:
    text: str = page.inner_text(selector)
    return text.strip()


def _git(folder: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(folder), *args], capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()


_MADE: dict[str, dict[str, Any]] = {}


@pytest.fixture
def failed_run(online: Any) -> dict[str, Any]:
    """A run that logged config, summary, console lines and system metrics from a git checkout with an
    uncommitted change, then failed with an exception (made once per server)."""
    if online.server.url in _MADE:
        return _MADE[online.server.url]
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    _git(online.tmp, "init", "-q")
    (online.tmp / "model.py").write_text("depth = 3\n")
    _git(online.tmp, "add", "model.py")
    _git(online.tmp, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "first")
    (online.tmp / "model.py").write_text("depth = 4  # tried deeper\n")
    script = online.script(FAILING, name="train_overview.py")
    env = online.env(
        MLOP_DISABLE_SYSTEM_METRICS="0", MLOP_X_SYS_SAMPLING_INTERVAL="0.2", MLOP_CAPTURE_GIT_DIFF="1"
    )
    out = subprocess.run(
        [sys.executable, str(script), str(online.runs_dir)],
        cwd=online.tmp, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 1 and "boom at the end" in out.stderr, out.stderr
    run: dict[str, Any] = online.server_run("overview")
    run = online.wait_status(run["id"], {"FAILED"})
    run["commit"] = _git(online.tmp, "rev-parse", "HEAD")
    _MADE[online.server.url] = run
    return run


def test_the_overview_shows_what_the_client_recorded(page: Any, failed_run: dict[str, Any]) -> None:
    open_run(page, failed_run["id"])
    assert page.get_attribute("#ov-status", "data-status") == "FAILED"
    assert "ValueError: boom at the end" in cell(page, "#ov-error")
    assert 'raise ValueError("boom at the end")' in cell(page, "#ov-trace")
    assert cell(page, "#ov-config tr[data-key='lr'] td") == "0.01"
    assert cell(page, "#ov-config tr[data-key='model.depth'] td") == "4"
    assert cell(page, "#ov-summary tr[data-key='best_loss'] td") == "0.2"
    env = {
        row[0]: row[1]
        for row in page.eval_on_selector_all(
            "#ov-env tr", "rows => rows.map(r => [r.dataset.field, r.querySelector('td').textContent])"
        )
    }
    assert env["host"] == socket.gethostname()
    assert env["python"].startswith(platform.python_version())
    assert env["git commit"] == failed_run["commit"] + " (uncommitted changes)"
    assert env["command"].split()[1].endswith("train_overview.py")  # python train_overview.py RUNS_DIR
    page.click("#ov-diff summary")
    assert "+depth = 4  # tried deeper" in cell(page, "#ov-diff pre")
    system = page.eval_on_selector_all("#ov-system tbody tr", "rows => rows.map(r => r.dataset.key)")
    assert system and all(key.startswith("sys/") for key in system)

    assert "the needle line" in cell(page, "#ov-log") and "warming up" in cell(page, "#ov-log")
    page.fill("#ov-log-search", "needle")
    assert cell(page, "#ov-log") == "the needle line"
    assert cell(page, "#ov-log mark") == "needle"
    assert cell(page, "#ov-log-count").startswith("1 of ")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.fill("#ov-log-search", "")
    page.screenshot(path=str(ARTIFACTS / "run-overview.png"), full_page=True)


def test_times_are_shown_in_the_viewers_time_zone(
    browser: Any, server: ServerProcess, failed_run: dict[str, Any]
) -> None:
    zone = "Asia/Kolkata"  # UTC+5:30: neither the machine's zone nor a whole hour off UTC
    context = browser.new_context(timezone_id=zone)
    try:
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.goto(f"{server.url}/ui/#key={server.key}")
        page.wait_for_selector("body[data-ready]", state="attached")
        open_run(page, failed_run["id"])
        start = int(page.get_attribute("#ov-start", "data-ms"))
        moment = datetime.datetime.fromtimestamp(start / 1000, zoneinfo.ZoneInfo(zone))
        assert cell(page, "#ov-start") == moment.strftime("%Y-%m-%d %H:%M:%S")
        utc = datetime.datetime.fromtimestamp(start / 1000, datetime.UTC)
        assert page.get_attribute("#ov-start", "title") == utc.strftime("%Y-%m-%d %H:%M:%S UTC")
        assert moment.strftime("%H:%M:%S") in cell(page, "#run-duration")  # "... · started <local time>"
    finally:
        context.close()


def test_tags_and_notes_edited_in_the_page_survive_a_reload(
    page: Any, failed_run: dict[str, Any], online: Any
) -> None:
    run_id = failed_run["id"]
    open_run(page, run_id)
    page.fill("#tags-input", "base, tuned")
    page.click("#tags-save")
    page.wait_for_selector("#tags-note:text('saved')")
    page.fill("#notes-input", "deeper model; lr from the sweep\nsecond line")
    page.click("#notes-save")
    page.wait_for_selector("#notes-note:text('saved')")
    page.reload()
    page.wait_for_selector("body[data-ready='run-overview']", state="attached")
    assert page.input_value("#tags-input") == "base, tuned"
    assert page.input_value("#notes-input") == "deeper model; lr from the sweep\nsecond line"
    stored = online.api.get(f"/api/runs/{run_id}").json()
    assert stored["tags"] == ["base", "tuned"]
    assert stored["config"]["notes"] == "deeper model; lr from the sweep\nsecond line"
    assert stored["config"]["lr"] == 0.01  # the rest of the config is untouched


def test_a_run_sent_later_shows_how_long_it_ran_under_sync_and_mlop_ui(page: Any, online: Any) -> None:
    online.run(OFFLINE)
    run_dir = online.run_dir("synced")
    time.sleep(2.5)  # the sync happens well after the run ended
    synced = online.mlop("sync", str(run_dir))
    assert synced.returncode == 0, synced.stderr
    run = online.wait_status(online.server_run("synced")["id"], {"COMPLETED"})
    open_run(page, run["id"])
    duration = int(page.get_attribute("#ov-duration", "data-ms"))
    assert 3000 <= duration < 4500, duration  # the 3 s the script slept, on the client's clock
    assert cell(page, "#ov-duration") in ("3s", "4s")
    start, end = (
        int(page.get_attribute("#ov-start", "data-ms")),
        int(page.get_attribute("#ov-end", "data-ms")),
    )
    assert end - start == duration
    received = run["updated"]  # when the server last heard of it: the sync, seconds later
    assert received - start > duration + 2000
    assert "3s" in cell(page, "#run-duration") or "4s" in cell(page, "#run-duration")
    _through_mlop_ui(page.context.browser, online.runs_dir)


def _through_mlop_ui(browser: Any, runs_dir: Path) -> None:
    """The same run folder under `mlop ui`: a browser opened on its URL is logged in by itself, and the run,
    sent seconds after it ended, shows the client's duration too."""
    context = browser.new_context()
    try:
        with mlop_ui(runs_dir, "--interval", "0.5", stop=signal.SIGTERM) as (_ui, url):
            page = context.new_page()
            page.set_default_timeout(WAIT_MS)
            page.goto(url)
            page.wait_for_selector("body[data-ready='projects']", state="attached")  # no key form: logged in
            assert "key=" not in page.url
            assert [c["name"] for c in context.cookies()] == ["mlop_session"]
            base, key = url.split("/ui/#key=")
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30) as api:
                deadline = time.monotonic() + 90  # a loaded machine: the mirror's first pass can take a while
                runs: list[dict[str, Any]] = []
                while time.monotonic() < deadline:  # COMPLETED once all of the run arrived through the mirror
                    runs = api.get("/api/runs", params={"project": "synced"}).json()
                    if runs and runs[0]["status"] == "COMPLETED":
                        break
                    time.sleep(0.5)
            assert runs and runs[0]["status"] == "COMPLETED", runs
            open_run(page, runs[0]["id"])
            assert page.get_attribute("#ov-status", "data-status") == "COMPLETED"
            duration = int(page.get_attribute("#ov-duration", "data-ms"))
            assert 3000 <= duration < 4500, duration
    finally:
        context.close()


def test_a_key_given_once_keeps_the_browser_logged_in(browser: Any, server: ServerProcess) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.goto(f"{server.url}/ui/#/")
        page.wait_for_selector("body[data-ready='key']", state="attached")
        page.fill("#key-input", server.key)
        page.press("#key-input", "Enter")
        page.wait_for_selector("body[data-ready='projects']", state="attached")
        (cookie,) = [c for c in context.cookies() if c["name"] == "mlop_session"]
        assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
        assert server.key not in cookie["value"]
        kept = page.evaluate(
            "() => JSON.stringify([Object.entries(sessionStorage), Object.entries(localStorage)])"
        )
        assert server.key not in kept  # the page keeps no key, only the cookie the script cannot read
        assert page.evaluate("() => document.cookie") == ""  # HttpOnly: invisible to scripts
        page.reload()
        page.wait_for_selector("body[data-ready='projects']", state="attached")  # no form again
        page.click("#logout")
        page.wait_for_selector("body[data-ready='key']", state="attached")
        page.reload()
        page.wait_for_selector("body[data-ready='key']", state="attached")  # logged out for good
    finally:
        context.close()
