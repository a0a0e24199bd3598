//! The end-to-end benchmark: each server under test, the load generator against it, a table,
//! `target/e2e/results.json` and a chart `target/e2e/throughput.svg`.
//!
//! Run with: cargo bench -p status-messenger-tools --bench e2e -- [--servers floor,axum,actix] [--sessions 1,10,100,1000]
//!
//! It builds the release binaries it needs (the load generator `tools/src/bin/loadgen.rs` and the
//! floor `tools/src/bin/floor.rs` of this package, the demo servers `examples/axum_demo.rs` and
//! `examples/actix_demo.rs` of the `status-messenger` package), then for every server starts a
//! fresh process on port 0 per scenario (reading its `listening on http://...` line) and reads the
//! process's peak RSS (`VmHWM`) before stopping it with SIGTERM. It does not use the library
//! itself: everything it measures runs in those processes. `--scenarios` picks among these
//! (default: all three):
//!
//! - throughput: for each session count S, `--steps` N (default 1,000) steps with no delay,
//!   WebSockets (`--sse`: event streams). Every server is started once per S, each gets one
//!   warm-up run (not counted: a fresh process's first run starts its threads and touches its
//!   allocator's first pages), then the counted runs alternate between the servers (one run
//!   each of floor, axum, actix, then again), `--runs` rounds, four times as many when a run
//!   is under 100,000 statuses (S x N; at S=1 a run lasts about 1.5 ms, so other load on the
//!   machine decides single runs). The floor is measured the same way, in the same rounds. It
//!   prints each server's median statuses/s, its ratio to the floor's median, and each
//!   round's statuses/s with the median of the rounds' ratios to the floor's. N above 1,000
//!   (the demos' history and subscriber buffer) is refused: a client that falls that far
//!   behind gets a gap item, as the contract says, and the run could no longer check clean
//!   delivery;
//! - paced latency: `--paced S,N,D` (default 10 sessions of 200 steps 10 ms apart), p50/p99/p99.9;
//!   with `--alternate`, every server is started once and the runs alternate between them (one
//!   run each of floor, axum, actix, then again, `--runs` rounds), so that a burst of other load
//!   on a shared machine falls on all of them alike; it prints each run's p99, each server's
//!   median p99 and its ratio to the floor's (the ratio of the medians, and the median of the
//!   rounds' ratios);
//! - memory: `--idle-sessions` (10,000) sessions each given `--idle-steps` (100) statuses with no
//!   subscriber, a sample read back, then the peak RSS (`--idle-subscribed` instead keeps a
//!   socket open on every session while the statuses arrive, and closes them after; the peak
//!   then includes the open sockets);
//! - many_tools (only when named): `--many-tools S,N,D` (default 2,000 sessions whose tools add
//!   20 statuses 50 ms apart, sleeping in between, all at once), 256 requests in flight, with
//!   the floor's blocking pool raised to 4,096 threads; it prints when the last tool started and
//!   each server's p99 beside the floor's. The server `pool` (`tools/src/bin/tool_server.rs`,
//!   the library with its tools on a `BlockingPool`; not among the default servers) is meant
//!   for it: `--servers floor,pool --scenarios many_tools`.
//!
//! A server missing from the source tree is an error naming it. Each run's load average goes
//! into the results, since the machine may be shared; server logs go to `target/e2e/logs/`.
//! `--out DIR` puts the results, the chart and the logs there instead (a relative `DIR` is taken
//! from the workspace root).
//!
//! `--redis URL` starts the demo servers with `--redis URL` (built with the library's `redis`
//! feature), `--redis-cluster URL[,URL...]` with `--redis-cluster` on a Redis Cluster (the
//! `redis-cluster` feature); with `--redis-split` each demo runs as two processes sharing that
//! Redis or cluster, the load generator creating sessions and starting tasks on the first
//! (`--task-url`) while its sockets read from the second. The floor has no Redis mode and always
//! runs as one process in memory.
//!
//! Under `cargo test --benches` (no `--bench` argument) it only says how to run it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use plotters::prelude::*;
use serde_json::{json, Value};
use status_messenger_tools::server::listen_url;

/// The package of the library and its demo servers.
const LIBRARY: &str = "status-messenger";
/// This package: the load generator and the floor.
const TOOLS: &str = "status-messenger-tools";

/// The load generator.
const LOADGEN: Target = Target {
    package: TOOLS,
    kind: Kind::Bin,
    name: "loadgen",
    source: "tools/src/bin/loadgen.rs",
};

/// The servers the driver knows: name, how cargo names its target, and whether it has a Redis mode.
const SERVERS: [(&str, Target, bool); 4] = [
    (
        "floor",
        Target {
            package: TOOLS,
            kind: Kind::Bin,
            name: "floor",
            source: "tools/src/bin/floor.rs",
        },
        false,
    ),
    (
        "axum",
        Target {
            package: LIBRARY,
            kind: Kind::Example,
            name: "axum_demo",
            source: "examples/axum_demo.rs",
        },
        true,
    ),
    (
        "actix",
        Target {
            package: LIBRARY,
            kind: Kind::Example,
            name: "actix_demo",
            source: "examples/actix_demo.rs",
        },
        true,
    ),
    (
        "pool",
        Target {
            package: TOOLS,
            kind: Kind::Bin,
            name: "tool_server",
            source: "tools/src/bin/tool_server.rs",
        },
        false,
    ),
];

