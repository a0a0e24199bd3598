// Reconnecting: backoff, the watchdog, the page's online and visibility events, unknown
// sessions, and close.

import test from "node:test";
import assert from "node:assert/strict";
import { setup, settle } from "../testing/fakes.js";

const status = (seq) => ({ session: "s1", seq, text: `step ${seq}` });

test("states go connecting, live, reconnecting, live, closed", async () => {
  const { stream, clock, last, seen } = await setup();
  assert.deepEqual(seen.states, ["connecting"]);
  last().accept();
  last().drop();
  clock.advance(250);
  last().accept();
  stream.close();
  assert.deepEqual(seen.states, ["connecting", "live", "reconnecting", "live", "closed"]);
  assert.deepEqual(seen.details, [{ reason: "closed" }]);
  assert.equal(stream.state, "closed");
});

test("the connection starts after connect returns, so callbacks can use the handle", async () => {
  const { connect } = await import("../status-messenger.js");
  const { fakeWebSocket, fakeWindow } = await import("../testing/fakes.js");
  const WebSocket = fakeWebSocket();
  const states = [];
  const stream = connect({
    session: "s1",
    WebSocket,
    window: fakeWindow(),
    onState: (s) => states.push(`${s} lastSeq=${stream.lastSeq}`),
  });
  assert.equal(WebSocket.instances.length, 0);
  assert.equal(stream.state, "connecting");
  await settle();
  assert.equal(WebSocket.instances.length, 1);
  stream.close();
  assert.deepEqual(states, ["connecting lastSeq=0", "closed lastSeq=0"]);
});

test("a reconnect resumes after lastSeq", async () => {
  const { stream, clock, sockets, last } = await setup();
  assert.equal(last().url, "ws://example.test/ws?session=s1");
  last().accept();
  for (const seq of [1, 2, 3]) last().frame(status(seq));
  last().drop();
  clock.advance(250);
  assert.equal(sockets.length, 2);
  assert.equal(last().url, "ws://example.test/ws?session=s1&after=3");
  last().accept();
  last().frame({ type: "gap", from: 4, to: 9 });
  last().drop();
  clock.advance(500); // it dropped at once, so the backoff grew
  assert.equal(sockets.length, 3);
  assert.equal(last().url, "ws://example.test/ws?session=s1&after=9");
  stream.close();
});

test("the backoff doubles from its base up to its cap, with full jitter", async () => {
  // random 1: each wait is its whole ceiling.
  const { stream, clock, sockets, last } = await setup();
  const waits = [];
  for (let i = 0; i < 8; i++) {
    last().drop(); // refused before it opened: probed (400, a known session), then retried
    await settle();
    const [wait] = clock.pending();
    waits.push(wait);
    clock.advance(wait);
  }
  assert.deepEqual(waits, [250, 500, 1000, 2000, 4000, 8000, 10000, 10000]);
  assert.equal(sockets.length, 9);
  stream.close();

  // random 0.3: each wait is that share of its ceiling.
  const jittered = await setup({ random: () => 0.3 });
  const shares = [];
  for (let i = 0; i < 3; i++) {
    jittered.last().drop();
    await settle();
    const [wait] = jittered.clock.pending();
    shares.push(wait);
    jittered.clock.advance(wait);
  }
  assert.deepEqual(shares, [75, 150, 300]);
  jittered.stream.close();
});

test("a connection that stayed live resets the backoff; one that drops at once does not", async () => {
  const { stream, clock, last } = await setup({ stableAfter: 5000 });
  const waitAfterDrop = async () => {
    last().drop();
    await settle();
    const [wait] = clock.pending();
    clock.advance(wait);
    return wait;
  };
  assert.equal(await waitAfterDrop(), 250);
  assert.equal(await waitAfterDrop(), 500);
  last().accept();
  clock.advance(4999); // live, but not for long enough
  assert.equal(await waitAfterDrop(), 1000);
  last().accept();
  clock.advance(5000);
  assert.equal(await waitAfterDrop(), 250);
  stream.close();
});

