// The router: #/ projects, #/p/NAME runs table, #/run/ID a run, #/compare/ID,ID runs overlaid.
"use strict";
(function () {
  const mlop = window.mlop;

  function keyForm(main, message) {
    mlop.crumbs();
    const input = mlop.el("input", { type: "password", id: "key-input", placeholder: "mlps_…", autocomplete: "off" });
    const form = mlop.el("form", { class: "keyform", onsubmit: async (e) => {
      e.preventDefault();
      try {
        await mlop.login(input.value.trim());
      } catch (err) {
        if (err instanceof mlop.Unauthorized) return keyForm(main, "The server refused the key; give another.");
        throw err;
      }
      route();
    } }, mlop.el("h1", {}, "mlop"), mlop.el("p", {}, message),
    mlop.el("label", {}, "API key ", input), mlop.el("button", { type: "submit" }, "log in"),
    mlop.el("p", { class: "muted" }, "The page keeps a session cookie, not the key; log out ends it."));
    main.replaceChildren(form);
    document.body.dataset.auth = "out";
    mlop.ready("key");
  }

  // The header's "log out": ends the session (the server forgets nothing else).
  function logoutButton() {
    if (document.getElementById("logout")) return;
    document.querySelector("header").append(mlop.el("button", { id: "logout", type: "button", onclick: async () => {
      await mlop.logout();
      route();
    } }, "log out"));
  }

  // Pages are drawn one at a time. A page still loading when the address changes is finished first and the
  // latest address is drawn right after it: a slow page never draws over the one the user went to next, and
  // its timers are stopped like any other page's.
  let drawing = null;
  let again = false;
  function route() {
    if (drawing) {
      again = true;
      return drawing;
    }
    drawing = (async () => {
      try {
        do {
          again = false;
          try {
            await draw();
          } catch (e) {
            if (!again) throw e;  // a page left before it was drawn: its error is no longer shown
          }
        } while (again);
      } finally {
        drawing = null;
      }
    })();
    return drawing;
  }

  async function draw() {
    mlop.stopTimers();
    mlop.clearCharts();
    delete document.body.dataset.ready;
    mlop.paintedAt = null;
    const main = document.getElementById("main");
    const given = mlop.keyFromHash();
    if (given) {
      try {
        await mlop.login(given);
      } catch (e) {
        if (e instanceof mlop.Unauthorized) return keyForm(main, "The key in the address was refused; give another.");
        throw e;
      }
    }
    const path = decodeURIComponent(location.hash.replace(/^#/, "")) || "/";
    const parts = path.split("/").filter(Boolean);
    try {
      if (parts[0] === "p" && parts.length > 1) await mlop.runsPage(main, parts.slice(1).join("/"));
      else if (parts[0] === "run" && /^\d+$/.test(parts[1] || "")) await mlop.runPage(main, Number(parts[1]), parts[2]);
      else if (parts[0] === "compare" && parts[1]) await mlop.comparePage(main, parts[1].split(",").filter((x) => /^\d+$/.test(x)).map(Number));
      else await mlop.projectsPage(main);
      document.body.dataset.auth = "in";
    } catch (e) {
      if (e instanceof mlop.Unauthorized) {
        mlop.stopTimers();
        return keyForm(main, "This server needs a key once (`mlop ui` logs the page in by itself).");
      }
      main.replaceChildren(mlop.el("p", { class: "error" }, String(e.message || e)));
      mlop.ready("error");
      throw e;
    }
  }

  logoutButton();
  mlop.route = route;
  window.addEventListener("hashchange", route);
  route();
})();
