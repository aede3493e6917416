// The shapes of docs/protocol.md, and the client's public types.

/** One business event (`{"type":"event"}`), or one member of a `batch` frame. */
export interface ClarionEvent {
  type: "event";
  /** Opaque resume cursor: the client keeps the last one and sends it back as `lastId`. */
  id: string;
  topic: string;
  eventType: string;
  organizationId: string | null;
  userId?: string;
  data: unknown;
  /** The producer's timestamp, epoch ms. */
  ts: number;
  /** The Kafka record timestamp, epoch ms. */
  kafkaTs?: number;
}

/** The first frame of every session. */
export interface Welcome {
  type: "welcome";
  connectionId: string;
  replicaId: string;
  heartbeatSeconds: number;
  resumable: boolean;
  batch: boolean;
  /** Resume id for the moment a live session joined (no `lastId` given). */
  position?: string;
}

/** The server cannot replay from `lastId` without loss: refetch state; live events follow. */
export interface Reset {
  type: "reset";
  reason: string;
}

/** Sent while a replica drains, right before it closes with 4100. */
export interface ReconnectAdvice {
  type: "reconnect";
  reason: string;
  afterMs: number;
}

/** Precedes every close the client caused or must act on, with the same code. */
export interface ServerError {
  type: "error";
  code: number;
  message: string;
}

export interface Batch {
  type: "batch";
  events: ClarionEvent[];
}

export interface Pong {
  type: "pong";
}

export type ServerFrame = Welcome | ClarionEvent | Batch | Reset | ReconnectAdvice | ServerError | Pong;

export type TransportKind = "ws" | "sse";

/** Why a session ended (close code, the server's `error` message, or an HTTP status). */
export interface CloseReason {
  /** WebSocket close code (1006 when the connection dropped or an HTTP request failed). */
  code: number;
  /** The server's `error` frame message, the close reason, or what the client saw. */
  message: string;
  /** HTTP status, when the server answered a request with one (SSE; refusals before an upgrade). */
  httpStatus?: number;
}

/** Why the client stopped for good. */
export interface TerminalReason extends CloseReason {
  /** True when the server refused us (bad token, forbidden, bad frame...): retrying cannot help. */
  refused: boolean;
}

export type StateChange =
  | { state: "connecting"; url: string; attempt: number }
  | { state: "connected"; url: string; replicaId: string; welcome: Welcome }
  | { state: "reconnecting"; delayMs: number; reason: CloseReason; advised: boolean }
  | { state: "closed"; reason: TerminalReason };

export type ClientState = StateChange["state"] | "idle";

/** Why the token provider is being asked: the first connect, or the token expired (4004). */
export type TokenRequestReason = "initial" | "expired";

export type TokenProvider = (reason: TokenRequestReason) => string | null | undefined | Promise<string | null | undefined>;

/** Where the token goes: a `bearer.<JWT>` subprotocol (browsers' WebSocket), the
 * `Authorization` header (SSE over fetch; Node's `ws`; React Native), or `?access_token=`. */
export type TokenPlacement = "subprotocol" | "header" | "query";

export interface CoreOptions {
  /** One entry-point URL, or one URL per replica (tried in turn on each reconnect). */
  urls: string[];
  transport: TransportKind;
  /** Resume from here on the first connect (an id kept from an earlier run). */
  lastId?: string | null;
  /** Offer `clarion.batch.v1` (WebSocket only): batch frames, unpacked into single events. */
  batch?: boolean;
  /** Narrow the connection to these event types (sent as a `subscribe` frame). */
  eventTypes?: string[];
  /** Full-jitter backoff: a delay uniform in [0, min(cap, base * 2^attempt)]. */
  backoffBaseMs?: number;
  backoffCapMs?: number;
  /** A connection up this long resets the backoff's attempt counter. */
  stableMs?: number;
  /** Send a `ping` after this long without any frame (WebSocket). */
  heartbeatIntervalMs?: number;
  /** Reconnect when nothing (not even a `pong`) arrives this long after a ping; over SSE,
   * this long after the server's own heartbeat interval. */
  heartbeatTimeoutMs?: number;
  /** Give up a connection attempt without a `welcome` after this long. */
  connectTimeoutMs?: number;
  tokenPlacement?: TokenPlacement;
  /** Uniform [0, 1) source for the jitter (tests pass a fixed one). */
  random?: () => number;
}
