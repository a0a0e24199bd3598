//! The HTTP-level cases both demo servers must pass, and the clients they use.
//!
//! Each server's test file starts its server in-process from the example's own `serve` (and
//! so its `app`) on a `127.0.0.1:0` listener, in a thread with its own runtime, and runs every
//! case of [`demo_cases!`] against it.

#![allow(dead_code)] // each test binary uses its own subset of the helpers

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::Value;
use status_messenger::{Hub, HubConfig};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single wait in these tests may take before it counts as a failure.
pub(crate) const WAIT: Duration = Duration::from_secs(15);

/// What the servers' `serve` functions are handed to know when to stop.
pub(crate) type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A demo server running in its own thread.
pub(crate) struct Server {
    pub(crate) base: String,
    pub(crate) addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<tokio::sync::oneshot::Receiver<std::io::Result<()>>>,
}

impl Server {
    /// Binds `127.0.0.1:0` and runs `serve(listener, shutdown)` on a thread of its own.
    pub(crate) fn start<F>(serve: F) -> Server
    where
        F: FnOnce(std::net::TcpListener, Shutdown) -> std::io::Result<()> + Send + 'static,
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local address");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        // Only an explicit stop shuts the server down: a dropped handle leaves it running,
        // because the hub it serves may be shared with other tests.
        let shutdown: Shutdown = Box::pin(async move {
            if stop_rx.await.is_err() {
                std::future::pending::<()>().await;
            }
        });
        std::thread::spawn(move || {
            let result = serve(listener, shutdown);
            let _ = done_tx.send(result);
        });
        Server {
            base: format!("http://{addr}"),
            addr,
            stop: Some(stop_tx),
            done: Some(done_rx),
        }
    }

    /// A server running elsewhere (another process) at `addr`; it cannot be stopped through
    /// this handle.
    pub(crate) fn external(addr: SocketAddr) -> Server {
        Server {
            base: format!("http://{addr}"),
            addr,
            stop: None,
            done: None,
        }
    }

    /// Asks the server to shut down gracefully and waits until `serve` has returned.
    pub(crate) async fn stop(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let done = self.done.take().expect("not stopped twice");
        tokio::time::timeout(WAIT, done)
            .await
            .expect("the server stopped in time")
            .expect("the server thread reported back")
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/ws?{query}", self.addr)
    }
}

/// One hub per test process, fed by the global messenger, as the demos' `main` does. Every
/// session id is random, so tests sharing it cannot see each other's statuses.
pub(crate) fn shared_hub(config: fn() -> HubConfig) -> Hub {
    static HUB: OnceLock<Hub> = OnceLock::new();
    HUB.get_or_init(|| {
        let hub = Hub::new(config()).expect("valid hub config");
        // Attached, it needs no task, so it outlives every test's runtime.
        hub.attach_global()
            .expect("nothing else consumes the global messenger");
        hub
    })
    .clone()
}

/// A hub of the test's own, not fed by the messenger: the test publishes into it.
pub(crate) fn private_hub(history_capacity: usize) -> Hub {
    let mut config = HubConfig::default();
    config.history_capacity = history_capacity;
    Hub::new(config).expect("valid hub config")
}

pub(crate) type StartFn = fn(Hub) -> Server;

pub(crate) fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(WAIT)
        .build()
        .expect("http client")
}

async fn with_timeout<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

pub(crate) async fn create_session(server: &Server) -> String {
    let res = http()
        .post(server.url("/api/sessions"))
        .send()
        .await
        .expect("POST /api/sessions");
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.expect("JSON body");
    body["id"].as_str().expect("an id").to_owned()
}

pub(crate) async fn post_task_raw(
    server: &Server,
    id: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    http()
        .post(server.url(&format!("/api/sessions/{id}/tasks")))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("POST task")
}

pub(crate) async fn start_task(server: &Server, id: &str, steps: u32, delay_ms: u64) {
    let body = serde_json::json!({ "steps": steps, "delay_ms": delay_ms }).to_string();
    let res = post_task_raw(server, id, body).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let body: Value = res.json().await.expect("JSON body");
    assert!(
        body["task"].as_str().is_some_and(|t| !t.is_empty()),
        "202 names the task: {body}"
    );
}

