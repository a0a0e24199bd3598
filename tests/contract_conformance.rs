//! What the HTTP contract and the crate's docs promise, checked on the wire as an outside
//! client sees it, beside the cases of `tests/support` that every server on the endpoints
//! passes: both demo servers run as processes (the WebSocket close handshake, fragmented client
//! messages, `HEAD`, task bodies), the crate's endpoints on axum and actix-web in this process
//! (the same frames and keep-alives on both), and the browser client module as the demos serve
//! it, driven in node (skipped, with the reason printed, where there is no node 20 or newer,
//! unless `CI` is set).

mod support;

use std::future::Future;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use support::demo::Demo;
use support::{create_session, ws_connect, Server, StartFn, WAIT};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data as OpData, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

fn axum_demo() -> Server {
    Demo::Axum.start(&[])
}

fn actix_demo() -> Server {
    Demo::Actix.start(&[])
}

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// The client's close frame is answered with a close frame (RFC 6455, section 5.5.1), so the
/// client sees a clean close (a browser's `CloseEvent` has `wasClean` and code 1000, not
/// 1006), as `web::ws::Ended::ClientClosed` says: "its close was answered".
async fn a_client_close_is_answered_with_a_close_frame(start: StartFn) {
    let server = start();
    let id = create_session(&server).await;
    let mut ws = ws_connect(&server, &id, None).await;
    let bye = CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    };
    ws.send(Message::Close(Some(bye)))
        .await
        .expect("send close");
    let answer = loop {
        match within("the answer to the close", ws.next()).await {
            Some(Ok(Message::Close(frame))) => break Ok(frame),
            Some(Ok(_)) => {}
            Some(Err(error)) => break Err(error.to_string()),
            None => break Err("the stream ended".to_owned()),
        }
    };
    let frame = answer.unwrap_or_else(|error| {
        panic!("the server dropped the connection without answering the close: {error}")
    });
    assert_eq!(
        frame.map(|frame| frame.code),
        Some(CloseCode::Normal),
        "the answer to a normal close"
    );
    // And the server goes on serving that session.
    let mut again = ws_connect(&server, &id, None).await;
    support::start_task(&server, &id, 1, 0).await;
    let frames = within("a status after the close", support::ws_take(&mut again, 1)).await;
    assert_eq!(frames[0]["seq"], 1);
}

/// A server, a task of 20 steps 300 ms apart running in a new session, and a WebSocket of
/// that session that has its first status.
async fn a_running_task_on_a_socket(start: StartFn) -> (Server, String, support::Ws) {
    let server = start();
    let id = create_session(&server).await;
    let task = support::start_task(&server, &id, 20, 300).await;
    let mut ws = ws_connect(&server, &id, None).await;
    within("the first status", support::ws_take(&mut ws, 1)).await;
    (server, task, ws)
}

/// Frames sent by a WebSocket client are messages: a cancel frame the client's library sent in
/// fragments (RFC 6455, section 5.4) is still the cancel frame the contract names.
async fn a_fragmented_cancel_frame_cancels(start: StartFn) {
    let (_server, task, mut ws) = a_running_task_on_a_socket(start).await;
    let cancel = serde_json::json!({ "type": "cancel", "task": task }).to_string();
    let (head, tail) = cancel.split_at(10);
    let text = OpCode::Data(OpData::Text);
    let more = OpCode::Data(OpData::Continue);
    ws.send(Message::Frame(Frame::message(head.to_owned(), text, false)))
        .await
        .expect("the first fragment");
    ws.send(Message::Frame(Frame::message(tail.to_owned(), more, true)))
        .await
        .expect("the last fragment");
    expect_stopping(&mut ws, &task).await;
}

/// A cancel frame is `{"type": "cancel", "task": "ID"}` whatever else it carries, up to the
/// 64 KiB a client's message may have: one with a field of 60,000 bytes still cancels.
async fn a_long_cancel_frame_cancels(start: StartFn) {
    let (_server, task, mut ws) = a_running_task_on_a_socket(start).await;
    let note = "x".repeat(60_000);
    let cancel = serde_json::json!({ "type": "cancel", "note": note, "task": task }).to_string();
    ws.send(Message::text(cancel))
        .await
        .expect("the cancel frame");
    expect_stopping(&mut ws, &task).await;
}

