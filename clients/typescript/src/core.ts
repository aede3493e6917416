// The client's sans-I/O core: pure decisions. It is fed inputs (a transport opened, a
// frame arrived, a connection closed, a timer fired, the token provider answered) with
// the current time, and answers effects (connect, send, disconnect, arm a timer, ask for
// a token, report a state or an event) that the thin edges in client.ts carry out.

import type {
  ClarionEvent,
  CloseReason,
  CoreOptions,
  ServerError,
  StateChange,
  TerminalReason,
  TokenPlacement,
  TokenRequestReason,
  TransportKind,
  Welcome,
  Reset,
} from "./types.js";

// ---- close codes and HTTP statuses (docs/protocol.md) ---------------------------------

export const CloseCode = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  PROTOCOL_ERROR: 1002,
  UNSUPPORTED_DATA: 1003,
  ABNORMAL: 1006,
  INVALID_DATA: 1007,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  UNAUTHORIZED: 4001,
  FORBIDDEN: 4003,
  TOKEN_EXPIRED: 4004,
  SLOW_CONSUMER: 4008,
  BAD_FRAME: 4009,
  OVERLOADED: 4013,
  DRAIN: 4100,
} as const;

/** Closes that retrying cannot fix: stop and report. */
export const TERMINAL_CODES: ReadonlySet<number> = new Set([1002, 1003, 1007, 1009, 4001, 4003, 4009]);

/** HTTP refusals that retrying cannot fix (401 other than `expired`, 403, heads too large). */
export const TERMINAL_STATUSES: ReadonlySet<number> = new Set([401, 403, 414, 431]);

export type Disposition = "retry" | "refresh" | "stop";

/** What to do after a session ended with this close code / HTTP status / `error` frame. */
export function disposition(reason: CloseReason, error?: ServerError | null): Disposition {
  if (reason.httpStatus !== undefined) {
    if (reason.httpStatus === 401 && /^expired/.test(reason.message)) return "refresh";
    return TERMINAL_STATUSES.has(reason.httpStatus) ? "stop" : "retry";
  }
  if (reason.code === CloseCode.TOKEN_EXPIRED) return "refresh";
  if (TERMINAL_CODES.has(reason.code)) return "stop";
  // A 1006 after an in-band `expired` error (the close frame was lost) is still an expiry.
  if (error && error.code === CloseCode.TOKEN_EXPIRED) return "refresh";
  return "retry";
}

/** The protocol's close code for an HTTP refusal (SSE, or a refusal before an upgrade). */
export function codeForStatus(status: number, error: string): number {
  if (status === 401) return /^expired/.test(error) ? CloseCode.TOKEN_EXPIRED : CloseCode.UNAUTHORIZED;
  if (status === 403) return CloseCode.FORBIDDEN;
  if (status === 503) return CloseCode.OVERLOADED;
  return CloseCode.ABNORMAL;
}

/** One close report whatever the transport: an SSE stream has no close code, so the
 * `error` frame before its end (or a drain's `reconnect` advice, or the HTTP status) gives
 * it the code a WebSocket would have had; the `error` frame's message is the reason. */
export function normalizeClose(reason: CloseReason, error: ServerError | null, advised: boolean): CloseReason {
  if (reason.httpStatus !== undefined) return { ...reason, code: codeForStatus(reason.httpStatus, reason.message) };
  const unspecific = reason.code === CloseCode.NORMAL || reason.code === CloseCode.ABNORMAL;
  if (error !== null && (unspecific || reason.code === error.code)) {
    return { ...reason, code: error.code, message: error.message };
  }
  if (advised && unspecific) return { ...reason, code: CloseCode.DRAIN, message: reason.message || "drain" };
  return reason;
}

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/** A JWT's `exp` in epoch ms, read without verifying (the server verifies); null when the
 * token is not a JWT or has none. Used only to tell an expiry from an outage when the
 * server could not say (an SSE stream that simply ends). */
export function tokenExpiryMs(token: string | null): number | null {
  const part = token?.split(".")[1];
  if (!part) return null;
  let bits = 0;
  let value = 0;
  let text = "";
  for (const ch of part.replace(/=+$/, "")) {
    const index = B64.indexOf(ch === "+" ? "-" : ch === "/" ? "_" : ch);
    if (index === -1) return null;
    value = (value << 6) | index;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      text += String.fromCharCode((value >> bits) & 0xff);
    }
  }
  try {
    const claims: unknown = JSON.parse(decodeURIComponent(escape(text)));
    const exp = (claims as { exp?: unknown } | null)?.exp;
    return typeof exp === "number" && Number.isFinite(exp) ? exp * 1000 : null;
  } catch {
    return null;
  }
}

