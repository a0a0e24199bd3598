//! A TCP proxy the test controls, between a browser and a server: it can cut every open
//! connection, stall them (stop forwarding without closing), and refuse new ones.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A proxy on a free port of 127.0.0.1 forwarding to a target; it stops with its runtime or
/// when dropped.
pub(crate) struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

struct Shared {
    /// Connections with an id below this are cut.
    cut: watch::Sender<u64>,
    /// Connections with an id below this forward nothing more.
    stall: watch::Sender<u64>,
    refuse: AtomicBool,
    next_id: AtomicU64,
    accepted: AtomicUsize,
}

impl Proxy {
    pub(crate) async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let shared = Arc::new(Shared {
            cut: watch::channel(0).0,
            stall: watch::channel(0).0,
            refuse: AtomicBool::new(false),
            next_id: AtomicU64::new(0),
            accepted: AtomicUsize::new(0),
        });
        let accept = tokio::spawn({
            let shared = Arc::clone(&shared);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    shared.accepted.fetch_add(1, Ordering::SeqCst);
                    if shared.refuse.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(connection(Arc::clone(&shared), id, client, target));
                }
            }
        });
        Proxy {
            addr,
            shared,
            accept,
        }
    }

    /// The address to connect to instead of the target's.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every connection open now, as a network failure would.
    pub(crate) fn cut(&self) {
        let below = self.shared.next_id.load(Ordering::SeqCst);
        self.shared.cut.send_replace(below);
    }

    /// Every connection open now stops forwarding, in both directions, without closing;
    /// connections made later forward as usual.
    pub(crate) fn stall(&self) {
        let below = self.shared.next_id.load(Ordering::SeqCst);
        self.shared.stall.send_replace(below);
    }

    /// While `refuse`, new connections are closed as soon as they are accepted.
    pub(crate) fn refuse(&self, refuse: bool) {
        self.shared.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Connections accepted so far.
    pub(crate) fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

async fn connection(shared: Arc<Shared>, id: u64, client: TcpStream, target: SocketAddr) {
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = tokio::spawn(pump(Arc::clone(&shared), id, client_read, server_write));
    pump(shared, id, server_read, client_write).await;
    up.abort();
}

/// Copies one direction until either side closes or the connection is cut; while stalled it
/// holds what it read and waits for the cut.
async fn pump(
    shared: Arc<Shared>,
    id: u64,
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
) {
    let mut cut = shared.cut.subscribe();
    let stall = shared.stall.subscribe();
    let is_cut = |cut: &watch::Receiver<u64>| id < *cut.borrow();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if is_cut(&cut) {
            return;
        }
        tokio::select! {
            changed = cut.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            read = from.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => {
                        let _ = to.shutdown().await;
                        return;
                    }
                    Ok(n) => n,
                };
                if id < *stall.borrow() {
                    // Stalled: forward nothing, close nothing, until cut.
                    while !is_cut(&cut) {
                        if cut.changed().await.is_err() {
                            return;
                        }
                    }
                    return;
                }
                if to.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}