/// The simulated tool waits between its steps with `sleep_unless_cancelled`: a cancel in the
/// middle of a minute's delay ends the task (`cancelled`, its tool returned) at once, not a
/// minute later, so its running-task slot is free again.
async fn a_cancel_ends_a_long_delay_at_once(start: StartFn) {
    let server = start();
    let id = create_session(&server).await;
    let task = support::start_task(&server, &id, 3, 60_000).await;
    let mut ws = ws_connect(&server, &id, None).await;
    within("the first status", support::ws_take(&mut ws, 1)).await;
    let started = std::time::Instant::now();
    let res = support::http()
        .post(server.url(&format!("/api/sessions/{id}/tasks/{task}/cancel")))
        .send()
        .await
        .expect("a cancel");
    assert_eq!(res.status(), reqwest::StatusCode::ACCEPTED);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let frame = tokio::time::timeout_at(deadline, support::ws_next_any(&mut ws))
            .await
            .expect("`cancelled` within 5 s of the cancel, not after the minute's delay")
            .expect("the stream goes on");
        if frame["type"] == "task"
            && frame["task"] == task.as_str()
            && frame["state"] == "cancelled"
        {
            break;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// Reads frames until `task`'s frame says it is stopping, within a step's delay (300 ms) and
/// more.
async fn expect_stopping(ws: &mut support::Ws, task: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let frame = tokio::time::timeout_at(deadline, support::ws_next_any(ws))
            .await
            .expect("the task cancelled within a step's delay (300 ms) and more")
            .expect("the stream goes on");
        let stopping = frame["state"] == "cancelling" || frame["state"] == "cancelled";
        if frame["type"] == "task" && frame["task"] == task && stopping {
            break;
        }
    }
}

/// Both cancel routes answer `{"task": "...", "state": "..."}` byte for byte the same way,
/// the keys in the contract's order.
async fn both_cancel_routes_answer_the_same_json(start: StartFn) {
    let server = start();
    let id = create_session(&server).await;
    let task = support::start_task(&server, &id, 3, 300).await;
    for path in [
        format!("/api/sessions/{id}/tasks/{task}/cancel"),
        format!("/cancel?session={id}&task={task}"),
    ] {
        let res = support::http()
            .post(server.url(&path))
            .send()
            .await
            .expect("a cancel");
        assert_eq!(res.status(), reqwest::StatusCode::ACCEPTED, "{path}");
        let body = res.text().await.expect("the answer");
        let state = serde_json::from_str::<serde_json::Value>(&body).expect("JSON")["state"]
            .as_str()
            .expect("a state")
            .to_owned();
        assert!(
            ["cancelling", "cancelled"].contains(&state.as_str()),
            "{body}"
        );
        assert_eq!(
            body,
            format!(r#"{{"task":"{task}","state":"{state}"}}"#),
            "{path}"
        );
    }
}

/// `Settings::max_message_bytes` is the "largest WebSocket message (and frame) a client may
/// send": a message over it closes the socket with 1009, whether it came in one frame or in
/// several each under the limit.
async fn a_fragmented_message_over_the_limit_closes_the_socket(start: StartFn) {
    let server = start();
    let id = create_session(&server).await;
    let mut ws = ws_connect(&server, &id, None).await;
    let half = "y".repeat(40 * 1024);
    let text = OpCode::Data(OpData::Text);
    let more = OpCode::Data(OpData::Continue);
    // The server may close as soon as the limit is passed: a refused write is no failure.
    let _ = ws
        .send(Message::Frame(Frame::message(half.clone(), text, false)))
        .await;
    let _ = ws
        .send(Message::Frame(Frame::message(half, more, true)))
        .await;
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|frame| u16::from(frame.code)),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await
    .expect("the socket is closed after a fragmented message over 64 KiB");
    // The close frame is written before the connection is dropped, so it is there to read.
    assert_eq!(
        ended,
        Some(1009),
        "the close code for a message over the limit"
    );
}

/// A server's `GET` resources answer `HEAD` too (RFC 9110, section 9.3.2: a general-purpose
/// server must): `curl -I` of the client module, the page or the health check is a 200 with
/// the `GET`'s content type and no body, not a 405.
async fn get_resources_answer_head(start: StartFn) {
    let server = start();
    let client = support::http();
    for (path, content_type) in [
        ("/status-messenger.js", "text/javascript"),
        ("/healthz", "text/plain"),
        ("/", "text/html"),
    ] {
        let get = client.get(server.url(path)).send().await.expect("GET");
        assert_eq!(get.status(), 200, "GET {path}");
        let head = client.head(server.url(path)).send().await.expect("HEAD");
        assert_eq!(head.status(), 200, "HEAD {path}");
        let seen = support::content_type(&head);
        assert!(seen.starts_with(content_type), "HEAD {path}: {seen}");
        assert!(
            head.bytes().await.expect("no body").is_empty(),
            "HEAD {path} has no body"
        );
    }
}

/// A wrong field type gets a 400 "saying what is wrong": a whole number written as a float is
/// not an integer, and saying it is out of range (when it is not) sends the caller the wrong
/// way; a number too large for any integer is out of range.
async fn a_float_step_count_is_refused_as_the_wrong_type(start: StartFn) {
    let server = start();
    let id = create_session(&server).await;
    for (body, says) in [
        (
            r#"{"steps": 5.0, "delay_ms": 0}"#,
            "`steps` must be an integer",
        ),
        (
            r#"{"steps": 1e2, "delay_ms": 0}"#,
            "`steps` must be an integer",
        ),
        (
            r#"{"steps": 5, "delay_ms": 10.0}"#,
            "`delay_ms` must be an integer",
        ),
        (
            r#"{"steps": 1e30, "delay_ms": 0}"#,
            "`steps` must be between 1 and 100000",
        ),
    ] {
        let res = support::post_task_raw(&server, &id, body.as_bytes().to_vec()).await;
        let error = support::expect_error(res, reqwest::StatusCode::BAD_REQUEST).await;
        assert_eq!(error, says, "the error for {body}");
    }
}

/// An unknown session is a 404 "on every endpoint", whatever the request's body: the task
/// routes answer it at once, without waiting for a body that was announced and never sent
/// (the demos' body timeout is 30 s).
async fn an_unknown_session_is_404_before_its_body_is_read(start: StartFn) {
    use tokio::io::AsyncReadExt;
    let server = start();
    let unknown = "0123456789abcdef0123456789abcdef";
    for path in [
        format!("/api/sessions/{unknown}/tasks"),
        format!("/api/sessions/{unknown}/tasks/t1/cancel"),
    ] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        );
        let mut socket = support::send_raw(&server, &head).await;
        let mut answer = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(5), socket.read_exact(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("POST {path}: no answer while its body is awaited"))
            .expect("an answer");
        assert_eq!(
            &answer,
            b"HTTP/1.1 404",
            "POST {path}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
}

/// A request to `/ws` that is no WebSocket handshake gets the same answer on both frameworks,
/// naming what is missing (RFC 6455, section 4.2.1): no upgrade at all is 400; a version other
/// than 13 is 426 with `Sec-WebSocket-Version: 13` (section 4.2.2); no valid key is 400. An
/// unknown session is still 404 first.
async fn a_request_that_is_no_handshake_is_told_what_it_lacks(start: StartFn) {
    use tokio::io::AsyncReadExt;
    let server = start();
    let id = create_session(&server).await;
    let upgrade = "Connection: Upgrade\r\nUpgrade: websocket\r\n";
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let cases = [
        (
            id.as_str(),
            String::new(),
            "400",
            "expected a WebSocket upgrade request",
        ),
        (
            id.as_str(),
            format!("{key}Sec-WebSocket-Version: 13\r\n"),
            "400",
            "expected a WebSocket upgrade request",
        ),
        (
            id.as_str(),
            format!("{upgrade}{key}"),
            "426",
            "`Sec-WebSocket-Version` must be 13",
        ),
        (
            id.as_str(),
            format!("{upgrade}{key}Sec-WebSocket-Version: 8\r\n"),
            "426",
            "`Sec-WebSocket-Version` must be 13",
        ),
        (
            id.as_str(),
            format!("{upgrade}Sec-WebSocket-Version: 13\r\n"),
            "400",
            "`Sec-WebSocket-Key` must be 16 bytes in base64",
        ),
        (
            "0123456789abcdef0123456789abcdef",
            String::new(),
            "404",
            "unknown session",
        ),
    ];
    for (session, headers, status, says) in cases {
        // `Connection: close` after `Connection: Upgrade` leaves the upgrade token in place.
        let head = format!(
            "GET /ws?session={session} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n"
        );
        let mut socket = support::send_raw(&server, &head).await;
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut answer))
            .await
            .expect("an answer, then the end")
            .expect("read");
        let answer = String::from_utf8_lossy(&answer).to_lowercase();
        assert!(
            answer.starts_with(&format!("http/1.1 {status}")),
            "{headers:?}: {answer}"
        );
        assert!(
            answer.contains(&says.to_lowercase()),
            "{headers:?}: {answer}"
        );
        assert!(
            answer.contains("content-type: application/json"),
            "{headers:?}: {answer}"
        );
        assert_eq!(
            answer.contains("sec-websocket-version: 13"),
            status == "426",
            "{headers:?}: {answer}"
        );
    }
}

