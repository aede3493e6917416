// The conformance runner: every clients/conformance/scenarios/*.json, against real
// workers driven by the control server (clients/conformance/README.md), with this
// package's ClarionClient. Uses $CLARION_CONFORMANCE_CONTROL when set, otherwise starts
// `python -m clarion_devstack.conformance serve` ($CLARION_PYTHON, default the
// checkout's .venv) and stops it with SIGTERM afterwards.
// $CLARION_CONFORMANCE_ONLY=a,b runs only those scenarios. With
// $CLARION_CONFORMANCE_RESULTS set, each scenario's outcome ("passed", "failed",
// "skipped", or "unfinished" when its timeout cut it short), message and seconds are
// written there as JSON at the end, by name: pytest runs every scenario in one Node
// process and reports each from that file.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, existsSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { ClarionClient } from "../../dist/index.js";

const here = dirname(fileURLToPath(import.meta.url));
const checkout = resolve(here, "../../../..");
const scenarioDir = process.env.CLARION_CONFORMANCE_SCENARIOS ?? join(checkout, "clients/conformance/scenarios");
const only = (process.env.CLARION_CONFORMANCE_ONLY ?? "").split(",").filter(Boolean);
const CAPABILITIES = new Set(["sse"]);

const scenarios = readdirSync(scenarioDir)
  .filter((f) => f.endsWith(".json"))
  .sort()
  .map((f) => ({ file: f, ...JSON.parse(readFileSync(join(scenarioDir, f), "utf8")) }))
  .filter((s) => only.length === 0 || only.includes(s.name));

let control = process.env.CLARION_CONFORMANCE_CONTROL ?? null;
const resultsFile = process.env.CLARION_CONFORMANCE_RESULTS ?? null;
const results = {};
let server = null;
let serverDir = null;

/** The pending timers of the scenarios' waits (each cancelled when its wait ends). */
const waitTimers = new Set();

async function until(check, what, ms) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms / 1000} s waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

before(async () => {
  if (control !== null) return;
  const python = process.env.CLARION_PYTHON ?? join(checkout, ".venv/bin/python");
  serverDir = mkdtempSync(join(tmpdir(), "clarion-conformance-ts-"));
  const ready = join(serverDir, "ready.json");
  server = spawn(python, ["-m", "clarion_devstack.conformance", "serve", "--ready-file", ready], {
    cwd: checkout,
    stdio: ["ignore", "inherit", "inherit"],
  });
  let exited = null;
  server.on("exit", (code) => { exited = code; });
  await until(() => {
    if (exited !== null) throw new Error(`the control server exited with ${exited}`);
    return existsSync(ready) && readFileSync(ready, "utf8").trim() !== "";
  }, "the control server's ready file", 120000);
  control = JSON.parse(readFileSync(ready, "utf8")).control;
});

after(async () => {
  if (resultsFile !== null) writeFileSync(resultsFile, JSON.stringify(results, null, 1));
  // The runner's own waits once left their timers pending, keeping Node alive up to 20 s
  // per run for nothing. pytest checks this line. It counts the waits' timers only: a
  // transport may still hold one of its own for a moment (ws's close handshake timeout
  // when a killed replica never answers the close), which is not the runner's to cancel.
  console.log(`clarion-conformance: timers left after the last scenario: ${waitTimers.size}`);
  const all = process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
  console.log(`clarion-conformance: Node timers pending, any owner: ${all}`);
  if (server !== null && server.exitCode === null) {
    const done = new Promise((r) => server.once("exit", r));
    server.kill("SIGTERM");
    await done;
  }
  if (serverDir !== null) rmSync(serverDir, { recursive: true, force: true });
});

