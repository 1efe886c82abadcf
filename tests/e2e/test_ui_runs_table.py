"""The project page in a real browser: the runs table and the views across runs, against a real mlop-server
with runs logged by the real client (online) in one process.

What a user checks by looking: config columns the page was never told about, sorting by a column, a filter
expression (and a clear error for a bad one), groups with counts and means, brushing an axis of the
parallel-coordinates chart narrows the table, the scatter shows a point per run and opens the run on a
click, the correlation list puts the knob that mattered first; the column chooser's choice survives a reload.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlop_server.testing import ServerProcess

sys.path.insert(0, str(Path(__file__).parent))
from test_ui_browser import WAIT_MS, chromium_browser, screenshot

pytestmark = pytest.mark.slow

PROJECT = "sweep"
LRS = [0.1, 0.01, 0.001, 0.0001]
OPTIMIZERS = ["adam", "sgd", "adam"]
N = 12

# One process logs every run of the sweep through the real client, online: each run's final loss grows with
# its lr (the knob that mattered) and does not depend on its seed-drawn width.
SWEEP = f"""
import random
rng = random.Random(3)
for i in range({N}):
    lr = {LRS}[i % 4]
    opt = {OPTIMIZERS}[i % 3]
    run = mlop.init(project="{PROJECT}", name=f"trial-{{i:02d}}", dir=sys.argv[1],
                    tags=["baseline"] if i % 2 == 0 else ["sweep"],
                    config={{"lr": lr, "optimizer": opt,
                            "model": {{"depth": 2 + i % 3, "width": rng.choice([64, 128, 256])}}}})
    final = 1.0 + 10 * lr + i * 1e-4
    for step in range(20):
        run.log({{"train/loss": final + (19 - step) * 0.1, "eval/acc": 1 - final / 3}}, step=step)
    run.finish()
"""


def _expected(i: int) -> dict[str, Any]:
    return {
        "name": f"trial-{i:02d}",
        "lr": LRS[i % 4],
        "optimizer": OPTIMIZERS[i % 3],
        "baseline": i % 2 == 0,
    }


@pytest.fixture(scope="module")
def sweep(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    """The sweep's runs on the server, by name: logged once for the module."""
    tmp = tmp_path_factory.mktemp("sweep")
    script = tmp / "sweep.py"
    script.write_text("import mlop, sys\n" + SWEEP)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}
    env.update(
        MLOP_API_TOKEN=server.key,
        MLOP_HOST=server.url,
        MLOP_CONFIG_DIR=str(tmp / "config"),
        MLOP_DISABLE_SYSTEM_METRICS="1",
    )
    out = subprocess.run(
        [sys.executable, str(script), str(tmp / "runs")],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}) as api:
        runs = api.get("/api/runs", params={"project": PROJECT}).json()
    assert len(runs) == N and all(r["status"] == "COMPLETED" for r in runs)
    return {r["name"]: r["id"] for r in runs}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium_browser()


@pytest.fixture(scope="module")
def page(browser: Any, server: ServerProcess, sweep: dict[str, int]) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{server.url}/ui/#key={server.key}")
    page.wait_for_selector("body[data-ready]")
    open_project(page)
    yield page
    context.close()
    assert not errors, errors


def open_project(page: Any) -> None:
    page.evaluate(
        "where => { delete document.body.dataset.ready;"
        " delete (document.getElementById('across') || {dataset: {}}).dataset.drawn;"
        " if (location.hash === where) mlop.route(); else location.hash = where; }",
        f"#/p/{PROJECT}",
    )
    page.wait_for_selector("body[data-ready='runs']")
    page.wait_for_selector("#across[data-drawn]")


def names(page: Any) -> list[str]:
    return page.eval_on_selector_all(
        "[data-testid=runs-table] tbody tr.run",
        "rows => rows.map(r => r.querySelector('td.name a').textContent)",
    )


def column(page: Any, col: str) -> list[str]:
    return page.eval_on_selector_all(
        "[data-testid=runs-table] tbody tr.run",
        "(rows, col) => rows.map(r => r.querySelector(`td[data-col='${col}']`).textContent)",
        col,
    )


def wait_rows(page: Any, count: int) -> None:
    page.wait_for_function(
        "n => document.querySelectorAll('[data-testid=runs-table] tbody tr.run').length === n", arg=count
    )


def set_filter(page: Any, text: str) -> None:
    page.fill("[data-testid=runs-filter]", text)
    page.evaluate("() => { delete document.getElementById('across').dataset.drawn; }")
    page.press("[data-testid=runs-filter]", "Enter")
    page.wait_for_selector("#across[data-drawn]")


