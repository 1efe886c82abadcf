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
    const empty = { steps: [], times: [], values: [] };
    for (const [group, groupKeys] of mlop.groupKeys(names)) {
      const box = mlop.el("div", { class: "charts" });
      grid.append(mlop.el("section", { "data-group": group }, mlop.el("h2", {}, group), box));
      for (const key of groupKeys) {
        const series = await Promise.all(ids.map((id, i) =>
          keyLists[i].some((k) => k.name === key) ? mlop.fetchSeries(id, key) : Promise.resolve(empty)));
        mlop.chart(mlop.chartBox(box, key), key, series, runs.map((r) => r.name));
      }
    }
    mlop.ready("compare");
  };
})();
