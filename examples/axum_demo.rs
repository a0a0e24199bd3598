//! Run with: cargo run --release --example axum_demo [-- --port 3000 --bind 127.0.0.1]
//!
//! The status-messenger demo on axum: open the printed address, start a task and watch its
//! statuses arrive live over a WebSocket or Server-Sent Events.
//!
//! How the pieces fit:
//! - a request handler sets the session with [`with_session_id`] and runs the synchronous tool
//!   through [`status_messenger::spawn_blocking`], which carries the session to the blocking
//!   thread; the tool only calls `add_status_message`;
//! - the hub is attached to the global messenger: each status goes from the tool's thread
//!   straight into the hub, which numbers it, keeps the session's history and wakes that
//!   session's subscribers;
//! - `/ws` and `/events` subscribe to one session and forward what the hub gives them.

use std::convert::Infallible;
use std::io;
use std::process::ExitCode;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::{FutureExt, SinkExt, StreamExt};
use status_messenger::{with_session_id, Hub, Subscription};
use tokio::net::TcpListener;

#[path = "common/mod.rs"]
pub(crate) mod common;

use common::{OpenStreams, StreamGuard};

/// What every handler shares.
#[derive(Clone, Debug)]
pub(crate) struct AppState {
    pub(crate) hub: Hub,
    pub(crate) streams: OpenStreams,
}

impl AppState {
    pub(crate) fn new(hub: Hub) -> AppState {
        AppState {
            hub,
            streams: OpenStreams::default(),
        }
    }
}

