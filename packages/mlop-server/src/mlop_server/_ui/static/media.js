// The run page's media and data tabs: images with a step slider, audio and video players, text files and
// downloads; histograms over steps as a heat map (step x bin) with each step's bars; tables sortable by
// any column; string series. All of them follow a live run (live.refresh(keys) is called while it runs).
"use strict";
(function () {
  const mlop = window.mlop;
  // Keys whose values are files: shown at a step (images, players, text) or offered for download.
  const MEDIA = new Set(["IMAGE", "AUDIO", "VIDEO", "TEXT", "FILE", "ARTIFACT"]);
  mlop.MEDIA = MEDIA;

  // blob: URLs of files already fetched (a live refresh shows them again without a download).
  const blobs = new Map();
  async function blobOf(f) {
    if (!blobs.has(f.id)) {
      blobs.set(f.id, mlop.blobUrl(f.url));
      if (blobs.size > 400) {
        const [oldest, url] = blobs.entries().next().value;
        blobs.delete(oldest);
        url.then(URL.revokeObjectURL, () => {});
      }
    }
    try {
      return await blobs.get(f.id);
    } catch (e) {
      blobs.delete(f.id);
      throw e;
    }
  }

  // A text file shown as text; other files as a download link (fetched with the session on click).
  async function fileView(type, f) {
    if (type === "TEXT") {
      const text = await mlop.textOf(f.url);
      return mlop.el("pre", { class: "text", "data-step": f.step, "data-file": f.id }, text.slice(0, 100000));
    }
    const link = mlop.el("a", { href: "#", "data-file": f.id }, `download ${f.fileName} (${f.fileSize.toLocaleString()} bytes)`);
    link.addEventListener("click", async (e) => {
      e.preventDefault();
      const save = mlop.el("a", { href: await blobOf(f), download: f.fileName });
      document.body.append(save);
      save.click();
      save.remove();
    });
    return link;
  }

  mlop.mediaTab = async function (pane, run, keys, live) {
    let mediaKeys = [];
    let files = new Map();  // key -> its files
    let steps = [];
    const empty = mlop.el("p", { class: "muted", id: "no-media" }, "No media yet.");
    const slider = mlop.el("input", { type: "range", id: "media-step", min: 0, max: 0, value: 0, "aria-label": "media step" });
    const label = mlop.el("span", { id: "media-step-label" });
    const boxes = mlop.el("div", { class: "media", "data-testid": "media" });
    const bar = mlop.el("div", { class: "controls" }, mlop.el("label", {}, "step ", slider), label);
    pane.append(bar, boxes, empty);
    let shown = 0;
    let drawnSignature = "";

    async function load(fresh) {
      mediaKeys = fresh.filter((k) => MEDIA.has(k.type));
      const lists = await Promise.all(mediaKeys.map((k) => mlop.api(`/api/runs/${run.id}/files?key=${mlop.q(k.name)}`)));
      files = new Map(mediaKeys.map((k, i) => [k.name, lists[i]]));
      steps = [...new Set(lists.flat().map((f) => f.step))].sort((a, b) => a - b);
      empty.hidden = steps.length > 0;
      bar.hidden = steps.length === 0;
    }

    // What the current step shows: redrawn only when it changed (a live refresh keeps the players playing).
    function signature(step) {
      return step + "|" + mediaKeys.map((k) => files.get(k.name).filter((f) => f.step === step && f.url).map((f) => f.id).join(",")).join(";");
    }

    async function show() {
      const step = steps[Number(slider.value)];
      if (step === undefined) return;
      const ticket = ++shown;
      label.textContent = `${step} (${Number(slider.value) + 1} of ${steps.length})`;
      const sig = signature(step);
      if (sig === drawnSignature) return;
      const parts = await Promise.all(mediaKeys.map(async (k) => {
        const at = files.get(k.name).filter((f) => f.step === step && f.url);
        const items = await Promise.all(at.map(async (f) => {
          const caption = mlop.el("figcaption", {}, f.caption || f.fileName);
          // a GIF "video" (mlop.Video without an MP4 encoder) plays as an image
          const gif = k.type === "VIDEO" && /gif$/i.test(f.fileType || f.fileName);
          const tag = gif ? "img" : { IMAGE: "img", AUDIO: "audio", VIDEO: "video" }[k.type];
          if (!tag) return mlop.el("figure", {}, await fileView(k.type, f), caption);
          const node = mlop.el(tag, { src: await blobOf(f), alt: f.caption || f.fileName, controls: tag !== "img" ? true : null,
            preload: "metadata", "data-step": f.step, "data-file": f.id, "data-key": k.name,
            // a small video is scaled up: at its own size (a 16 px clip) the player's controls do not show
            style: tag === "video" ? "min-width: 240px" : null });
          return mlop.el("figure", {}, node, caption);
        }));
        return mlop.el("div", { class: "mediakey", "data-key": k.name }, mlop.el("h3", {}, k.name),
          items.length ? items : mlop.el("p", { class: "muted" }, "nothing at this step"));
      }));
      if (ticket !== shown) return;
      drawnSignature = sig;
      boxes.replaceChildren(...parts);
      boxes.dataset.step = String(step);
    }
    slider.addEventListener("input", show);

    await load(keys);
    slider.max = String(Math.max(0, steps.length - 1));
    slider.value = slider.max;
    await show();

    // A live run: new files and steps arrive; at the last step, the view moves on to the newest.
    live.refresh = async (fresh) => {
      const atEnd = Number(slider.value) >= steps.length - 1;
      const before = steps[Number(slider.value)];
      await load(fresh);
      slider.max = String(Math.max(0, steps.length - 1));
      slider.value = String(atEnd ? steps.length - 1 : Math.max(0, steps.indexOf(before)));
      await show();
    };
  };

  // -- histograms, tables, string series -----------------------------------------------------------

  function parsed(data) {
    return typeof data === "string" ? JSON.parse(data) : data;
  }

  // A histogram's bin edges (freq.length + 1 of them), from a list or {min, max, num}.
  function edgesOf(data) {
    const freq = data.freq || [];
    if (Array.isArray(data.bins)) return data.bins.length > freq.length ? data.bins : [...data.bins, data.bins[data.bins.length - 1]];
    const b = data.bins || { min: 0, max: 1 };
    const width = (b.max - b.min) / Math.max(1, freq.length);
    return Array.from({ length: freq.length + 1 }, (_, i) => b.min + i * width);
  }

  // Every step of a histogram key at once: x the step, y the value, darker where a step's count is higher
  // (each step scaled to its own largest bin), as the distribution views of other trackers.
  const RAMP = [[247, 251, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]];
  function ramp(t) {
    const x = Math.max(0, Math.min(1, t)) * (RAMP.length - 1);
    const i = Math.min(RAMP.length - 2, Math.floor(x)), f = x - i;
    return RAMP[i].map((c, j) => Math.round(c + (RAMP[i + 1][j] - c) * f));
  }
  mlop.heatmap = function (rows) {
    const hists = rows.map((row) => {
      const data = parsed(row.data);
      return { step: row.step, freq: data.freq || [], edges: edgesOf(data) };
    }).filter((h) => h.freq.length);
    const box = mlop.el("figure", { class: "heatmap", "data-testid": "histogram-heatmap", "data-steps": hists.length });
    if (!hists.length) return box;
    let lo = Infinity, hi = -Infinity;
    for (const h of hists) { lo = Math.min(lo, h.edges[0]); hi = Math.max(hi, h.edges[h.edges.length - 1]); }
    if (!(hi > lo)) { hi = lo + 1; }
    const ROWS = 80, left = 64, bottom = 22, width = 640, height = 240;
    const plotW = width - left - 8, plotH = height - bottom - 8;
    const canvas = mlop.el("canvas", { width, height, class: "heatcanvas" });
    const g = canvas.getContext("2d");
    g.fillStyle = "#fff";
    g.fillRect(0, 0, width, height);
    const colW = plotW / hists.length;
    const grid = hists.map((h) => {
      // the step's counts spread over ROWS equal value rows, in proportion to each bin's overlap
      const cells = new Float64Array(ROWS);
      h.freq.forEach((count, i) => {
        if (!count) return;
        const a = (h.edges[i] - lo) / (hi - lo) * ROWS, b = (h.edges[i + 1] - lo) / (hi - lo) * ROWS;
        const span = Math.max(b - a, 1e-9);
        for (let r = Math.max(0, Math.floor(a)); r < Math.min(ROWS, Math.ceil(b)); r++) {
          const overlap = Math.min(b, r + 1) - Math.max(a, r);
          if (overlap > 0) cells[r] += count * overlap / span;
        }
        if (b - a < 1e-9) cells[Math.min(ROWS - 1, Math.max(0, Math.floor(a)))] += count;
      });
      return cells;
    });
    grid.forEach((cells, c) => {
      let top = 0;
      for (const v of cells) if (v > top) top = v;
      for (let r = 0; r < ROWS; r++) {
        if (!cells[r]) continue;
        const [red, green, blue] = ramp(0.15 + 0.85 * cells[r] / top);
        g.fillStyle = `rgb(${red},${green},${blue})`;
        const y = 8 + plotH - (r + 1) * plotH / ROWS;
        g.fillRect(left + c * colW, y, Math.max(1, colW + 0.5), plotH / ROWS + 0.5);
      }
    });
    g.strokeStyle = "#9ca3af";
    g.strokeRect(left, 8, plotW, plotH);
    g.fillStyle = "#374151";
    g.font = "11px system-ui, sans-serif";
    g.textAlign = "right";
    for (let k = 0; k <= 4; k++) {
      const v = lo + (hi - lo) * k / 4;
      g.fillText(mlop.number(v), left - 4, 8 + plotH - plotH * k / 4 + 4);
    }
    g.textAlign = "left";
    g.fillText(`step ${hists[0].step}`, left, height - 6);
    g.textAlign = "right";
    g.fillText(`step ${hists[hists.length - 1].step}`, left + plotW, height - 6);
    const readout = mlop.el("figcaption", { class: "muted" }, `${hists.length} steps; hover for counts`);
    canvas.addEventListener("mousemove", (e) => {
      const rect = canvas.getBoundingClientRect();
      const c = Math.floor((e.clientX - rect.left - left) / colW);
      const r = Math.floor((8 + plotH - (e.clientY - rect.top)) / (plotH / ROWS));
      if (c < 0 || c >= hists.length || r < 0 || r >= ROWS) return;
      const a = lo + (hi - lo) * r / ROWS, b = lo + (hi - lo) * (r + 1) / ROWS;
      readout.textContent = `step ${hists[c].step}: ${mlop.number(a)} to ${mlop.number(b)}: ${mlop.number(grid[c][r])}`;
    });
    box.dataset.lo = String(lo);
    box.dataset.hi = String(hi);
    box.append(canvas, readout);
    return box;
  };

  function histogram(data) {
    data = parsed(data);
    const freq = data.freq || [];
    const edges = edgesOf(data);
    const box = mlop.el("div", { class: "histogram" });
    setTimeout(() => new uPlot({ width: 480, height: 200, legend: { show: false },
      scales: { x: { time: false } },
      series: [{}, { fill: "#93c5fd", stroke: "#2563eb", paths: uPlot.paths.bars({ size: [1, Infinity] }) }] },
    [edges.slice(0, freq.length), freq], box), 0);
    return box;
  }

  // A table with a header that sorts by its column (numbers as numbers), again to reverse.
  function table(data) {
    data = parsed(data);
    const cols = (data.col || []).map((c) => c.name);
    const rows = (data.table || []).slice(0, 5000);
    const body = mlop.el("tbody");
    let by = -1, dir = 1;
    const cell = (v) => (v !== null && typeof v === "object" ? JSON.stringify(v) : v);
    const fill = () => body.replaceChildren(...rows.map((r) => mlop.el("tr", {}, r.map((v) => mlop.el("td", { class: typeof v === "number" ? "num" : null }, cell(v))))));
    const heads = cols.map((c, i) => mlop.el("th", { "data-sort": i, "data-col": c, title: "sort", onclick: () => {
      dir = by === i ? -dir : 1;
      by = i;
      rows.sort((a, b) => {
        const x = a[i], y = b[i];
        if (x == null || y == null) return (x == null) - (y == null);
        if (typeof x === "number" && typeof y === "number") return (x - y) * dir;
        return String(cell(x)).localeCompare(String(cell(y)), undefined, { numeric: true }) * dir;
      });
      heads.forEach((h, j) => { h.className = j === i ? "sorted " + (dir > 0 ? "asc" : "desc") : ""; });
      fill();
    } }, c));
    fill();
    return mlop.el("table", { class: "grid", "data-testid": "data-table" }, mlop.el("thead", {}, mlop.el("tr", {}, heads)), body);
  }

  // One data key: a step slider over its rows (and, for histograms, the heat map of every step).
  function dataKey(pane, run, key, type) {
    const holder = mlop.el("div", { class: "datakey", "data-key": key });
    const box = mlop.el("div");
    const heat = mlop.el("div");
    const slider = mlop.el("input", { type: "range", min: 0, max: 0, value: 0, "aria-label": key + " step" });
    const label = mlop.el("span");
    holder.append(mlop.el("h3", {}, key), mlop.el("div", { class: "pair" }, heat,
      mlop.el("div", {}, mlop.el("div", { class: "controls" }, mlop.el("label", {}, "step ", slider), label), box)));
    pane.append(holder);
    let rows = [];
    let drawnAt = null;
    const draw = () => {
      const row = rows[Number(slider.value)];
      if (!row || drawnAt === row) return;
      drawnAt = row;
      label.textContent = String(row.step);
      box.replaceChildren(type === "HISTOGRAM" ? histogram(row.data) : type === "TABLE" ? table(row.data) : mlop.el("pre", {}, row.data));
    };
    slider.addEventListener("input", draw);
    // The rows logged since the last look (all of them the first time).
    return async function refresh() {
      const fresh = await mlop.api(`/api/runs/${run.id}/data?key=${mlop.q(key)}&offset=${rows.length}`);
      if (!fresh.length && rows.length) return;
      const atEnd = Number(slider.value) >= rows.length - 1;
      rows = rows.concat(fresh);
      slider.max = String(Math.max(0, rows.length - 1));
      if (atEnd) slider.value = slider.max;
      draw();
      if (type === "HISTOGRAM") heat.replaceChildren(mlop.heatmap(rows));
    };
  }

  mlop.dataTab = async function (pane, run, keys, type, live) {
    const known = new Map();
    const none = mlop.el("p", { class: "muted" }, "Nothing here yet.");
    pane.append(none);
    async function update(fresh) {
      // the user's keys first, the watch's (grad/, param/) after, as the charts' groups
      const names = mlop.groupKeys(fresh.filter((k) => k.type === type).map((k) => k.name)).flatMap(([, list]) => list);
      for (const name of names) if (!known.has(name)) known.set(name, dataKey(pane, run, name, type));
      none.hidden = known.size > 0;
      await Promise.all([...known.values()].map((refresh) => refresh()));
    }
    await update(keys);
    live.refresh = update;
  };
})();
