//! The cases: [`integration_cases!`] for any server on the library's endpoints,
//! [`demo_cases!`] for the demos, [`endpoint_cases!`] for in-process servers given endpoints
//! of the test's own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::Value;
use status_messenger::hub::metric_names;
use status_messenger::web::{Endpoints, Refusal, RequestInfo};
use status_messenger::SessionId;
use tokio_tungstenite::tungstenite::Message;

use super::*;

// ---------------------------------------------------------------- the cases

pub(crate) async fn page_health_and_unknown_paths(start: StartFn) {
    let server = start();
    let res = http().get(server.url("/")).send().await.expect("GET /");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("text/html"));
    let page = res.text().await.expect("page");
    assert!(page.contains("<script") && page.contains("</html>"));
    // Self-contained: nothing loaded from elsewhere, so it works offline.
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "the page links out"
    );
    assert!(
        !page.contains("innerHTML"),
        "status text must be set as text"
    );

    let res = http()
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("GET /healthz");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().await.expect("body"), "ok");

    let res = http()
        .get(server.url("/no/such/path"))
        .send()
        .await
        .expect("GET unknown");
    expect_error(res, StatusCode::NOT_FOUND).await;
}

pub(crate) async fn sessions_are_random_128_bit_ids(start: StartFn) {
    let server = start();
    let res = http()
        .post(server.url("/api/sessions"))
        .send()
        .await
        .expect("POST");
    assert_eq!(res.status(), StatusCode::CREATED);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("application/json"));
    let a = res.json::<Value>().await.expect("JSON")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let b = create_session(&server).await;
    for id in [&a, &b] {
        assert_eq!(id.len(), 32, "128 bits as hex: {id}");
        assert!(id.bytes().all(|c| c.is_ascii_hexdigit()), "hex: {id}");
    }
    assert_ne!(a, b);
}

pub(crate) async fn task_statuses_arrive_over_ws(start: StartFn) {
    let server = start();
    let id = create_session(&server).await;
    let mut ws = ws_connect(&server, &id, None).await;
    start_task(&server, &id, 25, 0).await;
    let frames = ws_take(&mut ws, 25).await;
    assert_steps(&frames, &id, 1, 25);
    ws_quiet(&mut ws, Duration::from_millis(300)).await;

    // A second task in the same session goes on counting.
    start_task(&server, &id, 3, 120).await;
    let frames = ws_take(&mut ws, 3).await;
    let times = assert_steps_of_second_task(&frames, &id, 26, 3);
    // The tool sleeps `delay_ms` between its calls.
    assert!(
        times[2] - times[0] >= 2 * 120_000_000,
        "delay honoured: {times:?}"
    );
}

fn assert_steps_of_second_task(
    frames: &[Value],
    session: &str,
    first_seq: u64,
    total: u64,
) -> Vec<u128> {
    frames
        .iter()
        .enumerate()
        .map(|(i, frame)| {
            assert_eq!(frame["session"], session);
            assert_eq!(frame["seq"], first_seq + i as u64);
            let text = frame["text"].as_str().expect("text");
            let prefix = format!("step {}/{total} t_ns=", i + 1);
            text.strip_prefix(&prefix)
                .expect("step text")
                .parse()
                .expect("t_ns")
        })
        .collect()
}

pub(crate) async fn task_statuses_arrive_over_sse(start: StartFn) {
    let server = start();
    let id = create_session(&server).await;
    let mut sse = sse_connect(&server, &format!("session={id}"), None).await;
    start_task(&server, &id, 12, 0).await;
    let frames = sse_frames(&sse.take(12).await);
    assert_steps(&frames, &id, 1, 12);
}

pub(crate) async fn metrics_publish_hub_counters(start: StartFn) {
    let server = start();
    let id = create_session(&server).await;
    let mut ws = ws_connect(&server, &id, None).await;
    start_task(&server, &id, 5, 0).await;
    ws_take(&mut ws, 5).await;
    let text = metrics(&server).await;
    // The hub's own names (`hub::metric_names`), through the Prometheus exporter, each the
    // hub's count at the moment of the scrape: the server runs only this test's session.
    assert_eq!(metric(&text, metric_names::SESSIONS), 1);
    assert_eq!(metric(&text, metric_names::SUBSCRIBERS), 1);
    assert_eq!(metric(&text, metric_names::TASKS), 1);
    assert_eq!(metric(&text, metric_names::ACCEPTED), 5);
    assert_eq!(metric(&text, metric_names::DELIVERED), 5);
    // A second scrape right after more statuses were read has them all, with nothing counted
    // twice.
    start_task(&server, &id, 3, 0).await;
    ws_take(&mut ws, 3).await;
    let again = metrics(&server).await;
    assert_eq!(metric(&again, metric_names::TASKS), 2);
    assert_eq!(metric(&again, metric_names::ACCEPTED), 8);
    assert_eq!(metric(&again, metric_names::DELIVERED), 8);
    metric(&text, metric_names::LAGGED);
    metric(&text, metric_names::GAPS);
    metric(
        &text,
        &format!("{}{{reason=\"no_session\"}}", metric_names::DROPPED),
    );
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (_, value) = line.rsplit_once(' ').expect("name value");
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad sample line `{line}`"));
    }
}