/// The servers run when `--servers` is not given.
const DEFAULT_SERVERS: [&str; 3] = ["floor", "axum", "actix"];

/// A binary the driver builds, in one of the workspace's packages.
#[derive(Clone, Copy)]
struct Target {
    package: &'static str,
    kind: Kind,
    name: &'static str,
    /// From the workspace root.
    source: &'static str,
}

#[derive(Clone, Copy)]
enum Kind {
    Bin,
    Example,
}

impl Target {
    fn cargo_args(self) -> [&'static str; 4] {
        let kind = match self.kind {
            Kind::Bin => "--bin",
            Kind::Example => "--example",
        };
        ["-p", self.package, kind, self.name]
    }
}

struct Options {
    servers: Vec<&'static str>,
    sessions: Vec<u64>,
    /// Steps per session in the throughput scenarios.
    steps: u64,
    runs: u32,
    paced: (u64, u64, u64),
    many_tools: (u64, u64, u64),
    idle: (u64, u64),
    idle_subscribed: bool,
    /// Paced runs alternate between the servers, one run each per round (throughput runs
    /// always do).
    alternate: bool,
    /// Which of `throughput`, `paced`, `memory` to run.
    scenarios: Vec<String>,
    sse: bool,
    redis: Option<String>,
    redis_cluster: Option<String>,
    redis_split: bool,
    loadgen_threads: u32,
    out: Option<PathBuf>,
}

const USAGE: &str =
    "usage: cargo bench -p status-messenger-tools --bench e2e -- [--servers floor,axum,actix] \
[--scenarios throughput,paced,memory,many_tools] [--sessions 1,10,100,1000] [--steps 1000] [--runs 5] \
[--paced 10,200,10] [--alternate] [--many-tools 2000,20,50] [--idle-sessions 10000] [--idle-steps 100] [--idle-subscribed] [--sse] \
[--redis URL | --redis-cluster URL[,URL...] [--redis-split]] [--loadgen-threads 1] [--out DIR]";

fn parse_options(args: impl Iterator<Item = String>) -> Result<Options, String> {
    fn list(raw: &str, name: &str) -> Result<Vec<u64>, String> {
        raw.split(',')
            .map(|v| {
                v.trim()
                    .parse()
                    .map_err(|e| format!("{name}: bad number {v:?}: {e}"))
            })
            .collect()
    }
    let mut options = Options {
        servers: DEFAULT_SERVERS.to_vec(),
        sessions: vec![1, 10, 100, 1000],
        steps: MAX_THROUGHPUT_STEPS,
        runs: 5,
        paced: (10, 200, 10),
        many_tools: (2000, 20, 50),
        idle: (10_000, 100),
        idle_subscribed: false,
        alternate: false,
        scenarios: vec!["throughput".into(), "paced".into(), "memory".into()],
        sse: false,
        redis: None,
        redis_cluster: None,
        redis_split: false,
        loadgen_threads: 1,
        out: None,
    };
    let mut args = args;
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--servers" => {
                let raw = value()?;
                options.servers = raw
                    .split(',')
                    .map(|name| {
                        SERVERS
                            .iter()
                            .find(|s| s.0 == name.trim())
                            .map(|s| s.0)
                            .ok_or_else(|| {
                                format!("unknown server {name:?} (known: floor, axum, actix, pool)")
                            })
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--sessions" => options.sessions = list(&value()?, "--sessions")?,
            "--steps" => options.steps = list(&value()?, "--steps")?[0],
            "--runs" => options.runs = list(&value()?, "--runs")?[0] as u32,
            "--paced" => match list(&value()?, "--paced")?[..] {
                [s, n, d] => options.paced = (s, n, d),
                _ => return Err("--paced takes S,N,D".into()),
            },
            "--many-tools" => match list(&value()?, "--many-tools")?[..] {
                [s, n, d] if s > 0 && n > 0 => options.many_tools = (s, n, d),
                _ => return Err("--many-tools takes S,N,D".into()),
            },
            "--scenarios" => {
                options.scenarios = value()?.split(',').map(|s| s.trim().to_string()).collect();
                if let Some(bad) = options.scenarios.iter().find(|s| {
                    !["throughput", "paced", "memory", "many_tools"].contains(&s.as_str())
                }) {
                    return Err(format!(
                        "unknown scenario {bad:?} (known: throughput, paced, memory, many_tools)"
                    ));
                }
            }
            "--idle-sessions" => options.idle.0 = list(&value()?, "--idle-sessions")?[0],
            "--idle-steps" => options.idle.1 = list(&value()?, "--idle-steps")?[0],
            "--idle-subscribed" => options.idle_subscribed = true,
            "--alternate" => options.alternate = true,
            "--sse" => options.sse = true,
            "--redis" => options.redis = Some(value()?),
            "--redis-cluster" => options.redis_cluster = Some(value()?),
            "--redis-split" => options.redis_split = true,
            "--loadgen-threads" => {
                options.loadgen_threads = list(&value()?, "--loadgen-threads")?[0] as u32;
            }
            "--out" => options.out = Some(PathBuf::from(value()?)),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if options.servers.is_empty() || options.sessions.contains(&0) || options.runs == 0 {
        return Err("need at least one server, one run, and session counts above 0".into());
    }
    if !(1..=MAX_THROUGHPUT_STEPS).contains(&options.steps) {
        return Err(format!(
            "--steps must be between 1 and {MAX_THROUGHPUT_STEPS}: more than the demos' history \
             would turn lagging clients' statuses into gap items"
        ));
    }
    if options.redis_split && options.redis.is_none() && options.redis_cluster.is_none() {
        return Err("--redis-split needs --redis URL or --redis-cluster URLS".into());
    }
    if options.redis.is_some() && options.redis_cluster.is_some() {
        return Err("give --redis or --redis-cluster, not both".into());
    }
    Ok(options)
}

/// Where cargo put this binary's target directory (`<target>/<profile>/deps/e2e-*`).
fn target_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("unexpected location {}", exe.display()))
}

