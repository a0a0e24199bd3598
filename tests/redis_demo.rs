//! Two demo server processes (the axum one and the actix one) sharing one Redis started by the
//! test: sessions created and tasks started through one server, statuses received over a
//! WebSocket (and Server-Sent Events) from the other, and resumed on either.
#![cfg(feature = "redis")]

mod common;
mod support;

use std::time::Duration;

use common::RedisServer;
use serde_json::Value;
use status_messenger::hub::metric_names;
use support::demo::both_demos;
use support::{
    assert_steps, create_session, http, sse_connect, start_task, ws_connect, ws_quiet, ws_refused,
    ws_take,
};

/// Asserts that `frames` are statuses `first..` of a task of `total` steps whose step 1 got the
/// number `first`.
fn assert_task(frames: &[Value], session: &str, first: u64, total: u64) {
    for (i, frame) in frames.iter().enumerate() {
        let step = i as u64 + 1;
        assert_eq!(frame["session"], session, "{frame}");
        assert_eq!(frame["seq"], first + i as u64, "{frame}");
        let text = frame["text"].as_str().expect("text");
        assert!(
            text.starts_with(&format!("step {step}/{total} t_ns=")),
            "{frame}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_demo_servers_share_sessions_through_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (on_a, on_b) = both_demos(&["--redis", &redis.url()]).await;

    // Created through A, known to B.
    let id = create_session(&on_a).await;
    let mut ws_b = ws_connect(&on_b, &id, None).await;
    let (status, _) = ws_refused(&on_b, "session=0123456789abcdef0123456789abcdef").await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);

    // The tool runs in A's process; its statuses reach the page connected to B.
    start_task(&on_a, &id, 40, 2).await;
    assert_steps(&ws_take(&mut ws_b, 40).await, &id, 1, 40);

    // The page reloads onto A and resumes after 25: the rest, no duplicate, no gap.
    let mut ws_a = ws_connect(&on_a, &id, Some(25)).await;
    assert_steps(&ws_take(&mut ws_a, 15).await, &id, 26, 40);

    // A task started through B is numbered on from 40 and reaches both pages.
    start_task(&on_b, &id, 10, 0).await;
    assert_task(&ws_take(&mut ws_a, 10).await, &id, 41, 10);
    assert_task(&ws_take(&mut ws_b, 10).await, &id, 41, 10);
    ws_quiet(&mut ws_b, Duration::from_millis(200)).await;

    // Server-Sent Events resume on B from a Last-Event-ID given by A.
    let mut sse = sse_connect(&on_b, &format!("session={id}"), Some("45")).await;
    let events = sse.take(5).await;
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e.json()["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, vec![46, 47, 48, 49, 50]);

    // Each server counts what it published and what it delivered.
    let metrics = http()
        .get(on_a.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains(&format!("{} 40\n", metric_names::ACCEPTED)),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("{} 0\n", metric_names::BACKEND_ERRORS)),
        "{metrics}"
    );

    drop((ws_a, ws_b, sse));
    on_a.stop().await.expect("A stopped cleanly");
    on_b.stop().await.expect("B stopped cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_sent_to_one_demo_server_stops_the_tool_running_on_the_other() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (on_a, on_b) = both_demos(&["--redis", &redis.url()]).await;
    let id = create_session(&on_a).await;
    let mut ws_a = ws_connect(&on_a, &id, None).await;
    let mut ws_b = ws_connect(&on_b, &id, None).await;
    // The tool runs in A's process; Stop is pressed on the page served by B.
    let task = start_task(&on_a, &id, 400, 20).await;
    ws_take(&mut ws_b, 3).await;
    let (status, answer) =
        support::post_json(&on_b, &format!("/api/sessions/{id}/tasks/{task}/cancel")).await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{answer}");
    assert_eq!(answer["task"], task.as_str());
    for ws in [&mut ws_b, &mut ws_a] {
        let (frames, cancelled) = support::ws_until_task(ws, &task, "cancelled").await;
        let stopped_at = cancelled["last_seq"].as_u64().expect("last_seq");
        assert!(stopped_at < 400, "stopped mid-task at {stopped_at}");
        let after_cancelling = frames
            .iter()
            .skip_while(|f| f["type"] != "task" || f["state"] == "running")
            .filter(|f| f.get("type").is_none())
            .count();
        assert_eq!(after_cancelling, 0, "statuses after the cancel: {frames:?}");
    }
    // Either server answers the end from now on.
    let (_, again) = support::post_json(&on_a, &format!("/cancel?session={id}&task={task}")).await;
    assert_eq!(again["state"], "cancelled");
    drop((ws_a, ws_b));
    on_a.stop().await.expect("A stopped cleanly");
    on_b.stop().await.expect("B stopped cleanly");
}

/// With Redis gone, both demos answer session creation and session lookups at once with a 503
/// JSON error telling when to try again, and work again once Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_the_demos_answer_503_with_retry_after_at_once() {
    let Some(mut redis) = RedisServer::start_persistent() else {
        return;
    };
    let (on_a, on_b) = both_demos(&["--redis", &redis.url()]).await;
    let known = create_session(&on_a).await;
    redis.kill();
    for server in [&on_a, &on_b] {
        for (path, body) in [
            ("/api/sessions".to_owned(), String::new()),
            (
                format!("/api/sessions/{known}/tasks"),
                r#"{"steps": 1, "delay_ms": 0}"#.to_owned(),
            ),
        ] {
            // The first call may be the one that finds Redis gone, within the request timeout
            // (250 ms); later ones answer from what it found, well within it.
            for attempt in 0..3 {
                let asked = std::time::Instant::now();
                let res = http()
                    .post(server.url(&path))
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("an answer");
                let took = asked.elapsed();
                let retry_after = res.headers().get("retry-after").cloned();
                let message =
                    support::expect_error(res, reqwest::StatusCode::SERVICE_UNAVAILABLE).await;
                assert!(
                    retry_after.is_some_and(|v| v.to_str().is_ok_and(|v| v.parse::<u64>().is_ok())),
                    "{path}: 503 with Retry-After ({message})"
                );
                let bound = if attempt == 0 {
                    Duration::from_secs(1)
                } else {
                    Duration::from_millis(500)
                };
                assert!(
                    took < bound,
                    "{path} attempt {attempt}: answered after {took:?}"
                );
            }
        }
    }
    redis.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let res = http()
            .post(on_b.url("/api/sessions"))
            .send()
            .await
            .expect("an answer");
        if res.status() == reqwest::StatusCode::CREATED {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no session after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