macro_rules! on_both_demos {
    ($($case:ident),* $(,)?) => {
        mod axum {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(axum_demo).await;
                }
            )*
        }
        mod actix {
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(actix_demo).await;
                }
            )*
        }
    };
}

on_both_demos!(
    a_client_close_is_answered_with_a_close_frame,
    a_fragmented_cancel_frame_cancels,
    a_long_cancel_frame_cancels,
    both_cancel_routes_answer_the_same_json,
    a_cancel_ends_a_long_delay_at_once,
    a_request_that_is_no_handshake_is_told_what_it_lacks,
    a_fragmented_message_over_the_limit_closes_the_socket,
    get_resources_answer_head,
    a_float_step_count_is_refused_as_the_wrong_type,
    an_unknown_session_is_404_before_its_body_is_read,
);

// ---- the crate's endpoints on both frameworks, in this process ----

/// The crate's endpoints on axum (`Endpoints::router`), in this process.
fn axum_endpoints(endpoints: status_messenger::web::Endpoints) -> Server {
    Server::start(move |listener, shutdown: support::Shutdown| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let app: ::axum::Router = endpoints.router();
            ::axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        })
    })
}

/// The crate's endpoints on actix-web (`Endpoints::configure`), in this process.
fn actix_endpoints(endpoints: status_messenger::web::Endpoints) -> Server {
    Server::start(move |listener, shutdown: support::Shutdown| {
        actix_web::rt::System::new().block_on(async move {
            let server = actix_web::HttpServer::new({
                let endpoints = endpoints.clone();
                move || actix_web::App::new().configure(endpoints.configure())
            })
            .workers(1)
            .disable_signals()
            .listen(listener)?
            .run();
            let handle = server.handle();
            actix_web::rt::spawn(async move {
                shutdown.await;
                handle.stop(false).await;
            });
            server.await
        })
    })
}