async function post(action, args = {}) {
  const response = await fetch(`${control}/${action}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(args),
  });
  const text = await response.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = { error: text };
  }
  if (!response.ok) throw new Error(`control ${action} answered ${response.status}: ${body.error ?? text}`);
  return body;
}

/** "$v" / "$v.path.0.field" strings replaced by the saved values, recursively. */
export function substitute(value, vars) {
  if (typeof value === "string" && value.startsWith("$")) {
    const [name, ...path] = value.slice(1).split(".");
    if (!(name in vars)) throw new Error(`unknown variable ${value}`);
    let current = vars[name];
    for (const part of path) {
      if (current === null || current === undefined) throw new Error(`${value}: no ${part}`);
      current = Array.isArray(current) ? current[Number(part)] : current[part];
    }
    return current;
  }
  if (Array.isArray(value)) return value.map((v) => substitute(v, vars));
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, substitute(v, vars)]));
  }
  return value;
}

/** One client under test and everything it reported. */
class Probe {
  constructor(options, changed) {
    this.states = [];
    this.stateCursor = 0;
    this.events = [];
    this.resets = [];
    this.resetCursor = 0;
    this.tokenRequests = 0;
    this.violations = [];
    const tokens = options.tokens ?? (options.token !== undefined ? [options.token] : []);
    const seconds = (s) => (s === undefined ? undefined : s * 1000);
    this.client = new ClarionClient({
      urls: options.urls,
      transport: options.transport ?? "ws",
      lastId: options.lastId ?? null,
      batch: options.batch ?? false,
      heartbeatIntervalMs: seconds(options.heartbeatInterval),
      heartbeatTimeoutMs: seconds(options.heartbeatTimeout),
      backoffBaseMs: seconds(options.backoffBase),
      backoffCapMs: seconds(options.backoffCap),
      tokenProvider: () => {
        const token = tokens[Math.min(this.tokenRequests, tokens.length - 1)];
        this.tokenRequests += 1;
        changed();
        return token ?? null;
      },
      onEvent: (event) => {
        this.events.push(event);
        changed();
      },
      onReset: (reset) => {
        this.resets.push(reset);
        changed();
      },
      onState: (change) => {
        if (process.env.CLARION_CONFORMANCE_DEBUG) console.error(new Date().toISOString(), JSON.stringify(report(change)));
        if (this.states.some((s) => s.state === "closed")) {
          this.violations.push(`state ${change.state} reported after closed`);
        }
        this.states.push(report(change));
        changed();
      },
    });
    this.client.start();
  }
}

/** A state change in the README's shape. */
function report(change) {
  switch (change.state) {
    case "connecting":
      return { state: "connecting", url: change.url };
    case "connected":
      return { state: "connected", replicaId: change.replicaId };
    case "reconnecting":
      return { state: "reconnecting", delay: change.delayMs / 1000, code: change.reason.code, reason: change.reason.message };
    case "closed":
      return { state: "closed", code: change.reason.code, reason: change.reason.message };
  }
  return { state: change.state };
}

function stateMatches(state, step) {
  if (state.state !== step.state) return false;
  if (step.code !== undefined && state.code !== step.code) return false;
  if (step.reason !== undefined && !String(state.reason ?? "").startsWith(step.reason)) return false;
  if (step.replicaId !== undefined && state.replicaId !== step.replicaId) return false;
  if (step.delay !== undefined) {
    if (state.delay === undefined) return false;
    if (step.delay.min !== undefined && state.delay < step.delay.min) return false;
    if (step.delay.max !== undefined && state.delay > step.delay.max) return false;
  }
  return true;
}

/** Exactly these seqs (as a multiset), and increasing within each key. */
function sequenceCheck(events, expected) {
  const got = events.map((e) => e.data?.seq);
  const want = [...expected].sort((a, b) => a - b);
  const sorted = [...got].sort((a, b) => a - b);
  const missing = want.filter((s) => !got.includes(s));
  const extra = got.filter((s) => !want.includes(s));
  const dups = [...new Set(got.filter((s, i) => got.indexOf(s) !== i))];
  assert.deepEqual(sorted, want, `missing ${JSON.stringify(missing)}, unexpected ${JSON.stringify(extra)}, duplicated ${JSON.stringify(dups)}`);
  const last = new Map();
  for (const e of events) {
    const key = String(e.data?.key);
    const prev = last.get(key) ?? -Infinity;
    assert.ok(e.data.seq > prev, `out of order within key ${key}: ${e.data.seq} after ${prev}`);
    last.set(key, e.data.seq);
  }
}

async function runScenario(scenario, signal) {
  const vars = {};
  const probes = new Map();
  let notify = [];
  const changed = () => {
    const waiting = notify;
    notify = [];
    for (const resolve of waiting) resolve();
  };
  const waitFor = async (check, what, seconds) => {
    const deadline = Date.now() + seconds * 1000;
    for (;;) {
      signal.throwIfAborted();
      const value = check();
      if (value) return value;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${seconds} s waiting for ${what}`);
      // Whichever comes first wakes it and cancels the others: a timer left behind would
      // keep Node alive for up to `within` seconds after the last scenario.
      await new Promise((r) => {
        const wake = () => {
          clearTimeout(timer);
          waitTimers.delete(timer);
          signal.removeEventListener("abort", wake);
          r();
        };
        const timer = setTimeout(wake, left);
        waitTimers.add(timer);
        notify.push(wake);
        signal.addEventListener("abort", wake, { once: true });
      });
    }
  };
  const probe = (id) => {
    const p = probes.get(id);
    if (p === undefined) throw new Error(`no client ${id}`);
    return p;
  };
  try {
    for (const [index, raw] of scenario.steps.entries()) {
      // A scenario that timed out must not go on driving the next one's session.
      signal.throwIfAborted();
      const step = substitute(raw, vars);
      const within = step.within ?? 20;
      const where = `step ${index + 1} ${JSON.stringify(raw)}`;
      try {
        if (step.control !== undefined) {
          const answer = await post(step.control, step.args ?? {});
          if (step.save) vars[step.save] = answer;
        } else if (step.client === "connect") {
          if (probes.has(step.id)) throw new Error(`client ${step.id} exists`);
          probes.set(step.id, new Probe(step.options ?? {}, changed));
        } else if (step.client === "close") {
          const p = probe(step.id);
          p.client.close();
          if (step.save) vars[step.save] = { lastId: p.client.lastId };
        } else if (step.expect === "state") {
          const p = probe(step.id);
          const at = await waitFor(() => {
            for (let i = p.stateCursor; i < p.states.length; i += 1) if (stateMatches(p.states[i], step)) return i + 1;
            return 0;
          }, `state ${JSON.stringify(step)} (after ${p.stateCursor} of ${JSON.stringify(p.states)})`, within);
          p.stateCursor = at;
        } else if (step.expect === "events") {
          const p = probe(step.id);
          const expected = step.seqs.flat(1);
          await waitFor(() => {
            const got = new Set(p.events.map((e) => e.data?.seq));
            return expected.every((s) => got.has(s));
          }, `${expected.length} events (have ${p.events.length})`, within);
          sequenceCheck(p.events, expected);
        } else if (step.expect === "reset") {
          const p = probe(step.id);
          const at = await waitFor(() => {
            for (let i = p.resetCursor; i < p.resets.length; i += 1) {
              if (step.reason === undefined || p.resets[i].reason === step.reason) return i + 1;
            }
            return 0;
          }, `reset ${step.reason} (seen ${JSON.stringify(p.resets)})`, within);
          p.resetCursor = at;
        } else if (step.expect === "tokenRequests") {
          const p = probe(step.id);
          await waitFor(() => p.tokenRequests >= step.atLeast, `${step.atLeast} token requests (have ${p.tokenRequests})`, within);
        } else if (step.expect === "connects") {
          const p = probe(step.id);
          const count = p.states.filter((s) => s.state === "connecting").length;
          assert.equal(count, step.count, `connects of ${step.id}: ${JSON.stringify(p.states)}`);
        } else {
          throw new Error("unknown step kind");
        }
        for (const [id, p] of probes) assert.deepEqual(p.violations, [], `client ${id}`);
      } catch (error) {
        error.message = `${where}: ${error.message}`;
        throw error;
      }
    }
  } finally {
    for (const p of probes.values()) p.client.close();
    await post("teardown").catch(() => undefined);
  }
}

for (const scenario of scenarios) {
  const missing = (scenario.requires ?? []).filter((c) => !CAPABILITIES.has(c));
  const skip = missing.length > 0 ? `needs ${missing.join(", ")}` : false;
  if (skip) results[scenario.name] = { outcome: "skipped", message: skip, seconds: 0 };
  test(scenario.name, { timeout: (scenario.timeout ?? 60) * 1000, skip }, async (t) => {
    const started = Date.now();
    const seconds = () => (Date.now() - started) / 1000;
    results[scenario.name] = { outcome: "unfinished", message: "cut short by its timeout", seconds: 0 };
    try {
      await runScenario(scenario, t.signal);
      results[scenario.name] = { outcome: "passed", message: "", seconds: seconds() };
    } catch (error) {
      results[scenario.name] = { outcome: "failed", message: String(error?.stack ?? error), seconds: seconds() };
      throw error;
    }
  });
}
