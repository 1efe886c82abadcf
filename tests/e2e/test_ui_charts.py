"""The run page's charts, media and model graph, and the compare page, in headless Chromium.

A real mlop-server, runs logged by the real client (one with ``run.watch`` on a small torch model), and what
a user checks by looking: groups in order with the system's and the watch's collapsed, a layout that
survives a reload and is the project's (another browser sees it), a spike inside a downsampled series still
drawn, a live run's image showing without a reload, the model graph as nodes and edges, the histogram heat
map, a sortable table, the tooltip of a compare chart. Chart data are read from the page (what uPlot was
given) and, for the spike, from the canvas's pixels.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.e2e.test_ui_browser import WAIT_MS, chromium_browser, open_hash, screenshot
from tests.e2e.uiproc import mlop_ui

from mlop_server.testing import ServerProcess

pytestmark = pytest.mark.slow

SPIKE_AT, SPIKE_POINTS = 123_457, 200_000

RICH = """
import numpy as np
import torch
run = mlop.init(project="charts", name="rich", dir=sys.argv[1])
model = torch.nn.Sequential(
    torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Tanh()),
    torch.nn.Linear(8, 2),
)
run.watch(model, log="all", log_freq=1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = torch.randn(32, 4), torch.randn(32, 2)
for step in range(20):
    loss = ((model(x) - y) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    run.log({"train/loss": loss.item(), "val/acc": step / 20, "loss": 1 / (step + 1),
             "sys/cpu": 10.0 + step % 3, "val/huge": 123456789.5 * (1 + step)}, step=step)
    weights = np.random.default_rng(step).normal(step / 5, 1, 500)
    run.log({"weights": mlop.Histogram(weights, bins=30)}, step=step)
tone = np.sin(np.arange(2000) * 2 * np.pi * 440 / 8000).astype(np.float32)
frames = np.zeros((4, 8, 8, 3), dtype=np.uint8)
frames[:, :, :, 1] = np.arange(4)[:, None, None] * 60
run.log({"sound": mlop.Audio(tone, rate=8000), "clip": mlop.Video(frames, rate=4, format="gif")}, step=20)
run.log({"preds": mlop.Table(data=[[1, "cat", 0.5], [2, "dog", 0.25], [10, "emu", 0.75]],
                             columns=["id", "label", "p"])}, step=20)
run.finish()
"""

SPIKY = f"""
import math
run = mlop.init(project="charts", name="spiky", dir=sys.argv[1])
for step in range(20):
    run.log({{"train/loss": 2.0 / (step + 1)}}, step=step)
for s in range({SPIKE_POINTS}):
    run.log({{"train/spiky": 1000.0 if s == {SPIKE_AT} else math.sin(s / 3000)}}, step=s)
run.finish()
"""

LIVE = """
import numpy as np
stop = os.path.join(sys.argv[1], "stop")
run = mlop.init(project="livemedia", name="live", dir=sys.argv[1])
step = 0
deadline = time.time() + 90
while not os.path.exists(stop) and time.time() < deadline:
    run.log({"frame": mlop.Image(np.full((8, 8, 3), (step * 20 % 256, 90, 30), dtype=np.uint8)),
             "dist": mlop.Histogram(np.arange(50) + step, bins=10), "train/loss": 1 / (step + 1)}, step=step)
    step += 1
    time.sleep(0.3)
run.finish()
"""


def client_env(server: ServerProcess, config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}
    env.update(
        MLOP_API_TOKEN=server.key,
        MLOP_HOST=server.url,
        MLOP_CONFIG_DIR=str(config),
        MLOP_DISABLE_SYSTEM_METRICS="1",
        MLOP_X_HEARTBEAT_INTERVAL="0.5",
    )
    return env


def spawn(folder: Path, server: ServerProcess, body: str) -> subprocess.Popen[str]:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "train.py"
    script.write_text("import mlop, os, sys, time\n" + textwrap.dedent(body))
    return subprocess.Popen(
        [sys.executable, str(script), str(folder / "runs")],
        cwd=folder,
        env=client_env(server, folder / "config"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def api(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}, timeout=30
    ) as c:
        yield c


@pytest.fixture(scope="module")
def runs(
    server: ServerProcess, api: httpx.Client, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The runs "rich" (a watched torch model, histograms, a table) and "spiky" (200,000 points)."""
    tmp = tmp_path_factory.mktemp("charts")
    procs = {name: spawn(tmp / name, server, body) for name, body in (("rich", RICH), ("spiky", SPIKY))}
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, (name, err)
    found = {r["name"]: r for r in api.get("/api/runs", params={"project": "charts"}).json()}
    assert set(found) == {"rich", "spiky"}
    return {name: api.get(f"/api/runs/{run['id']}").json() for name, run in found.items()}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium_browser()


def new_page(browser: Any, server: ServerProcess) -> tuple[Any, Any, list[str]]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{server.url}/ui/#key={server.key}")
    page.wait_for_selector("body[data-ready]", state="attached")
    return context, page, errors


def forget_layout(api: httpx.Client) -> None:
    answer = api.put(
        "/api/projects/settings",
        params={"project": "charts", "name": "layout"},
        content=b"null",
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 200, answer.text


@pytest.fixture
def page(browser: Any, server: ServerProcess, api: httpx.Client) -> Iterator[Any]:
    """A page of a fresh browser context, the project's layout as it is at first."""
    forget_layout(api)
    context, page, errors = new_page(browser, server)
    yield page
    context.close()
    assert not errors, errors


GROUPS = (
    "() => [...document.querySelectorAll('[data-testid=panel-group]')].filter(s => !s.hidden)"
    ".map(s => [s.dataset.group, s.dataset.collapsed, "
    "[...s.querySelectorAll('[data-testid=chart]')].map(c => c.dataset.key)])"
)


def groups(page: Any) -> list[list[Any]]:
    found: list[list[Any]] = page.evaluate(GROUPS)
    return found


def test_groups_user_first_system_and_watch_after_collapsed(runs: dict[str, Any], page: Any) -> None:
    open_hash(page, f"#/run/{runs['rich']['id']}/charts", "run-charts")
    shown = groups(page)
    assert [g[:2] for g in shown] == [
        ["metrics", "false"],
        ["train", "false"],
        ["val", "false"],
        ["sys", "true"],
        ["grad", "true"],
    ]
    named = {g[0]: g[2] for g in shown}
    assert named["train"] == ["train/loss"] and named["val"] == ["val/acc", "val/huge"]
    # the watch's keys of one parameter stay in one group, with their nonfinite series
    assert "grad/0.weight/nonfinite" in named["grad"] and all(k.startswith("grad/") for k in named["grad"])
    drawn = page.evaluate("() => Object.keys(mlop.charts).sort()")
    assert drawn == ["loss", "train/loss", "val/acc", "val/huge"]  # collapsed groups wait until opened
    page.click("[data-group='grad'] [data-action='toggle']")
    page.wait_for_function("() => mlop.charts['grad/0.weight/nonfinite']")
    page.wait_for_selector("#layout-note:text('layout saved')")
    screenshot(page, "charts-groups")


def test_y_axis_fits_its_labels(runs: dict[str, Any], page: Any) -> None:
    open_hash(page, f"#/run/{runs['rich']['id']}/charts", "run-charts")
    fit = page.evaluate(
        """() => {
        const u = mlop.charts['val/huge'].plot;
        const labels = [...u.root.querySelectorAll('.u-axis')];
        const ctx = document.createElement('canvas').getContext('2d');
        ctx.font = u.axes[1].font[0];
        const widest = Math.max(...u.axes[1]._values.map(v => ctx.measureText(String(v)).width))
          / devicePixelRatio;
        return {left: u.bbox.left / devicePixelRatio, widest, labels: u.axes[1]._values};
    }"""
    )
    assert any("e+" in str(v) for v in fit["labels"]), fit  # long labels: 1.235e+8 and so on
    assert fit["left"] >= fit["widest"] + 4, fit


def test_a_spike_in_a_downsampled_series_is_drawn(runs: dict[str, Any], page: Any) -> None:
    open_hash(page, f"#/run/{runs['spiky']['id']}/charts", "run-charts")
    page.wait_for_function("() => mlop.charts['train/spiky']")
    got = page.evaluate(
        """() => { const c = mlop.charts['train/spiky']; const s = c.series[0];
        return {total: s.total, points: s.steps.length, roles: c.meta.map(m => m.role), bands: c.bands.length,
                hi: Math.max(...c.bands[0].hi.filter(v => v != null)), ymax: c.plot.scales.y.max}; }"""
    )
    assert got["total"] == SPIKE_POINTS and got["points"] <= 1000
    assert got["roles"] == ["line"] and got["bands"] == 1  # the band is drawn around the line
    assert got["hi"] == 1000.0 and got["ymax"] >= 1000.0

    def ink_at_spike() -> int:
        """Non-white pixels of the canvas in a small box around the spike's top."""
        found: int = page.evaluate(
            """at => { const u = mlop.charts['train/spiky'].plot;
            const x = Math.round(u.valToPos(at, 'x', true)), y = Math.round(u.valToPos(1000, 'y', true));
            const px = u.ctx.getImageData(x - 3, y, 7, 6).data;
            let ink = 0;
            for (let i = 0; i < px.length; i += 4)
              if (px[i + 3] > 0 && (px[i] < 230 || px[i + 1] < 230)) ink++;
            return ink; }""",
            SPIKE_AT,
        )
        return found

    assert ink_at_spike() > 0
    # heavy smoothing flattens the line, the band still reaches the spike
    page.eval_on_selector(
        "input[aria-label='smoothing']", "el => { el.value = '0.99'; el.dispatchEvent(new Event('input')); }"
    )
    smoothed = page.evaluate(
        """() => { const c = mlop.charts['train/spiky']; const d = c.plot.data;
        return {roles: c.meta.map(m => m.role), line: Math.max(...d[1].filter(v => v != null)),
                hi: Math.max(...c.bands[0].hi.filter(v => v != null)), ymax: c.plot.scales.y.max}; }"""
    )
    assert smoothed["roles"] == ["line", "raw"]
    assert smoothed["line"] < 100 and smoothed["hi"] == 1000.0 and smoothed["ymax"] >= 1000.0
    assert ink_at_spike() > 0
    screenshot(page, "charts-spike-smoothed")
    # "ignore outliers" is the user's choice to leave it out of the y range
    page.check("input[aria-label='ignore outliers']")
    assert page.evaluate("() => mlop.charts['train/spiky'].plot.scales.y.max") < 100
    page.uncheck("input[aria-label='ignore outliers']")
    page.eval_on_selector(
        "input[aria-label='smoothing']", "el => { el.value = '0'; el.dispatchEvent(new Event('input')); }"
    )


def test_the_layout_is_the_projects_and_survives_a_reload(
    runs: dict[str, Any], browser: Any, server: ServerProcess, api: httpx.Client, page: Any
) -> None:
    run_page = f"#/run/{runs['rich']['id']}/charts"
    open_hash(page, run_page, "run-charts")
    page.click("[data-group='train'] [data-action='toggle']")  # collapse train
    page.click("[data-group='sys'] [data-action='toggle']")  # open sys
    page.click("[data-group='val'] [data-action='up']")  # val above train
    page.click(".chart[data-key='val/acc'] [data-action='pin']")
    page.wait_for_selector("#layout-note:text('layout saved')")
    expected = [
        ["pinned", "false", ["val/acc"]],
        ["metrics", "false", ["loss"]],
        ["val", "false", ["val/huge"]],
        ["train", "true", ["train/loss"]],
        ["sys", "false", ["sys/cpu"]],
        ["grad", "true"],
    ]

    def check(where: Any) -> None:
        shown = groups(where)
        assert [g[: len(e)] for g, e in zip(shown, expected, strict=True)] == expected
        where.wait_for_function("() => mlop.charts['val/acc'] && mlop.charts['sys/cpu']")

    check(page)
    saved = api.get("/api/projects/settings", params={"project": "charts", "name": "layout"}).json()
    assert saved["value"]["pinned"] == ["val/acc"] and saved["value"]["collapsed"]["train"] is True
    page.reload()
    page.wait_for_selector("body[data-ready='run-charts']", state="attached")
    check(page)
    assert page.evaluate("() => !mlop.charts['train/loss']")  # collapsed: not drawn
    # another browser (a teammate) opens the project's other run: the same layout
    context, other, errors = new_page(browser, server)
    try:
        open_hash(other, f"#/run/{runs['spiky']['id']}/charts", "run-charts")
        assert [g[:2] for g in groups(other)] == [["train", "true"]]  # the spiky run's only group
        open_hash(other, run_page, "run-charts")
        check(other)
        screenshot(other, "charts-layout")
    finally:
        context.close()
    assert not errors, errors


def test_the_search_box_filters_by_regular_expression(runs: dict[str, Any], page: Any) -> None:
    open_hash(page, f"#/run/{runs['rich']['id']}/charts", "run-charts")
    page.fill("#chart-search", "^val/")
    assert [g[0] for g in groups(page)] == ["val"]
    page.fill("#chart-search", "nonfinite$")  # matches inside collapsed groups are shown
    shown = groups(page)
    assert [g[0] for g in shown] == ["grad"] and len(shown[0][2]) == 6
    assert page.is_visible(".chart[data-key='grad/0.weight/nonfinite']")
    page.fill("#chart-search", "val/(")  # not a regular expression: a message, matched as text
    assert "not a regular expression" in page.inner_text("#chart-search-error")
    assert [g[0] for g in groups(page)] == []
    page.fill("#chart-search", "")
    assert page.inner_text("#chart-search-error") == ""
    assert len(groups(page)) == 5


def test_the_model_graph_is_drawn_as_nodes_and_edges(runs: dict[str, Any], page: Any) -> None:
    nodes = runs["rich"]["graph"]["nodes"]
    edges = [e for n in nodes.values() for e in n.get("edges", [])]
    assert len(nodes) == 7 and edges
    open_hash(page, f"#/run/{runs['rich']['id']}/graph", "run-graph")
    graph = "[data-testid=model-graph]"
    drawn = page.eval_on_selector_all(f"{graph} g.node", "gs => gs.map(g => g.dataset.node)")
    assert sorted(drawn) == sorted(nodes)
    flow = page.eval_on_selector_all(
        f"{graph} path.edge", "ps => ps.map(p => [p.dataset.from, p.dataset.to])"
    )
    assert sorted(flow) == sorted(edges)
    assert "weight [8, 4]" in page.eval_on_selector(f"{graph} g.node[data-node='0']", "g => g.textContent")
    screenshot(page, "model-graph")
    # fold the inner Sequential: its two children go, the flow goes through it
    page.click(f"{graph} g.node[data-node='2'] text.clusterlabel")
    drawn = page.eval_on_selector_all(f"{graph} g.node", "gs => gs.map(g => g.dataset.node)")
    assert sorted(drawn) == [".", "0", "1", "2", "3"]
    flow = page.eval_on_selector_all(
        f"{graph} path.edge", "ps => ps.map(p => [p.dataset.from, p.dataset.to])"
    )
    assert sorted(flow) == [["0", "1"], ["1", "2"], ["2", "3"]]
    assert "72 params" in page.eval_on_selector(f"{graph} g.node[data-node='2']", "g => g.textContent")
    before = page.get_attribute(f"{graph} g.viewport", "transform")
    page.hover(f"{graph} svg")
    page.mouse.wheel(0, -400)
    zoomed = page.get_attribute(f"{graph} g.viewport", "transform")
    assert zoomed != before  # zoomed
    box = page.locator(f"{graph} svg").bounding_box()  # pan: a drag on empty space moves the graph with it
    x, y = box["x"] + 20, box["y"] + 20
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 120, y + 60, steps=6)
    page.mouse.up()
    moved = page.get_attribute(f"{graph} g.viewport", "transform")
    (x0, y0), (x1, y1) = (
        [float(v) for v in t.split("translate(")[1].split(")")[0].split(",")] for t in (zoomed, moved)
    )
    assert (round(x1 - x0), round(y1 - y0)) == (120, 60), (zoomed, moved)


def test_histograms_as_a_heat_map_and_a_sortable_table(runs: dict[str, Any], page: Any) -> None:
    run_id = runs["rich"]["id"]
    open_hash(page, f"#/run/{run_id}/histograms", "run-histograms")
    keys = page.eval_on_selector_all(".datakey", "ds => ds.map(d => d.dataset.key)")
    assert keys[0] == "weights" and all(k.startswith(("grad/", "param/")) for k in keys[1:])
    heat = page.eval_on_selector(
        ".datakey[data-key='weights'] [data-testid=histogram-heatmap]", "f => f.dataset.steps"
    )
    assert heat == "20"
    screenshot(page, "histogram-heatmap")
    open_hash(page, f"#/run/{run_id}/tables", "run-tables")
    table = "[data-testid=data-table]"
    column = f"() => [...document.querySelectorAll('{table} tbody tr')].map(r => r.children[1].textContent)"
    assert page.evaluate(column) == ["cat", "dog", "emu"]
    page.click(f"{table} th[data-col='p']")
    assert page.evaluate(column) == ["dog", "cat", "emu"]
    page.click(f"{table} th[data-col='p']")
    assert page.evaluate(column) == ["emu", "cat", "dog"]


def test_audio_and_video_play_in_the_media_tab(runs: dict[str, Any], page: Any) -> None:
    open_hash(page, f"#/run/{runs['rich']['id']}/media", "run-media")
    assert page.get_attribute(".media", "data-step") == "20"
    page.wait_for_function("() => document.querySelector('.media audio[data-key=sound]').readyState >= 1")
    duration = page.evaluate("() => document.querySelector('.media audio[data-key=sound]').duration")
    assert abs(duration - 0.25) < 0.01  # 2,000 samples at 8 kHz
    assert page.get_attribute(".media audio[data-key=sound]", "controls") is not None
    page.wait_for_function(
        "() => document.querySelector('.media img[data-key=clip]').naturalWidth === 8"
    )  # a GIF


def test_the_compare_tooltip_lists_every_run(runs: dict[str, Any], page: Any) -> None:
    ids = [runs["rich"]["id"], runs["spiky"]["id"]]
    open_hash(page, f"#/compare/{ids[0]},{ids[1]}", "compare")
    box = page.locator(".chart[data-key='train/loss'] .u-over").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] / 2)
    page.wait_for_selector("[data-testid=chart-tooltip] .row")
    rows = page.eval_on_selector_all(
        "[data-testid=chart-tooltip] .row", "rs => rs.map(r => r.querySelector('.name').textContent)"
    )
    assert sorted(rows) == ["rich", "spiky"]
    screenshot(page, "compare-tooltip")


