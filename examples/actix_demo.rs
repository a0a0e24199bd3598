//! Run with: cargo run --release --example actix_demo [-- --port 3000 --bind 127.0.0.1]
//!
//! The status-messenger demo on actix-web: the same page and HTTP contract as `axum_demo`.
//!
//! The handler starts a task of the session ([`Hub::start_task`]) and the tool runs on a
//! [`BlockingPool`] shared by every actix worker (actix's own `web::block` pool is one per
//! worker and knows nothing about sessions); the pool's job [`run`](Task::run)s the tool in
//! the task, which carries the session and its cancel there and records how the tool ended. `POST /api/sessions/{id}/tasks/{task}/cancel` asks
//! the tool to stop. The library's endpoints
//! ([`Endpoints::configure`]) serve `/ws`, `/events`, `/cancel` and the browser client.

use std::future::Future;
use std::io;
use std::process::ExitCode;

use actix_web::http::header::{self, ContentType};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer, ResponseError};
use metrics_exporter_prometheus::PrometheusHandle;
use status_messenger::web::{Endpoints, Refusal};
use status_messenger::{BlockingPool, BlockingPoolConfig, Hub, PoolConfigError, Task};

mod common;

use common::TaskSpec;

/// What the demo's own handlers share.
#[derive(Debug)]
struct AppState {
    hub: Hub,
    metrics: PrometheusHandle,
    /// How long a request's body may take to arrive.
    body_timeout: std::time::Duration,
    /// Where the tools run, shared by every worker.
    tools: BlockingPool,
}

/// The demo's routes and the library's endpoints, for one actix worker.
fn configure(
    state: web::Data<AppState>,
    endpoints: &Endpoints,
) -> impl FnOnce(&mut web::ServiceConfig) {
    let streams = endpoints.configure();
    move |config| {
        config
            .app_data(state)
            .service(web::resource("/").get(index).head(index))
            .service(web::resource("/healthz").get(healthz).head(healthz))
            .service(web::resource("/api/sessions").post(create_session))
            .service(web::resource("/api/sessions/{id}/tasks").post(start_task))
            .service(web::resource("/api/sessions/{id}/tasks/{task}/cancel").post(cancel_task))
            .service(web::resource("/metrics").get(metrics).head(metrics))
            .configure(streams);
    }
}

/// The pool the tools run on, shared by every actix worker: a thread for each task the hub
/// lets run (`max_running_tasks`), so no tool waits for another to end, but only a
/// few per core started at once; past them a tool waits up to 10 ms for a busy thread before
/// one more starts for it. Short tools that keep the cores busy then share a few threads
/// instead of one each, which is memory: each thread that has run tools holds about 140 KiB
/// in its allocator's cache (see the "Memory" section of `benches/README.md`).
fn tool_pool(max_running_tasks: usize) -> Result<BlockingPool, PoolConfigError> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    BlockingPool::new(BlockingPoolConfig {
        // The pool's most; past it a task waits for room.
        threads: max_running_tasks.min(1 << 16),
        queue: 0,
        eager_threads: 8 * cores,
        grow_after: std::time::Duration::from_millis(10),
        ..BlockingPoolConfig::default()
    })
}

/// Serves on `listener` until `shutdown` resolves; then the hub shuts down, which closes every
/// open stream (a close frame on each WebSocket, a clean end of each SSE response), and the
/// server stops once they are gone. Runs inside an actix `System`.
async fn serve(
    listener: std::net::TcpListener,
    hub: Hub,
    metrics: PrometheusHandle,
    config: &common::Config,
    shutdown: impl Future<Output = ()> + 'static,
) -> io::Result<()> {
    let endpoints = Endpoints::new(hub.clone());
    let state = web::Data::new(AppState {
        hub: hub.clone(),
        metrics,
        body_timeout: config.body_timeout,
        tools: tool_pool(config.max_running_tasks).map_err(io::Error::other)?,
    });
    let server = HttpServer::new({
        let endpoints = endpoints.clone();
        move || {
            App::new()
                .configure(configure(state.clone(), &endpoints))
                .default_service(web::to(|| async {
                    Refusal::not_found("not found").error_response()
                }))
        }
    })
    // Signals are ours: the hub must end the long-lived streams before actix waits for
    // connections to finish.
    .disable_signals()
    // A half-sent request, and an idle keep-alive connection, are closed after this.
    .client_request_timeout(config.header_timeout)
    .keep_alive(config.header_timeout)
    // A client's FIN ends its connection at once, so a closed SSE stream leaves the hub at
    // once instead of at its next keep-alive write.
    .h1_allow_half_closed(false)
    // A client that stops reading is dropped after the streams' write timeout.
    .on_connect(endpoints.on_connect())
    .shutdown_timeout(common::STREAM_CLOSE_GRACE.as_secs())
    .listen(listener)?
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: closing open streams");
        endpoints.shutdown(common::STREAM_CLOSE_GRACE).await;
        handle.stop(true).await;
    });
    server.await
}