/// Ids that name no session: one of a real id's shape never issued, and malformed ones.
fn not_sessions(real: &str) -> Vec<String> {
    let mut unknown: Vec<u8> = real.as_bytes().to_vec();
    unknown[0] = if unknown[0] == b'0' { b'1' } else { b'0' };
    vec![
        String::from_utf8(unknown).expect("ascii"),
        "xyz".to_owned(),
        "..%2F..%2Fetc".to_owned(),
        real[..31].to_owned(),
        format!("{real}0"),
        real.to_uppercase(),
        "%00".to_owned(),
    ]
}

pub(crate) async fn unknown_and_malformed_sessions_are_404_on_every_stream(start: StartFn) {
    let server = start();
    let real = create_session(&server).await;
    for id in not_sessions(&real) {
        let res = sse_request(&server, &format!("session={id}"), None).await;
        expect_error(res, StatusCode::NOT_FOUND).await;
        let (status, body) = ws_refused(&server, &format!("session={id}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "ws {id}");
        assert!(body["error"].is_string());
        // A plain GET (no upgrade headers) gets the same answer.
        let res = http()
            .get(
                server
                    .ws_url(&format!("session={id}"))
                    .replace("ws://", "http://"),
            )
            .send()
            .await
            .expect("GET /ws");
        expect_error(res, StatusCode::NOT_FOUND).await;
        let res = http()
            .post(server.url(&format!("/cancel?session={id}&task=t1")))
            .send()
            .await
            .expect("POST /cancel");
        expect_error(res, StatusCode::NOT_FOUND).await;
    }
    // No session at all.
    expect_error(sse_request(&server, "", None).await, StatusCode::NOT_FOUND).await;
    let (status, _) = ws_refused(&server, "after=3").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let res = http()
        .post(server.url("/cancel?task=t1"))
        .send()
        .await
        .expect("POST /cancel");
    expect_error(res, StatusCode::NOT_FOUND).await;
}

pub(crate) async fn unknown_and_malformed_sessions_are_404_on_task_routes(start: StartFn) {
    let server = start();
    let real = create_session(&server).await;
    for id in not_sessions(&real) {
        let body = r#"{"steps": 1, "delay_ms": 0}"#;
        let error = expect_error(
            post_task_raw(&server, &id, body).await,
            StatusCode::NOT_FOUND,
        )
        .await;
        assert!(
            error.contains("session") || error.contains("not found"),
            "{error}"
        );
    }
    let res = post_task_raw(&server, "", r#"{"steps":1,"delay_ms":0}"#).await;
    expect_error(res, StatusCode::NOT_FOUND).await;
}

pub(crate) async fn bad_task_bodies_are_400_and_change_nothing(start: StartFn) {
    let server = start();
    let id = create_session(&server).await;
    let cases: &[(&[u8], &str)] = &[
        (b"{", "JSON"),
        (b"", "JSON"),
        (b"\xff\xfe", "JSON"),
        (b"[1, 2]", "object"),
        (b"42", "object"),
        (br#"{"delay_ms": 0}"#, "steps"),
        (br#"{"steps": "5", "delay_ms": 0}"#, "steps"),
        (br#"{"steps": 5.5, "delay_ms": 0}"#, "steps"),
        (br#"{"steps": null, "delay_ms": 0}"#, "steps"),
        (br#"{"steps": 0, "delay_ms": 0}"#, "steps"),
        (br#"{"steps": -1, "delay_ms": 0}"#, "steps"),
        (br#"{"steps": 100001, "delay_ms": 0}"#, "steps"),
        (
            br#"{"steps": 18446744073709551616, "delay_ms": 0}"#,
            "`steps` must be between 1 and 100000",
        ),
        (br#"{"steps": 5}"#, "delay_ms"),
        (br#"{"steps": 5, "delay_ms": "10"}"#, "delay_ms"),
        (br#"{"steps": 5, "delay_ms": -5}"#, "delay_ms"),
        (br#"{"steps": 5, "delay_ms": 60001}"#, "delay_ms"),
        (br#"{"steps": 5, "delay_ms": 1.5}"#, "delay_ms"),
    ];
    for (body, mentions) in cases {
        let res = post_task_raw(&server, &id, body.to_vec()).await;
        let error = expect_error(res, StatusCode::BAD_REQUEST).await;
        assert!(
            error.contains(mentions),
            "the error for {:?} says what is wrong: {error}",
            String::from_utf8_lossy(body)
        );
    }
    // Nothing reached the session: the first status of a good task is seq 1. The bounds
    // themselves are accepted (one step: the 60 s delay only falls between steps).
    let mut ws = ws_connect(&server, &id, None).await;
    start_task(&server, &id, 1, 60_000).await;
    let frames = ws_take(&mut ws, 1).await;
    assert_steps(&frames, &id, 1, 1);
}

pub(crate) async fn oversized_bodies_are_413(start: StartFn) {
    let server = start();
    let id = create_session(&server).await;
    // Exactly 64 KiB of valid JSON is accepted.
    let mut exact = br#"{"steps": 1, "delay_ms": 0}"#.to_vec();
    exact.resize(64 * 1024, b' ');
    assert_eq!(
        post_task_raw(&server, &id, exact.clone()).await.status(),
        StatusCode::ACCEPTED
    );
    // One byte more is not, with a length given...
    let mut over = exact.clone();
    over.push(b' ');
    let res = post_task_raw(&server, &id, over).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // ...or streamed in chunks without one.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..80).map(|_| Ok(vec![b' '; 1024])).collect();
    let res = post_task_raw(
        &server,
        &id,
        reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)),
    )
    .await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // The server is still fine.
    let res = http()
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("GET /healthz");
    assert_eq!(res.status(), StatusCode::OK);
}

pub(crate) async fn bad_resume_points_are_400(start: StartFn) {
    let server = start();
    let id = create_session(&server).await;
    for after in ["abc", "-1", "1.5"] {
        let (status, body) = ws_refused(&server, &format!("session={id}&after={after}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "after={after}");
        assert!(body["error"].as_str().unwrap_or("").contains("after"));
        let res = sse_request(
            &server,
            &format!("session={id}&last_event_id={after}"),
            None,
        )
        .await;
        expect_error(res, StatusCode::BAD_REQUEST).await;
        let res = sse_request(&server, &format!("session={id}"), Some(after)).await;
        expect_error(res, StatusCode::BAD_REQUEST).await;
    }
}

pub(crate) async fn sessions_are_isolated(start: StartFn) {
    let server = start();
    let a = create_session(&server).await;
    let b = create_session(&server).await;
    let mut ws_a = ws_connect(&server, &a, None).await;
    let mut ws_b = ws_connect(&server, &b, None).await;
    let mut sse_b = sse_connect(&server, &format!("session={b}"), None).await;
    start_task(&server, &a, 12, 2).await;
    start_task(&server, &b, 17, 1).await;
    let frames_a = ws_take(&mut ws_a, 12).await;
    let frames_b = ws_take(&mut ws_b, 17).await;
    assert_steps(&frames_a, &a, 1, 12);
    assert_steps(&frames_b, &b, 1, 17);
    assert_steps(&sse_frames(&sse_b.take(17).await), &b, 1, 17);
    ws_quiet(&mut ws_a, Duration::from_millis(300)).await;
    ws_quiet(&mut ws_b, Duration::from_millis(10)).await;
}

pub(crate) async fn ws_resume_has_no_gap_and_no_duplicate(start: StartFn) {
    let server = start();
    let id = create_session(&server).await;
    let mut first = ws_connect(&server, &id, None).await;
    start_task(&server, &id, 40, 10).await;
    let seen = ws_take(&mut first, 7).await;
    assert_steps(&seen, &id, 1, 40);
    drop(first);
    // Reconnect mid-task: history first, then live, from seq 8 on.
    let mut second = ws_connect(&server, &id, Some(7)).await;
    let rest = ws_take(&mut second, 33).await;
    assert_steps(&rest, &id, 8, 40);
    ws_quiet(&mut second, Duration::from_millis(300)).await;
    // After the task: from history alone.
    let mut late = ws_connect(&server, &id, Some(35)).await;
    assert_steps(&ws_take(&mut late, 5).await, &id, 36, 40);
    ws_quiet(&mut late, Duration::from_millis(100)).await;
    let mut all = ws_connect(&server, &id, Some(0)).await;
    assert_steps(&ws_take(&mut all, 40).await, &id, 1, 40);
    ws_quiet(&mut all, Duration::from_millis(100)).await;
}

pub(crate) async fn sse_resume_has_no_gap_and_no_duplicate(start: StartFn) {
    let server = start();
    let id = create_session(&server).await;
    let query = format!("session={id}");
    let mut first = sse_connect(&server, &query, None).await;
    start_task(&server, &id, 30, 10).await;
    let seen = sse_frames(&first.take(10).await);
    assert_steps(&seen, &id, 1, 30);
    drop(first);
    // The header, as EventSource sends it on its own reconnects.
    let mut by_header = sse_connect(&server, &query, Some("10")).await;
    assert_steps(&sse_frames(&by_header.take(20).await), &id, 11, 30);
    // The query, for a page that reconnects by hand.
    let mut by_query = sse_connect(&server, &format!("{query}&last_event_id=20"), None).await;
    assert_steps(&sse_frames(&by_query.take(10).await), &id, 21, 30);
    // Both: the header is the newer one.
    let mut both = sse_connect(&server, &format!("{query}&last_event_id=5"), Some("25")).await;
    assert_steps(&sse_frames(&both.take(5).await), &id, 26, 30);
}

pub(crate) async fn ws_flood_does_not_disturb_other_sessions(start: StartFn) {
    let server = start();
    let noisy = create_session(&server).await;
    let calm = create_session(&server).await;
    let (mut flood_tx, mut flood_rx) = ws_connect(&server, &noisy, None).await.split();
    let flooding = tokio::spawn(async move {
        let junk = "x".repeat(1024);
        for i in 0..20_000u32 {
            let frame = match i % 4 {
                0 => Message::text(junk.clone()),
                1 => Message::binary(vec![0u8; 512]),
                2 => Message::text("{\"steps\": 100000, \"delay_ms\": 0}"),
                _ => Message::Ping(vec![1, 2, 3].into()),
            };
            if flood_tx.feed(frame).await.is_err() {
                return false;
            }
        }
        flood_tx.flush().await.is_ok()
    });
    let mut ws = ws_connect(&server, &calm, None).await;
    let started = Instant::now();
    start_task(&server, &calm, 200, 0).await;
    let frames = ws_take(&mut ws, 200).await;
    assert_steps(&frames, &calm, 1, 200);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        with_timeout("the flood", flooding)
            .await
            .expect("flood task"),
        "the flood was accepted"
    );
    // The flooding client still gets its own statuses, and nothing of the other session.
    start_task(&server, &noisy, 3, 0).await;
    let mut own = Vec::new();
    while own.len() < 3 {
        match with_timeout("noisy frames", flood_rx.next()).await {
            Some(Ok(Message::Text(text))) => {
                let frame = serde_json::from_str::<Value>(&text).expect("JSON");
                if frame["type"] != "task" {
                    own.push(frame);
                }
            }
            Some(Ok(_)) => {}
            other => panic!("the flooding client lost its stream: {other:?}"),
        }
    }
    assert_steps(&own, &noisy, 1, 3);
    ws_quiet(&mut ws, Duration::from_millis(200)).await;
}

pub(crate) async fn ws_pings_are_answered_and_oversized_frames_refused(start: StartFn) {
    let server = start();
    let id = create_session(&server).await;
    let mut ws = ws_connect(&server, &id, None).await;
    ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .expect("ping");
    loop {
        match with_timeout("a pong", ws.next()).await {
            Some(Ok(Message::Pong(payload))) => {
                assert_eq!(&payload[..], b"are you there");
                break;
            }
            Some(Ok(_)) => {}
            other => panic!("no pong: {other:?}"),
        }
    }
    // A frame over 64 KiB ends that connection only, with "message too big" when the close
    // frame gets through before the connection goes.
    let _ = ws.send(Message::text("y".repeat(200 * 1024))).await;
    if let Some(code) = ws_close_code(&mut ws).await {
        assert_eq!(code, 1009, "the close code for an oversized frame");
    }
    let mut again = ws_connect(&server, &id, None).await;
    start_task(&server, &id, 2, 0).await;
    assert_steps(&ws_take(&mut again, 2).await, &id, 1, 2);
}

pub(crate) async fn missing_statuses_arrive_as_gap_items(start: StartFn) {
    let server = start();
    let id = create_session(&server).await;
    // Five statuses more than a session's history holds (1,000, as the contract says).
    let mut watch = ws_connect(&server, &id, None).await;
    start_task(&server, &id, 1005, 0).await;
    // Until the last status (a gap, should this socket fall behind, has no seq).
    while ws_next(&mut watch).await.expect("the statuses")["seq"] != 1005 {}

    let mut ws = ws_connect(&server, &id, None).await;
    let gap = ws_next(&mut ws).await.expect("a gap frame");
    assert_eq!(gap["type"], "gap");
    assert_eq!(gap["session"], id.as_str());
    assert_eq!(
        (gap["from"].as_u64(), gap["to"].as_u64()),
        (Some(1), Some(5))
    );
    assert_steps(&ws_take(&mut ws, 1000).await, &id, 6, 1005);
    ws_quiet(&mut ws, Duration::from_millis(100)).await;

    let mut sse = sse_connect(&server, &format!("session={id}"), Some("2")).await;
    let gap = sse.next().await.expect("a gap event");
    assert_eq!(gap.event.as_deref(), Some("gap"));
    assert_eq!(gap.id.as_deref(), Some("5"), "a resume moves past the gap");
    let json = gap.json();
    assert_eq!(json["type"], "gap");
    assert_eq!(
        (json["from"].as_u64(), json["to"].as_u64()),
        (Some(3), Some(5))
    );
    let statuses = sse.take(1000).await;
    assert_eq!(statuses[0].json()["seq"], 6);
    assert_eq!(statuses[999].id.as_deref(), Some("1005"));
}

/// A demo process stopped with SIGTERM: the WebSocket gets a close frame, the SSE body ends,
/// and the process exits successfully.
pub(crate) async fn sigterm_closes_open_streams(start: StartFn) {
    let server = start();
    let id = create_session(&server).await;
    let mut ws = ws_connect(&server, &id, None).await;
    let mut sse = sse_connect(&server, &format!("session={id}"), None).await;
    start_task(&server, &id, 1, 0).await;
    assert_steps(&ws_take(&mut ws, 1).await, &id, 1, 1);
    assert_steps(&sse_frames(&sse.take(1).await), &id, 1, 1);
    let stopping = tokio::spawn(server.stop());
    assert_eq!(ws_close_code(&mut ws).await, Some(1001), "going away");
    assert!(sse.next().await.is_none(), "the SSE stream ended");
    stopping
        .await
        .expect("stop task")
        .expect("the server stopped cleanly");
}

/// A cancel whose body is over 64 KiB (the contract: "Bodies over 64 KiB: 413"), given with a
/// length or streamed without one, is refused with 413 and leaves the task running; a body of
/// exactly 64 KiB is taken. `url` is the cancel route for a session and a task.
async fn cancel_bodies_over_64_kib_are_413(server: &Server, url: impl Fn(&str, &str) -> String) {
    let id = create_session(server).await;
    let task = start_task(server, &id, 50, 200).await;
    let res = http()
        .post(url(&id, &task))
        .body(vec![b' '; 64 * 1024 + 1])
        .send()
        .await
        .expect("POST a cancel with a long body");
    let error = expect_error(res, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(error.contains("body"), "{error}");
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..80).map(|_| Ok(vec![b' '; 1024])).collect();
    let res = http()
        .post(url(&id, &task))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .expect("POST a cancel with a streamed body");
    expect_error(res, StatusCode::PAYLOAD_TOO_LARGE).await;
    // Nothing changed: a new stream starts with the task's frame, still running.
    let mut ws = ws_connect(server, &id, None).await;
    let frame = ws_next_any(&mut ws).await.expect("the task frame");
    assert_eq!(frame["type"], "task", "{frame}");
    assert_eq!(frame["task"], task.as_str(), "{frame}");
    assert_eq!(frame["state"], "running", "{frame}");
    // Exactly 64 KiB is a body like any other.
    let res = http()
        .post(url(&id, &task))
        .body(vec![b' '; 64 * 1024])
        .send()
        .await
        .expect("POST a cancel with a 64 KiB body");
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let answer: Value = res.json().await.expect("JSON answer");
    assert_eq!(answer["state"], "cancelling", "{answer}");
}

pub(crate) async fn cancel_bodies_over_64_kib_are_413_on_post_cancel(start: StartFn) {
    let server = start();
    cancel_bodies_over_64_kib_are_413(&server, |id, task| {
        server.url(&format!("/cancel?session={id}&task={task}"))
    })
    .await;
}

pub(crate) async fn cancel_bodies_over_64_kib_are_413_on_the_demo_route(start: StartFn) {
    let server = start();
    cancel_bodies_over_64_kib_are_413(&server, |id, task| {
        server.url(&format!("/api/sessions/{id}/tasks/{task}/cancel"))
    })
    .await;
}

pub(crate) async fn cancel_answers_for_sessions_and_tasks(start: StartFn) {
    let server = start();
    let id = create_session(&server).await;
    let cancel = |query: String| {
        let url = server.url(&format!("/cancel?{query}"));
        async move { http().post(url).send().await.expect("POST /cancel") }
    };
    let error = expect_error(
        cancel(format!("session={id}")).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(error.contains("task"), "{error}");
    let error = expect_error(
        cancel(format!("session={id}&task=no-such-task")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(error, "unknown task");
    // On the WebSocket a cancel of a task that is not the session's is ignored: the stream
    // goes on, and so do other frames.
    let mut ws = ws_connect(&server, &id, None).await;
    for frame in [
        r#"{"type":"cancel","task":"no-such-task"}"#,
        r#"{"type":"cancel"}"#,
        "not json",
    ] {
        ws.send(Message::text(frame)).await.expect("send");
    }
    start_task(&server, &id, 3, 0).await;
    assert_steps(&ws_take(&mut ws, 3).await, &id, 1, 3);
}

pub(crate) async fn the_browser_client_is_served(start: StartFn) {
    let server = start();
    let res = http()
        .get(server.url("/status-messenger.js"))
        .send()
        .await
        .expect("GET /status-messenger.js");
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = res.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .to_owned();
    assert!(
        content_type.starts_with("text/javascript"),
        "{content_type}"
    );
    let js = res.text().await.expect("text");
    assert_eq!(js, status_messenger::web::CLIENT_JS);
    assert!(js.contains("export function connect"));
}

// ------------------------------------------------- in-process, on the test's own endpoints

pub(crate) async fn hub_shutdown_closes_open_streams(start_with: StartWithFn) {
    let hub = private_hub(1000);
    let server = start_with(Endpoints::new(hub.clone()));
    let id = create_session(&server).await;
    let mut ws = ws_connect(&server, &id, None).await;
    let mut sse = sse_connect(&server, &format!("session={id}"), None).await;
    hub.publish(Some(&id), "before shutdown").unwrap();
    assert_eq!(
        ws_next(&mut ws).await.expect("status")["text"],
        "before shutdown"
    );
    assert_eq!(
        sse.next().await.expect("status").json()["text"],
        "before shutdown"
    );
    let stopping = tokio::spawn(server.stop());
    // The WebSocket gets a close frame, the SSE body ends, and the server returns cleanly.
    assert_eq!(ws_close_code(&mut ws).await, Some(1001), "going away");
    assert!(sse.next().await.is_none(), "the SSE stream ended");
    stopping
        .await
        .expect("stop task")
        .expect("serve returned Ok");
}

/// `POST /cancel`'s body follows the endpoints' settings: one over `max_message_bytes` is
/// refused with 413, one that does not arrive within `write_timeout` with 408, and neither
/// touches the task.
pub(crate) async fn cancel_bodies_follow_the_endpoints_limits(start_with: StartWithFn) {
    let hub = private_hub(1000);
    let endpoints = Endpoints::new(hub.clone())
        .max_message_bytes(1000)
        .write_timeout(Duration::from_millis(300));
    let server = start_with(endpoints);
    let id = create_session(&server).await;
    let task = hub.start_task(&id).expect("a task");
    let url = server.url(&format!("/cancel?session={id}&task={}", task.id()));
    let cancel_with = |bytes: usize| http().post(&url).body(vec![b'x'; bytes]).send();
    let res = cancel_with(1001).await.expect("POST /cancel");
    let error = expect_error(res, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(error.contains("1000 bytes"), "{error}");
    // A body announced and never sent: answered once the write timeout has passed.
    let path = format!("/cancel?session={id}&task={}", task.id());
    let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n");
    let mut socket = super::send_raw(&server, &head).await;
    let started = Instant::now();
    let mut answer = [0u8; 12];
    with_timeout(
        "the answer to a body that never came",
        tokio::io::AsyncReadExt::read_exact(&mut socket, &mut answer),
    )
    .await
    .expect("an answer");
    assert_eq!(
        &answer,
        b"HTTP/1.1 408",
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
    // Neither touched the task.
    assert!(!task.is_cancelled());
    let states: Vec<_> = hub
        .tasks(&id)
        .expect("the session's tasks")
        .iter()
        .map(|update| update.state().as_str())
        .collect();
    assert_eq!(states, ["running"]);
    // A body within the limit is taken.
    let res = cancel_with(1000).await.expect("POST /cancel");
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert!(task.is_cancelled());
}

pub(crate) async fn idle_streams_get_keep_alives(start_with: StartWithFn) {
    let hub = private_hub(1000);
    let endpoints = Endpoints::new(hub.clone()).keep_alive(Duration::from_millis(300));
    let server = start_with(endpoints);
    let id = create_session(&server).await;
    let mut ws = ws_connect(&server, &id, None).await;
    let started = Instant::now();
    assert_eq!(
        ws_next_raw(&mut ws).await.expect("a frame"),
        serde_json::json!({ "type": "keepalive" })
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
    let mut sse = sse_connect(&server, &format!("session={id}"), None).await;
    let mut seen = String::new();
    while !seen.contains("\n:") && !seen.starts_with(':') {
        seen.push_str(&sse.next_chunk().await.expect("a chunk"));
        // The comment comes after the retry hint.
        seen = seen.replace("retry: 1000\n\n", "");
    }
    assert!(
        seen.trim_start().starts_with(':'),
        "a comment line: {seen:?}"
    );
    // A status after the keep-alives arrives as usual.
    hub.publish(Some(&id), "after a pause").unwrap();
    assert_eq!(
        ws_next(&mut ws).await.expect("status")["text"],
        "after a pause"
    );
    assert_eq!(
        sse.next().await.expect("status").json()["text"],
        "after a pause"
    );
}

/// Endpoints whose hook ties each session to a user named by a `user` cookie.
fn cookie_endpoints(hub: Hub, owners: &[(&str, &str)]) -> Endpoints {
    let owners: Arc<Mutex<HashMap<String, String>>> = Arc::new(Mutex::new(
        owners
            .iter()
            .map(|(session, user)| (session.to_string(), user.to_string()))
            .collect(),
    ));
    Endpoints::new(hub).authorize(move |request: &RequestInfo| {
        let user = request
            .cookie("user")
            .ok_or(Refusal::unauthorized("log in first"))?;
        let session = request
            .query("session")
            .ok_or(Refusal::not_found("no session"))?;
        match owners.lock().expect("lock").get(session) {
            Some(owner) if owner == user => {
                SessionId::new(session).map_err(|_| Refusal::not_found("no session"))
            }
            Some(_) => Err(Refusal::forbidden("not your session")),
            None => Err(Refusal::not_found("unknown session")),
        }
    })
}

pub(crate) async fn authorization_refuses_another_users_session_before_any_upgrade(
    start_with: StartWithFn,
) {
    let hub = private_hub(1000);
    let endpoints = cookie_endpoints(hub.clone(), &[("s-alice", "alice"), ("s-bob", "bob")]);
    let server = start_with(endpoints);
    hub.publish(Some("s-bob"), "bob's secret").unwrap();
    let alice = [("cookie", "theme=dark; user=alice")];

    let (status, body) = ws_refused_with(&server, "session=s-bob", &alice).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"], "not your session");
    let res = sse_request_with(&server, "session=s-bob", &alice).await;
    assert_eq!(
        expect_error(res, StatusCode::FORBIDDEN).await,
        "not your session"
    );
    let res = http()
        .post(server.url("/cancel?session=s-bob&task=t1"))
        .header("cookie", "user=alice")
        .send()
        .await
        .expect("POST /cancel");
    expect_error(res, StatusCode::FORBIDDEN).await;
    // Without the cookie: 401; an unknown session: 404.
    let (status, _) = ws_refused_with(&server, "session=s-bob", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = ws_refused_with(&server, "session=s-carol", &alice).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Nothing was subscribed: no upgrade, no stream, nothing read from bob's session.
    assert_eq!(hub.stats().subscribers, 0);
    assert_eq!(hub.stats().delivered, 0);

    // Alice's own session is hers.
    let mut ws = ws_handshake(&server, "session=s-alice", &alice)
        .await
        .expect("alice's own session");
    hub.publish(Some("s-alice"), "alice's status").unwrap();
    let frame = ws_next(&mut ws).await.expect("a status");
    assert_eq!(frame["session"], "s-alice");
    assert_eq!(frame["text"], "alice's status");
    let mut sse = sse_connect_with(&server, "session=s-alice", &alice).await;
    assert_eq!(
        sse.next().await.expect("a status").json()["session"],
        "s-alice"
    );
    assert_eq!(hub.stats().subscribers, 2);
}

/// Every case of the library's endpoints, as `#[tokio::test]`s for the server `$start` starts
/// (a `fn() -> Server`); the server needs `POST /api/sessions` and
/// `POST /api/sessions/{id}/tasks` with the demos' simulated tool.
macro_rules! integration_cases {
    ($start:expr) => {
        #[tokio::test]
        async fn task_statuses_arrive_over_ws() {
            support::task_statuses_arrive_over_ws($start).await;
        }
        #[tokio::test]
        async fn task_statuses_arrive_over_sse() {
            support::task_statuses_arrive_over_sse($start).await;
        }
        #[tokio::test]
        async fn unknown_and_malformed_sessions_are_404_on_every_stream() {
            support::unknown_and_malformed_sessions_are_404_on_every_stream($start).await;
        }
        #[tokio::test]
        async fn bad_resume_points_are_400() {
            support::bad_resume_points_are_400($start).await;
        }
        #[tokio::test]
        async fn sessions_are_isolated() {
            support::sessions_are_isolated($start).await;
        }
        #[tokio::test]
        async fn ws_resume_has_no_gap_and_no_duplicate() {
            support::ws_resume_has_no_gap_and_no_duplicate($start).await;
        }
        #[tokio::test]
        async fn sse_resume_has_no_gap_and_no_duplicate() {
            support::sse_resume_has_no_gap_and_no_duplicate($start).await;
        }
        #[tokio::test]
        async fn ws_flood_does_not_disturb_other_sessions() {
            support::ws_flood_does_not_disturb_other_sessions($start).await;
        }
        #[tokio::test]
        async fn ws_pings_are_answered_and_oversized_frames_refused() {
            support::ws_pings_are_answered_and_oversized_frames_refused($start).await;
        }
        #[tokio::test]
        async fn missing_statuses_arrive_as_gap_items() {
            support::missing_statuses_arrive_as_gap_items($start).await;
        }
        #[tokio::test]
        async fn cancel_answers_for_sessions_and_tasks() {
            support::cancel_answers_for_sessions_and_tasks($start).await;
        }
        #[tokio::test]
        async fn cancel_bodies_over_64_kib_are_413_on_post_cancel() {
            support::cancel_bodies_over_64_kib_are_413_on_post_cancel($start).await;
        }
        #[tokio::test]
        async fn the_browser_client_is_served() {
            support::the_browser_client_is_served($start).await;
        }
        #[tokio::test]
        async fn task_frames_come_first_and_on_every_change_over_ws() {
            support::task_frames_come_first_and_on_every_change_over_ws($start).await;
        }
        #[tokio::test]
        async fn task_frames_come_first_and_on_every_change_over_sse() {
            support::task_frames_come_first_and_on_every_change_over_sse($start).await;
        }
        #[tokio::test]
        async fn post_cancel_stops_the_tool() {
            support::post_cancel_stops_the_tool($start).await;
        }
        #[tokio::test]
        async fn ws_cancel_frame_stops_only_the_sockets_own_sessions_task() {
            support::ws_cancel_frame_stops_only_the_sockets_own_sessions_task($start).await;
        }
        #[tokio::test]
        async fn closing_or_reloading_streams_never_cancels() {
            support::closing_or_reloading_streams_never_cancels($start).await;
        }
    };
}
pub(crate) use integration_cases;

/// [`integration_cases!`] and the demos' own routes, for a demo process `$start` starts.
macro_rules! demo_cases {
    ($start:expr) => {
        support::integration_cases!($start);
        #[tokio::test]
        async fn page_health_and_unknown_paths() {
            support::page_health_and_unknown_paths($start).await;
        }
        #[tokio::test]
        async fn sessions_are_random_128_bit_ids() {
            support::sessions_are_random_128_bit_ids($start).await;
        }
        #[tokio::test]
        async fn metrics_publish_hub_counters() {
            support::metrics_publish_hub_counters($start).await;
        }
        #[tokio::test]
        async fn unknown_and_malformed_sessions_are_404_on_task_routes() {
            support::unknown_and_malformed_sessions_are_404_on_task_routes($start).await;
        }
        #[tokio::test]
        async fn bad_task_bodies_are_400_and_change_nothing() {
            support::bad_task_bodies_are_400_and_change_nothing($start).await;
        }
        #[tokio::test]
        async fn oversized_bodies_are_413() {
            support::oversized_bodies_are_413($start).await;
        }
        #[tokio::test]
        async fn cancel_bodies_over_64_kib_are_413_on_the_demo_route() {
            support::cancel_bodies_over_64_kib_are_413_on_the_demo_route($start).await;
        }
        #[tokio::test]
        async fn sigterm_closes_open_streams() {
            support::sigterm_closes_open_streams($start).await;
        }
        #[tokio::test]
        async fn demo_cancel_route_stops_the_tool() {
            support::demo_cancel_route_stops_the_tool($start).await;
        }
        #[tokio::test]
        async fn one_sessions_tasks_cannot_starve_another() {
            support::one_sessions_tasks_cannot_starve_another($start).await;
        }
    };
}
pub(crate) use demo_cases;

/// The cases that give an in-process server (`$start_with`, a `fn(Endpoints) -> Server`)
/// endpoints of their own: a private hub, settings, an authorization hook.
macro_rules! endpoint_cases {
    ($start_with:expr) => {
        #[tokio::test]
        async fn hub_shutdown_closes_open_streams() {
            support::hub_shutdown_closes_open_streams($start_with).await;
        }
        #[tokio::test]
        async fn idle_streams_get_keep_alives() {
            support::idle_streams_get_keep_alives($start_with).await;
        }
        #[tokio::test]
        async fn cancel_bodies_follow_the_endpoints_limits() {
            support::cancel_bodies_follow_the_endpoints_limits($start_with).await;
        }
        #[tokio::test]
        async fn structured_fields_reach_both_transports_and_resumes() {
            support::structured_fields_reach_both_transports_and_resumes($start_with).await;
        }
        #[tokio::test]
        async fn authorization_refuses_another_users_session_before_any_upgrade() {
            support::authorization_refuses_another_users_session_before_any_upgrade($start_with)
                .await;
        }
    };
}
pub(crate) use endpoint_cases;
