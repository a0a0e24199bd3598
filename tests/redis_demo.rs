//! Two demo server processes (the axum one and the actix one) sharing one Redis started by the
//! test: sessions created and tasks started through one server, statuses received over a
//! WebSocket (and Server-Sent Events) from the other, and resumed on either.
#![cfg(feature = "redis")]

mod common;
#[allow(unused_macros, unused_imports)] // the demo cases are not run here
mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::RedisServer;
use serde_json::Value;
use support::{
    assert_steps, create_session, http, sse_connect, start_task, ws_connect, ws_quiet, ws_refused,
    ws_take, Server,
};

/// Builds both demo servers with the features this test was built with (so cargo reuses what
/// `cargo test` already built) and returns their paths.
fn demo_binaries() -> (PathBuf, PathBuf) {
    let mut features = vec!["redis"];
    if cfg!(feature = "metrics") {
        features.push("metrics");
    }
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--message-format=json-render-diagnostics"])
        .args(["--example", "axum_demo", "--example", "actix_demo"])
        .args(["--features", &features.join(",")])
        .stderr(Stdio::inherit())
        .output()
        .expect("run cargo build");
    assert!(
        output.status.success(),
        "cargo build of the demo servers failed"
    );
    let mut found = (None, None);
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let name = message.pointer("/target/name").and_then(Value::as_str);
        let exe = message.get("executable").and_then(Value::as_str);
        match (name, exe) {
            (Some("axum_demo"), Some(exe)) => found.0 = Some(PathBuf::from(exe)),
            (Some("actix_demo"), Some(exe)) => found.1 = Some(PathBuf::from(exe)),
            _ => {}
        }
    }
    (
        found.0.expect("axum_demo built"),
        found.1.expect("actix_demo built"),
    )
}

/// A demo server process on a free port, using Redis; killed if still running when dropped.
struct Demo {
    child: Child,
    addr: SocketAddr,
    log: tempfile::NamedTempFile,
}

impl Demo {
    fn start(exe: &Path, redis_url: &str) -> Demo {
        let log = tempfile::NamedTempFile::new().expect("log file");
        let mut child = Command::new(exe)
            .args(["--port", "0", "--redis", redis_url])
            .env_remove("REDIS_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.reopen().expect("log file"))
            .spawn()
            .expect("start the demo server");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let Some(addr) = first.strip_prefix("listening on http://") else {
            let _ = child.kill();
            let log = std::fs::read_to_string(log.path()).unwrap_or_default();
            panic!("{} did not start: `{first}`\n{log}", exe.display());
        };
        let addr = addr.trim().parse().expect("an address");
        // Keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || lines.for_each(drop));
        Demo { child, addr, log }
    }

    fn server(&self) -> Server {
        Server::external(self.addr)
    }

    /// Sends SIGTERM and waits for a clean exit.
    fn terminate(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                let log = std::fs::read_to_string(self.log.path()).unwrap_or_default();
                assert!(status.success(), "exit status {status}\n{log}");
                assert!(!log.contains("panicked"), "{log}");
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Asserts that `frames` are statuses `first..` of a task of `total` steps whose step 1 got the
/// number `first`.
fn assert_task(frames: &[Value], session: &str, first: u64, total: u64) {
    for (i, frame) in frames.iter().enumerate() {
        let step = i as u64 + 1;
        assert_eq!(frame["session"], session, "{frame}");
        assert_eq!(frame["seq"], first + i as u64, "{frame}");
        let text = frame["text"].as_str().expect("text");
        assert!(
            text.starts_with(&format!("step {step}/{total} t_ns=")),
            "{frame}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_demo_servers_share_sessions_through_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (axum_exe, actix_exe) = tokio::task::spawn_blocking(demo_binaries)
        .await
        .expect("build");
    let a = Demo::start(&axum_exe, &redis.url());
    let b = Demo::start(&actix_exe, &redis.url());
    let (on_a, on_b) = (a.server(), b.server());

    // Created through A, known to B.
    let id = create_session(&on_a).await;
    let mut ws_b = ws_connect(&on_b, &id, None).await;
    let (status, _) = ws_refused(&on_b, "session=0123456789abcdef0123456789abcdef").await;
    assert_eq!(status, reqwest::StatusCode::NOT_FOUND);

    // The tool runs in A's process; its statuses reach the page connected to B.
    start_task(&on_a, &id, 40, 2).await;
    assert_steps(&ws_take(&mut ws_b, 40).await, &id, 1, 40);

    // The page reloads onto A and resumes after 25: the rest, no duplicate, no gap.
    let mut ws_a = ws_connect(&on_a, &id, Some(25)).await;
    assert_steps(&ws_take(&mut ws_a, 15).await, &id, 26, 40);

    // A task started through B is numbered on from 40 and reaches both pages.
    start_task(&on_b, &id, 10, 0).await;
    assert_task(&ws_take(&mut ws_a, 10).await, &id, 41, 10);
    assert_task(&ws_take(&mut ws_b, 10).await, &id, 41, 10);
    ws_quiet(&mut ws_b, Duration::from_millis(200)).await;

    // Server-Sent Events resume on B from a Last-Event-ID given by A.
    let mut sse = sse_connect(&on_b, &format!("session={id}"), Some("45")).await;
    let events = sse.take(5).await;
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| e.json()["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, vec![46, 47, 48, 49, 50]);

    // Each server counts what it published and what it delivered.
    let metrics = http()
        .get(on_a.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("status_messenger_messages_in_total 40"),
        "{metrics}"
    );
    assert!(
        metrics.contains("status_messenger_backend_errors_total 0"),
        "{metrics}"
    );

    drop((ws_a, ws_b, sse));
    a.terminate();
    b.terminate();
}
