//! The floor of the end-to-end benchmark: the transport alone, without `status-messenger`.
//!
//! Run with: cargo run --release -p status-messenger-tools --bin floor -- --port 3000
//!
//! This is benchmark code, not part of the product. It speaks just enough of the demo servers'
//! HTTP contract for the load generator (`tools/src/bin/loadgen.rs`: `POST /api/sessions`, `POST /api/sessions/{id}/tasks`,
//! `GET /ws?session=`, `GET /events?session=`) and writes the same frames over the same axum
//! transport, but with the shortest path it can: the simulated tool on `spawn_blocking` pushes
//! each status into its session's own tokio mpsc queue, and the session's socket task drains that
//! queue straight into the socket. No task-local session, no shared channel, no broadcaster, no
//! history, no gap handling. Comparing a demo server with this floor shows what the crate adds
//! over the transport.
//!
//! The bytes are the demos' own: each status carries its task and progress
//! (`{"session", "seq", "text", "task", "progress": {"current", "total"}}`), and each task sends
//! its `running` task frame as it starts and its `finished` one after its last step, so a demo
//! and the floor write the same frames, the same number of them, of the same length.
//!
//! Differences from the contract, on purpose: a session has one reader at a time (a second
//! socket waits until the first closes) and statuses leave the queue once they are sent, so
//! there is no resume (`after=`, `Last-Event-ID` are ignored). Until a socket drains it, the
//! queue holds every status (unbounded: the floor measures the transport, not a buffer policy).
//!
//! Like the demo servers it serves on `127.0.0.1:3000` unless `--port` / `PORT` (`0`: any free
//! port) or `--bind` / `BIND` say otherwise, and prints `listening on http://ADDR:PORT`; the
//! end-to-end benchmark (`tools/benches/e2e.rs`) starts it itself on port 0.
//! `--max-blocking-threads N` sizes tokio's blocking pool, where the tools run (default 512,
//! tokio's): with more tools at once than that, the later ones wait for a thread, so the floor
//! of a scenario with thousands of sleeping tools gives it one thread per tool.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::{SinkExt, Stream};
use serde::{Deserialize, Serialize};
use status_messenger_tools::server::shutdown_signal;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::OwnedMutexGuard;

/// How many queued statuses a socket task takes at once before flushing the socket.
const BATCH: usize = 256;

/// One frame in a session's queue, encoded by the socket task as the demos encode theirs.
enum Item {
    /// A status of step `current` of `total`, added by `task`.
    Status {
        seq: u64,
        text: String,
        task: Arc<str>,
        current: u64,
        total: u64,
    },
    /// A task's state, as of the session's status `last_seq`.
    Task {
        task: Arc<str>,
        state: &'static str,
        last_seq: u64,
    },
}

struct Session {
    id: String,
    /// Sequence counter and sender under one lock, so that the queue order is the `seq` order
    /// even when two tasks of one session run at once.
    producer: Mutex<Producer>,
    /// The draining side, held by the one socket that currently reads the session.
    queue: Arc<tokio::sync::Mutex<UnboundedReceiver<Item>>>,
}

struct Producer {
    seq: u64,
    tx: UnboundedSender<Item>,
}

impl Session {
    fn new(id: String) -> Self {
        let (tx, rx) = unbounded_channel();
        Session {
            id,
            producer: Mutex::new(Producer { seq: 0, tx }),
            queue: Arc::new(tokio::sync::Mutex::new(rx)),
        }
    }

    /// Queues step `current` of `total` of `task` under the next `seq`.
    fn push(&self, text: String, task: &Arc<str>, current: u64, total: u64) {
        let mut producer = self.producer.lock().unwrap_or_else(PoisonError::into_inner);
        producer.seq += 1;
        let seq = producer.seq;
        let item = Item::Status {
            seq,
            text,
            task: Arc::clone(task),
            current,
            total,
        };
        // The receiver lives in `self.queue` as long as the session, so this cannot fail; if it
        // ever did, say so rather than lose the status quietly.
        if producer.tx.send(item).is_err() {
            eprintln!("floor: session {} lost status {seq}: queue closed", self.id);
        }
    }