// ---- backoff ---------------------------------------------------------------------------

/** Full jitter: uniform in [0, min(cap, base * 2^attempt)]. */
export function backoffDelay(attempt: number, baseMs: number, capMs: number, random: () => number): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 60));
  return Math.floor(random() * ceiling);
}

// ---- frames ----------------------------------------------------------------------------

export type Parsed =
  | { kind: "welcome"; welcome: Welcome }
  | { kind: "events"; events: ClarionEvent[] }
  | { kind: "reset"; reset: Reset }
  | { kind: "reconnect"; afterMs: number; reason: string }
  | { kind: "error"; error: ServerError }
  | { kind: "pong" }
  | { kind: "ignored"; why: string };

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isEvent(value: unknown): value is ClarionEvent {
  return isObject(value) && value.type === "event" && typeof value.id === "string";
}

/** One server frame (JSON text). Batch frames come back unpacked, in order; frames this
 * client does not know are ignored (newer servers may add some), never fatal. */
export function parseFrame(text: string): Parsed {
  let frame: unknown;
  try {
    frame = JSON.parse(text);
  } catch {
    return { kind: "ignored", why: "not JSON" };
  }
  if (!isObject(frame)) return { kind: "ignored", why: "not an object" };
  switch (frame.type) {
    case "welcome":
      return { kind: "welcome", welcome: frame as unknown as Welcome };
    case "event":
      return isEvent(frame) ? { kind: "events", events: [frame] } : { kind: "ignored", why: "event without id" };
    case "batch": {
      const events = Array.isArray(frame.events) ? frame.events.filter(isEvent) : [];
      return { kind: "events", events };
    }
    case "reset":
      return { kind: "reset", reset: { type: "reset", reason: String(frame.reason ?? "") } };
    case "reconnect": {
      const after = Number(frame.afterMs);
      return {
        kind: "reconnect",
        afterMs: Number.isFinite(after) && after >= 0 ? after : 0,
        reason: String(frame.reason ?? ""),
      };
    }
    case "error":
      return {
        kind: "error",
        error: { type: "error", code: Number(frame.code), message: String(frame.message ?? "") },
      };
    case "pong":
      return { kind: "pong" };
    default:
      return { kind: "ignored", why: `unknown type ${String(frame.type)}` };
  }
}

// ---- URLs ------------------------------------------------------------------------------

/** The connect URL: `lastId` (replacing any there), and `access_token` when the token goes
 * in the query. */
export function connectUrl(base: string, lastId: string | null, token: string | null, placement: TokenPlacement): string {
  const [withoutHash, hash] = splitOnce(base, "#");
  const [path, query] = splitOnce(withoutHash, "?");
  const params = query
    .split("&")
    .filter((item) => item !== "" && !item.startsWith("lastId=") && !item.startsWith("access_token="));
  if (lastId) params.push(`lastId=${encodeURIComponent(lastId)}`);
  if (token && placement === "query") params.push(`access_token=${encodeURIComponent(token)}`);
  const search = params.length > 0 ? `?${params.join("&")}` : "";
  return `${path}${search}${hash ? `#${hash}` : ""}`;
}

function splitOnce(text: string, sep: string): [string, string] {
  const at = text.indexOf(sep);
  return at === -1 ? [text, ""] : [text.slice(0, at), text.slice(at + 1)];
}

/** WebSocket subprotocols to offer: the protocol version, and the token for browsers. */
export function subprotocols(batch: boolean, token: string | null, placement: TokenPlacement): string[] {
  const protocols = [batch ? "clarion.batch.v1" : "clarion.v1"];
  if (token && placement === "subprotocol") protocols.push(`bearer.${token}`);
  return protocols;
}

// ---- the state machine -----------------------------------------------------------------

export type TimerName = "retry" | "connect" | "idle" | "dead";

export type Input =
  | { kind: "start" }
  | { kind: "stop" }
  | { kind: "token"; token: string | null | undefined }
  | { kind: "tokenFailed"; message: string }
  | { kind: "open"; conn: number }
  | { kind: "text"; conn: number; text: string }
  /** Anything else that proves the peer is alive (an SSE `: ping` comment). */
  | { kind: "alive"; conn: number }
  | { kind: "closed"; conn: number; code: number; message: string; httpStatus?: number }
  | { kind: "timer"; name: TimerName };

