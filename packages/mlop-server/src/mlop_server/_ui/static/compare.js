// Compare: the selected runs' metrics overlaid, one color per run, the legend giving values at the cursor.
"use strict";
(function () {
  const mlop = window.mlop;

  mlop.comparePage = async function (main, ids) {
    const runs = await Promise.all(ids.map((id) => mlop.api(`/api/runs/${id}`)));
    const keyLists = await Promise.all(ids.map((id) => mlop.api(`/api/runs/${id}/keys`)));
    mlop.crumbs(mlop.el("a", { href: "#/p/" + mlop.q(runs[0].project) }, runs[0].project), "compare");
    const names = [...new Set(keyLists.flatMap((keys) => keys.filter((k) => k.type === "METRIC" && !k.name.startsWith("sys/")).map((k) => k.name)))].sort();
    const legend = mlop.el("p", {}, runs.map((r, i) => mlop.el("span", { class: "swatch", style: `border-color:${mlop.COLORS[i % mlop.COLORS.length]}` },
      mlop.el("a", { href: "#/run/" + r.id }, r.name))));
    const grid = mlop.el("div");
    main.replaceChildren(mlop.el("h1", {}, `Compare ${runs.length} runs`), legend, mlop.chartControls(), grid);
    // Each run's series in requests of up to 100 keys.
    const fetchAll = (which) => Promise.all(ids.map(async (id, i) => {
      if (!which[i]) return null;
      const have = names.filter((name) => keyLists[i].some((k) => k.name === name));
      const found = {};
      for (let j = 0; j < have.length; j += 100) Object.assign(found, await mlop.fetchMany(id, have.slice(j, j + 100)));
      return found;
    }));
    const perRun = await fetchAll(ids.map(() => true));
    for (const [group, groupKeys] of mlop.groupKeys(names)) {
      const box = mlop.el("div", { class: "charts" });
      grid.append(mlop.el("section", { "data-group": group }, mlop.el("h2", {}, group), box));
      for (const key of groupKeys) {
        const series = perRun.map((found) => found[key] || mlop.EMPTY);
        mlop.chart(mlop.chartBox(box, key), key, series, runs.map((r) => r.name));
      }
    }
    mlop.ready("compare");
    // Running runs' lines follow them (their keys as they were when the page opened).
    let busy = false;
    mlop.every(2000, async () => {
      const running = runs.map((r) => r.status === "RUNNING");
      if (busy || !running.some(Boolean)) return;
      busy = true;
      try {
        const fresh = await Promise.all(ids.map((id, i) => (running[i] ? mlop.api(`/api/runs/${id}`) : runs[i])));
        const found = await fetchAll(running);
        found.forEach((f, i) => { if (f) perRun[i] = f; });
        fresh.forEach((r, i) => { runs[i] = r; });
        for (const key of names) {
          if (mlop.charts[key]) mlop.updateChart(mlop.charts[key], perRun.map((f) => f[key] || mlop.EMPTY));
        }
      } finally {
        busy = false;
      }
    });
  };
})();