def test_config_columns_sort_and_filter(page: Any, sweep: dict[str, int]) -> None:
    heads = page.eval_on_selector_all(
        "[data-testid=runs-table] thead th[data-col]", "ths => ths.map(t => t.dataset.col)"
    )
    # columns from the runs' own config and metrics, which the page was never told about
    for col in (
        "config.lr",
        "config.optimizer",
        "config.model.depth",
        "config.model.width",
        "summary.train/loss",
    ):
        assert col in heads
    assert sorted(names(page)) == sorted(sweep)
    lr_cells = (
        "() => [...document.querySelectorAll(\"td[data-col='config.lr']\")].map(td => Number(td.title))"
    )
    page.click("th[data-col='config.lr']")  # a first click sorts ascending, a second descending
    # the first row (trial-11, the newest) has the least lr already: wait for the whole column in order
    page.wait_for_function(f"() => ({lr_cells})().every((v, i, a) => i === 0 || a[i - 1] <= v)")
    lrs = page.evaluate(lr_cells)
    assert lrs == sorted(lrs) and len(lrs) == N
    page.click("th[data-col='config.lr']")
    page.wait_for_function(f"() => ({lr_cells})()[0] === 0.1")
    lrs = page.evaluate(lr_cells)
    assert lrs == sorted(lrs, reverse=True) and lrs[:3] == [0.1] * 3

    set_filter(page, 'lr < 0.01 and "baseline" in tags')
    want = sorted(e["name"] for e in map(_expected, range(N)) if e["lr"] < 0.01 and e["baseline"])
    wait_rows(page, len(want))
    assert sorted(names(page)) == want
    set_filter(page, "lr <")
    page.wait_for_selector("[data-testid=runs-filter].invalid")
    assert "position 4" in page.inner_text("[data-testid=runs-filter-error]")
    set_filter(page, "")
    wait_rows(page, N)
    assert page.inner_text("[data-testid=runs-filter-error]") == ""
    screenshot(page, "runs-table-sweep")


def test_groups_by_a_config_value(page: Any) -> None:
    page.select_option("[data-testid=group-by]", "config.optimizer")
    page.wait_for_selector("[data-testid=groups-table]")
    groups = page.eval_on_selector_all(
        "[data-testid=groups-table] tr.group",
        "rows => rows.map(r => [JSON.parse(r.dataset.group), "
        "Number(r.querySelector('[data-count]').textContent), "
        "Number(r.querySelector(\"td[data-metric='summary.train/loss.last']\").dataset.mean)])",
    )
    runs = [_expected(i) for i in range(N)]
    for value, count, mean in groups:
        members = [i for i, r in enumerate(runs) if r["optimizer"] == value]
        assert count == len(members)
        assert mean == pytest.approx(sum(1.0 + 10 * LRS[i % 4] + i * 1e-4 for i in members) / len(members))
    assert sorted(g[0] for g in groups) == ["adam", "sgd"]
    page.select_option("[data-testid=group-by]", "")


def test_brushing_an_axis_filters_the_table(page: Any) -> None:
    hit = page.query_selector("[data-testid=parallel-coordinates] .axis[data-axis='config.lr'] rect.hit")
    box = hit.bounding_box()
    x = box["x"] + box["width"] / 2
    # lr spans 1e-4..1e-1 on a log axis: the lower half holds 1e-4 and 1e-3
    page.evaluate("() => { delete document.getElementById('across').dataset.drawn; }")
    page.mouse.move(x, box["y"] + box["height"] - 2)
    page.mouse.down()
    page.mouse.move(x, box["y"] + box["height"] * 0.55, steps=5)
    page.mouse.up()
    page.wait_for_selector("#across[data-drawn]")
    want = sorted(e["name"] for e in map(_expected, range(N)) if e["lr"] <= 0.001)
    wait_rows(page, len(want))
    assert sorted(names(page)) == want
    assert page.get_attribute("[data-testid=parallel-coordinates]", "data-kept") == str(len(want))
    assert page.get_attribute("[data-testid=scatter]", "data-points") == str(len(want))
    screenshot(page, "across-runs-brushed")
    page.evaluate("() => { delete document.getElementById('across').dataset.drawn; }")
    page.click("#clear-brushes")
    page.wait_for_selector("#across[data-drawn]")
    wait_rows(page, N)


