//! Helpers shared by the Redis tests: a throwaway `redis-server`, a TCP proxy in front of it,
//! and reading subscriptions with a deadline.
#![allow(dead_code, unreachable_pub)] // each test file uses a different part

pub mod proxy;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use status_messenger::{Event, Subscription};

/// A `redis-server` on a free port of 127.0.0.1 in a temporary directory, without persistence
/// unless started with [`RedisServer::start_persistent`]; killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    persistent: bool,
}

impl RedisServer {
    /// Starts one. `None` (after printing why) when `redis-server` is missing and `CI` is unset;
    /// under `CI` a missing binary fails the test.
    pub fn start() -> Option<Self> {
        Self::start_with(false)
    }

    /// Like [`start`](Self::start), with an append-only file written before every reply
    /// (`--appendonly yes --appendfsync always`), so [`restart`](Self::restart) after
    /// [`kill`](Self::kill) comes back with everything Redis had answered or published.
    pub fn start_persistent() -> Option<Self> {
        Self::start_with(true)
    }

    fn start_with(persistent: bool) -> Option<Self> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            assert!(
                std::env::var_os("CI").is_none(),
                "redis-server is not installed, and CI is set: install it (Debian package \
                 redis-server)"
            );
            eprintln!("skipped: redis-server is not installed (install the redis-server package)");
            return None;
        }
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temporary directory");
            let port = free_port();
            let child = spawn(port, dir.path(), persistent);
            let mut server = Self {
                child: Some(child),
                port,
                dir,
                persistent,
            };
            if server.wait_ready() {
                return Some(server);
            }
        }
        panic!("redis-server did not start");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server at once (SIGKILL): no shutdown, no save.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill redis-server");
            child.wait().expect("reap redis-server");
        }
    }

    /// Stops the server where it stands (SIGSTOP): connections stay open, nothing is answered.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("redis-server is running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Starts it again on the same port, after killing it if it runs: empty, or with its data
    /// when it is persistent.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.child = Some(spawn(self.port, self.dir.path(), self.persistent));
            if self.wait_ready() {
                return;
            }
            self.kill();
            assert!(Instant::now() < deadline, "redis-server did not restart");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts it again on the same port without any of its data (a new, empty directory), after
    /// killing it if it runs.
    pub fn restart_empty(&mut self) {
        self.kill();
        self.dir = tempfile::tempdir().expect("temporary directory");
        self.restart();
    }

    /// Sends one inline command and returns the raw reply.
    pub fn command(&self, line: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream
            .write_all(format!("{line}\r\n").as_bytes())
            .expect("send");
        let mut reply = vec![0; 64 * 1024];
        let n = stream.read(&mut reply).expect("reply");
        String::from_utf8_lossy(&reply[..n]).into_owned()
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    // It exited: the port was taken after all.
                    self.child = None;
                    return false;
                }
            }
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                let mut reply = [0; 7];
                if stream.write_all(b"PING\r\n").is_ok()
                    && stream.read_exact(&mut reply).is_ok()
                    && &reply == b"+PONG\r\n"
                {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spawn(port: u16, dir: &Path, persistent: bool) -> Child {
    let appendonly: &[&str] = if persistent {
        &["--appendonly", "yes", "--appendfsync", "always"]
    } else {
        &["--appendonly", "no"]
    };
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(appendonly)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn redis-server")
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("free port")
}

/// A key prefix of its own for each test, so tests never see each other's keys.
pub fn prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("test-{test}-{nanos}")
}

/// The next item within `within`; panics on a timeout.
pub async fn next_within(sub: &mut Subscription, within: Duration) -> Option<Event> {
    tokio::time::timeout(within, sub.next())
        .await
        .unwrap_or_else(|_| panic!("no event within {within:?}"))
}

/// Reads items until they account for every number up to `last` (statuses and gaps), or
/// panics after `within`.
pub async fn read_through(sub: &mut Subscription, last: u64, within: Duration) -> Vec<Event> {
    let mut events = Vec::new();
    read_more(sub, &mut events, last, within).await;
    events
}

/// Like [`read_through`], adding to what was read before.
pub async fn read_more(
    sub: &mut Subscription,
    events: &mut Vec<Event>,
    last: u64,
    within: Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen = events.last().map_or(0, Event::last_seq);
    while seen < last {
        let event = tokio::time::timeout_at(deadline, sub.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only up to {seen} of {last} within {within:?}: {:?}",
                    shape(events)
                )
            })
            .expect("stream ended early");
        seen = event.last_seq();
        events.push(event);
    }
}

/// `(kind, from, to)` per item: `('s', seq, seq)` or `('g', from, to)`.
pub fn shape(events: &[Event]) -> Vec<(char, u64, u64)> {
    events
        .iter()
        .map(|event| match event {
            Event::Status(s) => ('s', s.seq(), s.seq()),
            Event::Gap(g) => ('g', g.from(), g.to()),
            other => panic!("unexpected event {other:?}"),
        })
        .collect()
}

/// Checks that `events` account for every number `1..=last` exactly once, in order, each
/// status carrying the text `msg {seq}`; returns the numbers covered by gaps.
pub fn check_exact(events: &[Event], last: u64) -> Vec<u64> {
    let mut next = 1;
    let mut missing = Vec::new();
    for event in events {
        match event {
            Event::Status(s) => {
                assert_eq!(
                    s.seq(),
                    next,
                    "out of order or duplicated: {:?}",
                    shape(events)
                );
                assert_eq!(
                    s.text(),
                    format!("msg {}", s.seq()),
                    "text under the wrong number"
                );
                next += 1;
            }
            Event::Gap(g) => {
                assert_eq!(
                    g.from(),
                    next,
                    "gap not where expected: {:?}",
                    shape(events)
                );
                assert!(g.to() >= g.from());
                missing.extend(g.from()..=g.to());
                next = g.to() + 1;
            }
            other => panic!("unexpected event {other:?}"),
        }
    }
    assert_eq!(
        next,
        last + 1,
        "numbers unaccounted for: {:?}",
        shape(events)
    );
    missing
}
