// One WebSocket per demo user, through the load balancer (same origin as this page).
// Reconnect: exponential backoff with full jitter (capped), or the server's drain advice;
// resume: the last event id goes back as ?lastId= so nothing is lost or repeated.
// Gap check: data.streamSeq is consecutive per stream (topic + organization or user).
// Refusals arrive in-band (an `error` frame, then a 4xxx close): 4004 means the token
// expired, so fetch a fresh one and reconnect; codes that retrying cannot fix stop here.
"use strict";

const BASE_MS = 500, CAP_MS = 15000, STABLE_MS = 10000;
const TOKEN_EXPIRED = 4004;
// 1002 protocol error, 1003 binary, 1007 bad UTF-8, 1009 too big, 4001 unauthorized,
// 4003 forbidden, 4009 bad frame: the same request would be refused again.
const TERMINAL = new Set([1002, 1003, 1007, 1009, 4001, 4003, 4009]);
const state = { viewers: [] };
window.clarionDashboard = {
  snapshot: () => state.viewers.map((v) => ({
    user: v.user, state: v.state, replica: v.replica, replicas: v.replicas.slice(),
    connects: v.connects, events: v.events, gaps: v.gaps, duplicates: v.duplicates,
    lastSeq: v.lastSeq, resets: v.resets,
  })),
};

function el(tag, attrs = {}, text = "") {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text) e.textContent = text;
  return e;
}

function describe(ev) {
  const d = ev.data || {};
  if (d.amount !== undefined) return `${d.amount.toLocaleString()} ${d.currency || ""}`;
  if (d.name) return d.name;
  if (d.totalMembers !== undefined) return `${d.activeMembers}/${d.totalMembers} active`;
  if (d.title) return d.title;
  return "";
}

class Viewer {
  constructor(cfg, wsPath) {
    Object.assign(this, { user: cfg.user, label: cfg.label, orgs: cfg.organizations, token: cfg.token });
    this.lastError = null;
    this.wsPath = wsPath; this.state = "connecting"; this.replica = "-"; this.replicas = [];
    this.connects = 0; this.events = 0; this.gaps = 0; this.duplicates = 0; this.resets = 0;
    this.lastSeq = 0; this.lastId = null; this.attempt = 0; this.streams = new Map();
    this.perOrg = new Map(); this.feed = [];
    this.render(); this.connect();
  }

  url() {
    const q = this.lastId ? `?lastId=${encodeURIComponent(this.lastId)}` : "";
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    return `${scheme}://${location.host}${this.wsPath}${q}`;
  }

  connect() {
    this.state = "connecting"; this.update();
    const ws = new WebSocket(this.url(), ["clarion.v1", `bearer.${this.token}`]);
    this.ws = ws; let advice = null;
    ws.onopen = () => { this.openedAt = Date.now(); };
    ws.onmessage = (m) => {
      const msg = JSON.parse(m.data);
      if (msg.type === "welcome") {
        // No event yet: the welcome's position is where to resume after a drop.
        if (!this.lastId && msg.position) this.lastId = msg.position;
        this.connects += 1; this.state = "open"; this.replica = msg.replicaId;
        this.replicas.push(msg.replicaId);
        this.ping = setInterval(() => ws.readyState === 1 && ws.send('{"type":"ping"}'),
                                (msg.heartbeatSeconds || 30) * 1000);
      } else if (msg.type === "event") {
        this.lastId = msg.id; this.onEvent(msg);
      } else if (msg.type === "reset") {
        this.resets += 1; this.lastId = null; this.streams.clear();
      } else if (msg.type === "reconnect") {
        advice = msg.afterMs || 0;
      } else if (msg.type === "error") {
        this.lastError = msg;
      }
      this.update();
    };
    ws.onclose = (close) => {
      clearInterval(this.ping);
      if (TERMINAL.has(close.code)) {
        this.stop(close);
        return;
      }
      if (close.code === TOKEN_EXPIRED) {
        this.refreshToken().then((fresh) => {
          if (fresh) this.connect();
          else this.stop(close);
        });
        return;
      }
      if (this.openedAt && Date.now() - this.openedAt > STABLE_MS) this.attempt = 0;
      this.openedAt = 0;
      const delay = advice !== null ? advice
        : Math.random() * Math.min(CAP_MS, BASE_MS * 2 ** this.attempt++);
      this.state = `waiting ${(delay / 1000).toFixed(1)}s`; this.update();
      setTimeout(() => this.connect(), delay);
    };
  }

