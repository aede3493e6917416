// One WebSocket per demo user, through the load balancer (same origin as this page), with
// the @clarion/client package's browser bundle (clients/typescript, served as /clarion.js):
// it reconnects with full-jitter backoff or the server's drain advice, resumes with the
// last event id (nothing lost or repeated), asks for a fresh token after 4004 and stops on
// refusals that retrying cannot fix. This page only renders what it reports.
// Gap check: data.streamSeq is consecutive per stream (topic + organization or user).
import { ClarionClient } from "./clarion.js";

const BASE_MS = 500, CAP_MS = 15000, STABLE_MS = 10000;
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
    this.state = "connecting"; this.replica = "-"; this.replicas = [];
    this.connects = 0; this.events = 0; this.gaps = 0; this.duplicates = 0; this.resets = 0;
    this.lastSeq = 0; this.streams = new Map();
    this.perOrg = new Map(); this.feed = [];
    this.render();
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    this.client = new ClarionClient({
      url: `${scheme}://${location.host}${wsPath}`,
      backoffBaseMs: BASE_MS, backoffCapMs: CAP_MS, stableMs: STABLE_MS,
      tokenProvider: (reason) => (reason === "expired" ? this.refreshToken() : this.token),
      onEvent: (ev) => { this.onEvent(ev); this.update(); },
      onReset: () => { this.resets += 1; this.streams.clear(); this.update(); },
      onState: (change) => { this.onState(change); this.update(); },
    }).start();
  }

  onState(change) {
    if (change.state === "connecting") this.state = "connecting";
    else if (change.state === "connected") {
      this.connects += 1; this.state = "open"; this.replica = change.replicaId;
      this.replicas.push(change.replicaId);
    } else if (change.state === "reconnecting") {
      this.state = change.reason.code === 4004 ? "refreshing token"
        : `waiting ${(change.delayMs / 1000).toFixed(1)}s`;
    } else if (change.state === "closed") {
      this.state = `stopped: ${change.reason.code} ${change.reason.message}`;
    }
  }

  // The demo's tokens come with the page's config: a fresh one is a new fetch of it. A
  // real app asks its identity provider here. The same token again (or none) stops the
  // client instead of looping.
  async refreshToken() {
    try {
      const cfg = await (await fetch("config.json", { cache: "no-store" })).json();
      const mine = cfg.viewers.find((v) => v.user === this.user);
      if (mine && mine.token) this.token = mine.token;
      return mine ? mine.token : null;
    } catch (e) {
      return null; // the page's server is gone: same as no fresh token
    }
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
