//! A TCP proxy in front of Redis that a test controls, to cut the network between a hub and
//! Redis in the ways a real network fails: every connection dropped, new ones refused, or
//! bytes silently held (a blackhole), in both directions or only Redis's replies.
//!
//! Held bytes are not lost: when the proxy forwards again they go on, as packets do when a
//! partition heals, so a command a client gave up on may still reach Redis late.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

/// What the proxy does with bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Passes them both ways.
    Forward,
    /// Holds them both ways, on every connection; new connections are accepted and held too.
    Blackhole,
    /// Passes what clients send, holds what Redis answers.
    HoldReplies,
}

/// A proxy on a free port of 127.0.0.1; stops (and drops every connection) when dropped.
pub struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    mode: watch::Sender<Mode>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    listener: Mutex<Option<JoinHandle<()>>>,
}

impl Proxy {
    /// Starts forwarding to `127.0.0.1:upstream_port`. Must be called inside a runtime.
    pub async fn start(upstream_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let proxy = Proxy {
            addr: listener.local_addr().expect("proxy address"),
            upstream: SocketAddr::from(([127, 0, 0, 1], upstream_port)),
            mode: watch::Sender::new(Mode::Forward),
            connections: Arc::default(),
            listener: Mutex::new(None),
        };
        proxy.listen(listener);
        proxy
    }

    /// The URL a Redis client uses to go through the proxy.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// Drops every connection now (the client sees them closed); new ones are still taken.
    pub fn cut(&self) {
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    /// Stops listening: new connections are refused until [`forward`](Self::forward).
    pub fn refuse(&self) {
        if let Some(listener) = self.listener.lock().unwrap().take() {
            listener.abort();
        }
    }

    /// Holds bytes as `mode` says, on every connection, old and new.
    pub fn set_mode(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Passes everything again: held bytes go on, and it listens again if it refused.
    pub async fn forward(&self) {
        self.set_mode(Mode::Forward);
        if self.listener.lock().unwrap().is_some() {
            return;
        }
        // The same port again: clients keep their URL. The listener `refuse` aborted may not
        // have been dropped yet (an abort takes effect when its task next runs), so the port
        // can still be taken for a moment.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let listener = loop {
            let socket = TcpSocket::new_v4().expect("socket");
            socket.set_reuseaddr(true).expect("SO_REUSEADDR");
            match socket.bind(self.addr).and_then(|()| socket.listen(1024)) {
                Ok(listener) => break listener,
                Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "the proxy's port stays taken: {error}"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                Err(error) => panic!("bind the proxy's port again: {error}"),
            }
        };
        self.listen(listener);
    }

    fn listen(&self, listener: TcpListener) {
        let upstream = self.upstream;
        let mode = self.mode.clone();
        let connections = Arc::clone(&self.connections);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let task = tokio::spawn(relay(client, upstream, mode.subscribe()));
                let mut connections = connections.lock().unwrap();
                connections.retain(|c| !c.is_finished());
                connections.push(task.abort_handle());
            }
        });
        *self.listener.lock().unwrap() = Some(task);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.refuse();
        self.cut();
    }
}

/// Carries one connection until either side closes it or the proxy cuts it.
async fn relay(client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    // A connection made during a blackhole is held before it even reaches Redis.
    if passing(&mut mode, Direction::Up).await.is_err() {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        _ = pump(client_read, server_write, mode.clone(), Direction::Up) => {}
        _ = pump(server_read, client_write, mode, Direction::Down) => {}
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Client to Redis.
    Up,
    /// Redis to client.
    Down,
}

/// Resolves once bytes may pass in `direction`; `Err` when the proxy is gone.
async fn passing(
    mode: &mut watch::Receiver<Mode>,
    direction: Direction,
) -> Result<(), watch::error::RecvError> {
    loop {
        let held = match *mode.borrow_and_update() {
            Mode::Forward => false,
            Mode::Blackhole => true,
            Mode::HoldReplies => direction == Direction::Down,
        };
        if !held {
            return Ok(());
        }
        mode.changed().await?;
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    direction: Direction,
) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        if passing(&mut mode, direction).await.is_err() {
            return;
        }
        // Reading is cancel-safe: a change of mode stops the wait without losing bytes. The
        // change is looked at first, so bytes that arrive after it are held.
        let n = tokio::select! {
            biased;
            _ = mode.changed() => continue,
            n = from.read(&mut buf) => n,
        };
        match n {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
