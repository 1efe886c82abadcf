// A run's overview tab: status (with the failure's trace), start, end and duration on the client's clock,
// notes (editable), where it ran (host, Python, git commit and diff, command line), config, summary,
// the last system metrics, and the console with a search box.
"use strict";
(function () {
  const mlop = window.mlop;
  // Console lines read for the search at most; matches shown at most.
  const LOG_LINES = 20000;
  const SHOWN_LINES = 2000;
  // System metrics shown in the overview's table at most (the /api/runs/last limit).
  const SYSTEM_KEYS = 20;

  // {a: {b: 1}} -> [["a.b", 1]]; arrays and scalars are leaves.
  function flatten(value, prefix, out) {
    out = out || [];
    if (value && typeof value === "object" && !Array.isArray(value)) {
      const keys = Object.keys(value);
      if (!keys.length && prefix) out.push([prefix, "{}"]);
      for (const k of keys) flatten(value[k], prefix ? `${prefix}.${k}` : k, out);
    } else if (prefix) {
      out.push([prefix, value]);
    }
    return out;
  }

  function shown(value) {
    if (value == null) return "-";
    if (typeof value === "number") return mlop.number(value);
    return typeof value === "object" ? JSON.stringify(value) : String(value);
  }

  // A two-column table of (name, value); `id` names it for tests and links.
  function pairs(id, rows, empty) {
    if (!rows.length) return mlop.el("p", { class: "muted", id }, empty);
    return mlop.el("table", { class: "grid kv", id },
      mlop.el("tbody", {}, rows.map(([k, v]) => mlop.el("tr", { "data-key": k },
        mlop.el("th", {}, k), mlop.el("td", { "data-type": typeof v }, shown(v))))));
  }

  function section(title, ...children) {
    return mlop.el("section", { class: "ov" }, mlop.el("h2", {}, title), ...children);
  }

  // Status, and for a run that did not complete, what ended it (type, message and trace as the client sent).
  function statusPart(run) {
    const meta = run.statusMetadata;
    const status = run.status.toLowerCase();
    const parts = [mlop.el("span", { class: "status " + status, id: "ov-status", "data-status": run.status }, status)];
    if (meta && (meta.type || meta.message || meta.trace)) {
      parts.push(mlop.el("p", { class: "error", id: "ov-error" }, [meta.type, meta.message].filter(Boolean).join(": ")));
      const frames = (meta.frames || []).map((f) => `  ${f.filename}:${f.lineno} in ${f.name}\n    ${f.line || ""}`).join("\n");
      const trace = meta.trace || frames;
      if (trace) parts.push(mlop.el("pre", { class: "logs trace", id: "ov-trace" }, trace));
    }
    return parts;
  }

  // Start, end and duration: the client's own clock (a synced run shows when it ran, not when it was sent).
  function timesPart(run) {
    const start = run.start != null ? run.start : run.created;
    const running = run.status === "RUNNING";
    const duration = mlop.runDuration(run);
    return mlop.el("table", { class: "grid kv", id: "ov-times" }, mlop.el("tbody", {},
      mlop.el("tr", {}, mlop.el("th", {}, "start"), mlop.el("td", { id: "ov-start", "data-ms": start, title: mlop.utc(start) },
        mlop.when(start))),
      mlop.el("tr", {}, mlop.el("th", {}, "end"), mlop.el("td", { id: "ov-end", "data-ms": running ? null : run.ended,
        title: running ? null : mlop.utc(run.ended) },
        running ? "running" : mlop.when(run.ended))),
      mlop.el("tr", {}, mlop.el("th", {}, "duration"),
        mlop.el("td", { id: "ov-duration", "data-ms": duration == null ? null : duration }, mlop.duration(duration)))));
  }

  function notesPart(run) {
    const config = run.config || {};
    const current = typeof config.notes === "string" ? config.notes : "";
    const input = mlop.el("textarea", { id: "notes-input", rows: 3, "aria-label": "notes",
      placeholder: "notes about this run (kept on the server)" });
    input.value = current;
    const note = mlop.el("span", { class: "muted", id: "notes-note" });
    const save = mlop.el("button", { id: "notes-save", onclick: async () => {
      const notes = input.value;
      note.textContent = "saving…";
      try {
        // notes are the config key `notes` (as the wandb drop-in's init(notes=...) records them)
        await mlop.post("/api/runs/config/update", { runId: run.id, config: JSON.stringify({ notes }) });
        run.config = Object.assign({}, run.config || {}, { notes });
        note.textContent = "saved";
      } catch (e) {
        note.textContent = "not saved: " + e.message;
      }
    } }, "save notes");
    return mlop.el("div", { class: "notes" }, input, mlop.el("div", { class: "controls" }, save, note));
  }

  // Where and how the run ran, from the systemMetadata the client recorded at init().
  function environmentPart(run) {
    const sys = run.systemMetadata || {};
    const git = sys.git || {};
    const proc = sys.process || {};
    const python = sys.python || {};
    const platform = sys.platform || {};
    const gpus = (sys.gpu || []).map((g) => g.name || g.model).filter(Boolean);
    const rows = [
      ["host", sys.hostname || platform.node],
      ["os", platform.platform || [platform.system, platform.release].filter(Boolean).join(" ") || null],
      ["python", python.version ? `${python.version} (${python.implementation || "Python"}) ${python.executable || ""}`.trim() : null],
      ["git commit", git.commit ? git.commit + (git.dirty ? " (uncommitted changes)" : "") : null],
      ["git branch", git.branch],
      ["git remote", git.remote],
      ["command", Array.isArray(proc.cmdline) ? proc.cmdline.join(" ") : proc.cmdline],
      ["folder", proc.cwd],
      ["gpus", gpus.length ? gpus.join(", ") : null],
    ].filter(([, v]) => v != null && v !== "");
    const parts = [mlop.el("table", { class: "grid kv", id: "ov-env" }, mlop.el("tbody", {},
      rows.map(([k, v]) => mlop.el("tr", { "data-field": k }, mlop.el("th", {}, k), mlop.el("td", { class: "wrap" }, String(v))))))];
    if (!rows.length) parts[0] = mlop.el("p", { class: "muted", id: "ov-env" }, "The client recorded no environment.");
    if (git.diff) {
      parts.push(mlop.el("details", { id: "ov-diff" },
        mlop.el("summary", {}, "git diff" + (git.diff_truncated ? " (cut at 256 KiB)" : "")),
        mlop.el("pre", { class: "logs diff" }, git.diff)));
    }
    return parts;
  }

  // The last, lowest and highest value of each system metric (sys/...).
  async function systemPart(run, keys) {
    const names = keys.filter((k) => k.type === "METRIC" && k.name.startsWith("sys/")).map((k) => k.name).sort().slice(0, SYSTEM_KEYS);
    const box = mlop.el("div", { id: "ov-system" });
    if (!names.length) {
      box.append(mlop.el("p", { class: "muted" }, "No system metrics."));
      return box;
    }
    const query = names.map((k) => "key=" + mlop.q(k)).join("&");
    const [last, series] = await Promise.all([
      mlop.api(`/api/runs/last?project=${mlop.q(run.project)}&${query}`),
      mlop.api(`/api/runs/${run.id}/series?${query}&max_points=200`),
    ]);
    const mine = (last.find((r) => r.id === run.id) || { values: {} }).values;
    box.append(mlop.el("table", { class: "grid" },
      mlop.el("thead", {}, mlop.el("tr", {}, ["metric", "last", "min", "max"].map((h) => mlop.el("th", { class: h === "metric" ? "" : "num" }, h)))),
      mlop.el("tbody", {}, names.map((name) => {
        const values = ((series[name] || {}).values || []).filter((v) => typeof v === "number");
        const low = values.length ? Math.min(...values) : null;
        const high = values.length ? Math.max(...values) : null;
        return mlop.el("tr", { "data-key": name }, mlop.el("td", {}, name),
          [mine[name], low, high].map((v) => mlop.el("td", { class: "num" }, mlop.number(v))));
      }))));
    return box;
  }

  // The console: every line (up to LOG_LINES), filtered by a search box; errors (stderr) in red.
  async function consolePart(run) {
    const lines = await mlop.api(`/api/runs/${run.id}/logs?limit=${LOG_LINES}`);
    const search = mlop.el("input", { type: "search", id: "ov-log-search", placeholder: "search the console", "aria-label": "search the console" });
    const count = mlop.el("span", { class: "muted", id: "ov-log-count" });
    const out = mlop.el("pre", { class: "logs", id: "ov-log" });
    const draw = () => {
      const word = search.value.toLowerCase();
      const found = word ? lines.filter((l) => l.message.toLowerCase().includes(word)) : lines;
      const tail = found.slice(-SHOWN_LINES);
      count.textContent = word ? `${found.length} of ${lines.length} lines match` : `${lines.length} lines`;
      out.replaceChildren(...tail.map((l) => {
        const row = mlop.el("span", { class: l.logType === "ERROR" ? "line err" : "line", "data-line": l.lineNumber });
        const text = l.message;
        const at = word ? text.toLowerCase().indexOf(word) : -1;
        if (at < 0) row.textContent = text;
        else row.append(text.slice(0, at), mlop.el("mark", {}, text.slice(at, at + word.length)), text.slice(at + word.length));
        return row;
      }));
    };
    search.addEventListener("input", draw);
    draw();
    return [mlop.el("div", { class: "controls" }, search, count), out];
  }

  // The overview of `run` (GET /api/runs/ID) into `pane`; `keys` are its keys (GET /api/runs/ID/keys).
  mlop.overviewTab = async function (pane, run, keys) {
    const config = Object.assign({}, run.config || {});
    const summary = config.summary && typeof config.summary === "object" ? config.summary : {};
    delete config.summary;
    delete config.notes;
    const [system, lines] = await Promise.all([systemPart(run, keys), consolePart(run)]);
    pane.append(mlop.el("div", { class: "overview", "data-testid": "run-overview" },
      mlop.el("div", { class: "ovcols" },
        mlop.el("div", {},
          section("Status", ...statusPart(run), timesPart(run)),
          section("Notes", notesPart(run)),
          section("Environment", ...environmentPart(run))),
        mlop.el("div", {},
          section("Config", pairs("ov-config", flatten(config), "No config.")),
          section("Summary", pairs("ov-summary", flatten(summary), "No summary.")),
          section("System", system))),
      section("Console", ...lines)));
  };
})();
