//! The HTTP-level cases that servers on the library's endpoints must pass, and the clients
//! they use.
//!
//! [`integration_cases!`] are the cases of the endpoints themselves (`/ws`, `/events`,
//! `/cancel`, `/status-messenger.js`) and need of the server only `POST /api/sessions` and
//! `POST /api/sessions/{id}/tasks` with the demos' simulated tool; [`demo_cases!`] adds the
//! demos' own routes. The demos run as processes ([`demo::Demo`]); the minimal servers of
//! `tests/minimal_*.rs`, built only from the public API, run in-process, where
//! [`endpoint_cases!`] also gives them hubs and endpoints of their own.

#![allow(dead_code, unused_macros, unused_imports)] // each test binary uses its own subset

pub(crate) mod demo;
pub(crate) mod proxy;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::Child;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::Value;
use status_messenger::hub::metric_names;
use status_messenger::{Hub, HubConfig};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single wait in these tests may take before it counts as a failure.
pub(crate) const WAIT: Duration = Duration::from_secs(15);

/// What an in-process server's `serve` is handed to know when to stop.
pub(crate) type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A server under test: in this process (on a thread of its own), or a demo process.
pub(crate) struct Server {
    pub(crate) base: String,
    pub(crate) addr: SocketAddr,
    stop: Stop,
}

