// status-messenger browser client: one dependency-free ES module (no build step, no imports).
//
// `connect(options)` follows one session's statuses over a WebSocket or Server-Sent Events,
// reconnects by itself and resumes after the last seq it saw, so that `onStatus` sees each seq
// at most once and every seq it does not see is reported once through `onGap`.
//
// # Invariants
// - `lastSeq` only grows. Every seq in `after + 1 ..= lastSeq` went to exactly one of
//   `onStatus` (as itself) or `onGap` (inside one range), in seq order.
// - At most one connection, one reconnect timer and one probe are current at a time. Every
//   callback of a connection, timer or probe checks that its `epoch` is still the current one,
//   so that nothing replaced or closed acts on the stream.
// - The module never touches the DOM: texts are data and are handed over as they came.

const OPEN = 1; // WebSocket.OPEN, spelled out so that injected fakes need not define it

/** What a probe's race yields once it is given up. */
const GAVE_UP = Symbol("gave up");

export function connect(options) {
  const o = options || {};
  const session = o.session;
  if (typeof session !== "string" || session === "") {
    throw new TypeError("status-messenger: options.session is required");
  }
  const transport = o.transport ?? "ws";
  if (transport !== "ws" && transport !== "sse") {
    throw new TypeError(`status-messenger: options.transport must be "ws" or "sse", not ${transport}`);
  }
  const after = o.after ?? 0;
  // Safe integers only: a larger one is sent rounded, or as `1e+21`, which no server reads.
  if (!Number.isSafeInteger(after) || after < 0) {
    throw new TypeError("status-messenger: options.after must be a non-negative safe integer");
  }
  const base = String(o.base ?? "").replace(/\/+$/, "");
  if (/[?#]/.test(base)) {
    throw new TypeError("status-messenger: options.base must not have a query or a fragment");
  }
  const win = o.window ?? globalThis;
  const WS = o.WebSocket ?? globalThis.WebSocket;
  const ES = o.EventSource ?? globalThis.EventSource;
  const fetchFn = o.fetch ?? (globalThis.fetch && ((url, init) => globalThis.fetch(url, init)));
  // Wrapped: a browser's timer functions refuse to be called on anything but the window.
  const setTimer = o.setTimeout ?? ((fn, ms) => globalThis.setTimeout(fn, ms));
  const clearTimer = o.clearTimeout ?? ((id) => globalThis.clearTimeout(id));
  const random = o.random ?? Math.random;
  const stallTimeout = o.stallTimeout ?? 30_000;
  const backoffBase = o.backoffBase ?? 250;
  const backoffCap = o.backoffCap ?? 10_000;
  const stableAfter = o.stableAfter ?? 5_000;
  const pauseWhenHidden = Boolean(o.pauseWhenHidden);
  const doc = win.document;

  if (transport === "ws" && typeof WS !== "function") {
    throw new TypeError("status-messenger: no WebSocket here; pass options.WebSocket");
  }
  if (transport === "sse" && typeof ES !== "function") {
    throw new TypeError("status-messenger: no EventSource here (node has none); pass options.EventSource");
  }

  // `path` under `base`, resolved against the page; `ws` asks for a ws:/wss: URL.
  function endpoint(path, params, ws) {
    let url;
    try {
      url = new URL(base + path, win.location?.href);
    } catch {
      throw new TypeError("status-messenger: options.base must be an absolute URL where there is no page");
    }
    const http = url.protocol.replace(/^ws/, "http"); // ws: → http:, wss: → https:
    if (http !== "http:" && http !== "https:") {
      throw new TypeError(`status-messenger: the server must be http(s) or ws(s), not ${url.protocol}`);
    }
    url.protocol = ws ? http.replace("http", "ws") : http;
    for (const [key, value] of Object.entries(params)) {
      if (value !== undefined) url.searchParams.set(key, String(value));
    }
    return url.href;
  }
  endpoint("/", {}); // a base that cannot be resolved fails here, not on the first reconnect

  let lastSeq = after;
  let state = null;
  let closed = false;
  let paused = false;
  let epoch = 0; // bumped whenever the current connection, timer or probe is abandoned
  let conn = null; // { socket, opened, close() }
  let reconnectTimer = null;
  let probing = null; // the current probe's { abort() }
  let watchdog = null;
  // On SSE, until the server has sent a `keepalive` event: the silence an open stream may
  // keep. It doubles (up to 8 times `stallTimeout`) each time an open stream is dropped for
  // it, so that a server whose keep-alives are comments only, which EventSource never
  // surfaces, has its idle streams reconnected ever more rarely; the first `keepalive` event
  // sets it back to `stallTimeout` for good.
  let sseQuiet = stallTimeout;
  let sseKeepAlives = false;
  let stableTimer = null;
  let attempts = 0; // failed connections in a row: the backoff's exponent

  // As an uncaught error where there is `reportError` (browsers), without unwinding the
  // stream's own bookkeeping; elsewhere (node 20 has none) on the console, since an error
  // thrown from a microtask would end a node process.
  function report(err) {
    if (typeof globalThis.reportError === "function") globalThis.reportError(err);
    else globalThis.console?.error?.("status-messenger: a callback threw", err);
  }

  function emit(fn, ...args) {
    if (typeof fn !== "function") return;
    try {
      fn(...args);
    } catch (err) {
      report(err); // a throwing callback must not break the stream
    }
  }

  function setState(next, detail) {
    if (next === state) return;
    state = next;
    emit(o.onState, next, detail);
  }

  function clear(id) {
    if (id !== null) clearTimer(id);
    return null;
  }

  // ---- frames ----

  function onFrame(data, hint) {
    feed();
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return; // not JSON: nothing this client knows
    }
    if (!frame || typeof frame !== "object" || closed) return;
    const type = frame.type ?? hint;
    if (type === "status") onStatusFrame(frame);
    else if (type === "gap") onGapFrame(frame);
    else if (type === "task") emit(o.onTask, frame);
    // "keepalive" has done its job by feeding the watchdog; unknown types are ignored.
  }

  function onStatusFrame(frame) {
    const seq = frame.seq;
    if (!Number.isInteger(seq) || seq <= lastSeq) return; // seen already: never twice
    if (seq > lastSeq + 1) {
      const from = lastSeq + 1;
      lastSeq = seq - 1;
      emit(o.onGap, { from, to: seq - 1 });
      if (closed) return;
    }
    lastSeq = seq;
    emit(o.onStatus, frame);
  }

  // A gap frame covers everything unseen up to its `to`: a part at or below `lastSeq` was
  // already delivered or reported, and anything between `lastSeq` and its `from` is missing too.
  function onGapFrame(frame) {
    const { from, to } = frame;
    if (!Number.isInteger(from) || !Number.isInteger(to) || to < from || to <= lastSeq) return;
    const range = { from: lastSeq + 1, to };
    lastSeq = to;
    emit(o.onGap, range);
  }

  // ---- the watchdog ----
  // Every frame, keep-alives included, proves the connection alive, so silence for
  // `stallTimeout` means it is dead without having said so, on both transports. EventSource
  // never surfaces the comment of an SSE keep-alive; the `keepalive` event that the crate's
  // servers send with it is what it sees. (A server that sends the comment alone has its idle
  // SSE streams reconnected, resuming where they were, after `stallTimeout`, then twice as
  // long, up to 8 times as long; see `sseQuiet`.)

  function feed() {
    watchdog = clear(watchdog);
    if (stallTimeout > 0 && conn) {
      const at = epoch;
      const quiet = transport === "sse" && conn.opened && !sseKeepAlives;
      watchdog = setTimer(() => {
        if (at !== epoch) return;
        if (quiet) sseQuiet = Math.min(sseQuiet * 2, stallTimeout * 8);
        dropped();
      }, quiet ? sseQuiet : stallTimeout);
    }
  }

  // ---- connections ----

  function open() {
    reconnectTimer = clear(reconnectTimer);
    if (closed || paused) return;
    if (state !== "connecting") setState("reconnecting");
    const at = ++epoch;
    const current = () => at === epoch;
    try {
      conn = transport === "ws" ? openWebSocket(current) : openEventSource(current);
    } catch (error) {
      // The constructor refused the URL (say, ws: from an https page): no retry can help.
      finish("error", error);
      return;
    }
    feed(); // bounds the wait for `open` on both transports
  }

  function openWebSocket(current) {
    const socket = new WS(endpoint("/ws", { session, after: lastSeq || undefined }, true));
    socket.onopen = () => { if (current()) opened(); };
    socket.onmessage = (e) => { if (current()) onFrame(e.data, "status"); };
    socket.onclose = () => { if (current()) dropped(); };
    // Browsers follow an error with a close, but some WebSocket implementations (node 20's)
    // fire only the error when the handshake is refused: either one ends the connection.
    socket.onerror = () => { if (current()) dropped(); };
    return { socket, opened: false, close: () => socket.close() };
  }

  function openEventSource(current) {
    // The query form, not the Last-Event-ID header, so the resume point is ours exactly.
    const source = new ES(endpoint("/events", { session, last_event_id: lastSeq || undefined }));
    source.onopen = () => { if (current()) opened(); };
    source.onmessage = (e) => { if (current()) onFrame(e.data, "status"); };
    source.addEventListener("gap", (e) => { if (current()) onFrame(e.data, "gap"); });
    source.addEventListener("task", (e) => { if (current()) onFrame(e.data, "task"); });
    source.addEventListener("keepalive", (e) => {
      if (!current()) return;
      sseKeepAlives = true;
      onFrame(e.data, "keepalive");
    });
    // EventSource would retry by itself, with its own delay and the last id it parsed; close
    // it and reconnect here instead, with backoff and the resume point from `lastSeq`.
    source.onerror = () => { if (current()) dropped(); };
    return { socket: source, opened: false, close: () => source.close() };
  }

  function opened() {
    conn.opened = true;
    feed();
    setState("live");
    // Only a connection that stayed up a while proves the server healthy again; one that drops
    // at once keeps the backoff growing.
    stableTimer = clear(stableTimer);
    stableTimer = setTimer(() => { attempts = 0; }, stableAfter);
  }

  // Abandons the current connection, timers and probe, without reporting a state.
  function teardown() {
    epoch++;
    probing?.abort();
    probing = null;
    watchdog = clear(watchdog);
    stableTimer = clear(stableTimer);
    reconnectTimer = clear(reconnectTimer);
    const old = conn;
    conn = null;
    if (old) {
      try {
        old.close();
      } catch {
        // closing a socket that is already failing may throw; it is gone either way
      }
    }
  }

  function dropped() {
    const wasOpen = conn?.opened ?? false;
    teardown();
    if (closed) return;
    setState("reconnecting");
    if (wasOpen || !fetchFn) return schedule();
    // A connection refused before it opened cannot tell why (a WebSocket close before `open`
    // and an EventSource error carry no status), so ask the same URL over plain HTTP: the
    // server answers 404 for an unknown session before any upgrade or stream.
    const at = epoch;
    probe().then(({ status, head, refusal }) => {
      if (at !== epoch || closed) return;
      if (status === 404 && refusal) finish("unknown-session");
      else if (status === 404) {
        // A 404 without the endpoints' `{"error": ...}`: nothing is served there, so no retry
        // can help either.
        finish("error", new Error(`status-messenger: nothing answers at ${endpoint("/", {})} (404): is options.base right?`));
      } else if (head !== undefined) finish("resume-refused", undefined, head);
      else schedule();
    });
  }

  // Resuming, it asks the events URL with the resume point: a WebSocket URL asked over plain
  // HTTP is refused for the missing upgrade before the resume point is looked at, while the
  // events URL answers 400 with the session's `head` for a resume point beyond it (the server
  // lost history this client saw, so no retry can resume it).
  //
  // It is given up (as unanswered: the stream goes on reconnecting) after `stallTimeout`
  // (30 s where that is 0), and by `teardown`: a server that accepts a connection and then
  // says nothing must not hold the stream here.
  async function probe() {
    const resuming = lastSeq > 0;
    const path = transport === "ws" && !resuming ? "/ws" : "/events";
    const params = resuming ? { session, last_event_id: lastSeq } : { session };
    const controller = typeof AbortController === "function" ? new AbortController() : undefined;
    let giveUp;
    const unanswered = new Promise((resolve) => { giveUp = () => resolve(GAVE_UP); });
    let timer = null;
    const abort = () => {
      timer = clear(timer);
      controller?.abort();
      giveUp();
    };
    probing = { abort };
    timer = setTimer(abort, stallTimeout > 0 ? stallTimeout : 30_000);
    try {
      const res = await Promise.race([
        fetchFn(endpoint(path, params), { cache: "no-store", signal: controller?.signal }),
        unanswered,
      ]);
      if (res === GAVE_UP) return { status: 0 };
      let head;
      let refusal = false; // the endpoints' own `{"error": ...}`, not a page of another server
      if ((resuming && res.status === 400) || res.status === 404) {
        try {
          const body = await Promise.race([res.json(), unanswered]);
          // A body cut short is no answer: reconnect rather than end the stream on it.
          if (body === GAVE_UP) return { status: 0 };
          refusal = typeof body?.error === "string";
          if (Number.isSafeInteger(body?.head) && body.head < lastSeq) head = body.head;
        } catch {
          // not JSON: not the endpoints' refusal
        }
      }
      controller?.abort(); // only the status was wanted; an SSE answer would stream on
      return { status: res.status, head, refusal };
    } catch {
      return { status: 0 }; // unreachable, or unreadable (CORS): not a reason to give up
    } finally {
      timer = clear(timer);
      if (probing?.abort === abort) probing = null;
    }
  }

  // Exponential backoff with full jitter: a random wait below a cap that doubles per failure.
  function schedule() {
    if (closed || paused) return;
    if (win.navigator?.onLine === false) return; // `online` reconnects
    const ceiling = Math.min(backoffCap, backoffBase * 2 ** Math.min(attempts, 30));
    attempts++;
    const at = epoch;
    reconnectTimer = setTimer(() => { if (at === epoch) open(); }, random() * ceiling);
  }

  // ---- the page's events ----

  function onOnline() {
    if (closed || paused || state === "live") return;
    teardown();
    attempts = 0;
    open();
  }

  function onVisibility() {
    if (closed) return;
    if (doc.hidden) {
      paused = true;
      teardown();
      setState("paused");
    } else if (paused) {
      paused = false;
      attempts = 0;
      open();
    }
  }

  // Ends the stream for good; an `error` that ends it is reported too.
  function finish(reason, error, head) {
    if (closed) return;
    if (error !== undefined) report(error);
    closed = true;
    teardown();
    win.removeEventListener?.("online", onOnline);
    if (pauseWhenHidden) doc?.removeEventListener?.("visibilitychange", onVisibility);
    const detail = { reason };
    if (error !== undefined) detail.error = error;
    if (head !== undefined) detail.head = head;
    setState("closed", detail);
  }

  // ---- cancel ----

  function cancel(task) {
    if (typeof task !== "string" || task === "") {
      return Promise.reject(new TypeError("status-messenger: cancel needs a task id"));
    }
    const socket = conn?.socket;
    if (transport === "ws" && socket?.readyState === OPEN) {
      socket.send(JSON.stringify({ type: "cancel", task }));
      return Promise.resolve({ task, sent: true });
    }
    if (!fetchFn) return Promise.reject(new TypeError("status-messenger: no fetch here; pass options.fetch"));
    return fetchFn(endpoint("/cancel", { session, task }), { method: "POST" }).then(async (res) => {
      let body;
      try {
        body = await res.json();
      } catch {
        body = undefined;
      }
      if (!res.ok) {
        const reason = body && typeof body.error === "string" ? `: ${body.error}` : "";
        const err = new Error(`status-messenger: cancel refused with ${res.status}${reason}`);
        err.status = res.status;
        err.body = body;
        throw err;
      }
      return body;
    });
  }

  // ---- start ----

  win.addEventListener?.("online", onOnline);
  if (pauseWhenHidden) doc?.addEventListener?.("visibilitychange", onVisibility);
  // Started after `connect` returns, so that callbacks may already use the returned handle.
  queueMicrotask(() => {
    if (closed) return;
    if (pauseWhenHidden && doc?.hidden) {
      paused = true;
      setState("paused");
    } else {
      setState("connecting");
      open();
    }
  });

  return Object.freeze({
    get lastSeq() { return lastSeq; },
    get state() { return state ?? "connecting"; },
    cancel,
    close: () => finish("closed"),
  });
}
