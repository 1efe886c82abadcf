"""The project page in a real browser: a runs table of 1,000 runs x 20 config keys x 10 metrics.

Run: .venv/bin/python bench/dashboard_runs.py [--runs 1000] [--repeat 5] [--screenshots DIR] [--postgres]
[--data DIR] [--baseline OLD_SRC]

Starts a real server (mlop_server.testing.ServerProcess), fills one project through the protocol routes,
times the runs query API (first page sorted by start, by a config key, by a metric's min, with a filter, and
the filter again with a write to the project before each request, as while runs log),
then opens the project page in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) with a
full navigation and reads ``mlop.tablePaintedAt`` (ms from navigation start to the first frame painted with
the table's first page) and times a sort by a column header click (click to the frame after the rows were
redrawn). Prints one JSON document; bench/README.md holds the latest figures.

``--data DIR`` keeps the server's SQLite data in DIR and reuses a folder filled before (no second fill), so
two servers (this tree's and an older commit's, put first on ``PYTHONPATH``) can be timed on the same
runs, one after the other. ``--baseline OLD_SRC`` does that in one go: it copies the data folder, starts
an older ``mlop_server`` (its source folder first on ``PYTHONPATH``) on the copy and this tree's on the
original (with ``--postgres``: both on the one database), and times each query on both in turn, checking
that both answer the same rows.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
from playwright.sync_api import sync_playwright

from mlop_server.testing import ServerProcess

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
T0 = 1_795_870_984_866
STATUSES = ["COMPLETED", "FAILED", "COMPLETED", "TERMINATED"]
PROJECT = "sweep"

SORT_MS = """async (col) => {
  const t0 = performance.now();
  const before = mlop.rowsDrawn;
  document.querySelector(`th[data-col='${col}']`).click();
  while (mlop.rowsDrawn === before) await new Promise((r) => setTimeout(r, 1));
  await new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
  return performance.now() - t0;
}"""


def fill(api: httpx.Client, runs: int, config_keys: int, metrics: int) -> None:
    def one(i: int) -> None:
        config = {f"hp_{k:02d}": (i * (k + 1)) % 97 / 10 for k in range(config_keys - 2)}
        config.update(optimizer=["adam", "sgd", "lion"][i % 3], model={"layers": 2 + i % 6})
        # a sweep where hp_00 matters (the metrics end higher with it), hp_01 a little (lower), the rest not
        final = config["hp_00"] / 5 - config["hp_01"] / 20 + (i % 13) / 40
        body = {
            "runName": f"run-{i:04d}",
            "projectName": PROJECT,
            "config": orjson.dumps(config).decode(),
            "tags": ["baseline"] if i % 5 == 0 else [],
            "createdAt": T0 + i * 60_000,
        }
        run_id = api.post("/api/runs/create", json=body).json()["runId"]
        lines = b"".join(
            orjson.dumps(
                {
                    "time": T0 + i * 60_000 + step * 1000,
                    "step": step,
                    "data": {f"train/m{m}": (m + 1) / (step + 1) + final for m in range(metrics)},
                }
            )
            + b"\n"
            for step in range(20)
        )
        headers = {"X-Run-Id": str(run_id), "Content-Type": "application/x-ndjson"}
        api.post("/ingest/metrics", content=lines, headers=headers).raise_for_status()
        status = STATUSES[i % len(STATUSES)]
        api.post("/api/runs/status/update", json={"runId": run_id, "status": status}).raise_for_status()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(runs)))


#: The first pages timed: name -> (query parameters, a write to the project before each request).
QUERIES: dict[str, tuple[dict[str, str], bool]] = {
    "by_start": ({}, False),
    "by_config_key": ({"sort": "config.hp_03", "order": "asc"}, False),
    "by_metric_min": ({"sort": "summary.train/m4.min"}, False),
    "filtered": ({"filter": 'hp_01 < 5 and optimizer == "adam"'}, False),
    # as while runs log: the project's latest update moves, so its cached column catalog is stale
    "filtered_live": ({"filter": 'hp_01 < 5 and optimizer == "adam"'}, True),
}


def first_page(api: httpx.Client, name: str, i: int) -> tuple[float, tuple[list[int], int]]:
    """The ms of query ``name``'s first page of 100 rows (its i-th time), and the rows' ids and the total."""
    params, live = QUERIES[name]
    if live:  # not timed
        run_id = api.get("/api/runs", params={"project": PROJECT, "limit": 1}).json()["runs"][0]["id"]
        api.post("/api/runs/tags/update", json={"runId": run_id, "tags": [f"t{i}"]}).raise_for_status()
    began = time.perf_counter()
    answer = api.get("/api/runs", params={"project": PROJECT, "limit": 100, **params})
    ms = (time.perf_counter() - began) * 1000
    answer.raise_for_status()
    body = answer.json()
    return ms, ([r["id"] for r in body["runs"]], body["total"])


def timed(api: httpx.Client, name: str, repeat: int) -> float:
    """The median ms of query ``name``'s first page."""
    return round(statistics.median(first_page(api, name, i)[0] for i in range(repeat)), 1)


