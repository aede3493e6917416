// The client object: drives ClientCore with real timers, a token provider and a transport.

import { ClientCore, type Effect, type Input, type TimerName } from "./core.js";
import {
  defaultWebSocket,
  openSse,
  openWebSocket,
  type FetchLike,
  type Transport,
  type WebSocketConstructor,
} from "./transport.js";
import type {
  ClarionEvent,
  ClientState,
  CoreOptions,
  Reset,
  ServerError,
  StateChange,
  TokenProvider,
  TransportKind,
  Welcome,
} from "./types.js";

export interface ClientOptions extends Omit<CoreOptions, "urls" | "transport"> {
  /** One entry-point URL, or one per replica (`ws://…/ws/dashboard` or `http://…/sse/dashboard`). */
  url?: string;
  urls?: string[];
  /** "ws" (default) or "sse". */
  transport?: TransportKind;
  /** A fixed token, or use `tokenProvider`. */
  token?: string;
  /** Called before the first connect and again after the token expired (4004). Return a
   * fresh token, or null to stop. */
  tokenProvider?: TokenProvider;
  onEvent?: (event: ClarionEvent) => void;
  onState?: (change: StateChange) => void;
  onReset?: (reset: Reset) => void;
  onWelcome?: (welcome: Welcome) => void;
  onServerError?: (error: ServerError) => void;
  /** Overrides, for platforms without a global WebSocket or fetch, and for tests. */
  WebSocket?: WebSocketConstructor;
  fetch?: FetchLike;
}

export class ClarionClient {
  private readonly core: ClientCore;
  private readonly timers = new Map<TimerName, ReturnType<typeof setTimeout>>();
  private transport: Transport | null = null;
  private transportConn = 0;
  private readonly provider: TokenProvider;
  private currentState: ClientState = "idle";

  constructor(private readonly options: ClientOptions) {
    const urls = options.urls ?? (options.url !== undefined ? [options.url] : []);
    this.core = new ClientCore({ ...options, urls, transport: options.transport ?? "ws" });
    if (options.tokenProvider !== undefined) this.provider = options.tokenProvider;
    else if (options.token !== undefined) {
      const token = options.token;
      this.provider = () => token;
    } else throw new Error("ClarionClient needs a token or a tokenProvider");
  }

  /** Connect (and keep reconnecting until close() or a refusal). */
  start(): this {
    this.feed({ kind: "start" });
    return this;
  }

  /** Stop for good: no more reconnects. */
  close(): void {
    this.feed({ kind: "stop" });
  }

  get state(): ClientState {
    return this.currentState;
  }

  /** The resume cursor kept across reconnects (save it to resume in a later run). */
  get lastId(): string | null {
    return this.core.lastId;
  }

  get replicaId(): string | null {
    return this.core.replicaId;
  }

  private feed(input: Input): void {
    for (const effect of this.core.handle(input, Date.now())) this.run(effect);
  }

  private run(effect: Effect): void {
    switch (effect.kind) {
      case "fetchToken":
        Promise.resolve()
          .then(() => this.provider(effect.reason))
          .then(
            (token) => this.feed({ kind: "token", token }),
            (error: unknown) => this.feed({ kind: "tokenFailed", message: String((error as Error)?.message ?? error) }),
          );
        return;
      case "connect":
        void this.connect(effect.request);
        return;
      case "send":
        if (effect.conn === this.transportConn) this.transport?.send(effect.text);
        return;
      case "disconnect":
        if (effect.conn === this.transportConn) {
          this.transport?.close();
          this.transport = null;
          this.transportConn = 0; // a connect still awaiting its WebSocket class gives up
        }
        return;
      case "setTimer": {
        this.cancel(effect.name);
        const name = effect.name;
        this.timers.set(name, setTimeout(() => {
          this.timers.delete(name);
          this.feed({ kind: "timer", name });
        }, effect.ms));
        return;
      }
      case "cancelTimer":
        this.cancel(effect.name);
        return;
      case "state":
        this.currentState = effect.change.state;
        this.options.onState?.(effect.change);
        return;
      case "welcome":
        this.options.onWelcome?.(effect.welcome);
        return;
      case "event":
        this.options.onEvent?.(effect.event);
        return;
      case "reset":
        this.options.onReset?.(effect.reset);
        return;
      case "serverError":
        this.options.onServerError?.(effect.error);
        return;
    }
  }

  private cancel(name: TimerName): void {
    const timer = this.timers.get(name);
    if (timer !== undefined) {
      clearTimeout(timer);
      this.timers.delete(name);
    }
  }

  private async connect(request: Parameters<typeof openWebSocket>[1]): Promise<void> {
    const conn = request.conn;
    this.transport?.close();
    this.transport = null;
    this.transportConn = conn;
    const handlers = {
      open: () => this.feed({ kind: "open", conn }),
      text: (text: string) => this.feed({ kind: "text", conn, text }),
      alive: () => this.feed({ kind: "alive", conn }),
      closed: (code: number, message: string, httpStatus?: number) => {
        if (this.transportConn === conn) this.transport = null;
        const input: Input = { kind: "closed", conn, code, message };
        if (httpStatus !== undefined) input.httpStatus = httpStatus;
        this.feed(input);
      },
    };
    try {
      if (request.transport === "sse") {
        const fetchImpl = this.options.fetch ?? (globalThis.fetch as FetchLike | undefined);
        if (fetchImpl === undefined) throw new Error("no fetch in this environment: pass options.fetch");
        this.transport = openSse(fetchImpl, request, handlers);
      } else {
        const ctor = this.options.WebSocket ?? (await defaultWebSocket());
        if (this.transportConn !== conn) return;
        this.transport = openWebSocket(ctor, request, handlers);
      }
    } catch (error) {
      handlers.closed(1006, String((error as Error)?.message ?? error));
    }
  }
}
