// The state machine: lastId, backoff, drain advice, token refresh, refusals, heartbeats.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ClientCore } from "../../dist/index.js";

const URLS = ["ws://127.0.0.1:1/ws/d", "ws://127.0.0.1:2/ws/d"];
const welcome = (extra = {}) => JSON.stringify({ type: "welcome", connectionId: "c", replicaId: "w1", heartbeatSeconds: 5, resumable: true, batch: false, ...extra });
const event = (id, seq) => JSON.stringify({ type: "event", id, topic: "t", eventType: "A", organizationId: "o", data: { seq }, ts: 0 });

/** A core plus a log of its effects; `t` is the fake clock. */
function machine(options = {}) {
  const core = new ClientCore({ urls: URLS, transport: "ws", random: () => 0.5, ...options });
  const m = {
    core,
    t: 0,
    feed(input) {
      return core.handle(input, m.t);
    },
    /** start, token, open, welcome: a connected session; returns its connect request. */
    connect(token = "T1", extra = {}) {
      m.feed({ kind: "start" });
      const effects = m.feed({ kind: "token", token });
      const request = effects.find((e) => e.kind === "connect").request;
      m.feed({ kind: "open", conn: request.conn });
      m.feed({ kind: "text", conn: request.conn, text: welcome(extra) });
      return request;
    },
  };
  return m;
}
const kinds = (effects, kind) => effects.filter((e) => e.kind === kind);
const states = (effects) => kinds(effects, "state").map((e) => e.change);
const timer = (effects, name) => kinds(effects, "setTimer").find((e) => e.name === name)?.ms;

test("first connect: token asked once, bearer subprotocol, connected on welcome", () => {
  const m = machine();
  assert.deepEqual(m.feed({ kind: "start" }), [{ kind: "fetchToken", reason: "initial" }]);
  const effects = m.feed({ kind: "token", token: "T1" });
  const { request } = kinds(effects, "connect")[0];
  assert.equal(request.url, URLS[0]);
  assert.deepEqual(request.protocols, ["clarion.v1", "bearer.T1"]);
  assert.equal(states(effects)[0].state, "connecting");
  m.feed({ kind: "open", conn: request.conn });
  const w = m.feed({ kind: "text", conn: request.conn, text: welcome({ position: "P0" }) });
  assert.equal(states(w)[0].state, "connected");
  assert.equal(states(w)[0].replicaId, "w1");
  assert.ok(kinds(w, "cancelTimer").some((e) => e.name === "connect"));
});

test("lastId: the welcome's position, then each event's id, sent on reconnect to the next replica", () => {
  const m = machine();
  const first = m.connect("T1", { position: "P0" });
  assert.equal(m.core.lastId, "P0");
  const batch = JSON.stringify({ type: "batch", events: [JSON.parse(event("E1", 1)), JSON.parse(event("E2", 2))] });
  const got = m.feed({ kind: "text", conn: first.conn, text: batch });
  assert.deepEqual(kinds(got, "event").map((e) => e.event.id), ["E1", "E2"]);
  assert.equal(m.core.lastId, "E2");
  const closed = m.feed({ kind: "closed", conn: first.conn, code: 1006, message: "" });
  const reconnecting = states(closed)[0];
  assert.equal(reconnecting.state, "reconnecting");
  assert.equal(reconnecting.delayMs, 500, "full jitter: random 0.5 of min(cap, 1000 * 2^0)");
  assert.equal(reconnecting.advised, false);
  const again = m.feed({ kind: "timer", name: "retry" });
  const { request } = kinds(again, "connect")[0];
  assert.equal(request.url, `${URLS[1]}?lastId=E2`);
  assert.notEqual(request.conn, first.conn);
  // A welcome with a position does not replace a kept id.
  m.feed({ kind: "open", conn: request.conn });
  m.feed({ kind: "text", conn: request.conn, text: welcome({ position: "P9" }) });
  assert.equal(m.core.lastId, "E2");
});

