"""What a user arranges on the dashboard, kept for the project, in headless Chromium against a real
mlop-server with runs logged by the real client: the parallel-coordinates chart's own axes (picked, moved,
dragged, the metric of the last axis) and the chart groups of the run page dragged into another order.
Both survive a reload, and a brush on a picked axis still narrows the runs table.
"""

# ruff: noqa: F401, F811  (the fixtures of test_ui_runs_table, imported below, are the tests' parameters)
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from mlop_server.testing import ServerProcess

sys.path.insert(0, str(Path(__file__).parent))
from test_ui_browser import open_hash, screenshot
from test_ui_charts import groups, spawn
from test_ui_runs_table import (  # the sweep's runs and a page on its project (fixtures)
    PROJECT,
    N,
    _expected,
    browser,
    names,
    open_project,
    page,
    sweep,
    wait_rows,
)

pytestmark = pytest.mark.slow

AXES = "[data-testid=parallel-coordinates] .axis"
PICKER = "[data-testid=axis-picker]"


def axes(page: Any) -> list[str]:
    found: list[str] = page.eval_on_selector_all(AXES, "gs => gs.map(g => g.dataset.axis)")
    return found


def saved(server: ServerProcess, project: str, name: str, want: Any, timeout: float = 10) -> Any:
    """The project's setting as the server keeps it, once it equals ``want`` (else what it was at the end)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}) as api:
        while True:
            answer = api.get("/api/projects/settings", params={"project": project, "name": name})
            value = answer.json()["value"]
            if value == want or time.monotonic() > deadline:
                return value
            time.sleep(0.1)


def redrawn(page: Any, action: Any) -> None:
    """Do ``action`` and wait until the views across runs are drawn again."""
    page.evaluate("() => { delete document.getElementById('across').dataset.drawn; }")
    action()
    page.wait_for_selector("#across[data-drawn]")


def brush_lower_half(page: Any, axis: str) -> None:
    box = page.locator(f"{AXES}[data-axis='{axis}'] rect.hit").bounding_box()
    x = box["x"] + box["width"] / 2
    page.mouse.move(x, box["y"] + box["height"] - 2)
    page.mouse.down()
    page.mouse.move(x, box["y"] + box["height"] * 0.55, steps=5)
    page.mouse.up()


def drag_sideways(page: Any, axis: str, onto: str) -> None:
    """Drag an axis of the chart by its name to where the axis ``onto`` stands."""
    start = page.locator(f"{AXES}[data-axis='{axis}'] text.axis-label").bounding_box()
    end = page.locator(f"{AXES}[data-axis='{onto}'] text.axis-label").bounding_box()
    y = start["y"] + start["height"] / 2
    page.mouse.move(start["x"] + start["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(end["x"] + end["width"] / 2, y, steps=8)
    page.mouse.up()


def test_picked_axes_change_the_chart_and_survive_a_reload(page: Any, server: ServerProcess) -> None:
    table_config = page.eval_on_selector_all(
        "[data-testid=runs-table] thead th[data-col^='config.']", "ths => ths.map(t => t.dataset.col)"
    )
    # at first the chart follows the table's config columns, the metric last
    assert axes(page) == [*table_config, "summary.eval/acc.last"]
    assert set(table_config) == {"config.lr", "config.optimizer", "config.model.depth", "config.model.width"}
    page.click("#axes-button")
    page.wait_for_selector(f"{PICKER} li[data-axis]")
    # take optimizer off, drag lr after width, make train/loss the last axis
    redrawn(page, lambda: page.click(f"{PICKER} li[data-axis='config.optimizer'] button[data-remove]"))
    picked = [a for a in table_config if a != "config.optimizer"]
    assert axes(page)[:-1] == picked
    redrawn(
        page,
        lambda: page.drag_and_drop(
            f"{PICKER} li[data-axis='config.lr']", f"{PICKER} li[data-axis='{picked[-1]}']"
        ),
    )
    picked = [a for a in picked if a != "config.lr"] + ["config.lr"]
    assert axes(page)[:-1] == picked
    redrawn(page, lambda: page.select_option("[data-testid=metric-pick]", "summary.train/loss"))
    # on the chart itself: lr dragged sideways by its name onto the first axis goes first
    redrawn(page, lambda: drag_sideways(page, "config.lr", picked[0]))
    picked = ["config.lr", *picked[:-1]]
    want = [*picked, "summary.train/loss.last"]
    assert axes(page) == want
    assert saved(server, PROJECT, "across", {"axes": picked, "metric": "summary.train/loss"}) == {
        "axes": picked,
        "metric": "summary.train/loss",
    }
    # the table keeps its own columns
    assert (
        page.eval_on_selector_all(
            "[data-testid=runs-table] thead th[data-col^='config.']", "ths => ths.map(t => t.dataset.col)"
        )
        == table_config
    )

    page.reload()
    page.wait_for_selector("body[data-ready='runs']")
    page.wait_for_selector("#across[data-drawn]")
    assert axes(page) == want
    assert page.input_value("[data-testid=metric-pick]") == "summary.train/loss"

    # brushing a picked axis still narrows the table; taking the axis off lets every run back
    redrawn(page, lambda: brush_lower_half(page, "config.lr"))
    kept = sorted(e["name"] for e in map(_expected, range(N)) if e["lr"] <= 0.001)
    wait_rows(page, len(kept))
    assert sorted(names(page)) == kept
    page.click("#axes-button")
    redrawn(page, lambda: page.click(f"{PICKER} li[data-axis='config.lr'] button[data-remove]"))
    wait_rows(page, N)
    assert "config.lr" not in axes(page)
    assert page.get_attribute("[data-testid=parallel-coordinates]", "data-kept") == str(N)
    # "follow the table" gives the table's config columns back
    redrawn(page, lambda: page.click(f"{PICKER} button[data-action='follow']"))
    assert axes(page) == [*table_config, "summary.train/loss.last"]
    assert saved(server, PROJECT, "across", {"axes": None, "metric": "summary.train/loss"})["axes"] is None
    open_project(page)


GROUPED = """
run = mlop.init(project="drag", name="groups", dir=sys.argv[1])
for step in range(10):
    run.log({"train/loss": 1 / (step + 1), "val/acc": step / 10, "eval/f1": step / 20, "lr": 0.1}, step=step)
