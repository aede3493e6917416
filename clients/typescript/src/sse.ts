// A pure Server-Sent Events parser (the WHATWG event-stream format): feed it text
// chunks as they arrive, get back whole messages and comment lines.

export interface SseMessage {
  /** The `id:` field, when the message had one. */
  id?: string;
  event: string;
  data: string;
}

export interface SseOutput {
  messages: SseMessage[];
  /** Comment lines (`: ping`): the server's heartbeat over SSE. */
  comments: string[];
}

export class SseParser {
  private buffer = "";
  private data: string[] = [];
  private id: string | undefined;
  private event = "";
  private sawField = false;
  /** The last `id:` seen, as EventSource would send back in `Last-Event-ID`. */
  lastEventId: string | undefined;

  feed(chunk: string): SseOutput {
    const out: SseOutput = { messages: [], comments: [] };
    this.buffer += chunk;
    for (;;) {
      const match = /\r\n|\r|\n/.exec(this.buffer);
      if (match === null) break;
      // A lone \r at the very end might be the first half of \r\n: wait for more.
      if (match[0] === "\r" && match.index === this.buffer.length - 1) break;
      const line = this.buffer.slice(0, match.index);
      this.buffer = this.buffer.slice(match.index + match[0].length);
      this.line(line, out);
    }
    return out;
  }

  private line(line: string, out: SseOutput): void {
    if (line === "") {
      if (this.sawField && this.data.length > 0) {
        const message: SseMessage = { event: this.event || "message", data: this.data.join("\n") };
        if (this.id !== undefined) message.id = this.id;
        out.messages.push(message);
      }
      this.data = [];
      this.id = undefined;
      this.event = "";
      this.sawField = false;
      return;
    }
    if (line.startsWith(":")) {
      out.comments.push(line.slice(1).trimStart());
      return;
    }
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    this.sawField = true;
    if (field === "data") this.data.push(value);
    else if (field === "id" && !value.includes("\0")) {
      this.id = value;
      this.lastEventId = value;
    } else if (field === "event") this.event = value;
  }
}
