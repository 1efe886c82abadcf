// Shared helpers of the dashboard: the key, the read API, escaping, formatting. Exposes window.mlop.
"use strict";
(function () {
  const mlop = (window.mlop = window.mlop || {});
  mlop.charts = {};
  mlop.timers = [];

  // Logging in: the page trades a key for a session cookie once (POST /ui/session; HttpOnly, so no
  // script here ever reads it) and every call then rides on that cookie with the dashboard's header,
  // without which the server takes the cookie for reads only. `mlop ui` hands the key over in the URL
  // fragment (#key=…, never sent to a server): it is traded at once and dropped from the address bar.
  const DASHBOARD = { "X-Mlop-Dashboard": "1" };
  mlop.keyFromHash = function () {
    const hash = location.hash;
    const match = hash.match(/[#&?]key=([^&]+)/);
    if (!match) return null;
    let rest = hash.replace(/[&?]?key=[^&]+/, "").replace(/^#&/, "#");
    if (rest === "#" || rest === "") rest = "#/";
    history.replaceState(null, "", location.pathname + location.search + rest);
    return decodeURIComponent(match[1]);
  };
  // Log in with a key; resolves to who is logged in, rejects with Unauthorized for a refused key.
  mlop.login = async function (key) {
    const answer = await fetch("session", { method: "POST", cache: "no-store", credentials: "same-origin",
      headers: Object.assign({ "Content-Type": "application/json" }, DASHBOARD), body: JSON.stringify({ key }) });
    if (answer.status === 401 || answer.status === 400) throw new Unauthorized("the key was refused");
    if (!answer.ok) throw new Error(`${answer.status} login: ${answer.statusText}`);
    return (mlop.session = await answer.json());
  };
  mlop.logout = async function () {
    await fetch("logout", { method: "POST", cache: "no-store", credentials: "same-origin", headers: DASHBOARD });
    mlop.session = null;
  };

  class Unauthorized extends Error {}
  mlop.Unauthorized = Unauthorized;

  async function request(path, init) {
    const headers = Object.assign({}, DASHBOARD, (init && init.headers) || {});
    const answer = await fetch(path, Object.assign({}, init || {}, { headers, cache: "no-store", credentials: "same-origin" }));
    if (answer.status === 401) throw new Unauthorized("not logged in, or the session ended");
    if (!answer.ok) {
      let message = answer.statusText;
      try { message = (await answer.json()).message || message; } catch (e) { /* not JSON */ }
      throw new Error(`${answer.status} ${path}: ${message}`);
    }
    return answer;
  }
  mlop.api = async (path) => (await request(path)).json();
  mlop.put = async (path, body) => (await request(path, {
    method: "PUT", body: JSON.stringify(body), headers: { "Content-Type": "application/json" },
  })).json();
  mlop.post = async (path, body) => (await request(path, {
    method: "POST", body: JSON.stringify(body), headers: { "Content-Type": "application/json" },
  })).json();
  // A file of the read API as a blob: URL (img/audio/video cannot send the Authorization header).
  mlop.blobUrl = async (url) => URL.createObjectURL(await (await request(url)).blob());
  mlop.textOf = async (url) => (await request(url)).text();

  mlop.q = (v) => encodeURIComponent(v);
  mlop.esc = (v) => String(v == null ? "" : v).replace(/[&<>"']/g,
    (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  mlop.el = function (tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const child of children.flat()) {
      if (child == null) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  };
  // A moment in the viewer's own time zone, as `mlop runs` prints it (the UTC time is the title of overview's).
  mlop.when = function (ms) {
    if (!ms) return "-";
    const d = new Date(ms);
    const two = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} `
      + `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
  };
  mlop.utc = (ms) => (ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) + " UTC" : null);
  mlop.duration = function (ms) {
    if (ms == null || ms < 0) return "-";
    if (ms < 950) return (ms / 1000).toFixed(1) + "s";  // a short run: 0.3s, not 0s
    const s = Math.round(ms / 1000);
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
    return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  };
  // How long a run ran, on the client's clock (the server's `duration`: right for synced runs too);
  // a server without it: until the last update, or until now while it runs.
  mlop.runDuration = (run) => (run.duration !== undefined ? run.duration
    : (run.status === "RUNNING" ? Date.now() : run.updated) - run.created);
  mlop.number = function (v) {
    if (v == null) return "-";
    if (typeof v === "string") return v;
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(3);
    return String(Math.round(v * 1e4) / 1e4);
  };
  // The read API sends non-finite values as strings; charts draw them as gaps.
  mlop.finite = (v) => (typeof v === "number" ? v : null);
  mlop.every = function (ms, fn) {
    const id = setInterval(fn, ms);
    mlop.timers.push(id);
    return id;
  };
  mlop.stopTimers = function () {
    mlop.timers.forEach(clearInterval);
    mlop.timers = [];
  };
  // A page is drawn: mark the body (tests wait on it) and note when the next frame was painted
  // (mlop.paintedAt, ms since navigation; the benchmark reads it).
  mlop.ready = function (name) {
    document.body.dataset.ready = name;
    mlop.drawnAt = performance.now();
    requestAnimationFrame(() => setTimeout(() => { mlop.paintedAt = performance.now(); }, 0));
  };
  mlop.setStatus = function (text) {
    document.getElementById("status").textContent = text || "";
  };
  mlop.crumbs = function (...parts) {
    const nav = document.getElementById("crumbs");
    nav.replaceChildren(...parts.flatMap((p) => [" / ", typeof p === "string" ? p : p]));
  };
})();