/// Statuses that exercise every optional field and every escape a text can need.
fn tricky_statuses() -> Vec<status_messenger::StatusMessage> {
    use status_messenger::{JsonData, Level, StatusMessage};
    vec![
        StatusMessage::new("plain"),
        StatusMessage::new("quote \" backslash \\ slash / tab \t newline \n cr \r"),
        StatusMessage::new("controls \u{0}\u{1}\u{1f}\u{7f} and separators \u{2028}\u{2029}"),
        StatusMessage::new("unicode: é ü 漢字 🎉 <b>&amp;</b>"),
        StatusMessage::new("every field")
            .progress(3, 10)
            .level(Level::Warn)
            .key("reading \"pages\"")
            .data(JsonData::new(r#"{ "url": "https://example.com/?a=1&b=\u00e9", "n": [1, 2.5e3, null, true] }"#).unwrap()),
        StatusMessage::new("an error").level(Level::Error),
        StatusMessage::new("info, keyed").level(Level::Info).key("k"),
        StatusMessage::new("data only").data(JsonData::new("\"a string\"").unwrap()),
        StatusMessage::new("progress 0 of 0").progress(0, 0),
        StatusMessage::new(""),
        StatusMessage::new("x".repeat(10_000)),
    ]
}

async fn ws_texts(server: &Server, session: &str, n: usize) -> Vec<String> {
    let (mut ws, _) = within(
        "the upgrade",
        tokio_tungstenite::connect_async(server.ws_url(&format!("session={session}"))),
    )
    .await
    .expect("the upgrade");
    let mut texts = Vec::new();
    while texts.len() < n {
        match within("a frame", ws.next()).await {
            Some(Ok(Message::Text(text))) => texts.push(text.as_str().to_owned()),
            Some(Ok(_)) => {}
            other => panic!("the stream ended after {} frames: {other:?}", texts.len()),
        }
    }
    texts
}

async fn sse_datas(server: &Server, session: &str, n: usize) -> Vec<(Option<String>, String)> {
    let mut sse = support::sse_connect(server, &format!("session={session}"), None).await;
    let mut events = Vec::new();
    while events.len() < n {
        let event = sse.next().await.expect("an SSE event");
        events.push((event.id, event.data));
    }
    events
}

/// A status carries the same bytes on both frameworks and both transports: what
/// `web::Frame::encode` makes of it (the documented encoder), valid JSON whose fields are the
/// status's own.
#[tokio::test]
async fn frames_are_the_same_on_both_frameworks_and_transports() {
    use status_messenger::web::{Endpoints, Frame};
    let hub = support::private_hub(1000);
    hub.open_session("s1").await.unwrap();
    let statuses = tricky_statuses();
    let n = statuses.len();
    for status in statuses {
        hub.publish_message(Some("s1"), status).unwrap();
    }
    let mut expected = Vec::new();
    let mut subscription = hub.subscribe("s1", None);
    while expected.len() < n {
        let event = within("a status", subscription.next()).await.unwrap();
        expected.push(Frame::encode(&event).expect("a frame").into_json());
    }
    for json in &expected {
        let value: serde_json::Value = serde_json::from_str(json).expect("valid JSON");
        assert_eq!(value["session"], "s1");
    }
    let axum = axum_endpoints(Endpoints::new(hub.clone()));
    let actix = actix_endpoints(Endpoints::new(hub.clone()));
    for (name, server) in [("axum", &axum), ("actix-web", &actix)] {
        assert_eq!(
            ws_texts(server, "s1", n).await,
            expected,
            "{name}, WebSocket"
        );
        let sse = sse_datas(server, "s1", n).await;
        for (i, (id, data)) in sse.iter().enumerate() {
            assert_eq!(
                id.as_deref(),
                Some((i + 1).to_string().as_str()),
                "{name}, SSE id"
            );
            assert_eq!(data, &expected[i], "{name}, SSE data");
        }
    }
}

/// `HEAD` of the endpoints' `GET` resources is answered alike on both frameworks, from the
/// same checks as the `GET`: the client module and a known session's SSE stream with 200, the
/// stream's content type and no body (at once, not once the stream ends), an unknown session
/// with 404, and the WebSocket endpoint, which only a `GET` upgrades, with 400.
#[tokio::test]
async fn head_is_answered_alike_on_both_frameworks() {
    use status_messenger::web::Endpoints;
    let hub = support::private_hub(1000);
    hub.open_session("s1").await.unwrap();
    hub.publish(Some("s1"), "a status").unwrap();
    let axum = axum_endpoints(Endpoints::new(hub.clone()));
    let actix = actix_endpoints(Endpoints::new(hub.clone()));
    let client = support::http();
    let cases = [
        ("/status-messenger.js", 200, Some("text/javascript")),
        ("/events?session=s1", 200, Some("text/event-stream")),
        ("/events?session=nobody", 404, Some("application/json")),
        ("/ws?session=s1", 400, Some("application/json")),
        ("/ws?session=nobody", 404, Some("application/json")),
        ("/cancel?session=s1&task=t", 405, None),
    ];
    for (name, server) in [("axum", &axum), ("actix-web", &actix)] {
        for (path, status, content_type) in cases {
            let head = within("the answer to a HEAD", client.head(server.url(path)).send())
                .await
                .expect("HEAD");
            assert_eq!(head.status(), status, "{name}: HEAD {path}");
            if let Some(content_type) = content_type {
                let seen = support::content_type(&head);
                assert!(
                    seen.starts_with(content_type),
                    "{name}: HEAD {path}: {seen}"
                );
            }
            let body = within("the end of a HEAD answer", head.bytes()).await;
            assert!(body.expect("no body").is_empty(), "{name}: HEAD {path}");
        }
    }
    // Nothing of those answers stays open.
    let deadline = tokio::time::Instant::now() + WAIT;
    while hub.stats().subscribers != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a HEAD left a stream open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An idle stream's keep-alive on both frameworks: on SSE the comment line the contract names,
/// with the `keepalive` event that `EventSource` (which never surfaces comments) lets the
/// browser client see, so that its 30 s watchdog works on SSE as on the WebSocket; on the
/// WebSocket the `{"type": "keepalive"}` frame. Both are `web::SSE_KEEPALIVE` and
/// `web::KEEPALIVE_FRAME`, byte for byte.
#[tokio::test]
async fn idle_streams_send_keep_alives_a_page_can_see() {
    use status_messenger::web::{Endpoints, KEEPALIVE_FRAME, SSE_KEEPALIVE};
    let hub = support::private_hub(100);
    hub.open_session("idle").await.unwrap();
    let every = Duration::from_millis(200);
    let axum = axum_endpoints(Endpoints::new(hub.clone()).keep_alive(every));
    let actix = actix_endpoints(Endpoints::new(hub.clone()).keep_alive(every));
    for (name, server) in [("axum", &axum), ("actix-web", &actix)] {
        let mut sse = support::sse_connect(server, "session=idle", None).await;
        let mut body = String::new();
        while !body.contains(SSE_KEEPALIVE) {
            body.push_str(&sse.next_chunk().await.expect("the body goes on"));
            assert!(body.len() < 4096, "{name}: no keep-alive in {body:?}");
        }
        assert_eq!(
            body.replace(SSE_KEEPALIVE, "").trim_end(),
            "retry: 1000",
            "{name}: nothing but keep-alives on an idle stream: {body:?}"
        );
        let texts = ws_texts(server, "idle", 1).await;
        assert_eq!(texts, [KEEPALIVE_FRAME], "{name}: the WebSocket keep-alive");
    }
}

/// Timers set as long as a `Duration` goes (a way to turn keep-alives off) act as a year:
/// both streams on both frameworks still carry statuses, and nothing panics on the way.
#[tokio::test]
async fn the_longest_timers_serve_streams_without_a_panic() {
    use status_messenger::web::Endpoints;
    let hub = support::private_hub(100);
    hub.open_session("patient").await.unwrap();
    hub.publish(Some("patient"), "one").unwrap();
    let endpoints = || {
        Endpoints::new(hub.clone())
            .keep_alive(Duration::MAX)
            .write_timeout(Duration::MAX)
    };
    let axum = axum_endpoints(endpoints());
    let actix = actix_endpoints(endpoints());
    for (name, server) in [("axum", &axum), ("actix-web", &actix)] {
        let texts = ws_texts(server, "patient", 1).await;
        assert!(texts[0].contains(r#""text":"one""#), "{name}: {texts:?}");
        let events = sse_datas(server, "patient", 1).await;
        assert_eq!(events[0].0.as_deref(), Some("1"), "{name}: {events:?}");
    }
    hub.publish(Some("patient"), "two").unwrap();
    for (name, server) in [("axum", &axum), ("actix-web", &actix)] {
        let texts = ws_texts(server, "patient", 2).await;
        assert!(texts[1].contains(r#""text":"two""#), "{name}: {texts:?}");
    }
}

// ---- the browser client, in node, against the demos ----

/// `node` with a global `WebSocket` (node 20 needs `--experimental-websocket`, later ones have
/// it by default), or `None` with the reason printed, unless `CI` is set.
fn node_with_websocket() -> Option<Vec<String>> {
    let node = std::env::var("NODE").unwrap_or_else(|_| "node".to_owned());
    let works = |args: &[&str]| {
        std::process::Command::new(&node)
            .args(args)
            .args(["-e", "if (typeof WebSocket !== 'function') process.exit(3)"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    };
    for flags in [&["--experimental-websocket"][..], &[]] {
        if works(flags) {
            let mut command = vec![node.clone()];
            command.extend(flags.iter().map(|flag| (*flag).to_owned()));
            return Some(command);
        }
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI is set and there is no node with a WebSocket (node 20 or newer)");
    }
    eprintln!("skipping the node test: no `{node}` with a WebSocket (node 20 or newer)");
    None
}

/// The module the server serves, driven as its README says a page (or node, with `WebSocket`
/// and an absolute `base` given) uses it: statuses in order and once, a task frame per change,
/// `cancel` over the socket answering `{ task, sent: true }` and stopping the task, `cancel`
/// over `POST /cancel` rejecting a refusal with its status and body, an unknown session ending
/// in `closed` with `unknown-session`, a resume point past the session's head ending in
/// `resume-refused` with the head; and over SSE (through an `EventSource` made of `fetch`,
/// which node lacks) the same order and task frames, with `cancel` a `POST /cancel` that
/// answers `{ task, state: "cancelling" }`.
const CLIENT_DRIVER: &str = r#"
const [moduleUrl, base] = process.argv.slice(2);
const { connect } = await import(moduleUrl);
const post = async (path, body) => {
  const res = await fetch(base + path, { method: "POST", body: body && JSON.stringify(body) });
  return res.json();
};
const until = (what, check, ms = 10000) => new Promise((resolve, reject) => {
  const started = Date.now();
  const poll = () => {
    if (check()) resolve();
    else if (Date.now() - started > ms) reject(new Error(`timed out waiting for ${what}`));
    else setTimeout(poll, 10);
  };
  poll();
});
const out = {};
const session = (await post("/api/sessions")).id;
const task = (await post(`/api/sessions/${session}/tasks`, { steps: 30, delay_ms: 100 })).task;
const seqs = [], tasks = [], states = [];
let cancelAnswer, stream;
let afterStop = 0;
stream = connect({
  session, base, WebSocket,
  onStatus(frame) {
    seqs.push(frame.seq);
    if (tasks.some((t) => t.state !== "running")) afterStop++;
    if (frame.seq === 3) stream.cancel(task).then((answer) => { cancelAnswer = answer; });
  },
  onTask(frame) { tasks.push({ task: frame.task, state: frame.state }); },
  onState(state) { states.push(state); },
});
await until("the cancelled task", () => tasks.some((t) => t.state === "cancelled"));
out.seqs = seqs;
out.tasks = tasks;
out.afterStop = afterStop;
out.cancelAnswer = cancelAnswer;
out.lastSeq = stream.lastSeq;
stream.close();
out.states = states;
try {
  await stream.cancel("no-such-task");
  out.refused = null;
} catch (error) {
  out.refused = { status: error.status, body: error.body };
}
const unknown = await new Promise((resolve) => connect({
  session: "0123456789abcdef0123456789abcdef", base, WebSocket,
  onState(state, detail) { if (state === "closed") resolve(detail); },
}));
out.unknown = unknown;
const beyond = await new Promise((resolve) => connect({
  session, base, WebSocket, after: 1000,
  onState(state, detail) { if (state === "closed") resolve(detail); },
}));
out.beyond = beyond;
// Over SSE, with an EventSource of fetch's stream (node has none): `cancel` is a
// `POST /cancel` answering the task's state.
class MiniEventSource {
  constructor(url) {
    this.url = url;
    this.listeners = {};
    this.closed = false;
    this.controller = new AbortController();
    this.run();
  }
  addEventListener(type, fn) { (this.listeners[type] ??= []).push(fn); }
  close() { this.closed = true; this.controller.abort(); }
  dispatch(type, data) {
    const event = { type, data };
    if (type === "message") this.onmessage?.(event);
    for (const fn of this.listeners[type] ?? []) fn(event);
  }
  async run() {
    try {
      const res = await fetch(this.url, { signal: this.controller.signal });
      if (res.status !== 200) throw new Error(`status ${res.status}`);
      this.onopen?.({});
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let type = "message";
          const data = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) type = line.slice(6).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
          }
          if (data.length) this.dispatch(type, data.join("\n"));
        }
      }
      throw new Error("the stream ended");
    } catch {
      if (!this.closed) this.onerror?.({});
    }
  }
}
const sseSession = (await post("/api/sessions")).id;
const sseTask = (await post(`/api/sessions/${sseSession}/tasks`, { steps: 30, delay_ms: 100 })).task;
const sse = { seqs: [], tasks: [], afterStop: 0 };
const sseStream = connect({
  session: sseSession, base, transport: "sse", EventSource: MiniEventSource,
  onStatus(frame) {
    sse.seqs.push(frame.seq);
    if (sse.tasks.some((state) => state !== "running")) sse.afterStop++;
    if (frame.seq === 3) sseStream.cancel(sseTask).then((answer) => { sse.cancelAnswer = answer; });
  },
  onTask(frame) { sse.tasks.push(frame.state); },
});
await until("the cancelled task over SSE", () => sse.tasks.includes("cancelled"));
sse.task = sseTask;
sseStream.close();
out.sse = sse;
console.log(JSON.stringify(out));
process.exit(0);
"#;

async fn the_served_client_works_in_node(start: StartFn) {
    let Some(node) = node_with_websocket() else {
        return;
    };
    let server = start();
    let module = support::http()
        .get(server.url("/status-messenger.js"))
        .send()
        .await
        .expect("GET /status-messenger.js")
        .text()
        .await
        .expect("the module");
    let dir = tempfile::tempdir().expect("a directory");
    let module_path = dir.path().join("status-messenger.mjs");
    std::fs::write(&module_path, module).expect("the module written");
    let driver_path = dir.path().join("driver.mjs");
    std::fs::write(&driver_path, CLIENT_DRIVER).expect("the driver written");
    let output = tokio::process::Command::new(&node[0])
        .args(&node[1..])
        .arg(&driver_path)
        .arg(format!("file://{}", module_path.display()))
        .arg(&server.base)
        .kill_on_drop(true)
        .output();
    let output = within("the node driver", output).await.expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "node failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: serde_json::Value = serde_json::from_str(stdout.trim()).expect("the driver's JSON");
    let seqs: Vec<u64> = serde_json::from_value(out["seqs"].clone()).unwrap();
    assert!(seqs.len() >= 3 && seqs.len() < 30, "stopped early: {out}");
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "in order, once"
    );
    assert_eq!(out["lastSeq"], seqs.len(), "lastSeq is the last seq seen");
    assert_eq!(out["afterStop"], 0, "no status after cancelling: {out}");
    let states: Vec<String> = serde_json::from_value(out["tasks"].clone())
        .map(|tasks: Vec<serde_json::Value>| {
            tasks
                .iter()
                .map(|t| t["state"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap();
    assert_eq!(states, ["running", "cancelling", "cancelled"], "{out}");
    assert_eq!(out["cancelAnswer"]["sent"], true, "{out}");
    assert_eq!(
        out["states"],
        serde_json::json!(["connecting", "live", "closed"])
    );
    assert_eq!(out["refused"]["status"], 404, "{out}");
    assert!(out["refused"]["body"]["error"].is_string(), "{out}");
    assert_eq!(out["unknown"]["reason"], "unknown-session", "{out}");
    assert_eq!(out["beyond"]["reason"], "resume-refused", "{out}");
    assert_eq!(out["beyond"]["head"], seqs.len(), "{out}");
    let sse = &out["sse"];
    let seqs: Vec<u64> = serde_json::from_value(sse["seqs"].clone()).unwrap();
    assert!(
        seqs.len() >= 3 && seqs.len() < 30,
        "stopped early over SSE: {sse}"
    );
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "in order, once"
    );
    assert_eq!(
        sse["afterStop"], 0,
        "no status after cancelling over SSE: {sse}"
    );
    assert_eq!(
        sse["tasks"],
        serde_json::json!(["running", "cancelling", "cancelled"]),
        "{sse}"
    );
    assert_eq!(sse["cancelAnswer"]["task"], sse["task"], "{sse}");
    assert_eq!(sse["cancelAnswer"]["state"], "cancelling", "{sse}");
}

#[tokio::test]
async fn the_served_client_works_in_node_on_axum() {
    the_served_client_works_in_node(axum_demo).await;
}

#[tokio::test]
async fn the_served_client_works_in_node_on_actix() {
    the_served_client_works_in_node(actix_demo).await;
}
