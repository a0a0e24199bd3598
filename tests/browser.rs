//! The demo page and the browser client in real headless Chromium, driven through chromedriver
//! (WebDriver).
//!
//! The demo page, on the demo servers run as processes: isolation between pages, resume after a
//! reload, a drop or a transport switch, and Stop, which ends the task on every open tab and
//! after a reload; and on a minimal in-process server of the public API that serves the same
//! page, so the test can publish any status: gap items, status text that is never treated as
//! HTML, levels, keyed statuses kept in place, progress and a failed task's message.
//!
//! The client module itself, on a test page that records every callback, behind a TCP proxy
//! the test controls: reload mid-task, connections cut mid-task, a stalled connection (the
//! client reconnects after its watchdog), `offline`/`online`, a gap reported once, a switch of
//! transport. In each, every status arrives once and in order, or is covered by a gap exactly
//! once.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and
//! `chromium-driver`; `CHROMIUM` / `CHROMEDRIVER` override the paths). Without them the tests
//! print why and pass, unless `CI` is set, where a missing browser is a failure.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use status_messenger::web::Endpoints;
use status_messenger::{Hub, Level, StatusMessage};
use support::demo::Demo;
use support::proxy::Proxy;
use support::{Server, Shutdown};

/// Browsers are heavy: one test at a time keeps timings sane on small machines.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(30);

/// A demo server process.
fn start_demo(demo: Demo) -> Server {
    demo.start(&[])
}

/// The demo's page, read from the repository as the demos serve it.
fn demo_page() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/common/page.html");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A page that follows one session with the client and records every callback in
/// `window.log` (kept in `sessionStorage`, so a reload goes on from where it was) and every
/// state in `window.states`. Query: `session`, `transport`, `options` (JSON for `connect`; a
/// number `random` becomes a constant jitter, `fakeOnline` puts `navigator.onLine` under the
/// test's control as `window.online`).
const CLIENT_PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>client test</title>
<script type="module">
import { connect } from "./status-messenger.js";
const params = new URLSearchParams(location.search);
const session = params.get("session");
const options = JSON.parse(params.get("options") || "{}");
if (typeof options.random === "number") { const r = options.random; options.random = () => r; }
if (options.fakeOnline) {
  window.online = true;
  Object.defineProperty(Navigator.prototype, "onLine", { get: () => window.online, configurable: true });
}
delete options.fakeOnline;
const key = "log:" + session;
window.log = JSON.parse(sessionStorage.getItem(key) || "[]");
window.states = [];
window.loads = Number(sessionStorage.getItem("loads:" + session) || 0) + 1;
sessionStorage.setItem("loads:" + session, String(window.loads));
const save = () => sessionStorage.setItem(key, JSON.stringify(window.log));
const lastSeq = () => window.log.reduce((last, e) => (e[0] === "status" ? e[1] : e[2]), 0);
window.follow = (transport) => {
  if (window.stream) window.stream.close();
  window.transport = transport;
  window.stream = connect({
    ...options,
    session,
    transport,
    after: lastSeq(),
    onStatus(frame) { window.log.push(["status", frame.seq, frame.text]); save(); },
    onGap({ from, to }) { window.log.push(["gap", from, to]); save(); },
    onState(state) { window.states.push(state); window.state = state; },
  });
};
window.follow(params.get("transport") || "ws");
</script>
"#;

/// A server of the public API for the browser tests: the library's endpoints of `hub` (with
/// `endpoints`' settings), `POST /api/sessions`, the demo page at `/` and the client test page
/// at `/client.html`.
fn start_page_server(endpoints: Endpoints) -> Server {
    async fn create_session(State(hub): State<Hub>) -> Response {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("randomness");
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        hub.open_session(&id).await.expect("a session");
        (StatusCode::CREATED, Json(json!({ "id": id }))).into_response()
    }
    let page = demo_page();
    let app = Router::new()
        .route(
            "/",
            get(
                move || async move { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page) },
            ),
        )
        .route(
            "/client.html",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    CLIENT_PAGE,
                )
            }),
        )
        .route("/api/sessions", post(create_session))
        .with_state(endpoints.hub().clone())
        .merge(endpoints.router());
    Server::start(move |listener, shutdown: Shutdown| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        })
    })
}

