//! The cases of tasks, cancel and structured fields: task frames on every change and first on
//! every connect and resume, cancel by `POST` and by the WebSocket frame, streams that close
//! without cancelling, and the optional status fields on both transports.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use reqwest::StatusCode;
use serde_json::{json, Value};
use status_messenger::web::Endpoints;
use status_messenger::{JsonData, Level, StatusMessage};
use tokio_tungstenite::tungstenite::Message;

use super::*;

/// Reads frames (task frames included) until `task`'s frame in `state`; returns what came
/// before it and that frame.
pub(crate) async fn ws_until_task(ws: &mut Ws, task: &str, state: &str) -> (Vec<Value>, Value) {
    let mut before = Vec::new();
    loop {
        let frame = ws_next_any(ws)
            .await
            .unwrap_or_else(|| panic!("stream ended before {task} was {state}: {before:?}"));
        if frame["type"] == "task" && frame["task"] == task && frame["state"] == state {
            return (before, frame);
        }
        before.push(frame);
    }
}

/// [`ws_until_task`] on SSE: events as JSON, each checked for the SSE shape of its kind.
pub(crate) async fn sse_until_task(sse: &mut Sse, task: &str, state: &str) -> (Vec<Value>, Value) {
    let mut before = Vec::new();
    loop {
        let event = sse
            .next_any()
            .await
            .unwrap_or_else(|| panic!("stream ended before {task} was {state}: {before:?}"));
        let frame = event.json();
        check_sse_shape(&event, &frame);
        if frame["type"] == "task" && frame["task"] == task && frame["state"] == state {
            return (before, frame);
        }
        before.push(frame);
    }
}

/// A task frame is `event: task` with no `id:`; a status has no event name and its seq as id.
fn check_sse_shape(event: &SseEvent, frame: &Value) {
    if frame["type"] == "task" {
        assert_eq!(event.event.as_deref(), Some("task"), "{frame}");
        assert_eq!(
            event.id, None,
            "a task frame carries no resume point: {frame}"
        );
    } else if frame["type"] != "gap" {
        assert_eq!(event.event, None, "{frame}");
        assert_eq!(event.id, Some(frame["seq"].to_string()), "{frame}");
    }
}

/// Asserts a task frame of `session`'s `task` in `state`, with exactly the contract's fields.
fn assert_task_frame(frame: &Value, session: &str, task: &str, state: &str) -> u64 {
    assert_eq!(frame["type"], "task", "{frame}");
    assert_eq!(frame["session"], session, "{frame}");
    assert_eq!(frame["task"], task, "{frame}");
    assert_eq!(frame["state"], state, "{frame}");
    assert!(
        frame.get("seq").is_none(),
        "task frames carry no seq: {frame}"
    );
    let fields: Vec<&str> = frame
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields.len(),
        5,
        "type, session, task, state, last_seq: {frame}"
    );
    frame["last_seq"].as_u64().expect("last_seq")
}

/// Asserts step `step` of `total` of `task` as the simulated tool sends it: seq `seq`, the
/// task and the progress, and no other optional field.
fn assert_step(frame: &Value, task: &str, seq: u64, step: u64, total: u64) {
    assert_eq!(frame["seq"], seq, "{frame}");
    assert_eq!(frame["task"], task, "{frame}");
    assert_eq!(
        frame["progress"],
        json!({ "current": step, "total": total }),
        "{frame}"
    );
    let text = frame["text"].as_str().expect("text");
    assert!(
        text.starts_with(&format!("step {step}/{total} t_ns=")),
        "{frame}"
    );
    for absent in ["level", "key", "data", "type"] {
        assert!(frame.get(absent).is_none(), "no {absent}: {frame}");
    }
}

/// The `t_ns` of a step's text.
fn t_ns_of(frame: &Value) -> u128 {
    let text = frame["text"].as_str().expect("text");
    let (_, t_ns) = text.rsplit_once("t_ns=").expect("a t_ns");
    t_ns.parse().expect("t_ns is an integer")
}

