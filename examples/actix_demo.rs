//! Run with: cargo run --release --example actix_demo [-- --port 3000 --bind 127.0.0.1]
//!
//! The status-messenger demo on actix-web: the same page and HTTP contract as `axum_demo`.
//!
//! actix runs blocking work on its own pool (`web::block`), which knows nothing about
//! sessions, so the handler captures a [`SessionContext`] where the session is set and the
//! blocking closure [`run`](SessionContext::run)s the tool inside it.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::process::ExitCode;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, ContentType};
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_ws::{CloseCode, CloseReason, Message};
use futures_util::StreamExt;
use status_messenger::{with_session_id, Hub, SessionContext, Subscription};

#[path = "common/mod.rs"]
pub(crate) mod common;

use common::{OpenStreams, StreamGuard, TaskSpec};

/// What every handler shares.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) hub: Hub,
    pub(crate) streams: OpenStreams,
}

impl AppState {
    pub(crate) fn new(hub: Hub) -> web::Data<AppState> {
        web::Data::new(AppState {
            hub,
            streams: OpenStreams::default(),
        })
    }
}

/// The demo's routes for one actix worker; tests drive it on their own listener.
pub(crate) fn app(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        .service(web::resource("/").get(index))
        .service(web::resource("/healthz").get(healthz))
        .service(web::resource("/api/sessions").post(create_session))
        .service(web::resource("/api/sessions/{id}/tasks").post(start_task))
        .service(web::resource("/ws").get(ws))
        .service(web::resource("/events").get(events))
        .service(web::resource("/metrics").get(metrics))
        .default_service(web::to(|| async {
            error(StatusCode::NOT_FOUND, "not found")
        }))
}

/// Serves `app` on `listener` until `shutdown` resolves, then closes every open stream
/// (WebSocket clients get a close frame, SSE responses end) and returns. Runs inside an
/// actix `System`.
pub(crate) async fn serve(
    listener: std::net::TcpListener,
    hub: Hub,
    shutdown: impl Future<Output = ()> + 'static,
) -> io::Result<()> {
    let state = AppState::new(hub.clone());
    let streams = state.streams.clone();
    let server = HttpServer::new(move || app(state.clone()))
        // Signals are ours: the hub must end the long-lived streams before actix waits for
        // connections to finish.
        .disable_signals()
        .shutdown_timeout(common::STREAM_CLOSE_GRACE.as_secs())
        .listen(listener)?
        .run();
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: closing open streams");
        hub.shutdown().await;
        let left = streams.wait_closed(common::STREAM_CLOSE_GRACE).await;
        if left > 0 {
            tracing::warn!(left, "streams still open at exit");
        }
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
    let hub = config.hub().await?;
    // Statuses go from the tool's thread straight into the hub: nothing piles up in a channel
    // while many tools run at once, and no consumer task has to be scheduled in between.
    hub.attach_global()?;
    let listener = std::net::TcpListener::bind((config.bind.as_str(), config.port))?;
    println!("listening on http://{}", listener.local_addr()?);
    serve(listener, hub, common::shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

fn error(status: StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status)
        .content_type(ContentType::json())
        .body(common::error_json(message))
}

fn refused(refusal: common::Refusal) -> HttpResponse {
    let status = StatusCode::from_u16(refusal.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error(status, &refusal.message)
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

async fn create_session(state: web::Data<AppState>) -> HttpResponse {
    match common::create_session(&state.hub).await {
        Ok(id) => HttpResponse::Created()
            .content_type(ContentType::json())
            .body(serde_json::json!({ "id": id }).to_string()),
        Err(refusal) => refused(refusal),
    }
}

/// Reads at most [`common::MAX_BODY_BYTES`]; a longer body is answered 413 without reading
/// the rest.
async fn read_body(req: &HttpRequest, mut payload: web::Payload) -> Result<Vec<u8>, HttpResponse> {
    let too_large = || error(StatusCode::PAYLOAD_TOO_LARGE, "the body is over 64 KiB");
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > common::MAX_BODY_BYTES) {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| error(StatusCode::BAD_REQUEST, &e.to_string()))?;
        if body.len() + chunk.len() > common::MAX_BODY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn start_task(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let session = req.match_info().get("id").map(str::to_owned);
    if let Err(refusal) = common::check_session(&state.hub, session.as_deref()).await {
        return refused(refusal);
    }
    let body = match read_body(&req, payload).await {
        Ok(body) => body,
        Err(response) => return response,
    };
    let spec = match common::parse_task(&body) {
        Ok(spec) => spec,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let task = match common::new_id() {
        Ok(task) => task,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    // The session is set here, once; the tool itself never sees it.
    actix_web::rt::spawn(with_session_id(session.unwrap_or_default(), run_task(spec)));
    HttpResponse::Accepted()
        .content_type(ContentType::json())
        .body(serde_json::json!({ "task": task }).to_string())
}

/// Runs the tool on actix's blocking pool, carrying the current session there.
async fn run_task(spec: TaskSpec) {
    let session = SessionContext::current();
    let tool = web::block(move || session.run(|| common::simulated_tool(spec.steps, spec.delay)));
    if let Err(e) = tool.await {
        tracing::error!(error = %e, "the simulated tool failed");
    }
}

async fn ws(req: HttpRequest, body: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    let query = common::Query::parse(Some(req.query_string()));
    let session = query.get("session");
    if let Err(refusal) = common::check_session(&state.hub, session).await {
        return refused(refusal);
    }
    let after = match common::ws_resume_point(&query) {
        Ok(after) => after,
        Err(refusal) => return refused(refusal),
    };
    let Ok((response, ws_session, incoming)) = actix_ws::handle(&req, body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "expected a WebSocket upgrade request",
        );
    };
    let subscription = state.hub.subscribe(session.unwrap_or_default(), after);
    let guard = state.streams.enter();
    let incoming = incoming.max_frame_size(common::MAX_WS_MESSAGE_BYTES);
    actix_web::rt::spawn(forward(ws_session, incoming, subscription, guard));
    response
}

async fn forward(
    mut session: actix_ws::Session,
    mut incoming: actix_ws::MessageStream,
    mut subscription: Subscription,
    _guard: StreamGuard,
) {
    loop {
        tokio::select! {
            event = subscription.next() => match event {
                Some(event) => {
                    if session.text(common::event_json(&event).0).await.is_err() {
                        return;
                    }
                }
                None => {
                    // The session was closed or the server is shutting down.
                    let reason = CloseReason {
                        code: CloseCode::Away,
                        description: Some("stream ended".to_owned()),
                    };
                    let _ = session.close(Some(reason)).await;
                    return;
                }
            },
            frame = incoming.next() => match frame {
                Some(Ok(Message::Ping(bytes))) => {
                    if session.pong(&bytes).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    let _ = session.close(None).await;
                    return;
                }
                // Other client frames are ignored.
                Some(Ok(_)) => {}
            },
        }
    }
}

async fn events(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let query = common::Query::parse(Some(req.query_string()));
    let session = query.get("session");
    if let Err(refusal) = common::check_session(&state.hub, session).await {
        return refused(refusal);
    }
    let header_id = req
        .headers()
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("invalid"));
    let after = match common::sse_resume_point(header_id, query.get("last_event_id")) {
        Ok(after) => after,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let subscription = state.hub.subscribe(session.unwrap_or_default(), after);
    let body = common::sse_stream(subscription, state.streams.enter())
        .map(|chunk| Ok::<_, Infallible>(web::Bytes::from(chunk)));
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body)
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(common::metrics_text(&state.hub.stats()))
}
