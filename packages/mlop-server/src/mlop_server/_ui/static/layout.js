// The charts' layout: charts grouped by the first segment of their key (train/loss is in "train"), the
// user's groups first, then the system's and the watch's (sys, grad, param: collapsed at first). Groups
// collapse, expand and move (dragged by their heading, or with the ↑ ↓ buttons); a chart can be pinned to
// the top; a search box filters by name or regular expression. The layout is the project's, kept on the server (setting "layout"), so a team shares it.
"use strict";
(function () {
  const mlop = window.mlop;
  // Groups that come after the user's, in this order, collapsed until opened.
  const SYSTEM = ["sys", "grad", "param"];
  // A page draws this many charts at once; the others when they come near the view.
  const EAGER_CHARTS = 64;
  const PINNED = "pinned";

  mlop.groupOf = (key) => {
    const cut = key.indexOf("/");
    return cut > 0 ? key.slice(0, cut) : "metrics";
  };
  mlop.isSystemGroup = (group) => SYSTEM.includes(group);

  // The default order of groups: the user's by name, then the system's.
  function defaultRank(a, b) {
    const sa = SYSTEM.indexOf(a), sb = SYSTEM.indexOf(b);
    if (sa !== sb) return sa === -1 ? -1 : sb === -1 ? 1 : sa - sb;
    return a.localeCompare(b);
  }

  // Keys grouped: [[group, keys], ...] in the default order.
  mlop.groupKeys = function (keys) {
    const groups = new Map();
    for (const key of keys) {
      const group = mlop.groupOf(key);
      if (!groups.has(group)) groups.set(group, []);
      groups.get(group).push(key);
    }
    for (const list of groups.values()) list.sort();
    return [...groups.entries()].sort(([a], [b]) => defaultRank(a, b));
  };

  // The project's layout: {order: [group...], collapsed: {group: bool}, pinned: [key...]}.
  mlop.loadLayout = async function (project) {
    let value = null;
    try {
      value = (await mlop.api(`/api/projects/settings?project=${mlop.q(project)}&name=layout`)).value;
    } catch (e) {
      if (e instanceof mlop.Unauthorized) throw e;
      mlop.setStatus("layout not loaded: " + e.message);
    }
    const v = value && typeof value === "object" ? value : {};
    return {
      order: Array.isArray(v.order) ? v.order.filter((g) => typeof g === "string") : [],
      collapsed: v.collapsed && typeof v.collapsed === "object" ? v.collapsed : {},
      pinned: Array.isArray(v.pinned) ? v.pinned.filter((k) => typeof k === "string") : [],
    };
  };

  // Drag and drop to reorder the items (`selector`, named by their attribute `attr`) inside `container`:
  // an item whose draggable element is dragged onto another calls `moved(name, target, after)`, `after`
  // when it was dragged downwards or rightwards (it takes the target's place, the target moves back).
  // Listens on the container, so its items may be redrawn; only this container's own items are taken.
  mlop.dragReorder = function (container, selector, attr, moved) {
    let dragged = null;
    const items = () => [...container.querySelectorAll(selector)].filter((el) => !el.hidden);
    const itemAt = (node) => {
      const item = node instanceof Element ? node.closest(selector) : null;
      return item && container.contains(item) ? item : null;
    };
    const unmark = () => {
      for (const el of container.querySelectorAll(".drop-before, .drop-after")) el.classList.remove("drop-before", "drop-after");
    };
    const place = (target) => {
      const list = items();
      return list.indexOf(target) > list.indexOf(dragged);
    };
    container.addEventListener("dragstart", (e) => {
      if (!(e.target instanceof Element) || e.target.getAttribute("draggable") !== "true") return;
      dragged = itemAt(e.target);
      if (!dragged) return;
      e.dataTransfer.effectAllowed = "move";
      e.dataTransfer.setData("text/plain", dragged.getAttribute(attr));
      dragged.classList.add("dragging");
    });
    container.addEventListener("dragover", (e) => {
      const target = dragged && itemAt(e.target);
      if (!target || target === dragged) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = "move";
      unmark();
      target.classList.add(place(target) ? "drop-after" : "drop-before");
    });
    container.addEventListener("drop", (e) => {
      const target = dragged && itemAt(e.target);
      if (!target) return;
      e.preventDefault();
      unmark();
      if (target !== dragged) moved(dragged.getAttribute(attr), target.getAttribute(attr), place(target));
    });
    container.addEventListener("dragend", () => {
      if (dragged) dragged.classList.remove("dragging");
      dragged = null;
      unmark();
    });
  };

  // Regular expression of the search box, or a plain-text match with a message when it is not one.
  mlop.chartFilter = function (text) {
    if (!text) return { test: () => true, error: null };
    try {
      const re = new RegExp(text, "i");
      return { test: (key) => re.test(key), error: null };
    } catch (e) {
      const word = text.toLowerCase();
      return { test: (key) => key.toLowerCase().includes(word), error: `not a regular expression (${e.message}); matching the text as written` };
    }
  };

  // A grid of chart groups in `parent`. `draw(keys)` draws the charts of these keys in their boxes
  // (grid.box(key)). Returns {add(keys), box(key), drawn: Promise of the first charts}.
  mlop.panelGrid = function (parent, project, layout, draw) {
    const boxes = new Map();  // key -> its box
    const sections = new Map();  // group -> {section, body, count}
    const waiting = new Set();  // placed keys not drawn yet
    let saving = null;
    const note = mlop.el("span", { class: "muted", id: "layout-note" });
    const search = mlop.el("input", { type: "search", id: "chart-search", "data-testid": "chart-search",
      placeholder: "filter charts: name or regular expression", "aria-label": "filter charts" });
    const searchNote = mlop.el("span", { class: "error", id: "chart-search-error" });
    const pinnedBody = mlop.el("div", { class: "charts" });
    const pinnedSection = mlop.el("section", { class: "panelgroup", "data-testid": "panel-group", "data-group": PINNED,
      "data-collapsed": "false", hidden: true }, mlop.el("h2", {}, "pinned"), pinnedBody);
    const groupsBox = mlop.el("div", { class: "panelgroups" });
    parent.append(mlop.el("div", { class: "controls" }, search, searchNote, note), pinnedSection, groupsBox);

    function save() {
      clearTimeout(saving);
      saving = setTimeout(async () => {
        try {
          await mlop.put(`/api/projects/settings?project=${mlop.q(project)}&name=layout`, layout);
          note.textContent = "layout saved for the project";
        } catch (e) {
          note.textContent = "layout not saved: " + e.message;
        }
      }, 300);
    }

    const collapsed = (group) => (group in layout.collapsed ? !!layout.collapsed[group] : mlop.isSystemGroup(group));

    function order() {
      const names = [...sections.keys()];
      const rank = (g) => { const i = layout.order.indexOf(g); return i === -1 ? Infinity : i; };
      return names.sort((a, b) => (rank(a) - rank(b)) || defaultRank(a, b));
    }

    function arrange() {
      groupsBox.replaceChildren(...order().map((g) => sections.get(g).section));
    }

    // Move a group to just before or after another (a drag, or a button: past its next shown neighbour).
    function moveTo(group, target, after) {
      const names = order().filter((g) => g !== group);
      names.splice(names.indexOf(target) + (after ? 1 : 0), 0, group);
      layout.order = names;
      arrange();
      save();
    }
    function move(group, by) {
      const shown = order().filter((g) => g === group || !sections.get(g).section.hidden);
      const j = shown.indexOf(group) + by;
      if (j >= 0 && j < shown.length) moveTo(group, shown[j], by > 0);
    }
    mlop.dragReorder(groupsBox, "section.panelgroup", "data-group", moveTo);

    function setCollapsed(group, value) {
      layout.collapsed[group] = value;
      const s = sections.get(group);
      s.section.dataset.collapsed = String(value);
      s.toggle.textContent = (value ? "▸ " : "▾ ") + group;
      s.toggle.setAttribute("aria-expanded", String(!value));
      save();
    }

    function section(group) {
      if (sections.has(group)) return sections.get(group);
      const body = mlop.el("div", { class: "charts" });
      const count = mlop.el("span", { class: "muted count" });
      const toggle = mlop.el("button", { class: "toggle", "data-action": "toggle", onclick: () => setCollapsed(group, !collapsed(group)) });
      const head = mlop.el("h2", { draggable: "true", title: "drag to move the group" },
        mlop.el("span", { class: "grip", "aria-hidden": "true" }, "⠿"), toggle, count,
        mlop.el("button", { class: "move", "data-action": "up", title: "move the group up", onclick: () => move(group, -1) }, "↑"),
        mlop.el("button", { class: "move", "data-action": "down", title: "move the group down", onclick: () => move(group, 1) }, "↓"));
      const s = { section: mlop.el("section", { class: "panelgroup", "data-testid": "panel-group", "data-group": group }, head, body), body, count, toggle };
      sections.set(group, s);
      const value = collapsed(group);
      s.section.dataset.collapsed = String(value);
      toggle.textContent = (value ? "▸ " : "▾ ") + group;
      toggle.setAttribute("aria-expanded", String(!value));
      return s;
    }

    // Where a chart's box goes: the pinned section, or its group in key order.
    function place(key) {
      const box = boxes.get(key);
      const pinned = layout.pinned.includes(key);
      const body = pinned ? pinnedBody : sections.get(mlop.groupOf(key)).body;
      const last = body.lastElementChild;
      const after = !pinned && (!last || last.dataset.key < key) ? null : [...body.children].find((b) => (pinned
        ? layout.pinned.indexOf(b.dataset.key) > layout.pinned.indexOf(key)
        : b.dataset.key > key));
      body.insertBefore(box, after || null);
      box.querySelector(".pin").textContent = pinned ? "unpin" : "pin";
      box.classList.toggle("pinned", pinned);
    }

    function counts() {
      pinnedSection.hidden = !pinnedBody.children.length;
      for (const [group, s] of sections) {
        const shown = [...s.body.children].filter((b) => !b.hidden).length;
        s.count.textContent = ` ${shown}`;
        s.section.hidden = shown === 0 && s.body.children.length > 0 ? !!search.value : false;
        if (!s.body.children.length) s.section.hidden = true;
      }
    }

    function pin(key) {
      const at = layout.pinned.indexOf(key);
      if (at === -1) layout.pinned.push(key); else layout.pinned.splice(at, 1);
      place(key);
      counts();
      save();
      // a chart moved into view gets drawn now
      if (waiting.has(key)) observer.observe(boxes.get(key));
    }

    function filter() {
      const f = mlop.chartFilter(search.value.trim());
      searchNote.textContent = f.error || "";
      groupsBox.classList.toggle("searching", !!search.value.trim());
      for (const [key, box] of boxes) box.hidden = !f.test(key);
      counts();
    }
    search.addEventListener("input", filter);

    const observer = new IntersectionObserver((entries) => {
      const near = [];
      for (const entry of entries) {
        if (!entry.isIntersecting) continue;
        observer.unobserve(entry.target);
        if (waiting.delete(entry.target.dataset.key)) near.push(entry.target.dataset.key);
      }
      if (near.length) draw(near);
    }, { rootMargin: "800px 0px" });
    mlop.observer = observer;

    function visible(key) {
      const box = boxes.get(key);
      if (box.hidden) return false;
      return layout.pinned.includes(key) || !collapsed(mlop.groupOf(key));
    }

    // Place new keys; the first EAGER_CHARTS visible ones are drawn now, the rest when near the view.
    async function add(keys) {
      const fresh = keys.filter((k) => !boxes.has(k));
      for (const [group] of mlop.groupKeys(fresh)) section(group);
      for (const key of fresh) {
        const box = mlop.chartBox(mlop.el("div"), key);
        box.append(mlop.el("button", { class: "pin", "data-action": "pin", title: "pin to the top", onclick: () => pin(key) }, "pin"));
        boxes.set(key, box);
        place(key);
      }
      arrange();
      filter();
      const drawnCount = boxes.size - fresh.length - waiting.size;
      const shown = fresh.filter(visible).sort((a, b) => position(a) - position(b));
      const now = shown.slice(0, Math.max(0, EAGER_CHARTS - drawnCount));
      for (const key of fresh) {
        if (now.includes(key)) continue;
        waiting.add(key);
        observer.observe(boxes.get(key));
      }
      await draw(now);
    }
    // A key's place on the page (pinned first, then groups in order).
    function position(key) {
      const p = layout.pinned.indexOf(key);
      if (p !== -1) return p;
      return 1e6 * (order().indexOf(mlop.groupOf(key)) + 1);
    }

    return { add, box: (key) => boxes.get(key), has: (key) => boxes.has(key), layout };
  };

  // The run page's charts tab: every metric of the run in the project's layout, following a live run
  // (live.charts(names) places new keys and redraws the drawn ones).
  const SERIES_PER_REQUEST = 8;
  mlop.chartsTab = async function (pane, run, keys, live) {
    const metricKeys = keys.filter((k) => k.type === "METRIC").map((k) => k.name);
    pane.append(mlop.chartControls());
    // The layout and the first charts' series are asked for at once (the series of the groups open by
    // default, which a layout seldom closes), so the layout costs no extra round trip.
    const layoutAnswer = mlop.loadLayout(run.project);
    const ahead = new Map();  // key -> the promise of its series
    const first = mlop.groupKeys(metricKeys).filter(([g]) => !mlop.isSystemGroup(g)).flatMap(([, list]) => list)
      .slice(0, EAGER_CHARTS);
    for (let i = 0; i < first.length; i += SERIES_PER_REQUEST) {
      const part = first.slice(i, i + SERIES_PER_REQUEST);
      const answer = mlop.fetchMany(run.id, part);
      for (const key of part) {
        const one = answer.then((found) => found[key] || mlop.EMPTY);
        one.catch(() => {});  // awaited when drawn; a chart the layout keeps folded never is
        ahead.set(key, one);
      }
    }
    const layout = await layoutAnswer;
    const grid = mlop.panelGrid(pane, run.project, layout, draw);
    async function draw(names) {
      if (!names.length) return;
      const box = names.map(grid.box).find((b) => b.clientWidth);
      const width = Math.max(300, Math.floor((box && box.clientWidth) || 420));
      const fresh = names.filter((k) => !ahead.has(k));
      const parts = [];
      for (let i = 0; i < fresh.length; i += SERIES_PER_REQUEST) parts.push(fresh.slice(i, i + SERIES_PER_REQUEST));
      await Promise.all([
        ...names.filter((k) => ahead.has(k)).map(async (key) => {
          const series = await ahead.get(key);
          ahead.delete(key);
          mlop.chart(grid.box(key), key, [series], [run.name], width);
        }),
        ...parts.map(async (part) => {
          const found = await mlop.fetchMany(run.id, part);
          for (const key of part) mlop.chart(grid.box(key), key, [found[key] || mlop.EMPTY], [run.name], width);
        }),
      ]);
    }
    await grid.add(metricKeys);
    if (!metricKeys.length) pane.append(mlop.el("p", { class: "muted", id: "no-metrics" }, "No metrics yet."));
    live.charts = async (names) => {
      const fresh = names.filter((k) => !grid.has(k));
      if (fresh.length) {
        const none = pane.querySelector("#no-metrics");
        if (none) none.remove();
        await grid.add(fresh);
      }
      const known = names.filter((k) => !fresh.includes(k) && mlop.charts[k]);
      for (let i = 0; i < known.length; i += 100) {
        const part = known.slice(i, i + 100);
        const found = await mlop.fetchMany(run.id, part);
        for (const k of part) if (found[k] && mlop.charts[k]) mlop.updateChart(mlop.charts[k], [found[k]]);
      }
    };
  };
})();