test("a WebSocket silent for stallTimeout is dropped and reconnected", async () => {
  const { stream, clock, sockets, last, seen } = await setup({ stallTimeout: 1000 });
  last().accept();
  last().frame(status(1));
  clock.advance(999);
  assert.equal(sockets.length, 1);
  clock.advance(1);
  assert.equal(sockets[0].closedByClient, true);
  assert.equal(stream.state, "reconnecting");
  clock.advance(250);
  assert.equal(sockets.length, 2);
  assert.equal(last().url, "ws://example.test/ws?session=s1&after=1");
  assert.deepEqual(seen.states, ["connecting", "live", "reconnecting"]);
  stream.close();
});

test("keep-alives feed the watchdog, by default 30 s", async () => {
  const { stream, clock, sockets, last } = await setup();
  last().accept();
  for (let i = 0; i < 10; i++) {
    clock.advance(15_000);
    last().frame({ type: "keepalive" });
  }
  assert.equal(sockets.length, 1);
  assert.equal(stream.state, "live");
  clock.advance(30_000);
  assert.equal(sockets[0].closedByClient, true);
  assert.equal(stream.state, "reconnecting");
  stream.close();
});

test("a connection that never opens is given up after stallTimeout", async () => {
  const { stream, clock, sockets } = await setup({ stallTimeout: 1000 });
  clock.advance(1000);
  assert.equal(sockets[0].closedByClient, true);
  await settle(); // the probe
  clock.advance(250);
  assert.equal(sockets.length, 2);
  stream.close();
});

test("on SSE the keepalive events feed the watchdog, and silence drops the stream", async () => {
  const sse = await setup({ transport: "sse", stallTimeout: 1000 });
  sse.last().accept();
  for (let i = 0; i < 20; i++) {
    sse.clock.advance(900);
    sse.last().event("keepalive", { type: "keepalive" }); // what comes with the comment line
  }
  droppedAfterStatusAndSilence(sse);
});

test("on SSE a stream silent for stallTimeout is dropped, keep-alive events seen or not", async () => {
  const sse = await setup({ transport: "sse", stallTimeout: 1000 });
  sse.last().accept();
  // A busy stream that stops before the server's first keep-alive (15 s of quiet) came.
  droppedAfterStatusAndSilence(sse);
});

/** Status 1, then 1000 ms of silence: the open SSE stream is dropped and resumes after 1. */
function droppedAfterStatusAndSilence({ stream, clock, sockets, last, seen }) {
  last().event("message", status(1));
  clock.advance(999);
  assert.equal(sockets.length, 1);
  assert.equal(stream.state, "live");
  clock.advance(1);
  assert.equal(sockets[0].closedByClient, true);
  assert.equal(stream.state, "reconnecting");
  clock.advance(250);
  assert.equal(sockets.length, 2);
  assert.equal(last().url, "http://example.test/events?session=s1&last_event_id=1");
  assert.deepEqual(seen.statuses, [1]);
  stream.close();
}

test("a probe that is never answered is given up after stallTimeout, and the stream reconnects", async () => {
  const signals = [];
  const { stream, clock, sockets, last, http } = await setup({
    stallTimeout: 1000,
    // A server that takes the connection and says nothing.
    respond: (url, init) => {
      signals.push(init.signal);
      return new Promise(() => {});
    },
  });
  last().drop(); // refused before it opened: probed
  await settle();
  assert.equal(http.calls.length, 1);
  clock.advance(1000);
  await settle();
  assert.equal(signals[0]?.aborted, true);
  clock.advance(250);
  assert.equal(sockets.length, 2);
  assert.equal(stream.state, "reconnecting");
  last().accept();
  assert.equal(stream.state, "live");
  stream.close();
});

test("close aborts a probe in flight", async () => {
  const signals = [];
  const { stream, clock, last } = await setup({
    respond: (url, init) => {
      signals.push(init.signal);
      return new Promise(() => {});
    },
  });
  last().drop();
  await settle();
  assert.equal(signals[0]?.aborted, false);
  stream.close();
  assert.equal(signals[0].aborted, true);
  assert.deepEqual(clock.pending(), []);
});

