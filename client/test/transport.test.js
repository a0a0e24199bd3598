// The two transports: their URLs, SSE's events and errors, cancel over each, and what connect
// refuses.

import test from "node:test";
import assert from "node:assert/strict";
import { connect } from "../status-messenger.js";
import { setup, settle, fakeWebSocket, fakeEventSource, fakeWindow } from "../testing/fakes.js";

const status = (seq) => ({ session: "s1", seq, text: `step ${seq}` });

test("URLs follow the page's origin and scheme, or base", async () => {
  const cases = [
    [{}, "http://example.test/app/", "ws://example.test/ws?session=s1"],
    [{}, "https://example.test/app/", "wss://example.test/ws?session=s1"],
    [{ base: "/status/" }, "https://example.test/app/", "wss://example.test/status/ws?session=s1"],
    [{ base: "https://api.test:8443/x" }, "http://example.test/", "wss://api.test:8443/x/ws?session=s1"],
    [{ base: "ws://api.test" }, "https://example.test/", "ws://api.test/ws?session=s1"],
    [{ session: "a b&c" }, "http://example.test/", "ws://example.test/ws?session=a+b%26c"],
    [{ transport: "sse", base: "/p" }, "https://example.test/", "https://example.test/p/events?session=s1"],
    [{ transport: "sse", after: 7 }, "http://example.test/", "http://example.test/events?session=s1&last_event_id=7"],
    [{ transport: "sse", base: "wss://api.test" }, "http://example.test/", "https://api.test/events?session=s1"],
  ];
  for (const [options, href, expected] of cases) {
    const { stream, last } = await setup({ ...options, href });
    assert.equal(last().url, expected, JSON.stringify(options));
    stream.close();
  }
});

test("in node an absolute base is enough, with no page at all", async () => {
  const WebSocket = fakeWebSocket();
  const stream = connect({ session: "s1", base: "http://127.0.0.1:3000", WebSocket, window: {} });
  await settle();
  assert.equal(WebSocket.instances[0].url, "ws://127.0.0.1:3000/ws?session=s1");
  stream.close();
});

test("SSE: statuses, gap and task events, each once", async () => {
  const { stream, last, seen } = await setup({ transport: "sse" });
  last().accept();
  last().event("task", { type: "task", session: "s1", task: "t1", state: "running", last_seq: 0 });
  last().event("message", status(1));
  last().event("gap", { type: "gap", from: 2, to: 3 });
  last().event("gap", { from: 2, to: 4 }); // the event name alone says it is a gap
  last().event("message", status(4));
  last().event("message", status(6));
  last().event("presence", { who: "someone" }); // not listened to
  assert.deepEqual(seen.statuses, [1, 6]);
  assert.deepEqual(seen.gaps, [[2, 3], [4, 4], [5, 5]]);
  assert.deepEqual(seen.tasks.map((t) => t.state), ["running"]);
  assert.equal(stream.lastSeq, 6);
  stream.close();
});

test("SSE: an error closes the EventSource and reconnects here, after lastSeq", async () => {
  const { stream, clock, sockets, last, seen } = await setup({ transport: "sse" });
  last().accept();
  for (const seq of [1, 2]) last().event("message", status(seq));
  const first = last();
  first.fail();
  // Closed at once, so EventSource's own retry (with its own Last-Event-ID) never happens.
  assert.equal(first.closedByClient, true);
  assert.equal(stream.state, "reconnecting");
  clock.advance(250);
  assert.equal(sockets.length, 2);
  assert.equal(last().url, "http://example.test/events?session=s1&last_event_id=2");
  last().accept();
  for (const seq of [2, 3]) last().event("message", status(seq));
  first.event("message", status(9)); // the old source is no longer listened to
  assert.deepEqual(seen.statuses, [1, 2, 3]);
  assert.deepEqual(seen.states, ["connecting", "live", "reconnecting", "live"]);
  stream.close();
});