/// Asserts a JSON `{"error": "..."}` answer with `status`; returns the error text.
pub(crate) async fn expect_error(res: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(res.status(), status, "status of {}", res.url());
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "JSON error, got {content_type}"
    );
    let body: Value = res.json().await.expect("JSON error body");
    let error = body["error"].as_str().expect("an error field");
    assert!(!error.is_empty());
    error.to_owned()
}

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub(crate) async fn ws_connect(server: &Server, id: &str, after: Option<u64>) -> Ws {
    let mut query = format!("session={id}");
    if let Some(after) = after {
        query.push_str(&format!("&after={after}"));
    }
    let (ws, response) = with_timeout(
        "ws connect",
        tokio_tungstenite::connect_async(server.ws_url(&query)),
    )
    .await
    .expect("WebSocket upgrade");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws
}

/// The refusal of a WebSocket handshake: its status and JSON body.
pub(crate) async fn ws_refused(server: &Server, query: &str) -> (StatusCode, Value) {
    match with_timeout(
        "ws connect",
        tokio_tungstenite::connect_async(server.ws_url(query)),
    )
    .await
    {
        Ok(_) => panic!("the upgrade for `{query}` was accepted"),
        Err(tungstenite::Error::Http(response)) => {
            let status = StatusCode::from_u16(response.status().as_u16()).expect("status");
            let body = response.body().clone().unwrap_or_default();
            let json = serde_json::from_slice(&body).expect("a JSON error body");
            (status, json)
        }
        Err(other) => panic!("unexpected handshake error: {other}"),
    }
}

/// The next JSON text frame (pings and pongs skipped); `None` when the stream closed.
pub(crate) async fn ws_next(ws: &mut Ws) -> Option<Value> {
    loop {
        match with_timeout("a WebSocket frame", ws.next()).await? {
            Ok(Message::Text(text)) => {
                return Some(serde_json::from_str(&text).expect("JSON frame"))
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Asserts that no frame arrives for `quiet`.
pub(crate) async fn ws_quiet(ws: &mut Ws, quiet: Duration) {
    if let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout(quiet, ws.next()).await {
        panic!("unexpected frame {text}");
    }
}

pub(crate) async fn ws_take(ws: &mut Ws, n: usize) -> Vec<Value> {
    let mut frames = Vec::with_capacity(n);
    while frames.len() < n {
        let frame = ws_next(ws)
            .await
            .unwrap_or_else(|| panic!("stream ended after {} frames", frames.len()));
        frames.push(frame);
    }
    frames
}

/// One parsed Server-Sent Event.
#[derive(Debug, Clone, Default)]
pub(crate) struct SseEvent {
    pub(crate) id: Option<String>,
    pub(crate) event: Option<String>,
    pub(crate) data: String,
}

impl SseEvent {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("JSON data")
    }
}

/// A Server-Sent Events response read event by event.
pub(crate) struct Sse {
    body: Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<Vec<u8>>> + Send>>,
    buffer: String,
}

pub(crate) async fn sse_request(
    server: &Server,
    query: &str,
    last_event_id: Option<&str>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(server.url(&format!("/events?{query}")));
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    with_timeout("SSE response", request.send())
        .await
        .expect("GET /events")
}

pub(crate) async fn sse_connect(server: &Server, query: &str, last_event_id: Option<&str>) -> Sse {
    let res = sse_request(server, query, last_event_id).await;
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = res.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .to_owned();
    assert!(
        content_type.starts_with("text/event-stream"),
        "got {content_type}"
    );
    Sse {
        body: Box::pin(
            res.bytes_stream()
                .map(|chunk| chunk.map(|bytes| bytes.to_vec())),
        ),
        buffer: String::new(),
    }
}

impl Sse {
    /// The next event with data (comments and `retry:` skipped); `None` when the body ended.
    pub(crate) async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = SseEvent::default();
                let mut has_data = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim_start().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event.event = Some(v.trim_start().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if has_data {
                            event.data.push('\n');
                        }
                        event.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                        has_data = true;
                    }
                }
                if has_data {
                    return Some(event);
                }
                continue;
            }
            match with_timeout("an SSE chunk", self.body.next()).await {
                Some(Ok(chunk)) => self
                    .buffer
                    .push_str(std::str::from_utf8(&chunk).expect("UTF-8")),
                Some(Err(_)) | None => return None,
            }
        }
    }

    pub(crate) async fn take(&mut self, n: usize) -> Vec<SseEvent> {
        let mut events = Vec::with_capacity(n);
        while events.len() < n {
            let event = self
                .next()
                .await
                .unwrap_or_else(|| panic!("stream ended after {} events", events.len()));
            events.push(event);
        }
        events
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos()
}

