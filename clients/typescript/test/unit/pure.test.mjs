// Pure parts: backoff, frame parsing (batch frames included), SSE parsing, URLs, close codes.
import assert from "node:assert/strict";
import { test } from "node:test";

import { SseParser, backoffDelay, codeForStatus, normalizeClose, tokenExpiryMs, connectUrl, disposition, parseFrame, subprotocols } from "../../dist/index.js";

test("full jitter: uniform in [0, min(cap, base * 2^attempt)]", () => {
  assert.equal(backoffDelay(0, 1000, 60000, () => 0), 0);
  assert.equal(backoffDelay(0, 1000, 60000, () => 0.999999), 999);
  assert.equal(backoffDelay(3, 1000, 60000, () => 0.5), 4000);
  assert.equal(backoffDelay(10, 1000, 60000, () => 0.5), 30000, "capped at 60 s");
  assert.equal(backoffDelay(5000, 1000, 60000, () => 0.5), 30000, "a huge attempt count stays finite");
  const delays = Array.from({ length: 200 }, (_, i) => backoffDelay(2, 1000, 60000, () => i / 200));
  assert.ok(new Set(delays).size > 150, "jittered, not one fixed delay");
  assert.ok(delays.every((d) => d >= 0 && d < 4000));
});

test("event and batch frames become single events, in order", () => {
  const event = { type: "event", id: "c1", topic: "t", eventType: "A", organizationId: "o", data: { seq: 1 }, ts: 1 };
  assert.deepEqual(parseFrame(JSON.stringify(event)), { kind: "events", events: [event] });
  const batch = { type: "batch", events: [event, { ...event, id: "c2" }, { ...event, id: "c3" }] };
  const parsed = parseFrame(JSON.stringify(batch));
  assert.equal(parsed.kind, "events");
  assert.deepEqual(parsed.events.map((e) => e.id), ["c1", "c2", "c3"]);
});

test("welcome, reset, reconnect advice, error, pong", () => {
  const welcome = { type: "welcome", connectionId: "c", replicaId: "w1", heartbeatSeconds: 25, resumable: true, batch: false, position: "P" };
  assert.deepEqual(parseFrame(JSON.stringify(welcome)), { kind: "welcome", welcome });
  assert.deepEqual(parseFrame('{"type":"reset","reason":"too_far_behind"}'), { kind: "reset", reset: { type: "reset", reason: "too_far_behind" } });
  assert.deepEqual(parseFrame('{"type":"reconnect","reason":"drain","afterMs":1840}'), { kind: "reconnect", afterMs: 1840, reason: "drain" });
  assert.deepEqual(parseFrame('{"type":"reconnect","reason":"drain","afterMs":-5}').afterMs, 0);
  assert.deepEqual(parseFrame('{"type":"error","code":4004,"message":"expired"}'), { kind: "error", error: { type: "error", code: 4004, message: "expired" } });
  assert.deepEqual(parseFrame('{"type":"pong"}'), { kind: "pong" });
});

test("frames this client cannot use are ignored, never fatal", () => {
  for (const text of ["not json", "[1]", "null", '{"type":"future"}', '{"type":"event"}']) {
    assert.equal(parseFrame(text).kind, "ignored", text);
  }
});

test("SSE: messages across chunk boundaries, CRLF, comments, multi-line data", () => {
  const parser = new SseParser();
  let out = parser.feed('id: A\ndata: {"type":"wel');
  assert.deepEqual(out, { messages: [], comments: [] });
  out = parser.feed('come"}\n\n: ping\r\n\r');
  assert.deepEqual(out.messages, [{ id: "A", event: "message", data: '{"type":"welcome"}' }]);
  assert.deepEqual(out.comments, ["ping"]);
  out = parser.feed("\ndata: line1\ndata: line2\n\nevent: x\ndata:y\n\n");
  assert.deepEqual(out.messages, [
    { event: "message", data: "line1\nline2" },
    { event: "x", data: "y" },
  ]);
  assert.equal(parser.lastEventId, "A");
});

test("connect URL: lastId replaced, token in the query only when asked", () => {
  assert.equal(connectUrl("ws://h/ws/d", null, "T", "subprotocol"), "ws://h/ws/d");
  assert.equal(connectUrl("ws://h/ws/d?batch=1&lastId=old", "a/b+c", "T", "subprotocol"), "ws://h/ws/d?batch=1&lastId=a%2Fb%2Bc");
  assert.equal(connectUrl("http://h/sse/d", "X", "T.k", "query"), "http://h/sse/d?lastId=X&access_token=T.k");
  assert.deepEqual(subprotocols(true, "T", "subprotocol"), ["clarion.batch.v1", "bearer.T"]);
  assert.deepEqual(subprotocols(false, "T", "header"), ["clarion.v1"]);
});

test("close codes: stop on what retrying cannot fix, refresh on expiry, retry the rest", () => {
  for (const code of [1002, 1003, 1007, 1009, 4001, 4003, 4009]) assert.equal(disposition({ code, message: "" }), "stop", String(code));
  for (const code of [1000, 1001, 1006, 1011, 4008, 4013, 4100]) assert.equal(disposition({ code, message: "" }), "retry", String(code));
  assert.equal(disposition({ code: 4004, message: "expired" }), "refresh");
  assert.equal(disposition({ code: 1006, message: "" }, { type: "error", code: 4004, message: "expired" }), "refresh");
  assert.equal(disposition({ code: 1006, message: "expired", httpStatus: 401 }), "refresh");
  assert.equal(disposition({ code: 1006, message: "bad_signature", httpStatus: 401 }), "stop");
  assert.equal(disposition({ code: 1006, message: "missing_claims", httpStatus: 403 }), "stop");
  assert.equal(disposition({ code: 1006, message: "unavailable", httpStatus: 503 }), "retry");
  assert.equal(disposition({ code: 1006, message: "handshake_timeout", httpStatus: 408 }), "retry");
});

test("HTTP refusals map to the close codes a WebSocket would have seen", () => {
  assert.equal(codeForStatus(401, "expired"), 4004);
  assert.equal(codeForStatus(401, "bad_signature"), 4001);
  assert.equal(codeForStatus(403, "wrong_audience"), 4003);
  assert.equal(codeForStatus(503, "unavailable"), 4013);
  assert.equal(codeForStatus(502, "HTTP 502"), 1006);
  assert.deepEqual(normalizeClose({ code: 4001, message: "" }, { type: "error", code: 4001, message: "bad_signature" }, false), { code: 4001, message: "bad_signature" });
  assert.deepEqual(normalizeClose({ code: 1011, message: "boom" }, { type: "error", code: 4009, message: "x" }, false), { code: 1011, message: "boom" });
  assert.deepEqual(normalizeClose({ code: 1006, message: "" }, null, true), { code: 4100, message: "drain" });
});

test("a JWT's exp is read without verifying; anything else gives null", () => {
  const payload = (claims) => Buffer.from(JSON.stringify(claims)).toString("base64url");
  assert.equal(tokenExpiryMs(`h.${payload({ exp: 1773482400, sub: "Aïssata" })}.s`), 1773482400000);
  assert.equal(tokenExpiryMs(`h.${payload({ sub: "u" })}.s`), null);
  for (const token of [null, "", "opaque", "h.@@.s", "h.bm90IGpzb24.s"]) assert.equal(tokenExpiryMs(token), null, String(token));
});