test("a new stream on the other transport resumes after the old one's lastSeq", async () => {
  const ws = await setup();
  ws.last().accept();
  for (const seq of [1, 2, 3]) ws.last().frame(status(seq));
  ws.stream.close();
  const sse = await setup({ transport: "sse", after: ws.stream.lastSeq });
  assert.equal(sse.last().url, "http://example.test/events?session=s1&last_event_id=3");
  sse.last().accept();
  for (const seq of [3, 4]) sse.last().event("message", status(seq));
  assert.deepEqual(sse.seen.statuses, [4]);
  sse.stream.close();
});

test("cancel on an open WebSocket sends the cancel frame", async () => {
  const { stream, last, http } = await setup();
  last().accept();
  assert.deepEqual(await stream.cancel("t1"), { task: "t1", sent: true });
  assert.deepEqual(last().sent, [{ type: "cancel", task: "t1" }]);
  assert.equal(http.calls.length, 0);
  stream.close();
});

test("cancel on SSE, or while the WebSocket is down, posts to /cancel", async () => {
  const respond = (url, init) =>
    init.method === "POST" ? [202, { task: "t1", state: "cancelling" }] : [400, {}];
  const sse = await setup({ transport: "sse", base: "/p", respond });
  sse.last().accept();
  assert.deepEqual(await sse.stream.cancel("t1"), { task: "t1", state: "cancelling" });
  assert.deepEqual(sse.http.calls, [
    { url: "http://example.test/p/cancel?session=s1&task=t1", method: "POST" },
  ]);
  sse.stream.close();

  const ws = await setup({ respond }); // still connecting: the socket cannot send yet
  assert.deepEqual(await ws.stream.cancel("t1"), { task: "t1", state: "cancelling" });
  assert.deepEqual(ws.last().sent, []);
  assert.equal(ws.http.calls.length, 1);
  ws.stream.close();
  assert.deepEqual(await ws.stream.cancel("t1"), { task: "t1", state: "cancelling" });
});

test("a refused cancel rejects with the status and the server's error", async () => {
  const { stream, last } = await setup({
    transport: "sse",
    respond: () => [404, { error: "unknown task" }],
  });
  last().accept();
  await assert.rejects(stream.cancel("t9"), (err) => {
    assert.equal(err.status, 404);
    assert.deepEqual(err.body, { error: "unknown task" });
    assert.match(err.message, /404: unknown task/);
    return true;
  });
  await assert.rejects(stream.cancel(""), TypeError);
  stream.close();
});

test("connect refuses what it cannot work with, at once", () => {
  const WebSocket = fakeWebSocket();
  const EventSource = fakeEventSource();
  const win = fakeWindow();
  const refuse = (options, pattern) =>
    assert.throws(() => connect({ WebSocket, EventSource, window: win, ...options }), (err) => {
      assert.ok(err instanceof TypeError);
      assert.match(err.message, pattern);
      return true;
    });
  refuse({}, /session is required/);
  refuse({ session: "" }, /session is required/);
  refuse({ session: "s1", transport: "poll" }, /transport/);
  refuse({ session: "s1", after: -1 }, /after/);
  refuse({ session: "s1", after: 1.5 }, /after/);
  refuse({ session: "s1", after: 1e21 }, /safe integer/);
  refuse({ session: "s1", after: 2 ** 60 }, /safe integer/);
  refuse({ session: "s1", base: "http://h/x?q=1" }, /query or a fragment/);
  refuse({ session: "s1", base: "http://h/x#f" }, /query or a fragment/);
  refuse({ session: "s1", window: {} }, /base must be an absolute URL/);
  refuse({ session: "s1", window: fakeWindow("file:///home/page.html") }, /http\(s\) or ws\(s\), not file:/);
  refuse({ session: "s1", transport: "sse", EventSource: null, base: "http://h" }, /no EventSource/);
});

test("without an injected WebSocket, connect uses the global one or says there is none", () => {
  const WebSocket = globalThis.WebSocket;
  try {
    delete globalThis.WebSocket;
    assert.throws(
      () => connect({ session: "s1", base: "http://127.0.0.1:1" }),
      /no WebSocket here; pass options.WebSocket/,
    );
    globalThis.WebSocket = fakeWebSocket();
    const stream = connect({ session: "s1", base: "http://127.0.0.1:1" });
    stream.close();
  } finally {
    if (WebSocket === undefined) delete globalThis.WebSocket;
    else globalThis.WebSocket = WebSocket;
  }
});
