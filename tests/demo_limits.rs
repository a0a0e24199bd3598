//! The demos' server limits, each demo as a process: a half-sent request and an idle
//! connection are closed after the header timeout, a body sent a byte at a time is reaped
//! after the body timeout, a body over 64 KiB gets 413, and SIGTERM with open streams exits at
//! once.

mod support;

use std::time::{Duration, Instant};

use support::demo::Demo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUTS: &[&str] = &["--header-timeout", "1", "--body-timeout", "1"];

/// Reads until the server closes the connection; what it sent, and how long it took.
async fn until_closed(socket: &mut TcpStream, within: Duration) -> (String, Option<Duration>) {
    let started = Instant::now();
    let mut back = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at((started + within).into(), socket.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&back).into(),
                    Some(started.elapsed()),
                )
            }
            Ok(Ok(n)) => back.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&back).into(), None),
        }
    }
}

async fn session(base: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: serde_json::Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

async fn limits(demo: Demo) {
    let server = demo.start(TIMEOUTS);

    // Half a request, then nothing.
    let mut half = TcpStream::connect(server.addr).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // A connection that never sends a byte.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    // A keep-alive connection idle after one request.
    let mut kept = TcpStream::connect(server.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    for (name, socket) in [
        ("half-sent", &mut half),
        ("idle", &mut idle),
        ("kept alive", &mut kept),
    ] {
        let (_, closed) = until_closed(socket, Duration::from_secs(8)).await;
        let closed = closed.unwrap_or_else(|| panic!("{demo:?}: the {name} connection is open"));
        eprintln!("{demo:?}: {name} connection closed after {closed:?}");
        // The timeout is 1 s: well under 3 s, whatever the machine's load.
        assert!(
            closed < Duration::from_secs(3),
            "{demo:?} {name}: {closed:?}"
        );
    }

    // A body at one byte per 300 ms: reaped after the body timeout.
    let id = session(&server.base).await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /api/sessions/{id}/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n"
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let drip = async {
        for _ in 0..100 {
            if slow.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            if started.elapsed() > Duration::from_secs(10) {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drip).await;
    let (answer, closed) = until_closed(&mut slow, Duration::from_secs(8)).await;
    eprintln!(
        "{demo:?}: a slow body answered `{}`",
        answer.lines().next().unwrap_or("")
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{demo:?}: {answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-type: application/json")
            && answer.contains("\"error\""),
        "{demo:?}: the 408 is a JSON error: {answer}"
    );
    assert!(
        closed.is_some(),
        "{demo:?}: the connection of a slow body is closed after its 408"
    );

    // A 1 MiB body on POST /api/sessions.
    let response = reqwest::Client::new()
        .post(server.url("/api/sessions"))
        .body(vec![b'x'; 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413, "{demo:?}");

    // Open streams, then SIGTERM: the process exits at once, not after a grace period.
    let (_ws, _) = tokio_tungstenite::connect_async(server.ws_url(&format!("session={id}")))
        .await
        .unwrap();
    let sse = reqwest::get(server.url(&format!("/events?session={id}")))
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let stopping = Instant::now();
    server.stop().await.unwrap();
    let stopped = stopping.elapsed();
    eprintln!("{demo:?}: stopped {stopped:?} after SIGTERM with two open streams");
    assert!(stopped < Duration::from_secs(3), "{demo:?}: {stopped:?}");
    drop(sse);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_demo_limits() {
    limits(Demo::Axum).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_demo_limits() {
    limits(Demo::Actix).await;
}
