//! MCP progress through rmcp (`status_messenger::mcp`), in-process with rmcp's own client and
//! server over a tokio duplex. A tap between them records every message the server writes, in
//! wire order, so the tests see exactly what a client gets and when: the progress
//! notifications of a call, and its result. The last test calls the axum demo's `/mcp` over
//! rmcp's streamable HTTP transport.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolRequestParams, ClientRequest, Request};
use rmcp::service::{PeerRequestOptions, RequestContext, RunningService};
use rmcp::{tool, tool_handler, tool_router, RoleClient, RoleServer, ServerHandler, ServiceExt};
use serde_json::{json, Value};
use status_messenger::mcp::{ProgressScope, PENDING_CAPACITY};
use status_messenger::StatusMessage;
use status_messenger::{add_status, add_status_message, is_cancelled, Hub, Messenger};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

// ---- the MCP server under test ----

#[derive(serde::Deserialize, rmcp::schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct StepsArgs {
    steps: u64,
    delay_ms: u64,
    /// A browser session to send the statuses to as well.
    session: Option<String>,
}

#[derive(serde::Deserialize, rmcp::schemars::JsonSchema)]
#[schemars(crate = "rmcp::schemars")]
struct BurstArgs {
    count: u64,
}

/// A synchronous tool in the style of the demo's: sleeps between steps, checks for a stop
/// right before each step, adds a structured status per step.
fn stepping_tool(steps: u64, delay: Duration, done: &AtomicU64) -> u64 {
    for step in 1..=steps {
        if step > 1 {
            std::thread::sleep(delay);
        }
        if is_cancelled() {
            return step - 1;
        }
        add_status(StatusMessage::new(format!("step {step}/{steps}")).progress(step, steps));
        done.store(step, Ordering::SeqCst);
    }
    steps
}

#[derive(Clone)]
struct ToolServer {
    /// The messenger the hub is attached to, the handlers' scoped default.
    messenger: Messenger,
    hub: Hub,
    /// Steps the last `steps` call completed, updated as it goes.
    done: Arc<AtomicU64>,
    /// When each `steps` call's tool returned, and how many steps it did.
    returned: tokio::sync::mpsc::UnboundedSender<(u64, Instant)>,
    /// When `gives_up` dropped its scope.
    gave_up: Arc<Mutex<Option<Instant>>>,
}