/// The demo's routes, ready to serve; tests drive it on their own listener.
pub(crate) fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
        .route("/api/sessions", post(create_session))
        .route("/api/sessions/{id}/tasks", post(start_task))
        .route("/ws", get(ws))
        .route("/events", get(events))
        .route("/metrics", get(metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not found") })
        .layer(DefaultBodyLimit::max(common::MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` resolves, then closes every open stream
/// (WebSocket clients get a close frame, SSE responses end) and returns.
pub(crate) async fn serve(
    listener: TcpListener,
    hub: Hub,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let state = AppState::new(hub.clone());
    let streams = state.streams.clone();
    let (stopping_tx, mut stopping_rx) = tokio::sync::watch::channel(false);
    let stopping = async move {
        shutdown.await;
        tracing::info!("shutting down: closing open streams");
        let _ = stopping_tx.send(true);
        // Ends every subscription: SSE bodies finish, WebSocket tasks send their close frame.
        hub.shutdown().await;
    };
    let server = axum::serve(listener, app(state)).with_graceful_shutdown(stopping);
    // A client that stops reading must not hold the process forever.
    let deadline = async move {
        let _ = stopping_rx.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(common::STREAM_CLOSE_GRACE * 2).await;
    };
    tokio::select! {
        served = std::future::IntoFuture::into_future(server) => served?,
        () = deadline => tracing::warn!("connections still open after the grace period"),
    }
    let left = streams.wait_closed(common::STREAM_CLOSE_GRACE).await;
    if left > 0 {
        tracing::warn!(left, "WebSocket streams still open at exit");
    }
    Ok(())
}

fn main() -> ExitCode {
    let config = match common::Config::from_env().and_then(|c| c.check_backend().map(|()| c)) {
        Ok(config) => config,
        Err(message) if message.starts_with("usage:") => {
            println!("{message}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("axum_demo: {message}");
            return ExitCode::from(2);
        }
    };
    common::init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("axum_demo: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(config));
    // A tool may still be sleeping on a blocking thread; it holds nothing worth waiting for.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("axum_demo: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: common::Config) -> Result<(), Box<dyn std::error::Error>> {
    let hub = config.hub().await?;
    // Statuses go from the tool's thread straight into the hub: nothing piles up in a channel
    // while many tools run at once, and no consumer task has to be scheduled in between.
    hub.attach_global()?;
    let listener = TcpListener::bind((config.bind.as_str(), config.port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    serve(listener, hub, common::shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

fn error(status: StatusCode, message: &str) -> Response {
    json(status, common::error_json(message))
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn refused(refusal: common::Refusal) -> Response {
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error(status, &refusal.message)
}

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        common::PAGE_HTML,
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn create_session(State(state): State<AppState>) -> Response {
    match common::create_session(&state.hub).await {
        Ok(id) => json(
            StatusCode::CREATED,
            serde_json::json!({ "id": id }).to_string(),
        ),
        Err(refusal) => refused(refusal),
    }
}

async fn start_task(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let id = id.ok().map(|Path(id)| id);
    if let Err(refusal) = common::check_session(&state.hub, id.as_deref()).await {
        return refused(refusal);
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(StatusCode::PAYLOAD_TOO_LARGE, "the body is over 64 KiB");
        }
        Err(rejection) => return error(StatusCode::BAD_REQUEST, &rejection.body_text()),
    };
    let spec = match common::parse_task(&body) {
        Ok(spec) => spec,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let task = match common::new_id() {
        Ok(task) => task,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let session = id.unwrap_or_default();
    // The session is set here, once; `spawn_blocking` carries it to the blocking thread, so
    // the tool itself never sees it.
    tokio::spawn(with_session_id(session, async move {
        let tool = status_messenger::spawn_blocking(move || {
            common::simulated_tool(spec.steps, spec.delay)
        });
        if let Err(e) = tool.await {
            tracing::error!(error = %e, "the simulated tool failed");
        }
    }));
    json(
        StatusCode::ACCEPTED,
        serde_json::json!({ "task": task }).to_string(),
    )
}

async fn ws(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let query = common::Query::parse(query.as_deref());
    let session = query.get("session");
    if let Err(refusal) = common::check_session(&state.hub, session).await {
        return refused(refusal);
    }
    let after = match common::ws_resume_point(&query) {
        Ok(after) => after,
        Err(refusal) => return refused(refusal),
    };
    let Ok(upgrade) = upgrade else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected a WebSocket upgrade request",
        );
    };
    let subscription = state.hub.subscribe(session.unwrap_or_default(), after);
    let guard = state.streams.enter();
    upgrade
        .max_message_size(common::MAX_WS_MESSAGE_BYTES)
        .max_frame_size(common::MAX_WS_MESSAGE_BYTES)
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .on_upgrade(move |socket| ws_session(socket, subscription, guard))
}

/// Bytes a WebSocket reader makes room for per read. Clients send nothing but the odd ping or
/// close, and the reader clears this room on every poll, so the 128 KiB default cost a
/// 128 KiB memset per socket each time a batch of frames was written; larger messages still
/// arrive, over several reads.
const WS_READ_BUFFER_BYTES: usize = 4 * 1024;
/// Most frames written before one flush, when many are ready at once.
const WS_BATCH: usize = 256;

async fn ws_session(socket: WebSocket, mut subscription: Subscription, _guard: StreamGuard) {
    let (mut sink, mut incoming) = socket.split();
    loop {
        tokio::select! {
            event = subscription.next() => {
                let Some(event) = event else {
                    // The session was closed or the server is shutting down.
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code: axum::extract::ws::close_code::AWAY,
                            reason: "stream ended".into(),
                        })))
                        .await;
                    return;
                };
                if sink.feed(Message::Text(common::event_json(&event).0.into())).await.is_err() {
                    return;
                }
                // Write what is already waiting, then flush once: one syscall for a burst.
                let mut ended = false;
                for _ in 1..WS_BATCH {
                    match subscription.next().now_or_never() {
                        Some(Some(event)) => {
                            let frame = Message::Text(common::event_json(&event).0.into());
                            if sink.feed(frame).await.is_err() {
                                return;
                            }
                        }
                        Some(None) => {
                            ended = true;
                            break;
                        }
                        None => break,
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
                if ended {
                    continue; // the next poll sees the end and closes
                }
            }
            frame = incoming.next() => match frame {
                // Client frames are ignored; axum answers pings while we read.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

async fn events(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = common::Query::parse(query.as_deref());
    let session = query.get("session");
    if let Err(refusal) = common::check_session(&state.hub, session).await {
        return refused(refusal);
    }
    let header_id = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("invalid"));
    let after = match common::sse_resume_point(header_id, query.get("last_event_id")) {
        Ok(after) => after,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let subscription = state.hub.subscribe(session.unwrap_or_default(), after);
    let body = common::sse_stream(subscription, state.streams.enter()).map(Ok::<_, Infallible>);
    let mut response = Response::new(Body::from_stream(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        common::metrics_text(&state.hub.stats()),
    )
        .into_response()
}