test("on SSE, against comment-only keep-alives, idle streams are dropped ever more rarely", async () => {
  const { stream, clock, sockets, last } = await setup({ transport: "sse", stallTimeout: 1000 });
  last().accept();
  clock.advance(1000); // silent: dropped, and the next open stream may stay quiet twice as long
  assert.equal(sockets[0].closedByClient, true);
  clock.advance(250);
  last().accept();
  clock.advance(1999);
  assert.equal(sockets.length, 2);
  clock.advance(1);
  assert.equal(sockets[1].closedByClient, true);
  clock.advance(500);
  last().accept();
  clock.advance(3999);
  assert.equal(sockets[2].closedByClient, false);
  // A keepalive event: the server sends them, so silence is stallTimeout again, for good.
  last().event("keepalive", { type: "keepalive" });
  clock.advance(999);
  assert.equal(sockets[2].closedByClient, false);
  clock.advance(1);
  assert.equal(sockets[2].closedByClient, true);
  stream.close();
});

test("a probe answered after it was given up changes nothing", async () => {
  let answer;
  const { stream, clock, sockets, last } = await setup({
    stallTimeout: 1000,
    respond: () => new Promise((resolve) => { answer = resolve; }),
  });
  last().drop();
  await settle();
  clock.advance(1000); // given up: one reconnect is scheduled
  await settle();
  assert.deepEqual(clock.pending(), [250]);
  answer([404, { error: "unknown session" }]); // too late
  await settle();
  assert.deepEqual(clock.pending(), [250]);
  clock.advance(250);
  assert.equal(sockets.length, 2);
  assert.equal(stream.state, "reconnecting");
  stream.close();
});

test("a 404 whose body never comes is no answer: the stream reconnects", async () => {
  const { stream, clock, sockets, last } = await setup({
    stallTimeout: 1000,
    respond: () => [404, new Promise(() => {})], // the body never completes
  });
  last().drop();
  await settle();
  clock.advance(1000);
  await settle();
  clock.advance(250);
  assert.equal(sockets.length, 2);
  assert.equal(stream.state, "reconnecting");
  stream.close();
});

test("with stallTimeout 0 a probe is still given up, after 30 s", async () => {
  const { stream, clock, sockets, last } = await setup({
    stallTimeout: 0,
    respond: () => new Promise(() => {}),
  });
  last().drop();
  await settle();
  clock.advance(29_999);
  await settle();
  assert.equal(sockets.length, 1);
  clock.advance(1);
  await settle();
  clock.advance(250);
  assert.equal(sockets.length, 2);
  stream.close();
});

test("on SSE stallTimeout 0 leaves an idle stream alone", async () => {
  const { stream, clock, sockets, last } = await setup({ transport: "sse", stallTimeout: 0 });
  last().accept();
  clock.advance(600_000);
  assert.equal(sockets.length, 1);
  assert.equal(stream.state, "live");
  stream.close();
});

test("`online` reconnects at once; offline, nothing is scheduled", async () => {
  const { stream, clock, sockets, last, win } = await setup();
  last().accept();
  win.navigator.onLine = false;
  last().drop();
  assert.deepEqual(clock.pending(), []);
  clock.advance(60_000);
  assert.equal(sockets.length, 1);
  win.navigator.onLine = true;
  win.dispatchEvent(new Event("online"));
  assert.equal(sockets.length, 2);
  last().accept();
  win.dispatchEvent(new Event("online")); // live: nothing to do
  assert.equal(sockets.length, 2);
  stream.close();
});

test("`online` cuts a backoff wait short and resets it", async () => {
  const { stream, clock, sockets, last, win } = await setup();
  for (let i = 0; i < 4; i++) {
    last().drop();
    await settle();
    clock.advance(clock.pending()[0]);
  }
  last().drop();
  await settle();
  assert.equal(clock.pending()[0], 4000);
  win.dispatchEvent(new Event("online"));
  assert.equal(sockets.length, 6);
  last().drop();
  await settle();
  assert.equal(clock.pending()[0], 250);
  stream.close();
});