/// Asserts that no status of `task` follows its first `cancelling` or `cancelled` frame.
fn assert_nothing_after_the_cancel(frames: &[Value], task: &str) {
    let Some(at) = frames
        .iter()
        .position(|f| f["type"] == "task" && f["task"] == task && f["state"] != "running")
    else {
        return;
    };
    let late: Vec<&Value> = frames[at..]
        .iter()
        .filter(|f| f.get("type").is_none() && f["task"] == task)
        .collect();
    assert!(late.is_empty(), "statuses after the cancel: {late:?}");
}

pub(crate) async fn task_frames_come_first_and_on_every_change_over_ws(start: StartFn) {
    let server = start();
    let id = create_session(&server).await;
    let mut ws = ws_connect(&server, &id, None).await;
    let task = start_task(&server, &id, 3, 0).await;
    let running = ws_next_any(&mut ws).await.expect("the running frame");
    assert_eq!(assert_task_frame(&running, &id, &task, "running"), 0);
    for step in 1..=3 {
        let frame = ws_next_any(&mut ws).await.expect("a step");
        assert_step(&frame, &task, step, step, 3);
    }
    let finished = ws_next_any(&mut ws).await.expect("the finished frame");
    assert_eq!(assert_task_frame(&finished, &id, &task, "finished"), 3);

    // Every connect and every resume starts with the known tasks, before the history.
    let mut again = ws_connect(&server, &id, None).await;
    assert_eq!(ws_next_any(&mut again).await.as_ref(), Some(&finished));
    for step in 1..=3 {
        let frame = ws_next_any(&mut again).await.expect("history");
        assert_step(&frame, &task, step, step, 3);
    }
    let mut resumed = ws_connect(&server, &id, Some(2)).await;
    assert_eq!(ws_next_any(&mut resumed).await.as_ref(), Some(&finished));
    assert_step(
        &ws_next_any(&mut resumed).await.expect("status 3"),
        &task,
        3,
        3,
        3,
    );

    // A second task: its changes reach the open stream, and both are in the next snapshot.
    let second = start_task(&server, &id, 1, 0).await;
    let (before, _) = ws_until_task(&mut again, &second, "finished").await;
    assert_eq!(before.len(), 2, "running and the one step: {before:?}");
    assert_task_frame(&before[0], &id, &second, "running");
    assert_step(&before[1], &second, 4, 1, 1);
    let mut late = ws_connect(&server, &id, Some(4)).await;
    let snapshot = [
        ws_next_any(&mut late).await.expect("a task frame"),
        ws_next_any(&mut late).await.expect("a task frame"),
    ];
    let mut tasks: Vec<&str> = snapshot
        .iter()
        .map(|f| {
            assert_task_frame(f, &id, f["task"].as_str().unwrap_or(""), "finished");
            f["task"].as_str().unwrap_or("")
        })
        .collect();
    tasks.sort_unstable();
    let mut expected = vec![task.as_str(), second.as_str()];
    expected.sort_unstable();
    assert_eq!(tasks, expected);
    ws_quiet(&mut late, Duration::from_millis(100)).await;
}