test("an id given at construction is sent on the first connect", () => {
  const m = machine({ lastId: "SAVED" });
  m.feed({ kind: "start" });
  const { request } = kinds(m.feed({ kind: "token", token: "T" }), "connect")[0];
  assert.equal(request.url, `${URLS[0]}?lastId=SAVED`);
});

test("reset forgets the cursor and is reported", () => {
  const m = machine();
  const r = m.connect();
  m.feed({ kind: "text", conn: r.conn, text: event("E1", 1) });
  const effects = m.feed({ kind: "text", conn: r.conn, text: '{"type":"reset","reason":"bad_cursor"}' });
  assert.deepEqual(kinds(effects, "reset")[0].reset, { type: "reset", reason: "bad_cursor" });
  assert.equal(m.core.lastId, null);
});

test("backoff grows per failed attempt and resets after a stable connection", () => {
  const m = machine({ random: () => 0.999 });
  let r = m.connect();
  const delays = [];
  for (let i = 0; i < 4; i += 1) {
    const closed = m.feed({ kind: "closed", conn: r.conn, code: 1006, message: "" });
    delays.push(states(closed)[0].delayMs);
    r = kinds(m.feed({ kind: "timer", name: "retry" }), "connect")[0].request;
  }
  assert.deepEqual(delays, [999, 1998, 3996, 7992]);
  m.feed({ kind: "open", conn: r.conn });
  m.feed({ kind: "text", conn: r.conn, text: welcome() });
  m.t += 30000;
  const closed = m.feed({ kind: "closed", conn: r.conn, code: 1006, message: "" });
  assert.equal(states(closed)[0].delayMs, 999, "back to attempt 0 after 30 s up");
});

test("drain advice: the advised delay, exactly, and the next replica", () => {
  const m = machine({ random: () => 0.999 });
  const r = m.connect();
  m.feed({ kind: "text", conn: r.conn, text: '{"type":"reconnect","reason":"drain","afterMs":1840}' });
  const closed = m.feed({ kind: "closed", conn: r.conn, code: 4100, message: "drain" });
  assert.deepEqual(states(closed)[0], { state: "reconnecting", delayMs: 1840, reason: { code: 4100, message: "drain" }, advised: true });
  assert.equal(timer(closed, "retry"), 1840);
  assert.equal(m.core.attempt, 0, "advice does not count as a failed attempt");
});

test("token expired mid-connection: a fresh token, reconnect at once", () => {
  const m = machine();
  const r = m.connect("T1");
  m.feed({ kind: "text", conn: r.conn, text: '{"type":"error","code":4004,"message":"expired"}' });
  const closed = m.feed({ kind: "closed", conn: r.conn, code: 4004, message: "" });
  assert.deepEqual(kinds(closed, "fetchToken"), [{ kind: "fetchToken", reason: "expired" }]);
  assert.equal(states(closed)[0].reason.message, "expired");
  const again = m.feed({ kind: "token", token: "T2" });
  assert.deepEqual(kinds(again, "connect")[0].request.protocols, ["clarion.v1", "bearer.T2"]);
  assert.equal(timer(again, "retry"), undefined, "no backoff wait");
});

test("token expired and the provider has nothing new: stop, no loop", () => {
  for (const fresh of ["T1", null]) {
    const m = machine();
    const r = m.connect("T1");
    m.feed({ kind: "closed", conn: r.conn, code: 4004, message: "expired" });
    const effects = m.feed({ kind: "token", token: fresh });
    const [change] = states(effects);
    assert.equal(change.state, "closed");
    assert.equal(change.reason.refused, true);
    assert.equal(change.reason.code, 4004);
    assert.equal(kinds(effects, "connect").length, 0);
  }
});

test("refusals are terminal with the server's reason; no timer survives", () => {
  const m = machine();
  const r = m.connect();
  m.feed({ kind: "text", conn: r.conn, text: '{"type":"error","code":4001,"message":"bad_signature: x"}' });
  const effects = m.feed({ kind: "closed", conn: r.conn, code: 4001, message: "" });
  assert.deepEqual(states(effects), [{ state: "closed", reason: { code: 4001, message: "bad_signature: x", refused: true } }]);
  assert.equal(kinds(effects, "setTimer").length, 0);
  assert.deepEqual(m.feed({ kind: "timer", name: "retry" }), []);
  assert.deepEqual(m.feed({ kind: "start" }), []);
});