#[tool_router]
impl ToolServer {
    #[tool(description = "steps with a status each, on a blocking thread")]
    async fn steps(
        &self,
        Parameters(args): Parameters<StepsArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<String, rmcp::ErrorData> {
        let mut scope = ProgressScope::new(&context);
        if let Some(session) = &args.session {
            let task = self
                .hub
                .start_task(session)
                .map_err(|e| rmcp::ErrorData::invalid_params(e.to_string(), None))?;
            scope = scope.task(task);
        }
        let done = Arc::clone(&self.done);
        let delay = Duration::from_millis(args.delay_ms);
        let steps = self
            .messenger
            .scope(scope.run_blocking(move || stepping_tool(args.steps, delay, &done)))
            .await
            .map_err(|e| rmcp::ErrorData::internal_error(e.to_string(), None))?;
        let _ = self.returned.send((steps, Instant::now()));
        Ok(format!("did {steps} steps"))
    }

    #[tool(description = "statuses from async code, then waits for a stop")]
    async fn waits(&self, context: RequestContext<RoleServer>) -> String {
        let outcome = self
            .messenger
            .scope(ProgressScope::new(&context).run(async {
                add_status_message("from the handler's task");
                let spawned = status_messenger::spawn(async {
                    add_status_message("from a spawned task");
                });
                let _ = spawned.await;
                tokio::select! {
                    () = status_messenger::cancelled() => "stopped",
                    () = tokio::time::sleep(Duration::from_secs(60)) => "timed out",
                }
            }))
            .await;
        let _ = self
            .returned
            .send((u64::from(outcome == "stopped"), Instant::now()));
        outcome.to_owned()
    }

    #[tool(description = "gives up on a blocking tool after 100 ms, dropping its scope")]
    async fn gives_up(&self, context: RequestContext<RoleServer>) -> String {
        let done = Arc::clone(&self.done);
        let returned = self.returned.clone();
        let scope = ProgressScope::new(&context).run_blocking(move || {
            let steps = stepping_tool(1_000, Duration::from_millis(20), &done);
            let _ = returned.send((steps, Instant::now()));
        });
        match tokio::time::timeout(Duration::from_millis(100), scope).await {
            Ok(_) => "finished".to_owned(),
            Err(_) => {
                *self.gave_up.lock().unwrap() = Some(Instant::now());
                "gave up".to_owned()
            }
        }
    }

    #[tool(description = "a burst of statuses from one synchronous loop")]
    async fn burst(
        &self,
        Parameters(BurstArgs { count }): Parameters<BurstArgs>,
        context: RequestContext<RoleServer>,
    ) -> String {
        let scope = ProgressScope::new(&context);
        let report = scope.report();
        let inside = report.clone();
        let figures = scope
            .run_blocking(move || {
                let mut max_pending = 0;
                let started = Instant::now();
                for i in 1..=count {
                    add_status_message(format!("item {i}"));
                    if i % 1_000 == 0 {
                        max_pending = max_pending.max(inside.pending());
                    }
                }
                let send_ns = started.elapsed().as_nanos() as u64;
                (send_ns, inside.sent(), max_pending)
            })
            .await;
        let Ok((send_ns, sent_when_done, max_pending)) = figures else {
            return "the burst failed".to_owned();
        };
        json!({
            "send_ns": send_ns,
            "sent_when_done": sent_when_done,
            "max_pending": max_pending,
            "offered": report.offered(),
            "sent": report.sent(),
            "coalesced": report.coalesced(),
            "failed": report.failed(),
            "skipped": report.skipped(),
        })
        .to_string()
    }
}

#[tool_handler]
impl ServerHandler for ToolServer {}

// ---- the harness ----

/// What the server wrote, in wire order.
type Wire = Arc<Mutex<Vec<Value>>>;

struct Harness {
    client: RunningService<RoleClient, ()>,
    wire: Wire,
    hub: Hub,
    done: Arc<AtomicU64>,
    returned: tokio::sync::mpsc::UnboundedReceiver<(u64, Instant)>,
    gave_up: Arc<Mutex<Option<Instant>>>,
}

async fn start() -> Harness {
    let messenger = Messenger::new();
    let hub = Hub::new(Default::default()).expect("a hub");
    hub.attach(&messenger).expect("attached");
    let (returned_tx, returned) = tokio::sync::mpsc::unbounded_channel();
    let done = Arc::new(AtomicU64::new(0));
    let gave_up = Arc::new(Mutex::new(None));
    let server = ToolServer {
        gave_up: Arc::clone(&gave_up),
        messenger,
        hub: hub.clone(),
        done: Arc::clone(&done),
        returned: returned_tx,
    };
    let (server_io, tap_server_side) = tokio::io::duplex(1 << 16);
    let (tap_client_side, client_io) = tokio::io::duplex(1 << 16);
    tokio::spawn(async move {
        if let Ok(running) = server.serve(server_io).await {
            let _ = running.waiting().await;
        }
    });
    let wire: Wire = Arc::default();
    let (from_server, mut to_server) = tokio::io::split(tap_server_side);
    let (mut from_client, mut to_client) = tokio::io::split(tap_client_side);
    tokio::spawn(async move { tokio::io::copy(&mut from_client, &mut to_server).await });
    let recorded = Arc::clone(&wire);
    tokio::spawn(async move {
        let mut lines = BufReader::new(from_server).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Ok(message) = serde_json::from_str::<Value>(&line) {
                recorded.lock().unwrap().push(message);
            }
            if to_client.write_all(line.as_bytes()).await.is_err()
                || to_client.write_all(b"\n").await.is_err()
            {
                break;
            }
        }
    });
    let client = ().serve(client_io).await.expect("client connected");
    Harness {
        client,
        wire,
        hub,
        done,
        returned,
        gave_up,
    }
}