def test_scatter_and_correlation_show_the_right_runs(page: Any, sweep: dict[str, int]) -> None:
    points = page.eval_on_selector_all(
        "[data-testid=scatter] circle.point", "cs => cs.map(c => [c.dataset.name, Number(c.dataset.run)])"
    )
    assert sorted(map(tuple, points)) == sorted(sweep.items())
    read = (
        "ls => ls.map(l => [l.dataset.column, l.dataset.rho === '' ? null : Number(l.dataset.rho), "
        "Number(l.dataset.n)])"
    )
    # the first of the user's own metrics is picked at first: eval/acc falls as lr grows
    assert page.get_attribute("[data-testid=param-correlation]", "data-metric") == "summary.eval/acc.last"
    first = page.eval_on_selector_all("[data-testid=param-correlation] li", read)
    assert first[0][0] == "config.lr" and first[0][1] < -0.9
    page.evaluate(
        "() => { delete document.getElementById('across').dataset.drawn;"
        " delete document.body.dataset.ready; }"
    )
    page.select_option("[data-testid=metric-pick]", "summary.train/loss")
    page.wait_for_selector("body[data-ready='runs']")
    page.wait_for_selector("[data-testid=param-correlation][data-metric='summary.train/loss.last']")
    knobs = page.eval_on_selector_all("[data-testid=param-correlation] li", read)
    assert page.get_attribute("[data-testid=param-correlation]", "data-metric") == "summary.train/loss.last"
    assert knobs[0][0] == "config.lr" and knobs[0][1] > 0.9 and knobs[0][2] == N
    assert {k[0] for k in knobs} == {"config.lr", "config.model.depth", "config.model.width"}
    assert all(abs(k[1]) < knobs[0][1] for k in knobs[1:] if k[1] is not None)
    name, run_id = points[-1]  # drawn last: on top of any point at the same place
    page.hover(f"[data-testid=scatter] circle[data-run='{run_id}']")
    assert name in page.inner_text("#scatter-tip")
    page.evaluate("() => { delete document.body.dataset.ready; }")
    page.click(f"[data-testid=scatter] circle[data-run='{run_id}']")
    page.wait_for_function("id => location.hash === '#/run/' + id", arg=run_id)
    open_project(page)


def test_a_page_left_while_loading_never_draws_over_the_next(page: Any, sweep: dict[str, int]) -> None:
    """A run opened and left for the project before it loaded (its answer held back 0.8 s here): the project
    page is the one left on screen, with its table and views, once the late run page has come and gone."""
    run_id = sweep["trial-00"]
    pattern = f"**/api/runs/{run_id}"

    def slow(route: Any) -> None:
        time.sleep(0.8)
        route.continue_()

    page.route(pattern, slow)
    try:
        page.evaluate("id => { delete document.body.dataset.ready; location.hash = '#/run/' + id; }", run_id)
        open_project(page)
        page.wait_for_timeout(1500)  # past the held-back answer: a stale run page would be drawn by now
        assert page.evaluate("location.hash") == f"#/p/{PROJECT}"
        assert page.get_attribute("body", "data-ready") == "runs"
        assert page.query_selector("#columns-button") is not None
        assert page.query_selector("#across[data-drawn]") is not None
        assert sorted(names(page)) == sorted(sweep)
    finally:
        page.unroute(pattern, slow)


def test_the_column_chooser_is_kept_on_the_server(page: Any, server: ServerProcess) -> None:
    page.click("#columns-button")
    chooser = "[data-testid=column-chooser]"
    page.wait_for_selector(f"{chooser} li[data-col='config.model.width']")
    index = page.eval_on_selector_all(f"{chooser} li", "ls => ls.map(l => l.dataset.col)").index(
        "config.model.width"
    )
    page.click(f"{chooser} li[data-col='config.model.width'] button[data-hide='{index}']")
    page.select_option(f"{chooser} select[data-agg='summary.train/loss']", "min")
    page.wait_for_function("() => !document.querySelector(\"th[data-col='config.model.width']\")")
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}) as api:
        saved = api.get("/api/projects/settings", params={"project": PROJECT, "name": "columns"}).json()[
            "value"
        ]
    assert "config.model.width" not in saved["columns"] and saved["aggs"]["summary.train/loss"] == "min"
    page.reload()
    page.wait_for_selector("body[data-ready='runs']")
    heads = page.eval_on_selector_all(
        "[data-testid=runs-table] thead th[data-col]", "ths => ths.map(t => t.dataset.col)"
    )
    assert "config.model.width" not in heads and "config.lr" in heads
    mins = sorted(float(v) for v in column(page, "summary.train/loss"))
    assert mins[0] == pytest.approx(
        1.0 + 10 * 0.0001 + 3e-4, abs=1e-3
    )  # the min of trial-03's loss, its last step


def test_a_running_runs_status_follows_in_the_table(page: Any, server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}) as api:
        run_id = api.post("/api/runs/create", json={"runName": "live", "projectName": "live-table"}).json()[
            "runId"
        ]
        page.evaluate("() => { delete document.body.dataset.ready; location.hash = '#/p/live-table'; }")
        page.wait_for_selector("body[data-ready='runs']")
        status = f"[data-testid=runs-table] tr[data-run='{run_id}'] .status"
        assert page.get_attribute(status, "data-status") == "RUNNING"
        api.post("/api/runs/status/update", json={"runId": run_id, "status": "COMPLETED"}).raise_for_status()
        page.wait_for_selector(f"{status}[data-status='COMPLETED']", timeout=15_000)  # the 5 s poll
    open_project(page)
