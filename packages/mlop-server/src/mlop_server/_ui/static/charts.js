// Metric charts on uPlot: one chart per key, one line per run. Where the server downsampled a series,
// each bucket's lowest and highest value (lo, hi) is drawn as a band around the line, so no spike hides.
// Smoothing (EMA, the raw line kept faint), log scale, x by step / wall time / relative time, an
// "ignore outliers" y range, y axes sized to their labels, and a tooltip with every run's value.
// window.mlop.charts[key] keeps what each chart draws.
"use strict";
(function () {
  const mlop = window.mlop;
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#db2777",
    "#65a30d", "#4f46e5", "#b45309"];
  mlop.COLORS = COLORS;
  // Points a chart asks for: about two per pixel column (min and max per bucket).
  mlop.MAX_POINTS = 1000;

  // Display options shared by every chart (kept in localStorage: they are the viewer's, not the project's).
  const VIEW_KEY = "mlop.view";
  mlop.view = Object.assign({ x: "step", smoothing: 0, log: false, outliers: false },
    (() => { try { return JSON.parse(localStorage.getItem(VIEW_KEY)) || {}; } catch (e) { return {}; } })());
  function keepView() {
    localStorage.setItem(VIEW_KEY, JSON.stringify(mlop.view));
  }

  // Several downsampled series of a run in one request: {key: {steps, times, values[, lo, hi, total]}}.
  mlop.fetchMany = async function (runId, keys, maxPoints) {
    const query = keys.map((k) => "key=" + mlop.q(k)).join("&");
    return mlop.api(`/api/runs/${runId}/series?${query}&max_points=${maxPoints || mlop.MAX_POINTS}`);
  };

  mlop.EMPTY = { steps: [], times: [], values: [] };

  mlop.fetchSeries = async function (runId, key) {
    return (await mlop.fetchMany(runId, [key]))[key] || mlop.EMPTY;
  };

  // Exponential moving average with a debias term; gaps stay gaps.
  function smooth(values, weight) {
    if (!weight) return values;
    const out = new Array(values.length);
    let last = 0, count = 0;
    for (let i = 0; i < values.length; i++) {
      const v = values[i];
      if (v == null) { out[i] = null; continue; }
      last = last * weight + (1 - weight) * v;
      count++;
      out[i] = last / (1 - Math.pow(weight, count));
    }
    return out;
  }
  mlop.smooth = smooth;

  function xs(series) {
    if (mlop.view.x === "time") return series.times.map((t) => t / 1000);
    if (mlop.view.x === "relative") {
      let start = Infinity;
      for (const t of series.times) if (t < start) start = t;
      return series.times.map((t) => (t - start) / 1000);
    }
    return series.steps;
  }

  function clean(values) {
    const y = values.map(mlop.finite);
    return mlop.view.log ? y.map((v) => (v != null && v > 0 ? v : null)) : y;
  }

  // The columns of one run: x, then its line, its faint raw line (when smoothed), its band (when
  // downsampled). Points are put in x order (a step logged lower than the last one arrives later).
  function runColumns(series) {
    const x = xs(series);
    const raw = clean(series.values);
    const columns = [smooth(raw, mlop.view.smoothing)];
    const roles = ["line"];
    if (mlop.view.smoothing) { columns.push(raw); roles.push("raw"); }
    if (series.lo && series.hi) {
      columns.push(clean(series.lo), clean(series.hi));
      roles.push("lo", "hi");
    }
    let ordered = true;
    for (let i = 1; i < x.length; i++) if (x[i] < x[i - 1]) { ordered = false; break; }
    if (ordered) return { table: [x, ...columns], roles };
    const idx = x.map((_, i) => i).sort((a, b) => x[a] - x[b] || a - b);
    // EMA follows arrival order above; the drawn order is by x.
    return { table: [idx.map((i) => x[i]), ...columns.map((c) => idx.map((i) => c[i]))], roles };
  }

  // Aligned data for uPlot ([x, y1, y2, ...]), what each y column is ({run, role}), and each run's band
  // ({run, lo, hi}, aligned with x): the bands are drawn by the chart itself (drawBands), not as series.
  function aligned(seriesList) {
    const parts = seriesList.map(runColumns);
    const table = parts.length === 1 ? parts[0].table : uPlot.join(parts.map((p) => p.table));
    const data = [table[0]], meta = [], bands = [];
    let k = 1;
    parts.forEach((p, run) => p.roles.forEach((role) => {
      const column = table[k++];
      if (role === "lo") bands.push({ run, lo: column, hi: null });
      else if (role === "hi") bands[bands.length - 1].hi = column;
      else { meta.push({ run, role }); data.push(column); }
    }));
    return { data, meta, bands };
  }

  function alpha(color, a) {
    const n = parseInt(color.slice(1), 16);
    return `rgba(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255}, ${a})`;
  }

  // Each run's band between its buckets' lowest and highest values, under the lines: per run one path of
  // 1 px vertical lines, one per pixel column (the band's edges interpolated between points), which the
  // browser draws as hairlines; a filled polygon per run took 3 times as long to raster (far more than its
  // script) on a compare page of 20 runs.
  function drawBands(entry, u) {
    if (!entry.bands.length) return;
    const x = u.data[0];
    if (!x.length) return;
    const { left, top, width, height } = u.bbox;
    let from = 0, to = x.length - 1;
    while (from < to && x[from + 1] < u.scales.x.min) from++;
    while (to > from && x[to - 1] > u.scales.x.max) to--;
    const ctx = u.ctx;
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top, width, height);
    ctx.clip();
    // canvas pixels of x and y (linear or log y), as uPlot's valToPos(v, scale, true) gives them
    const sx = u.scales.x, sy = u.scales.y;
    const xk = width / (sx.max - sx.min);
    const log = sy.distr === 3;
    const f = log ? Math.log10 : (v) => v;
    const y0 = f(sy.min), yk = height / (f(sy.max) - y0);
    const py = (v) => top + height - (f(v) - y0) * yk;
    if (!(xk > 0 && yk > 0 && isFinite(xk) && isFinite(yk))) { ctx.restore(); return; }  // no range yet
    for (const band of entry.bands) {
      // one column per device pixel: its highest hi and lowest lo (a polygon of at most twice the width)
      const cols = [], tops = [], bottoms = [];
      for (let i = from; i <= to; i++) {
        if (band.lo[i] == null || band.hi[i] == null) continue;
        const px = Math.round(left + (x[i] - sx.min) * xk);
        const top = py(band.hi[i]), bottom = py(band.lo[i]);
        const k = cols.length - 1;
        if (k >= 0 && cols[k] === px) {
          if (top < tops[k]) tops[k] = top;
          if (bottom > bottoms[k]) bottoms[k] = bottom;
        } else {
          cols.push(px);
          tops.push(top);
          bottoms.push(bottom);
        }
      }
      if (!cols.length) continue;
      ctx.beginPath();
      const last = cols.length - 1;
      for (let k = 0; k <= last; k++) {
        const x0 = cols[k], x1 = k < last ? cols[k + 1] : x0 + 1;
        const dt = k < last ? (tops[k + 1] - tops[k]) / (x1 - x0) : 0;
        const db = k < last ? (bottoms[k + 1] - bottoms[k]) / (x1 - x0) : 0;
        for (let px = Math.max(x0, left); px < Math.min(x1, left + width + 1); px++) {  // the plot's columns
          const t = tops[k] + dt * (px - x0);
          ctx.moveTo(px + 0.5, t);
          ctx.lineTo(px + 0.5, Math.max(bottoms[k] + db * (px - x0), t + 1));
        }
      }
      ctx.lineWidth = 1;
      ctx.strokeStyle = alpha(COLORS[band.run % COLORS.length], 0.2);
      ctx.stroke();
      // a spike (a column far taller than the band's usual height) gets a stronger stroke of its own
      const heights = cols.map((_, k) => bottoms[k] - tops[k]);
      const usual = heights.slice().sort((a, b) => a - b)[heights.length >> 1];
      ctx.fillStyle = alpha(COLORS[band.run % COLORS.length], 0.6);
      heights.forEach((h, k) => { if (h > 6 && h > 3 * usual) ctx.fillRect(cols[k], tops[k], 1.5, h); });
    }
    ctx.restore();
  }

  // The y range that leaves out the 1% most extreme values at each end (the lines only, not the bands).
  function robustRange(data, meta) {
    const values = [];
    meta.forEach((m, i) => {
      if (m.role !== "line") return;
      const column = data[i + 1];
      const every = Math.max(1, Math.floor(column.length / 5000));
      for (let j = 0; j < column.length; j += every) if (column[j] != null) values.push(column[j]);
    });
    if (values.length < 5) return null;
    values.sort((a, b) => a - b);
    const lo = values[Math.floor(values.length * 0.01)], hi = values[Math.ceil(values.length * 0.99) - 1];
    const pad = (hi - lo) * 0.1 || Math.abs(hi) * 0.1 || 1;
    return [mlop.view.log ? Math.max(lo - pad, lo / 2) : lo - pad, hi + pad];
  }

  // An axis as wide as its longest label (uPlot's fixed default clips long numbers).
  function axisSize(u, values, axisIdx, cycle) {
    const axis = u.axes[axisIdx];
    if (cycle > 1) return axis._size;
    let size = axis.ticks.size + axis.gap + 8;
    let longest = "";
    for (const v of values || []) if (v != null && String(v).length > longest.length) longest = String(v);
    if (longest) {
      u.ctx.font = axis.font[0];
      size += u.ctx.measureText(longest).width / (window.devicePixelRatio || 1);
    }
    return Math.ceil(size);
  }

  // One floating tooltip for the page: every run's value at the cursor of the chart under the mouse.
  let tip = null;
  function tooltip() {
    if (!tip || !tip.isConnected) {
      tip = mlop.el("div", { class: "charttip", "data-testid": "chart-tooltip" });
      document.body.append(tip);
    }
    return tip;
  }
  // The nearest drawn value of column `c` around index `i` (runs of a compare chart have gaps where
  // other runs have points).
  function near(c, i) {
    for (let d = 0; d < 64; d++) {
      if (i - d >= 0 && c[i - d] != null) return c[i - d];
      if (i + d < c.length && c[i + d] != null) return c[i + d];
    }
    return null;
  }
  function showTip(entry, u) {
    const box = tooltip();
    const i = u.cursor.idx;
    if (!entry.hover || i == null || u.cursor.left < 0) { box.style.display = "none"; return; }
    const x = u.data[0][i];
    const head = mlop.view.x === "time" ? mlop.when(x * 1000) : `${mlop.view.x === "step" ? "step" : "s"} ${mlop.number(x)}`;
    const rows = [];
    entry.meta.forEach((m, k) => {
      if (m.role !== "line") return;
      const v = near(u.data[k + 1], i);
      const band = entry.bands.find((b) => b.run === m.run);
      const range = band ? ` [${mlop.number(near(band.lo, i))} … ${mlop.number(near(band.hi, i))}]` : "";
      rows.push({ run: m.run, v, text: mlop.number(v) + range });
    });
    rows.sort((a, b) => (b.v == null) - (a.v == null) || b.v - a.v);
    box.replaceChildren(mlop.el("div", { class: "muted" }, `${entry.key} · ${head}`),
      ...rows.map((r) => mlop.el("div", { class: "row", "data-run": r.run },
        mlop.el("span", { class: "dot", style: `background:${COLORS[r.run % COLORS.length]}` }),
        mlop.el("span", { class: "name" }, entry.labels[r.run]), mlop.el("b", {}, r.text))));
    const rect = u.over.getBoundingClientRect();
    box.style.display = "block";
    const left = rect.left + u.cursor.left + 16;
    box.style.left = Math.min(left, window.innerWidth - box.offsetWidth - 8) + window.scrollX + "px";
    box.style.top = rect.top + u.cursor.top + window.scrollY + 12 + "px";
  }

  function options(entry, width) {
    const view = mlop.view;
    const series = [{ label: { step: "step", time: "time", relative: "seconds" }[view.x] }];
    // many runs: 1 px lines, which the browser rasters as hairlines (1.5 px strokes of 20 runs took most of
    // the compare page's drawing time)
    const thin = entry.labels.length > 4;
    entry.meta.forEach((m) => {
      const color = COLORS[m.run % COLORS.length];
      const label = entry.labels[m.run];
      if (m.role === "line") series.push({ label, stroke: color, width: thin ? 1 : 1.5, spanGaps: entry.labels.length > 1 });
      else series.push({ label: label + " (raw)", stroke: alpha(color, 0.25), width: 1, spanGaps: entry.labels.length > 1 });
    });
    const y = { distr: view.log ? 3 : 1 };
    if (view.outliers) {
      y.range = (u, min, max) => entry.robust || [min, max];
    }
    return {
      width, height: 220, series,
      title: entry.key,
      scales: { x: { time: view.x === "time" }, y },
      // many runs: no marker per line at the cursor (the tooltip has the values; fewer elements to lay out)
      cursor: { sync: { key: "mlop" }, drag: { x: true, y: false }, points: { show: entry.labels.length <= 4 } },
      legend: { show: false },
      axes: [{}, { size: axisSize, values: (u, vals) => vals.map(mlop.number) }],
      hooks: { setCursor: [(u) => showTip(entry, u)], drawClear: [(u) => drawBands(entry, u)] },
    };
  }

  // The place of a chart, sized before its data arrive (charts drawn as their data come in do not move
  // the page).
  mlop.chartBox = function (parent, key) {
    const box = mlop.el("div", { class: "chart", "data-testid": "chart", "data-key": key });
    parent.append(box);
    return box;
  };

  // A box keeps its own controls (the pin button); only the plot goes.
  function clearBox(box) {
    box.querySelectorAll(".uplot").forEach((n) => n.remove());
  }

  function build(entry, width) {
    const { data, meta, bands } = aligned(entry.series);
    entry.meta = meta;
    entry.bands = bands;
    entry.robust = mlop.view.outliers ? robustRange(data, meta) : null;
    entry.plot = new uPlot(options(entry, width), data, entry.box);
    entry.plot.over.addEventListener("mouseenter", () => { entry.hover = true; });
    entry.plot.over.addEventListener("mouseleave", () => { entry.hover = false; tooltip().style.display = "none"; });
  }

  // A chart of `key` drawing `seriesList` (one entry per run) in `box` (from mlop.chartBox).
  mlop.chart = function (box, key, seriesList, labels, width) {
    width = width || Math.max(300, Math.floor(box.clientWidth || 420));
    if (mlop.charts[key]) mlop.charts[key].plot.destroy();
    const entry = { key, series: seriesList, labels, box, plot: null, meta: [], bands: [], hover: false };
    clearBox(box);
    build(entry, width);
    box.dataset.drawn = "true";
    // The first series is what tests and scripts read: the points as the server sent them.
    Object.defineProperty(entry, "steps", { get: () => entry.series[0].steps });
    Object.defineProperty(entry, "values", { get: () => entry.series[0].values });
    mlop.charts[key] = entry;
    return entry;
  };

  // Drop every chart of the page (uPlot keeps window listeners until destroyed).
  mlop.clearCharts = function () {
    if (mlop.observer) mlop.observer.disconnect();
    mlop.observer = null;
    for (const entry of Object.values(mlop.charts)) entry.plot.destroy();
    mlop.charts = {};
    if (tip) tip.style.display = "none";
  };

  // Charts follow the window's width.
  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => {
      for (const entry of Object.values(mlop.charts)) {
        const width = Math.max(300, Math.floor(entry.box.clientWidth));
        if (width !== entry.plot.width) entry.plot.setSize({ width, height: entry.plot.height });
      }
    }, 150);
  });

  mlop.updateChart = function (entry, seriesList) {
    entry.series = seriesList;
    const { data, meta, bands } = aligned(seriesList);
    entry.bands = bands;  // a band appears once a live series outgrows max_points
    entry.robust = mlop.view.outliers ? robustRange(data, meta) : null;
    entry.plot.setData(data);
  };

  // Rebuild every chart after a display option changed (axis kind and log scale are fixed at creation).
  mlop.redrawCharts = function () {
    keepView();
    for (const entry of Object.values(mlop.charts)) {
      const width = entry.plot.width;
      entry.plot.destroy();
      clearBox(entry.box);
      build(entry, width);
    }
  };

  mlop.chartControls = function () {
    const view = mlop.view;
    const x = mlop.el("select", { "aria-label": "x axis", onchange: (e) => { view.x = e.target.value; mlop.redrawCharts(); } },
      mlop.el("option", { value: "step", selected: view.x === "step" }, "x: step"),
      mlop.el("option", { value: "time", selected: view.x === "time" }, "x: wall time"),
      mlop.el("option", { value: "relative", selected: view.x === "relative" }, "x: seconds from start"));
    const shown = mlop.el("span", { class: "muted" }, view.smoothing ? String(view.smoothing) : "off");
    const smoothing = mlop.el("input", { type: "range", min: 0, max: 0.99, step: 0.01, value: view.smoothing,
      "aria-label": "smoothing", oninput: (e) => {
        view.smoothing = Number(e.target.value);
        shown.textContent = view.smoothing ? String(view.smoothing) : "off";
        mlop.redrawCharts();
      } });
    const log = mlop.el("input", { type: "checkbox", "aria-label": "log scale", checked: view.log,
      onchange: (e) => { view.log = e.target.checked; mlop.redrawCharts(); } });
    const outliers = mlop.el("input", { type: "checkbox", "aria-label": "ignore outliers", checked: view.outliers,
      onchange: (e) => { view.outliers = e.target.checked; mlop.redrawCharts(); } });
    return mlop.el("div", { class: "controls" }, x, mlop.el("label", {}, "smoothing ", smoothing, " ", shown),
      mlop.el("label", {}, log, " log scale"), mlop.el("label", { title: "y range without the 1% most extreme values at each end" }, outliers, " ignore outliers"),
      mlop.el("span", { class: "muted" }, "drag to zoom, double-click to reset"));
  };
})();