/// The workspace root, where cargo runs and the source paths of [`Target`] start.
fn workspace_root() -> Result<&'static Path, String> {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .ok_or_else(|| format!("{} has no parent", manifest_dir.display()))
}

/// Builds the load generator and the selected servers in release mode, in one cargo invocation
/// over both packages; their paths by target name.
fn build(options: &Options, target: &Path) -> Result<BTreeMap<String, PathBuf>, String> {
    let root = workspace_root()?;
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .current_dir(root)
        .env("CARGO_TARGET_DIR", target)
        .args([
            "build",
            "--release",
            "--message-format=json-render-diagnostics",
        ])
        .args(LOADGEN.cargo_args());
    if options.redis.is_some() {
        command.args(["--features", &format!("{LIBRARY}/redis")]);
    }
    if options.redis_cluster.is_some() {
        command.args(["--features", &format!("{LIBRARY}/redis-cluster")]);
    }
    for name in &options.servers {
        let (_, server, _) = server_entry(name);
        if !root.join(server.source).exists() {
            return Err(format!(
                "server {name:?} is selected but {} does not exist; choose others with \
                 --servers (floor, axum, actix, pool)",
                server.source
            ));
        }
        command.args(server.cargo_args());
    }
    eprintln!("e2e: building release binaries");
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!("cargo build failed ({})", output.status));
    }
    let mut binaries = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if let (Some(name), Some(exe)) = (
            message.pointer("/target/name").and_then(Value::as_str),
            message.get("executable").and_then(Value::as_str),
        ) {
            binaries.insert(name.to_string(), PathBuf::from(exe));
        }
    }
    let mut wanted = vec![LOADGEN.name];
    wanted.extend(options.servers.iter().map(|n| server_entry(n).1.name));
    for name in wanted {
        if !binaries.contains_key(name) {
            return Err(format!("cargo built no binary for {name}"));
        }
    }
    Ok(binaries)
}

fn server_entry(name: &str) -> (&'static str, Target, bool) {
    SERVERS
        .into_iter()
        .find(|s| s.0 == name)
        .unwrap_or(SERVERS[0])
}

/// A server under test, stopped (SIGTERM, then SIGKILL) when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(exe: &Path, extra: &[String], log: &Path) -> Result<Server, String> {
        let log_file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut child = Command::new(exe)
            .args(["--port", "0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let rx = listen_url(stdout);
        let mut server = Server {
            child,
            url: String::new(),
        };
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(url) => {
                server.url = url;
                Ok(server)
            }
            Err(e) => {
                let why = match e {
                    mpsc::RecvTimeoutError::Timeout => "within 20 s",
                    mpsc::RecvTimeoutError::Disconnected => "before closing its stdout",
                };
                Err(format!(
                    "{} printed no `listening on http://...` line {why} (log: {})",
                    exe.display(),
                    log.display()
                ))
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `VmHWM` (peak resident set) and `VmRSS` in KiB.
    fn memory_kib(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0)
        };
        (field("VmHWM:"), field("VmRSS:"))
    }

    /// SIGTERM and up to 10 s to exit; whether it exited by itself, successfully.
    fn stop(&mut self) -> bool {
        let term = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        if term.is_ok_and(|s| s.success()) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                match self.child.try_wait() {
                    Ok(Some(status)) => return status.success(),
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                    Err(_) => break,
                }
            }
        }
        self.child.kill().ok();
        self.child.wait().ok();
        false
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

/// One server under test: one process, or two sharing Redis (sessions and tasks on `task`).
struct UnderTest {
    sockets: Server,
    tasks: Option<Server>,
}

