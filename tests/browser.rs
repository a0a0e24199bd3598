//! The demo page in real headless Chromium, driven through chromedriver (WebDriver) against
//! the axum demo served in-process: isolation between pages, resume after a reload, a drop or
//! a transport switch, gap items, and status text that is never treated as HTML.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (Debian's `chromium` and
//! `chromium-driver`; `CHROMIUM` / `CHROMEDRIVER` override the paths). Without them the tests
//! print why and pass, unless `CI` is set, where a missing browser is a failure.

#[path = "../examples/axum_demo.rs"]
#[allow(dead_code)]
mod axum_demo;
#[allow(unused_macros, unused_imports)] // the HTTP cases are not run here
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use status_messenger::Hub;
use support::{Server, Shutdown};

/// Browsers are heavy: one test at a time keeps timings sane on small machines.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(30);

fn start(hub: Hub) -> Server {
    Server::start(move |listener, shutdown: Shutdown| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            axum_demo::serve(listener, hub, shutdown).await
        })
    })
}

fn shared_hub() -> Hub {
    support::shared_hub(axum_demo::common::hub_config)
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
    let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
    assert_eq!(
        seqs,
        (1..=total).collect::<Vec<_>>(),
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
    let server = start(shared_hub());
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
    let server = start(shared_hub());
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
async fn drops_and_transport_switches_resume_without_gap_or_duplicate() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(driver) = Driver::start().await else {
        return;
    };
    let server = start(shared_hub());
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
    let server = start(hub.clone());
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
    let server = start(hub.clone());
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
