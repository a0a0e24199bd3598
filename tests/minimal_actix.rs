//! A minimal actix-web server built only from the library's public API (the shape of the
//! `status_messenger::actix` docs), in-process, against the endpoints' contract cases.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::{web, App, HttpResponse, HttpServer};
use serde::Deserialize;
use serde_json::json;
use status_messenger::web::{Endpoints, Refusal};
use status_messenger::{add_status, is_cancelled, Hub, StatusMessage};
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

async fn create_session(hub: web::Data<Hub>) -> Result<HttpResponse, Refusal> {
    let id = hub
        .create_session()
        .await
        .map_err(|e| Refusal::from_open_error(&e))?;
    Ok(HttpResponse::Created().json(json!({ "id": id })))
}

#[derive(Deserialize)]
struct Task {
    steps: u32,
    delay_ms: u64,
}

async fn start_task(
    hub: web::Data<Hub>,
    id: web::Path<String>,
    task: web::Json<Task>,
) -> Result<HttpResponse, Refusal> {
    if !hub.session_exists(&id).await.unwrap_or(false) {
        return Err(Refusal::not_found("unknown session"));
    }
    let (steps, delay) = (task.steps, Duration::from_millis(task.delay_ms));
    let run = hub
        .start_task(&id)
        .map_err(|e| Refusal::from_start_task(&e))?;
    let answer = json!({ "task": run.id() });
    actix_web::rt::spawn(web::block(move || run.run(|| tool(steps, delay))));
    Ok(HttpResponse::Accepted().json(answer))
}

fn configure(endpoints: &Endpoints) -> impl FnOnce(&mut web::ServiceConfig) {
    let hub = web::Data::new(endpoints.hub().clone());
    let streams = endpoints.configure();
    move |config| {
        config
            .app_data(hub)
            .route("/api/sessions", web::post().to(create_session))
            .route("/api/sessions/{id}/tasks", web::post().to(start_task))
            .configure(streams);
    }
}

// ---- the test's harness ----

fn start_with(endpoints: Endpoints) -> Server {
    Server::start(move |listener, shutdown: Shutdown| {
        actix_web::rt::System::new().block_on(async move {
            let server = HttpServer::new({
                let endpoints = endpoints.clone();
                move || App::new().configure(configure(&endpoints))
            })
            .workers(2)
            .disable_signals()
            .listen(listener)?
            .run();
            let handle = server.handle();
            actix_web::rt::spawn(async move {
                shutdown.await;
                endpoints.shutdown(support::WAIT).await;
                handle.stop(true).await;
            });
            server.await
        })
    })
}

fn start() -> Server {
    start_with(Endpoints::new(support::shared_hub()))
}

support::integration_cases!(start);
support::endpoint_cases!(start_with);