export interface ConnectRequest {
  conn: number;
  transport: TransportKind;
  url: string;
  /** The replica URL as configured (without `lastId`), for reports. */
  baseUrl: string;
  token: string | null;
  protocols: string[];
  /** Send the token as an `Authorization: Bearer` header. */
  header: boolean;
}

export type Effect =
  | { kind: "fetchToken"; reason: TokenRequestReason }
  | { kind: "connect"; request: ConnectRequest }
  | { kind: "send"; conn: number; text: string }
  | { kind: "disconnect"; conn: number }
  | { kind: "setTimer"; name: TimerName; ms: number }
  | { kind: "cancelTimer"; name: TimerName }
  | { kind: "state"; change: StateChange }
  | { kind: "welcome"; welcome: Welcome }
  | { kind: "event"; event: ClarionEvent }
  | { kind: "reset"; reset: Reset }
  | { kind: "serverError"; error: ServerError };

type Phase = "idle" | "token" | "connecting" | "open" | "connected" | "waiting" | "closed";

const DEFAULTS = {
  backoffBaseMs: 1000,
  backoffCapMs: 60000,
  stableMs: 30000,
  heartbeatIntervalMs: 30000,
  heartbeatTimeoutMs: 10000,
  connectTimeoutMs: 10000,
};

export class ClientCore {
  readonly options: Required<Omit<CoreOptions, "lastId" | "eventTypes">> & { eventTypes: string[] };
  /** The resume cursor: the last event's id (or the welcome's position before any event). */
  lastId: string | null;
  token: string | null = null;
  phase: Phase = "idle";
  /** Reconnect attempts since the last stable connection (the backoff's exponent). */
  attempt = 0;
  /** Every connection attempt (the index of the URL tried is attempts % urls). */
  connects = 0;
  replicaId: string | null = null;
  /** The current connection's number; callbacks of older ones are ignored. */
  private conn = 0;
  private live = false;
  private openedAt: number | null = null;
  private advice: number | null = null;
  private lastError: ServerError | null = null;
  private urlIndex = 0;
  private heartbeatMs: number;
  private tokenReason: TokenRequestReason = "initial";

  constructor(options: CoreOptions) {
    if (options.urls.length === 0) throw new Error("ClarionClient needs at least one URL");
    if (options.transport !== "ws" && options.transport !== "sse") {
      throw new Error(`unknown transport ${String(options.transport)}: "ws" or "sse"`);
    }
    if (options.transport === "sse" && options.tokenPlacement === "subprotocol") {
      throw new Error('SSE has no subprotocols: tokenPlacement must be "header" or "query"');
    }
    this.options = {
      urls: options.urls.slice(),
      transport: options.transport,
      batch: options.batch ?? false,
      eventTypes: options.eventTypes ?? [],
      backoffBaseMs: options.backoffBaseMs ?? DEFAULTS.backoffBaseMs,
      backoffCapMs: options.backoffCapMs ?? DEFAULTS.backoffCapMs,
      stableMs: options.stableMs ?? DEFAULTS.stableMs,
      heartbeatIntervalMs: options.heartbeatIntervalMs ?? DEFAULTS.heartbeatIntervalMs,
      heartbeatTimeoutMs: options.heartbeatTimeoutMs ?? DEFAULTS.heartbeatTimeoutMs,
      connectTimeoutMs: options.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs,
      tokenPlacement: options.tokenPlacement ?? (options.transport === "sse" ? "header" : "subprotocol"),
      random: options.random ?? Math.random,
    };
    this.lastId = options.lastId ?? null;
    this.heartbeatMs = this.options.heartbeatIntervalMs;
  }

