//! A server for the many-tools scenario: the library's hub and endpoints, and the simulated
//! tool run either on tokio's blocking pool (the crate's `spawn_blocking`, 512 threads) or on a
//! `status_messenger::BlockingPool` of the server's own.
//!
//! Run with: cargo run --release -p status-messenger-tools --bin tool_server -- --tools pool --pool-threads 4096
//!
//! This is benchmark code, not part of the product. It speaks the part of the demo servers'
//! HTTP contract the load generator uses (`POST /api/sessions`, `POST /api/sessions/{id}/tasks`,
//! `GET /ws`, `GET /events`) with the demos' hub settings, so that the load generator can show
//! what happens when thousands of slow synchronous tools run at once: with `--tools tokio` the
//! 513th waits for a thread, with `--tools pool` (the default) every tool starts at once. A
//! task the pool has no room for is answered 503. Options: `--port` / `PORT` (default 3000, 0:
//! any free port), `--bind` / `BIND` (default `127.0.0.1`), `--pool-threads N` (default
//! 4,096), `--pool-queue N` (default 1,024). It prints `listening on http://ADDR:PORT` and stops
//! on Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::Deserialize;
use status_messenger::messenger::CURRENT_WEBSOCKET_SESSION_ID;
use status_messenger::{add_status_message, BlockingPool, BlockingPoolConfig, Hub, HubConfig};
use status_messenger_tools::server::shutdown_signal;

/// Where the simulated tools run.
#[derive(Clone)]
enum Tools {
    /// The crate's `spawn_blocking`: tokio's blocking pool.
    Tokio,
    Pool(BlockingPool),
}

#[derive(Clone)]
struct AppState {
    hub: Hub,
    tools: Tools,
}

#[derive(Deserialize)]
struct TaskRequest {
    steps: u32,
    delay_ms: u64,
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
fn random_id() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The simulated synchronous tool of the contract: `steps` statuses, `delay` apart.
fn simulated_tool(steps: u32, delay: Duration) {
    for step in 1..=steps {
        if step > 1 && !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let t_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        add_status_message(format!("step {step}/{steps} t_ns={t_ns}"));
    }
}

async fn create_session(State(state): State<AppState>) -> Response {
    let id = match random_id() {
        Ok(id) => id,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    match state.hub.open_session(&id).await {
        Ok(()) => json(StatusCode::CREATED, serde_json::json!({ "id": id })),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

async fn start_task(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if !matches!(state.hub.session_exists(&id).await, Ok(true)) {
        return error(StatusCode::NOT_FOUND, "unknown session");
    }
    let request: TaskRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid task: {e}")),
    };
    if !(1..=100_000).contains(&request.steps) || request.delay_ms > 60_000 {
        return error(StatusCode::BAD_REQUEST, "steps or delay_ms out of range");
    }
    let task = match random_id() {
        Ok(task) => task,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let (steps, delay) = (request.steps, Duration::from_millis(request.delay_ms));
    let tool = move || simulated_tool(steps, delay);
    // The session is set here, once; both ways of running the tool carry it to its thread.
    let accepted = CURRENT_WEBSOCKET_SESSION_ID.sync_scope(Some(id), || match &state.tools {
        Tools::Tokio => {
            drop(status_messenger::spawn_blocking(tool));
            true
        }
        Tools::Pool(pool) => pool.try_spawn(tool).is_ok(),
    });
    if !accepted {
        return error(StatusCode::SERVICE_UNAVAILABLE, "too many tools running");
    }
    json(StatusCode::ACCEPTED, serde_json::json!({ "task": task }))
}

struct Options {
    addr: SocketAddr,
    tools: String,
    pool: BlockingPoolConfig,
}

fn parse_args() -> Result<Options, String> {
    let mut port = std::env::var("PORT").unwrap_or_else(|_| String::from("3000"));
    let mut bind = std::env::var("BIND").unwrap_or_else(|_| String::from("127.0.0.1"));
    let mut tools = String::from("pool");
    let mut pool = BlockingPoolConfig {
        threads: 4096,
        queue: 1024,
        // A simple tool touches little of its stack; the default 2 MiB is address space only.
        stack_size: 256 * 1024,
        ..BlockingPoolConfig::default()
    };
    let mut args = std::env::args().skip(1);
    let number = |name: &str, raw: Option<String>| -> Result<usize, String> {
        let raw = raw.ok_or(format!("{name} needs a value"))?;
        raw.parse().map_err(|e| format!("bad {name} {raw:?}: {e}"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next().ok_or("--port needs a value")?,
            "--bind" => bind = args.next().ok_or("--bind needs a value")?,
            "--tools" => tools = args.next().ok_or("--tools needs a value")?,
            "--pool-threads" => pool.threads = number("--pool-threads", args.next())?,
            "--pool-queue" => pool.queue = number("--pool-queue", args.next())?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if tools != "pool" && tools != "tokio" {
        return Err(format!("--tools must be pool or tokio, not {tools:?}"));
    }
    let port: u16 = port
        .parse()
        .map_err(|e| format!("bad port {port:?}: {e}"))?;
    let ip = bind
        .parse()
        .map_err(|e| format!("bad bind {bind:?}: {e}"))?;
    Ok(Options {
        addr: SocketAddr::new(ip, port),
        tools,
        pool,
    })
}

async fn serve(options: Options) -> Result<(), Box<dyn std::error::Error>> {
    let mut config = HubConfig::default();
    config.history_capacity = config.history_capacity.max(1000);
    config.subscriber_buffer = config.subscriber_buffer.max(config.history_capacity);
    let hub = Hub::new(config)?;
    hub.attach_global()?;
    let tools = match options.tools.as_str() {
        "tokio" => Tools::Tokio,
        _ => Tools::Pool(BlockingPool::new(options.pool)?),
    };
    let app = Router::new()
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route("/api/sessions", post(create_session))
        .route("/api/sessions/{id}/tasks", post(start_task))
        .with_state(AppState {
            hub: hub.clone(),
            tools,
        })
        .merge(status_messenger::axum::router(hub))
        .layer(DefaultBodyLimit::max(64 * 1024));
    let listener = tokio::net::TcpListener::bind(options.addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}

fn main() {
    let options = match parse_args() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("tool_server: {e}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("tool_server: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(serve(options)) {
        eprintln!("tool_server: {e}");
        std::process::exit(1);
    }
    // Tools may still sleep on their threads; they hold nothing worth waiting for.
    runtime.shutdown_timeout(Duration::from_millis(200));
}
