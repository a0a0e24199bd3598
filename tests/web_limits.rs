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

/// Serves `endpoints` with axum on a free port, on the test's runtime: plain `axum::serve`, so
/// what the WebSocket does by itself is what is tested.
async fn serve_axum(endpoints: &Endpoints) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app: axum::Router = endpoints.router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// The same, set up as the `status_messenger::axum` docs advise: `on_accept` on every
/// connection.
async fn serve_axum_on_accept(endpoints: &Endpoints) -> SocketAddr {
    use axum::serve::ListenerExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app: axum::Router = endpoints.router();
    let listener = listener.tap_io(endpoints.on_accept());
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Serves `endpoints` with actix-web on a free port, on a thread of its own, set up as the
/// `status_messenger::actix` docs advise (a client's FIN ends its connection, and one that
/// stops reading is dropped after the write timeout).
fn serve_actix(endpoints: Endpoints) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let on_connect = endpoints.on_connect();
            actix_web::HttpServer::new(move || {
                actix_web::App::new().configure(endpoints.configure())
            })
            .on_connect(on_connect)
            .workers(1)
            .h1_allow_half_closed(false)
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
    ping_flood(addr, &endpoints, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_ends_the_stream_of_a_client_that_floods_pings_and_never_reads() {
    let hub = Hub::new(Default::default()).unwrap();
    let id = session(&hub).await;
    let endpoints = Endpoints::new(hub).write_timeout(Duration::from_secs(1));
    let addr = serve_actix(endpoints.clone());
    ping_flood(addr, &endpoints, &id).await;
}

/// Floods pings on a WebSocket of `id` without reading: the stream must end (the socket
/// dropped, or at least the stream gone) within 10 s, with this process's memory bounded.
async fn ping_flood(addr: SocketAddr, endpoints: &Endpoints, id: &str) {
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
async fn actix_drops_the_connection_on_an_oversized_frame_header_and_stops_reading() {
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
        // The server writes a close 1009 "message too big" before it drops the connection,
        // so it is there to read before the reset (the client's bytes were left unread).
        let close = [0x88, 17, 0x03, 0xf1];
        assert!(
            back.windows(4).any(|w| w == close),
            "not a close 1009: {back:?}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while endpoints.open_streams() != 0 {
        assert!(Instant::now() < deadline, "a stream still counts as open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn axum_refuses_a_malformed_websocket_key() {
    let hub = Hub::new(Default::default()).unwrap();
    let id = session(&hub).await;
    let endpoints = Endpoints::new(hub);
    let addr = serve_axum(&endpoints).await;
    let path = format!("/ws?session={id}");
    for key in [
        Some(""),
        Some("not base64!"),
        Some("AAAA"),
        Some("!!!!!!!!!!!!!!!!!!!!!!=="),
        None,
    ] {
        let (_, head) = upgrade(addr, &path, key).await;
        assert!(head.starts_with("HTTP/1.1 400"), "{key:?}: {head}");
        assert!(head.contains("application/json"), "{head}");
    }
    assert_eq!(endpoints.open_streams(), 0);
    let (_, head) = upgrade(addr, &path, Some(KEY)).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
}

/// Whether `server`'s `/ws` and `/events` refuse `after` beyond the head with 400 naming it.
async fn refuses_resume_beyond_head(addr: SocketAddr, id: &str, head: u64) {
    let client = reqwest::Client::new();
    for url in [
        format!(
            "http://{addr}/events?session={id}&last_event_id={}",
            head + 5
        ),
        format!("http://{addr}/events?session={id}&after={}", head + 1),
    ] {
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 400, "{url}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["head"], head, "{body}");
    }
    let response = client
        .get(format!("http://{addr}/ws?session={id}&after={}", head + 1))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["head"], head, "{body}");
    // At the head itself is fine: the stream waits for what comes next.
    let (_, answer) = upgrade(addr, &format!("/ws?session={id}&after={head}"), Some(KEY)).await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_point_beyond_the_head_is_refused_on_both_integrations() {
    let hub = Hub::new(Default::default()).unwrap();
    let id = session(&hub).await;
    for text in ["one", "two", "three"] {
        hub.publish(Some(&id), text).unwrap();
    }
    let endpoints = Endpoints::new(hub.clone());
    refuses_resume_beyond_head(serve_axum(&endpoints).await, &id, 3).await;
    refuses_resume_beyond_head(serve_actix(endpoints), &id, 3).await;
}

/// Opens an SSE stream on a raw socket, reads its first bytes, and closes the socket; returns
/// how long the hub still counted it as a subscriber.
async fn sse_lingers(addr: SocketAddr, hub: &Hub, id: &str) -> Duration {
    let before = hub.stats().subscribers;
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /events?session={id} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    // Read all there is, so the close is a clean FIN (unread bytes would make it a reset,
    // which any server notices at once).
    let mut buf = [0u8; 4096];
    while let Ok(Ok(read)) =
        tokio::time::timeout(Duration::from_millis(300), socket.read(&mut buf)).await
    {
        assert!(read > 0, "the stream ended early");
    }
    assert_eq!(hub.stats().subscribers, before + 1);
    drop(socket);
    let closed = Instant::now();
    while hub.stats().subscribers > before && closed.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    closed.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_drops_a_closed_sse_stream_at_once() {
    let hub = Hub::new(Default::default()).unwrap();
    let id = session(&hub).await;
    let addr = serve_actix(Endpoints::new(hub.clone()));
    let lingered = sse_lingers(addr, &hub, &id).await;
    eprintln!("a closed SSE stream counted as a subscriber for {lingered:?}");
    assert!(lingered < Duration::from_secs(1), "{lingered:?}");
}

/// Whether this process still holds the server's end of the TCP connection from `server` to
/// the client port `client` (Linux `/proc`; `None` elsewhere): the kernel lists each socket
/// with its inode, and a descriptor of this process links to `socket:[inode]` while it is
/// open. A closed one is gone from the list, or orphaned there with inode 0.
fn server_holds_connection(server: SocketAddr, client: u16) -> Option<bool> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let port_of = |address: &str| {
        let port = address.rsplit(':').next()?;
        u16::from_str_radix(port, 16).ok()
    };
    let inode = table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, remote, inode) = (fields.get(1)?, fields.get(2)?, fields.get(9)?);
        (port_of(local)? == server.port() && port_of(remote)? == client).then_some(*inode)
    });
    let Some(inode) = inode.filter(|inode| *inode != "0") else {
        return Some(false);
    };
    let link = format!("socket:[{inode}]");
    let held = std::fs::read_dir("/proc/self/fd")
        .ok()?
        .filter_map(Result::ok)
        .any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == link.as_str())
        });
    Some(held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_closes_the_connection_of_a_websocket_client_that_never_reads() {
    let hub = Hub::new(Default::default()).unwrap();
    let id = session(&hub).await;
    let write_timeout = Duration::from_secs(1);
    let endpoints = Endpoints::new(hub.clone()).write_timeout(write_timeout);
    let addr = serve_actix(endpoints.clone());
    let (mut socket, head) = upgrade(addr, &format!("/ws?session={id}"), Some(KEY)).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let client_port = socket.local_addr().unwrap().port();
    if server_holds_connection(addr, client_port).is_none() {
        eprintln!("skipped: no /proc/net/tcp to find the server's socket in");
        return;
    }
    assert_eq!(server_holds_connection(addr, client_port), Some(true));

    // Statuses until the socket's buffers are full and a write stalls: the stream ends.
    let text = "s".repeat(4000);
    let started = Instant::now();
    while endpoints.open_streams() != 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the stream never stalled"
        );
        for _ in 0..64 {
            let _ = hub.publish(Some(&id), text.clone());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let stalled = Instant::now();
    eprintln!("stream ended after {:?} of statuses", stalled - started);

    // Without a byte read by the client, the server lets go of the connection.
    let margin = Duration::from_secs(2);
    while server_holds_connection(addr, client_port) == Some(true) {
        assert!(
            stalled.elapsed() < write_timeout + margin,
            "the server still holds the connection {:?} after the stall",
            stalled.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("connection closed {:?} after the stall", stalled.elapsed());

    // Reading now gets what was buffered, then the end (a FIN, or a reset).
    let mut back = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut back)).await;
    assert!(
        read.is_ok(),
        "the connection is still open after {} bytes",
        back.len()
    );
}

/// An SSE client that never reads, while its session's statuses keep coming, is dropped on
/// both frameworks within a few seconds of the write timeout (1 s here): the kernel gives up
/// on it (`TCP_USER_TIMEOUT`, set by `on_accept` / `on_connect`), the response ends, and the
/// stream no longer counts as open.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_client_that_never_reads_is_dropped_on_both_frameworks() {
    let hub = Hub::new(Default::default()).unwrap();
    let id = session(&hub).await;
    let axum = Endpoints::new(hub.clone()).write_timeout(Duration::from_secs(1));
    let actix = Endpoints::new(hub.clone()).write_timeout(Duration::from_secs(1));
    let servers = [
        ("axum", serve_axum_on_accept(&axum).await, &axum),
        ("actix-web", serve_actix(actix.clone()), &actix),
    ];
    let publishing = tokio::spawn({
        let hub = hub.clone();
        let id = id.clone();
        let text = "x".repeat(1000);
        async move {
            loop {
                for _ in 0..50 {
                    let _ = hub.publish(Some(&id), text.clone());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    for (name, addr, endpoints) in servers {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(1024).unwrap();
        let mut socket = socket.connect(addr).await.unwrap();
        let request = format!("GET /events?session={id} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut head = [0u8; 12];
        socket.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 200", "{name}");
        let started = Instant::now();
        while endpoints.open_streams() != 0 {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{name}: the stream of a client that never reads is still open"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!("{name}: dropped after {:?}", started.elapsed());
        drop(socket);
    }
    publishing.abort();
}