impl UnderTest {
    fn start(ctx: &Context<'_>, name: &str, label: &str) -> Result<UnderTest, String> {
        let (_, target, redis_mode) = server_entry(name);
        let exe = &ctx.binaries[target.name];
        let mut extra = Vec::new();
        if label == "many_tools" && name == "floor" {
            // One thread per tool: the floor must not be the one that makes tools wait.
            extra = vec!["--max-blocking-threads".to_string(), "4096".to_string()];
        }
        if let (Some(url), true) = (&ctx.options.redis, redis_mode) {
            extra = vec!["--redis".to_string(), url.clone()];
        }
        if let (Some(urls), true) = (&ctx.options.redis_cluster, redis_mode) {
            extra = vec!["--redis-cluster".to_string(), urls.clone()];
        }
        let log = |suffix: &str| ctx.logs.join(format!("{name}-{label}{suffix}.log"));
        let sockets = Server::start(exe, &extra, &log(""))?;
        let tasks = if ctx.options.redis_split && redis_mode {
            Some(Server::start(exe, &extra, &log("-tasks"))?)
        } else {
            None
        };
        Ok(UnderTest { sockets, tasks })
    }

    fn loadgen_urls(&self) -> Vec<String> {
        let mut args = vec!["--url".to_string(), self.sockets.url.clone()];
        if let Some(tasks) = &self.tasks {
            args.extend(["--task-url".to_string(), tasks.url.clone()]);
        }
        args
    }

    /// Peak RSS in MiB: of the one process, or the larger of the two.
    fn peak_rss_mib(&self) -> f64 {
        let mut peak = self.sockets.memory_kib().0;
        if let Some(tasks) = &self.tasks {
            peak = peak.max(tasks.memory_kib().0);
        }
        peak as f64 / 1024.0
    }

    fn stop(mut self) -> bool {
        let mut clean = self.sockets.stop();
        if let Some(tasks) = self.tasks.as_mut() {
            clean &= tasks.stop();
        }
        clean
    }
}

struct Context<'a> {
    options: &'a Options,
    binaries: &'a BTreeMap<String, PathBuf>,
    logs: PathBuf,
}

/// Runs the load generator; its JSON line, or why there is none.
fn loadgen(ctx: &Context<'_>, under_test: &UnderTest, args: &[String]) -> Result<Value, String> {
    let mut command = Command::new(&ctx.binaries[LOADGEN.name]);
    command.args(under_test.loadgen_urls()).args(args).args([
        "--json",
        "--threads",
        &ctx.options.loadgen_threads.to_string(),
    ]);
    if ctx.options.sse {
        command.arg("--sse");
    }
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run loadgen: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    match stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
    {
        Some(result) => Ok(result),
        None => Err(format!(
            "loadgen failed ({}) without a result",
            output.status
        )),
    }
}

fn flags(pairs: &[(&str, u64)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(flag, value)| [flag.to_string(), value.to_string()])
        .collect()
}

/// One measured row of the results.
fn measure(
    ctx: &Context<'_>,
    server: &str,
    scenario: &str,
    label: &str,
    loadgen_args: &[String],
    settle: Duration,
) -> Value {
    let under_test = match UnderTest::start(ctx, server, label) {
        Ok(under_test) => under_test,
        Err(e) => return json!({ "server": server, "scenario": scenario, "error": e }),
    };
    let result = loadgen(ctx, &under_test, loadgen_args);
    std::thread::sleep(settle);
    let peak_rss_mib = under_test.peak_rss_mib();
    let clean_exit = under_test.stop();
    if !clean_exit {
        eprintln!("e2e: {server} did not exit cleanly within 10 s of SIGTERM");
    }
    let mut row = json!({
        "server": server,
        "scenario": scenario,
        "peak_rss_mib": (peak_rss_mib * 10.0).round() / 10.0,
        "clean_exit": clean_exit,
    });
    match result {
        Ok(result) => row["loadgen"] = result,
        Err(e) => row["error"] = Value::String(e),
    }
    row
}