/// Asserts that `frames` are statuses `first..` of `session`'s task of `total` steps, in
/// order, each with a plausible `t_ns`; returns the `t_ns` values.
pub(crate) fn assert_steps(frames: &[Value], session: &str, first: u64, total: u64) -> Vec<u128> {
    let mut times = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        let seq = first + i as u64;
        assert_eq!(frame["session"], session, "frame {frame}");
        assert_eq!(frame["seq"], seq, "frame {frame}");
        assert!(
            frame.get("type").is_none_or(|t| t == "status"),
            "frame {frame}"
        );
        let text = frame["text"].as_str().expect("text");
        let prefix = format!("step {seq}/{total} t_ns=");
        let t_ns: u128 = text
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("`{text}` does not start with `{prefix}`"))
            .parse()
            .expect("t_ns is an integer");
        assert!(t_ns <= now_ns(), "t_ns in the past");
        if let Some(last) = times.last() {
            assert!(t_ns >= *last, "t_ns grows");
        }
        times.push(t_ns);
    }
    times
}

fn sse_frames(events: &[SseEvent]) -> Vec<Value> {
    events
        .iter()
        .map(|event| {
            assert_eq!(event.event, None, "a status event has no event name");
            let json = event.json();
            assert_eq!(
                event.id.as_deref(),
                Some(json["seq"].to_string().as_str()),
                "id is the seq"
            );
            json
        })
        .collect()
}

async fn metrics(server: &Server) -> String {
    let res = http()
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = res.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .to_owned();
    assert!(content_type.starts_with("text/plain"), "got {content_type}");
    res.text().await.expect("text")
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("metric {name} missing in\n{text}"))
}

// ---------------------------------------------------------------- the cases