test("SSE refusals by HTTP status: 401 expired refreshes, 403 stops, 503 retries", () => {
  const m = machine({ transport: "sse", urls: ["http://127.0.0.1:1/sse/d"] });
  m.feed({ kind: "start" });
  let r = kinds(m.feed({ kind: "token", token: "T1" }), "connect")[0].request;
  assert.equal(r.header, true);
  assert.deepEqual(r.protocols, []);
  let effects = m.feed({ kind: "closed", conn: r.conn, code: 1006, message: "unavailable", httpStatus: 503 });
  assert.equal(states(effects)[0].state, "reconnecting");
  r = kinds(m.feed({ kind: "timer", name: "retry" }), "connect")[0].request;
  effects = m.feed({ kind: "closed", conn: r.conn, code: 1006, message: "expired", httpStatus: 401 });
  assert.equal(kinds(effects, "fetchToken").length, 1);
  r = kinds(m.feed({ kind: "token", token: "T2" }), "connect")[0].request;
  effects = m.feed({ kind: "closed", conn: r.conn, code: 1006, message: "missing_claims", httpStatus: 403 });
  assert.equal(states(effects)[0].state, "closed");
  assert.equal(states(effects)[0].reason.httpStatus, 403);
  assert.equal(states(effects)[0].reason.code, 4003, "the code a WebSocket would have had");
});

test("WebSocket heartbeat: ping after silence, no pong in time means reconnect", () => {
  const m = machine({ heartbeatIntervalMs: 2000, heartbeatTimeoutMs: 1000 });
  const r = m.connect();
  const idle = m.feed({ kind: "text", conn: r.conn, text: event("E1", 1) });
  assert.equal(timer(idle, "idle"), 2000, "any frame re-arms the idle timer");
  const ping = m.feed({ kind: "timer", name: "idle" });
  assert.deepEqual(kinds(ping, "send"), [{ kind: "send", conn: r.conn, text: '{"type":"ping"}' }]);
  assert.equal(timer(ping, "dead"), 1000);
  const pong = m.feed({ kind: "text", conn: r.conn, text: '{"type":"pong"}' });
  assert.ok(kinds(pong, "cancelTimer").some((e) => e.name === "dead"), "a pong clears the deadline");
  m.feed({ kind: "timer", name: "idle" });
  const dead = m.feed({ kind: "timer", name: "dead" });
  assert.deepEqual(kinds(dead, "disconnect"), [{ kind: "disconnect", conn: r.conn }]);
  assert.equal(states(dead)[0].state, "reconnecting");
  assert.match(states(dead)[0].reason.message, /heartbeat/);
  // The abandoned socket's late close changes nothing.
  assert.deepEqual(m.feed({ kind: "closed", conn: r.conn, code: 1006, message: "" }), []);
});

test("SSE heartbeat: the server's comments keep it alive; silence past heartbeatSeconds + timeout reconnects", () => {
  const m = machine({ transport: "sse", urls: ["http://h/sse/d"], heartbeatTimeoutMs: 1000 });
  const r = m.connect("T", { heartbeatSeconds: 5 });
  const alive = m.feed({ kind: "alive", conn: r.conn });
  assert.equal(timer(alive, "idle"), 6000);
  const dead = m.feed({ kind: "timer", name: "idle" });
  assert.equal(kinds(dead, "send").length, 0, "SSE cannot ping");
  assert.equal(states(dead)[0].state, "reconnecting");
});

test("no welcome within the connect timeout: give up that attempt", () => {
  const m = machine({ connectTimeoutMs: 3000 });
  m.feed({ kind: "start" });
  const effects = m.feed({ kind: "token", token: "T" });
  assert.equal(timer(effects, "connect"), 3000);
  const r = kinds(effects, "connect")[0].request;
  const timeout = m.feed({ kind: "timer", name: "connect" });
  assert.deepEqual(kinds(timeout, "disconnect"), [{ kind: "disconnect", conn: r.conn }]);
  assert.equal(states(timeout)[0].state, "reconnecting");
});