run.finish()
"""


def test_a_group_dragged_to_another_place_stays_there_after_a_reload(
    page: Any, server: ServerProcess, tmp_path: Path
) -> None:
    proc = spawn(tmp_path, server, GROUPED)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}) as api:
        (run,) = api.get("/api/runs", params={"project": "drag"}).json()
    # every group's heading in view: a drag that has to scroll the page is lost by the automation
    page.set_viewport_size({"width": 1400, "height": 1600})
    open_hash(page, f"#/run/{run['id']}/charts", "run-charts")
    shown = lambda: [g[0] for g in groups(page)]  # noqa: E731
    assert shown() == ["eval", "metrics", "train", "val"]
    head = "[data-testid=panel-group][data-group='{}'] > h2"
    # dragged down onto train, eval goes after it; dragged up onto metrics, val goes before it
    page.drag_and_drop(head.format("eval"), head.format("train"))
    assert shown() == ["metrics", "train", "eval", "val"]
    page.drag_and_drop(head.format("val"), head.format("metrics"))
    assert shown() == ["val", "metrics", "train", "eval"]
    order = ["val", "metrics", "train", "eval"]
    assert saved(server, "drag", "layout", {"order": order, "collapsed": {}, "pinned": []})["order"] == order
    # the buttons still move a group, for the keyboard
    page.click(head.format("eval") + " [data-action='up']")
    assert shown() == ["val", "metrics", "eval", "train"]
    page.wait_for_selector("#layout-note:text('layout saved')")
    order = ["val", "metrics", "eval", "train"]
    assert saved(server, "drag", "layout", {"order": order, "collapsed": {}, "pinned": []})["order"] == order
    page.reload()
    page.wait_for_selector("body[data-ready='run-charts']", state="attached")
    assert shown() == order
    assert page.evaluate("() => Object.keys(mlop.charts).sort()") == [
        "eval/f1",
        "lr",
        "train/loss",
        "val/acc",
    ]
    screenshot(page, "charts-dragged")
    page.set_viewport_size({"width": 1400, "height": 1000})
    open_project(page)