    /// Queues `task`'s new state, as of the latest `seq`, in order with the statuses.
    fn tell(&self, task: &Arc<str>, state: &'static str) {
        let producer = self.producer.lock().unwrap_or_else(PoisonError::into_inner);
        let item = Item::Task {
            task: Arc::clone(task),
            state,
            last_seq: producer.seq,
        };
        if producer.tx.send(item).is_err() {
            eprintln!("floor: session {} lost a task frame: queue closed", self.id);
        }
    }
}

#[derive(Clone, Default)]
struct AppState {
    sessions: Arc<RwLock<HashMap<String, Arc<Session>>>>,
}

impl AppState {
    fn session(&self, id: &str) -> Option<Arc<Session>> {
        let sessions = self.sessions.read().unwrap_or_else(PoisonError::into_inner);
        sessions.get(id).cloned()
    }
}

/// A status frame, field for field in the demos' order.
#[derive(Serialize)]
struct StatusFrame<'a> {
    session: &'a str,
    seq: u64,
    text: &'a str,
    task: &'a str,
    progress: Progress,
}

#[derive(Serialize)]
struct Progress {
    current: u64,
    total: u64,
}

/// A task frame, as the demos send it.
#[derive(Serialize)]
struct TaskFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    session: &'a str,
    task: &'a str,
    state: &'static str,
    last_seq: u64,
}

#[derive(Deserialize)]
struct TaskRequest {
    steps: u64,
    delay_ms: u64,
}

#[derive(Deserialize)]
struct SessionQuery {
    session: String,
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    json(status, serde_json::json!({ "error": message }))
}