test("stop: closed by the client, the socket closed, no reconnect", () => {
  const m = machine();
  const r = m.connect();
  const effects = m.feed({ kind: "stop" });
  assert.deepEqual(kinds(effects, "disconnect"), [{ kind: "disconnect", conn: r.conn }]);
  assert.deepEqual(states(effects), [{ state: "closed", reason: { code: 1000, message: "closed by the client", refused: false } }]);
  assert.deepEqual(m.feed({ kind: "closed", conn: r.conn, code: 1000, message: "" }), []);
});

test("subscribe is sent after the welcome when event types are given", () => {
  const m = machine({ eventTypes: ["A", "B"] });
  m.feed({ kind: "start" });
  const r = kinds(m.feed({ kind: "token", token: "T" }), "connect")[0].request;
  m.feed({ kind: "open", conn: r.conn });
  const effects = m.feed({ kind: "text", conn: r.conn, text: welcome() });
  assert.deepEqual(kinds(effects, "send"), [{ kind: "send", conn: r.conn, text: '{"type":"subscribe","eventTypes":["A","B"]}' }]);
});

test("bad options are refused at construction", () => {
  assert.throws(() => new ClientCore({ urls: [], transport: "ws" }), /at least one URL/);
  assert.throws(() => new ClientCore({ urls: ["x"], transport: "smoke" }), /unknown transport/);
  assert.throws(() => new ClientCore({ urls: ["x"], transport: "sse", tokenPlacement: "subprotocol" }), /SSE has no subprotocols/);
});

test("SSE stream ends take their code from the error frame or the drain advice", () => {
  const m = machine({ transport: "sse", urls: ["http://h/sse/d"] });
  let r = m.connect();
  m.feed({ kind: "text", conn: r.conn, text: '{"type":"error","code":4004,"message":"expired"}' });
  let effects = m.feed({ kind: "closed", conn: r.conn, code: 1000, message: "stream ended" });
  assert.deepEqual(states(effects)[0].reason, { code: 4004, message: "expired" });
  assert.equal(kinds(effects, "fetchToken").length, 1);
  r = kinds(m.feed({ kind: "token", token: "T2" }), "connect")[0].request;
  m.feed({ kind: "open", conn: r.conn });
  m.feed({ kind: "text", conn: r.conn, text: welcome() });
  m.feed({ kind: "text", conn: r.conn, text: '{"type":"reconnect","reason":"drain","afterMs":700}' });
  effects = m.feed({ kind: "closed", conn: r.conn, code: 1000, message: "stream ended" });
  assert.deepEqual(states(effects)[0], { state: "reconnecting", delayMs: 700, reason: { code: 4100, message: "stream ended" }, advised: true });
});

test("a session ended without a reason after the token's exp counts as expired", () => {
  const jwt = (exp) => `h.${Buffer.from(JSON.stringify({ exp, sub: "u" })).toString("base64url")}.s`;
  const m = machine({ transport: "sse", urls: ["http://h/sse/d"] });
  m.t = 1000_000;
  let r = m.connect(jwt(1000 + 60));
  let effects = m.feed({ kind: "closed", conn: r.conn, code: 1000, message: "stream ended" });
  assert.equal(states(effects)[0].reason.code, 1000, "exp not reached: an ordinary end, backoff");
  assert.equal(kinds(effects, "fetchToken").length, 0);
  r = kinds(m.feed({ kind: "timer", name: "retry" }), "connect")[0].request;
  m.t = 1061_000;
  effects = m.feed({ kind: "closed", conn: r.conn, code: 1000, message: "stream ended" });
  assert.equal(states(effects)[0].reason.code, 4004);
  assert.equal(states(effects)[0].delayMs, 0);
  assert.deepEqual(kinds(effects, "fetchToken"), [{ kind: "fetchToken", reason: "expired" }]);
});
