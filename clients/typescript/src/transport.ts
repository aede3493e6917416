// Thin edges: a WebSocket (the platform's, or Node's `ws`) and SSE over fetch streaming.
// They only move bytes and report open/text/alive/closed; every decision is in core.ts.

import type { ConnectRequest } from "./core.js";
import { SseParser } from "./sse.js";

export interface TransportHandlers {
  open(): void;
  text(text: string): void;
  alive(): void;
  closed(code: number, message: string, httpStatus?: number): void;
}

export interface Transport {
  send(text: string): void;
  close(): void;
}

/** The WHATWG WebSocket shape (browsers, React Native, Node 22+, and `ws`'s class). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export type WebSocketConstructor = new (
  url: string,
  protocols?: string | string[],
  // `ws` and React Native take options (headers) here; browsers ignore extra arguments.
  options?: { headers?: Record<string, string> },
) => WebSocketLike;

export type FetchLike = (input: string, init?: {
  headers?: Record<string, string>;
  signal?: AbortSignal;
  cache?: RequestCache;
}) => Promise<Response>;

let wsModule: Promise<WebSocketConstructor> | null = null;

/** The platform's WebSocket, or `ws` on Node versions without one (an optional peer). */
export function defaultWebSocket(): Promise<WebSocketConstructor> {
  const global = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (global !== undefined) return Promise.resolve(global);
  if (wsModule === null) {
    // A computed specifier: bundlers for browsers leave it alone (never reached there).
    const name = "ws";
    wsModule = import(/* @vite-ignore */ name).then(
      (mod: { WebSocket?: WebSocketConstructor; default?: WebSocketConstructor }) => {
        const ctor = mod.WebSocket ?? mod.default;
        if (ctor === undefined) throw new Error("the ws module has no WebSocket export");
        return ctor;
      },
      (error: unknown) => {
        wsModule = null;
        throw new Error(`no WebSocket in this environment and the "ws" package is not installed (npm install ws): ${String(error)}`);
      },
    );
  }
  return wsModule;
}

const decoder = typeof TextDecoder !== "undefined" ? new TextDecoder() : null;

function asText(data: unknown): string | null {
  if (typeof data === "string") return data;
  if (decoder !== null && (data instanceof ArrayBuffer || ArrayBuffer.isView(data))) {
    return decoder.decode(data as ArrayBuffer);
  }
  return null;
}

/** `ws` reports a refusal before the upgrade only in its error's message. */
function statusOf(error: unknown): number | undefined {
  const message = (error as { message?: unknown; error?: { message?: unknown } } | null);
  const text = String(message?.message ?? message?.error?.message ?? "");
  const match = /Unexpected server response: (\d{3})/.exec(text);
  return match ? Number(match[1]) : undefined;
}

export function openWebSocket(ctor: WebSocketConstructor, request: ConnectRequest, handlers: TransportHandlers): Transport {
  const headers: Record<string, string> = {};
  if (request.header && request.token) headers.Authorization = `Bearer ${request.token}`;
  const socket = Object.keys(headers).length > 0
    ? new ctor(request.url, request.protocols, { headers })
    : new ctor(request.url, request.protocols);
  let done = false;
  let httpStatus: number | undefined;
  socket.onopen = () => handlers.open();
  socket.onmessage = (ev) => {
    const text = asText(ev.data);
    if (text !== null) handlers.text(text);
  };
  socket.onerror = (ev) => {
    httpStatus = statusOf(ev) ?? httpStatus;
  };
  socket.onclose = (ev) => {
    if (done) return;
    done = true;
    if (httpStatus !== undefined) handlers.closed(ev.code, `HTTP ${httpStatus}`, httpStatus);
    else handlers.closed(ev.code, ev.reason ?? "");
  };
  return {
    send(text: string) {
      if (socket.readyState === 1) socket.send(text);
    },
    close() {
      done = true;
      try {
        socket.close(1000, "client closing");
      } catch {
        // Already closing: nothing to do.
      }
    },
  };
}

/** SSE over fetch streaming (Node 18+, browsers, workers): unlike EventSource it sees
 * HTTP statuses (so a refusal is not retried forever) and can send a header. */
export function openSse(fetchImpl: FetchLike, request: ConnectRequest, handlers: TransportHandlers): Transport {
  const abort = new AbortController();
  let done = false;
  const finish = (code: number, message: string, httpStatus?: number) => {
    if (done) return;
    done = true;
    handlers.closed(code, message, httpStatus);
  };
  const headers: Record<string, string> = { Accept: "text/event-stream" };
  if (request.header && request.token) headers.Authorization = `Bearer ${request.token}`;
  (async () => {
    const response = await fetchImpl(request.url, { headers, signal: abort.signal, cache: "no-store" });
    if (!response.ok || response.body === null) {
      let message = `HTTP ${response.status}`;
      try {
        const body = (await response.json()) as { error?: unknown; message?: unknown };
        message = String(body.error ?? body.message ?? message);
      } catch {
        // Not JSON (a proxy's page): the status says enough.
      }
      finish(1006, message, response.status);
      return;
    }
    handlers.open();
    const parser = new SseParser();
    const reader = response.body.getReader();
    const utf8 = new TextDecoder();
    for (;;) {
      const { value, done: end } = await reader.read();
      if (end) break;
      const out = parser.feed(utf8.decode(value, { stream: true }));
      if (done) return;
      for (const comment of out.comments) {
        void comment;
        handlers.alive();
      }
      for (const message of out.messages) {
        if (done) return;
        handlers.text(message.data);
      }
    }
    finish(1000, "stream ended");
  })().catch((error: unknown) => finish(1006, String((error as Error)?.message ?? error)));
  return {
    send() {
      // SSE is one-way; the server's comments are the heartbeat.
    },
    close() {
      done = true;
      abort.abort();
    },
  };
}