def side_by_side(apis: dict[str, httpx.Client], repeat: int) -> dict[str, Any]:
    """Each query on each server in turn (who goes first alternates), ``repeat`` times; median and min ms.

    Raises AssertionError where the servers answer different rows or totals.
    """
    times: dict[str, dict[str, list[float]]] = {server: {q: [] for q in QUERIES} for server in apis}
    for i in range(repeat):
        order = list(apis) if i % 2 == 0 else list(apis)[::-1]
        for name in QUERIES:
            answers = {}
            for server in order:
                ms, answers[server] = first_page(apis[server], name, i)
                times[server][name].append(ms)
            assert len({repr(a) for a in answers.values()}) == 1, f"{name}: the servers' rows differ"
    return {
        server: {
            q: {"median": round(statistics.median(v), 1), "min": round(min(v), 1)} for q, v in got.items()
        }
        for server, got in times.items()
    }


def client(server: ServerProcess) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.key}"}, timeout=300)


def fill_once(api: httpx.Client, args: argparse.Namespace, out: dict[str, Any]) -> None:
    """Fill the project unless the server's data holds it already (``--data`` reused)."""
    filled = api.get("/api/runs", params={"project": PROJECT, "limit": 1}).json()["total"]
    if filled:
        out["runs"] = filled
        return
    began = time.perf_counter()
    fill(api, args.runs, args.config_keys, args.metrics)
    out["fill_s"] = round(time.perf_counter() - began, 1)


def against(args: argparse.Namespace, out: dict[str, Any], data: str, db: str | None) -> None:
    """This tree's server and ``--baseline``'s on the same runs, timed side by side.

    SQLite: each on its own copy of the data folder; PostgreSQL: both on the one database.
    """
    with ServerProcess(data, db=db) as server, client(server) as api:
        fill_once(api, args, out)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "baseline"
        if db is None:
            shutil.copytree(data, copy)
        baseline = ServerProcess(copy, db=db, env={"PYTHONPATH": str(args.baseline.resolve())})
        with baseline as old, ServerProcess(data, db=db) as new, client(old) as a, client(new) as b:
            out["api_first_page_ms"] = side_by_side({"baseline": a, "this": b}, args.repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--config-keys", type=int, default=20)
    parser.add_argument("--metrics", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--screenshots", type=Path, default=None, help="save the page's screenshots here")
    parser.add_argument("--no-browser", action="store_true", help="time the query API only")
    parser.add_argument(
        "--data", type=Path, default=None, help="SQLite data folder to fill, or reuse if filled"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="an older mlop_server's source folder (put first on PYTHONPATH): time its server and this "
        "tree's side by side on the same runs (query API only)",
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="keep the data in a throwaway PostgreSQL cluster (tests/pgcluster.py)",
    )
    args = parser.parse_args()
    out: dict[str, Any] = {"runs": args.runs, "config_keys": args.config_keys, "metrics": args.metrics}
    with contextlib.ExitStack() as stack:
        db = None
        if args.postgres:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from pgcluster import PgCluster, find_bindir

            db = stack.enter_context(PgCluster(find_bindir())).create_database()
        out["backend"] = "postgresql" if db else "sqlite"
        data = str(args.data) if args.data else stack.enter_context(tempfile.TemporaryDirectory())
        if args.baseline:
            out["baseline"] = str(args.baseline)
            against(args, out, data, db)
        else:
            run(args, out, data, db)
    print(json.dumps(out, indent=2))


def run(args: argparse.Namespace, out: dict[str, Any], tmp: str, db: str | None) -> None:
    with ServerProcess(tmp, db=db) as server:
        with client(server) as api:
            fill_once(api, args, out)
            out["api_first_page_ms"] = {name: timed(api, name, args.repeat) for name in QUERIES}
        if args.no_browser:
            return
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.goto(f"{server.url}/ui/#key={server.key}")
            page.wait_for_selector("body[data-ready]", state="attached")
            paints, sorts = [], []
            for _ in range(args.repeat):
                page.goto(f"{server.url}/health")
                page.goto(f"{server.url}/ui/#/p/{PROJECT}")
                page.wait_for_selector("body[data-ready='runs']", state="attached", timeout=60_000)
                page.wait_for_function("() => mlop.tablePaintedAt", timeout=60_000)
                paints.append(float(page.evaluate("() => mlop.tablePaintedAt")))
                page.wait_for_selector("#across[data-drawn]", timeout=60_000)
                for col in ("config.hp_03", "summary.train/m0"):
                    sorts.append(float(page.evaluate(SORT_MS, col)))
            out["first_paint_ms"] = {"median": round(statistics.median(paints)), "max": round(max(paints))}
            out["sort_ms"] = {"median": round(statistics.median(sorts)), "max": round(max(sorts))}
            out["rows"] = page.inner_text("#runs-count")
            if args.screenshots:  # grouped by the optimizer, the lower third of hp_00 brushed
                args.screenshots.mkdir(parents=True, exist_ok=True)
                page.select_option("[data-testid=group-by]", "config.optimizer")
                page.wait_for_selector("[data-testid=groups-table]")
                page.evaluate("() => { delete document.getElementById('across').dataset.drawn; }")
                hit = page.locator(".axis[data-axis='config.hp_00'] rect.hit")
                hit.scroll_into_view_if_needed()
                box = hit.bounding_box()
                assert box is not None
                page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] - 2)
                page.mouse.down()
                page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.65, steps=5)
                page.mouse.up()
                page.wait_for_selector("#across[data-drawn]")
                page.evaluate("() => window.scrollTo(0, 0)")
                page.screenshot(path=str(args.screenshots / "runs-table.png"))
                page.eval_on_selector("#across", "el => el.scrollIntoView()")
                page.locator("#across").screenshot(path=str(args.screenshots / "across-runs.png"))
            browser.close()


if __name__ == "__main__":
    main()