/// The browser binaries, or `None` (with the reason printed) when they are missing outside CI.
fn binaries() -> Option<(PathBuf, PathBuf)> {
    let path = |var: &str, default: &str| {
        PathBuf::from(std::env::var(var).unwrap_or_else(|_| default.to_owned()))
    };
    let chromium = path("CHROMIUM", "/usr/bin/chromium");
    let driver = path("CHROMEDRIVER", "/usr/bin/chromedriver");
    let missing: Vec<_> = [&chromium, &driver]
        .into_iter()
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return Some((chromium, driver));
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI is set and the browser is missing: {missing:?} (install chromium and chromium-driver)");
    }
    eprintln!(
        "skipping the browser test: {missing:?} not found (install chromium and chromium-driver)"
    );
    None
}

/// A chromedriver of our own, on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
    chromium: PathBuf,
}

impl Driver {
    async fn start() -> Option<Driver> {
        let (chromium, driver) = binaries()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            chromium,
        };
        let deadline = Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {port}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(driver)
    }

    /// A fresh headless Chromium with an empty profile of its own.
    async fn browser(&self, profile: &Path) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": self.chromium,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a WebDriver session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One status row as the page shows it.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    seq: u64,
    session: String,
    text: String,
}

async fn js(client: &Client, script: &str) -> Value {
    client.execute(script, vec![]).await.expect("script runs")
}

async fn wait_until(client: &Client, what: &str, condition: &str) {
    let deadline = Instant::now() + WAIT;
    let script = format!("return Boolean({condition});");
    while js(client, &script).await != Value::Bool(true) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn open_page(client: &Client, url: &str) -> String {
    client.goto(url).await.expect("the page loads");
    wait_until(
        client,
        "a live connection",
        "document.getElementById('conn').dataset.state === 'live'",
    )
    .await;
    session_of(client).await
}

async fn session_of(client: &Client) -> String {
    js(
        client,
        "return new URLSearchParams(location.hash.slice(1)).get('session');",
    )
    .await
    .as_str()
    .expect("the session is in the URL")
    .to_owned()
}

async fn rows(client: &Client) -> Vec<Row> {
    let value = js(
        client,
        "return Array.from(document.querySelectorAll('#log li.status')).map(li => \
         [Number(li.dataset.seq), li.dataset.session, li.querySelector('.text').textContent]);",
    )
    .await;
    value
        .as_array()
        .expect("an array")
        .iter()
        .map(|row| Row {
            seq: row[0].as_u64().expect("seq"),
            session: row[1].as_str().expect("session").to_owned(),
            text: row[2].as_str().expect("text").to_owned(),
        })
        .collect()
}

async fn count(client: &Client, selector: &str) -> u64 {
    js(
        client,
        &format!("return document.querySelectorAll('{selector}').length;"),
    )
    .await
    .as_u64()
    .expect("a count")
}

async fn wait_for_rows(client: &Client, n: usize) {
    wait_until(
        client,
        &format!("{n} statuses"),
        &format!("document.querySelectorAll('#log li.status').length >= {n}"),
    )
    .await;
}

async fn start_task(client: &Client, steps: u32, delay_ms: u32) {
    for (id, value) in [("steps", steps), ("delay", delay_ms)] {
        let input = client.find(Locator::Id(id)).await.expect("input");
        input.clear().await.expect("clear");
        input.send_keys(&value.to_string()).await.expect("type");
    }
    click(client, "start").await;
}

async fn click(client: &Client, id: &str) {
    client
        .find(Locator::Id(id))
        .await
        .expect("button")
        .click()
        .await
        .expect("click");
}

/// Asserts the page shows exactly the statuses of one task of `total` steps, each once, in
/// order, all of `session`, and no gap.
fn assert_task(rows: &[Row], session: &str, total: u64) {
    assert_steps_shown(rows, session, total, total);
}

/// Asserts the page shows exactly steps `1..=shown` of one task of `total` steps, each once,
/// in order, all of `session`.
fn assert_steps_shown(rows: &[Row], session: &str, shown: u64, total: u64) {
    let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs,
        (1..=shown).collect::<Vec<_>>(),
        "every status exactly once, in order"
    );
    for row in rows {
        assert_eq!(row.session, session, "only this page's session");
        let prefix = format!("step {}/{total} t_ns=", row.seq);
        assert!(
            row.text.starts_with(&prefix),
            "`{}` starts with `{prefix}`",
            row.text
        );
    }
}