/// Rows of one scenario run `rounds` times over every server in turn: all servers started
/// first (`label` names their logs), `warmup` load-generator runs of each in turn that are not
/// counted, then one run (`args` asks for one) of each per round; each row holds its server's
/// counted runs in order and their medians, as the load generator's own `--runs` would.
fn measure_alternating(
    ctx: &Context<'_>,
    scenario: &str,
    label: &str,
    args: &[String],
    rounds: u32,
    warmup: u32,
) -> Vec<Value> {
    let servers = &ctx.options.servers;
    let mut started = Vec::new();
    for server in servers {
        match UnderTest::start(ctx, server, label) {
            Ok(under_test) => started.push(Some(under_test)),
            Err(e) => {
                eprintln!("e2e: {server}: {e}");
                started.push(None);
            }
        }
    }
    let mut results: Vec<Vec<Value>> = vec![Vec::new(); servers.len()];
    let mut errors: Vec<Option<String>> = vec![None; servers.len()];
    for run in 1..=warmup {
        for (i, server) in servers.iter().enumerate() {
            let Some(under_test) = &started[i] else {
                continue;
            };
            eprintln!("e2e: {server}: {label}, warm-up run {run}/{warmup} (not counted)");
            // A warm-up that fails is reported by the counted runs, which fail the same way.
            drop(loadgen(ctx, under_test, args));
        }
    }
    for round in 1..=rounds {
        for (i, server) in servers.iter().enumerate() {
            let Some(under_test) = &started[i] else {
                continue;
            };
            eprintln!("e2e: {server}: {label}, round {round}/{rounds}");
            match loadgen(ctx, under_test, args) {
                Ok(result) => results[i].push(result),
                Err(e) => {
                    errors[i].get_or_insert(e);
                }
            }
        }
    }
    let mut rows = Vec::new();
    for (i, server) in servers.iter().enumerate() {
        let Some(under_test) = started[i].take() else {
            rows.push(json!({ "server": server, "scenario": scenario, "error": "did not start" }));
            continue;
        };
        let peak_rss_mib = under_test.peak_rss_mib();
        let clean_exit = under_test.stop();
        let mut row = json!({
            "server": server,
            "scenario": scenario,
            "alternated": true,
            "warmup_runs": warmup,
            "peak_rss_mib": (peak_rss_mib * 10.0).round() / 10.0,
            "clean_exit": clean_exit,
        });
        match (errors[i].take(), merge_runs(&results[i])) {
            (Some(e), _) => row["error"] = Value::String(e),
            (None, Some(merged)) => row["loadgen"] = merged,
            (None, None) => row["error"] = Value::String("no runs".into()),
        }
        rows.push(row);
    }
    rows
}

/// One load-generator result out of several of one run each: every run in order, the medians
/// of their figures, the violations summed.
fn merge_runs(results: &[Value]) -> Option<Value> {
    let mut merged = results.first()?.clone();
    let runs: Vec<Value> = results
        .iter()
        .flat_map(|r| r["runs"].as_array().cloned().unwrap_or_default())
        .collect();
    let median_of = |pointer: &str| {
        let mut values: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.pointer(pointer).and_then(Value::as_f64))
            .collect();
        median(&mut values).map_or(Value::Null, |v| json!(v))
    };
    let latency = json!({
        "p50_ms": median_of("/latency/p50_ms"),
        "p99_ms": median_of("/latency/p99_ms"),
        "p999_ms": median_of("/latency/p999_ms"),
        "max_ms": median_of("/latency/max_ms"),
    });
    merged["median"] = json!({
        "statuses_per_s": median_of("/statuses_per_s"),
        "latency": latency,
        "started_max_ms": median_of("/started/max_ms"),
    });
    let violations: u64 = results
        .iter()
        .filter_map(|r| r["violations"].as_u64())
        .sum();
    merged["violations"] = json!(violations);
    merged["ok"] = json!(results.iter().all(|r| r["ok"] == Value::Bool(true)));
    merged["runs"] = Value::Array(runs);
    Some(merged)
}

/// The median of `values` (the mean of the middle two for an even count); `None` if empty.
fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// The most steps per session a throughput run asks for: the demos keep 1,000 statuses of
/// history and buffer as many per subscriber, so every status of such a run can be delivered
/// without a gap however late a socket reads.
const MAX_THROUGHPUT_STEPS: u64 = 1000;

/// Runs of each server before its counted throughput runs, not counted.
const THROUGHPUT_WARMUP_RUNS: u32 = 1;

/// A throughput run of fewer statuses than this is short enough (about 1.5 ms at one session
/// of 1,000) for the machine's other work to decide it: it gets more rounds.
const SHORT_RUN_STATUSES: u64 = 100_000;

/// How many alternating rounds a throughput scenario of `sessions` x `steps` gets: `runs`, or
/// up to four times as many for a run of fewer than [`SHORT_RUN_STATUSES`].
fn throughput_rounds(runs: u32, sessions: u64, steps: u64) -> u32 {
    let statuses = sessions.saturating_mul(steps).max(1);
    let factor = (SHORT_RUN_STATUSES / statuses).clamp(1, 4);
    runs.saturating_mul(u32::try_from(factor).unwrap_or(4))
}

