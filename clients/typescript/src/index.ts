// @clarion/client: see docs/clients.md.
export { ClarionClient, type ClientOptions } from "./client.js";
export {
  ClientCore,
  CloseCode,
  TERMINAL_CODES,
  TERMINAL_STATUSES,
  backoffDelay,
  codeForStatus,
  normalizeClose,
  connectUrl,
  disposition,
  parseFrame,
  subprotocols,
  tokenExpiryMs,
  type ConnectRequest,
  type Disposition,
  type Effect,
  type Input,
  type Parsed,
  type TimerName,
} from "./core.js";
export { SseParser, type SseMessage, type SseOutput } from "./sse.js";
export type { FetchLike, WebSocketConstructor, WebSocketLike } from "./transport.js";
export type * from "./types.js";
