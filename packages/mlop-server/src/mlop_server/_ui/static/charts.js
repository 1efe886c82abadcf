// Metric charts on uPlot: one chart per key, several series for compare. Data are the server's
// downsampled series (min and max per bucket); window.mlop.charts[key] keeps what each chart draws.
"use strict";
(function () {
  const mlop = window.mlop;
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#db2777",
    "#65a30d", "#4f46e5", "#b45309"];
  mlop.COLORS = COLORS;
  // Points a chart asks for: about two per pixel column (min and max per bucket).
  mlop.MAX_POINTS = 1000;

  // Display options shared by every chart on the page.
  // (kept in localStorage, so a reload or another run shows charts the same way).
  const VIEW_KEY = "mlop.view";
  mlop.view = Object.assign({ x: "step", smoothing: 0, log: false },
    (() => { try { return JSON.parse(localStorage.getItem(VIEW_KEY)) || {}; } catch (e) { return {}; } })());
  function keepView() {
    localStorage.setItem(VIEW_KEY, JSON.stringify(mlop.view));
  }

  // Several downsampled series of a run in one request: {key: {steps, times, values}}.
  mlop.fetchMany = async function (runId, keys) {
    const query = keys.map((k) => "key=" + mlop.q(k)).join("&");
    return mlop.api(`/api/runs/${runId}/series?${query}&max_points=${mlop.MAX_POINTS}`);
  };

  mlop.EMPTY = { steps: [], times: [], values: [] };

  mlop.fetchSeries = async function (runId, key) {
    return (await mlop.fetchMany(runId, [key]))[key] || mlop.EMPTY;
  };

  // Exponential moving average with a debias term (as TensorBoard's smoothing); gaps stay gaps.
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

  function xs(series) {
    if (mlop.view.x === "time") return series.times.map((t) => t / 1000);
    if (mlop.view.x === "relative") {
      const start = series.times.length ? Math.min(...series.times) : 0;
      return series.times.map((t) => (t - start) / 1000);
    }
    return series.steps;
  }

  function ys(series) {
    let y = series.values.map(mlop.finite);
    if (mlop.view.log) y = y.map((v) => (v != null && v > 0 ? v : null));
    return smooth(y, mlop.view.smoothing);
  }

  // uPlot wants x ascending; a step logged lower than the last one is kept by the server in
  // arrival order, so order points by x (stable) before drawing.
  function sorted(x, y) {
    let ordered = true;
    for (let i = 1; i < x.length; i++) if (x[i] < x[i - 1]) { ordered = false; break; }
    if (ordered) return [x, y];
    const idx = x.map((_, i) => i).sort((a, b) => x[a] - x[b] || a - b);
    return [idx.map((i) => x[i]), idx.map((i) => y[i])];
  }

  // Aligned data for uPlot: [x, y1, y2, ...] from one or more series.
  function aligned(seriesList) {
    const parts = seriesList.map((s) => sorted(xs(s), ys(s)));
    if (parts.length === 1) return parts[0];
    return uPlot.join(parts.map(([x, y]) => [x, y]));
  }

  function options(title, labels, width) {
    const time = mlop.view.x === "time";
    return {
      title, width, height: 220,
      scales: { x: { time }, y: { distr: mlop.view.log ? 3 : 1 } },
      cursor: { sync: { key: "mlop" }, drag: { x: true, y: false } },
      legend: { live: true },
      series: [{ label: { step: "step", time: "time", relative: "seconds" }[mlop.view.x] }].concat(labels.map((label, i) => ({
        label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: labels.length > 1,
        value: (u, v) => mlop.number(v),
      }))),
      axes: [{}, { size: 60, values: (u, vals) => vals.map(mlop.number) }],
    };
  }

  // The place of a chart, sized before its data arrive (so charts drawn as their data come in do not
  // move the page).
  mlop.chartBox = function (parent, key) {
    const box = mlop.el("div", { class: "chart", "data-key": key });
    parent.append(box);
    return box;
  };

  // A chart of `key` drawing `seriesList` (one entry per run) in `box` (from mlop.chartBox).
  mlop.chart = function (box, key, seriesList, labels, width) {
    width = width || Math.max(300, Math.floor(box.clientWidth || 420));
    const entry = { key, series: seriesList, labels, box, plot: null };
    entry.plot = new uPlot(options(key, labels, width), aligned(seriesList), box);
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
    entry.plot.setData(aligned(seriesList));
  };

  // Rebuild every chart after a display option changed (axis kind and log scale are fixed at creation).
  mlop.redrawCharts = function () {
    keepView();
    for (const entry of Object.values(mlop.charts)) {
      const width = entry.plot.width;
      entry.plot.destroy();
      entry.box.replaceChildren();
      entry.plot = new uPlot(options(entry.key, entry.labels, width), aligned(entry.series), entry.box);
    }
  };

  mlop.chartControls = function () {
    const view = mlop.view;
    const x = mlop.el("select", { "aria-label": "x axis", onchange: (e) => { view.x = e.target.value; mlop.redrawCharts(); } },
      mlop.el("option", { value: "step", selected: view.x === "step" }, "x: step"),
      mlop.el("option", { value: "time", selected: view.x === "time" }, "x: time"),
      mlop.el("option", { value: "relative", selected: view.x === "relative" }, "x: seconds from start"));
    const smoothing = mlop.el("input", { type: "range", min: 0, max: 0.99, step: 0.01, value: view.smoothing,
      "aria-label": "smoothing", oninput: (e) => { view.smoothing = Number(e.target.value); mlop.redrawCharts(); } });
    const log = mlop.el("input", { type: "checkbox", "aria-label": "log scale", checked: view.log,
      onchange: (e) => { view.log = e.target.checked; mlop.redrawCharts(); } });
    return mlop.el("div", { class: "controls" }, x, mlop.el("label", {}, "smoothing ", smoothing),
      mlop.el("label", {}, log, " log scale"), mlop.el("span", { class: "muted" }, "drag to zoom, double-click to reset"));
  };

  // Keys grouped by their part before the last "/" (train/loss is in train), sys/ last.
  mlop.groupKeys = function (keys) {
    const groups = new Map();
    for (const key of keys) {
      const cut = key.lastIndexOf("/");
      const group = cut > 0 ? key.slice(0, cut) : "metrics";
      if (!groups.has(group)) groups.set(group, []);
      groups.get(group).push(key);
    }
    return [...groups.entries()].sort(([a], [b]) =>
      (a.startsWith("sys") - b.startsWith("sys")) || a.localeCompare(b));
  };
})();