  handle(input: Input, now: number): Effect[] {
    const out: Effect[] = [];
    switch (input.kind) {
      case "start":
        if (this.phase === "idle") {
          this.phase = "token";
          out.push({ kind: "fetchToken", reason: "initial" });
        }
        break;
      case "stop":
        if (this.phase !== "closed") this.terminate(out, { code: CloseCode.NORMAL, message: "closed by the client", refused: false });
        break;
      case "token":
        this.onToken(input.token ?? null, out);
        break;
      case "tokenFailed":
        if (this.phase === "token") this.retryLater(out, { code: CloseCode.ABNORMAL, message: `token provider failed: ${input.message}` }, now);
        break;
      case "open":
        if (this.current(input.conn) && this.phase === "connecting") {
          this.phase = "open";
          this.openedAt = now;
          this.armIdle(out);
        }
        break;
      case "text":
        if (this.current(input.conn)) this.onText(input.text, out, now);
        break;
      case "alive":
        if (this.current(input.conn)) this.armIdle(out);
        break;
      case "closed":
        if (this.current(input.conn)) {
          this.live = false;
          const reason: CloseReason = { code: input.code, message: input.message };
          if (input.httpStatus !== undefined) reason.httpStatus = input.httpStatus;
          this.onClosed(reason, out, now);
        }
        break;
      case "timer":
        this.onTimer(input.name, out, now);
        break;
    }
    return out;
  }

  private current(conn: number): boolean {
    return this.live && conn === this.conn;
  }

  private onToken(token: string | null, out: Effect[]): void {
    if (this.phase !== "token") return;
    const expired = this.tokenReason === "expired";
    if (!token || (expired && token === this.token)) {
      // After 4004 the same token is refused again: stop rather than loop.
      const message = expired ? "expired, and the token provider has no fresh token" : "the token provider gave no token";
      this.terminate(out, { code: expired ? CloseCode.TOKEN_EXPIRED : CloseCode.UNAUTHORIZED, message, refused: true });
      return;
    }
    this.token = token;
    this.connect(out);
  }

  private connect(out: Effect[]): void {
    const o = this.options;
    const baseUrl = o.urls[this.urlIndex % o.urls.length] as string;
    this.conn += 1;
    this.connects += 1;
    this.live = true;
    this.phase = "connecting";
    this.advice = null;
    this.lastError = null;
    this.openedAt = null;
    this.heartbeatMs = o.heartbeatIntervalMs;
    const request: ConnectRequest = {
      conn: this.conn,
      transport: o.transport,
      url: connectUrl(baseUrl, this.lastId, this.token, o.tokenPlacement),
      baseUrl,
      token: this.token,
      protocols: o.transport === "ws" ? subprotocols(o.batch, this.token, o.tokenPlacement) : [],
      header: o.tokenPlacement === "header",
    };
    out.push({ kind: "state", change: { state: "connecting", url: baseUrl, attempt: this.attempt } });
    out.push({ kind: "connect", request });
    out.push({ kind: "setTimer", name: "connect", ms: o.connectTimeoutMs });
  }

  private onText(text: string, out: Effect[], now: number): void {
    this.armIdle(out);
    const parsed = parseFrame(text);
    switch (parsed.kind) {
      case "welcome": {
        const welcome = parsed.welcome;
        if (this.phase !== "open" && this.phase !== "connecting") return;
        if (this.openedAt === null) this.openedAt = now;
        this.phase = "connected";
        this.replicaId = welcome.replicaId ?? null;
        if (this.lastId === null && welcome.position) this.lastId = welcome.position;
        if (this.options.transport === "sse" && welcome.heartbeatSeconds > 0) {
          // SSE cannot ping: the server's `: ping` every heartbeatSeconds is the pulse.
          this.heartbeatMs = welcome.heartbeatSeconds * 1000;
          this.armIdle(out);
        }
        out.push({ kind: "cancelTimer", name: "connect" });
        const url = this.options.urls[this.urlIndex % this.options.urls.length] as string;
        out.push({ kind: "welcome", welcome });
        out.push({ kind: "state", change: { state: "connected", url, replicaId: welcome.replicaId, welcome } });
        if (this.options.eventTypes.length > 0 && this.options.transport === "ws") {
          out.push({ kind: "send", conn: this.conn, text: JSON.stringify({ type: "subscribe", eventTypes: this.options.eventTypes }) });
        }
        return;
      }
      case "events":
        for (const event of parsed.events) {
          this.lastId = event.id;
          out.push({ kind: "event", event });
        }
        return;
      case "reset":
        // Nothing is replayed: the app refetches its state; live events follow.
        this.lastId = null;
        out.push({ kind: "reset", reset: parsed.reset });
        return;
      case "reconnect":
        this.advice = parsed.afterMs;
        return;
      case "error":
        this.lastError = parsed.error;
        out.push({ kind: "serverError", error: parsed.error });
        return;
      case "pong":
      case "ignored":
        return;
    }
  }

