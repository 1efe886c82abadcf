// The projects list and a project's runs table: columns from the runs (config, summary values, fields), a
// column chooser kept on the server, sorting, filtering and paging by the server, groups, selection to compare.
"use strict";
(function () {
  const mlop = window.mlop;
  const PAGE = 50;  // rows a request brings (more as the table scrolls)
  const BUILTIN = ["name", "status", "user", "start", "duration", "tags", "host", "commit", "ended", "id"];
  const AGGS = ["last", "min", "max"];
  // Metrics that the client logs by itself (system, watch): not the user's own.
  mlop.ownMetric = (name) => !/^(sys|grad|param|params|gradients|parameters)\//.test(name) && name !== "nonfinite";

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

  // Every column the project's runs offer: {id, label, kind, numeric}.
  function columnsOf(catalog) {
    const out = BUILTIN.map((id) => ({ id, label: id, kind: "builtin", numeric: ["duration", "start", "ended", "id"].includes(id) }));
    for (const c of catalog.config) out.push({ id: c.name, label: c.name.slice(7), kind: "config", numeric: c.numeric > 0 });
    const metrics = new Set(catalog.metrics.map((m) => m.name));
    for (const m of catalog.metrics) out.push({ id: "summary." + m.name, label: m.name, kind: "metric", numeric: true });
    for (const s of catalog.summary) {
      if (!metrics.has(s.name.slice(8))) out.push({ id: s.name, label: s.name.slice(8), kind: "summary", numeric: true });
    }
    return out;
  }

  function defaultColumns(all) {
    // the run page's notes live in the config too: long text, not a column to start with
    const config = all.filter((c) => c.kind === "config" && c.id !== "config.notes").slice(0, 8).map((c) => c.id);
    const metrics = all.filter((c) => c.kind === "metric" && mlop.ownMetric(c.label)).slice(0, 4).map((c) => c.id);
    const summary = all.filter((c) => c.kind === "summary").slice(0, 4).map((c) => c.id);
    return ["name", "status", "user", "start", "duration", "tags", ...config, ...metrics, ...summary];
  }

  // The server's column name of a table column (summary columns carry their aggregate).
  mlop.queryColumn = (id, aggs) => (id.startsWith("summary.") ? `${id}.${(aggs && aggs[id]) || "last"}` : id);

  function cellValue(row, id, aggs) {
    if (id.startsWith("config.")) return row.config[id.slice(7)];
    if (id.startsWith("summary.")) {
      const found = row.summary[id.slice(8)];
      return found ? found[(aggs && aggs[id]) || "last"] : null;
    }
    return row[id];
  }

  function cell(row, col, aggs) {
    const id = col.id;
    if (id === "name") {
      return `<td class="name"><a href="#/run/${row.id}">${mlop.esc(row.name)}</a> <span class="muted">${mlop.esc(row.displayId || "")}</span></td>`;
    }
    if (id === "status") {
      const s = row.status.toLowerCase();
      return `<td><span class="status ${s}" data-status="${row.status}">${s}</span></td>`;
    }
    if (id === "tags") return `<td>${row.tags.map((t) => `<span class="tag">${mlop.esc(t)}</span>`).join("")}</td>`;
    if (id === "start" || id === "ended") return `<td>${mlop.when(row[id])}</td>`;
    if (id === "duration") return `<td class="num">${mlop.duration(row.duration)}</td>`;
    const v = cellValue(row, id, aggs);
    const shown = v == null ? "-" : typeof v === "number" ? mlop.number(v) : String(v);
    return `<td class="${typeof v === "number" ? "num" : ""}" data-col="${mlop.esc(id)}" title="${mlop.esc(v == null ? "" : String(v))}">${mlop.esc(shown)}</td>`;
  }

  mlop.runsPage = async function (main, project) {
    mlop.crumbs(mlop.el("a", { href: "#/p/" + mlop.q(project) }, project));
    const P = mlop.q(project);
    const settingsUrl = `/api/projects/settings?project=${P}&name=columns`;
    const [catalog, saved] = await Promise.all([
      mlop.api(`/api/runs/columns?project=${P}`),
      mlop.api(settingsUrl).then((a) => a.value).catch(() => null),
    ]);
    const all = columnsOf(catalog);
    const byId = new Map(all.map((c) => [c.id, c]));
    const state = {
      cols: ((saved && saved.columns) || defaultColumns(all)).filter((id) => byId.has(id)),
      aggs: (saved && saved.aggs) || {},
      sort: "start", order: "desc", filter: "", brushes: [], groupBy: "",
      rows: [], next: null, total: 0, selected: new Set(), loading: null,
    };
    // -- the controls -------------------------------------------------------------------------------
    const filter = mlop.el("input", { type: "search", "data-testid": "runs-filter", id: "runs-filter", spellcheck: "false",
      placeholder: 'filter: lr < 0.01 and "baseline" in tags and status == "COMPLETED"', "aria-label": "filter" });
    const filterError = mlop.el("div", { class: "error filter-error", "data-testid": "runs-filter-error", id: "runs-filter-error" });
    const groupBy = mlop.el("select", { id: "group-by", "data-testid": "group-by", "aria-label": "group by" },
      mlop.el("option", { value: "" }, "no grouping"),
      all.filter((c) => c.kind === "config" || ["status", "user", "host", "commit"].includes(c.id))
        .map((c) => mlop.el("option", { value: c.id }, "group by " + c.label)));
    const chooserButton = mlop.el("button", { id: "columns-button", "aria-expanded": "false" }, "columns");
    const compare = mlop.el("button", { id: "compare", disabled: true }, "compare selected");
    const selectAll = mlop.el("button", { id: "select-all", "data-testid": "select-all" }, "select all matching");
    const count = mlop.el("span", { class: "muted", id: "runs-count" });
    const chooser = mlop.el("div", { class: "chooser", "data-testid": "column-chooser", id: "column-chooser", hidden: true });
    const groups = mlop.el("div", { class: "groups", "data-testid": "runs-groups", id: "runs-groups" });
    const headRow = mlop.el("tr");
    const body = mlop.el("tbody");
    const table = mlop.el("table", { class: "grid runs-table", id: "runs", "data-testid": "runs-table" }, mlop.el("thead", {}, headRow), body);
    const scroller = mlop.el("div", { class: "scroller", id: "runs-scroll" }, table);
    const across = mlop.el("section", { class: "across", id: "across" });
    main.replaceChildren(mlop.el("h1", {}, project),
      mlop.el("div", { class: "controls" }, filter, groupBy, chooserButton, selectAll, compare, count),
      filterError, chooser, groups, scroller, across);

    const visible = () => state.cols.map((id) => byId.get(id)).filter(Boolean);
    // The typed filter and the brushes of the parallel coordinates, together (alone, the typed filter is sent
    // as typed so that an error's position is the one in the box).
    mlop.joinFilters = (parts) => {
      const kept = parts.filter((x) => x && x.trim());
      return kept.length === 1 ? kept[0] : kept.map((x) => `(${x})`).join(" and ");
    };
    const effectiveFilter = () => mlop.joinFilters([state.filter, ...state.brushes]);

    // -- the table ----------------------------------------------------------------------------------
    function drawHead() {
      const sortCol = state.sort;
      const cells = [`<th class="pick"><input type="checkbox" id="select-page" aria-label="select the loaded runs"></th>`];
      for (const col of visible()) {
        const q = mlop.queryColumn(col.id, state.aggs);
        const agg = col.kind === "metric" ? ` <span class="agg">${mlop.esc(state.aggs[col.id] || "last")}</span>` : "";
        const mark = q === sortCol ? (state.order === "asc" ? " ▲" : " ▼") : "";
        cells.push(`<th data-sort="${mlop.esc(q)}" data-col="${mlop.esc(col.id)}" class="${col.numeric ? "num" : ""}${q === sortCol ? " sorted" : ""}"` +
          ` title="${mlop.esc(col.id)}">${mlop.esc(col.label)}${agg}${mark}</th>`);
      }
      headRow.innerHTML = cells.join("");
    }
    function rowHtml(row) {
      const cols = visible();
      return `<tr class="run" data-run="${row.id}"><td class="pick"><input type="checkbox" data-select="${row.id}"` +
        `${state.selected.has(row.id) ? " checked" : ""}></td>${cols.map((c) => cell(row, c, state.aggs)).join("")}</tr>`;
    }
    function drawRows() {
      body.innerHTML = state.rows.map(rowHtml).join("");
      count.textContent = `${state.rows.length} of ${state.total} runs` + (state.selected.size ? ` · ${state.selected.size} selected` : "");
      compare.disabled = state.selected.size < 1;
      mlop.rowsDrawn = (mlop.rowsDrawn || 0) + 1;  // the benchmark times a sort by it
    }
    async function load(reset, size) {
      const query = `/api/runs?project=${P}&sort=${mlop.q(state.sort)}&order=${state.order}&limit=${size || PAGE}` +
        `&filter=${mlop.q(effectiveFilter())}` + (reset || !state.next ? "" : `&cursor=${mlop.q(state.next)}`);
      const ticket = (state.loading = {});
      const page = await mlop.api(query);
      if (state.loading !== ticket) return false;  // a newer request took over
      state.loading = null;
      state.rows = reset ? page.runs : state.rows.concat(page.runs);
      state.next = page.next;
      state.total = page.total;
      drawRows();
      return true;
    }
    async function reload() {
      try {
        if (await load(true)) {
          filter.classList.remove("invalid");
          filterError.textContent = "";
        }
      } catch (e) {
        if (e instanceof mlop.Unauthorized) throw e;
        filter.classList.add("invalid");
        filterError.textContent = String(e.message || e).replace(/^\d+ [^:]*: /, "");
        state.loading = null;
      }
      await drawGroups();
    }
    scroller.addEventListener("scroll", () => {
      if (state.next && !state.loading && scroller.scrollTop + scroller.clientHeight > scroller.scrollHeight - 400) {
        load(false).catch(() => {});
      }
    });
    headRow.addEventListener("click", async (e) => {
      const th = e.target.closest("th[data-sort]");
      if (!th) return;
      const q = th.dataset.sort;
      state.order = state.sort === q && state.order === "asc" ? "desc" : "asc";  // a first click: ascending
      state.sort = q;
      drawHead();
      await reload();
      mlop.ready("runs");
    });
    headRow.addEventListener("change", (e) => {
      if (e.target.id !== "select-page") return;
      for (const row of state.rows) if (e.target.checked) state.selected.add(row.id); else state.selected.delete(row.id);
      drawRows();
    });
    body.addEventListener("change", (e) => {
      const id = Number(e.target.dataset.select);
      if (!id) return;
      if (e.target.checked) state.selected.add(id); else state.selected.delete(id);
      drawRows();
    });
    selectAll.addEventListener("click", async () => {
      const found = await mlop.api(`/api/runs/values?project=${P}&filter=${mlop.q(effectiveFilter())}`);
      state.selected = new Set(found.ids);
      drawRows();
    });
    compare.addEventListener("click", () => { location.hash = "#/compare/" + [...state.selected].join(","); });
    let typing = null;
    filter.addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(() => { state.filter = filter.value; refresh(); }, 350);
    });
    filter.addEventListener("keydown", (e) => {
      if (e.key !== "Enter") return;
      clearTimeout(typing);
      state.filter = filter.value;
      refresh();
    });

    // -- groups -------------------------------------------------------------------------------------
    groupBy.addEventListener("change", async () => { state.groupBy = groupBy.value; await drawGroups(); mlop.ready("runs"); });
    async function drawGroups() {
      if (!state.groupBy) { groups.replaceChildren(); return; }
      const metrics = visible().filter((c) => c.kind === "metric" || c.kind === "summary" || (c.kind === "config" && c.numeric));
      const names = metrics.map((c) => mlop.queryColumn(c.id, state.aggs));
      const query = `/api/runs/groups?project=${P}&by=${mlop.q(state.groupBy)}&filter=${mlop.q(effectiveFilter())}` +
        names.map((n) => "&metric=" + mlop.q(n)).join("");
      let found;
      try { found = await mlop.api(query); } catch (e) { groups.textContent = String(e.message || e); return; }
      const head = `<tr><th>${mlop.esc(byId.get(state.groupBy).label)}</th><th class="num">runs</th>` +
        metrics.map((c) => `<th class="num" title="mean (min – max)">${mlop.esc(c.label)}</th>`).join("") + "</tr>";
      const rows = found.groups.map((g) => `<tr class="group" data-group="${mlop.esc(JSON.stringify(g.value))}">` +
        `<td>${mlop.esc(g.value == null ? "(none)" : String(g.value))}</td><td class="num" data-count>${g.count}</td>` +
        names.map((n) => {
          const s = g.metrics[n];
          return s && s.n ? `<td class="num" data-metric="${mlop.esc(n)}" data-mean="${s.mean}">${mlop.number(s.mean)}` +
            ` <span class="muted">(${mlop.number(s.min)} – ${mlop.number(s.max)})</span></td>` : `<td class="num">-</td>`;
        }).join("") + "</tr>").join("");
      groups.innerHTML = `<table class="grid" data-testid="groups-table"><thead>${head}</thead><tbody>${rows}</tbody></table>`;
    }

    // -- the column chooser -------------------------------------------------------------------------
    async function saveColumns() {
      try {
        await mlop.put(settingsUrl, { columns: state.cols, aggs: state.aggs });
      } catch (e) {
        mlop.setStatus("the columns were not saved: " + (e.message || e));
      }
    }
    function drawChooser() {
      const shown = state.cols.map((id, i) => {
        const col = byId.get(id);
        const agg = col.kind === "metric" ? `<select data-agg="${mlop.esc(id)}">${AGGS.map((a) =>
          `<option${(state.aggs[id] || "last") === a ? " selected" : ""}>${a}</option>`).join("")}</select>` : "";
        return `<li data-col="${mlop.esc(id)}"><span class="label">${mlop.esc(col.label)}</span> <span class="muted">${col.kind}</span> ${agg}` +
          `<button data-up="${i}" title="move left"${i === 0 ? " disabled" : ""}>↑</button>` +
          `<button data-down="${i}" title="move right"${i === state.cols.length - 1 ? " disabled" : ""}>↓</button>` +
          `<button data-hide="${i}" title="hide">✕</button></li>`;
      }).join("");
      const hidden = all.filter((c) => !state.cols.includes(c.id));
      chooser.innerHTML = `<ol class="shown">${shown}</ol><label>add a column <select data-add>` +
        `<option value="">…</option>${hidden.map((c) => `<option value="${mlop.esc(c.id)}">${mlop.esc(c.kind + ": " + c.label)}</option>`).join("")}` +
        `</select></label>`;
    }
    async function columnsChanged() {
      drawChooser();
      drawHead();
      drawRows();
      await saveColumns();
      await drawGroups();
      await acrossView.refresh();
      mlop.ready("runs");
    }
    chooserButton.addEventListener("click", () => {
      chooser.hidden = !chooser.hidden;
      chooserButton.setAttribute("aria-expanded", String(!chooser.hidden));
      if (!chooser.hidden) drawChooser();
    });
    chooser.addEventListener("click", async (e) => {
      const b = e.target.closest("button");
      if (!b) return;
      const cols = state.cols;
      if (b.dataset.up) { const i = Number(b.dataset.up); [cols[i - 1], cols[i]] = [cols[i], cols[i - 1]]; }
      else if (b.dataset.down) { const i = Number(b.dataset.down); [cols[i + 1], cols[i]] = [cols[i], cols[i + 1]]; }
      else if (b.dataset.hide) cols.splice(Number(b.dataset.hide), 1);
      await columnsChanged();
    });
    chooser.addEventListener("change", async (e) => {
      if (e.target.dataset.agg) state.aggs[e.target.dataset.agg] = e.target.value;
      else if (e.target.hasAttribute("data-add") && e.target.value) state.cols.push(e.target.value);
      else return;
      if (e.target.dataset.agg && state.sort.startsWith(e.target.dataset.agg + ".")) state.sort = mlop.queryColumn(e.target.dataset.agg, state.aggs);
      await columnsChanged();
      if (e.target.dataset.agg) await reload();
    });

    // -- across runs --------------------------------------------------------------------------------
    const acrossView = mlop.acrossRuns(across, {
      project, all, byId,
      chosen: () => visible().filter((c) => c.kind === "config").map((c) => c.id),
      aggs: () => state.aggs,
      filter: () => state.filter,
      brushed: async (conditions) => { state.brushes = conditions; await reload(); mlop.ready("runs"); },
    });
    async function refresh() {
      await reload();
      await acrossView.refresh();
      mlop.ready("runs");
    }

    drawHead();
    await load(true);
    mlop.ready("runs");
    mlop.tablePaintedAt = null;  // the first frame with the table's first page (the benchmark reads it)
    requestAnimationFrame(() => setTimeout(() => { mlop.tablePaintedAt = performance.now(); }, 0));
    await acrossView.refresh();
    mlop.ready("runs");
    // Statuses and durations follow running runs (as many rows as were loaded, up to 1,000).
    mlop.every(5000, async () => {
      if (!state.rows.some((r) => r.status === "RUNNING") || state.loading) return;
      await load(true, Math.min(1000, Math.max(PAGE, state.rows.length))).catch(() => {});
    });
  };
})();
