// The router: #/ projects, #/p/NAME runs table, #/run/ID a run, #/compare/ID,ID runs overlaid.
"use strict";
(function () {
  const mlop = window.mlop;

  function keyForm(main, message) {
    mlop.crumbs();
    const input = mlop.el("input", { type: "password", id: "key-input", placeholder: "mlps_…", autocomplete: "off" });
    const form = mlop.el("form", { class: "keyform", onsubmit: (e) => {
      e.preventDefault();
      mlop.setKey(input.value.trim());
      route();
    } }, mlop.el("h1", {}, "mlop"), mlop.el("p", {}, message),
    mlop.el("label", {}, "API key ", input), mlop.el("button", { type: "submit" }, "open"));
    main.replaceChildren(form);
    mlop.ready("key");
  }

  async function route() {
    mlop.stopTimers();
    mlop.clearCharts();
    delete document.body.dataset.ready;
    mlop.paintedAt = null;
    mlop.takeKeyFromHash();
    const main = document.getElementById("main");
    if (!mlop.key()) return keyForm(main, "This server needs a key (`mlop ui` opens the page with it).");
    const path = decodeURIComponent(location.hash.replace(/^#/, "")) || "/";
    const parts = path.split("/").filter(Boolean);
    try {
      if (parts[0] === "p" && parts.length > 1) await mlop.runsPage(main, parts.slice(1).join("/"));
      else if (parts[0] === "run" && /^\d+$/.test(parts[1] || "")) await mlop.runPage(main, Number(parts[1]), parts[2]);
      else if (parts[0] === "compare" && parts[1]) await mlop.comparePage(main, parts[1].split(",").filter((x) => /^\d+$/.test(x)).map(Number));
      else await mlop.projectsPage(main);
    } catch (e) {
      if (e instanceof mlop.Unauthorized) {
        mlop.forgetKey();
        return keyForm(main, "The server refused the key; give another.");
      }
      main.replaceChildren(mlop.el("p", { class: "error" }, String(e.message || e)));
      mlop.ready("error");
      throw e;
    }
  }

  mlop.route = route;
  window.addEventListener("hashchange", route);
  route();
})();
