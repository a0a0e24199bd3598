//! The library's endpoints of two hubs sharing one Redis started by the test, each served by
//! an axum server of its own, as two server processes: a status's optional fields reach the
//! other server's WebSocket and SSE streams and resumes unchanged, a task running behind one
//! server has its frames on the other's streams, and a cancel sent to the other server (by
//! `POST /cancel` or the WebSocket frame) stops it.
#![cfg(feature = "redis")]

mod common;
mod support;

use std::time::Duration;

use common::{prefix, RedisServer};
use reqwest::StatusCode;
use serde_json::{json, Value};
use status_messenger::web::Endpoints;
use status_messenger::{
    add_status, is_cancelled, Hub, HubConfig, JsonData, Level, Messenger, RedisConfig,
    StatusMessage,
};
use support::{
    post_json, sse_connect, sse_until_task, ws_connect, ws_next_any, ws_take, ws_until_task,
    Server, Shutdown,
};
use tokio_tungstenite::tungstenite::Message;

const SESSION: &str = "0123456789abcdef0123456789abcdef";

async fn hub(redis: &RedisServer, prefix: &str) -> Hub {
    let mut config = RedisConfig::new(redis.url());
    config.key_prefix = prefix.to_owned();
    Hub::with_redis(HubConfig::default(), config)
        .await
        .expect("connect to redis")
}

/// The endpoints of `hub` on a server of their own.
fn serve(hub: Hub) -> Server {
    let endpoints = Endpoints::new(hub);
    Server::start(move |listener, shutdown: Shutdown| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            axum::serve(listener, endpoints.router::<()>())
                .with_graceful_shutdown(shutdown)
                .await
        })
    })
}

/// A tool that reports a step every few milliseconds until it is cancelled.
fn tool() -> u64 {
    for step in 1..=2_000 {
        if is_cancelled() {
            return step - 1;
        }
        add_status(StatusMessage::new(format!("step {step}")).progress(step, 2_000));
        std::thread::sleep(Duration::from_millis(5));
    }
    2_000
}

/// Runs [`tool`] in a new task of `hub`'s session, feeding `messenger`; its id and its end.
fn start_tool(hub: &Hub, messenger: &Messenger) -> (String, tokio::task::JoinHandle<u64>) {
    let task =
        status_messenger::with_default(messenger, || hub.start_task(SESSION)).expect("a task");
    let id = task.id().to_owned();
    (id, tokio::task::spawn_blocking(move || task.run(tool)))
}

async fn stopped(tool: tokio::task::JoinHandle<u64>) -> u64 {
    let done = tokio::time::timeout(support::WAIT, tool)
        .await
        .expect("the tool stopped")
        .expect("the tool returned");
    assert!(done < 2_000, "stopped early");
    done
}

