// The projects list and a project's runs table: search, filter by status and tag, sort, select to compare.
"use strict";
(function () {
  const mlop = window.mlop;
  const ROW_PX = 31;
  const STATUSES = ["RUNNING", "COMPLETED", "FAILED", "TERMINATED", "CANCELLED"];

  mlop.projectsPage = async function (main) {
    mlop.crumbs();
    const projects = await mlop.api("/api/projects");
    if (!projects.length) {
      main.replaceChildren(mlop.el("p", { class: "muted", id: "projects" }, "No runs yet. Log one with mlop.init(...)."));
      mlop.ready("projects");
      return;
    }
    const rows = projects.map((p) => `<tr><td><a href="#/p/${mlop.esc(mlop.q(p.name))}">${mlop.esc(p.name)}</a></td>` +
      `<td class="num">${p.runs}</td><td>${mlop.when(p.updated)}</td></tr>`).join("");
    main.innerHTML = `<h1>Projects</h1><table class="grid" id="projects"><thead><tr><th>project</th>` +
      `<th class="num">runs</th><th>updated</th></tr></thead><tbody>${rows}</tbody></table>`;
    mlop.ready("projects");
  };

  // A run's summary (run.summary, sent as config["summary"]) as flat keys: nested objects joined with "/".
  const MAX_SUMMARY_COLUMNS = 12;
  function flatSummary(run) {
    if (run.flat) return run.flat;
    const out = {};
    (function walk(obj, prefix) {
      for (const [k, v] of Object.entries(obj || {})) {
        if (v && typeof v === "object" && !Array.isArray(v)) walk(v, prefix + k + "/");
        else out[prefix + k] = v;
      }
    })(run.summary, "");
    run.flat = out;
    return out;
  }
  // Every summary key of the project's runs, most common first (then by name), at most MAX_SUMMARY_COLUMNS.
  function summaryKeys(runs) {
    const counts = new Map();
    for (const run of runs) for (const k of Object.keys(flatSummary(run))) counts.set(k, (counts.get(k) || 0) + 1);
    return [...counts.keys()].sort((a, b) => counts.get(b) - counts.get(a) || a.localeCompare(b))
      .slice(0, MAX_SUMMARY_COLUMNS);
  }
  function shownValue(v) {
    if (v == null) return "-";
    if (typeof v === "number" || typeof v === "string") return mlop.number(v);
    return JSON.stringify(v);
  }

  function row(run, selected, metrics, last, summary) {
    const tags = run.tags.map((t) => `<span class="tag">${mlop.esc(t)}</span>`).join("");
    const status = run.status.toLowerCase();
    const values = last.get(run.id) || {};
    const flat = flatSummary(run);
    const sums = summary.map((k) => `<td class="num" data-summary="${mlop.esc(k)}">${mlop.esc(shownValue(flat[k]))}</td>`).join("");
    const cells = metrics.map((k) => `<td class="num" data-metric="${mlop.esc(k)}">${mlop.esc(mlop.number(values[k]))}</td>`).join("");
    return `<tr class="run" data-run="${run.id}"><td><input type="checkbox" data-select="${run.id}"${selected.has(run.id) ? " checked" : ""}></td>` +
      `<td><a href="#/run/${run.id}">${mlop.esc(run.name)}</a> <span class="muted">${mlop.esc(run.displayId || "")}</span></td>` +
      `<td><span class="status ${status}" data-status="${run.status}">${status}</span></td>` +
      `<td class="num">${mlop.duration(mlop.runDuration(run))}</td><td>${tags}</td><td>${mlop.when(run.created)}</td>${sums}${cells}</tr>`;
  }

  const SORTS = {
    name: (a, b) => a.name.localeCompare(b.name),
    status: (a, b) => a.status.localeCompare(b.status),
    duration: (a, b) => mlop.runDuration(a) - mlop.runDuration(b),
    created: (a, b) => a.created - b.created,
  };

  // Runs without the value sort after those with it, whatever the direction.
  function byMetric(last, key, desc) {
    const value = (run) => { const v = (last.get(run.id) || {})[key]; return typeof v === "number" ? v : null; };
    return (a, b) => {
      const x = value(a), y = value(b);
      if (x == null && y == null) return 0;
      if (x == null) return desc ? -1 : 1;
      if (y == null) return desc ? 1 : -1;
      return x - y;
    };
  }

  // Numbers in order, then text; runs without the value last, whatever the direction.
  function bySummary(key, desc) {
    return (a, b) => {
      const x = flatSummary(a)[key], y = flatSummary(b)[key];
      if (x == null && y == null) return 0;
      if (x == null) return desc ? -1 : 1;
      if (y == null) return desc ? 1 : -1;
      if (typeof x === "number" && typeof y === "number") return x - y;
      if (typeof x === "number") return -1;
      if (typeof y === "number") return 1;
      return String(shownValue(x)).localeCompare(String(shownValue(y)));
    };
  }

  mlop.runsPage = async function (main, project) {
    mlop.crumbs(mlop.el("a", { href: "#/p/" + mlop.q(project) }, project));
    let runs = await mlop.api(`/api/runs?project=${mlop.q(project)}`);
    const saved = localStorage.getItem("mlop.columns." + project) || "";
    const state = { search: "", status: "", tag: "", sort: "created", desc: true, selected: new Set(),
      metrics: saved.split(",").map((k) => k.trim()).filter(Boolean), last: new Map(), summary: summaryKeys(runs) };
    const tags = [...new Set(runs.flatMap((r) => r.tags))].sort();
    const search = mlop.el("input", { type: "search", placeholder: "search name, id or tag", id: "search" });
    const status = mlop.el("select", { id: "status-filter", "aria-label": "status" },
      mlop.el("option", { value: "" }, "any status"),
      STATUSES.map((s) => mlop.el("option", { value: s }, s.toLowerCase())));
    const tag = mlop.el("select", { id: "tag-filter", "aria-label": "tag" },
      mlop.el("option", { value: "" }, "any tag"), tags.map((t) => mlop.el("option", { value: t }, t)));
    const columns = mlop.el("input", { id: "metric-columns", value: state.metrics.join(", "),
      placeholder: "metric columns: train/loss, eval/acc", "aria-label": "metric columns" });
    const compare = mlop.el("button", { id: "compare", disabled: true }, "compare selected");
    const count = mlop.el("span", { class: "muted", id: "runs-count" });
    const headRow = mlop.el("tr");
    const cols = mlop.el("colgroup");
    const body = mlop.el("tbody");
    const table = mlop.el("table", { class: "grid fixed", id: "runs" }, cols, mlop.el("thead", {}, headRow), body);
    const scroller = mlop.el("div", { class: "scroller", id: "runs-scroll" }, table);
    main.replaceChildren(mlop.el("h1", {}, project),
      mlop.el("div", { class: "controls" }, search, status, tag, columns, compare, count), scroller);
    let headers = [];
    function drawHead() {
      const names = ["name", "status", "duration", "tags", "created"];
      headers = names.map((name) => mlop.el("th", { "data-sort": name, class: name === "duration" ? "num" : null }, name))
        .concat(state.summary.map((k) => mlop.el("th", { "data-sort": "summary:" + k, class: "num summary", title: "summary: " + k }, k)))
        .concat(state.metrics.map((k) => mlop.el("th", { "data-sort": "metric:" + k, class: "num", title: k }, k)));
      headRow.replaceChildren(mlop.el("th"), ...headers);
      const widths = ["3em", "30%", "9em", "7em", "auto", "12em"].concat([...state.summary, ...state.metrics].map(() => "8em"));
      cols.replaceChildren(...widths.map((w) => mlop.el("col", { style: `width:${w}` })));
      for (const th of headers) th.addEventListener("click", () => {
        state.desc = state.sort === th.dataset.sort ? !state.desc : false;
        state.sort = th.dataset.sort;
        render();
      });
    }
    async function loadMetrics() {
      state.last = new Map();
      if (state.metrics.length) {
        const query = state.metrics.map((k) => "&key=" + mlop.q(k)).join("");
        const rows = await mlop.api(`/api/runs/last?project=${mlop.q(project)}${query}`);
        state.last = new Map(rows.map((r) => [r.id, r.values]));
      }
    }
    // Only the rows in view (and a margin) are in the document, so thousands of runs stay fast.
    let shown = [];
    function drawRows() {
      const height = scroller.clientHeight || 800;
      const first = Math.max(0, Math.floor(scroller.scrollTop / ROW_PX) - 20);
      const last = Math.min(shown.length, first + Math.ceil(height / ROW_PX) + 40);
      const pad = (n) => (n > 0 ? `<tr class="pad" style="height:${n * ROW_PX}px"></tr>` : "");
      body.innerHTML = pad(first) + shown.slice(first, last).map((r) => row(r, state.selected, state.metrics, state.last, state.summary)).join("") +
        pad(shown.length - last);
      body.dataset.first = String(first);
    }
    let pending = false;
    scroller.addEventListener("scroll", () => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => { pending = false; drawRows(); });
    });

    function render() {
      const words = state.search.toLowerCase().split(/\s+/).filter(Boolean);
      shown = runs.filter((r) => (!state.status || r.status === state.status) &&
        (!state.tag || r.tags.includes(state.tag)) &&
        words.every((w) => (r.name + " " + (r.displayId || "") + " " + r.id + " " + r.tags.join(" ")).toLowerCase().includes(w)));
      shown.sort(state.sort.startsWith("metric:") ? byMetric(state.last, state.sort.slice(7), state.desc)
        : state.sort.startsWith("summary:") ? bySummary(state.sort.slice(8), state.desc) : SORTS[state.sort]);
      if (state.desc) shown.reverse();
      drawRows();
      count.textContent = `${shown.length} of ${runs.length} runs`;
      for (const th of headers) th.classList.toggle("sorted", th.dataset.sort === state.sort);
      compare.disabled = state.selected.size < 1;
    }
    search.addEventListener("input", () => { state.search = search.value; render(); });
    status.addEventListener("change", () => { state.status = status.value; render(); });
    tag.addEventListener("change", () => { state.tag = tag.value; render(); });
    columns.addEventListener("change", async () => {
      state.metrics = [...new Set(columns.value.split(",").map((k) => k.trim()).filter(Boolean))].slice(0, 20);
      localStorage.setItem("mlop.columns." + project, state.metrics.join(","));
      if (state.sort.startsWith("metric:") && !state.metrics.includes(state.sort.slice(7))) state.sort = "created";
      await loadMetrics();
      drawHead();
      render();
      mlop.ready("runs");
    });
    body.addEventListener("change", (e) => {
      const id = Number(e.target.dataset.select);
      if (!id) return;
      if (e.target.checked) state.selected.add(id); else state.selected.delete(id);
      compare.disabled = state.selected.size < 1;
    });
    compare.addEventListener("click", () => { location.hash = "#/compare/" + [...state.selected].join(","); });
    await loadMetrics();
    drawHead();
    render();
    mlop.ready("runs");
    // Statuses and durations follow running runs.
    mlop.every(5000, async () => {
      if (!runs.some((r) => r.status === "RUNNING")) return;
      runs = await mlop.api(`/api/runs?project=${mlop.q(project)}`);
      await loadMetrics();
      const keys = summaryKeys(runs);
      if (keys.join("\n") !== state.summary.join("\n")) {  // a run that finished brought its summary
        state.summary = keys;
        if (state.sort.startsWith("summary:") && !keys.includes(state.sort.slice(8))) state.sort = "created";
        drawHead();
      }
      render();
    });
  };
})();