pub(crate) async fn task_frames_come_first_and_on_every_change_over_sse(start: StartFn) {
    let server = start();
    let id = create_session(&server).await;
    let query = format!("session={id}");
    let mut sse = sse_connect(&server, &query, None).await;
    let task = start_task(&server, &id, 3, 0).await;
    let (before, finished) = sse_until_task(&mut sse, &task, "finished").await;
    assert_eq!(assert_task_frame(&finished, &id, &task, "finished"), 3);
    assert_eq!(before.len(), 4, "running, then three steps: {before:?}");
    assert_eq!(assert_task_frame(&before[0], &id, &task, "running"), 0);
    for step in 1..=3 {
        assert_step(&before[step as usize], &task, step, step, 3);
    }
    // A resume by Last-Event-ID, and one by the query: the task first, then the rest.
    for (query, header) in [
        (query.clone(), Some("2")),
        (format!("{query}&last_event_id=2"), None),
    ] {
        let mut resumed = sse_connect(&server, &query, header).await;
        let first = resumed.next_any().await.expect("the task event");
        check_sse_shape(&first, &first.json());
        assert_eq!(first.json(), finished);
        let status = resumed.next_any().await.expect("status 3");
        check_sse_shape(&status, &status.json());
        assert_step(&status.json(), &task, 3, 3, 3);
    }
}