fn main() -> ExitCode {
    let config = match common::Config::from_env().and_then(|c| c.check_backend().map(|()| c)) {
        Ok(config) => config,
        Err(message) if message.starts_with("usage:") => {
            println!("{message}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("actix_demo: {message}");
            return ExitCode::from(2);
        }
    };
    common::init_logging();
    let result = actix_web::rt::System::new().block_on(run(config));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("actix_demo: {error}");
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
    let listener = std::net::TcpListener::bind((config.bind.as_str(), config.port))?;
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

async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::html())
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(common::PAGE_HTML)
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::plaintext())
        .body("ok")
}

async fn create_session(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    // The body is not used, but one over the limit is refused as on every route.
    if let Err(response) = read_body(&req, payload, state.body_timeout).await {
        return response;
    }
    match common::create_session(&state.hub).await {
        Ok(id) => HttpResponse::Created()
            .content_type(ContentType::json())
            .body(serde_json::json!({ "id": id }).to_string()),
        Err(refusal) => refusal.error_response(),
    }
}

/// The body of a demo route: at most [`common::MAX_BODY_BYTES`] (413 past it, from its
/// `Content-Length` or as it arrives), within `timeout` (408 past it). The task routes read it
/// once the session is found, so an unknown session is a 404 whatever its body.
async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    timeout: std::time::Duration,
) -> Result<Vec<u8>, HttpResponse> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok());
    status_messenger::web::read_body(declared, payload, common::MAX_BODY_BYTES, timeout)
        .await
        .map_err(|refusal| refusal.error_response())
}

async fn start_task(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let session = req.match_info().get("id").map(str::to_owned);
    if let Err(refusal) = common::check_session(&state.hub, session.as_deref()).await {
        return refusal.error_response();
    }
    let body = match read_body(&req, payload, state.body_timeout).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let spec = match common::parse_task(&body) {
        Ok(spec) => spec,
        Err(message) => return Refusal::bad_request(message).error_response(),
    };
    let task = match common::start_task(&state.hub, session.as_deref().unwrap_or_default()) {
        Ok(task) => task,
        Err(refusal) => return refusal.error_response(),
    };
    let answer = serde_json::json!({ "task": task.id() }).to_string();
    // Answered at once when a thread of the pool is free for the tool, else once one has
    // taken it, so that a burst of task requests goes at the pace the tools run at instead of
    // piling up running tasks until the hub refuses more.
    run_task(&state.tools, task, spec).await;
    HttpResponse::Accepted()
        .content_type(ContentType::json())
        .body(answer)
}

/// Starts the tool on the tool pool in its task, which carries the session and the cancel
/// there (the tool itself sees neither) and records how it ended; returns once the tool is
/// sure to start at once: at once if a thread of the pool was free for it, else once one has
/// taken it. The pool has room for every task the hub lets run; a task that has just ended
/// may hold its room a moment longer, so this waits for room rather than refusing.
///
/// Nothing on the runtime waits for the tool's thread when it need not: with one tool at a
/// time, a wake-up of this worker from the tool's thread as the tool starts (and another as
/// it ends, for a task awaiting its handle) takes the core from the tool on a busy machine.
async fn run_task(tools: &BlockingPool, task: Task, spec: TaskSpec) {
    let (on_thread, has_thread) = tokio::sync::oneshot::channel::<()>();
    let tool = tools.spawn(move || {
        // Nobody waits for it unless the tool waited for a thread: then nothing is woken.
        on_thread.send(()).ok();
        // The handle is not awaited: a panic is told there (the task records `failed`).
        common::run_tool(task, spec);
    });
    match tool.await {
        // An error only if the job was dropped without running, which its handle reports.
        Ok(tool) if tool.queued() => drop(has_thread.await),
        Ok(_started) => {}
        Err(e) => {
            // The job, and with it the task, is dropped: the task ends `failed`.
            tracing::error!(error = %e, "the simulated tool did not start");
        }
    }
}

/// `POST /api/sessions/{id}/tasks/{task}/cancel`: asks the task's tool to stop.
async fn cancel_task(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let info = req.match_info();
    let session = match common::check_session(&state.hub, info.get("id")).await {
        Ok(session) => session,
        Err(refusal) => return refusal.error_response(),
    };
    // The body is not used, but one over the limit is refused as on every route, before the
    // task is touched.
    if let Err(response) = read_body(&req, payload, state.body_timeout).await {
        return response;
    }
    match common::cancel_task(&state.hub, session, info.get("task")).await {
        Ok(answer) => HttpResponse::Accepted()
            .content_type(ContentType::json())
            .body(answer),
        Err(refusal) => refusal.error_response(),
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(common::METRICS_CONTENT_TYPE)
        .body(common::render_metrics(&state.hub, &state.metrics))
}