fn screenshot_path(name: &str) -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("screenshots");
    std::fs::create_dir_all(&target).expect("screenshot directory");
    target.join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pages_see_only_their_own_statuses_in_order() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(driver) = Driver::start().await else {
        return;
    };
    let server = tokio::task::spawn_blocking(|| start_demo(Demo::Axum))
        .await
        .expect("the demo");
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let a = driver.browser(dir_a.path()).await;
    let b = driver.browser(dir_b.path()).await;
    let session_a = open_page(&a, &server.base).await;
    let session_b = open_page(&b, &server.base).await;
    assert_ne!(session_a, session_b);

    start_task(&a, 40, 60).await;
    start_task(&b, 23, 40).await;
    wait_for_rows(&a, 18).await;
    let png = a.screenshot().await.expect("a screenshot");
    std::fs::write(screenshot_path("demo-mid-task.png"), png).expect("screenshot saved");

    wait_for_rows(&a, 40).await;
    wait_for_rows(&b, 23).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // anything extra would show by now
    assert_task(&rows(&a).await, &session_a, 40);
    assert_task(&rows(&b).await, &session_b, 23);
    assert_eq!(count(&a, "#log li.gap").await, 0);
    let label = js(
        &a,
        "return document.getElementById('progress-label').textContent;",
    )
    .await;
    assert_eq!(label, "Done · 40 steps");
    let png = a.screenshot().await.expect("a screenshot");
    std::fs::write(screenshot_path("demo-done.png"), png).expect("screenshot saved");
    a.close().await.expect("close");
    b.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_mid_task_shows_every_status_once() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(driver) = Driver::start().await else {
        return;
    };
    let server = tokio::task::spawn_blocking(|| start_demo(Demo::Axum))
        .await
        .expect("the demo");
    let dir = tempfile::tempdir().expect("dir");
    let page = driver.browser(dir.path()).await;
    let session = open_page(&page, &server.base).await;
    start_task(&page, 80, 40).await;
    wait_for_rows(&page, 10).await;
    page.refresh().await.expect("reload");
    wait_until(
        &page,
        "the page to reconnect after the reload",
        "document.getElementById('conn').dataset.state === 'live'",
    )
    .await;
    assert_eq!(
        session_of(&page).await,
        session,
        "the session survives a reload"
    );
    let shown = rows(&page).await.len();
    assert!(shown < 80, "the reload happened mid-task ({shown} shown)");
    wait_for_rows(&page, 80).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_task(&rows(&page).await, &session, 80);
    page.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drops_and_transport_switches_resume_without_gap_or_duplicate_on_axum() {
    drops_and_transport_switches(Demo::Axum).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drops_and_transport_switches_resume_without_gap_or_duplicate_on_actix() {
    drops_and_transport_switches(Demo::Actix).await;
}

async fn drops_and_transport_switches(demo: Demo) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(driver) = Driver::start().await else {
        return;
    };
    let server = tokio::task::spawn_blocking(move || start_demo(demo))
        .await
        .expect("the demo");
    let dir = tempfile::tempdir().expect("dir");
    let page = driver.browser(dir.path()).await;
    let session = open_page(&page, &server.base).await;
    start_task(&page, 80, 40).await;
    let live = "document.getElementById('conn').dataset.state === 'live'";
    // WebSocket drop: reconnects with after=.
    wait_for_rows(&page, 8).await;
    click(&page, "drop").await;
    wait_until(&page, "a reconnect", live).await;
    // Switch to SSE mid-task: resumes with last_event_id=.
    wait_for_rows(&page, 20).await;
    click(&page, "transport-sse").await;
    wait_until(&page, "SSE", live).await;
    assert!(js(&page, "return location.hash;")
        .await
        .as_str()
        .unwrap_or("")
        .contains("via=sse"));
    // SSE drop, then back to the WebSocket.
    wait_for_rows(&page, 32).await;
    click(&page, "drop").await;
    wait_until(&page, "a reconnect", live).await;
    wait_for_rows(&page, 44).await;
    click(&page, "transport-ws").await;
    wait_for_rows(&page, 80).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_task(&rows(&page).await, &session, 80);
    assert_eq!(count(&page, "#log li.gap").await, 0);
    page.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_text_is_shown_as_text_never_as_html() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(driver) = Driver::start().await else {
        return;
    };
    // A hub of the test's own, so the test can publish any text to the page's session.
    let hub = support::private_hub(1000);
    let server = start_page_server(Endpoints::new(hub.clone()));
    let dir = tempfile::tempdir().expect("dir");
    let page = driver.browser(dir.path()).await;
    let session = open_page(&page, &server.base).await;
    let hostile = [
        "<img src=x onerror=alert(1)>",
        "<script>window.__pwned = true</script><b>bold?</b> & &amp; \"quotes\"",
    ];
    for text in hostile {
        assert!(hub.publish(Some(&session), text).is_ok());
    }
    wait_for_rows(&page, 2).await;
    let shown: Vec<String> = rows(&page).await.into_iter().map(|r| r.text).collect();
    assert_eq!(shown, hostile, "the text appears literally");
    assert_eq!(
        count(&page, "#log img, #log script, #log b").await,
        0,
        "no markup was created"
    );
    tokio::time::sleep(Duration::from_millis(300)).await; // time for an onerror to fire
    assert!(page.get_alert_text().await.is_err(), "no alert opened");
    assert_eq!(
        js(&page, "return window.__pwned === undefined;").await,
        Value::Bool(true)
    );
    page.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_no_longer_in_history_show_as_a_gap() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(driver) = Driver::start().await else {
        return;
    };
    let hub = support::private_hub(3);
    let server = start_page_server(Endpoints::new(hub.clone()));
    let session = support::create_session(&server).await;
    for i in 1..=8 {
        hub.publish(Some(&session), format!("status {i}")).unwrap();
    }
    let dir = tempfile::tempdir().expect("dir");
    let page = driver.browser(dir.path()).await;
    let opened = open_page(&page, &format!("{}/#session={session}", server.base)).await;
    assert_eq!(
        opened, session,
        "the page joins the session named in its URL"
    );
    wait_for_rows(&page, 3).await;
    let gap = js(
        &page,
        "const g = document.querySelector('#log li.gap'); \
         return g && [Number(g.dataset.from), Number(g.dataset.to), g.textContent];",
    )
    .await;
    assert_eq!(
        (gap[0].as_u64(), gap[1].as_u64()),
        (Some(1), Some(5)),
        "{gap}"
    );
    assert!(gap[2].as_str().unwrap_or("").contains("1–5"));
    let seqs: Vec<u64> = rows(&page).await.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, [6, 7, 8]);
    let png = page.screenshot().await.expect("a screenshot");
    std::fs::write(screenshot_path("demo-gap.png"), png).expect("screenshot saved");
    page.close().await.expect("close");
}

