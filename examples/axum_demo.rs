//! Run with: cargo run --release --example axum_demo [-- --port 3000 --bind 127.0.0.1]
//!
//! The status-messenger demo on axum: open the printed address, start a task and watch its
//! statuses arrive live over a WebSocket or Server-Sent Events.
//!
//! How the pieces fit:
//! - a request handler starts a task of the session ([`Hub::start_task`]) and runs the
//!   synchronous tool in it ([`Task::run`](status_messenger::Task::run)) through
//!   [`status_messenger::spawn_blocking`]: the task carries the session and its cancel to the
//!   blocking thread; the tool only calls `add_status` and asks `is_cancelled()`;
//! - `POST /api/sessions/{id}/tasks/{task}/cancel` (and the library's `POST /cancel` and
//!   WebSocket cancel frame) asks the tool to stop; the hub tells every open page;
//! - the hub is attached to the global messenger: each status goes from the tool's thread
//!   straight into the hub, which numbers it, keeps the session's history and wakes that
//!   session's subscribers;
//! - the library's endpoints ([`Endpoints::router`]) serve `/ws`, `/events`, `/cancel` and the
//!   browser client; this file adds the demo's own routes: the page, sessions, tasks, metrics.

use std::io;
use std::process::ExitCode;
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::PrometheusHandle;
use status_messenger::web::{Endpoints, Refusal};
use status_messenger::Hub;
use tokio::net::TcpListener;

mod common;

/// What the demo's own handlers share.
#[derive(Clone, Debug)]
struct AppState {
    hub: Hub,
    metrics: PrometheusHandle,
    /// How long a request's body may take to arrive.
    body_timeout: Duration,
}

/// The demo's routes and the library's endpoints, ready to serve. A request's body must
/// arrive within `body_timeout` (408 after it); the streams' responses are not bound by it.
/// `/mcp` (with the `rmcp` feature) runs at most `mcp_max_calls` tool calls at once.
fn app(
    state: AppState,
    endpoints: &Endpoints,
    body_timeout: Duration,
    mcp_max_calls: usize,
) -> Router {
    #[cfg(feature = "rmcp")]
    let hub = state.hub.clone();
    let router = Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
        .route("/api/sessions", post(create_session))
        .route("/api/sessions/{id}/tasks", post(start_task))
        .route("/api/sessions/{id}/tasks/{task}/cancel", post(cancel_task))
        .route("/metrics", get(metrics))
        .with_state(state)
        .merge(endpoints.router());
    // The MCP endpoint: the same simulated tool for an MCP client, its statuses as progress.
    // Nested before the layers below, so the body timeout bounds it too; rmcp reads the body
    // itself, past `DefaultBodyLimit`, so it is given the same limit (413 over it).
    #[cfg(feature = "rmcp")]
    let router = router.nest_service("/mcp", mcp::service(hub, mcp_max_calls));
    #[cfg(not(feature = "rmcp"))]
    let _ = mcp_max_calls;
    router
        .fallback(|| async { Refusal::not_found("not found").into_response() })
        .layer(DefaultBodyLimit::max(common::MAX_BODY_BYTES))
        // Bounds each handler, body read included (the demo's handlers wait on nothing slower
        // than the hub's request timeout besides the body); a stream's handler answers at once
        // and its body is the stream, so streams are not cut.
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| async move {
                // The contract's errors are JSON, so the 408 is the demo's own refusal.
                match tokio::time::timeout(body_timeout, next.run(request)).await {
                    Ok(response) => response,
                    Err(_) => {
                        Refusal::new(408, "the request body did not arrive in time").into_response()
                    }
                }
            },
        ))
}

