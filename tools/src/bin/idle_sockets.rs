//! What open idle WebSockets cost a server that keeps the demo servers' HTTP contract.
//!
//! Run with: cargo run --release -p status-messenger-tools --bin idle_sockets -- --sockets 15000 -- target/release/examples/axum_demo
//!
//! It starts the server command given after `--` with `--port 0` (reading its
//! `listening on http://...` line), creates one session per socket (`POST /api/sessions`),
//! waits a moment and reads the server's resident set (`VmRSS`), then opens one WebSocket per
//! session (`GET /ws?session=`) and keeps them all open without reading or sending, waits
//! again and reads `VmRSS` a second time. It prints both, the difference divided by the
//! sockets (KiB per open idle socket), and with `--json` one JSON line of them on stdout; then
//! it closes the sockets and stops the server with SIGTERM. Both sides need a file limit above
//! the socket count (`ulimit -n`).
//!
//! | option | meaning | default |
//! | --- | --- | --- |
//! | `--sockets N` | sockets to open, one session each | 15000 |
//! | `--concurrency C` | requests and handshakes in flight while setting up | 64 |
//! | `--settle-ms M` | wait before each reading of the resident set | 1000 |
//! | `--json` | print one JSON line of results on stdout | |

use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use serde::Deserialize;
use status_messenger_tools::server::listen_url;

struct Args {
    sockets: usize,
    concurrency: usize,
    settle: Duration,
    json: bool,
    server: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        sockets: 15_000,
        concurrency: 64,
        settle: Duration::from_millis(1000),
        json: false,
        server: Vec::new(),
    };
    let mut raw = std::env::args().skip(1);
    while let Some(flag) = raw.next() {
        let mut number = |name: &str| -> Result<u64, String> {
            raw.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} takes a whole number"))
        };
        match flag.as_str() {
            "--sockets" => args.sockets = number("--sockets")? as usize,
            "--concurrency" => args.concurrency = (number("--concurrency")? as usize).max(1),
            "--settle-ms" => args.settle = Duration::from_millis(number("--settle-ms")?),
            "--json" => args.json = true,
            "--" => {
                args.server = raw.by_ref().collect();
                break;
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if args.server.is_empty() {
        return Err(
            "usage: idle_sockets [--sockets N] [--concurrency C] [--settle-ms M] \
                    [--json] -- SERVER [ARGS...]"
                .into(),
        );
    }
    Ok(args)
}

/// The server under measurement; killed if still running when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(command: &[String]) -> Result<Server, String> {
        let mut child = Command::new(&command[0])
            .args(&command[1..])
            .args(["--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", command[0]))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let rx = listen_url(stdout);
        let mut server = Server {
            child,
            url: String::new(),
        };
        server.url = rx
            .recv_timeout(Duration::from_secs(20))
            .map_err(|_| format!("{} printed no `listening on` line", command[0]))?;
        Ok(server)
    }

    /// `VmRSS` in KiB.
    fn rss_kib(&self) -> Result<u64, String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .map_err(|e| format!("server status: {e}"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| "no VmRSS in the server's status".into())
    }

    fn stop(&mut self) {
        let pid = self.child.id().to_string();
        if Command::new("kill").args(["-TERM", &pid]).status().is_err() {
            self.child.kill().ok();
        }
        self.child.wait().ok();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }
}

async fn create_session(client: &reqwest::Client, base: &str) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Created {
        id: String,
    }
    let url = format!("{base}/api/sessions");
    let response = client
        .post(&url)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    if response.status() != reqwest::StatusCode::CREATED {
        return Err(format!("POST {url}: status {}", response.status()));
    }
    let created: Created = response
        .json()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    Ok(created.id)
}

async fn measure(args: &Args, server: &Server) -> Result<serde_json::Value, String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .map_err(|e| format!("http client: {e}"))?;
    let ids: Vec<String> = futures_util::stream::iter(0..args.sockets)
        .map(|_| create_session(&client, &server.url))
        .buffer_unordered(args.concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    // The HTTP connections of the setup close, so the baseline has none of them.
    drop(client);
    tokio::time::sleep(args.settle).await;
    let before = server.rss_kib()?;

    let host = server.url.trim_start_matches("http://").to_owned();
    let sockets: Vec<_> = futures_util::stream::iter(ids)
        .map(|id| {
            let url = format!("ws://{host}/ws?session={id}");
            async move {
                tokio_tungstenite::connect_async(&url)
                    .await
                    .map(|(socket, _)| socket)
                    .map_err(|e| format!("GET {url}: {e}"))
            }
        })
        .buffer_unordered(args.concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    tokio::time::sleep(args.settle).await;
    let after = server.rss_kib()?;
    let open = sockets.len();
    drop(sockets);
    let per_socket = after.saturating_sub(before) as f64 / open.max(1) as f64;
    eprintln!(
        "idle_sockets: server RSS {before} KiB with {open} sessions, {after} KiB with a socket \
         open on each: {per_socket:.2} KiB per open idle socket"
    );
    Ok(serde_json::json!({
        "sockets": open,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_socket": per_socket,
    }))
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("idle_sockets: {e}");
            return ExitCode::from(2);
        }
    };
    let mut server = match Server::start(&args.server) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("idle_sockets: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("idle_sockets: runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(measure(&args, &server));
    server.stop();
    match result {
        Ok(figures) => {
            if args.json {
                println!("{figures}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("idle_sockets: {e}");
            ExitCode::FAILURE
        }
    }
}