pub(crate) async fn page_health_and_unknown_paths(start: StartFn, hub: Hub) {
    let server = start(hub);
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

pub(crate) async fn sessions_are_random_128_bit_ids(start: StartFn, hub: Hub) {
    let server = start(hub);
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

pub(crate) async fn task_statuses_arrive_over_ws(start: StartFn, hub: Hub) {
    let server = start(hub);
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

pub(crate) async fn task_statuses_arrive_over_sse(start: StartFn, hub: Hub) {
    let server = start(hub);
    let id = create_session(&server).await;
    let mut sse = sse_connect(&server, &format!("session={id}"), None).await;
    start_task(&server, &id, 12, 0).await;
    let frames = sse_frames(&sse.take(12).await);
    assert_steps(&frames, &id, 1, 12);
}

pub(crate) async fn metrics_publish_hub_counters(start: StartFn, hub: Hub) {
    let server = start(hub);
    let id = create_session(&server).await;
    let mut ws = ws_connect(&server, &id, None).await;
    start_task(&server, &id, 5, 0).await;
    ws_take(&mut ws, 5).await;
    let text = metrics(&server).await;
    assert!(metric(&text, "status_messenger_sessions") >= 1);
    assert!(metric(&text, "status_messenger_subscribers") >= 1);
    assert!(metric(&text, "status_messenger_messages_in_total") >= 5);
    assert!(metric(&text, "status_messenger_messages_delivered_total") >= 5);
    metric(&text, "status_messenger_messages_lagged_total");
    metric(&text, "status_messenger_gaps_total");
    metric(
        &text,
        "status_messenger_messages_dropped_total{reason=\"no_session\"}",
    );
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = line.rsplit_once(' ').expect("name value");
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad sample line `{line}`"));
    }
}

pub(crate) async fn unknown_and_malformed_sessions_are_404_everywhere(start: StartFn, hub: Hub) {
    let server = start(hub);
    let real = create_session(&server).await;
    let unknown = {
        // Same shape as a real id, never issued.
        let mut id: Vec<u8> = real.clone().into_bytes();
        id[0] = if id[0] == b'0' { b'1' } else { b'0' };
        String::from_utf8(id).expect("ascii")
    };
    let malformed = [
        unknown.as_str(),
        "xyz",
        "..%2F..%2Fetc",
        &real[..31],
        &format!("{real}0"),
        &real.to_uppercase(),
        "%00",
    ];
    for id in malformed {
        let body = r#"{"steps": 1, "delay_ms": 0}"#;
        let error = expect_error(
            post_task_raw(&server, id, body).await,
            StatusCode::NOT_FOUND,
        )
        .await;
        assert!(
            error.contains("session") || error.contains("not found"),
            "{error}"
        );
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
    }
    // No session at all.
    expect_error(sse_request(&server, "", None).await, StatusCode::NOT_FOUND).await;
    let (status, _) = ws_refused(&server, "after=3").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let res = post_task_raw(&server, "", r#"{"steps":1,"delay_ms":0}"#).await;
    expect_error(res, StatusCode::NOT_FOUND).await;
}

pub(crate) async fn bad_task_bodies_are_400_and_change_nothing(start: StartFn, hub: Hub) {
    let server = start(hub);
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
            "steps",
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

pub(crate) async fn oversized_bodies_are_413(start: StartFn, hub: Hub) {
    let server = start(hub);
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

pub(crate) async fn bad_resume_points_are_400(start: StartFn, hub: Hub) {
    let server = start(hub);
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

pub(crate) async fn sessions_are_isolated(start: StartFn, hub: Hub) {
    let server = start(hub);
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

pub(crate) async fn ws_resume_has_no_gap_and_no_duplicate(start: StartFn, hub: Hub) {
    let server = start(hub);
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

pub(crate) async fn sse_resume_has_no_gap_and_no_duplicate(start: StartFn, hub: Hub) {
    let server = start(hub);
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

pub(crate) async fn ws_flood_does_not_disturb_other_sessions(start: StartFn, hub: Hub) {
    let server = start(hub);
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
                own.push(serde_json::from_str::<Value>(&text).expect("JSON"))
            }
            Some(Ok(_)) => {}
            other => panic!("the flooding client lost its stream: {other:?}"),
        }
    }
    assert_steps(&own, &noisy, 1, 3);
    ws_quiet(&mut ws, Duration::from_millis(200)).await;
}

pub(crate) async fn ws_pings_are_answered_and_oversized_frames_refused(start: StartFn, hub: Hub) {
    let server = start(hub);
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
    // A frame over 64 KiB ends that connection only.
    let _ = ws.send(Message::text("y".repeat(200 * 1024))).await;
    loop {
        match with_timeout("the close", ws.next()).await {
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            Some(Ok(_)) => {}
        }
    }
    let mut again = ws_connect(&server, &id, None).await;
    start_task(&server, &id, 2, 0).await;
    assert_steps(&ws_take(&mut again, 2).await, &id, 1, 2);
}

pub(crate) async fn missing_statuses_arrive_as_gap_items(start: StartFn) {
    let hub = private_hub(5);
    let server = start(hub.clone());
    let id = create_session(&server).await;
    for i in 1..=12 {
        assert_eq!(
            hub.publish(Some(&id), format!("status {i}"))
                .map(|p| p.seq()),
            Ok(Some(i))
        );
    }
    let mut ws = ws_connect(&server, &id, None).await;
    let gap = ws_next(&mut ws).await.expect("a gap frame");
    assert_eq!(gap["type"], "gap");
    assert_eq!(
        (gap["from"].as_u64(), gap["to"].as_u64()),
        (Some(1), Some(7))
    );
    for seq in 8..=12u64 {
        let frame = ws_next(&mut ws).await.expect("a status");
        assert_eq!(frame["seq"], seq);
        assert_eq!(frame["text"], format!("status {seq}"));
    }
    let mut sse = sse_connect(&server, &format!("session={id}"), Some("2")).await;
    let gap = sse.next().await.expect("a gap event");
    assert_eq!(gap.event.as_deref(), Some("gap"));
    let json = gap.json();
    assert_eq!(json["type"], "gap");
    assert_eq!(
        (json["from"].as_u64(), json["to"].as_u64()),
        (Some(3), Some(7))
    );
    let statuses = sse.take(5).await;
    assert_eq!(statuses[0].json()["seq"], 8);
    assert_eq!(statuses[4].id.as_deref(), Some("12"));
}

pub(crate) async fn shutdown_closes_open_streams(start: StartFn) {
    let hub = private_hub(1000);
    let server = start(hub.clone());
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
    let closed = loop {
        match with_timeout("the close frame", ws.next()).await {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert!(closed.is_some(), "the close frame says why");
    assert!(sse.next().await.is_none(), "the SSE stream ended");
    stopping
        .await
        .expect("stop task")
        .expect("serve returned Ok");
}

/// Every case, as `#[tokio::test]`s for the server that `$start` starts.
macro_rules! demo_cases {
    ($start:expr, $config:expr) => {
        fn shared() -> status_messenger::Hub {
            support::shared_hub($config)
        }
        #[tokio::test]
        async fn page_health_and_unknown_paths() {
            support::page_health_and_unknown_paths($start, shared()).await;
        }
        #[tokio::test]
        async fn sessions_are_random_128_bit_ids() {
            support::sessions_are_random_128_bit_ids($start, shared()).await;
        }
        #[tokio::test]
        async fn task_statuses_arrive_over_ws() {
            support::task_statuses_arrive_over_ws($start, shared()).await;
        }
        #[tokio::test]
        async fn task_statuses_arrive_over_sse() {
            support::task_statuses_arrive_over_sse($start, shared()).await;
        }
        #[tokio::test]
        async fn metrics_publish_hub_counters() {
            support::metrics_publish_hub_counters($start, shared()).await;
        }
        #[tokio::test]
        async fn unknown_and_malformed_sessions_are_404_everywhere() {
            support::unknown_and_malformed_sessions_are_404_everywhere($start, shared()).await;
        }
        #[tokio::test]
        async fn bad_task_bodies_are_400_and_change_nothing() {
            support::bad_task_bodies_are_400_and_change_nothing($start, shared()).await;
        }
        #[tokio::test]
        async fn oversized_bodies_are_413() {
            support::oversized_bodies_are_413($start, shared()).await;
        }
        #[tokio::test]
        async fn bad_resume_points_are_400() {
            support::bad_resume_points_are_400($start, shared()).await;
        }
        #[tokio::test]
        async fn sessions_are_isolated() {
            support::sessions_are_isolated($start, shared()).await;
        }
        #[tokio::test]
        async fn ws_resume_has_no_gap_and_no_duplicate() {
            support::ws_resume_has_no_gap_and_no_duplicate($start, shared()).await;
        }
        #[tokio::test]
        async fn sse_resume_has_no_gap_and_no_duplicate() {
            support::sse_resume_has_no_gap_and_no_duplicate($start, shared()).await;
        }
        #[tokio::test]
        async fn ws_flood_does_not_disturb_other_sessions() {
            support::ws_flood_does_not_disturb_other_sessions($start, shared()).await;
        }
        #[tokio::test]
        async fn ws_pings_are_answered_and_oversized_frames_refused() {
            support::ws_pings_are_answered_and_oversized_frames_refused($start, shared()).await;
        }
        #[tokio::test]
        async fn missing_statuses_arrive_as_gap_items() {
            support::missing_statuses_arrive_as_gap_items($start).await;
        }
        #[tokio::test]
        async fn shutdown_closes_open_streams() {
            support::shutdown_closes_open_streams($start).await;
        }
    };
}
pub(crate) use demo_cases;