fn call(name: &'static str, arguments: Value) -> ClientRequest {
    let Value::Object(arguments) = arguments else {
        panic!("arguments are an object")
    };
    ClientRequest::CallToolRequest(Request::new(
        CallToolRequestParams::new(name).with_arguments(arguments),
    ))
}

/// The progress notifications of `token` and the index of the response to `id` on the wire.
fn progress_of(wire: &[Value], token: &Value, id: &Value) -> (Vec<(usize, Value)>, Option<usize>) {
    let progress = wire
        .iter()
        .enumerate()
        .filter(|(_, m)| {
            m["method"] == "notifications/progress" && &m["params"]["progressToken"] == token
        })
        .map(|(i, m)| (i, m["params"].clone()))
        .collect();
    let response = wire
        .iter()
        .position(|m| &m["id"] == id && (m.get("result").is_some() || m.get("error").is_some()));
    (progress, response)
}

fn result_text(wire: &[Value], response: usize) -> String {
    wire[response]["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

// ---- the tests ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_arrives_in_order_with_the_texts_and_none_after_the_result() {
    let h = start().await;
    let steps = 8;
    let handle = h
        .client
        .send_cancellable_request(
            call("steps", json!({ "steps": steps, "delay_ms": 30 })),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    let (token, id) = (
        serde_json::to_value(&handle.progress_token).unwrap(),
        serde_json::to_value(&handle.id).unwrap(),
    );
    handle.await_response().await.expect("a result");
    // Anything sent late would arrive within this.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let wire = h.wire.lock().unwrap().clone();
    let (progress, response) = progress_of(&wire, &token, &id);
    let response = response.expect("the response is on the wire");
    assert_eq!(result_text(&wire, response), format!("did {steps} steps"));

    assert!(
        progress.iter().all(|(at, _)| *at < response),
        "a progress notification came after the result"
    );
    let values: Vec<f64> = progress
        .iter()
        .map(|(_, p)| p["progress"].as_f64().unwrap())
        .collect();
    assert!(
        values.windows(2).all(|w| w[0] < w[1]),
        "progress not strictly increasing: {values:?}"
    );
    // Steps 30 ms apart are each sent before the next comes: every text, in order, with the
    // structured status's progress and total.
    let texts: Vec<&str> = progress
        .iter()
        .map(|(_, p)| p["message"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (1..=steps).map(|i| format!("step {i}/{steps}")).collect();
    assert_eq!(texts, expected);
    for (i, (_, p)) in progress.iter().enumerate() {
        assert_eq!(p["progress"], json!((i + 1) as f64));
        assert_eq!(p["total"], json!(steps as f64));
    }
    // No browser session: the statuses went to the MCP client only, none to the hub.
    assert_eq!(h.hub.stats().dropped_no_session, 0);
    println!(
        "{} progress notifications, all before the result",
        progress.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cancel_stops_a_blocking_tool_before_its_next_step() {
    let mut h = start().await;
    let (steps, delay_ms) = (50, 100);
    let handle = h
        .client
        .send_cancellable_request(
            call("steps", json!({ "steps": steps, "delay_ms": delay_ms })),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    let token = serde_json::to_value(&handle.progress_token).unwrap();
    // Wait until the client has seen step 3.
    let deadline = Instant::now() + Duration::from_secs(20);
    let seen = loop {
        let seen = h
            .wire
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m["params"]["progressToken"] == token)
            .count() as u64;
        if seen >= 3 {
            break seen;
        }
        assert!(Instant::now() < deadline, "no progress from the tool");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // What the tool had done when the cancel went out: a loaded machine may have let it take
    // more steps than the client saw.
    let done_at_cancel = h.done.load(Ordering::SeqCst);
    let cancelled_at = Instant::now();
    handle.cancel(Some("stop".to_owned())).await.unwrap();
    let (did, returned_at) = tokio::time::timeout(Duration::from_secs(10), h.returned.recv())
        .await
        .expect("the tool returned")
        .unwrap();
    let took = returned_at - cancelled_at;
    println!("cancelled after {seen} steps seen; the tool did {did}, returned {took:?} after");
    assert_eq!(did, h.done.load(Ordering::SeqCst));
    // At most the step the tool was taking when the cancel arrived; none after.
    assert!(
        did <= done_at_cancel + 1,
        "the tool went on: {did} steps after {done_at_cancel} done at the cancel ({seen} seen)"
    );
    assert!(did < steps);
    assert!(
        took < Duration::from_millis(delay_ms) + Duration::from_secs(1),
        "the tool took {took:?} to stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_scope_stops_its_blocking_tool() {
    let mut h = start().await;
    let handle = h
        .client
        .send_cancellable_request(
            call("gives_up", json!({})),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    handle.await_response().await.expect("a result");
    let (did, returned_at) = tokio::time::timeout(Duration::from_secs(10), h.returned.recv())
        .await
        .expect("the tool returned")
        .unwrap();
    let given_up_at = h.gave_up.lock().unwrap().expect("the handler gave up");
    println!(
        "the tool did {did} steps, returned {:?} after the scope was dropped",
        returned_at - given_up_at
    );
    assert!(did < 1_000, "the tool ran on after its scope was dropped");
    assert!(returned_at - given_up_at < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_tool_code_reports_and_awaits_the_client_cancel() {
    let mut h = start().await;
    let handle = h
        .client
        .send_cancellable_request(call("waits", json!({})), PeerRequestOptions::no_options())
        .await
        .unwrap();
    let token = serde_json::to_value(&handle.progress_token).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let texts = loop {
        let texts: Vec<Value> = h
            .wire
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m["params"]["progressToken"] == token)
            .map(|m| m["params"]["message"].clone())
            .collect();
        if texts.len() >= 2 {
            break texts;
        }
        assert!(Instant::now() < deadline, "no progress from the tool");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(
        texts,
        [
            json!("from the handler's task"),
            json!("from a spawned task")
        ]
    );
    handle.cancel(None).await.unwrap();
    let (stopped, _) = tokio::time::timeout(Duration::from_secs(10), h.returned.recv())
        .await
        .expect("the tool returned")
        .unwrap();
    assert_eq!(stopped, 1, "`cancelled()` completed on the client's cancel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_browser_session_the_same_statuses_reach_its_websocket_and_mcp() {
    let h = start().await;
    let session = "0123456789abcdef0123456789abcdef";
    h.hub.open_session(session).await.unwrap();
    let app: axum::Router = status_messenger::axum::router(h.hub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?session={session}"))
        .await
        .expect("the session's WebSocket");

    let steps = 5;
    let handle = h
        .client
        .send_cancellable_request(
            call(
                "steps",
                json!({ "steps": steps, "delay_ms": 30, "session": session }),
            ),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    let token = serde_json::to_value(&handle.progress_token).unwrap();
    handle.await_response().await.expect("a result");

    // The page: every status, and the task's end.
    let mut page_texts = Vec::new();
    let mut task_states = Vec::new();
    while !task_states.iter().any(|s| s == "finished") {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame")
            .expect("the stream is open")
            .unwrap();
        let Message::Text(text) = frame else { continue };
        let frame: Value = serde_json::from_str(&text).unwrap();
        match frame["type"].as_str() {
            None | Some("status") => page_texts.push(frame["text"].as_str().unwrap().to_owned()),
            Some("task") => task_states.push(frame["state"].as_str().unwrap().to_owned()),
            Some(_) => {}
        }
    }
    let wire = h.wire.lock().unwrap().clone();
    let mcp_texts: Vec<String> = wire
        .iter()
        .filter(|m| m["params"]["progressToken"] == token)
        .map(|m| m["params"]["message"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (1..=steps).map(|i| format!("step {i}/{steps}")).collect();
    assert_eq!(page_texts, expected, "the page's statuses");
    assert_eq!(mcp_texts, expected, "the MCP client's progress");
    assert_eq!(task_states.first().map(String::as_str), Some("running"));
    assert_eq!(task_states.last().map(String::as_str), Some("finished"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_100000_statuses_does_not_block_the_tool_and_stays_bounded() {
    let h = start().await;
    let count: u64 = 100_000;
    // The baseline from this run: the same loop into a plain messenger no one reads.
    let baseline = Messenger::new();
    let baseline_ns = tokio::task::spawn_blocking(move || {
        status_messenger::with_default(&baseline, || {
            let started = Instant::now();
            for i in 1..=count {
                add_status_message(format!("item {i}"));
            }
            started.elapsed().as_nanos() as u64
        })
    })
    .await
    .unwrap();

    let handle = h
        .client
        .send_cancellable_request(
            call("burst", json!({ "count": count })),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    let (token, id) = (
        serde_json::to_value(&handle.progress_token).unwrap(),
        serde_json::to_value(&handle.id).unwrap(),
    );
    handle.await_response().await.expect("a result");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let wire = h.wire.lock().unwrap().clone();
    let (progress, response) = progress_of(&wire, &token, &id);
    let response = response.expect("the response");
    let figures: Value = serde_json::from_str(&result_text(&wire, response)).unwrap();
    println!(
        "burst of {count}: tool's send time {} ms ({} ns/status; plain messenger {} ns/status), \
         {} progress sent ({} by the loop's end), {} coalesced, max pending {}",
        figures["send_ns"].as_u64().unwrap() / 1_000_000,
        figures["send_ns"].as_u64().unwrap() / count,
        baseline_ns / count,
        figures["sent"],
        figures["sent_when_done"],
        figures["coalesced"],
        figures["max_pending"],
    );
    // Never waited for the client: the loop ended long before one notification per status
    // could have been sent.
    assert!(figures["sent_when_done"].as_u64().unwrap() < count);
    // Bounded: a few notifications wait at most, the rest were coalesced, none lost unaccounted.
    assert!(figures["max_pending"].as_u64().unwrap() <= PENDING_CAPACITY as u64);
    assert_eq!(figures["offered"], json!(count));
    let sent = figures["sent"].as_u64().unwrap();
    let coalesced = figures["coalesced"].as_u64().unwrap();
    assert!(coalesced > 0, "a burst faster than the client is coalesced");
    assert_eq!(
        sent + coalesced
            + figures["failed"].as_u64().unwrap()
            + figures["skipped"].as_u64().unwrap(),
        count
    );
    assert_eq!(
        progress.len() as u64,
        sent,
        "what the report counts is what the wire carries"
    );
    // Coalescing keeps the newest: the last status is the last notification, still increasing.
    let values: Vec<f64> = progress
        .iter()
        .map(|(_, p)| p["progress"].as_f64().unwrap())
        .collect();
    assert!(values.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(
        progress.last().unwrap().1["message"],
        json!(format!("item {count}"))
    );
    assert_eq!(values.last().copied(), Some(count as f64));
    assert!(progress.iter().all(|(at, _)| *at < response));
}

// ---- the demo's `/mcp` ----

/// A client that keeps every progress notification it is handed.
#[derive(Clone, Default)]
struct Collecting {
    progress: Arc<Mutex<Vec<rmcp::model::ProgressNotificationParam>>>,
}

impl rmcp::ClientHandler for Collecting {
    async fn on_progress(
        &self,
        params: rmcp::model::ProgressNotificationParam,
        _context: rmcp::service::NotificationContext<RoleClient>,
    ) {
        self.progress.lock().unwrap().push(params);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_the_simulated_tool_at_mcp_to_the_page_and_the_client() {
    let server = support::demo::Demo::Axum.start(&[]);
    let session = support::create_session(&server).await;
    let mut ws = support::ws_connect(&server, &session, None).await;

    let collecting = Collecting::default();
    let transport = rmcp::transport::StreamableHttpClientTransport::from_uri(server.url("/mcp"));
    let client = collecting
        .clone()
        .serve(transport)
        .await
        .expect("an MCP session");
    let steps = 4;
    let result = client
        .call_tool(
            CallToolRequestParams::new("simulated_tool").with_arguments(
                json!({ "steps": steps, "delay_ms": 20, "session": session })
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await
        .expect("a result");
    assert_eq!(
        result.content[0].as_text().map(|t| t.text.as_str()),
        Some(format!("done: {steps} steps").as_str())
    );

    let mut page = Vec::new();
    while page.len() < steps {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a frame")
            .expect("the stream is open")
            .unwrap();
        let Message::Text(text) = frame else { continue };
        let frame: Value = serde_json::from_str(&text).unwrap();
        if frame.get("type").is_none() || frame["type"] == "status" {
            page.push(frame["text"].as_str().unwrap().to_owned());
        }
    }
    // The client's handler runs each notification on a task of its own, which may finish
    // after the result is handed over: wait for them, then sort them by progress.
    let deadline = Instant::now() + Duration::from_secs(10);
    while collecting.progress.lock().unwrap().len() < steps && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut progress = collecting.progress.lock().unwrap().clone();
    progress.sort_by(|a, b| a.progress.total_cmp(&b.progress));
    let mcp: Vec<String> = progress.iter().filter_map(|p| p.message.clone()).collect();
    assert_eq!(mcp, page);
    assert!(page[0].starts_with(&format!("step 1/{steps} t_ns=")));
    let _ = client.cancel().await;
    server.stop().await.unwrap();
}

/// A run cancelled from the page (`POST /cancel` on the session it shows in) ends the MCP call
/// with a tool error that says so, not with a success; and the tool's schema gives the ranges
/// the demo takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_answers_a_run_cancelled_from_the_page_as_a_tool_error() {
    let server = support::demo::Demo::Axum.start(&[]);
    let http = support::http();
    let session = support::create_session(&server).await;
    let mut ws = support::ws_connect(&server, &session, None).await;
    let transport = rmcp::transport::StreamableHttpClientTransport::from_uri(server.url("/mcp"));
    let client = Collecting::default()
        .serve(transport)
        .await
        .expect("an MCP session");

    let tools = client.list_all_tools().await.expect("the tools");
    let schema = Value::Object((*tools[0].input_schema).clone());
    let steps = &schema["properties"]["steps"];
    assert_eq!(
        (steps["minimum"].as_u64(), steps["maximum"].as_u64()),
        (Some(1), Some(100_000)),
        "{schema}"
    );
    assert_eq!(
        schema["properties"]["delay_ms"]["maximum"].as_u64(),
        Some(60_000),
        "{schema}"
    );

    let call = CallToolRequestParams::new("simulated_tool").with_arguments(
        json!({ "steps": 50, "delay_ms": 100, "session": session })
            .as_object()
            .unwrap()
            .clone(),
    );
    let running = {
        let peer = client.peer().clone();
        tokio::spawn(async move { peer.call_tool(call).await })
    };
    // The run's task, from its first status on the page.
    let task = loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), support::ws_next_any(&mut ws))
            .await
            .expect("a frame")
            .expect("the stream is open");
        if frame["seq"] == 1 {
            break frame["task"]
                .as_str()
                .expect("the status's task")
                .to_owned();
        }
    };
    let cancel = http
        .post(server.url(&format!("/cancel?session={session}&task={task}")))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 202);
    let result = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the call ends")
        .unwrap()
        .expect("a result");
    assert_eq!(result.is_error, Some(true), "{result:?}");
    let text = result.content[0]
        .as_text()
        .map(|t| t.text.clone())
        .unwrap_or_default();
    assert!(
        text.starts_with("cancelled after ") && text.ends_with(" of 50 steps"),
        "{text}"
    );
    let _ = client.cancel().await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_refuses_an_mcp_body_over_64_kib_with_413() {
    let server = support::demo::Demo::Axum.start(&[]);
    let http = support::http();
    // A well-formed JSON-RPC request whose arguments carry 100 KiB of padding.
    let padding = "x".repeat(100 * 1024);
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2025-03-26", "capabilities": {},
                    "clientInfo": { "name": "t", "version": "1" }, "padding": padding },
    })
    .to_string();
    assert!(body.len() > 100 * 1024);
    let response = http
        .post(server.url("/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    // A small request on the same endpoint is still served.
    let small = http
        .post(server.url("/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(
            json!({
                "jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": { "protocolVersion": "2025-03-26", "capabilities": {},
                            "clientInfo": { "name": "t", "version": "1" } },
            })
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(small.status(), 200);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_answers_408_to_an_mcp_body_that_stalls() {
    let server = support::demo::Demo::Axum.start(&["--body-timeout", "1"]);
    let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: 1000\r\n\r\n{{",
        server.addr
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut lines = BufReader::new(socket).lines();
    let status = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("an answer before the client's own timeout")
        .unwrap()
        .unwrap_or_default();
    assert!(status.starts_with("HTTP/1.1 408"), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_refuses_an_mcp_call_beyond_its_call_limit_with_a_busy_error_to_retry() {
    let server = support::demo::Demo::Axum.start(&["--mcp-max-calls", "1"]);
    let connect = || async {
        let collecting = Collecting::default();
        let transport =
            rmcp::transport::StreamableHttpClientTransport::from_uri(server.url("/mcp"));
        let client = collecting
            .clone()
            .serve(transport)
            .await
            .expect("an MCP session");
        (collecting, client)
    };
    let slow = |steps: u64| {
        CallToolRequestParams::new("simulated_tool").with_arguments(
            json!({ "steps": steps, "delay_ms": 500 })
                .as_object()
                .unwrap()
                .clone(),
        )
    };
    let (first_progress, first) = connect().await;
    let (_, second) = connect().await;
    // The first call, without a session, holds the one permit while it runs.
    let running = {
        let peer = first.peer().clone();
        let call = slow(6);
        tokio::spawn(async move { peer.call_tool(call).await })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while first_progress.progress.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the first call never reported");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refused = second.call_tool(slow(1)).await;
    let Err(rmcp::ServiceError::McpError(error)) = refused else {
        panic!("not refused as busy: {refused:?}");
    };
    assert_eq!(error.code.0, -32000, "{error:?}");
    assert!(error.message.contains("retry"), "{}", error.message);
    assert_eq!(error.data, Some(json!({ "retry_after": 1 })));

    // The first call still finishes, and with its permit back the next call runs.
    let done = running.await.unwrap().expect("the first call's result");
    assert_eq!(
        done.content[0].as_text().map(|t| t.text.as_str()),
        Some("done: 6 steps")
    );
    let again = second
        .call_tool(slow(1))
        .await
        .expect("a permit is free again");
    assert_eq!(
        again.content[0].as_text().map(|t| t.text.as_str()),
        Some("done: 1 steps")
    );
    let _ = first.cancel().await;
    let _ = second.cancel().await;
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_tells_an_unknown_mcp_session_as_invalid_params() {
    let server = support::demo::Demo::Axum.start(&[]);
    let transport = rmcp::transport::StreamableHttpClientTransport::from_uri(server.url("/mcp"));
    let client = Collecting::default()
        .serve(transport)
        .await
        .expect("an MCP session");
    let refused = client
        .call_tool(
            CallToolRequestParams::new("simulated_tool").with_arguments(
                json!({ "steps": 1, "delay_ms": 0, "session": "0".repeat(32) })
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await;
    let Err(rmcp::ServiceError::McpError(error)) = refused else {
        panic!("not refused: {refused:?}");
    };
    assert_eq!(
        error.code,
        rmcp::model::ErrorCode::INVALID_PARAMS,
        "{error:?}"
    );
    assert!(
        error.message.contains("unknown session"),
        "{}",
        error.message
    );
    let _ = client.cancel().await;
    server.stop().await.unwrap();
}

// ---- compile-time checks ----

/// The scope, its futures and its report cross threads, as rmcp's handlers need.
#[allow(dead_code)]
fn the_scope_and_its_futures_are_send(context: RequestContext<RoleServer>) {
    fn send<T: Send>(_: &T) {}
    fn send_sync<T: Send + Sync>(_: &T) {}
    let scope = ProgressScope::new(&context);
    send_sync(&scope.report());
    send(&scope);
    send(&ProgressScope::new(&context).run(async {}));
    send(&ProgressScope::new(&context).run_blocking(|| ()));
}
