//! A minimal axum server built only from the library's public API (the shape of the
//! `status_messenger::axum` docs), in-process, against the endpoints' contract cases.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use status_messenger::web::{Endpoints, Refusal};
use status_messenger::{add_status, is_cancelled, spawn_blocking, Hub, StatusMessage};
use support::{Server, Shutdown};

// ---- the user's server ----

/// The tool: synchronous code that never sees the session nor its task (the demos' simulated
/// tool): it asks whether it was cancelled before each step and reports each with its progress.
fn tool(steps: u32, delay: Duration) {
    for step in 1..=steps {
        if step > 1 {
            std::thread::sleep(delay);
        }
        if is_cancelled() {
            return;
        }
        let t_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        add_status(
            StatusMessage::new(format!("step {step}/{steps} t_ns={t_ns}"))
                .progress(u64::from(step), u64::from(steps)),
        );
    }
}

async fn create_session(State(hub): State<Hub>) -> Result<(StatusCode, Json<Value>), Refusal> {
    let id = hub
        .create_session()
        .await
        .map_err(|e| Refusal::from_open_error(&e))?;
    Ok((StatusCode::CREATED, Json(json!({ "id": id }))))
}

#[derive(Deserialize)]
struct Task {
    steps: u32,
    delay_ms: u64,
}

async fn start_task(
    State(hub): State<Hub>,
    Path(id): Path<String>,
    Json(task): Json<Task>,
) -> Result<(StatusCode, Json<Value>), Refusal> {
    if !hub.session_exists(&id).await.unwrap_or(false) {
        return Err(Refusal::not_found("unknown session"));
    }
    let delay = Duration::from_millis(task.delay_ms);
    let run = hub
        .start_task(&id)
        .map_err(|e| Refusal::from_start_task(&e))?;
    let (steps, answer) = (task.steps, Json(json!({ "task": run.id() })));
    spawn_blocking(move || run.run(|| tool(steps, delay)));
    Ok((StatusCode::ACCEPTED, answer))
}

fn app(endpoints: &Endpoints) -> Router {
    Router::new()
        .route("/api/sessions", post(create_session))
        .route("/api/sessions/{id}/tasks", post(start_task))
        .with_state(endpoints.hub().clone())
        .merge(endpoints.router())
}

// ---- the test's harness ----

fn start_with(endpoints: Endpoints) -> Server {
    Server::start(move |listener, shutdown: Shutdown| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let router = app(&endpoints);
            let stop = async move {
                shutdown.await;
                endpoints.shutdown(support::WAIT).await;
            };
            axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await
        })
    })
}

fn start() -> Server {
    start_with(Endpoints::new(support::shared_hub()))
}

support::integration_cases!(start);
support::endpoint_cases!(start_with);

/// Nested under a prefix, the endpoints answer there and nowhere else.
#[tokio::test]
async fn endpoints_nest_under_a_prefix() {
    let hub = support::private_hub(100);
    hub.open_session("s1").await.unwrap();
    let app: Router = Router::new().nest("/live", status_messenger::axum::router(hub.clone()));
    let server = Server::start(move |listener, shutdown: Shutdown| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        })
    });
    hub.publish(Some("s1"), "nested").unwrap();
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/live/ws?session=s1", server.addr))
            .await
            .expect("upgrade under the prefix");
    assert_eq!(
        support::ws_next(&mut ws).await.expect("a frame")["text"],
        "nested"
    );
    let js = support::http()
        .get(server.url("/live/status-messenger.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(js.status(), 200);
    let outside = support::http()
        .get(server.url("/status-messenger.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(outside.status(), 404);
}