/// 128 random bits as 32 hex digits.
fn random_id() -> String {
    let mut bytes = [0u8; 16];
    if let Err(e) = getrandom::fill(&mut bytes) {
        // Ids here only need to be unique within the process; the time will do.
        eprintln!("floor: no system randomness ({e}), using the clock");
        bytes = unix_nanos().to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unknown_session() -> Response {
    error(StatusCode::NOT_FOUND, "unknown session")
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The item's JSON, and its SSE `id:` and `event:` (a status has an id, a task frame an event).
fn frame_json(session: &str, item: &Item) -> (String, Option<u64>, Option<&'static str>) {
    let (json, id, event) = match item {
        Item::Status {
            seq,
            text,
            task,
            current,
            total,
        } => {
            let frame = StatusFrame {
                session,
                seq: *seq,
                text,
                task,
                progress: Progress {
                    current: *current,
                    total: *total,
                },
            };
            (serde_json::to_string(&frame), Some(*seq), None)
        }
        Item::Task {
            task,
            state,
            last_seq,
        } => {
            let frame = TaskFrame {
                kind: "task",
                session,
                task,
                state,
                last_seq: *last_seq,
            };
            (serde_json::to_string(&frame), None, Some("task"))
        }
    };
    (json.unwrap_or_else(|_| String::from("{}")), id, event)
}

async fn create_session(State(state): State<AppState>) -> Response {
    let id = random_id();
    let session = Arc::new(Session::new(id.clone()));
    state
        .sessions
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id.clone(), session);
    json(StatusCode::CREATED, serde_json::json!({ "id": id }))
}

/// The simulated synchronous tool, as in the contract: `steps` statuses, `delay_ms` apart,
/// each with its task and progress, then the task's `finished` frame.
fn tool(session: &Session, task: &Arc<str>, steps: u64, delay_ms: u64) {
    for i in 1..=steps {
        if i > 1 && delay_ms > 0 {
            std::thread::sleep(Duration::from_millis(delay_ms));
        }
        let t_ns = unix_nanos();
        session.push(format!("step {i}/{steps} t_ns={t_ns}"), task, i, steps);
    }
    session.tell(task, "finished");
}

async fn start_task(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let Some(session) = state.session(&id) else {
        return unknown_session();
    };
    let request: TaskRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid task: {e}")),
    };
    if !(1..=100_000).contains(&request.steps) {
        return error(StatusCode::BAD_REQUEST, "steps must be in 1..=100000");
    }
    if request.delay_ms > 60_000 {
        return error(StatusCode::BAD_REQUEST, "delay_ms must be in 0..=60000");
    }
    let task: Arc<str> = Arc::from(random_id());
    session.tell(&task, "running");
    let answer = json(StatusCode::ACCEPTED, serde_json::json!({ "task": &*task }));
    // The join handle is not awaited: the task runs on after the 202, like the demo's.
    drop(tokio::task::spawn_blocking(move || {
        tool(&session, &task, request.steps, request.delay_ms)
    }));
    answer
}

async fn ws(
    State(state): State<AppState>,
    Query(query): Query<SessionQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Some(session) = state.session(&query.session) else {
        return unknown_session();
    };
    // The same read room as the demo servers give their sockets, so the comparison is fair.
    upgrade
        .read_buffer_size(4 * 1024)
        .on_upgrade(move |socket| drain_to_ws(socket, session))
}

async fn drain_to_ws(mut socket: WebSocket, session: Arc<Session>) {
    let mut queue = session.queue.clone().lock_owned().await;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            n = queue.recv_many(&mut batch, BATCH) => {
                if n == 0 {
                    return;
                }
                for item in batch.drain(..) {
                    let (frame, _, _) = frame_json(&session.id, &item);
                    if socket.feed(Message::Text(frame.into())).await.is_err() {
                        return;
                    }
                }
                if socket.flush().await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                // Client frames are ignored; axum answers pings by itself.
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

async fn events(
    State(state): State<AppState>,
    Query(query): Query<SessionQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>>, Response> {
    let Some(session) = state.session(&query.session) else {
        return Err(unknown_session());
    };
    let queue = session.queue.clone().lock_owned().await;
    Ok(Sse::new(sse_stream(session, queue)))
}

fn sse_stream(
    session: Arc<Session>,
    queue: OwnedMutexGuard<UnboundedReceiver<Item>>,
) -> impl Stream<Item = Result<Event, std::convert::Infallible>> {
    futures_util::stream::unfold((session, queue), |(session, mut queue)| async move {
        let item = queue.recv().await?;
        let (json, id, name) = frame_json(&session.id, &item);
        let mut event = Event::default().data(json);
        if let Some(id) = id {
            event = event.id(id.to_string());
        }
        if let Some(name) = name {
            event = event.event(name);
        }
        Some((Ok(event), (session, queue)))
    })
}

fn app() -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/sessions", post(create_session))
        .route("/api/sessions/{id}/tasks", post(start_task))
        .route("/ws", get(ws))
        .route("/events", get(events))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(AppState::default())
}

/// `--port` / `PORT` and `--bind` / `BIND`, by default `127.0.0.1:3000`, and
/// `--max-blocking-threads`.
fn parse_args() -> Result<(SocketAddr, usize), String> {
    let mut max_blocking_threads = 512;
    let mut port = std::env::var("PORT").unwrap_or_else(|_| String::from("3000"));
    let mut bind = std::env::var("BIND").unwrap_or_else(|_| String::from("127.0.0.1"));
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next().ok_or("--port needs a value")?,
            "--bind" => bind = args.next().ok_or("--bind needs a value")?,
            "--max-blocking-threads" => {
                let raw = args.next().ok_or("--max-blocking-threads needs a value")?;
                max_blocking_threads = raw
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or(format!("bad --max-blocking-threads {raw:?}"))?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let port: u16 = port
        .parse()
        .map_err(|e| format!("bad port {port:?}: {e}"))?;
    let ip = bind
        .parse()
        .map_err(|e| format!("bad bind {bind:?}: {e}"))?;
    Ok((SocketAddr::new(ip, port), max_blocking_threads))
}

fn main() {
    let (addr, max_blocking_threads) = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("floor: {e}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(max_blocking_threads)
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(serve(addr)),
        Err(e) => {
            eprintln!("floor: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    }
}

async fn serve(addr: SocketAddr) {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("floor: cannot bind {addr}: {e}");
            std::process::exit(1);
        }
    };
    match listener.local_addr() {
        Ok(bound) => println!("listening on http://{bound}"),
        Err(e) => eprintln!("floor: bound address unknown: {e}"),
    }
    if let Err(e) = axum::serve(listener, app())
        .with_graceful_shutdown(shutdown_signal())
        .await
    {
        eprintln!("floor: server error: {e}");
        std::process::exit(1);
    }
}
