// Fakes for the client's tests: a manual clock, a WebSocket, an EventSource, fetch and a page,
// injected through `connect`'s options so that no test needs a network or a browser.
// (Outside `test/`, so that `node --test` does not take this file for a test.)

import { connect } from "../status-messenger.js";

/** Timers that run only when the test advances the clock. */
export class Clock {
  now = 0;
  #timers = new Map();
  #next = 1;
  setTimeout = (fn, ms) => {
    const id = this.#next++;
    this.#timers.set(id, { at: this.now + Math.max(0, ms ?? 0), fn });
    return id;
  };
  clearTimeout = (id) => {
    this.#timers.delete(id);
  };
  /** Runs every timer due within `ms`, in time order, moving `now` along. */
  advance(ms) {
    const end = this.now + ms;
    for (;;) {
      let due = null;
      for (const [id, t] of this.#timers) {
        if (t.at <= end && (due === null || t.at < due[1].at)) due = [id, t];
      }
      if (due === null) break;
      this.#timers.delete(due[0]);
      this.now = due[1].at;
      due[1].fn();
    }
    this.now = end;
  }
  /** The delays still to wait, from now, shortest first. */
  pending() {
    return [...this.#timers.values()].map((t) => t.at - this.now).sort((a, b) => a - b);
  }
}

/** A WebSocket class whose instances the test drives from the server's side. */
export function fakeWebSocket() {
  class FakeWebSocket {
    static instances = [];
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closedByClient = false;
      FakeWebSocket.instances.push(this);
    }
    send(data) {
      if (this.readyState !== 1) throw new Error("InvalidStateError: not open");
      this.sent.push(JSON.parse(data));
    }
    close() {
      this.closedByClient = true;
      this.readyState = 3;
    }
    // The server's side.
    accept() {
      this.readyState = 1;
      this.onopen?.({ type: "open" });
    }
    frame(value) {
      this.onmessage?.({ data: typeof value === "string" ? value : JSON.stringify(value) });
    }
    drop() {
      this.readyState = 3;
      this.onclose?.({ type: "close", code: 1006 });
    }
    /** A failure as a browser reports it: an error, then a close. */
    fail() {
      this.readyState = 3;
      this.onerror?.({ type: "error" });
      this.onclose?.({ type: "close", code: 1006 });
    }
    /** A refused handshake as node 20's WebSocket reports it: an error and no close. */
    refuse() {
      this.readyState = 3;
      this.onerror?.({ type: "error" });
    }
  }
  return FakeWebSocket;
}

/** An EventSource class whose instances the test drives from the server's side. */
export function fakeEventSource() {
  class FakeEventSource {
    static instances = [];
    #listeners = new Map();
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.closedByClient = false;
      FakeEventSource.instances.push(this);
    }
    addEventListener(type, fn) {
      if (!this.#listeners.has(type)) this.#listeners.set(type, []);
      this.#listeners.get(type).push(fn);
    }
    close() {
      this.closedByClient = true;
      this.readyState = 2;
    }
    // The server's side.
    accept() {
      this.readyState = 1;
      this.onopen?.({ type: "open" });
    }
    event(type, value) {
      const e = { type, data: typeof value === "string" ? value : JSON.stringify(value) };
      if (type === "message") this.onmessage?.(e);
      for (const fn of this.#listeners.get(type) ?? []) fn(e);
    }
    /** A failed or lost connection; a real EventSource would go on to retry by itself. */
    fail() {
      this.readyState = 0;
      this.onerror?.({ type: "error" });
    }
  }
  return FakeEventSource;
}

/** A fetch that records its calls and answers with `respond(url, init)`'s `[status, body]`. */
export function fakeFetch(respond = () => [400, { error: "expected a WebSocket upgrade request" }]) {
  const calls = [];
  const fetch = async (url, init = {}) => {
    calls.push({ url, method: init.method ?? "GET" });
    const [status, body] = await respond(url, init);
    return {
      status,
      ok: status >= 200 && status < 300,
      json: async () => body,
    };
  };
  return { fetch, calls };
}

/** A page: location, navigator.onLine, document.hidden and their events. */
export function fakeWindow(href = "http://example.test/app/") {
  const win = new EventTarget();
  win.location = { href };
  win.navigator = { onLine: true };
  win.document = Object.assign(new EventTarget(), { hidden: false });
  return win;
}

/** Lets queued microtasks (the stream's start, fetch answers) run. */
export const settle = () => new Promise((resolve) => setImmediate(resolve));

/**
 * Connects with every dependency faked, recording what the callbacks saw. `options` override
 * the defaults (random 1: each backoff wait is its whole ceiling).
 */
export async function setup(options = {}) {
  const clock = new Clock();
  const WebSocket = fakeWebSocket();
  const EventSource = fakeEventSource();
  const { respond, href, ...rest } = options;
  const http = fakeFetch(respond);
  const win = fakeWindow(href);
  const seen = { statuses: [], gaps: [], tasks: [], states: [], details: [] };
  const stream = connect({
    session: "s1",
    WebSocket,
    EventSource,
    fetch: http.fetch,
    window: win,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    random: () => 1,
    onStatus: (f) => seen.statuses.push(f.seq),
    onGap: (g) => seen.gaps.push([g.from, g.to]),
    onTask: (t) => seen.tasks.push(t),
    onState: (s, d) => {
      seen.states.push(s);
      if (d) seen.details.push(d);
    },
    ...rest,
  });
  await settle();
  const sockets = options.transport === "sse" ? EventSource.instances : WebSocket.instances;
  return { stream, clock, sockets, http, win, seen, last: () => sockets.at(-1) };
}
