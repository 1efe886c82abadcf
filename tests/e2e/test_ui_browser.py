"""The dashboard in a real browser: headless Chromium against a real mlop-server, runs logged by the client.

What a user checks by looking: the runs table lists the runs with their statuses, a run page draws the
logged values, an image logged at step 3 shows at step 3, tags edited in the page reach the run, and a live
run's chart grows while it runs. Chart data are read from the page (what uPlot was given), not from pixels.
"""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from mlop._data._video import mp4_available
from mlop_server.testing import ServerProcess

pytestmark = pytest.mark.slow

CHROMIUM: Final = os.environ.get("MLOP_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS: Final = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Screenshots of the main pages, kept as test artifacts (the folder is not tracked).
ARTIFACTS: Final = Path(__file__).resolve().parents[2] / "bench" / "out" / "screenshots"


def chromium_browser() -> Iterator[Any]:
    """A launched Chromium; skips (fails under CI) when there is none."""
    if not Path(CHROMIUM).exists():
        message = f"no Chromium at {CHROMIUM}: apt-get install chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=60_000)
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page screenshot under ``bench/out/screenshots``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


WAIT_MS = 30_000

TRAIN = """
import numpy as np
mode = os.environ["MODE"]
run = mlop.init(project="ui", name=mode, dir=sys.argv[1], tags=["t-" + mode], config={"lr": 0.01})
for step in range(50):
    run.log({"train/loss": 1.0 / (step + 1), "eval/acc": step / 50}, step=step)
    if mode == "done" and step < 6:
        run.log({"sample": mlop.Image(np.full((8, 8, 3), (step * 40, 0, 0), dtype=np.uint8)),
                 "notes": mlop.Text(f"notes of step {step}")}, step=step)
    if mode == "done" and step == 5:  # 8 frames of 16 x 16 at 4 fps: MP4 where the encoder is installed
        run.log({"clip": mlop.Video(np.zeros((8, 3, 16, 16), dtype=np.uint8), rate=4)}, step=step)
if mode == "done":
    run.log({"weights": mlop.Histogram(np.arange(50) % 5, bins=5)}, step=49)
    run.log({"weights": mlop.Histogram(np.arange(100) % 7, bins=7),
             "preds": mlop.Table(data=[[1, "cat"], [2, "dog"]], columns=["id", "label"])}, step=50)
    print("hello from the done run")
    print("a second line")
    time.sleep(0.3)
if mode == "failed":
    raise ValueError("boom")
if mode == "killed":
    time.sleep(1)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
run.finish()
"""

LIVE = """
stop = os.path.join(sys.argv[1], "stop")
run = mlop.init(project="live", name="live", dir=sys.argv[1])
step = 0
deadline = time.time() + 90
while not os.path.exists(stop) and time.time() < deadline:
    run.log({"train/loss": 1.0 / (step + 1)}, step=step)
    step += 1
    time.sleep(0.1)
run.finish()
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium_browser()


@pytest.fixture
def page(browser: Any, server: ServerProcess) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{server.url}/ui/#key={server.key}")
    page.wait_for_selector("body[data-ready]")
    assert "key=" not in page.url  # the key was traded for a session cookie and dropped from the address
    yield page
    context.close()
    assert not errors, errors


def open_hash(page: Any, where: str, ready: str) -> None:
    page.evaluate(
        "where => { delete document.body.dataset.ready; "
        "if (location.hash === where) mlop.route(); else location.hash = where; }",
        where,
    )
    page.wait_for_selector(f"body[data-ready='{ready}']")


def test_runs_table_run_page_media_and_tags(online: Any, page: Any) -> None:
    procs = {
        mode: online.spawn("import signal\n" + TRAIN, env=online.env(MODE=mode))
        for mode in ("done", "failed", "killed")
    }
    outputs = {mode: proc.communicate(timeout=120) for mode, proc in procs.items()}
    runs = {r["name"]: r for r in online.api.get("/api/runs", params={"project": "ui"}).json()}
    assert set(runs) == set(procs), (runs, outputs)
    for name, status in (("done", "COMPLETED"), ("failed", "FAILED"), ("killed", "TERMINATED")):
        assert online.wait_status(runs[name]["id"], {status})["status"] == status

    open_hash(page, "#/", "projects")
    assert "ui" in page.inner_text("#projects")
    open_hash(page, "#/p/ui", "runs")
    shown = page.eval_on_selector_all(
        "#runs tbody tr.run",
        "rows => rows.map(r => [r.querySelector('a').textContent, "
        "r.querySelector('.status').dataset.status])",
    )
    assert sorted(shown) == [["done", "COMPLETED"], ["failed", "FAILED"], ["killed", "TERMINATED"]]
    page.fill("[data-testid=runs-filter]", 'status == "FAILED"')
    page.press("[data-testid=runs-filter]", "Enter")
    page.wait_for_function("() => document.querySelectorAll('#runs tbody tr.run').length === 1")
    assert page.eval_on_selector_all("#runs tbody tr a", "links => links.map(a => a.textContent)") == [
        "failed"
    ]
    page.fill("[data-testid=runs-filter]", "")
    page.press("[data-testid=runs-filter]", "Enter")
    page.wait_for_function("() => document.querySelectorAll('#runs tbody tr.run').length === 3")
    last = page.eval_on_selector_all(  # the user's metrics are columns by themselves (their last value)
        "#runs tbody tr.run",
        "rows => rows.map(r => r.querySelector('[data-col=\"summary.train/loss\"]').textContent)",
    )
    assert last == ["0.02"] * 3  # 1 / 50, the last logged value of every run
    screenshot(page, "runs-table")

    run_id = runs["done"]["id"]
    page.click(f"#runs a[href='#/run/{run_id}']")
    page.wait_for_selector("body[data-ready='run-charts']")
    charts = page.evaluate(
        "() => Object.fromEntries(Object.entries(mlop.charts).map(([k, c]) => "
        "[k, {steps: c.steps, values: c.values, drawn: c.plot.data[1]}]))"
    )
    assert set(charts) == {"train/loss", "eval/acc"}
    loss = charts["train/loss"]
    assert loss["steps"] == list(range(50))
    assert all(math.isclose(v, 1.0 / (s + 1)) for s, v in zip(loss["steps"], loss["values"], strict=True))
    assert loss["drawn"] == loss["values"]  # what uPlot was given, unsmoothed
    assert page.eval_on_selector_all(
        "section[data-group]:not([hidden])", "s => s.map(x => x.dataset.group)"
    ) == [
        "eval",
        "train",
    ]
    screenshot(page, "run-charts")
    page.select_option("select[aria-label='x axis']", "relative")
    xs = page.evaluate("() => mlop.charts['train/loss'].plot.data[0]")
    assert xs[0] == 0 and xs == sorted(xs) and xs[-1] < 120  # seconds from the run's first point
    page.eval_on_selector(
        "input[aria-label='smoothing']", "el => { el.value = '0.9'; el.dispatchEvent(new Event('input')); }"
    )
    smoothed = page.evaluate("() => mlop.charts['train/loss'].plot.data[1]")
    assert smoothed[0] == loss["values"][0] and smoothed[-1] > loss["values"][-1]  # EMA lags the fall
    page.eval_on_selector(
        "input[aria-label='smoothing']", "el => { el.value = '0'; el.dispatchEvent(new Event('input')); }"
    )
    page.select_option("select[aria-label='x axis']", "step")

    page.click("nav.tabs button[data-tab='media']")
    page.wait_for_selector("body[data-ready='run-media']")
    steps = list(range(6))
    page.eval_on_selector(
        "#media-step",
        "(el, i) => { el.value = String(i); el.dispatchEvent(new Event('input')); }",
        steps.index(3),
    )
    page.wait_for_selector(".media[data-step='3'] img[data-step='3']")
    page.wait_for_function("() => document.querySelector('.media img').complete")
    red = page.eval_on_selector(
        ".media img",
        "img => { const c = document.createElement('canvas'); c.width = img.naturalWidth; "
        "c.height = img.naturalHeight; const g = c.getContext('2d'); g.drawImage(img, 0, 0); "
        "return Array.from(g.getImageData(4, 4, 1, 1).data); }",
    )
    assert red == [120, 0, 0, 255]
    assert page.inner_text("pre.text[data-step='3']") == "notes of step 3"
    if mp4_available():  # a small MP4 plays in a player wide enough to show its controls
        page.eval_on_selector(
            "#media-step", "el => { el.value = '5'; el.dispatchEvent(new Event('input')); }"
        )
        page.wait_for_function(
            "() => { const v = document.querySelector('.media video[data-key=clip]');"
            " return v && v.readyState >= 1; }"
        )
        video = page.eval_on_selector(
            ".media video[data-key=clip]",
            "v => ({duration: v.duration, width: v.videoWidth, shown: v.clientWidth, controls: v.controls})",
        )
        assert video["width"] == 16 and abs(video["duration"] - 2.0) < 0.3, video
        assert video["controls"] and video["shown"] >= 240, video
        page.eval_on_selector(".media video[data-key=clip]", "v => { v.muted = true; return v.play(); }")
        page.wait_for_function("() => document.querySelector('.media video[data-key=clip]').currentTime > 0")
    screenshot(page, "run-media")

    page.fill("#tags-input", "t-done, best, lr 0.01")
    page.click("#tags-save")
    page.wait_for_selector("#tags-note:text('saved')")
    assert online.api.get(f"/api/runs/{run_id}").json()["tags"] == ["t-done", "best", "lr 0.01"]

    page.click("nav.tabs button[data-tab='histograms']")
    page.wait_for_selector("body[data-ready='run-histograms']", state="attached")
    page.wait_for_selector(".histogram .uplot")
    page.wait_for_selector("[data-testid=histogram-heatmap] canvas")  # every step at once
    page.click("nav.tabs button[data-tab='tables']")
    page.wait_for_selector("body[data-ready='run-tables']", state="attached")
    assert "dog" in page.inner_text("#pane table")
    open_hash(page, f"#/run/{run_id}/logs", "run-logs")  # a link straight to a tab
    assert "hello from the done run" in page.inner_text("pre.logs")
    page.fill("#log-search", "second")
    assert page.inner_text("pre.logs").strip() == "a second line"
    page.click("nav.tabs button[data-tab='config']")
    page.wait_for_selector("body[data-ready='run-config']", state="attached")
    assert '"lr": 0.01' in page.inner_text("#pane")

    open_hash(page, "#/p/ui", "runs")  # select two runs in the table and compare them
    page.check(f"#runs input[data-select='{run_id}']")
    page.check(f"#runs input[data-select='{runs['failed']['id']}']")
    page.click("#compare")
    page.wait_for_selector("body[data-ready='compare']", state="attached")
    assert sorted(page.url.split("#/compare/")[1].split(",")) == sorted(
        [str(run_id), str(runs["failed"]["id"])]
    )
    series = page.evaluate("() => mlop.charts['train/loss'].plot.data.length")
    assert series == 3  # x and one line per run
    screenshot(page, "compare")


def test_runs_table_shows_each_runs_summary(online: Any, page: Any) -> None:
    online.run(
        """
for name, loss in (("small", 0.25), ("large", 2.5)):
    run = mlop.init(project="summed", name=name, dir=sys.argv[1])
    run.log({"loss": loss}, step=0)
    run.summary["train_loss"] = loss
    run.summary["eval"] = {"acc": 1.0 - loss / 10}
    if name == "small":
        run.summary["note"] = "best"
    run.finish()
mlop.init(project="summed", name="none", dir=sys.argv[1]).finish()
"""
    )
    runs = online.api.get("/api/runs", params={"project": "summed"}).json()
    assert {r["name"]: r["summary"].get("train_loss") for r in runs} == {
        "small": 0.25,
        "large": 2.5,
        "none": None,
    }
    open_hash(page, "#/p/summed", "runs")
    summary = ["summary.eval/acc", "summary.note", "summary.train_loss"]
    heads = page.eval_on_selector_all(
        "#runs th[data-col^='summary.']", "ths => ths.map(th => th.dataset.col)"
    )
    assert [h for h in heads if h in summary] == summary  # run.summary's keys are columns
    page.click("#runs th[data-col='summary.train_loss']")  # ascending
    page.wait_for_function("() => document.querySelector('#runs tbody tr.run a').textContent === 'small'")
    cells = page.eval_on_selector_all(
        "#runs tbody tr.run",
        "(rows, cols) => rows.map(r => [r.querySelector('a').textContent, "
        "...cols.map(c => r.querySelector(`td[data-col='${c}']`).textContent)])",
        summary,
    )
    assert cells == [
        ["small", "0.975", "best", "0.25"],
        ["large", "0.75", "-", "2.5"],
        ["none", "-", "-", "-"],  # a run without a summary sorts last
    ]
    screenshot(page, "runs-table-summary")


def test_a_live_runs_chart_grows(online: Any, page: Any) -> None:
    proc = online.spawn(LIVE)
    try:
        run = online.server_run("live", timeout=60)
        open_hash(page, f"#/run/{run['id']}", "run-charts")
        if run["status"] == "RUNNING":
            page.wait_for_function("() => mlop.charts['train/loss']")
            first = page.evaluate("() => mlop.charts['train/loss'].steps.length")
            page.wait_for_function(
                "n => mlop.charts['train/loss'] && mlop.charts['train/loss'].steps.length > n + 5", arg=first
            )
            open_hash(page, f"#/compare/{run['id']}", "compare")  # the compare page follows it too
            first = page.evaluate("() => mlop.charts['train/loss'].steps.length")
            page.wait_for_function("n => mlop.charts['train/loss'].steps.length > n + 5", arg=first)
            open_hash(page, f"#/run/{run['id']}", "run-charts")
        (online.runs_dir / "stop").parent.mkdir(parents=True, exist_ok=True)
        (online.runs_dir / "stop").touch()
        proc.communicate(timeout=60)
        page.wait_for_selector("#run-status[data-status='COMPLETED']")
        final = page.evaluate("() => mlop.charts['train/loss'].steps")
        logged = online.steps(run["id"], "train/loss")
        assert final == logged  # under 1,000 points: every point as logged, the last ones too
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)


def test_without_a_key_the_page_asks_for_one(browser: Any, server: ServerProcess) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.goto(f"{server.url}/ui/#/p/ui")
        page.wait_for_selector("body[data-ready='key']", state="attached")
        page.fill("#key-input", "mlps_not_a_key_of_this_server")
        page.press("#key-input", "Enter")
        page.wait_for_selector("form.keyform :text('refused')")
        page.fill("#key-input", server.key)
        page.press("#key-input", "Enter")
        page.wait_for_selector("body[data-ready='runs']", state="attached")
        assert [c["name"] for c in context.cookies()] == ["mlop_session"]  # a session, not the key, is kept
    finally:
        context.close()


def test_a_wide_run_draws_its_first_charts_at_once_and_the_rest_near_the_view(online: Any, page: Any) -> None:
    online.run(
        """
run = mlop.init(project="wide", name="wide", dir=sys.argv[1])
for step in range(3):
    run.log({f"layer/{k:03d}": k + step for k in range(80)}, step=step)
run.finish()
"""
    )
    run = online.server_run("wide")
    open_hash(page, f"#/run/{run['id']}", "run-charts")
    page.wait_for_function("() => Object.keys(mlop.charts).length >= 64")
    assert page.evaluate("() => Object.keys(mlop.charts).length") == 64
    page.evaluate("() => window.scrollTo(0, document.body.scrollHeight)")
    page.wait_for_function("() => mlop.charts['layer/079']")
    page.eval_on_selector(".chart[data-key='layer/064']", "box => box.scrollIntoView()")
    page.wait_for_function("() => Object.keys(mlop.charts).length === 80")
    assert page.evaluate("() => mlop.charts['layer/079'].values") == [79, 80, 81]


def test_a_run_cancelled_from_its_page_stops(online: Any, page: Any) -> None:
    proc = online.spawn(LIVE.replace('project="live"', 'project="cancel"'))
    try:
        run = online.server_run("cancel", timeout=60)
        open_hash(page, f"#/run/{run['id']}", "run-charts")
        page.click("#run-cancel")
        page.wait_for_selector("#run-status[data-status='CANCELLED']")
        assert online.api.get(f"/api/runs/{run['id']}").json()["status"] == "CANCELLED"
        (online.runs_dir / "stop").touch()
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