test("pauseWhenHidden closes while hidden and resumes when visible", async () => {
  const { stream, clock, sockets, last, win, seen } = await setup({ pauseWhenHidden: true });
  last().accept();
  last().frame(status(1));
  win.document.hidden = true;
  win.document.dispatchEvent(new Event("visibilitychange"));
  assert.equal(sockets[0].closedByClient, true);
  assert.equal(stream.state, "paused");
  clock.advance(600_000);
  assert.equal(sockets.length, 1);
  win.document.hidden = false;
  win.document.dispatchEvent(new Event("visibilitychange"));
  assert.equal(sockets.length, 2);
  assert.equal(last().url, "ws://example.test/ws?session=s1&after=1");
  last().accept();
  assert.deepEqual(seen.states, ["connecting", "live", "paused", "reconnecting", "live"]);
  stream.close();
});

test("without pauseWhenHidden a hidden page stays connected", async () => {
  const { stream, sockets, last, win } = await setup();
  last().accept();
  win.document.hidden = true;
  win.document.dispatchEvent(new Event("visibilitychange"));
  assert.equal(sockets[0].closedByClient, false);
  assert.equal(stream.state, "live");
  stream.close();
});

test("an unknown session (404 on the probe) closes the stream instead of retrying", async () => {
  const { stream, clock, sockets, last, http, seen } = await setup({
    respond: () => [404, { error: "unknown session" }],
  });
  last().drop(); // closed before it opened
  await settle();
  assert.deepEqual(http.calls, [{ url: "http://example.test/ws?session=s1", method: "GET" }]);
  assert.equal(stream.state, "closed");
  assert.deepEqual(seen.details, [{ reason: "unknown-session" }]);
  clock.advance(600_000);
  assert.equal(sockets.length, 1);
});

test("a 404 without the endpoints' JSON (a base where nothing is mounted) ends the stream with an error", async () => {
  const reported = [];
  const previous = globalThis.reportError;
  globalThis.reportError = (err) => reported.push(err.message);
  try {
    const { stream, clock, sockets, last, seen } = await setup({
      base: "/prefix",
      respond: () => [404, "Not Found"], // a framework's own 404, not the endpoints' JSON
    });
    last().drop();
    await settle();
    assert.equal(stream.state, "closed");
    assert.equal(seen.details[0].reason, "error");
    assert.match(seen.details[0].error.message, /nothing answers at http:\/\/example.test\/prefix\/ \(404\)/);
    assert.equal(reported.length, 1);
    clock.advance(600_000);
    assert.equal(sockets.length, 1);
  } finally {
    if (previous === undefined) delete globalThis.reportError;
    else globalThis.reportError = previous;
  }
});

test("an error and its close count as one drop; an error alone is a drop too", async () => {
  const { stream, clock, sockets, last, http } = await setup();
  last().fail(); // error, then close
  await settle();
  assert.equal(http.calls.length, 1);
  assert.deepEqual(clock.pending(), [250]);
  clock.advance(250);
  last().refuse(); // error only
  await settle();
  assert.equal(http.calls.length, 2);
  clock.advance(500);
  assert.equal(sockets.length, 3);
  stream.close();
});

test("the SSE probe asks the events URL", async () => {
  const { stream, last, http } = await setup({
    transport: "sse",
    respond: () => [404, { error: "unknown session" }],
  });
  last().fail();
  await settle();
  assert.deepEqual(http.calls, [{ url: "http://example.test/events?session=s1", method: "GET" }]);
  assert.equal(stream.state, "closed");
});

test("a probe that fails or answers otherwise keeps reconnecting", async () => {
  let answer = () => Promise.reject(new TypeError("fetch failed"));
  const { stream, clock, sockets, last, http } = await setup({ respond: () => answer() });
  last().drop();
  await settle();
  clock.advance(250);
  assert.equal(sockets.length, 2);
  answer = () => [503, { error: "backend away" }];
  last().drop();
  await settle();
  clock.advance(500);
  assert.equal(sockets.length, 3);
  assert.equal(http.calls.length, 2);
  assert.equal(stream.state, "reconnecting");
  stream.close();
});

test("a drop after the connection was live is not probed", async () => {
  const { stream, clock, sockets, last, http } = await setup({ respond: () => [404, {}] });
  last().accept();
  last().drop();
  clock.advance(250);
  assert.equal(sockets.length, 2);
  assert.equal(http.calls.length, 0);
  stream.close();
});