  // The demo's tokens come with the page's config: a fresh one is a new fetch of it. A
  // real app asks its identity provider here. Nothing new: stop instead of looping.
  async refreshToken() {
    this.state = "refreshing token"; this.update();
    try {
      const cfg = await (await fetch("config.json", { cache: "no-store" })).json();
      const mine = cfg.viewers.find((v) => v.user === this.user);
      if (mine && mine.token && mine.token !== this.token) {
        this.token = mine.token;
        return true;
      }
    } catch (e) { /* the page's server is gone: same as no fresh token */ }
    return false;
  }

  stop(close) {
    const why = (this.lastError && this.lastError.message) || close.reason || "refused";
    this.state = `stopped: ${close.code} ${why}`; this.update();
  }

  onEvent(ev) {
    const d = ev.data || {};
    this.events += 1; this.lastSeq = Math.max(this.lastSeq, d.seq || 0);
    if (d.stream) {
      const prev = this.streams.get(d.stream);
      if (prev !== undefined && d.streamSeq <= prev) this.duplicates += 1;
      else if (prev !== undefined && d.streamSeq > prev + 1) this.gaps += d.streamSeq - prev - 1;
      this.streams.set(d.stream, Math.max(prev || 0, d.streamSeq));
    }
    const org = ev.organizationId || (ev.userId ? "personal" : "everyone");
    const row = this.perOrg.get(org) || { count: 0, last: "" };
    row.count += 1; row.last = `${ev.eventType} ${describe(ev)}`;
    this.perOrg.set(org, row);
    this.feed.unshift(`#${d.seq} ${org} ${ev.eventType} ${describe(ev)}`);
    this.feed.length = Math.min(this.feed.length, 12);
  }

  render() {
    const card = el("section", { class: "card", "data-user": this.user });
    card.append(el("h2", {}, `${this.label}`));
    card.append(el("div", { class: "meta" }, `user ${this.user} · organizations ${this.orgs.join(", ") || "none"}`));
    this.status = el("div", { class: "meta" }); card.append(this.status);
    this.table = el("table"); card.append(this.table);
    this.feedEl = el("div", { class: "feed" }); card.append(this.feedEl);
    document.getElementById("viewers").append(card);
  }

  update() {
    const cls = this.state === "open" ? "open" : this.state === "connecting" ? "connecting"
      : this.state.startsWith("stopped") ? "stopped" : "waiting";
    this.status.innerHTML = "";
    this.status.append(el("span", { class: `state ${cls}`, "data-testid": "state" }, this.state),
      el("span", {}, ` replica `), el("b", { "data-testid": "replica" }, this.replica),
      el("span", {}, ` · connects ${this.connects} · events `),
      el("b", { "data-testid": "events" }, String(this.events)),
      el("span", {}, ` · gaps `), el("b", { "data-testid": "gaps" }, String(this.gaps)),
      el("span", {}, ` · duplicates `), el("b", { "data-testid": "duplicates" }, String(this.duplicates)));
    this.table.innerHTML = "<tr><th>organization</th><th>events</th><th>latest</th></tr>";
    for (const [org, row] of [...this.perOrg.entries()].sort()) {
      const tr = el("tr"); tr.append(el("td", {}, org), el("td", {}, String(row.count)), el("td", {}, row.last));
      this.table.append(tr);
    }
    this.feedEl.textContent = this.feed.join("\n");
    this.feedEl.style.whiteSpace = "pre";
    const total = state.viewers.reduce((n, v) => n + v.events, 0);
    document.getElementById("summary").textContent =
      `${state.viewers.length} users connected through the load balancer · ${total} events received`;
  }
}

fetch("config.json").then((r) => r.json()).then((cfg) => {
  for (const v of cfg.viewers) state.viewers.push(new Viewer(v, cfg.websocketPath));
});
