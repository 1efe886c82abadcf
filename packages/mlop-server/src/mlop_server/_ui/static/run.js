// A run: metric charts by group (following a live run), media at a step, histograms, tables, text,
// console logs with search, config, environment, tags (editable) and the model graph.
"use strict";
(function () {
  const mlop = window.mlop;
  const POLL_MS = 2000;

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
      live.refresh = null;
      pane.replaceChildren();
      pane.dataset.tab = tab;
      if (tab === "overview") await mlop.overviewTab(pane, run, keys);  // overview.js
      else if (tab === "charts") await mlop.chartsTab(pane, run, keys, live);  // layout.js
      else if (tab === "media") await mlop.mediaTab(pane, run, keys, live);  // media.js
      else if (tab === "histograms") await mlop.dataTab(pane, run, keys, "HISTOGRAM", live);
      else if (tab === "tables") await mlop.dataTab(pane, run, keys, "TABLE", live);
      else if (tab === "text") await mlop.dataTab(pane, run, keys, "DATA", live);
      else if (tab === "logs") await logsTab(pane, run);
      else if (tab === "config") pane.append(pre(run.config));
      else if (tab === "environment") pane.append(mlop.el("h3", {}, "system"), pre(run.systemMetadata),
        mlop.el("h3", {}, "logger settings"), pre(run.loggerSettings), mlop.el("h3", {}, "status"), pre(run.statusMetadata));
      else if (tab === "graph") mlop.graphTab(pane, run);  // graph.js
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
        if (live.refresh) await live.refresh(keys);  // media and data tabs
      } finally {
        busy = false;
      }
    });
  };
})();
