// Across runs, on the project page: parallel coordinates of the chosen config columns and one metric (brushing
// an axis filters the runs table), a scatter of any two columns, and each hyperparameter's Spearman
// correlation with the metric (computed by the server: /api/runs/correlation). Plain SVG, no library.
// The chart's axes follow the table's config columns until the user picks its own (the axis picker: which
// config columns, in which order); the pick and the metric are the project's setting "across", as the
// table's columns are its setting "columns".
"use strict";
(function () {
  const mlop = window.mlop;
  const NS = "http://www.w3.org/2000/svg";
  const MAX_AXES = 12;  // the metric's axis included
  // Lines and points drawn at most (the newest runs); the correlation list always uses every matching run.
  const MAX_DRAWN = 2000;

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v != null) node.setAttribute(k, v);
    for (const c of children) if (c != null) node.append(c);
    return node;
  }
  const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);
  // A literal of the filter language for a value.
  const literal = (v) => (typeof v === "number" ? String(v) : JSON.stringify(String(v)));
  // A column name for the filter language: as is when it reads as a name, else in backticks.
  const ident = (col) => (/^[A-Za-z_][\w./:-]*$/.test(col) ? col : "`" + col + "`");

  // A scale of one axis over the values given: numbers (linear, or log when they span decades), else categories.
  function scaleOf(values) {
    const nums = values.map(num).filter((v) => v != null);
    const texts = [...new Set(values.filter((v) => v != null && num(v) == null).map(String))].sort();
    if (nums.length && !texts.length) {
      let lo = Math.min(...nums), hi = Math.max(...nums);
      const log = lo > 0 && hi / lo >= 100;
      const f = log ? Math.log10 : (x) => x;
      let a = f(lo), b = f(hi);
      if (a === b) { a -= 1; b += 1; }
      return { kind: log ? "log" : "linear", lo, hi,
        at: (v) => (num(v) == null ? null : (f(v) - a) / (b - a)),
        from: (t) => (log ? 10 ** (a + t * (b - a)) : a + t * (b - a)),
        ticks: log ? [lo, hi] : [lo, (lo + hi) / 2, hi] };
    }
    const cats = [...new Set([...texts, ...nums.map(String)])].sort();
    return { kind: "category", cats,
      at: (v) => (v == null ? null : (cats.length === 1 ? 0.5 : cats.indexOf(String(v)) / (cats.length - 1))),
      ticks: cats };
  }
  // An axis' tick (four significant digits: 1093, not 1093.4157) and a value in full (the tooltip).
  const tickText = (v) => (typeof v === "number" ? mlop.number(Number(v.toPrecision(4))) : String(v)).slice(0, 14);
  const valueText = (v) => (typeof v === "number" ? mlop.number(v) : String(v));
  // Text cut to about `px` pixels of the charts' 11px font, with an ellipsis.
  const fit = (text, px) => { const n = Math.max(4, Math.floor(px / 6.6)); return text.length > n ? text.slice(0, n - 1) + "…" : text; };
  const textWidth = (texts) => 6.6 * Math.max(0, ...texts.map((t) => t.length));

  mlop.acrossRuns = function (root, ctx) {
    const metricColumns = ctx.all.filter((c) => c.kind === "metric" || c.kind === "summary");
    const own = metricColumns.filter((c) => mlop.ownMetric(c.label));
    const configColumns = ctx.all.filter((c) => c.kind === "config");
    const metricPick = mlop.el("select", { id: "metric-pick", "data-testid": "metric-pick", "aria-label": "metric" },
      metricColumns.map((c) => mlop.el("option", { value: c.id }, c.label)));
    if (own.length) metricPick.value = own[0].id;
    const numericOrAll = ctx.all.filter((c) => c.kind !== "builtin" || c.numeric);
    const xPick = mlop.el("select", { id: "scatter-x", "aria-label": "scatter x" }, numericOrAll.map((c) => mlop.el("option", { value: c.id }, "x: " + c.label)));
    const yPick = mlop.el("select", { id: "scatter-y", "aria-label": "scatter y" }, numericOrAll.map((c) => mlop.el("option", { value: c.id }, "y: " + c.label)));
    const firstConfig = ctx.all.find((c) => c.kind === "config" && c.numeric);
    if (firstConfig) xPick.value = firstConfig.id;
    yPick.value = metricPick.value;
    const clear = mlop.el("button", { id: "clear-brushes" }, "clear brushes");
    const note = mlop.el("span", { class: "muted", id: "across-note" });
    const axesButton = mlop.el("button", { id: "axes-button", "aria-expanded": "false", "aria-controls": "axis-picker" }, "axes");
    const axesNote = mlop.el("span", { class: "muted", id: "axes-note" });
    const picker = mlop.el("div", { class: "chooser axis-picker", "data-testid": "axis-picker", id: "axis-picker", hidden: true });
    const parallel = mlop.el("div", { class: "parallel", "data-testid": "parallel-coordinates", id: "parallel" });
    const scatter = mlop.el("div", { class: "scatter", "data-testid": "scatter", id: "scatter" });
    const tip = mlop.el("div", { class: "tip", id: "scatter-tip", hidden: true });
    const correlation = mlop.el("div", { class: "correlation", "data-testid": "param-correlation", id: "param-correlation" });
    root.replaceChildren(mlop.el("h2", {}, "Across runs"),
      mlop.el("div", { class: "controls" }, mlop.el("label", {}, "metric (the last axis, ★) ", metricPick), axesButton, clear, axesNote, note),
      picker, parallel,
      mlop.el("div", { class: "across-row" },
        mlop.el("div", { class: "panel" }, mlop.el("div", { class: "controls" }, xPick, yPick), scatter, tip),
        mlop.el("div", { class: "panel" }, mlop.el("h3", {}, "Which knob mattered (Spearman)"), correlation)));

    const brushes = new Map();  // column -> {t0, t1} (axis fractions), the values inside
    let data = null;
    const P = mlop.q(ctx.project);
    const metric = () => mlop.queryColumn(metricPick.value, ctx.aggs());
    const column = (id) => mlop.queryColumn(id, ctx.aggs());

    // -- the axes: the table's config columns, or the chart's own pick, kept for the project ----------------
    const settingUrl = `/api/projects/settings?project=${P}&name=across`;
    const view = { axes: null, metric: null };  // axes null: follow the table
    const loaded = mlop.api(settingUrl).then((answer) => {
      const v = answer.value;
      if (!v || typeof v !== "object") return;
      if (Array.isArray(v.axes)) view.axes = v.axes.filter((id) => typeof id === "string");
      if (typeof v.metric === "string" && metricColumns.some((c) => c.id === v.metric)) {
        view.metric = metricPick.value = yPick.value = v.metric;
      }
    }).catch((e) => { mlop.setStatus("the chart's axes were not loaded: " + (e.message || e)); });
    const isConfig = (id) => (ctx.byId.get(id) || {}).kind === "config";
    const configAxes = () => (view.axes ? view.axes.filter(isConfig) : ctx.chosen()).slice(0, MAX_AXES - 1);
    const axes = () => [...configAxes().map(column), metric()];
    const labelOf = (id) => (ctx.byId.get(id) || { label: id }).label;

    async function saveView() {
      try {
        await mlop.put(settingUrl, view);
        axesNote.textContent = "axes saved for the project";
      } catch (e) {
        axesNote.textContent = "axes not saved: " + (e.message || e);
      }
    }
    function drawPicker() {
      const chosen = configAxes();
      const free = configColumns.filter((c) => !chosen.includes(c.id));
      const full = chosen.length >= MAX_AXES - 1;
      picker.replaceChildren(
        mlop.el("p", { class: "muted" }, view.axes
          ? "The chart's own axes, kept for the project. "
          : "The axes follow the table's config columns; a change here gives the chart its own. ",
        view.axes ? mlop.el("button", { "data-action": "follow" }, "follow the table") : null),
        mlop.el("ol", { class: "shown" }, chosen.map((id, i) => mlop.el("li", { "data-axis": id, draggable: "true", title: "drag to move" },
          mlop.el("span", { class: "grip", "aria-hidden": "true" }, "⠿ "), mlop.el("span", { class: "label" }, labelOf(id)), " ",
          mlop.el("button", { "data-left": String(i), title: "move left", disabled: i === 0 }, "←"),
          mlop.el("button", { "data-right": String(i), title: "move right", disabled: i === chosen.length - 1 }, "→"),
          mlop.el("button", { "data-remove": String(i), title: "remove the axis" }, "✕")))),
        mlop.el("label", {}, "add an axis ", mlop.el("select", { "data-add": "", disabled: full || !free.length },
          mlop.el("option", { value: "" }, full ? `(at most ${MAX_AXES - 1})` : free.length ? "…" : configColumns.length ? "(all are axes)" : "(no config keys)"),
          free.map((c) => mlop.el("option", { value: c.id }, c.label)))));
    }
    async function setAxes(list) {
      view.axes = list;
      drawPicker();
      await saveView();
      await refresh();
      mlop.ready("runs");
    }
    axesButton.addEventListener("click", () => {
      picker.hidden = !picker.hidden;
      axesButton.setAttribute("aria-expanded", String(!picker.hidden));
      if (!picker.hidden) drawPicker();
    });
    picker.addEventListener("click", async (e) => {
      const b = e.target.closest("button");
      if (!b) return;
      const list = configAxes();
      const at = (name) => Number(b.dataset[name]);
      if (b.dataset.action === "follow") return setAxes(null);
      if (b.dataset.left) list.splice(at("left") - 1, 0, ...list.splice(at("left"), 1));
      else if (b.dataset.right) list.splice(at("right") + 1, 0, ...list.splice(at("right"), 1));
      else if (b.dataset.remove) list.splice(at("remove"), 1);
      else return;
      await setAxes(list);
    });
    picker.addEventListener("change", async (e) => {
      if (!e.target.hasAttribute("data-add") || !e.target.value) return;
      await setAxes([...configAxes(), e.target.value]);
    });
    // An axis moved next to another (dragged in the picker, or by its name on the chart).
    function moveAxis(id, target, after) {
      const list = configAxes().filter((x) => x !== id);
      list.splice(list.indexOf(target) + (after ? 1 : 0), 0, id);
      return setAxes(list);
    }
    mlop.dragReorder(picker, "li[data-axis]", "data-axis", moveAxis);

    // The brushes as filter conditions for the table (and which runs they keep).
    function conditions() {
      const out = [];
      for (const [col, b] of brushes) {
        const s = b.scale;
        if (s.kind === "category") {
          const inside = s.cats.filter((c) => { const t = s.at(c); return t >= b.t0 && t <= b.t1; });
          const values = inside.map((c) => literal(data.columns[col].find((v) => v != null && String(v) === c)));
          out.push(values.length ? `${ident(col)} in (${values.join(", ")})` : "id < 0");
        } else {
          out.push(`${ident(col)} >= ${literal(s.from(b.t0))} and ${ident(col)} <= ${literal(s.from(b.t1))}`);
        }
      }
      return out;
    }
    function kept(i) {
      for (const [col, b] of brushes) {
        const t = b.scale.at(data.columns[col][i]);
        if (t == null || t < b.t0 - 1e-9 || t > b.t1 + 1e-9) return false;
      }
      return true;
    }

    // -- parallel coordinates -----------------------------------------------------------------------------
    function drawParallel() {
      const cols = axes().filter((c) => data.columns[c]);
      const W = Math.max(480, parallel.clientWidth || 900), H = 280, top = 28, bottom = 24, left = 70, right = 70;
      const room = Math.min(2 * left, cols.length > 1 ? (W - left - right) / (cols.length - 1) - 8 : W);  // a label's width
      const x = (i) => left + (cols.length === 1 ? 0 : (i * (W - left - right)) / (cols.length - 1));
      const y = (t) => top + (1 - t) * (H - top - bottom);
      const scales = Object.fromEntries(cols.map((c) => [c, scaleOf(data.columns[c])]));
      for (const [c, b] of brushes) if (scales[c]) b.scale = scales[c];
      const lines = svg("g", { class: "lines" });
      data.ids.forEach((id, i) => {
        let d = "", gap = false;
        cols.forEach((c, k) => {
          const t = scales[c].at(data.columns[c][i]);
          if (t == null) { gap = true; return; }
          d += `${d && !gap ? "L" : "M"}${x(k).toFixed(1)},${y(t).toFixed(1)}`;
          gap = false;
        });
        const on = kept(i);
        const path = svg("path", { d, "data-run": id, class: on ? "on" : "off" }, svg("title", {}, data.names[i]));
        lines.append(path);
      });
      const axesG = svg("g", { class: "axes" });
      cols.forEach((c, k) => {
        const s = scales[c];
        const g = svg("g", { class: "axis", "data-axis": c, transform: `translate(${x(k)},0)` });
        g.append(svg("line", { y1: y(0), y2: y(1) }));
        const label = ctx.byId.get(c.replace(/\.(last|min|max)$/, ""));
        const name = (label ? label.label : c) + (c === metric() ? " ★" : "");
        const movable = c !== metric() && cols.length > 2;
        const title = svg("text", { y: 14, class: "axis-label" + (movable ? " movable" : ""), "text-anchor": "middle" },
          fit(name, room), svg("title", {}, movable ? `${c} (drag sideways to move the axis)` : c));
        g.append(title);
        if (movable) title.addEventListener("mousedown", (e) => dragAxis(e, g, c, k, x));
        for (const v of s.ticks) {
          const t = s.at(v);
          g.append(svg("text", { x: -5, y: y(t) + 4, "text-anchor": "end", class: "tick" }, tickText(v)));
        }
        const b = brushes.get(c);
        if (b) g.append(svg("rect", { class: "brush", x: -7, width: 14, y: y(b.t1), height: Math.max(2, y(b.t0) - y(b.t1)) }));
        const hit = svg("rect", { class: "hit", x: -12, width: 24, y: y(1) - 4, height: y(0) - y(1) + 8, "data-axis": c });
        g.append(hit);
        g.dataset.brush = b ? `${b.t0.toFixed(4)},${b.t1.toFixed(4)}` : "";
        axesG.append(g);
        hit.addEventListener("mousedown", (e) => {
          e.preventDefault();
          const box = parallel.querySelector("svg").getBoundingClientRect();
          const frac = (ev) => Math.min(1, Math.max(0, 1 - (ev.clientY - box.top - top) / (H - top - bottom)));
          const start = frac(e);
          let moved = false;
          const move = (ev) => {
            const now = frac(ev);
            if (Math.abs(now - start) < 0.01) return;
            moved = true;
            brushes.set(c, { t0: Math.min(start, now), t1: Math.max(start, now), scale: s });
            drawParallel();
          };
          const up = async () => {
            window.removeEventListener("mousemove", move);
            window.removeEventListener("mouseup", up);
            if (!moved) brushes.delete(c);  // a click clears the axis' brush
            drawParallel();
            await brushed();
          };
          window.addEventListener("mousemove", move);
          window.addEventListener("mouseup", up);
        });
      });
      const chart = svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}` }, lines, axesG);
      parallel.replaceChildren(chart);
      parallel.dataset.runs = String(data.ids.length);
      parallel.dataset.kept = String(data.ids.filter((_, i) => kept(i)).length);
    }

    // An axis dragged sideways by its name: it follows the pointer, and lands by the config axis nearest
    // to where it is let go (the metric's axis stays last).
    function dragAxis(e, g, c, k, x) {
      e.preventDefault();
      const startX = e.clientX;
      let dx = 0;
      const move = (ev) => {
        dx = ev.clientX - startX;
        g.setAttribute("transform", `translate(${x(k) + dx},0)`);
        g.classList.toggle("moving", Math.abs(dx) > 3);
      };
      const up = async () => {
        window.removeEventListener("mousemove", move);
        window.removeEventListener("mouseup", up);
        const shown = axes().filter((a) => data.columns[a] && a !== metric());
        let j = k;
        shown.forEach((a, i) => { if (Math.abs(x(i) - x(k) - dx) < Math.abs(x(j) - x(k) - dx)) j = i; });
        if (j === k) { drawParallel(); return; }
        await moveAxis(c, shown[j], j > k);
      };
      window.addEventListener("mousemove", move);
      window.addEventListener("mouseup", up);
    }

    // -- scatter --------------------------------------------------------------------------------------------
    async function drawScatter() {
      const cx = column(xPick.value), cy = column(yPick.value);
      let got = data;
      if (!got.columns[cx] || !got.columns[cy]) {
        got = await mlop.api(`/api/runs/values?project=${P}&limit=${MAX_DRAWN}&filter=${mlop.q(ctx.filter())}` +
          `&column=${mlop.q(cx)}&column=${mlop.q(cy)}` +
          axes().map((c) => "&column=" + mlop.q(c)).join(""));
      }
      const sx = scaleOf(got.columns[cx]), sy = scaleOf(got.columns[cy]);
      // the left margin holds the longest y tick and the axis' name: never clipped
      const W = Math.max(360, scatter.clientWidth || 480), H = 300, top = 16, right = 24, bottom = 44;
      const left = Math.max(56, Math.ceil(textWidth(sy.ticks.map(tickText))) + 30);
      const px = (t) => left + t * (W - left - right), py = (t) => H - bottom - t * (H - top - bottom);
      const nameOf = (c) => { const col = ctx.byId.get(c.replace(/\.(last|min|max)$/, "")); return col ? col.label + (c === col.id ? "" : c.slice(col.id.length)) : c; };
      const pts = svg("g", { class: "points" });
      let shown = 0;
      got.ids.forEach((id, i) => {
        const tx = sx.at(got.columns[cx][i]), ty = sy.at(got.columns[cy][i]);
        if (tx == null || ty == null) return;
        let inside = true;
        for (const [col, b] of brushes) {
          const t = b.scale.at(got.columns[col] ? got.columns[col][i] : null);
          if (t == null || t < b.t0 - 1e-9 || t > b.t1 + 1e-9) inside = false;
        }
        if (!inside) return;
        shown += 1;
        const dot = svg("circle", { cx: px(tx), cy: py(ty), r: 5,
          "data-run": id, "data-name": got.names[i], class: "point " + String(got.status[i]).toLowerCase() });
        dot.addEventListener("mouseenter", (e) => {
          tip.hidden = false;
          tip.textContent = `${got.names[i]} · ${valueText(got.columns[cx][i])}, ${valueText(got.columns[cy][i])}`;
          tip.style.left = `${e.offsetX + 12}px`;
          tip.style.top = `${e.offsetY + 12}px`;
        });
        dot.addEventListener("mouseleave", () => { tip.hidden = true; });
        dot.addEventListener("click", () => { location.hash = "#/run/" + id; });
        pts.append(dot);
      });
      const frame = svg("g", { class: "frame" },
        svg("line", { x1: left, y1: py(0), x2: W - right, y2: py(0) }), svg("line", { x1: left, y1: top, x2: left, y2: py(0) }),
        svg("text", { x: px(0.5), y: H - 8, "text-anchor": "middle", class: "axis-name" }, fit(nameOf(cx), W - left - right), svg("title", {}, cx)),
        svg("text", { x: 12, y: py(0.5), transform: `rotate(-90 12 ${py(0.5)})`, "text-anchor": "middle", class: "axis-name" },
          fit(nameOf(cy), H - top - bottom), svg("title", {}, cy)),
        ...sx.ticks.map((v) => svg("text", { x: px(sx.at(v)), y: py(0) + 16, class: "tick",
          "text-anchor": sx.at(v) > 0.95 ? "end" : "middle" }, tickText(v))),
        ...sy.ticks.map((v) => svg("text", { x: left - 6, y: py(sy.at(v)) + 4, "text-anchor": "end", class: "tick" }, tickText(v))));
      scatter.replaceChildren(svg("svg", { width: W, height: H, viewBox: `0 0 ${W} ${H}` }, frame, pts));
      scatter.dataset.points = String(shown);
    }

    // -- correlation ----------------------------------------------------------------------------------------
    async function drawCorrelation() {
      const filter = mlop.joinFilters([ctx.filter(), ...conditions()]);
      const found = await mlop.api(`/api/runs/correlation?project=${P}&metric=${mlop.q(metric())}&filter=${mlop.q(filter)}`);
      const rows = found.correlations.map((c) => {
        const label = c.column.slice(7);
        const rho = c.rho == null ? null : c.rho;
        const bar = rho == null ? "" : `<span class="bar ${rho < 0 ? "neg" : "pos"}" style="width:${(Math.abs(rho) * 100).toFixed(1)}%"></span>`;
        return `<li data-column="${mlop.esc(c.column)}" data-rho="${rho == null ? "" : rho}" data-n="${c.n}">` +
          `<span class="label" title="${mlop.esc(c.column)}">${mlop.esc(label)}</span><span class="track">${bar}</span>` +
          `<span class="num">${rho == null ? "–" : rho.toFixed(2)}</span><span class="muted num">n=${c.n}</span></li>`;
      }).join("");
      correlation.innerHTML = `<p class="muted">Spearman's ρ with ${mlop.esc(found.metric)} over ${found.runs} runs</p>` +
        (rows ? `<ol>${rows}</ol>` : `<p class="muted">no numeric config columns</p>`);
      correlation.dataset.metric = found.metric;
    }

    async function brushed() {
      await ctx.brushed(conditions());
      await drawScatter();
      await drawCorrelation();
      root.dataset.drawn = String(Date.now());
    }
    async function refresh() {
      if (!metricColumns.length) { root.replaceChildren(); return; }
      await loaded;
      const cols = [...new Set([...axes(), column(xPick.value), column(yPick.value)])];
      data = await mlop.api(`/api/runs/values?project=${P}&limit=${MAX_DRAWN}&filter=${mlop.q(ctx.filter())}` +
        cols.map((c) => "&column=" + mlop.q(c)).join(""));
      note.textContent = data.ids.length >= MAX_DRAWN ? `the newest ${MAX_DRAWN} matching runs are drawn` : "";
      // a brush on an axis that is gone (taken off, another metric or aggregate) stops filtering the table
      const drawn = new Set(axes().filter((c) => data.columns[c]));
      const gone = [...brushes.keys()].filter((c) => !drawn.has(c));
      for (const c of gone) brushes.delete(c);
      if (gone.length) await ctx.brushed(conditions());
      drawParallel();
      await drawScatter();
      await drawCorrelation();
      root.dataset.drawn = String(Date.now());
    }
    clear.addEventListener("click", async () => { brushes.clear(); drawParallel(); await brushed(); });
    metricPick.addEventListener("change", async () => {
      view.metric = metricPick.value;
      await saveView();
      await refresh();
      mlop.ready("runs");
    });
    xPick.addEventListener("change", async () => { await drawScatter(); mlop.ready("runs"); });
    yPick.addEventListener("change", async () => { await drawScatter(); mlop.ready("runs"); });
    return {
      refresh: () => refresh().catch((e) => {
        if (e instanceof mlop.Unauthorized) throw e;
        parallel.textContent = String(e.message || e).replace(/^\d+ [^:]*: /, "");  // a bad filter: the table says why
        root.dataset.drawn = String(Date.now());
      }),
    };
  };
})();
