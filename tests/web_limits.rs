//! The integrations' limits against hostile clients on a raw socket: a client that floods
//! pings and never reads is dropped with its memory bounded (axum), a frame whose header
//! claims more than the message limit closes the socket before its payload is read
//! (actix-web), and a handshake with a malformed `Sec-WebSocket-Key` is refused (axum).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use status_messenger::web::Endpoints;
use status_messenger::Hub;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The resident set of this process, in bytes (Linux `/proc`); `None` elsewhere.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Serves `endpoints` with axum on a free port, on the test's runtime.
async fn serve_axum(endpoints: &Endpoints) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app: axum::Router = endpoints.router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Serves `endpoints` with actix-web on a free port, on a thread of its own.
fn serve_actix(endpoints: Endpoints) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            actix_web::HttpServer::new(move || {
                actix_web::App::new().configure(endpoints.configure())
            })
            .workers(1)
            .disable_signals()
            .listen(listener)
            .unwrap()
            .run()
            .await
        })
    });
    addr
}

/// Sends a WebSocket upgrade for `path` with `key`; returns the socket and the response head.
async fn upgrade(addr: SocketAddr, path: &str, key: Option<&str>) -> (TcpStream, String) {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let key = key.map_or(String::new(), |key| format!("Sec-WebSocket-Key: {key}\r\n"));
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         {key}Sec-WebSocket-Version: 13\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut byte))
            .await
            .expect("the handshake is answered")
            .unwrap();
        if read == 0 {
            break;
        }
        head.push(byte[0]);
    }
    (socket, String::from_utf8_lossy(&head).into_owned())
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

async fn session(hub: &Hub) -> String {
    let id = format!("limits-{}", rand_suffix());
    hub.open_session(&id).await.unwrap();
    id
}

fn rand_suffix() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A masked client ping with a 125-byte payload, the largest a control frame may carry.
fn ping_frame() -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![0x89, 0x80 | 125];
    frame.extend_from_slice(&mask);
    frame.extend((0..125).map(|i| b'p' ^ mask[i % 4]));
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_drops_a_client_that_floods_pings_and_never_reads() {
    let hub = Hub::new(Default::default()).unwrap();
    let id = session(&hub).await;
    let endpoints = Endpoints::new(hub).write_timeout(Duration::from_secs(1));
    let addr = serve_axum(&endpoints).await;
    let (mut socket, head) = upgrade(addr, &format!("/ws?session={id}"), Some(KEY)).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(endpoints.open_streams(), 1);

    let burst: Vec<u8> = ping_frame().repeat(512);
    let before = rss_bytes();
    let mut peak = before;
    let started = Instant::now();
    let mut sent = 0usize;
    let closed_after = loop {
        if started.elapsed() > Duration::from_secs(15) {
            break None;
        }
        match tokio::time::timeout(Duration::from_millis(200), socket.write_all(&burst)).await {
            Ok(Ok(())) => sent += burst.len(),
            Ok(Err(_)) => break Some(started.elapsed()),
            // The server stopped reading: it is about to drop us, or already has.
            Err(_) => {}
        }
        peak = peak.max(rss_bytes());
        if endpoints.open_streams() == 0 {
            break Some(started.elapsed());
        }
    };
    let grew = peak
        .zip(before)
        .map(|(peak, before)| peak.saturating_sub(before));
    eprintln!("sent {sent} bytes of pings; closed after {closed_after:?}; RSS grew {grew:?} bytes");
    let closed_after = closed_after.expect("the server dropped the socket");
    assert!(closed_after < Duration::from_secs(10), "{closed_after:?}");
    if let Some(grew) = grew {
        assert!(grew < 64 * 1024 * 1024, "RSS grew by {grew} bytes");
    }
    // The stream is gone, and the server still serves.
    let deadline = Instant::now() + Duration::from_secs(5);
    while endpoints.open_streams() != 0 {
        assert!(Instant::now() < deadline, "the stream still counts as open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, head) = upgrade(addr, &format!("/ws?session={id}"), Some(KEY)).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
}

/// Sends a frame header claiming `length` bytes, then payload for as long as the server reads
/// it (at most `most` bytes or 10 s); returns what was sent, what the server sent back, and
/// whether the connection ended within 10 s.
async fn send_oversized(
    mut socket: TcpStream,
    length: u64,
    most: usize,
) -> (usize, (Vec<u8>, bool)) {
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&length.to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    let (mut reader, mut writer) = socket.split();
    let read_all = async {
        let mut back = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut back));
        // A reset (the server closed with our bytes unread) ends it as surely as a FIN.
        let ended = read.await.is_ok();
        (back, ended)
    };
    let write = async {
        let mut sent = 0;
        if writer.write_all(&header).await.is_err() {
            return sent;
        }
        let chunk = vec![0u8; 64 * 1024];
        let started = Instant::now();
        while sent < most && started.elapsed() < Duration::from_secs(10) {
            match tokio::time::timeout(Duration::from_secs(2), writer.write_all(&chunk)).await {
                Ok(Ok(())) => sent += chunk.len(),
                Ok(Err(_)) | Err(_) => break,
            }
        }
        sent
    };
    tokio::join!(write, read_all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_closes_on_an_oversized_frame_header_and_stops_reading() {
    let hub = Hub::new(Default::default()).unwrap();
    let id = session(&hub).await;
    let endpoints = Endpoints::new(hub);
    let addr = serve_actix(endpoints.clone());
    for length in [256 * 1024 * 1024, i64::MAX as u64] {
        let (socket, head) = upgrade(addr, &format!("/ws?session={id}"), Some(KEY)).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let most = 128 * 1024 * 1024;
        let (sent, (back, ended)) = send_oversized(socket, length, most).await;
        eprintln!(
            "frame of {length} bytes: {sent} payload bytes taken before the close ({} bytes back)",
            back.len()
        );
        assert!(ended, "the connection is still open");
        assert!(
            sent < 16 * 1024 * 1024,
            "the server kept reading: {sent} bytes"
        );
        // The server sends a close 1009 "message too big" first; the client sees it unless
        // the reset of the connection (its bytes were left unread) overtook it.
        let close = [0x88, 17, 0x03, 0xf1];
        assert!(
            back.is_empty() || back.windows(4).any(|w| w == close),
            "not a close 1009: {back:?}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while endpoints.open_streams() != 0 {
        assert!(Instant::now() < deadline, "a stream still counts as open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