enum Stop {
    InProcess {
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        done: Option<tokio::sync::oneshot::Receiver<std::io::Result<()>>>,
    },
    Process {
        child: Child,
        log: tempfile::NamedTempFile,
    },
    External,
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
            stop: Stop::InProcess {
                stop: Some(stop_tx),
                done: Some(done_rx),
            },
        }
    }

    /// A server process listening on `addr`, writing its log to `log`.
    pub(crate) fn process(addr: SocketAddr, child: Child, log: tempfile::NamedTempFile) -> Server {
        Server {
            base: format!("http://{addr}"),
            addr,
            stop: Stop::Process { child, log },
        }
    }

    /// A server running elsewhere at `addr`; it cannot be stopped through this handle.
    pub(crate) fn external(addr: SocketAddr) -> Server {
        Server {
            base: format!("http://{addr}"),
            addr,
            stop: Stop::External,
        }
    }

    /// The same server at another address (a proxy in front of it); stopping it stops this.
    pub(crate) fn behind(mut self, addr: SocketAddr) -> Server {
        self.base = format!("http://{addr}");
        self.addr = addr;
        self
    }

    /// Asks the server to shut down gracefully (a process gets SIGTERM) and waits until it
    /// has: `serve` returned, or the process exited successfully without a panic.
    pub(crate) async fn stop(mut self) -> std::io::Result<()> {
        match &mut self.stop {
            Stop::InProcess { stop, done } => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
                let done = done.take().expect("not stopped twice");
                tokio::time::timeout(WAIT, done)
                    .await
                    .expect("the server stopped in time")
                    .expect("the server thread reported back")
            }
            Stop::Process { child, log } => {
                let status = std::process::Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status()?;
                assert!(status.success(), "kill -TERM");
                let deadline = Instant::now() + WAIT;
                loop {
                    if let Some(status) = child.try_wait()? {
                        let log = std::fs::read_to_string(log.path()).unwrap_or_default();
                        assert!(status.success(), "exit status {status}\n{log}");
                        assert!(!log.contains("panicked"), "{log}");
                        return Ok(());
                    }
                    assert!(Instant::now() < deadline, "did not stop on SIGTERM");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            Stop::External => Ok(()),
        }
    }

    /// What the server process has logged so far (empty for other servers).
    pub(crate) fn log(&self) -> String {
        match &self.stop {
            Stop::Process { log, .. } => std::fs::read_to_string(log.path()).unwrap_or_default(),
            _ => String::new(),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/ws?{query}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Stop::Process { child, .. } = &mut self.stop {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// One hub per test process with the default config, fed by the global messenger, as the
/// demos' `main` does. Every session id is random, so tests sharing it cannot see each other's
/// statuses.
pub(crate) fn shared_hub() -> Hub {
    static HUB: OnceLock<Hub> = OnceLock::new();
    HUB.get_or_init(|| {
        let hub = Hub::new(HubConfig::default()).expect("valid hub config");
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

/// Starts a server for one case.
pub(crate) type StartFn = fn() -> Server;

/// Starts an in-process server on the given endpoints.
pub(crate) type StartWithFn = fn(status_messenger::web::Endpoints) -> Server;

/// A connection to `server` that has sent `head` (a request head, with as much of a body as
/// the case wants) and nothing more, for what an HTTP client library would not send.
pub(crate) async fn send_raw(server: &Server, head: &str) -> TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut socket = TcpStream::connect(server.addr).await.expect("connect");
    socket
        .write_all(head.as_bytes())
        .await
        .expect("write the head");
    socket
}

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

/// Starts the simulated tool in session `id`; the task's id.
pub(crate) async fn start_task(server: &Server, id: &str, steps: u32, delay_ms: u64) -> String {
    let body = serde_json::json!({ "steps": steps, "delay_ms": delay_ms }).to_string();
    let res = post_task_raw(server, id, body).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let body: Value = res.json().await.expect("JSON body");
    let task = body["task"].as_str().unwrap_or_default();
    assert!(!task.is_empty(), "202 names the task: {body}");
    task.to_owned()
}

/// The answer's `Content-Type`, empty when it has none (or one that is not text).
pub(crate) fn content_type(res: &reqwest::Response) -> String {
    res.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// `POST {path}` (a cancel endpoint); its status and JSON body.
pub(crate) async fn post_json(server: &Server, path: &str) -> (StatusCode, Value) {
    let res = http()
        .post(server.url(path))
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let status = res.status();
    let content_type = content_type(&res);
    assert!(
        content_type.starts_with("application/json"),
        "POST {path}: JSON, got {content_type}"
    );
    (status, res.json().await.expect("a JSON body"))
}

/// Asserts a JSON `{"error": "..."}` answer with `status`; returns the error text.
pub(crate) async fn expect_error(res: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(res.status(), status, "status of {}", res.url());
    let content_type = content_type(&res);
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
    ws_refused_with(server, query, &[]).await
}

/// A WebSocket handshake for `query` with extra request headers.
pub(crate) async fn ws_handshake(
    server: &Server,
    query: &str,
    headers: &[(&'static str, &str)],
) -> Result<Ws, tungstenite::Error> {
    let mut request = server
        .ws_url(query)
        .into_client_request()
        .expect("a WebSocket request");
    for (name, value) in headers {
        request
            .headers_mut()
            .append(*name, value.parse().expect("a header value"));
    }
    with_timeout("ws connect", tokio_tungstenite::connect_async(request))
        .await
        .map(|(ws, _)| ws)
}

/// The refusal of a WebSocket handshake with extra request headers: its status and JSON body.
pub(crate) async fn ws_refused_with(
    server: &Server,
    query: &str,
    headers: &[(&'static str, &str)],
) -> (StatusCode, Value) {
    match ws_handshake(server, query, headers).await {
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

/// The next status or gap frame, as a client that knows only those reads the stream
/// (keep-alives, task frames, pings and pongs skipped); `None` when the stream closed.
pub(crate) async fn ws_next(ws: &mut Ws) -> Option<Value> {
    loop {
        let frame = ws_next_raw(ws).await?;
        if frame["type"] != "keepalive" && frame["type"] != "task" {
            return Some(frame);
        }
    }
}

/// The next JSON text frame, task frames included (keep-alives, pings and pongs skipped);
/// `None` when the stream closed.
pub(crate) async fn ws_next_any(ws: &mut Ws) -> Option<Value> {
    loop {
        let frame = ws_next_raw(ws).await?;
        if frame["type"] != "keepalive" {
            return Some(frame);
        }
    }
}

/// The next JSON text frame, keep-alives included; `None` when the stream closed.
pub(crate) async fn ws_next_raw(ws: &mut Ws) -> Option<Value> {
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

/// Reads until the close frame; its code, `None` when the stream ended without one.
pub(crate) async fn ws_close_code(ws: &mut Ws) -> Option<u16> {
    loop {
        match with_timeout("the close frame", ws.next()).await {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

/// Asserts that no status or gap frame arrives for `quiet` (task frames may).
pub(crate) async fn ws_quiet(ws: &mut Ws, quiet: Duration) {
    let deadline = tokio::time::Instant::now() + quiet;
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, ws.next()).await {
        if let Message::Text(text) = message {
            let frame: Value = serde_json::from_str(&text).expect("JSON frame");
            assert_eq!(frame["type"], "task", "unexpected frame {text}");
        }
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
    match last_event_id {
        Some(id) => sse_request_with(server, query, &[("last-event-id", id)]).await,
        None => sse_request_with(server, query, &[]).await,
    }
}

/// `GET /events?{query}` with extra request headers.
pub(crate) async fn sse_request_with(
    server: &Server,
    query: &str,
    headers: &[(&'static str, &str)],
) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(server.url(&format!("/events?{query}")));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    with_timeout("SSE response", request.send())
        .await
        .expect("GET /events")
}

pub(crate) async fn sse_connect(server: &Server, query: &str, last_event_id: Option<&str>) -> Sse {
    match last_event_id {
        Some(id) => sse_connect_with(server, query, &[("last-event-id", id)]).await,
        None => sse_connect_with(server, query, &[]).await,
    }
}

/// An SSE stream of `GET /events?{query}` with extra request headers.
pub(crate) async fn sse_connect_with(
    server: &Server,
    query: &str,
    headers: &[(&'static str, &str)],
) -> Sse {
    let res = sse_request_with(server, query, headers).await;
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
    /// The next raw chunk of the body as text; `None` when the body ended.
    pub(crate) async fn next_chunk(&mut self) -> Option<String> {
        if !self.buffer.is_empty() {
            return Some(std::mem::take(&mut self.buffer));
        }
        match with_timeout("an SSE chunk", self.body.next()).await {
            Some(Ok(chunk)) => Some(String::from_utf8(chunk).expect("UTF-8")),
            Some(Err(_)) | None => None,
        }
    }

    /// The next status or gap event, as a client that knows only those reads the stream
    /// (comments, `retry:`, `event: task` and `event: keepalive` skipped); `None` when the body
    /// ended.
    pub(crate) async fn next(&mut self) -> Option<SseEvent> {
        loop {
            let event = self.next_any().await?;
            if event.event.as_deref() != Some("task") {
                return Some(event);
            }
        }
    }

    /// The next event with data, task events included (comments, `retry:` and keep-alive
    /// events skipped); `None` when the body ended.
    pub(crate) async fn next_any(&mut self) -> Option<SseEvent> {
        loop {
            let event = self.next_with_keep_alives().await?;
            if event.event.as_deref() != Some("keepalive") {
                return Some(event);
            }
        }
    }

    /// The next event with data, keep-alive events included (comments and `retry:` skipped);
    /// `None` when the body ended.
    pub(crate) async fn next_with_keep_alives(&mut self) -> Option<SseEvent> {
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

/// `server`'s `GET /metrics`, checked to be Prometheus text.
pub(crate) async fn metrics(server: &Server) -> String {
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

/// The value of the metric line `name` (labels included) in Prometheus `text`.
pub(crate) fn metric(text: &str, name: &str) -> u64 {
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

/// Every frame of `ws` with when it arrived, until the task frame that says `task` is in the
/// state `end` (a `failed` one fails the test): [`ws_until_task`] for a test that times the
/// frames, as one of delivery resuming after a fault.
pub(crate) async fn ws_timed_until_task(
    mut ws: Ws,
    task: String,
    end: &'static str,
) -> Vec<(Value, Instant)> {
    let mut frames = Vec::new();
    loop {
        let frame = ws_next_any(&mut ws)
            .await
            .unwrap_or_else(|| panic!("stream closed after {} frames", frames.len()));
        let done = frame["type"] == "task" && frame["task"] == task.as_str() && {
            assert_ne!(frame["state"], "failed", "{frame}");
            frame["state"] == end
        };
        frames.push((frame, Instant::now()));
        if done {
            return frames;
        }
    }
}

/// Asserts that every number `1..=last` is a status or within one gap exactly once, statuses
/// in order and none past `last`; returns how many were in gaps.
pub(crate) fn assert_each_number_once(frames: &[(Value, Instant)], last: u64, server: &str) -> u64 {
    let mut seen = vec![0u32; last as usize + 1];
    let mut last_status = 0;
    let mut in_gaps = 0;
    for (frame, _) in frames {
        match frame["type"].as_str() {
            Some("gap") => {
                let (from, to) = (
                    frame["from"].as_u64().unwrap(),
                    frame["to"].as_u64().unwrap(),
                );
                assert!(1 <= from && from <= to && to <= last, "{server}: {frame}");
                for n in from..=to {
                    seen[n as usize] += 1;
                }
                in_gaps += to - from + 1;
            }
            None | Some("status") => {
                let seq = frame["seq"].as_u64().expect("seq");
                assert!(
                    seq > last_status && seq <= last,
                    "{server}: {seq} after {last_status}"
                );
                last_status = seq;
                seen[seq as usize] += 1;
            }
            _ => {}
        }
    }
    let wrong: Vec<(usize, u32)> = seen
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(_, n)| **n != 1)
        .map(|(seq, n)| (seq, *n))
        .collect();
    assert!(
        wrong.is_empty(),
        "{server}: (seq, times) not once: {wrong:?}"
    );
    in_gaps
}

mod cases;
mod task_cases;
pub(crate) use cases::*;
pub(crate) use task_cases::*;
