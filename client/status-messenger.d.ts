// Type declarations of status-messenger.js, the browser client of status-messenger.

/** One status of a session. Fields this client does not know are passed through untouched. */
export interface StatusFrame {
  /** Absent, or `"status"`. */
  type?: "status";
  session: string;
  /** Counts from 1 per session, without gaps. */
  seq: number;
  /** Plain text, never markup: show it with `textContent`, not `innerHTML`. */
  text: string;
  /** The task that added this status. */
  task?: string;
  progress?: { current: number; total: number };
  level?: "info" | "warn" | "error";
  /** A later status with the same key supersedes this one on screen. */
  key?: string;
  /** Any JSON. */
  data?: unknown;
  [field: string]: unknown;
}

/** A range of seqs, both ends included, that this stream will never deliver. */
export interface Gap {
  from: number;
  to: number;
}

/** A gap frame as the server sends it. */
export interface GapFrame extends Gap {
  type: "gap";
  session: string;
  [field: string]: unknown;
}

export type TaskState = "running" | "cancelling" | "finished" | "failed" | "cancelled";

/**
 * A task's state. Sent whenever a task changes state, and again for every task still known on
 * each connect and resume, so the same state may arrive more than once.
 */
export interface TaskFrame {
  type: "task";
  session: string;
  task: string;
  state: TaskState;
  /**
   * The session's newest seq when the task took this state. The frames sent again on each
   * connect keep it: a `running` task's statuses may already go past it.
   */
  last_seq: number;
  /** With `"failed"`: why, when the server says (for example "the task's tool panicked"). */
  message?: string;
  [field: string]: unknown;
}

/**
 * `"paused"` happens only with `pauseWhenHidden`. `"closed"` is final: after `close()`, when
 * the server does not know the session, when it no longer holds history this stream saw
 * (`"resume-refused"`), or when a connection cannot even be attempted.
 */
export type ConnectionState = "connecting" | "live" | "reconnecting" | "paused" | "closed";

/** Passed with the `"closed"` state: why the stream ended. */
export interface ClosedDetail {
  /**
   * `"closed"`: `close()` was called; `"unknown-session"`: the server answered 404 with its
   * JSON `{"error": ...}`; `"error"`: the WebSocket or EventSource constructor refused the URL
   * (e.g. `ws:` from an `https:` page), or a 404 came without that JSON (nothing is served
   * under `base`), which no retry would mend; `"resume-refused"`: the server's newest status
   * of the session is below `lastSeq` (it lost history this stream saw), so no resume can
   * continue it: connect anew (for example with `after: 0`) to start over.
   */
  reason: "closed" | "unknown-session" | "error" | "resume-refused";
  /** With `"error"`: what the constructor threw, or the 404's `Error` (also reported). */
  error?: unknown;
  /** With `"resume-refused"`: the session's newest seq on the server. */
  head?: number;
}

/** The answer to `cancel`. */
export type CancelAnswer =
  /** Sent as a cancel frame on the open WebSocket; the outcome arrives through `onTask`. */
  | { task: string; sent: true }
  /** The server's answer to `POST {base}/cancel`: the task's state after the request. */
  | { task: string; state: TaskState };

/** Raised (as the rejection of `cancel`) when the server refuses a cancel over HTTP. */
export interface CancelError extends Error {
  /** The HTTP status, e.g. 404 for an unknown session or a task not of this session. */
  status: number;
  /** The server's JSON answer, usually `{ error: string }`, if it sent one. */
  body: unknown;
}

export interface ConnectOptions {
  /** The session to follow. Required. */
  session: string;
  /** Default `"ws"`. */
  transport?: "ws" | "sse";
  /**
   * Statuses up to and including this seq are already known to the caller: a non-negative
   * safe integer (`Number.isSafeInteger`). Default 0.
   */
  after?: number;
  /**
   * Origin or path prefix of the server (`"https://host"`, `"/status"`, `"wss://host/x"`),
   * with no query or fragment. Default `""`: this page's origin. Where there is no page (node)
   * it must be absolute. A relative one without a leading `/` resolves against the page's
   * directory. Over SSE and for `cancel` another origin must answer with CORS headers.
   */
  base?: string;
  /** Each status, in seq order, at most once across reconnects. */
  onStatus?(frame: StatusFrame): void;
  /** Each range of seqs that will not be delivered, once, before the status that follows it. */
  onGap?(gap: Gap): void;
  /** Each task frame. */
  onTask?(frame: TaskFrame): void;
  /** Each change of the connection's state; `detail` comes with `"closed"`. */
  onState?(state: ConnectionState, detail?: ClosedDetail): void;

