// Compare: the selected runs' metrics overlaid, one color per run, in the project's chart layout; the
// tooltip lists every run's value at the cursor.
"use strict";
(function () {
  const mlop = window.mlop;
  // Keys per series request: charts are drawn as soon as every run's series of their keys arrived
  // (fewer, larger requests: a browser opens six connections to a server at once).
  const KEYS_PER_REQUEST = 25;
  // Points per line: 1,000 for a few runs; with many runs fewer (their lines share the chart's pixels),
  // few enough that the server answers a series of 100,000 points or more from its block summaries
  // (buckets of at least 1,024 points) without reading it.
  const pointsPerLine = (runs) => (runs >= 5 ? 190 : mlop.MAX_POINTS);

  mlop.comparePage = async function (main, ids) {
    // The runs and their keys in one read (runs that are gone, or not the key's, are left out).
    const found = await mlop.api(`/api/runs/many?${ids.map((id) => "id=" + id).join("&")}`);
    if (!found.length) throw new Error("none of these runs exists (or the key may not read them)");
    const runs = found.map(({ keys, ...run }) => run);
    const keyLists = found.map((run) => run.keys);
    ids = runs.map((run) => run.id);
    const project = runs[0].project;
    const layout = await mlop.loadLayout(project);
    mlop.crumbs(mlop.el("a", { href: "#/p/" + mlop.q(project) }, project), "compare");
    const has = keyLists.map((keys) => new Set(keys.filter((k) => k.type === "METRIC").map((k) => k.name)));
    const names = [...new Set(has.flatMap((s) => [...s]))].sort();
    const labels = runs.map((r) => r.name);
    const legend = mlop.el("p", { class: "runlegend" }, runs.map((r, i) => mlop.el("span", { class: "swatch", style: `border-color:${mlop.COLORS[i % mlop.COLORS.length]}` },
      mlop.el("a", { href: "#/run/" + r.id }, r.name))));
    main.replaceChildren(mlop.el("h1", {}, `Compare ${runs.length} runs`), legend, mlop.chartControls());
    const perRun = runs.map(() => ({}));  // run index -> {key: series}

    // The series of `keys` of the runs picked by `which` (indices), in requests of KEYS_PER_REQUEST keys.
    async function fetchKeys(keys, which) {
      await Promise.all(which.map(async (i) => {
        const wanted = keys.filter((k) => has[i].has(k));
        if (wanted.length) Object.assign(perRun[i], await mlop.fetchMany(ids[i], wanted, pointsPerLine(ids.length)));
      }));
    }
    const seriesOf = (key) => perRun.map((found) => found[key] || mlop.EMPTY);
    const all = runs.map((_, i) => i);

    async function draw(keys) {
      const parts = [];
      for (let i = 0; i < keys.length; i += KEYS_PER_REQUEST) parts.push(keys.slice(i, i + KEYS_PER_REQUEST));
      const first = keys.map(grid.box).find((b) => b.clientWidth);
      const width = Math.max(300, Math.floor((first && first.clientWidth) || 420));
      await Promise.all(parts.map(async (part) => {
        await fetchKeys(part, all);
        for (const key of part) mlop.chart(grid.box(key), key, seriesOf(key), labels, width);
      }));
    }
    const grid = mlop.panelGrid(main, project, layout, draw);
    await grid.add(names);
    mlop.ready("compare");
    // Running runs' lines follow them (their keys as they were when the page opened).
    let busy = false;
    mlop.every(2000, async () => {
      const running = runs.map((r, i) => (r.status === "RUNNING" ? i : -1)).filter((i) => i >= 0);
      if (busy || !running.length) return;
      busy = true;
      try {
        const fresh = await Promise.all(running.map((i) => mlop.api(`/api/runs/${ids[i]}`)));
        const drawn = names.filter((k) => mlop.charts[k]);
        for (let j = 0; j < drawn.length; j += 100) await fetchKeys(drawn.slice(j, j + 100), running);
        fresh.forEach((r, j) => { runs[running[j]] = r; });
        for (const key of drawn) if (mlop.charts[key]) mlop.updateChart(mlop.charts[key], seriesOf(key));
      } finally {
        busy = false;
      }
    });
  };
})();
