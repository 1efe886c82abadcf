// The projects list and a project's runs table: search, filter by status and tag, sort, select to compare.
"use strict";
(function () {
  const mlop = window.mlop;
  const STATUSES = ["RUNNING", "COMPLETED", "FAILED", "TERMINATED", "CANCELLED"];

  mlop.projectsPage = async function (main) {
    mlop.crumbs();
    const projects = await mlop.api("/api/projects");
    if (!projects.length) {
      main.replaceChildren(mlop.el("p", { class: "muted", id: "projects" }, "No runs yet. Log one with mlop.init(...)."));
      mlop.ready("projects");
      return;
    }
    const rows = projects.map((p) => `<tr><td><a href="#/p/${mlop.esc(mlop.q(p.name))}">${mlop.esc(p.name)}</a></td>` +
      `<td class="num">${p.runs}</td><td>${mlop.when(p.updated)}</td></tr>`).join("");
    main.innerHTML = `<h1>Projects</h1><table class="grid" id="projects"><thead><tr><th>project</th>` +
      `<th class="num">runs</th><th>updated</th></tr></thead><tbody>${rows}</tbody></table>`;
    mlop.ready("projects");
  };

  function row(run, selected) {
    const tags = run.tags.map((t) => `<span class="tag">${mlop.esc(t)}</span>`).join("");
    const status = run.status.toLowerCase();
    return `<tr data-run="${run.id}"><td><input type="checkbox" data-select="${run.id}"${selected.has(run.id) ? " checked" : ""}></td>` +
      `<td><a href="#/run/${run.id}">${mlop.esc(run.name)}</a> <span class="muted">${mlop.esc(run.displayId || "")}</span></td>` +
      `<td><span class="status ${status}" data-status="${run.status}">${status}</span></td>` +
      `<td class="num">${mlop.duration(mlop.runDuration(run))}</td><td>${tags}</td><td>${mlop.when(run.created)}</td></tr>`;
  }

  const SORTS = {
    name: (a, b) => a.name.localeCompare(b.name),
    status: (a, b) => a.status.localeCompare(b.status),
    duration: (a, b) => mlop.runDuration(a) - mlop.runDuration(b),
    created: (a, b) => a.created - b.created,
  };

  mlop.runsPage = async function (main, project) {
    mlop.crumbs(mlop.el("a", { href: "#/p/" + mlop.q(project) }, project));
    let runs = await mlop.api(`/api/runs?project=${mlop.q(project)}`);
    const state = { search: "", status: "", tag: "", sort: "created", desc: true, selected: new Set() };
    const tags = [...new Set(runs.flatMap((r) => r.tags))].sort();
    const search = mlop.el("input", { type: "search", placeholder: "search name, id or tag", id: "search" });
    const status = mlop.el("select", { id: "status-filter", "aria-label": "status" },
      mlop.el("option", { value: "" }, "any status"),
      STATUSES.map((s) => mlop.el("option", { value: s }, s.toLowerCase())));
    const tag = mlop.el("select", { id: "tag-filter", "aria-label": "tag" },
      mlop.el("option", { value: "" }, "any tag"), tags.map((t) => mlop.el("option", { value: t }, t)));
    const compare = mlop.el("button", { id: "compare", disabled: true }, "compare selected");
    const count = mlop.el("span", { class: "muted" });
    const headers = ["name", "status", "duration", "tags", "created"].map((name) =>
      mlop.el("th", { "data-sort": SORTS[name] ? name : null, class: name === "duration" ? "num" : null }, name));
    const body = mlop.el("tbody");
    const table = mlop.el("table", { class: "grid", id: "runs" },
      mlop.el("thead", {}, mlop.el("tr", {}, mlop.el("th"), headers)), body);
    main.replaceChildren(mlop.el("h1", {}, project),
      mlop.el("div", { class: "controls" }, search, status, tag, compare, count), table);

    function render() {
      const words = state.search.toLowerCase().split(/\s+/).filter(Boolean);
      const shown = runs.filter((r) => (!state.status || r.status === state.status) &&
        (!state.tag || r.tags.includes(state.tag)) &&
        words.every((w) => (r.name + " " + (r.displayId || "") + " " + r.id + " " + r.tags.join(" ")).toLowerCase().includes(w)));
      shown.sort(SORTS[state.sort]);
      if (state.desc) shown.reverse();
      body.innerHTML = shown.map((r) => row(r, state.selected)).join("");
      count.textContent = `${shown.length} of ${runs.length} runs`;
      for (const th of headers) th.classList.toggle("sorted", th.dataset.sort === state.sort);
      compare.disabled = state.selected.size < 1;
    }
    search.addEventListener("input", () => { state.search = search.value; render(); });
    status.addEventListener("change", () => { state.status = status.value; render(); });
    tag.addEventListener("change", () => { state.tag = tag.value; render(); });
    for (const th of headers) th.addEventListener("click", () => {
      if (!th.dataset.sort) return;
      state.desc = state.sort === th.dataset.sort ? !state.desc : false;
      state.sort = th.dataset.sort;
      render();
    });
    body.addEventListener("change", (e) => {
      const id = Number(e.target.dataset.select);
      if (!id) return;
      if (e.target.checked) state.selected.add(id); else state.selected.delete(id);
      compare.disabled = state.selected.size < 1;
    });
    compare.addEventListener("click", () => { location.hash = "#/compare/" + [...state.selected].join(","); });
    render();
    mlop.ready("runs");
    // Statuses and durations follow running runs.
    mlop.every(5000, async () => {
      if (!runs.some((r) => r.status === "RUNNING")) return;
      runs = await mlop.api(`/api/runs?project=${mlop.q(project)}`);
      render();
    });
  };
})();