/// The state the page shows for `task`, or `null`.
fn task_state_js(task: &str) -> String {
    format!(
        "(document.querySelector('#tasks li[data-task=\"{task}\"]') || {{dataset: {{}}}}).dataset.state"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_the_task_on_every_tab_and_after_a_reload() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(driver) = Driver::start().await else {
        return;
    };
    let server = tokio::task::spawn_blocking(|| start_demo(Demo::Axum))
        .await
        .expect("the demo");
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let a = driver.browser(dir_a.path()).await;
    let b = driver.browser(dir_b.path()).await;
    let session = open_page(&a, &server.base).await;
    // The second tab follows the same session, over SSE, where Stop is a `POST /cancel`.
    let joined = open_page(&b, &format!("{}/#session={session}&via=sse", server.base)).await;
    assert_eq!(joined, session);

    start_task(&a, 150, 40).await;
    wait_for_rows(&b, 5).await;
    let task = js(
        &a,
        "return document.querySelector('#tasks li.task').dataset.task;",
    )
    .await
    .as_str()
    .expect("the page lists the task")
    .to_owned();
    for page in [&a, &b] {
        assert_eq!(
            js(page, &format!("return {};", task_state_js(&task))).await,
            "running"
        );
    }
    a.find(Locator::Css(&format!(
        "#tasks li[data-task=\"{task}\"] button.stop"
    )))
    .await
    .expect("a Stop button")
    .click()
    .await
    .expect("click Stop");
    for page in [&a, &b] {
        wait_until(
            page,
            "the task shown cancelled",
            &format!("{} === 'cancelled'", task_state_js(&task)),
        )
        .await;
    }
    let shown = rows(&a).await;
    let stopped_at = shown.len() as u64;
    assert!(
        (5..150).contains(&stopped_at),
        "stopped mid-task, at {stopped_at}"
    );
    let png = a.screenshot().await.expect("a screenshot");
    std::fs::write(screenshot_path("demo-stopped.png"), png).expect("screenshot saved");
    // No step after it, on either tab, several step delays later.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_steps_shown(&rows(&a).await, &session, stopped_at, 150);
    assert_steps_shown(&rows(&b).await, &session, stopped_at, 150);
    for page in [&a, &b] {
        let hidden = js(
            page,
            &format!(
                "return document.querySelector('#tasks li[data-task=\"{task}\"] button.stop').hidden;"
            ),
        )
        .await;
        assert_eq!(hidden, Value::Bool(true), "no Stop for a stopped task");
    }
    let label = js(
        &a,
        "return document.getElementById('progress-label').textContent;",
    )
    .await;
    assert!(
        label.as_str().unwrap_or("").starts_with("Stopped"),
        "{label}"
    );
    // The server agrees: the session's snapshot says cancelled after the last step shown.
    let mut ws = support::ws_connect(&server, &session, Some(stopped_at)).await;
    let snapshot = support::ws_next_any(&mut ws).await.expect("the snapshot");
    assert_eq!(
        (&snapshot["state"], snapshot["last_seq"].as_u64()),
        (&json!("cancelled"), Some(stopped_at))
    );
    support::ws_quiet(&mut ws, Duration::from_millis(100)).await;

    // A reload shows it cancelled too, from the snapshot, with the same steps.
    b.refresh().await.expect("reload");
    wait_until(
        &b,
        "the reloaded page shows the task cancelled",
        &format!("{} === 'cancelled'", task_state_js(&task)),
    )
    .await;
    wait_for_rows(&b, stopped_at as usize).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_steps_shown(&rows(&b).await, &session, stopped_at, 150);

    // Stop on the SSE tab (a `POST /cancel`) ends the next task for both as well.
    start_task(&a, 150, 40).await;
    wait_until(
        &b,
        "the second task on the SSE tab",
        "document.querySelectorAll('#tasks li.task').length === 2",
    )
    .await;
    let second = js(
        &b,
        "return document.querySelectorAll('#tasks li.task')[1].dataset.task;",
    )
    .await
    .as_str()
    .expect("the second task")
    .to_owned();
    wait_for_rows(&b, stopped_at as usize + 3).await;
    b.find(Locator::Css(&format!(
        "#tasks li[data-task=\"{second}\"] button.stop"
    )))
    .await
    .expect("a Stop button")
    .click()
    .await
    .expect("click Stop");
    for page in [&a, &b] {
        wait_until(
            page,
            "the second task shown cancelled",
            &format!("{} === 'cancelled'", task_state_js(&second)),
        )
        .await;
        assert_eq!(
            js(page, &format!("return {};", task_state_js(&task))).await,
            "cancelled"
        );
    }
    a.close().await.expect("close");
    b.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn levels_keys_and_progress_are_shown() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(driver) = Driver::start().await else {
        return;
    };
    let hub = support::private_hub(1000);
    let server = start_page_server(Endpoints::new(hub.clone()));
    let dir = tempfile::tempdir().expect("dir");
    let page = driver.browser(dir.path()).await;
    let session = open_page(&page, &server.base).await;
    let task = hub.start_task(&session).expect("a task");
    let id = task.id().to_owned();
    let context = task.context();
    let send = |status: StatusMessage| {
        hub.publish_message(Some(&session), status)
            .expect("published");
    };
    send(
        StatusMessage::new("connecting")
            .key("net")
            .level(Level::Info),
    );
    send(StatusMessage::new("slow source").level(Level::Warn));
    send(StatusMessage::new("reconnected").key("net"));
    send(StatusMessage::new("one page failed").level(Level::Error));
    let messenger = status_messenger::Messenger::new();
    hub.attach(&messenger).expect("attached");
    context
        .with_messenger(&messenger)
        .run(|| messenger.add_status(StatusMessage::new("half way").progress(5, 10)));
    wait_for_rows(&page, 4).await;
    let shown = js(
        &page,
        "return Array.from(document.querySelectorAll('#log li.status')).map(li => \
         [Number(li.dataset.seq), li.querySelector('.text').textContent, li.dataset.level || null, li.dataset.key || null]);",
    )
    .await;
    // The keyed status is replaced in its place by the later one with its key.
    assert_eq!(
        shown,
        json!([
            [3, "reconnected", null, "net"],
            [2, "slow source", "warn", null],
            [4, "one page failed", "error", null],
            [5, "half way", null, null],
        ])
    );
    let label = js(
        &page,
        "return document.getElementById('progress-label').textContent;",
    )
    .await;
    assert_eq!(label, "Step 5 of 10");
    wait_until(
        &page,
        "the task's progress",
        &format!(
            "document.querySelector('#tasks li[data-task=\"{id}\"] .count').textContent === '5 / 10'"
        ),
    )
    .await;
    task.fail("no more pages");
    wait_until(
        &page,
        "the task shown failed",
        &format!("{} === 'failed'", task_state_js(&id)),
    )
    .await;
    let message = js(
        &page,
        &format!(
            "return document.querySelector('#tasks li[data-task=\"{id}\"] .message').textContent;"
        ),
    )
    .await;
    assert_eq!(message, "no more pages");
    page.close().await.expect("close");
}

// ------------------------------------------------------------------ the client, behind a proxy

/// A private hub's endpoints behind a proxy the test controls, and a browser on the client
/// test page following session `s1` of that hub.
struct Rig {
    hub: Hub,
    proxy: Proxy,
    page: Client,
    _server: Server,
    _profile: tempfile::TempDir,
}

const SESSION: &str = "s1";

async fn rig(driver: &Driver, history: usize, transport: &str, options: Value) -> Rig {
    let hub = support::private_hub(history);
    hub.open_session(SESSION).await.expect("a session");
    let endpoints = Endpoints::new(hub.clone()).keep_alive(Duration::from_millis(300));
    let server = start_page_server(endpoints);
    let proxy = Proxy::start(server.addr).await;
    let profile = tempfile::tempdir().expect("dir");
    let page = driver.browser(profile.path()).await;
    let query = serde_urlencoded::to_string([
        ("session", SESSION),
        ("transport", transport),
        ("options", &options.to_string()),
    ])
    .expect("a query");
    page.goto(&format!("http://{}/client.html?{query}", proxy.addr()))
        .await
        .expect("the page loads");
    wait_until(&page, "a live stream", "window.state === 'live'").await;
    Rig {
        hub,
        proxy,
        page,
        _server: server,
        _profile: profile,
    }
}

impl Rig {
    /// Publishes `status {i}` for `range`, one every `every`, in a task of its own.
    fn publish(
        &self,
        range: std::ops::RangeInclusive<u64>,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let hub = self.hub.clone();
        tokio::spawn(async move {
            for i in range {
                hub.publish(Some(SESSION), format!("status {i}"))
                    .expect("published");
                if !every.is_zero() {
                    tokio::time::sleep(every).await;
                }
            }
        })
    }

    /// Waits until the page has accounted for (seen, or been told it missed) seq `n`.
    async fn wait_covered(&self, n: u64) {
        wait_until(
            &self.page,
            &format!("seq {n} accounted for"),
            &format!(
                "window.log.length && (e => e[0] === 'status' ? e[1] : e[2])(window.log[window.log.length - 1]) >= {n}"
            ),
        )
        .await;
    }

    async fn wait_state(&self, state: &str) {
        wait_until(
            &self.page,
            &format!("state {state}"),
            &format!("window.state === '{state}'"),
        )
        .await;
    }

    async fn log(&self) -> Vec<Value> {
        js(&self.page, "return window.log;")
            .await
            .as_array()
            .expect("the log")
            .clone()
    }

    async fn states(&self) -> Vec<String> {
        js(&self.page, "return window.states;")
            .await
            .as_array()
            .expect("the states")
            .iter()
            .map(|s| s.as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

/// Asserts that `log` accounts for seqs `1..=n` exactly once each, in order: as a status with
/// its text, or inside one gap. Returns the gaps.
fn assert_each_once(log: &[Value], n: u64) -> Vec<(u64, u64)> {
    let mut next = 1;
    let mut gaps = Vec::new();
    for entry in log {
        match entry[0].as_str() {
            Some("status") => {
                let seq = entry[1].as_u64().expect("seq");
                assert_eq!(seq, next, "status {seq} where {next} was due: {log:?}");
                assert_eq!(entry[2], format!("status {seq}"));
                next += 1;
            }
            Some("gap") => {
                let (from, to) = (
                    entry[1].as_u64().expect("from"),
                    entry[2].as_u64().expect("to"),
                );
                assert_eq!(
                    from, next,
                    "a gap from {from} where {next} was due: {log:?}"
                );
                assert!(to >= from, "an empty gap {from}..={to}");
                gaps.push((from, to));
                next = to + 1;
            }
            other => panic!("unexpected log entry {other:?}"),
        }
    }
    assert_eq!(next, n + 1, "every seq up to {n} accounted for: {log:?}");
    gaps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_resumes_after_a_reload_mid_task() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(driver) = Driver::start().await else {
        return;
    };
    let rig = rig(&driver, 1000, "ws", json!({})).await;
    let publishing = rig.publish(1..=60, Duration::from_millis(30));
    rig.wait_covered(15).await;
    rig.page.refresh().await.expect("reload");
    wait_until(
        &rig.page,
        "the reloaded page",
        "window.loads === 2 && window.state === 'live'",
    )
    .await;
    publishing.await.expect("published");
    rig.wait_covered(60).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // anything extra would show by now
    assert!(assert_each_once(&rig.log().await, 60).is_empty(), "no gap");
    rig.page.close().await.expect("close");
}

async fn client_reconnects_when_connections_are_cut(transport: &str) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(driver) = Driver::start().await else {
        return;
    };
    let options = json!({ "backoffBase": 100, "backoffCap": 400 });
    let rig = rig(&driver, 1000, transport, options).await;
    let publishing = rig.publish(1..=150, Duration::from_millis(20));
    for cut in 1..=3u64 {
        rig.wait_covered(cut * 30).await;
        rig.proxy.cut();
        wait_until(
            &rig.page,
            "a reconnect after the cut",
            &format!("window.states.filter(s => s === 'live').length > {cut}"),
        )
        .await;
    }
    publishing.await.expect("published");
    rig.wait_covered(150).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(assert_each_once(&rig.log().await, 150).is_empty(), "no gap");
    assert!(rig.states().await.contains(&"reconnecting".to_owned()));
    rig.page.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reconnects_when_connections_are_cut_mid_task_ws() {
    client_reconnects_when_connections_are_cut("ws").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reconnects_when_connections_are_cut_mid_task_sse() {
    client_reconnects_when_connections_are_cut("sse").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reconnects_after_its_watchdog_when_a_connection_stalls_ws() {
    client_reconnects_after_its_watchdog_when_a_connection_stalls("ws").await;
}

/// On SSE too: `EventSource` never surfaces the keep-alive's comment line, but it does the
/// `keepalive` event that comes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reconnects_after_its_watchdog_when_a_connection_stalls_sse() {
    client_reconnects_after_its_watchdog_when_a_connection_stalls("sse").await;
}

async fn client_reconnects_after_its_watchdog_when_a_connection_stalls(transport: &str) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(driver) = Driver::start().await else {
        return;
    };
    // The server sends a keep-alive every 300 ms, so 2 s of silence means a dead connection.
    let options = json!({ "stallTimeout": 2000, "backoffBase": 100, "backoffCap": 400 });
    let rig = rig(&driver, 1000, transport, options).await;
    // Idle first, so a keep-alive comes before the statuses: on SSE the client watches an open
    // stream only once the server has shown it sends keep-alive events.
    wait_until(
        &rig.page,
        "the stream open",
        "window.states.includes('live')",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let publishing = rig.publish(1..=100, Duration::from_millis(40));
    rig.wait_covered(10).await;
    let stalled = Instant::now();
    rig.proxy.stall();
    wait_until(
        &rig.page,
        "a reconnect after the stall",
        "window.states.filter(s => s === 'live').length > 1",
    )
    .await;
    let after = stalled.elapsed();
    assert!(
        after >= Duration::from_millis(1500) && after < Duration::from_secs(10),
        "reconnected {after:?} after the stall: by the watchdog"
    );
    publishing.await.expect("published");
    rig.wait_covered(100).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(assert_each_once(&rig.log().await, 100).is_empty(), "no gap");
    rig.page.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_waits_while_offline_and_reconnects_at_once_when_online() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(driver) = Driver::start().await else {
        return;
    };
    // A reconnect would wait 19.8 s by the backoff: only the `online` event makes it sooner.
    let options =
        json!({ "fakeOnline": true, "backoffBase": 20000, "backoffCap": 20000, "random": 0.99 });
    let rig = rig(&driver, 1000, "ws", options).await;
    let publishing = rig.publish(1..=80, Duration::from_millis(30));
    rig.wait_covered(10).await;
    js(
        &rig.page,
        "window.online = false; window.dispatchEvent(new Event('offline'));",
    )
    .await;
    rig.proxy.refuse(true);
    rig.proxy.cut();
    rig.wait_state("reconnecting").await;
    // The network is back, but the browser still says offline: the client does not try.
    rig.proxy.refuse(false);
    let accepted = rig.proxy.accepted();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rig.proxy.accepted(), accepted, "no attempt while offline");
    assert_eq!(js(&rig.page, "return window.state;").await, "reconnecting");
    let online = Instant::now();
    js(
        &rig.page,
        "window.online = true; window.dispatchEvent(new Event('online'));",
    )
    .await;
    rig.wait_state("live").await;
    assert!(
        online.elapsed() < Duration::from_secs(5),
        "reconnected at once"
    );
    publishing.await.expect("published");
    rig.wait_covered(80).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(assert_each_once(&rig.log().await, 80).is_empty(), "no gap");
    rig.page.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reports_a_gap_once() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(driver) = Driver::start().await else {
        return;
    };
    // A history of 20: what the page misses beyond that while away is a gap.
    let options = json!({ "backoffBase": 100, "backoffCap": 300 });
    let rig = rig(&driver, 20, "ws", options).await;
    rig.publish(1..=10, Duration::ZERO)
        .await
        .expect("published");
    rig.wait_covered(10).await;
    rig.proxy.refuse(true);
    rig.proxy.cut();
    rig.wait_state("reconnecting").await;
    rig.publish(11..=60, Duration::ZERO)
        .await
        .expect("published");
    rig.proxy.refuse(false);
    rig.wait_covered(60).await;
    assert_eq!(assert_each_once(&rig.log().await, 60), [(11, 40)]);
    // Cut again: the resume starts after the gap, which is not reported twice.
    rig.proxy.cut();
    wait_until(
        &rig.page,
        "a reconnect",
        "window.states.filter(s => s === 'live').length > 2",
    )
    .await;
    rig.publish(61..=70, Duration::ZERO)
        .await
        .expect("published");
    rig.wait_covered(70).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(assert_each_once(&rig.log().await, 70), [(11, 40)]);
    rig.page.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_switches_transport_mid_task() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(driver) = Driver::start().await else {
        return;
    };
    let rig = rig(&driver, 1000, "ws", json!({})).await;
    let publishing = rig.publish(1..=120, Duration::from_millis(20));
    for (at, transport) in [(20, "sse"), (50, "ws"), (80, "sse")] {
        rig.wait_covered(at).await;
        js(&rig.page, &format!("window.follow('{transport}');")).await;
        rig.wait_state("live").await;
    }
    publishing.await.expect("published");
    rig.wait_covered(120).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(js(&rig.page, "return window.transport;").await, "sse");
    assert!(assert_each_once(&rig.log().await, 120).is_empty(), "no gap");
    rig.page.close().await.expect("close");
}