def test_a_live_runs_image_appears_without_a_reload(
    server: ServerProcess, api: httpx.Client, page: Any, tmp_path: Path
) -> None:
    proc = spawn(tmp_path, server, LIVE)
    try:
        deadline = time.time() + 60
        run: dict[str, Any] = {}
        while time.time() < deadline:
            found = api.get("/api/runs", params={"project": "livemedia"}).json()
            files = api.get(f"/api/runs/{found[0]['id']}/files", params={"key": "frame"}) if found else None
            if files is not None and files.status_code == 200 and any(f["url"] for f in files.json()):
                run = found[0]
                break
            time.sleep(0.2)
        assert run, "the live run logged no image"
        open_hash(page, f"#/run/{run['id']}/media", "run-media")
        first = int(page.get_attribute(".media", "data-step"))
        page.wait_for_function(
            "n => { const box = document.querySelector('.media');"
            " const img = box.querySelector('img[data-key=frame]');"
            " return Number(box.dataset.step) >= n + 2 && img.dataset.step === box.dataset.step; }",
            arg=first,
            timeout=20_000,
        )
        page.wait_for_function(
            "() => document.querySelector('.media img[data-key=frame]').naturalWidth === 8"
        )
        # the histograms' heat map takes new steps too
        page.click("nav.tabs button[data-tab='histograms']")
        page.wait_for_selector("[data-testid=histogram-heatmap]")
        steps = int(page.get_attribute("[data-testid=histogram-heatmap]", "data-steps"))
        page.wait_for_function(
            "n => Number(document.querySelector('[data-testid=histogram-heatmap]').dataset.steps) >= n + 2",
            arg=steps,
            timeout=20_000,
        )
        assert page.evaluate("() => performance.getEntriesByType('navigation').length") == 1  # no reload
    finally:
        (tmp_path / "runs").mkdir(exist_ok=True)
        (tmp_path / "runs" / "stop").touch()
        try:
            proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=30)