/// Asserts that no status of `task` follows its first task frame that is not `running`.
fn nothing_after_the_cancel(frames: &[Value], task: &str) {
    let at = frames
        .iter()
        .position(|f| f["type"] == "task" && f["state"] != "running")
        .unwrap_or(frames.len());
    assert!(
        frames[at..]
            .iter()
            .all(|f| f.get("type").is_some() || f["task"] != task),
        "statuses after the cancel: {frames:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_task_frames_and_cancels_cross_servers_through_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let prefix = prefix("web");
    let (a, b) = (hub(&redis, &prefix).await, hub(&redis, &prefix).await);
    let messenger = Messenger::new();
    a.attach(&messenger).expect("attach");
    a.open_session(SESSION).await.expect("a session");
    let (on_a, on_b) = (serve(a.clone()), serve(b.clone()));

    // Fields published through A come out of B's streams and resumes as they went in.
    let mut ws_b = ws_connect(&on_b, SESSION, None).await;
    let mut sse_b = sse_connect(&on_b, &format!("session={SESSION}"), None).await;
    a.publish(Some(SESSION), "plain").unwrap();
    let data = JsonData::new(r#"{"url": "https://example.com", "n": [1, 2]}"#).unwrap();
    let full = StatusMessage::new("Reading\npage 3")
        .progress(3, 10)
        .level(Level::Warn)
        .key("reading")
        .data(data);
    a.publish_message(Some(SESSION), full).unwrap();
    let expected = [
        json!({ "session": SESSION, "seq": 1, "text": "plain" }),
        json!({
            "session": SESSION, "seq": 2, "text": "Reading\npage 3",
            "progress": { "current": 3, "total": 10 }, "level": "warn", "key": "reading",
            "data": { "url": "https://example.com", "n": [1, 2] },
        }),
    ];
    assert_eq!(ws_take(&mut ws_b, 2).await, expected);
    let events = sse_b.take(2).await;
    assert_eq!(
        events.iter().map(|e| e.json()).collect::<Vec<_>>(),
        expected
    );
    assert_eq!(events[1].id.as_deref(), Some("2"));
    let mut resumed = ws_connect(&on_a, SESSION, Some(1)).await;
    assert_eq!(ws_take(&mut resumed, 1).await, expected[1..]);
    let mut resumed = sse_connect(&on_b, &format!("session={SESSION}"), Some("1")).await;
    assert_eq!(resumed.take(1).await[0].json(), expected[1]);

    // A task running behind A: its frames reach B's streams; a `POST /cancel` to B stops it.
    let mut ws_a = ws_connect(&on_a, SESSION, Some(2)).await;
    let (task, tool_run) = start_tool(&a, &messenger);
    // On every process its `running` frame comes before any of its steps, placed after the
    // last status before it started.
    let (before, running) = ws_until_task(&mut ws_b, &task, "running").await;
    assert!(before.is_empty(), "before running: {before:?}");
    assert_eq!(running["last_seq"], 2, "{running}");
    let (before, sse_running) = sse_until_task(&mut sse_b, &task, "running").await;
    assert!(before.is_empty(), "before running on SSE: {before:?}");
    assert_eq!(sse_running, running);
    let (before, _) = ws_until_task(&mut ws_a, &task, "running").await;
    assert!(before.is_empty(), "before running on A: {before:?}");
    let steps = ws_take(&mut ws_b, 3).await;
    assert!(
        steps.iter().all(|f| f["task"] == task.as_str()),
        "{steps:?}"
    );
    assert_eq!(steps[2]["task"], task.as_str());
    assert_eq!(steps[2]["progress"], json!({ "current": 3, "total": 2000 }));
    let (status, answer) =
        post_json(&on_b, &format!("/cancel?session={SESSION}&task={task}")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["task"], task.as_str());
    stopped(tool_run).await;
    let (frames, cancelled) = ws_until_task(&mut ws_b, &task, "cancelled").await;
    nothing_after_the_cancel(&frames, &task);
    let (sse_frames, sse_cancelled) = sse_until_task(&mut sse_b, &task, "cancelled").await;
    nothing_after_the_cancel(&sse_frames, &task);
    let (frames, _) = ws_until_task(&mut ws_a, &task, "cancelled").await;
    nothing_after_the_cancel(&frames, &task);
    assert_eq!(sse_cancelled, cancelled);
    // A page that connects to A afterwards learns the end from the snapshot.
    let mut late = ws_connect(&on_a, SESSION, cancelled["last_seq"].as_u64()).await;
    assert_eq!(ws_next_any(&mut late).await.as_ref(), Some(&cancelled));

    // The WebSocket cancel frame, sent on B's socket, stops the next task running behind A.
    let (task, tool_run) = start_tool(&a, &messenger);
    let (before, _) = ws_until_task(&mut ws_b, &task, "running").await;
    assert!(
        before.iter().all(|f| f["task"] != task.as_str()),
        "steps before running: {before:?}"
    );
    let steps = ws_take(&mut ws_b, 2).await;
    assert!(
        steps.iter().all(|f| f["task"] == task.as_str()),
        "{steps:?}"
    );
    let frame = json!({ "type": "cancel", "task": task }).to_string();
    futures_util::SinkExt::send(&mut ws_b, Message::text(frame))
        .await
        .expect("send");
    stopped(tool_run).await;
    let (frames, _) = ws_until_task(&mut ws_b, &task, "cancelled").await;
    nothing_after_the_cancel(&frames, &task);
    let (status, answer) =
        post_json(&on_a, &format!("/cancel?session={SESSION}&task={task}")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(answer["state"], "cancelled");
}