/// Serves on `listener` until `shutdown` resolves; then the hub shuts down, which closes every
/// open stream (a close frame on each WebSocket, a clean end of each SSE response), idle
/// connections are closed, and the server stops once the requests in flight are answered.
///
/// Each connection is hyper's HTTP/1 with a header-read timeout, which also bounds how long an
/// idle keep-alive connection waits for its next request: a client that sends half a request,
/// or nothing, holds its connection for at most `config.header_timeout`.
async fn serve(
    listener: TcpListener,
    hub: Hub,
    metrics: PrometheusHandle,
    config: &common::Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let endpoints = Endpoints::new(hub.clone());
    let router = app(
        AppState {
            hub: hub.clone(),
            metrics,
            body_timeout: config.body_timeout,
        },
        &endpoints,
        config.body_timeout,
        config.mcp_max_calls,
    );
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout);
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    let connections = tokio_util_like::Tracker::default();
    let mut shutdown = std::pin::pin!(shutdown);
    // A client that stops reading is dropped after the streams' write timeout, SSE included.
    let mut on_accept = endpoints.on_accept();
    loop {
        let (mut stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: wait a little instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        on_accept(&mut stream);
        let service = TowerToHyperService::new(router.clone());
        let connection = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut stopping = stopping.clone();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = async { stopping.wait_for(|stopping| *stopping).await.is_ok() } => {
                    // Closes it once the request in flight is answered; at once if idle.
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: closing open streams");
    endpoints.shutdown(common::STREAM_CLOSE_GRACE).await;
    let _ = stopping_tx.send(true);
    if tokio::time::timeout(common::STREAM_CLOSE_GRACE, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the grace period");
    }
    Ok(())
}

/// Counts the connection tasks, so shutdown can wait for them (tokio-util's `TaskTracker`, in
/// the few lines the demo needs).
mod tokio_util_like {
    use std::future::Future;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    pub(crate) struct Tracker(Arc<tokio::sync::RwLock<()>>);

    impl Tracker {
        /// Runs `task`, counted until it ends.
        pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
            let tracker = Arc::clone(&self.0);
            tokio::spawn(async move {
                let _running = tracker.read().await;
                task.await;
            });
        }

        /// Resolves once every task spawned so far has ended.
        pub(crate) async fn wait(&self) {
            let _all_done = self.0.write().await;
        }
    }
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
    // Before the hub: it registers its metrics with the recorder installed when it is made.
    let metrics = common::install_metrics()?;
    let hub = config.hub().await?;
    // Statuses go from the tool's thread straight into the hub: nothing piles up in a channel
    // while many tools run at once, and no consumer task has to be scheduled in between.
    hub.attach_global()?;
    let listener = TcpListener::bind((config.bind.as_str(), config.port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    serve(
        listener,
        hub,
        metrics,
        &config,
        status_messenger::web::shutdown_signal(),
    )
    .await?;
    tracing::info!("stopped");
    Ok(())
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
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

async fn create_session(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    // The body is not used, but one over the limit is refused as on every route.
    if let Err(refusal) = read_body(&headers, body, state.body_timeout).await {
        return refusal.into_response();
    }
    match common::create_session(&state.hub).await {
        Ok(id) => json(
            StatusCode::CREATED,
            serde_json::json!({ "id": id }).to_string(),
        ),
        Err(refusal) => refusal.into_response(),
    }
}

/// The body of a demo route: at most [`common::MAX_BODY_BYTES`] (413 past it, from its
/// `Content-Length` or as it arrives), within `timeout` (408 past it). The task routes read it
/// once the session is found, so an unknown session is a 404 whatever its body.
async fn read_body(headers: &HeaderMap, body: Body, timeout: Duration) -> Result<Vec<u8>, Refusal> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok());
    let chunks = body.into_data_stream();
    status_messenger::web::read_body(declared, chunks, common::MAX_BODY_BYTES, timeout).await
}

async fn start_task(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let id = id.ok().map(|Path(id)| id);
    if let Err(refusal) = common::check_session(&state.hub, id.as_deref()).await {
        return refusal.into_response();
    }
    let body = match read_body(&headers, body, state.body_timeout).await {
        Ok(body) => body,
        Err(refusal) => return refusal.into_response(),
    };
    let spec = match common::parse_task(&body) {
        Ok(spec) => spec,
        Err(message) => return Refusal::bad_request(message).into_response(),
    };
    let task = match common::start_task(&state.hub, id.as_deref().unwrap_or_default()) {
        Ok(task) => task,
        Err(refusal) => return refusal.into_response(),
    };
    let answer = serde_json::json!({ "task": task.id() }).to_string();
    // The task carries its session and its cancel to the blocking thread: the tool itself sees
    // neither. Its handle is not awaited (`run_tool` records how it ended and logs a panic), so
    // nothing on the runtime is woken when it ends.
    drop(status_messenger::spawn_blocking(move || {
        common::run_tool(task, spec);
    }));
    json(StatusCode::ACCEPTED, answer)
}

/// `POST /api/sessions/{id}/tasks/{task}/cancel`: asks the task's tool to stop.
async fn cancel_task(
    State(state): State<AppState>,
    ids: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let ids = ids.ok().map(|Path(ids)| ids);
    let (session, task) = match &ids {
        Some((session, task)) => (Some(session.as_str()), Some(task.as_str())),
        None => (None, None),
    };
    let session = match common::check_session(&state.hub, session).await {
        Ok(session) => session,
        Err(refusal) => return refusal.into_response(),
    };
    // The body is not used, but one over the limit is refused as on every route, before the
    // task is touched.
    if let Err(refusal) = read_body(&headers, body, state.body_timeout).await {
        return refusal.into_response();
    }
    match common::cancel_task(&state.hub, session, task).await {
        Ok(answer) => json(StatusCode::ACCEPTED, answer),
        Err(refusal) => refusal.into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, common::METRICS_CONTENT_TYPE)],
        common::render_metrics(&state.hub, &state.metrics),
    )
        .into_response()
}

/// `/mcp`: rmcp's streamable HTTP server with one tool, `simulated_tool` (see the contract).
/// Its statuses reach the MCP client as progress, and the session's page too when the call
/// names a `session`: the call then runs as a task of that session, which the page shows and
/// can stop, as a cancellation from the MCP client does.
///
/// Every call takes one of `max_calls` permits for as long as it runs (a call in a session is
/// also one of the hub's running tasks): with none left it is refused with a busy error, as
/// is a call whose session's backend is away; both say when to retry.
#[cfg(feature = "rmcp")]
mod mcp {
    use std::sync::Arc;