fn run(options: &Options) -> Result<bool, String> {
    let target = target_dir()?;
    let out = match &options.out {
        // `cargo bench` runs this in the package's directory, `tools/`; a relative `--out` is
        // taken from the workspace root instead, as the driver's other paths are.
        Some(out) if out.is_relative() => workspace_root()?.join(out),
        Some(out) => out.clone(),
        None => target.join("e2e"),
    };
    let logs = out.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let binaries = build(options, &target)?;
    let ctx = Context {
        options,
        binaries: &binaries,
        logs,
    };
    let started = Instant::now();
    // The machine may be shared: the load around the run goes with the figures.
    let load_before = load_average();
    let runs = u64::from(options.runs);
    let wanted = |scenario: &str| options.scenarios.iter().any(|s| s == scenario);
    let mut rows = Vec::new();

    if wanted("throughput") {
        // Per session count, every server started once, a warm-up run of each, then the
        // counted runs alternating between them (floor, axum, actix, floor, ...): a burst of
        // other load on a shared machine falls on all of them alike, and a fresh process's
        // first run (its threads started, its allocator's first pages) is not a throughput.
        for &sessions in &options.sessions {
            let steps = options.steps;
            let rounds = throughput_rounds(options.runs, sessions, steps);
            eprintln!(
                "e2e: throughput, {sessions} sessions x {steps} steps, {rounds} alternating rounds"
            );
            let args = flags(&[("--sessions", sessions), ("--steps", steps), ("--runs", 1)]);
            let label = format!("throughput-{sessions}");
            rows.extend(measure_alternating(
                &ctx,
                "throughput",
                &label,
                &args,
                rounds,
                THROUGHPUT_WARMUP_RUNS,
            ));
        }
    }
    let (s, n, d) = options.paced;
    if wanted("paced") && options.alternate {
        eprintln!("e2e: paced, {s} sessions x {n} steps, {d} ms apart, {runs} alternating rounds");
        let args = flags(&[
            ("--sessions", s),
            ("--steps", n),
            ("--delay-ms", d),
            ("--runs", 1),
        ]);
        rows.extend(measure_alternating(
            &ctx,
            "paced",
            "paced",
            &args,
            options.runs,
            0,
        ));
    } else if wanted("paced") {
        for server in &options.servers {
            eprintln!("e2e: {server}: paced, {s} sessions x {n} steps, {d} ms apart");
            let args = flags(&[
                ("--sessions", s),
                ("--steps", n),
                ("--delay-ms", d),
                ("--runs", runs),
            ]);
            rows.push(measure(
                &ctx,
                server,
                "paced",
                "paced",
                &args,
                Duration::ZERO,
            ));
        }
    }
    let (tools, tool_steps, tool_delay) = options.many_tools;
    if wanted("many_tools") {
        for server in &options.servers {
            eprintln!(
                "e2e: {server}: many_tools, {tools} tools x {tool_steps} steps, {tool_delay} ms apart"
            );
            let mut args = flags(&[
                ("--sessions", tools),
                ("--steps", tool_steps),
                ("--delay-ms", tool_delay),
                ("--runs", runs),
                ("--concurrency", 256),
            ]);
            args.push("--grace-ms".into());
            args.push("200".into());
            rows.push(measure(
                &ctx,
                server,
                "many_tools",
                "many_tools",
                &args,
                Duration::ZERO,
            ));
        }
    }
    if wanted("memory") {
        let (sessions, steps) = options.idle;
        for server in &options.servers {
            let mut args = flags(&[("--sessions", sessions), ("--steps", steps), ("--runs", 1)]);
            if options.idle_subscribed {
                eprintln!("e2e: {server}: memory, {sessions} subscribed sessions x {steps} steps");
            } else {
                eprintln!("e2e: {server}: memory, {sessions} idle sessions x {steps} steps");
                args.push("--idle".into());
            }
            // A moment for the last tasks to finish before the peak is read.
            let settle = Duration::from_secs(1);
            rows.push(measure(&ctx, server, "memory", "memory", &args, settle));
        }
    }

    let ok = rows
        .iter()
        .all(|r| r.get("error").is_none() && r.pointer("/loadgen/ok") == Some(&Value::Bool(true)));
    print_table(options, &rows);
    let results = json!({
        "parameters": {
            "servers": options.servers,
            "sessions": options.sessions,
            "steps_per_session": options.steps,
            "runs": options.runs,
            "paced": { "sessions": s, "steps": n, "delay_ms": d },
            "many_tools": { "sessions": tools, "steps": tool_steps, "delay_ms": tool_delay },
            "scenarios": options.scenarios,
            "memory": {
                "sessions": options.idle.0,
                "steps": options.idle.1,
                "subscribed": options.idle_subscribed,
            },
            "transport": if options.sse { "sse" } else { "ws" },
            "redis": options.redis,
            "redis_cluster": options.redis_cluster,
            "redis_split": options.redis_split,
            "loadgen_threads": options.loadgen_threads,
        },
        "machine": {
            "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "load_average_before": load_before,
            "load_average_after": load_average(),
        },
        "seconds": started.elapsed().as_secs_f64().round(),
        "ok": ok,
        "results": rows,
    });
    let results_path = out.join("results.json");
    let text = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
    std::fs::write(&results_path, text).map_err(|e| format!("{}: {e}", results_path.display()))?;
    let chart = out.join("throughput.svg");
    draw_chart(options, &rows, &chart)?;
    eprintln!(
        "e2e: load average before {} and after {}",
        load_before.as_deref().unwrap_or("?"),
        load_average().as_deref().unwrap_or("?")
    );
    eprintln!(
        "e2e: wrote {} and {} in {:.0} s",
        results_path.display(),
        chart.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(ok)
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` has them.
fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

fn number(row: &Value, pointer: &str) -> Option<f64> {
    row.pointer(pointer).and_then(Value::as_f64)
}

fn cell(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

fn print_table(options: &Options, rows: &[Value]) {
    let floor_rate = |sessions: u64| {
        rows.iter()
            .find(|r| {
                r["server"] == "floor"
                    && r["scenario"] == "throughput"
                    && r.pointer("/loadgen/sessions").and_then(Value::as_u64) == Some(sessions)
            })
            .and_then(|r| number(r, "/loadgen/median/statuses_per_s"))
    };
    let mut table = String::new();
    table.push_str(&format!(
        "\n{:<7} {:<10} {:>6} {:>7} {:>4} {:>12} {:>8} {:>8} {:>8} {:>9} {:>9} {:>5}\n",
        "server",
        "scenario",
        "S",
        "N",
        "D",
        "statuses/s",
        "/floor",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "peak MiB",
        "ok"
    ));
    for row in rows {
        let server = row["server"].as_str().unwrap_or("?");
        let scenario = row["scenario"].as_str().unwrap_or("?");
        if let Some(error) = row.get("error").and_then(Value::as_str) {
            table.push_str(&format!("{server:<7} {scenario:<10} error: {error}\n"));
            continue;
        }
        let sessions = row.pointer("/loadgen/sessions").and_then(Value::as_u64);
        let rate = number(row, "/loadgen/median/statuses_per_s");
        let ratio = match (scenario, sessions.and_then(floor_rate), rate) {
            ("throughput", Some(floor), Some(rate)) if floor > 0.0 => {
                format!("{:.2}", rate / floor)
            }
            _ => "-".into(),
        };
        let ok = row.pointer("/loadgen/ok") == Some(&Value::Bool(true));
        let memory = scenario == "memory" && !options.idle_subscribed;
        table.push_str(&format!(
            "{server:<7} {scenario:<10} {:>6} {:>7} {:>4} {:>12} {:>8} {:>8} {:>8} {:>9} {:>9} {:>5}\n",
            sessions.map_or("-".into(), |s| s.to_string()),
            row.pointer("/loadgen/steps").and_then(Value::as_u64).unwrap_or(0),
            row.pointer("/loadgen/delay_ms").and_then(Value::as_u64).unwrap_or(0),
            if memory { "-".into() } else { cell(rate, 0) },
            ratio,
            cell(number(row, "/loadgen/median/latency/p50_ms"), 3),
            cell(number(row, "/loadgen/median/latency/p99_ms"), 3),
            cell(number(row, "/loadgen/median/latency/p999_ms"), 3),
            cell(number(row, "/peak_rss_mib"), 1),
            if ok { "yes" } else { "NO" },
        ));
    }
    print_alternated(rows, &mut table);
    let floor_p99 = rows
        .iter()
        .find(|r| r["server"] == "floor" && r["scenario"] == "many_tools")
        .and_then(|r| number(r, "/loadgen/median/latency/p99_ms"));
    for row in rows.iter().filter(|r| r["scenario"] == "many_tools") {
        let server = row["server"].as_str().unwrap_or("?");
        let started = number(row, "/loadgen/median/started_max_ms");
        let p99 = number(row, "/loadgen/median/latency/p99_ms");
        let ratio = match (p99, floor_p99) {
            (Some(p99), Some(floor)) if floor > 0.0 => format!("{:.2}x the floor's", p99 / floor),
            _ => "no floor to compare with".into(),
        };
        table.push_str(&format!(
            "{server:<7} many_tools: last tool started after {} ms (median of runs); p99 {} ms, {ratio}\n",
            cell(started, 1),
            cell(p99, 3),
        ));
    }
    println!("{table}");
}

/// Each alternated run's figure beside the floor's of the same round, each server's median,
/// and its ratios to the floor's: of the medians, and the median of the rounds' ratios. The
/// figure is the p99 of a paced run and the statuses/s of a throughput run, grouped by
/// scenario and session count.
fn print_alternated(rows: &[Value], table: &mut String) {
    let figures = |row: &Value, pointer: &str| -> Vec<f64> {
        row.pointer("/loadgen/runs")
            .and_then(Value::as_array)
            .map(|runs| {
                runs.iter()
                    .filter_map(|r| r.pointer(pointer).and_then(Value::as_f64))
                    .collect()
            })
            .unwrap_or_default()
    };
    let alternated: Vec<&Value> = rows
        .iter()
        .filter(|r| r["alternated"] == Value::Bool(true) && r.get("error").is_none())
        .collect();
    let mut groups: Vec<(&str, Option<u64>)> = Vec::new();
    for row in &alternated {
        let key = (
            row["scenario"].as_str().unwrap_or("?"),
            row.pointer("/loadgen/sessions").and_then(Value::as_u64),
        );
        if !groups.contains(&key) {
            groups.push(key);
        }
    }
    for (scenario, sessions) in groups {
        let (pointer, what, format): (&str, &str, fn(f64) -> String) = if scenario == "throughput" {
            ("/statuses_per_s", "statuses/s", |v| format!("{:.0}", v))
        } else {
            ("/latency/p99_ms", "p99 ms", |v| format!("{v:.3}"))
        };
        let group: Vec<&&Value> = alternated
            .iter()
            .filter(|r| {
                r["scenario"] == scenario
                    && r.pointer("/loadgen/sessions").and_then(Value::as_u64) == sessions
            })
            .collect();
        let Some(floor) = group.iter().find(|r| r["server"] == "floor") else {
            continue;
        };
        let floor_runs = figures(floor, pointer);
        let Some(floor_median) = median(&mut floor_runs.clone()) else {
            continue;
        };
        let sessions = sessions.map_or("?".into(), |s| s.to_string());
        table.push_str(&format!(
            "\nalternating {scenario} runs, S={sessions}, {what} per round:\n"
        ));
        for row in &group {
            let server = row["server"].as_str().unwrap_or("?");
            let runs = figures(row, pointer);
            let cells: Vec<String> = runs.iter().map(|v| format(*v)).collect();
            let Some(median_figure) = median(&mut runs.clone()) else {
                continue;
            };
            let mut ratios: Vec<f64> = runs
                .iter()
                .zip(&floor_runs)
                .filter(|(_, floor)| **floor > 0.0)
                .map(|(figure, floor)| figure / floor)
                .collect();
            let round_ratio = median(&mut ratios).map_or("-".into(), |r| format!("{r:.2}"));
            let ratio = if floor_median > 0.0 {
                format!("{:.2}", median_figure / floor_median)
            } else {
                "-".into()
            };
            table.push_str(&format!(
                "{server:<7} {}  median {}, {ratio}x the floor's median, median of the rounds' ratios {round_ratio}\n",
                cells.join(" "),
                format(median_figure),
            ));
        }
    }
}

/// One throughput result on the chart.
struct Point {
    sessions: f64,
    rate: f64,
    /// Free of violations.
    ok: bool,
}

fn draw_chart(options: &Options, rows: &[Value], path: &Path) -> Result<(), String> {
    let series: Vec<(&str, Vec<Point>)> = options
        .servers
        .iter()
        .map(|server| {
            let points = rows
                .iter()
                .filter(|r| r["server"] == *server && r["scenario"] == "throughput")
                .filter_map(|r| {
                    Some(Point {
                        sessions: number(r, "/loadgen/sessions")?,
                        rate: number(r, "/loadgen/median/statuses_per_s")?,
                        ok: r.pointer("/loadgen/ok") == Some(&Value::Bool(true)),
                    })
                })
                .collect();
            (*server, points)
        })
        .collect();
    let max_rate = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|p| p.rate))
        .fold(1.0, f64::max);
    let max_sessions = options.sessions.iter().copied().max().unwrap_or(1) as f64;
    let chart_error = |e: &dyn std::fmt::Display| format!("chart {}: {e}", path.display());

    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| chart_error(&e))?;
    let transport = if options.sse { "SSE" } else { "WebSocket" };
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Delivered statuses per second ({transport}, no delay)"),
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(80)
        .build_cartesian_2d(
            (0.8f64..max_sessions * 1.25)
                .log_scale()
                .with_key_points(options.sessions.iter().map(|&s| s as f64).collect()),
            0f64..max_rate * 1.3,
        )
        .map_err(|e| chart_error(&e))?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc("sessions (log scale)")
        .y_desc("statuses/s, median")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| {
            if *y == 0.0 {
                "0".to_string()
            } else {
                format!("{:.0}k", y / 1000.0)
            }
        })
        .draw()
        .map_err(|e| chart_error(&e))?;
    let colours = |server: &str| match server {
        "floor" => RGBColor(110, 110, 110),
        "axum" => RGBColor(31, 119, 180),
        _ => RGBColor(214, 39, 40),
    };
    for (server, points) in &series {
        let colour = colours(server);
        let line: Vec<(f64, f64)> = points.iter().map(|p| (p.sessions, p.rate)).collect();
        chart
            .draw_series(LineSeries::new(line, colour.stroke_width(2)))
            .map_err(|e| chart_error(&e))?
            .label(*server)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        // A hollow marker: that run lost statuses or broke the order, so its rate is suspect.
        chart
            .draw_series(points.iter().map(|p| {
                let style = if p.ok {
                    colour.filled()
                } else {
                    colour.stroke_width(2)
                };
                Circle::new((p.sessions, p.rate), 4, style)
            }))
            .map_err(|e| chart_error(&e))?;
    }
    if series
        .iter()
        .any(|(_, points)| points.iter().any(|p| !p.ok))
    {
        root.draw(&Text::new(
            "hollow marker: the run saw gaps or other violations",
            (110, 452),
            ("sans-serif", 13),
        ))
        .map_err(|e| chart_error(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| chart_error(&e))?;
    root.present().map_err(|e| chart_error(&e))
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!(
            "e2e: a benchmark of running servers; run it with \
             `cargo bench -p status-messenger-tools --bench e2e`"
        );
        return ExitCode::SUCCESS;
    }
    args.retain(|a| a != "--bench");
    // `cargo bench -- NAME` hands its filter to every bench; like criterion, run only if it
    // matches.
    if args.first().is_some_and(|a| !a.starts_with('-')) {
        let filter = args.remove(0);
        if !"e2e".contains(filter.as_str()) {
            return ExitCode::SUCCESS;
        }
    }
    let options = match parse_options(args.into_iter()) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("e2e: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("e2e: some scenario failed or saw violations (see above)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("e2e: {e}");
            ExitCode::from(1)
        }
    }
}