test("close stops everything: no reconnect, no timer, no late callback", async () => {
  const { stream, clock, sockets, last, seen } = await setup();
  last().accept();
  last().frame(status(1));
  const socket = last();
  stream.close();
  stream.close(); // idempotent
  assert.equal(socket.closedByClient, true);
  assert.deepEqual(clock.pending(), []);
  socket.frame(status(2)); // a late frame of the closed socket
  socket.drop();
  clock.advance(600_000);
  assert.equal(sockets.length, 1);
  assert.deepEqual(seen.statuses, [1]);
  assert.deepEqual(seen.states, ["connecting", "live", "closed"]);
});

test("close during a backoff wait or a probe cancels the reconnect", async () => {
  const waiting = await setup();
  waiting.last().drop();
  await settle();
  assert.equal(waiting.clock.pending().length, 1);
  waiting.stream.close();
  assert.deepEqual(waiting.clock.pending(), []);

  let answer;
  const probing = await setup({ respond: () => new Promise((resolve) => { answer = resolve; }) });
  probing.last().drop();
  await settle();
  probing.stream.close();
  answer([400, {}]);
  await settle();
  probing.clock.advance(600_000);
  assert.equal(probing.sockets.length, 1);
  assert.equal(probing.stream.state, "closed");
});

test("close before the start opens nothing", async () => {
  const { connect } = await import("../status-messenger.js");
  const { fakeWebSocket, fakeWindow } = await import("../testing/fakes.js");
  const WebSocket = fakeWebSocket();
  const stream = connect({ session: "s1", WebSocket, window: fakeWindow() });
  stream.close();
  await settle();
  assert.equal(WebSocket.instances.length, 0);
  assert.equal(stream.state, "closed");
});

test("a constructor that throws ends the stream with the error, reported", async () => {
  const reported = [];
  const previous = globalThis.reportError;
  globalThis.reportError = (err) => reported.push(err.message);
  try {
    class Refusing {
      constructor() {
        throw new Error("SecurityError: insecure WebSocket from an https page");
      }
    }
    const { stream, clock, seen } = await setup({ WebSocket: Refusing });
    assert.equal(stream.state, "closed");
    assert.equal(seen.details[0].reason, "error");
    assert.match(seen.details[0].error.message, /SecurityError/);
    assert.deepEqual(reported, ["SecurityError: insecure WebSocket from an https page"]);
    assert.deepEqual(clock.pending(), []);
  } finally {
    if (previous === undefined) delete globalThis.reportError;
    else globalThis.reportError = previous;
  }
});

test("a resume point the server no longer has (400 with a lower head) closes the stream", async () => {
  const { stream, clock, last, http, seen } = await setup({
    respond: (url) =>
      url.includes("/events")
        ? [400, { error: "resume point 3 is beyond the session's newest status, 1", head: 1 }]
        : [400, { error: "expected a WebSocket upgrade request" }],
  });
  last().accept();
  for (const seq of [1, 2, 3]) last().frame(status(seq));
  last().drop(); // live: reconnects without asking
  clock.advance(250);
  last().drop(); // refused before it opened: asks why, with its resume point
  await settle();
  assert.deepEqual(http.calls, [
    { url: "http://example.test/events?session=s1&last_event_id=3", method: "GET" },
  ]);
  assert.equal(stream.state, "closed");
  assert.deepEqual(seen.details.at(-1), { reason: "resume-refused", head: 1 });
  assert.equal(stream.lastSeq, 3);
  clock.advance(600_000);
  assert.equal(http.calls.length, 1);
});

test("a plain 400 on the resuming probe is an ordinary failure: it reconnects", async () => {
  const { stream, clock, sockets, last, http } = await setup({
    respond: () => [400, { error: "expected a WebSocket upgrade request" }],
  });
  last().accept();
  last().frame(status(1));
  last().drop();
  clock.advance(250);
  last().drop();
  await settle();
  assert.equal(http.calls.length, 1);
  assert.equal(stream.state, "reconnecting");
  clock.advance(1_000);
  assert.equal(sockets.length, 3);
  stream.close();
});