  private armIdle(out: Effect[]): void {
    out.push({ kind: "cancelTimer", name: "dead" });
    const o = this.options;
    // WebSocket: ping after heartbeatIntervalMs of silence, then wait heartbeatTimeoutMs.
    // SSE: the server's comment is due every heartbeatSeconds; allow the timeout on top.
    const ms = o.transport === "sse" ? this.heartbeatMs + o.heartbeatTimeoutMs : this.heartbeatMs;
    out.push({ kind: "setTimer", name: "idle", ms });
  }

  private onTimer(name: TimerName, out: Effect[], now: number): void {
    switch (name) {
      case "retry":
        if (this.phase === "waiting") this.connect(out);
        return;
      case "connect":
        if (this.live && (this.phase === "connecting" || this.phase === "open")) {
          this.abandon(out, now, "no welcome within the connect timeout");
        }
        return;
      case "idle":
        if (!this.live || (this.phase !== "open" && this.phase !== "connected")) return;
        if (this.options.transport === "sse") {
          this.abandon(out, now, "heartbeat lost: nothing from the server");
          return;
        }
        out.push({ kind: "send", conn: this.conn, text: '{"type":"ping"}' });
        out.push({ kind: "setTimer", name: "dead", ms: this.options.heartbeatTimeoutMs });
        return;
      case "dead":
        if (this.live && (this.phase === "open" || this.phase === "connected")) {
          this.abandon(out, now, "heartbeat lost: no pong");
        }
        return;
    }
  }

  /** Give up the current connection ourselves (it may never report its close). */
  private abandon(out: Effect[], now: number, message: string): void {
    out.push({ kind: "disconnect", conn: this.conn });
    this.live = false;
    this.onClosed({ code: CloseCode.ABNORMAL, message }, out, now);
  }

  private onClosed(reason: CloseReason, out: Effect[], now: number): void {
    for (const name of ["connect", "idle", "dead"] as const) out.push({ kind: "cancelTimer", name });
    if (this.phase === "closed") return;
    reason = normalizeClose(reason, this.lastError, this.advice !== null);
    const expiry = tokenExpiryMs(this.token);
    if ((reason.code === CloseCode.NORMAL || reason.code === CloseCode.ABNORMAL) && reason.httpStatus === undefined && expiry !== null && expiry <= now) {
      // The server ended the session without a reason (SSE has no close code) and our
      // token has expired by its own claim: that is the reason; waiting would not help.
      reason = { code: CloseCode.TOKEN_EXPIRED, message: `expired (the token's exp passed; the server said: ${reason.message || "nothing"})` };
    }
    switch (disposition(reason, this.lastError)) {
      case "stop":
        this.terminate(out, { ...reason, refused: true });
        return;
      case "refresh":
        // The same token would be refused again: ask for a fresh one, then go at once.
        this.phase = "token";
        this.stabilize(now);
        out.push({ kind: "state", change: { state: "reconnecting", delayMs: 0, reason, advised: false } });
        this.tokenReason = "expired";
        out.push({ kind: "fetchToken", reason: "expired" });
        return;
      case "retry":
        this.retryLater(out, reason, now);
        return;
    }
  }

  private stabilize(now: number): void {
    if (this.openedAt !== null && now - this.openedAt >= this.options.stableMs) this.attempt = 0;
    this.openedAt = null;
  }

  private retryLater(out: Effect[], reason: CloseReason, now: number): void {
    this.stabilize(now);
    const o = this.options;
    const advised = this.advice !== null;
    const delayMs = advised ? (this.advice as number) : backoffDelay(this.attempt, o.backoffBaseMs, o.backoffCapMs, o.random);
    if (!advised) this.attempt += 1;
    this.advice = null;
    // The next attempt goes to the next replica (a killed or draining one is likely gone).
    this.urlIndex += 1;
    this.phase = "waiting";
    out.push({ kind: "state", change: { state: "reconnecting", delayMs, reason, advised } });
    out.push({ kind: "setTimer", name: "retry", ms: delayMs });
  }

  private terminate(out: Effect[], reason: TerminalReason): void {
    if (this.live) out.push({ kind: "disconnect", conn: this.conn });
    this.live = false;
    this.phase = "closed";
    for (const name of ["retry", "connect", "idle", "dead"] as const) out.push({ kind: "cancelTimer", name });
    out.push({ kind: "state", change: { state: "closed", reason } });
  }

}