/// `path(session, task)` is a cancel endpoint: `POST /cancel?...`, or the demos' own.
pub(crate) async fn cancel_stops_the_tool_before_its_next_step(
    start: StartFn,
    path: fn(&str, &str) -> String,
) {
    const DELAY_MS: u64 = 50;
    let server = start();
    let id = create_session(&server).await;
    let mut ws = ws_connect(&server, &id, None).await;
    let mut sse = sse_connect(&server, &format!("session={id}"), None).await;
    let task = start_task(&server, &id, 200, DELAY_MS).await;
    let (before, _) = ws_until_task(&mut ws, &task, "running").await;
    assert!(before.is_empty(), "{before:?}");
    let steps_seen = ws_take(&mut ws, 2).await;
    assert_step(&steps_seen[1], &task, 2, 2, 200);

    let asked = Instant::now();
    let asked_ns = now_ns();
    let (status, answer) = post_json(&server, &path(&id, &task)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["task"], task.as_str());
    assert!(
        answer["state"] == "cancelling" || answer["state"] == "cancelled",
        "{answer}"
    );
    let (frames, cancelled) = ws_until_task(&mut ws, &task, "cancelled").await;
    let took = asked.elapsed();
    let last_seq = assert_task_frame(&cancelled, &id, &task, "cancelled");
    assert_nothing_after_the_cancel(&frames, &task);
    // The tool stops before its next step: at most the step already under way was taken after
    // the request (by its `t_ns`), and the end is nowhere near the 10 s the whole task takes.
    let statuses: Vec<&Value> = frames.iter().filter(|f| f.get("type").is_none()).collect();
    let after_request = statuses.iter().filter(|f| t_ns_of(f) > asked_ns).count();
    assert!(after_request <= 1, "steps after the cancel: {statuses:?}");
    let last_status = statuses
        .last()
        .map_or(2, |f| f["seq"].as_u64().expect("seq"));
    assert_eq!(
        last_seq, last_status,
        "the end comes after the last accepted step"
    );
    assert!(
        took < Duration::from_millis(DELAY_MS) + Duration::from_secs(2),
        "cancelled after {took:?}"
    );
    // The other transport tells the same end, with nothing of the task after it either.
    let (sse_frames, sse_cancelled) = sse_until_task(&mut sse, &task, "cancelled").await;
    assert_eq!(sse_cancelled, cancelled);
    assert_nothing_after_the_cancel(&sse_frames, &task);
    ws_quiet(&mut ws, Duration::from_millis(3 * DELAY_MS)).await;

    // Idempotent: the state it ended in, and nothing changes.
    let (status, again) = post_json(&server, &path(&id, &task)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(again, json!({ "task": task, "state": "cancelled" }));
    // A finished task answers its own end.
    let done = start_task(&server, &id, 1, 0).await;
    ws_until_task(&mut ws, &done, "finished").await;
    let (status, answer) = post_json(&server, &path(&id, &done)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(answer, json!({ "task": done, "state": "finished" }));
    // Another session's task, an unknown task, an unknown session: 404 JSON.
    let other = create_session(&server).await;
    let mut unknown_session = id.clone().into_bytes();
    unknown_session[0] = if unknown_session[0] == b'0' {
        b'1'
    } else {
        b'0'
    };
    let unknown_session = String::from_utf8(unknown_session).expect("ascii");
    for (session, task) in [
        (other.as_str(), task.as_str()),
        (id.as_str(), "0123456789abcdef0123456789abcdef"),
        (unknown_session.as_str(), task.as_str()),
    ] {
        let (status, body) = post_json(&server, &path(session, task)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{session} {task}: {body}");
        assert!(body["error"].is_string(), "{body}");
    }
}

pub(crate) async fn post_cancel_stops_the_tool(start: StartFn) {
    cancel_stops_the_tool_before_its_next_step(start, |session, task| {
        format!("/cancel?session={session}&task={task}")
    })
    .await;
}

pub(crate) async fn demo_cancel_route_stops_the_tool(start: StartFn) {
    cancel_stops_the_tool_before_its_next_step(start, |session, task| {
        format!("/api/sessions/{session}/tasks/{task}/cancel")
    })
    .await;
}

/// A session that keeps starting slow tasks is refused with 429 and `Retry-After` once it runs
/// its most at once, and another session's task still starts and delivers at once.
pub(crate) async fn one_sessions_tasks_cannot_starve_another(start: StartFn) {
    let server = start();
    let greedy = create_session(&server).await;
    let body = json!({ "steps": 100, "delay_ms": 60_000 }).to_string();
    let mut started = Vec::new();
    let refused = loop {
        let res = post_task_raw(&server, &greedy, body.clone()).await;
        if res.status() != StatusCode::ACCEPTED {
            break res;
        }
        let answer: Value = res.json().await.expect("JSON body");
        started.push(answer["task"].as_str().expect("a task id").to_owned());
        assert!(started.len() <= 64, "no cap after {} tasks", started.len());
    };
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after = refused.headers().get("retry-after").cloned();
    let message = expect_error(refused, StatusCode::TOO_MANY_REQUESTS).await;
    assert!(
        retry_after.is_some_and(|value| value.to_str().is_ok_and(|v| v.parse::<u64>().is_ok())),
        "429 tells when to try again ({message})"
    );
    let other = create_session(&server).await;
    let mut ws = ws_connect(&server, &other, None).await;
    let asked = Instant::now();
    start_task(&server, &other, 1, 0).await;
    let frames = ws_take(&mut ws, 1).await;
    assert_steps(&frames, &other, 1, 1);
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "the other session's step took {:?}",
        asked.elapsed()
    );
    for task in started {
        let (status, _) = post_json(
            &server,
            &format!("/api/sessions/{greedy}/tasks/{task}/cancel"),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
}

pub(crate) async fn ws_cancel_frame_stops_only_the_sockets_own_sessions_task(start: StartFn) {
    let server = start();
    let a = create_session(&server).await;
    let b = create_session(&server).await;
    let mut ws_a = ws_connect(&server, &a, None).await;
    let mut ws_b = ws_connect(&server, &b, None).await;
    let task = start_task(&server, &a, 200, 30).await;
    ws_take(&mut ws_a, 1).await;

    // From the other session's socket, the cancel is ignored; the pong after it shows the
    // socket has read it.
    let cancel = json!({ "type": "cancel", "task": task }).to_string();
    ws_b.send(Message::text(cancel.clone()))
        .await
        .expect("send");
    ws_b.send(Message::Ping(b"read?".to_vec().into()))
        .await
        .expect("ping");
    loop {
        match ws_b.next().await {
            Some(Ok(Message::Pong(_))) => break,
            Some(Ok(_)) => {}
            other => panic!("no pong: {other:?}"),
        }
    }
    let mut check = ws_connect(&server, &a, None).await;
    let state = ws_next_any(&mut check).await.expect("the snapshot");
    assert_task_frame(&state, &a, &task, "running");
    let more = ws_take(&mut ws_a, 2).await;
    assert!(more.iter().all(|f| f["task"] == task.as_str()), "{more:?}");

    // From its own session's socket, it stops the task.
    ws_a.send(Message::text(cancel)).await.expect("send");
    let (frames, _) = ws_until_task(&mut ws_a, &task, "cancelled").await;
    assert!(
        frames
            .iter()
            .any(|f| f["type"] == "task" && f["state"] == "cancelling"),
        "cancelling before cancelled: {frames:?}"
    );
    assert_nothing_after_the_cancel(&frames, &task);
    let (status, answer) = post_json(&server, &format!("/cancel?session={a}&task={task}")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(answer["state"], "cancelled");
    // The other session saw nothing of it.
    ws_quiet(&mut ws_b, Duration::from_millis(50)).await;
}

pub(crate) async fn closing_or_reloading_streams_never_cancels(start: StartFn) {
    let server = start();
    let id = create_session(&server).await;
    let mut ws = ws_connect(&server, &id, None).await;
    let task = start_task(&server, &id, 12, 20).await;
    ws_take(&mut ws, 2).await;
    drop(ws); // a reload
    let mut sse = sse_connect(&server, &format!("session={id}"), None).await;
    sse.take(3).await;
    drop(sse);
    let mut ws = ws_connect(&server, &id, Some(3)).await;
    let (frames, finished) = ws_until_task(&mut ws, &task, "finished").await;
    assert_eq!(assert_task_frame(&finished, &id, &task, "finished"), 12);
    let seqs: Vec<u64> = frames.iter().filter_map(|f| f["seq"].as_u64()).collect();
    assert_eq!(seqs, (4..=12).collect::<Vec<_>>());
    assert!(
        frames
            .iter()
            .all(|f| f["type"] != "task" || f["state"] == "running"),
        "{frames:?}"
    );
}

/// Statuses with every optional field, and without any, published into the test's hub.
pub(crate) async fn structured_fields_reach_both_transports_and_resumes(start_with: StartWithFn) {
    let hub = private_hub(1000);
    let server = start_with(Endpoints::new(hub.clone()));
    let id = create_session(&server).await;
    hub.publish(Some(&id), "plain").unwrap();
    let data = JsonData::new(r#"{ "url": "https://example.com/a?b=\"c\"", "n": [1, 2.5, null] }"#)
        .unwrap();
    hub.publish_message(
        Some(&id),
        StatusMessage::new("Reading\npage 3")
            .progress(3, 10)
            .level(Level::Warn)
            .key("reading")
            .data(data),
    )
    .unwrap();
    hub.publish_message(Some(&id), StatusMessage::new("oops").level(Level::Error))
        .unwrap();
    let expected = [
        json!({ "session": id, "seq": 1, "text": "plain" }),
        json!({
            "session": id, "seq": 2, "text": "Reading\npage 3",
            "progress": { "current": 3, "total": 10 }, "level": "warn", "key": "reading",
            "data": { "url": "https://example.com/a?b=\"c\"", "n": [1, 2.5, null] },
        }),
        json!({ "session": id, "seq": 3, "text": "oops", "level": "error" }),
    ];
    let mut ws = ws_connect(&server, &id, None).await;
    assert_eq!(ws_take(&mut ws, 3).await, expected);
    let mut resumed = ws_connect(&server, &id, Some(1)).await;
    assert_eq!(ws_take(&mut resumed, 2).await, expected[1..]);
    let mut sse = sse_connect(&server, &format!("session={id}"), None).await;
    let events = sse.take(3).await;
    for (event, expected) in events.iter().zip(&expected) {
        check_sse_shape(event, expected);
        assert_eq!(&event.json(), expected);
        assert!(!event.data.contains('\n'), "one data line");
    }
    let mut sse = sse_connect(&server, &format!("session={id}"), Some("2")).await;
    assert_eq!(sse.next().await.expect("status 3").json(), expected[2]);
}
