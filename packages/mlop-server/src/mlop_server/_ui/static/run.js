// A run: metric charts by group (following a live run), media at a step, histograms, tables, text,
// console logs with search, config, environment, tags (editable) and the model graph.
"use strict";
(function () {
  const mlop = window.mlop;
  // Keys whose values are files: shown at a step (images, players, text) or offered for download.
  const MEDIA = new Set(["IMAGE", "AUDIO", "VIDEO", "TEXT", "FILE", "ARTIFACT"]);
  const POLL_MS = 2000;
  // Charts are fetched in a few requests of this many series, drawn as each answer arrives.
  const SERIES_PER_REQUEST = 8;
  // A run page draws this many charts at once; the others when scrolled near.
  const EAGER_CHARTS = 64;

  function header(run) {
    const status = run.status.toLowerCase();
    return mlop.el("div", { class: "runhead" },
      mlop.el("h1", {}, run.name, " ", mlop.el("span", { class: "muted" }, run.displayId || "")),
      mlop.el("span", { class: "status " + status, id: "run-status", "data-status": run.status }, status),
      mlop.el("span", { class: "muted", id: "run-duration" },
        ` ${mlop.duration(mlop.runDuration(run))} · started ${mlop.when(run.start != null ? run.start : run.created)}`),
      run.status === "RUNNING" ? cancelButton(run) : null);
  }

  // Ask a running run to stop (an admin key's right): its next heartbeat answers CANCELLED.
  function cancelButton(run) {
    const note = mlop.el("span", { class: "muted", id: "cancel-note" }, run.cancelRequested ? "cancel asked" : "");
    const button = mlop.el("button", { id: "run-cancel", disabled: run.cancelRequested, onclick: async () => {
      button.disabled = true;
      try {
        await mlop.post(`/api/runs/${run.id}/cancel`, {});
        run.cancelRequested = true;
        note.textContent = "cancel asked";
      } catch (e) {
        button.disabled = false;
        note.textContent = "not cancelled: " + e.message;
      }
    } }, "cancel run");
    return mlop.el("span", {}, button, " ", note);
  }

  function tagEditor(run) {
    const input = mlop.el("input", { id: "tags-input", value: run.tags.join(", "), "aria-label": "tags",
      placeholder: "tags, comma-separated" });
    const note = mlop.el("span", { class: "muted", id: "tags-note" });
    const save = mlop.el("button", { id: "tags-save", onclick: async () => {
      const tags = [...new Set(input.value.split(",").map((t) => t.trim()).filter(Boolean))];
      note.textContent = "saving…";
      try {
        await mlop.post("/api/runs/tags/update", { runId: run.id, tags });
        run.tags = tags;
        note.textContent = "saved";
      } catch (e) {
        note.textContent = "not saved: " + e.message;
      }
    } }, "save tags");
    return mlop.el("div", { class: "controls" }, mlop.el("label", {}, "tags ", input), save, note);
  }

  function pre(value) {
    return mlop.el("pre", { class: "json" }, value == null ? "-" : JSON.stringify(value, null, 2));
  }

  async function chartsTab(pane, run, keys, live) {
    const metricKeys = keys.filter((k) => k.type === "METRIC").map((k) => k.name);
    pane.append(mlop.chartControls());
    const grid = mlop.el("div");
    pane.append(grid);
    const sections = new Map();
    const placed = new Map();  // key -> its box, drawn or not
    const lazy = new Set();  // placed keys whose series is not asked for yet
    let width = 420;
    async function draw(names) {
      const parts = [];
      for (let i = 0; i < names.length; i += SERIES_PER_REQUEST) parts.push(names.slice(i, i + SERIES_PER_REQUEST));
      await Promise.all(parts.map(async (part) => {
        const found = await mlop.fetchMany(run.id, part);
        for (const key of part) mlop.chart(placed.get(key), key, [found[key] || mlop.EMPTY], [key], width);
      }));
    }
    // Charts past the first EAGER_CHARTS are drawn when they come near the view.
    mlop.observer = new IntersectionObserver((entries) => {
      const near = [];
      for (const entry of entries) {
        if (!entry.isIntersecting) continue;
        mlop.observer.unobserve(entry.target);
        if (lazy.delete(entry.target.dataset.key)) near.push(entry.target.dataset.key);
      }
      if (near.length) draw(near);
    }, { rootMargin: "800px 0px" });
    // Every chart's place first, then each chart drawn as soon as its series arrives.
    async function add(names) {
      const fresh = [];
      for (const [group, groupKeys] of mlop.groupKeys(names)) {
        if (!sections.has(group)) {
          const box = mlop.el("div", { class: "charts" });
          grid.append(mlop.el("section", { "data-group": group }, mlop.el("h2", {}, group), box));
          sections.set(group, box);
        }
        for (const key of groupKeys) {
          placed.set(key, mlop.chartBox(sections.get(group), key));
          fresh.push(key);
        }
      }
      const first = placed.values().next().value;
      if (first) width = Math.max(300, Math.floor(first.clientWidth || 420));
      const room = Math.max(0, EAGER_CHARTS - (placed.size - fresh.length - lazy.size));
      for (const key of fresh.slice(room)) {
        lazy.add(key);
        mlop.observer.observe(placed.get(key));
      }
      await draw(fresh.slice(0, room));
    }
    await add(metricKeys);
    if (!metricKeys.length) grid.append(mlop.el("p", { class: "muted" }, "No metrics yet."));
    live.charts = async (names) => {
      const fresh = names.filter((k) => !placed.has(k));
      if (fresh.length) await add(fresh);
      const known = names.filter((k) => !fresh.includes(k) && mlop.charts[k]);
      if (!known.length) return;
      const found = await mlop.fetchMany(run.id, known);
      for (const k of known) if (found[k]) mlop.updateChart(mlop.charts[k], [found[k]]);
    };
  }

  // A text file shown as text; other files as a download link (fetched with the key on click).
  async function fileView(type, f) {
    if (type === "TEXT") {
      const text = await mlop.textOf(f.url);
      return mlop.el("pre", { class: "text", "data-step": f.step, "data-file": f.id }, text.slice(0, 100000));
    }
    const link = mlop.el("a", { href: "#", "data-file": f.id }, `download ${f.fileName} (${f.fileSize.toLocaleString()} bytes)`);
    link.addEventListener("click", async (e) => {
      e.preventDefault();
      const save = mlop.el("a", { href: await mlop.blobUrl(f.url), download: f.fileName });
      document.body.append(save);
      save.click();
      save.remove();
    });
    return link;
  }

  async function mediaTab(pane, run, keys) {
    const mediaKeys = keys.filter((k) => MEDIA.has(k.type));
    if (!mediaKeys.length) return pane.append(mlop.el("p", { class: "muted" }, "No media."));
    const files = await Promise.all(mediaKeys.map((k) => mlop.api(`/api/runs/${run.id}/files?key=${mlop.q(k.name)}`)));
    const steps = [...new Set(files.flat().map((f) => f.step))].sort((a, b) => a - b);
    const slider = mlop.el("input", { type: "range", id: "media-step", min: 0, max: steps.length - 1, value: steps.length - 1 });
    const label = mlop.el("span", { id: "media-step-label" });
    const boxes = mlop.el("div", { class: "media" });
    pane.append(mlop.el("div", { class: "controls" }, mlop.el("label", {}, "step ", slider), label), boxes);
    let shown = 0;
    async function show() {
      const step = steps[Number(slider.value)];
      const ticket = ++shown;
      label.textContent = String(step);
      const parts = await Promise.all(mediaKeys.map(async (k, i) => {
        const at = files[i].filter((f) => f.step === step && f.url);
        const items = await Promise.all(at.map(async (f) => {
          const caption = mlop.el("figcaption", {}, f.caption || f.fileName);
          const tag = { IMAGE: "img", AUDIO: "audio", VIDEO: "video" }[k.type];
          if (!tag) return mlop.el("figure", {}, await fileView(k.type, f), caption);
          const src = await mlop.blobUrl(f.url);
          const node = mlop.el(tag, { src, alt: f.caption || f.fileName, controls: tag !== "img",
            "data-step": f.step, "data-file": f.id });
          return mlop.el("figure", {}, node, caption);
        }));
        return mlop.el("div", { class: "mediakey" }, mlop.el("h3", {}, k.name),
          items.length ? items : mlop.el("p", { class: "muted" }, "nothing at this step"));
      }));
      if (ticket !== shown) return;
      boxes.querySelectorAll("[src^='blob:']").forEach((n) => URL.revokeObjectURL(n.src));
      boxes.replaceChildren(...parts);
      boxes.dataset.step = String(step);
    }
    slider.addEventListener("input", show);
    await show();
  }

  async function dataTab(pane, run, keys, type) {
    const dataKeys = keys.filter((k) => k.type === type);
    if (!dataKeys.length) return pane.append(mlop.el("p", { class: "muted" }, "Nothing here."));
    for (const k of dataKeys) {
      const rows = await mlop.api(`/api/runs/${run.id}/data?key=${mlop.q(k.name)}`);
      const box = mlop.el("div", { class: "datakey" });
      const slider = mlop.el("input", { type: "range", min: 0, max: Math.max(0, rows.length - 1), value: Math.max(0, rows.length - 1) });
      const label = mlop.el("span");
      pane.append(mlop.el("h3", {}, k.name), mlop.el("div", { class: "controls" }, mlop.el("label", {}, "step ", slider), label), box);
      const draw = () => {
        const row = rows[Number(slider.value)];
        if (!row) return;
        label.textContent = String(row.step);
        box.replaceChildren(type === "HISTOGRAM" ? histogram(row.data) : type === "TABLE" ? table(row.data) : mlop.el("pre", {}, row.data));
      };
      slider.addEventListener("input", draw);
      draw();
      if (type === "HISTOGRAM" && rows.length > 1) pane.append(histogramSteps(rows));
    }
  }

  // Every step of a histogram key at once: one row of cells per step (oldest at the top), x the value,
  // darker where the count is higher (each step scaled to its own largest count).
  function histogramSteps(rows) {
    const hists = rows.map((row) => {
      const data = typeof row.data === "string" ? JSON.parse(row.data) : row.data;
      const freq = data.freq || [];
      let edges = data.bins;
      if (!Array.isArray(edges)) {
        const width = (edges.max - edges.min) / Math.max(1, edges.num);
        edges = Array.from({ length: freq.length + 1 }, (_, i) => edges.min + i * width);
      }
      return { step: row.step, freq, edges };
    });
    const lo = Math.min(...hists.map((h) => h.edges[0]));
    const hi = Math.max(...hists.map((h) => h.edges[h.edges.length - 1]));
    const width = 480, rowHeight = Math.max(2, Math.min(12, Math.floor(240 / hists.length)));
    const canvas = mlop.el("canvas", { class: "histsteps", width, height: rowHeight * hists.length,
      title: `steps ${hists[0].step} to ${hists[hists.length - 1].step}, values ${mlop.number(lo)} to ${mlop.number(hi)}` });
    const g = canvas.getContext("2d");
    const x = (v) => (hi > lo ? ((v - lo) / (hi - lo)) * width : 0);
    hists.forEach((h, r) => {
      const top = Math.max(1, ...h.freq);
      h.freq.forEach((count, i) => {
        if (!count) return;
        g.fillStyle = `rgba(37, 99, 235, ${0.1 + 0.9 * (count / top)})`;
        g.fillRect(x(h.edges[i]), r * rowHeight, Math.max(1, x(h.edges[i + 1]) - x(h.edges[i])), rowHeight);
      });
    });
    return mlop.el("figure", {}, canvas, mlop.el("figcaption", { class: "muted" },
      `every step (top: ${hists[0].step}, bottom: ${hists[hists.length - 1].step}); x from ${mlop.number(lo)} to ${mlop.number(hi)}`));
  }

  function histogram(data) {
    if (typeof data === "string") data = JSON.parse(data);
    const freq = data.freq || [];
    let edges = data.bins;
    if (!Array.isArray(edges)) {
      const width = (edges.max - edges.min) / Math.max(1, edges.num);
      edges = freq.map((_, i) => edges.min + i * width);
    }
    const box = mlop.el("div", { class: "histogram" });
    setTimeout(() => new uPlot({ width: 480, height: 200, legend: { show: false },
      scales: { x: { time: false } },
      series: [{}, { fill: "#93c5fd", stroke: "#2563eb", paths: uPlot.paths.bars({ size: [1, Infinity] }) }] },
    [edges.slice(0, freq.length), freq], box), 0);
    return box;
  }

  function table(data) {
    if (typeof data === "string") data = JSON.parse(data);
    const cols = (data.col || []).map((c) => c.name);
    const rows = data.table || [];
    return mlop.el("table", { class: "grid" },
      mlop.el("thead", {}, mlop.el("tr", {}, cols.map((c) => mlop.el("th", {}, c)))),
      mlop.el("tbody", {}, rows.slice(0, 1000).map((r) => mlop.el("tr", {}, r.map((v) => mlop.el("td", {}, typeof v === "object" ? JSON.stringify(v) : v))))));
  }

  async function logsTab(pane, run) {
    const lines = await mlop.api(`/api/runs/${run.id}/logs?limit=20000`);
    const search = mlop.el("input", { type: "search", id: "log-search", placeholder: "search the console" });
    const out = mlop.el("pre", { class: "logs" });
    const draw = () => {
      const word = search.value.toLowerCase();
      const shown = word ? lines.filter((l) => l.message.toLowerCase().includes(word)) : lines;
      out.innerHTML = shown.map((l) => `<span class="${l.logType === "ERROR" ? "err" : ""}">${mlop.esc(l.message)}</span>`).join("\n");
    };
    search.addEventListener("input", draw);
    pane.append(mlop.el("div", { class: "controls" }, search, mlop.el("span", { class: "muted" }, `${lines.length} lines`)), out);
    draw();
  }

  function graphTab(pane, run) {
    const nodes = (run.graph && run.graph.nodes) || {};
    const names = Object.keys(nodes);
    if (!names.length) return pane.append(mlop.el("p", { class: "muted" }, "No model graph."));
    const list = mlop.el("ul", { class: "graph" }, names.map((name) => {
      const n = nodes[name];
      const params = n.params ? " " + Object.entries(n.params).map(([p, s]) => `${p}${JSON.stringify(s)}`).join(" ") : "";
      return mlop.el("li", { style: `margin-left:${(n.depth || 0) * 1.2}em` }, mlop.el("b", {}, name), " ", n.type, mlop.el("span", { class: "muted" }, params));
    }));
    pane.append(list);
  }

  // A run's page; `tab` (from #/run/ID/TAB) picks the tab it opens on.
  mlop.runPage = async function (main, runId, tab) {
    const [run, keys] = await Promise.all([mlop.api(`/api/runs/${runId}`), mlop.api(`/api/runs/${runId}/keys`)]);
    mlop.crumbs(mlop.el("a", { href: "#/p/" + mlop.q(run.project) }, run.project), run.name);
    let head = header(run);
    const tabs = ["overview", "charts", "media", "histograms", "tables", "text", "logs", "config", "environment", "graph"];
    // "media" holds every file key (images, audio, video, text files, artifacts); "text" the string series.
    const bar = mlop.el("nav", { class: "tabs" });
    const pane = mlop.el("div", { id: "pane" });
    main.replaceChildren(head, tagEditor(run), bar, pane);
    const live = {};
    let current = null;
    async function open(tab) {
      current = tab;
      bar.querySelectorAll("button").forEach((b) => b.classList.toggle("on", b.dataset.tab === tab));
      mlop.clearCharts();
      live.charts = null;
      pane.replaceChildren();
      pane.dataset.tab = tab;
      if (tab === "overview") await mlop.overviewTab(pane, run, keys);  // overview.js
      else if (tab === "charts") await chartsTab(pane, run, keys, live);
      else if (tab === "media") await mediaTab(pane, run, keys);
      else if (tab === "histograms") await dataTab(pane, run, keys, "HISTOGRAM");
      else if (tab === "tables") await dataTab(pane, run, keys, "TABLE");
      else if (tab === "text") await dataTab(pane, run, keys, "DATA");
      else if (tab === "logs") await logsTab(pane, run);
      else if (tab === "config") pane.append(pre(run.config));
      else if (tab === "environment") pane.append(mlop.el("h3", {}, "system"), pre(run.systemMetadata),
        mlop.el("h3", {}, "logger settings"), pre(run.loggerSettings), mlop.el("h3", {}, "status"), pre(run.statusMetadata));
      else if (tab === "graph") graphTab(pane, run);
      mlop.ready("run-" + tab);
    }
    for (const name of tabs) bar.append(mlop.el("button", { "data-tab": name, onclick: () => {
      history.replaceState(null, "", `#/run/${runId}/${name}`);
      open(name);
    } }, name));
    await open(tabs.includes(tab) ? tab : "charts");
    // A live run: its charts, new keys and status follow it until it ends.
    let busy = false;
    mlop.every(POLL_MS, async () => {
      if (run.status !== "RUNNING" || busy) return;
      busy = true;
      try {
        const [fresh, freshKeys] = await Promise.all([mlop.api(`/api/runs/${runId}`), mlop.api(`/api/runs/${runId}/keys`)]);
        keys.splice(0, keys.length, ...freshKeys);
        Object.assign(run, { status: fresh.status, updated: fresh.updated, statusMetadata: fresh.statusMetadata,
          cancelRequested: fresh.cancelRequested, ended: fresh.ended, duration: fresh.duration });
        const fresh_head = header(run);
        head.replaceWith(fresh_head);
        head = fresh_head;
        if (current === "charts" && live.charts) await live.charts(keys.filter((k) => k.type === "METRIC").map((k) => k.name));
      } finally {
        busy = false;
      }
    });
  };
})();