OFFLINE = """
run = mlop.init(project="local", name="offline", dir=sys.argv[1], mode="offline")
for step in range(10):
    run.log({"train/loss": 1.0 / (step + 1), "val/acc": step / 10}, step=step)
run.finish()
"""


def test_mlop_ui_keeps_the_layout_in_its_data_folder(browser: Any, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOP_")}
    env["MLOP_DISABLE_SYSTEM_METRICS"] = "1"
    script = tmp_path / "train.py"
    script.write_text("import mlop, sys\n" + textwrap.dedent(OFFLINE))
    subprocess.run([sys.executable, str(script), str(tmp_path / "runs")], env=env, timeout=120, check=True)
    for launch in ("first", "second"):  # two `mlop ui` processes, one data folder
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        data = ("--data", str(tmp_path / "ui-data"), "--interval", "0.5")
        try:
            with mlop_ui(tmp_path / "runs", *data, env=env) as (_ui, url):
                base, key = url.split("/ui/#key=")
                with httpx.Client(
                    base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30
                ) as ui_api:
                    deadline = time.monotonic() + 60
                    while not ui_api.get("/api/runs", params={"project": "local"}).json():
                        assert time.monotonic() < deadline, "mlop ui sent no run"
                        time.sleep(0.2)
                    (run,) = ui_api.get("/api/runs", params={"project": "local"}).json()
                page = context.new_page()
                page.set_default_timeout(WAIT_MS)
                page.goto(url)
                page.wait_for_selector("body[data-ready]", state="attached")
                open_hash(page, f"#/run/{run['id']}/charts", "run-charts")
                if launch == "first":
                    assert [g[:2] for g in groups(page)] == [["train", "false"], ["val", "false"]]
                    page.click("[data-group='train'] [data-action='toggle']")
                    page.wait_for_selector("#layout-note:text('layout saved')")
                else:
                    assert [g[:2] for g in groups(page)] == [["train", "true"], ["val", "false"]]
        finally:
            context.close()
