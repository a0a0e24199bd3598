//! The demo servers as processes: built once per test binary by a nested `cargo build` (with
//! the features this test was built with, so cargo reuses what `cargo test` built), started on
//! a free port, stopped with SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

use super::Server;

/// Which demo server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Demo {
    Axum,
    Actix,
}

/// The axum demo and the actix demo, both started with `args` (on a blocking thread: each
/// waits for its process to say where it listens).
pub(crate) async fn both_demos(args: &[&str]) -> (Server, Server) {
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        (Demo::Axum.start(&args), Demo::Actix.start(&args))
    })
    .await
    .expect("start the demos")
}

impl Demo {
    fn name(self) -> &'static str {
        match self {
            Demo::Axum => "axum_demo",
            Demo::Actix => "actix_demo",
        }
    }

    /// The built executable (both demos are built on the first call).
    pub(crate) fn executable(self) -> PathBuf {
        static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
        let (axum, actix) = BUILT.get_or_init(build);
        match self {
            Demo::Axum => axum.clone(),
            Demo::Actix => actix.clone(),
        }
    }

    /// Starts the demo on a free port of 127.0.0.1 with `args`; the returned server is stopped
    /// with SIGTERM by [`Server::stop`], killed if dropped while running.
    pub(crate) fn start(self, args: &[&str]) -> Server {
        let exe = self.executable();
        let log = tempfile::NamedTempFile::new().expect("log file");
        let mut child = Command::new(&exe)
            .args(["--port", "0"])
            .args(args)
            .env_remove("PORT")
            .env_remove("REDIS_URL")
            .env_remove("REDIS_CLUSTER_URLS")
            .env_remove("BIND")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.reopen().expect("log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", exe.display()));
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let Some(addr) = first.strip_prefix("listening on http://") else {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(log.path()).unwrap_or_default();
            panic!("{} did not start: `{first}`\n{log}", self.name());
        };
        let addr = addr.trim().parse().expect("an address");
        // Keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || lines.for_each(drop));
        Server::process(addr, child, log)
    }
}

/// The features this test binary was built with, which the demos are built with too.
fn features() -> Vec<&'static str> {
    let mut features = Vec::new();
    for (on, name) in [
        (cfg!(feature = "redis"), "redis"),
        (cfg!(feature = "redis-cluster"), "redis-cluster"),
        (cfg!(feature = "serde_json"), "serde_json"),
        (cfg!(feature = "tracing-layer"), "tracing-layer"),
        (cfg!(feature = "metrics"), "metrics"),
        (cfg!(feature = "web"), "web"),
        (cfg!(feature = "axum"), "axum"),
        (cfg!(feature = "actix-web"), "actix-web"),
        (cfg!(feature = "rmcp"), "rmcp"),
    ] {
        if on {
            features.push(name);
        }
    }
    features
}

fn build() -> (PathBuf, PathBuf) {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--message-format=json-render-diagnostics"])
        .args(["--example", "axum_demo", "--example", "actix_demo"]);
    let features = features();
    if !features.is_empty() {
        command.args(["--features", &features.join(",")]);
    }
    let output = command
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
