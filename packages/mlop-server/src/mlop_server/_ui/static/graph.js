// The model graph: the modules of the graph record as nodes and edges, laid out by dagre (vendored), drawn
// in SVG with zoom (wheel), pan (drag) and collapsible modules (click a module). With the data flow of the
// first forward pass (`edges`), modules are boxes around their children and edges follow the flow; a
// record without edges is drawn as its module tree. Each node shows its type, parameter count and shapes.
"use strict";
(function () {
  const mlop = window.mlop;
  const SVG = "http://www.w3.org/2000/svg";
  // Graphs of more nodes than this open with the modules below depth 1 collapsed.
  const OPEN_ALL = 80;

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v != null) node.setAttribute(k, v);
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  const parentOf = (path) => (path === "." ? null : path.includes(".") ? path.slice(0, path.lastIndexOf(".")) : ".");
  const shortName = (path) => (path === "." ? "model" : path.slice(path.lastIndexOf(".") + 1));
  const count = (shape) => shape.reduce((a, b) => a * b, 1);
  function human(n) {
    if (n >= 1e9) return (n / 1e9).toFixed(1) + "B";
    if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
    if (n >= 1e3) return (n / 1e3).toFixed(1) + "k";
    return String(n);
  }

  // The record as a tree: children, own and total parameter counts, and the flow edges.
  function model(graph) {
    const nodes = graph.nodes || {};
    const names = Object.keys(nodes).sort((a, b) => (nodes[a].order ?? 0) - (nodes[b].order ?? 0));
    const children = new Map(names.map((n) => [n, []]));
    const parent = new Map();
    for (const n of names) {
      let p = parentOf(n);
      while (p !== null && !children.has(p)) p = parentOf(p);  // a wrapper left out of the record
      if (p !== null && p !== n) { children.get(p).push(n); parent.set(n, p); }
    }
    const own = new Map(names.map((n) => [n, Object.values(nodes[n].params || {}).reduce((a, s) => a + count(s), 0)]));
    const total = new Map();
    const sum = (n) => {
      if (!total.has(n)) total.set(n, own.get(n) + children.get(n).reduce((a, c) => a + sum(c), 0));
      return total.get(n);
    };
    names.forEach(sum);
    const edges = [];
    for (const n of names) for (const e of nodes[n].edges || []) if (children.has(e[0]) && children.has(e[1])) edges.push(e);
    return { nodes, names, children, parent, own, total, edges, flow: edges.length > 0, root: children.has(".") ? "." : names[0] };
  }

  // A dagre layout of what is visible with `closed` modules collapsed.
  function layout(m, closed) {
    const hidden = new Set();
    const hide = (n) => m.children.get(n).forEach((c) => { hidden.add(c); hide(c); });
    closed.forEach((n) => { if (!hidden.has(n)) hide(n); });
    const visible = m.names.filter((n) => !hidden.has(n));
    const cluster = (n) => m.flow && m.children.get(n).length > 0 && !closed.has(n);
    const g = new dagre.graphlib.Graph({ compound: m.flow, multigraph: false });
    g.setGraph({ rankdir: "TB", nodesep: 16, ranksep: 26, marginx: 16, marginy: 24 });
    g.setDefaultEdgeLabel(() => ({}));
    for (const n of visible) {
      if (cluster(n)) { g.setNode(n, { cluster: true }); continue; }
      const info = m.nodes[n];
      const shapes = Object.entries(info.params || {}).map(([p, s]) => `${p} [${s.join(", ")}]`).join("  ");
      const lines = [shortName(n) + (m.children.get(n).length ? (closed.has(n) ? " ▸" : " ▾") : ""),
        `${info.type} · ${human(m.total.get(n))} params`];
      if (shapes) lines.push(shapes.length > 48 ? shapes.slice(0, 47) + "…" : shapes);
      const width = Math.max(90, 12 + 6.6 * Math.max(...lines.map((l) => l.length)));
      g.setNode(n, { width, height: 14 + 15 * lines.length, lines });
    }
    if (m.flow) {
      for (const n of visible) {
        const p = m.parent.get(n);
        if (p !== undefined && cluster(p)) g.setParent(n, p);
      }
    }
    // An end inside a collapsed module goes to that module; edges at open modules are carried by their children.
    const shown = (n) => { let top = n; for (let p = m.parent.get(n); p !== undefined; p = m.parent.get(p)) if (closed.has(p)) top = p; return top; };
    const pairs = new Set();
    const edges = m.flow ? m.edges : m.names.flatMap((n) => m.children.get(n).map((c) => [n, c]));
    for (const [a, b] of edges) {
      const s = shown(a), t = shown(b);
      if (s === t || hidden.has(s) || hidden.has(t) || cluster(s) || cluster(t)) continue;
      const id = s + "\u0000" + t;
      if (!pairs.has(id)) { pairs.add(id); g.setEdge(s, t); }
    }
    dagre.layout(g);
    return g;
  }

  function draw(holder, m, closed, view) {
    let g;
    try {
      g = layout(m, closed);
    } catch (e) {  // a compound layout dagre cannot place: the flow without module boxes
      g = layout(Object.assign({}, m, { flow: false }), closed);
    }
    const root = svg("g", { class: "viewport" });
    const clusters = svg("g"), edgesLayer = svg("g"), nodesLayer = svg("g");
    root.append(clusters, edgesLayer, nodesLayer);
    for (const id of g.nodes()) {
      const n = g.node(id);
      if (!n || n.x == null) continue;
      const info = m.nodes[id];
      const title = svg("title", {}, `${id}\n${info.type}\n${m.total.get(id).toLocaleString()} parameters` +
        Object.entries(info.params || {}).map(([p, s]) => `\n${p}: [${s.join(", ")}] (${count(s).toLocaleString()})`).join(""));
      const x = n.x - n.width / 2, y = n.y - n.height / 2;
      const foldable = m.children.get(id).length > 0;
      const toggle = () => { if (closed.has(id)) closed.delete(id); else closed.add(id); draw(holder, m, closed, view); };
      if (n.cluster) {
        const label = svg("text", { x: x + 6, y: y - 6, class: "clusterlabel" }, `▾ ${shortName(id)} · ${info.type} · ${human(m.total.get(id))} params`);
        const group = svg("g", { class: "node cluster", "data-node": id, "data-open": "true" }, title,
          svg("rect", { x, y, width: n.width, height: n.height, rx: 6 }), label);
        label.addEventListener("click", (e) => { e.stopPropagation(); toggle(); });  // the box itself pans
        clusters.append(group);
        continue;
      }
      const group = svg("g", { class: "node" + (foldable ? " foldable" : ""), "data-node": id,
        "data-open": foldable ? String(!closed.has(id)) : null, transform: `translate(${x},${y})` }, title,
      svg("rect", { width: n.width, height: n.height, rx: 4 }),
      ...n.lines.map((line, i) => svg("text", { x: 6, y: 16 + 15 * i, class: i === 0 ? "name" : "meta" }, line)));
      if (foldable) group.addEventListener("click", (e) => { e.stopPropagation(); toggle(); });
      nodesLayer.append(group);
    }
    for (const e of g.edges()) {
      const pts = g.edge(e).points || [];
      if (!pts.length) continue;
      const d = "M" + pts.map((p) => `${p.x},${p.y}`).join(" L");
      edgesLayer.append(svg("path", { d, class: "edge", "data-from": e.v, "data-to": e.w, "marker-end": "url(#arrow)" }));
    }
    const size = g.graph();
    view.size = { width: size.width || 100, height: size.height || 100 };
    const defs = svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto-start-reverse" },
      svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrowhead" })));
    view.svg.replaceChildren(defs, root);
    view.root = root;
    view.apply();
    holder.dataset.nodes = String(nodesLayer.children.length + clusters.children.length);
    holder.dataset.edges = String(edgesLayer.children.length);
  }

  mlop.graphTab = function (pane, run) {
    const graph = run.graph || {};
    const m = model(graph);
    if (!m.names.length) return pane.append(mlop.el("p", { class: "muted" }, "No model graph."));
    const closed = new Set();
    if (m.names.length > OPEN_ALL) {
      for (const n of m.names) if (m.children.get(n).length && (m.nodes[n].depth || 0) >= 1) closed.add(n);
    }
    const box = svg("svg", { class: "graphsvg", width: "100%", height: "640" });
    const holder = mlop.el("div", { class: "modelgraph", "data-testid": "model-graph" }, box);
    const view = { svg: box, scale: 1, tx: 0, ty: 0, size: null, root: null };
    view.apply = () => { if (view.root) view.root.setAttribute("transform", `translate(${view.tx},${view.ty}) scale(${view.scale})`); };
    // The whole graph in view: as wide as the box allows, the box as tall as the graph then (up to 1,000 px).
    view.fit = () => {
      const w = box.clientWidth || 900;
      let scale = Math.min(1.2, (w - 16) / view.size.width);
      if (view.size.height * scale > 1000) scale = 1000 / view.size.height;
      box.setAttribute("height", String(Math.max(240, Math.ceil(view.size.height * scale + 16))));
      view.scale = scale;
      view.tx = (w - view.size.width * scale) / 2;
      view.ty = 8;
      view.apply();
    };
    box.addEventListener("wheel", (e) => {
      e.preventDefault();
      const rect = box.getBoundingClientRect();
      const px = e.clientX - rect.left, py = e.clientY - rect.top;
      const k = Math.exp(-e.deltaY * 0.0015);
      const scale = Math.min(8, Math.max(0.05, view.scale * k));
      view.tx = px - (px - view.tx) * (scale / view.scale);
      view.ty = py - (py - view.ty) * (scale / view.scale);
      view.scale = scale;
      view.apply();
    }, { passive: false });
    let drag = null;
    box.addEventListener("pointerdown", (e) => {
      if (e.target.closest(".node:not(.cluster)") || e.target.closest(".clusterlabel")) return;
      drag = { x: e.clientX, y: e.clientY, tx: view.tx, ty: view.ty };
      box.setPointerCapture(e.pointerId);
    });
    box.addEventListener("pointermove", (e) => {
      if (!drag) return;
      view.tx = drag.tx + e.clientX - drag.x;
      view.ty = drag.ty + e.clientY - drag.y;
      view.apply();
    });
    box.addEventListener("pointerup", () => { drag = null; });
    const redraw = () => { draw(holder, m, closed, view); view.fit(); };
    const params = m.total.get(m.root);
    pane.append(mlop.el("div", { class: "controls" },
      mlop.el("button", { onclick: view.fit }, "fit"),
      mlop.el("button", { id: "graph-expand", onclick: () => { closed.clear(); redraw(); } }, "expand all"),
      mlop.el("button", { id: "graph-collapse", onclick: () => { m.names.forEach((n) => { if (m.children.get(n).length && n !== m.root) closed.add(n); }); redraw(); } }, "collapse all"),
      mlop.el("span", { class: "muted" }, `${m.names.length} modules · ${params.toLocaleString()} parameters · ${m.flow ? "data flow of the first forward pass" : "module tree"} · wheel to zoom, drag to pan, click a module to fold it`)),
    holder);
    redraw();
  };
})();
