// Server-Sent Events over fetch(): the browser's EventSource cannot send an Authorization header, so the page
// reads the text/event-stream body itself (a ReadableStream), parses it as the HTML standard says (id, event,
// data, retry fields; comment lines; a blank line dispatches), and resumes after a dropped connection with the
// Last-Event-ID header, exactly after the last event it received (docs/api.md: no gap, no duplicate).

import { authHeaders, errorOf } from "./api.js";

// Parse a stream of text chunks into events {id, event, data}; `onRetry(ms)` hears retry fields.
export class SSEParser {
  constructor(onEvent, onRetry = () => {}) {
    this.onEvent = onEvent;
    this.onRetry = onRetry;
    this.buffer = "";
    this.reset();
    this.lastId = null; // persists across events, as EventSource's last event ID does
  }

  reset() {
    this.event = "";
    this.data = [];
    this.hasId = false;
  }

  push(text) {
    this.buffer += text;
    let match;
    while ((match = /\r\n|\r|\n/.exec(this.buffer)) !== null) {
      // A lone "\r" at the end may be the first half of "\r\n": wait for the next chunk.
      if (match[0] === "\r" && match.index === this.buffer.length - 1) break;
      const line = this.buffer.slice(0, match.index);
      this.buffer = this.buffer.slice(match.index + match[0].length);
      this.line(line);
    }
  }

  line(line) {
    if (line === "") {
      this.dispatch();
      return;
    }
    if (line.startsWith(":")) return; // a comment (": heartbeat")
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.event = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id") {
      if (!value.includes("\0")) {
        this.lastId = value;
        this.hasId = true;
      }
    } else if (field === "retry" && /^\d+$/.test(value)) this.onRetry(Number(value));
  }

  dispatch() {
    if (this.data.length) {
      this.onEvent({ id: this.hasId ? this.lastId : null, event: this.event || "message", data: this.data.join("\n") });
    }
    this.reset();
  }
}

const TERMINAL = new Set(["completed", "failed", "timeout", "closed", "gone"]);

// Follow a deliberation's events until its terminal event, reconnecting after a dropped connection.
//   url: the events_url; lastId: resume after this id (null: from the start);
//   onEvent({id, event, data}) for every event; onState("open" | "waiting" | "ended" | "error", detail).
// Returns {stop()}.
export function follow(url, { lastId = null, onEvent, onState = () => {} }) {
  let stopped = false;
  let controller = null;
  let retryMs = 2000;
  let resumeId = lastId;

  async function once() {
    controller = new AbortController();
    const headers = authHeaders({ Accept: "text/event-stream" });
    if (resumeId) headers["Last-Event-ID"] = resumeId;
    const response = await fetch(url, { headers, signal: controller.signal, cache: "no-store" });
    if (!response.ok) throw await errorOf(response);
    onState("open");
    let ended = false;
    const parser = new SSEParser(
      (message) => {
        if (message.id) resumeId = message.id;
        if (TERMINAL.has(message.event)) ended = true;
        onEvent(message);
      },
      (ms) => { retryMs = ms; },
    );
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.push(value);
      if (ended) break;
    }
    reader.cancel().catch(() => {});
    return ended;
  }

  (async () => {
    while (!stopped) {
      let wait = retryMs;
      try {
        if (await once()) {
          onState("ended");
          return;
        }
        onState("waiting", "the stream closed early; resuming");
      } catch (error) {
        if (stopped) return;
        const status = error && error.status;
        if (status === 401 || status === 403 || status === 404 || status === 422) {
          onState("error", error);
          return;
        }
        if (status === 429 && error.retryAfter) wait = error.retryAfter * 1000;
        onState("waiting", error && error.message ? error.message : String(error));
      }
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
  })();

  return {
    stop() {
      stopped = true;
      if (controller) controller.abort();
    },
  };
}