  /**
   * Milliseconds without any frame, keep-alives included (the server sends one every 15 s
   * when idle), after which the connection counts as dropped; it also bounds the wait for a
   * connection to open and for the check of why a connection was refused. On SSE the
   * keep-alive seen is the `keepalive` event the crate's servers send (EventSource never
   * surfaces the comment line beside it): against a server that sends comments only, an idle
   * SSE stream is reconnected, resuming where it was, after `stallTimeout`, then twice that,
   * up to 8 times it. 0 turns the watchdog off (the check of a refused connection is still
   * given up after 30 s). Default 30000.
   */
  stallTimeout?: number;
  /** The first reconnect waits up to this many ms; each failure doubles it. Default 250. */
  backoffBase?: number;
  /** The most any reconnect waits, in ms. Default 10000. */
  backoffCap?: number;
  /** A connection live this long (ms) resets the backoff. Default 5000. */
  stableAfter?: number;
  /** Close while `document.hidden`, resume when visible (state `"paused"`). Default false. */
  pauseWhenHidden?: boolean;

  /** Advanced, for tests and unusual hosts. Default `globalThis.WebSocket`. */
  WebSocket?: new (url: string) => WebSocketLike;
  /** Advanced. Default `globalThis.EventSource` (node has none: pass one for SSE there). */
  EventSource?: new (url: string) => EventSourceLike;
  /** Advanced. Default `globalThis.fetch`; used by `cancel` over HTTP and the 404 probe. */
  fetch?: (url: string, init?: { method?: string; cache?: string; signal?: AbortSignal }) =>
    Promise<{ status: number; ok: boolean; json(): Promise<unknown> }>;
  /**
   * Advanced. Where `location.href` (to resolve `base`), `navigator.onLine`, the `online` event
   * and `document` (for `pauseWhenHidden`) come from. Default `globalThis`.
   */
  window?: WindowLike;
  /** Advanced. Default `globalThis.setTimeout`. */
  setTimeout?: (fn: () => void, ms: number) => unknown;
  /** Advanced. Default `globalThis.clearTimeout`. */
  clearTimeout?: (id: unknown) => void;
  /** Advanced: the jitter's source, in [0, 1). Default `Math.random`. */
  random?: () => number;
}

export interface Stream {
  /** The last seq delivered through `onStatus` or covered by a gap: the resume point. */
  readonly lastSeq: number;
  readonly state: ConnectionState;
  /**
   * Asks the server to cancel a task of this session: the cancel frame while the WebSocket is
   * open, otherwise (SSE, or the socket is down) `POST {base}/cancel?session=…&task=…`.
   */
  cancel(task: string): Promise<CancelAnswer>;
  /** Stops for good: no reconnect, state `"closed"`. */
  close(): void;
}

/**
 * Follows one session's statuses. Throws a `TypeError` at once for a missing session, an
 * unknown transport, a bad `after`, a `base` that cannot be resolved or has a query or a
 * fragment, or a transport this host lacks. The connection starts after `connect` returns.
 */
export function connect(options: ConnectOptions): Stream;

export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: unknown) => void) | null;
  onerror: ((event: unknown) => void) | null;
  send(data: string): void;
  close(): void;
}

export interface EventSourceLike {
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  addEventListener(type: string, listener: (event: { data: string }) => void): void;
  close(): void;
}

export interface WindowLike {
  location?: { href: string };
  navigator?: { onLine?: boolean };
  document?: {
    hidden: boolean;
    addEventListener(type: "visibilitychange", listener: () => void): void;
    removeEventListener(type: "visibilitychange", listener: () => void): void;
  };
  addEventListener?(type: "online", listener: () => void): void;
  removeEventListener?(type: "online", listener: () => void): void;
}
