// What the callbacks see of the frames: each seq once, each missing range once, tasks as sent.

import test from "node:test";
import assert from "node:assert/strict";
import { setup, settle } from "../testing/fakes.js";

const status = (seq, extra = {}) => ({ session: "s1", seq, text: `step ${seq}`, ...extra });

test("statuses arrive in seq order with their fields, and lastSeq follows", async () => {
  const { stream, last, seen } = await setup();
  last().accept();
  last().frame(status(1, { task: "t1", progress: { current: 1, total: 2 }, level: "info" }));
  last().frame({ ...status(2), type: "status" });
  assert.deepEqual(seen.statuses, [1, 2]);
  assert.equal(stream.lastSeq, 2);
  assert.deepEqual(seen.gaps, []);
  stream.close();
});

test("a seq already seen is never delivered twice, across reconnects", async () => {
  const { stream, clock, sockets, last, seen } = await setup();
  last().accept();
  for (const seq of [1, 2, 3]) last().frame(status(seq));
  last().frame(status(2)); // a duplicate on the same connection
  last().drop();
  clock.advance(250);
  assert.equal(sockets.length, 2);
  last().accept();
  for (const seq of [2, 3, 4]) last().frame(status(seq)); // a server replaying too much
  assert.deepEqual(seen.statuses, [1, 2, 3, 4]);
  assert.deepEqual(seen.gaps, []);
  stream.close();
});

test("a jump in seq reports the missing range once, before the status", async () => {
  const order = [];
  const { stream, last, seen } = await setup({
    onGap: (g) => order.push(`gap ${g.from}-${g.to} lastSeq=${stream.lastSeq}`),
    onStatus: (f) => order.push(`status ${f.seq} lastSeq=${stream.lastSeq}`),
  });
  last().accept();
  last().frame(status(1));
  last().frame(status(4));
  last().frame(status(3)); // late and already covered by the gap
  assert.deepEqual(order, ["status 1 lastSeq=1", "gap 2-3 lastSeq=3", "status 4 lastSeq=4"]);
  assert.equal(stream.lastSeq, 4);
  assert.deepEqual(seen.gaps, []); // the overriding callbacks replaced the recording ones
  stream.close();
});

test("a gap frame reports only what lies above lastSeq, once", async () => {
  const { stream, last, seen } = await setup();
  last().accept();
  for (const seq of [1, 2, 3]) last().frame(status(seq));
  last().frame({ type: "gap", from: 2, to: 5 }); // overlaps what was seen
  last().frame({ type: "gap", from: 4, to: 5 }); // the same range again
  last().frame({ type: "gap", from: 1, to: 3 }); // entirely below
  last().frame(status(5)); // covered by the gap
  last().frame(status(6));
  last().frame({ type: "gap", from: 9, to: 10 }); // 7 and 8 were not seen either
  assert.deepEqual(seen.gaps, [[4, 5], [7, 10]]);
  assert.deepEqual(seen.statuses, [1, 2, 3, 6]);
  assert.equal(stream.lastSeq, 10);
  stream.close();
});

test("statuses and gaps cover every seq exactly once, from `after`", async () => {
  const { stream, last, seen } = await setup({ after: 10 });
  assert.match(last().url, /[?&]after=10(&|$)/);
  last().accept();
  last().frame(status(9)); // at or below `after`: the caller had it already
  last().frame({ type: "gap", from: 11, to: 12 });
  last().frame(status(14));
  last().frame(status(15));
  const covered = [...seen.statuses];
  for (const [from, to] of seen.gaps) for (let s = from; s <= to; s++) covered.push(s);
  assert.deepEqual(covered.sort((a, b) => a - b), [11, 12, 13, 14, 15]);
  stream.close();
});

test("task frames are delivered as they come, with no effect on seq", async () => {
  const { stream, last, seen } = await setup();
  last().accept();
  const task = { type: "task", session: "s1", task: "t1", state: "running", last_seq: 0 };
  last().frame(task);
  last().frame({ ...task, state: "cancelled", last_seq: 3 });
  assert.deepEqual(seen.tasks.map((t) => t.state), ["running", "cancelled"]);
  assert.deepEqual(seen.tasks[0], task);
  assert.equal(stream.lastSeq, 0);
  stream.close();
});

test("unknown frame types, keep-alives and frames that are not status JSON are ignored", async () => {
  const { stream, last, seen } = await setup();
  last().accept();
  last().frame({ type: "keepalive" });
  last().frame({ type: "presence", seq: 7, text: "not a status" });
  last().frame("not json {");
  last().frame("null");
  last().frame("42");
  last().frame({ session: "s1", text: "no seq" });
  last().frame({ session: "s1", seq: "3", text: "a string seq" });
  last().frame({ type: "gap", from: "a", to: 3 });
  last().onmessage({ data: new ArrayBuffer(4) }); // a binary frame
  assert.deepEqual(seen.statuses, []);
  assert.deepEqual(seen.gaps, []);
  assert.deepEqual(seen.tasks, []);
  assert.equal(stream.lastSeq, 0);
  last().frame(status(1));
  assert.deepEqual(seen.statuses, [1]);
  stream.close();
});

test("a throwing callback is reported and does not break the stream", async () => {
  const reported = [];
  const previous = globalThis.reportError;
  globalThis.reportError = (err) => reported.push(err.message);
  try {
    const seqs = [];
    const { stream, last } = await setup({
      onStatus: (f) => {
        seqs.push(f.seq);
        if (f.seq === 1) throw new Error("page bug");
      },
    });
    last().accept();
    last().frame(status(1));
    last().frame(status(2));
    assert.deepEqual(seqs, [1, 2]);
    assert.deepEqual(reported, ["page bug"]);
    assert.equal(stream.lastSeq, 2);
    stream.close();
  } finally {
    if (previous === undefined) delete globalThis.reportError;
    else globalThis.reportError = previous;
  }
});

test("where there is no reportError (node 20), a throwing callback goes to the console", async () => {
  const logged = [];
  const previous = globalThis.reportError;
  const error = console.error;
  delete globalThis.reportError;
  console.error = (...args) => logged.push(args);
  try {
    const { stream, last } = await setup({
      onStatus: (f) => {
        if (f.seq === 1) throw new Error("page bug");
      },
    });
    last().accept();
    last().frame(status(1));
    last().frame(status(2));
    await settle(); // nothing is thrown later either
    assert.equal(logged.length, 1);
    assert.equal(logged[0][1].message, "page bug");
    assert.equal(stream.lastSeq, 2);
    assert.equal(stream.state, "live");
    stream.close();
  } finally {
    console.error = error;
    if (previous !== undefined) globalThis.reportError = previous;
  }
});