    use rmcp::handler::server::wrapper::Parameters;
    use rmcp::model::{CallToolResult, ContentBlock, ErrorCode};
    use rmcp::service::RequestContext;
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    use rmcp::{tool, tool_handler, tool_router, ErrorData, RoleServer, ServerHandler};
    use status_messenger::mcp::ProgressScope;
    use status_messenger::web::Refusal;
    use status_messenger::Hub;
    use tokio::sync::Semaphore;

    use super::common;

    /// The arguments of `simulated_tool`.
    #[derive(serde::Deserialize, rmcp::schemars::JsonSchema)]
    #[schemars(crate = "rmcp::schemars")]
    struct SimulatedToolArgs {
        /// How many steps, 1..=100000.
        #[schemars(range(min = 1, max = 100_000))]
        steps: u64,
        /// Milliseconds between steps, 0..=60000.
        #[schemars(range(max = 60_000))]
        delay_ms: u64,
        /// A browser session to show the run in as well.
        session: Option<String>,
    }

    /// The JSON-RPC code (in the range kept for servers) of a call refused for now: the
    /// server is busy or its backend away, and the same call may succeed later.
    const BUSY: ErrorCode = ErrorCode(-32000);

    /// Seconds to wait before retrying a call refused for want of a permit.
    const BUSY_RETRY_SECS: u64 = 1;

    /// The MCP error for a refusal of the demo's HTTP API: a bad or unknown session is the
    /// caller's mistake (`invalid_params`); a busy server or an absent backend is [`BUSY`],
    /// its message saying to retry and its data carrying the `retry_after` seconds.
    fn mcp_error(refusal: &Refusal) -> ErrorData {
        match (refusal.status(), refusal.retry_after()) {
            (_, Some(seconds)) => busy(refusal.message(), seconds),
            (503, None) => busy(refusal.message(), BUSY_RETRY_SECS),
            (400..=499, None) => ErrorData::invalid_params(refusal.message().to_owned(), None),
            _ => ErrorData::internal_error(refusal.message().to_owned(), None),
        }
    }

    fn busy(why: &str, retry_after: u64) -> ErrorData {
        ErrorData::new(
            BUSY,
            format!("{why}; retry in {retry_after} s"),
            Some(serde_json::json!({ "retry_after": retry_after })),
        )
    }

    #[derive(Clone)]
    pub(super) struct DemoMcp {
        hub: Hub,
        /// One per running call, so calls without a session are capped too.
        calls: Arc<Semaphore>,
    }

    #[tool_router]
    impl DemoMcp {
        #[tool(description = "The demo's simulated tool: `steps` statuses, `delay_ms` apart")]
        async fn simulated_tool(
            &self,
            Parameters(args): Parameters<SimulatedToolArgs>,
            context: RequestContext<RoleServer>,
        ) -> Result<CallToolResult, ErrorData> {
            let body = serde_json::json!({ "steps": args.steps, "delay_ms": args.delay_ms });
            let spec = common::parse_task(body.to_string().as_bytes())
                .map_err(|message| ErrorData::invalid_params(message, None))?;
            // Held until the tool returns: the blocking thread it runs on is what is capped.
            let _permit = Arc::clone(&self.calls)
                .try_acquire_owned()
                .map_err(|_| busy("too many MCP tool calls running", BUSY_RETRY_SECS))?;
            let mut scope = ProgressScope::new(&context);
            if let Some(session) = args.session.as_deref() {
                let session = common::check_session(&self.hub, Some(session))
                    .await
                    .map_err(|refusal| mcp_error(&refusal))?;
                let task = common::start_task(&self.hub, session)
                    .map_err(|refusal| mcp_error(&refusal))?;
                scope = scope.task(task);
            }
            let done = scope
                .run_blocking(move || common::simulated_tool(spec.steps, spec.delay))
                .await
                .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
            if done < spec.steps {
                // Stopped early: its task was cancelled (from a page, or as its session was
                // closed or the hub shut down; an MCP client's own cancel gets no result at
                // all). The tool did not do what was asked.
                let why = format!("cancelled after {done} of {} steps", spec.steps);
                return Ok(CallToolResult::error(vec![ContentBlock::text(why)]));
            }
            Ok(CallToolResult::success(vec![ContentBlock::text(format!(
                "done: {done} steps"
            ))]))
        }
    }

    #[tool_handler]
    impl ServerHandler for DemoMcp {}

    /// The tower service that `/mcp` nests: at most `max_calls` tool calls at once, bodies
    /// up to [`common::MAX_BODY_BYTES`] (413 over it).
    pub(super) fn service(
        hub: Hub,
        max_calls: usize,
    ) -> StreamableHttpService<DemoMcp, LocalSessionManager> {
        let calls = Arc::new(Semaphore::new(max_calls.min(Semaphore::MAX_PERMITS)));
        StreamableHttpService::new(
            move || {
                Ok(DemoMcp {
                    hub: hub.clone(),
                    calls: Arc::clone(&calls),
                })
            },
            LocalSessionManager::default().into(),
            StreamableHttpServerConfig::default()
                .with_max_request_body_bytes(common::MAX_BODY_BYTES),
        )
    }
}
