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
use status_messenger::{Event, Hub, Subscription, TaskState};

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
            if pong(self.port) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

/// Whether a server on `port` answers `PING`.
fn pong(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut reply = [0; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
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
    spawn_with(port, dir, persistent, &[])
}

/// A `redis-server` on `port` (with an append-only file when `persistent`), with `extra`
/// arguments.
fn spawn_with(port: u16, dir: &Path, persistent: bool, extra: &[&str]) -> Child {
    let appendonly: &[&str] = if persistent {
        &["--appendonly", "yes", "--appendfsync", "always"]
    } else {
        &["--appendonly", "no"]
    };
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(extra)
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

/// Waits, at most `within`, until `hub` tells `task` of `session` in `state`: what a new
/// subscription there would start with.
pub async fn until_told(hub: &Hub, session: &str, task: &str, state: TaskState, within: Duration) {
    let deadline = Instant::now() + within;
    while !hub
        .tasks(session)
        .unwrap()
        .iter()
        .any(|update| update.task() == task && update.state() == state)
    {
        assert!(
            Instant::now() < deadline,
            "{task} never told {state}: {:?}",
            hub.tasks(session)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
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

/// [`check_exact`] for a failover that lost writes its master had acknowledged: every number
/// `1..=last` is accounted for once, in order (a status, or within exactly one gap), and the
/// statuses' texts `msg {k}` come in the order they were published, none twice. A batch whose
/// write was lost with its master is written again after the numbers others may have seen (the
/// old numbers then lie in a gap), so a text may come under a later number than its own; every
/// text before the last one delivered that did not come is matched by a number in a gap.
/// Returns the numbers covered by gaps.
pub fn check_once_in_order(events: &[Event], last: u64) -> Vec<u64> {
    let mut next = 1;
    let mut missing = Vec::new();
    let mut last_text = 0u64;
    let mut delivered = 0u64;
    for event in events {
        match event {
            Event::Status(s) => {
                assert_eq!(
                    s.seq(),
                    next,
                    "out of order or duplicated: {:?}",
                    shape(events)
                );
                let k: u64 = s
                    .text()
                    .strip_prefix("msg ")
                    .and_then(|k| k.parse().ok())
                    .unwrap_or_else(|| panic!("unexpected text {:?}", s.text()));
                assert!(
                    k > last_text && k <= s.seq(),
                    "text {k} under {} after text {last_text}: twice or out of order: {:?}",
                    s.seq(),
                    shape(events)
                );
                last_text = k;
                delivered += 1;
                next += 1;
            }
            Event::Gap(g) => {
                assert_eq!(
                    g.from(),
                    next,
                    "gap not where expected: {:?}",
                    shape(events)
                );
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
    assert!(
        last_text - delivered <= missing.len() as u64,
        "{} texts neither delivered nor in a gap: {:?}",
        last_text - delivered - missing.len() as u64,
        shape(events)
    );
    missing
}

/// Whether `redis-server` and `redis-cli` are installed. When they are not: `false` (after
/// printing why) when `CI` is unset; under `CI` the test fails.
pub fn cluster_tools_present() -> bool {
    let present = |binary: &str| {
        Command::new(binary)
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok()
    };
    if present("redis-server") && present("redis-cli") {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "redis-server or redis-cli is not installed, and CI is set: install them (Debian \
         packages redis-server and redis-tools)"
    );
    eprintln!(
        "skipped: redis-server or redis-cli is not installed (packages redis-server, redis-tools)"
    );
    false
}

/// A Redis Cluster of three masters with one replica each, on free ports of 127.0.0.1, in a
/// temporary directory, without persistence; a failed master is replaced by its replica within
/// about two seconds (`cluster-node-timeout` 1000 ms). Every node is killed when dropped.
pub struct RedisCluster {
    nodes: Vec<(u16, Option<Child>)>,
    /// Nodes stopped with SIGSTOP: asked nothing (they would not answer) until continued.
    paused: Vec<u16>,
    dir: tempfile::TempDir,
}

/// One node as `CLUSTER NODES` describes it.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    pub id: String,
    pub port: u16,
    pub master: bool,
    /// The master's id, for a replica.
    pub master_id: Option<String>,
    pub failed: bool,
    pub slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Starts one. `None` (after printing why) when the tools are missing and `CI` is unset.
    pub fn start() -> Option<Self> {
        if !cluster_tools_present() {
            return None;
        }
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut nodes = Vec::new();
        while nodes.len() < 6 {
            let port = cluster_port(&nodes);
            let child = spawn_cluster_node(port, dir.path());
            if wait_ping(port, Duration::from_secs(10)) {
                nodes.push((port, Some(child)));
            } else {
                let mut child = child;
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let cluster = Self {
            nodes,
            paused: Vec::new(),
            dir,
        };
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|(port, _)| format!("127.0.0.1:{port}"))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run redis-cli --cluster create");
        assert!(created.success(), "redis-cli --cluster create failed");
        cluster.wait_healthy(Duration::from_secs(30));
        Some(cluster)
    }

    /// Seed URLs: every node.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|(port, _)| format!("redis://127.0.0.1:{port}/"))
            .collect()
    }

    /// Runs `redis-cli -p PORT ARGS...` and returns its output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        cli(port, args)
    }

    /// The keys matching `pattern` on the node on `port` (`redis-cli --scan`).
    pub fn scan(&self, port: u16, pattern: &str) -> Vec<String> {
        cli(port, &["--scan", "--pattern", pattern])
            .lines()
            .map(str::trim)
            .filter(|key| !key.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The live master that holds a key matching `pattern`.
    pub fn master_holding(&self, pattern: &str) -> Option<ClusterNode> {
        self.masters()
            .into_iter()
            .find(|master| !self.scan(master.port, pattern).is_empty())
    }

    /// Sharded channels with subscribers whose names start with `prefix`, over every live master.
    pub fn shard_channels(&self, prefix: &str) -> usize {
        self.masters()
            .iter()
            .map(|m| {
                cli(m.port, &["pubsub", "shardchannels", &format!("{prefix}:*")])
                    .lines()
                    .filter(|l| l.starts_with(prefix))
                    .count()
            })
            .sum()
    }

    /// The cluster as a live node sees it.
    pub fn topology(&self) -> Vec<ClusterNode> {
        for (port, child) in &self.nodes {
            if child.is_none() || self.paused.contains(port) {
                continue;
            }
            let text = cli(*port, &["cluster", "nodes"]);
            let nodes = parse_nodes(&text);
            if !nodes.is_empty() {
                return nodes;
            }
        }
        Vec::new()
    }

    /// The live masters.
    pub fn masters(&self) -> Vec<ClusterNode> {
        self.topology()
            .into_iter()
            .filter(|n| n.master && !n.failed && !n.slots.is_empty())
            .collect()
    }

    /// Kills the node on `port` at once (SIGKILL).
    pub fn kill(&mut self, port: u16) {
        for (p, child) in &mut self.nodes {
            if *p == port {
                if let Some(mut child) = child.take() {
                    child.kill().expect("kill redis-server");
                    child.wait().expect("reap redis-server");
                }
            }
        }
    }

    /// Stops the node on `port` where it stands (SIGSTOP): its connections stay open and
    /// nothing is answered, as with a process stuck or a machine frozen.
    pub fn pause(&mut self, port: u16) {
        self.signal(port, "-STOP");
        self.paused.push(port);
    }

    /// Lets a paused node go on (SIGCONT).
    pub fn resume(&mut self, port: u16) {
        self.signal(port, "-CONT");
        self.paused.retain(|p| *p != port);
    }

    fn signal(&self, port: u16, signal: &str) {
        let child = self
            .nodes
            .iter()
            .find(|(p, _)| *p == port)
            .and_then(|(_, child)| child.as_ref())
            .expect("the node runs");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Waits until the replica of the master with id `master_id` has taken its slots and the
    /// cluster is healthy again; returns when that was seen.
    pub fn wait_promoted(&self, master_id: &str, within: Duration) -> Instant {
        let deadline = Instant::now() + within;
        loop {
            let nodes = self.topology();
            let serving: Vec<&ClusterNode> = nodes
                .iter()
                .filter(|n| n.master && !n.failed && !n.slots.is_empty())
                .collect();
            let promoted = serving.len() == 3 && serving.iter().all(|n| n.id != master_id);
            if promoted && self.state_ok() {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "no replica took over within {within:?}: {nodes:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn state_ok(&self) -> bool {
        self.nodes
            .iter()
            .filter(|(port, child)| child.is_some() && !self.paused.contains(port))
            .all(|(port, _)| cli(*port, &["cluster", "info"]).contains("cluster_state:ok"))
    }

    fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let nodes = self.topology();
            let masters = nodes
                .iter()
                .filter(|n| n.master && !n.slots.is_empty())
                .count();
            let covered: u32 = nodes
                .iter()
                .flat_map(|n| n.slots.iter())
                .map(|(from, to)| u32::from(to - from) + 1)
                .sum();
            let synced = nodes
                .iter()
                .filter(|n| !n.master)
                .all(|n| cli(n.port, &["info", "replication"]).contains("master_link_status:up"));
            if nodes.len() == 6 && masters == 3 && covered == 16_384 && synced && self.state_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not become healthy: {nodes:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        // SIGKILL ends paused nodes too.
        for (_, child) in &mut self.nodes {
            if let Some(mut child) = child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = &self.dir;
    }
}

fn cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn parse_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let port = fields[1]
                .split('@')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            let flags = fields[2];
            let slots = fields[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|range| match range.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => range.parse().ok().map(|s| (s, s)),
                })
                .collect();
            Some(ClusterNode {
                id: fields[0].to_owned(),
                port,
                master: flags.contains("master"),
                master_id: (fields[3] != "-").then(|| fields[3].to_owned()),
                failed: flags.contains("fail"),
                slots,
            })
        })
        .collect()
}

/// A port that is free with its cluster bus port (`port + 10000`).
fn cluster_port(taken: &[(u16, Option<Child>)]) -> u16 {
    loop {
        let port = free_port();
        if port < 50_000
            && !taken.iter().any(|(p, _)| *p == port)
            && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()
        {
            return port;
        }
    }
}

fn spawn_cluster_node(port: u16, dir: &Path) -> Child {
    let config = format!("nodes-{port}.conf");
    spawn_with(
        port,
        dir,
        false,
        &[
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &config,
            "--cluster-node-timeout",
            "1000",
            // Replicas sync at once: one that never synced would refuse to take over.
            "--repl-diskless-sync-delay",
            "0",
        ],
    )
}

fn wait_ping(port: u16, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if pong(port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
