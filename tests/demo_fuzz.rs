//! A black-box fuzzer against each demo as a process: for a bounded time it throws random and
//! malformed requests (methods, paths, headers, bodies), raw bytes, and WebSocket frames
//! (junk text, cancel frames for unknown tasks, binary, oversized) at the server, then checks
//! that it is alive, `/healthz` answers, and a session opened before still gets its statuses.
//!
//! `FUZZ_SECONDS` sets the time per demo (default 3), `FUZZ_SEED` replays a run (the seed is
//! printed).

mod support;

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use support::demo::Demo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// xorshift64*: enough randomness to fuzz with, replayable from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
    fn bytes(&mut self, most: usize) -> Vec<u8> {
        let len = self.below(most + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }
}

const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD", "PATCH", "G\0T", "",
];
const PATHS: &[&str] = &[
    "/",
    "/healthz",
    "/metrics",
    "/api/sessions",
    "/api/sessions/{id}/tasks",
    "/api/sessions/{id}/tasks/x/cancel",
    "/cancel?session={id}&task=%00",
    "/ws?session={id}",
    "/ws?session={id}&after=18446744073709551616",
    "/events?session={id}&last_event_id=-1",
    "/events?session=%ff%fe",
    "/status-messenger.js",
    "/../../etc/passwd",
    "//",
    "/%",
    "/api/sessions/%2e%2e/tasks",
    "/ws?session={id}&after=99999999",
];
const HEADERS: &[&str] = &[
    "Content-Length: 5",
    "Content-Length: -1",
    "Content-Length: 99999999999999999999",
    "Transfer-Encoding: chunked",
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: ",
    "Sec-WebSocket-Version: 13",
    "Last-Event-ID: \u{1}",
    "Content-Type: application/json",
    "X: \u{7f}",
    "Cookie: a=b; c",
    "Host:",
];
const BODIES: &[&str] = &[
    "",
    "{",
    "{\"steps\": 1, \"delay_ms\": 0}",
    "{\"steps\": -1}",
    "{\"steps\": 1e309}",
    "[]",
    "null",
    "{\"steps\": 100001, \"delay_ms\": 0}",
    "0\r\n\r\n",
    "\u{0}\u{0}",
];

fn seconds() -> Duration {
    let secs = std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(secs)
}

/// One random request on a raw connection; the answer (if any) is read and dropped.
async fn raw_request(addr: std::net::SocketAddr, rng: &mut Rng, id: &str) {
    let Ok(mut socket) = TcpStream::connect(addr).await else {
        return;
    };
    let mut request = Vec::new();
    if rng.below(8) == 0 {
        request = rng.bytes(512);
    } else {
        let path = rng.pick(PATHS).replace("{id}", id);
        request.extend(format!("{} {path} HTTP/1.1\r\nHost: x\r\n", rng.pick(METHODS)).bytes());
        for _ in 0..rng.below(4) {
            request.extend(rng.pick(HEADERS).bytes());
            request.extend(b"\r\n");
        }
        let body = rng.pick(BODIES);
        request.extend(format!("Content-Length: {}\r\n\r\n{body}", body.len()).bytes());
        if rng.below(4) == 0 {
            request.extend(rng.bytes(64));
        }
    }
    let _ = socket.write_all(&request).await;
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(50), socket.read(&mut buf)).await;
}

/// A WebSocket of session `id` sent random frames.
async fn ws_frames(url: &str, rng: &mut Rng) {
    let Ok(Ok((mut ws, _))) = tokio::time::timeout(
        Duration::from_secs(2),
        tokio_tungstenite::connect_async(url),
    )
    .await
    else {
        return;
    };
    for _ in 0..rng.below(8) {
        let frame = match rng.below(6) {
            0 => Message::Text(String::from_utf8_lossy(&rng.bytes(200)).into_owned().into()),
            1 => {
                Message::Text(format!("{{\"type\":\"cancel\",\"task\":\"{}\"}}", rng.next()).into())
            }
            2 => Message::Binary(rng.bytes(200).into()),
            3 => Message::Ping(rng.bytes(100).into()),
            4 => Message::Text("{\"type\":\"cancel\",\"task\":[1,{}]}".into()),
            _ => Message::Text("x".repeat(70 * 1024).into()),
        };
        if ws.send(frame).await.is_err() {
            return;
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(20), ws.next()).await;
}

async fn fuzz(demo: Demo) {
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("{demo:?}: FUZZ_SEED={seed}");
    // xorshift stays at zero from a zero state.
    let mut rng = Rng(if seed == 0 {
        0x9e37_79b9_7f4a_7c15
    } else {
        seed
    });
    let server = demo.start(&[]);
    let client = reqwest::Client::new();
    let new_session = || async {
        let body: serde_json::Value = client
            .post(server.url("/api/sessions"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["id"].as_str().unwrap().to_owned()
    };
    let bystander = new_session().await;
    let target = new_session().await;
    let (mut watch, _) =
        tokio_tungstenite::connect_async(server.ws_url(&format!("session={bystander}")))
            .await
            .unwrap();

    let started = Instant::now();
    let mut requests = 0u64;
    while started.elapsed() < seconds() {
        if rng.below(3) == 0 {
            ws_frames(&server.ws_url(&format!("session={target}")), &mut rng).await;
        } else {
            raw_request(server.addr, &mut rng, &target).await;
        }
        requests += 1;
    }
    eprintln!(
        "{demo:?}: {requests} fuzz requests in {:?}",
        started.elapsed()
    );

    let health = client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200, "{demo:?}: /healthz after fuzzing");
    assert_eq!(health.text().await.unwrap(), "ok");
    // The bystander session is unaffected: its open socket gets its own task's status.
    let started = client
        .post(server.url(&format!("/api/sessions/{bystander}/tasks")))
        .body(r#"{"steps": 1, "delay_ms": 0}"#)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    let status = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(frame)) = watch.next().await {
            if let Message::Text(text) = frame {
                let value: serde_json::Value = serde_json::from_str(&text).unwrap();
                if value.get("seq").is_some() {
                    return value;
                }
            }
        }
        panic!("{demo:?}: the bystander's socket closed");
    })
    .await
    .expect("the bystander's status arrives");
    assert_eq!(status["session"].as_str(), Some(bystander.as_str()));
    assert_eq!(status["seq"], 1);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_demo_survives_fuzzing() {
    fuzz(Demo::Axum).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_demo_survives_fuzzing() {
    fuzz(Demo::Actix).await;
}
