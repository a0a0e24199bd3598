//! A load generator for any server that keeps the demo servers' HTTP contract.
//!
//! Run with: cargo run --release -p status-messenger-tools --bin loadgen -- --url http://127.0.0.1:3000 --sessions 100 --steps 1000
//!
//! Each run creates `--sessions S` sessions (`POST /api/sessions`), opens one WebSocket per
//! session (`GET /ws?session=`, or with `--sse` one event stream, `GET /events?session=`), waits
//! until all are connected, then starts a task of `--steps N` statuses `--delay-ms D` apart in
//! every session (`POST /api/sessions/{id}/tasks`). It checks that every session receives
//! `seq` 1..=N exactly once, in order, with the text `step {i}/{N} t_ns={T}` and no gap item,
//! and reports delivered statuses per second (from the first task start to the last status
//! received), the latency from `T` to receipt (p50, p99, p99.9; client and server on one
//! machine share the clock), and when the tools started: from the first task request to each
//! session's step 1 `T` (p50, p99, max), which shows tools waiting for a thread. With `--runs R` it repeats and also prints the median of the runs.
//! Any violation is printed and makes the exit code 1; a failed setup (a refused request, a
//! socket that does not connect) makes it 2.
//!
//! Options:
//!
//! | option | meaning | default |
//! | --- | --- | --- |
//! | `--url URL` | base URL of the server the sockets read from | `http://127.0.0.1:3000` |
//! | `--task-url URL` | base URL where sessions are created and tasks started (another process sharing the sessions) | `--url` |
//! | `--sessions S`, `--steps N`, `--delay-ms D`, `--runs R` | the load | 10, 100, 0, 3 |
//! | `--sse` | Server-Sent Events instead of WebSockets | |
//! | `--json` | print one JSON line of results on stdout (the report goes to stderr) | |
//! | `--idle` | memory scenario: start the tasks without any subscriber, then check `--sample K` sessions (default 100) by reading them afterwards | |
//! | `--threads T` | client runtime threads; 1 is a current-thread runtime | 1 |
//! | `--concurrency C` | requests and handshakes in flight while setting up | 64 |
//! | `--grace-ms G` | after the last status, how long to keep listening for extra frames | 200 |
//! | `--timeout-s T` | how long a run may wait for its statuses | 30 + 2·N·D/1000 |

use std::borrow::Cow;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;

/// At most this many violations are kept per session, and printed per run.
const MAX_REPORTED: usize = 10;

#[derive(Clone, Debug)]
struct Args {
    url: String,
    task_url: String,
    sessions: usize,
    steps: u64,
    delay_ms: u64,
    runs: usize,
    sse: bool,
    json: bool,
    idle: bool,
    sample: usize,
    threads: usize,
    concurrency: usize,
    grace: Duration,
    timeout: Duration,
}

const USAGE: &str = "usage: loadgen [--url URL] [--task-url URL] [--sessions S] [--steps N] \
[--delay-ms D] [--runs R] [--sse] [--json] [--idle [--sample K]] [--threads T] \
[--concurrency C] [--grace-ms G] [--timeout-s T]";

fn parse_args() -> Result<Args, String> {
    fn value<T: std::str::FromStr>(
        name: &str,
        args: &mut impl Iterator<Item = String>,
    ) -> Result<T, String>
    where
        T::Err: std::fmt::Display,
    {
        let raw = args.next().ok_or_else(|| format!("{name} needs a value"))?;
        raw.parse()
            .map_err(|e| format!("{name}: bad value {raw:?}: {e}"))
    }
    let mut url = String::from("http://127.0.0.1:3000");
    let mut task_url: Option<String> = None;
    let (mut sessions, mut steps, mut delay_ms, mut runs) = (10, 100, 0, 3);
    let (mut sse, mut json, mut idle, mut sample) = (false, false, false, 100);
    let (mut threads, mut concurrency, mut grace_ms) = (1, 64, 200);
    let mut timeout_s: Option<u64> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--url" => url = value("--url", &mut args)?,
            "--task-url" => task_url = Some(value("--task-url", &mut args)?),
            "--sessions" => sessions = value("--sessions", &mut args)?,
            "--steps" => steps = value("--steps", &mut args)?,
            "--delay-ms" => delay_ms = value("--delay-ms", &mut args)?,
            "--runs" => runs = value("--runs", &mut args)?,
            "--sse" => sse = true,
            "--json" => json = true,
            "--idle" => idle = true,
            "--sample" => sample = value("--sample", &mut args)?,
            "--threads" => threads = value("--threads", &mut args)?,
            "--concurrency" => concurrency = value("--concurrency", &mut args)?,
            "--grace-ms" => grace_ms = value("--grace-ms", &mut args)?,
            "--timeout-s" => timeout_s = Some(value("--timeout-s", &mut args)?),
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if sessions == 0 || steps == 0 || runs == 0 || concurrency == 0 {
        return Err("--sessions, --steps, --runs and --concurrency must be at least 1".into());
    }
    let url = url.trim_end_matches('/').to_string();
    let task_url = task_url.map_or_else(|| url.clone(), |u| u.trim_end_matches('/').to_string());
    for u in [&url, &task_url] {
        if !u.starts_with("http://") {
            return Err(format!("{u:?}: only http:// base URLs are supported"));
        }
    }
    let timeout_s = timeout_s.unwrap_or(30 + 2 * steps * delay_ms / 1000);
    Ok(Args {
        url,
        task_url,
        sessions,
        steps,
        delay_ms,
        runs,
        sse,
        json,
        idle,
        sample: sample.clamp(1, sessions),
        threads: threads.max(1),
        concurrency,
        grace: Duration::from_millis(grace_ms),
        timeout: Duration::from_secs(timeout_s),
    })
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// One status or gap item as the server sends it; borrowed from the frame where it can be.
#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(default, borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    session: Option<Cow<'a, str>>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default)]
    from: Option<u64>,
    #[serde(default)]
    to: Option<u64>,
}

/// What one session's reader saw.
struct SessionReport {
    /// Status frames taken in order (each `seq` once).
    received: u64,
    last_receipt_ns: u64,
    latencies_ns: Vec<u64>,
    /// `T` of step 1: when the session's tool started.
    first_step_ns: Option<u64>,
    violations: Vec<String>,
    violation_count: usize,
}

/// Checks one session's frames as they arrive.
struct Checker {
    session: String,
    steps: u64,
    /// The highest `seq` accounted for: received, or named by a gap item.
    last_seq: u64,
    keep_latencies: bool,
    report: SessionReport,
    done: Option<mpsc::UnboundedSender<()>>,
}

impl Checker {
    fn new(
        session: String,
        steps: u64,
        keep_latencies: bool,
        done: mpsc::UnboundedSender<()>,
    ) -> Self {
        let capacity = if keep_latencies { steps as usize } else { 0 };
        Checker {
            session,
            steps,
            last_seq: 0,
            keep_latencies,
            report: SessionReport {
                received: 0,
                last_receipt_ns: 0,
                latencies_ns: Vec::with_capacity(capacity),
                first_step_ns: None,
                violations: Vec::new(),
                violation_count: 0,
            },
            done: Some(done),
        }
    }

    fn violation(&mut self, what: String) {
        self.report.violation_count += 1;
        if self.report.violations.len() < MAX_REPORTED {
            self.report
                .violations
                .push(format!("session {}: {what}", self.session));
        }
    }

    /// `sse_id` is the SSE `id:` field, `sse_event` its `event:` field.
    fn frame(
        &mut self,
        data: &str,
        receipt_ns: u64,
        sse_id: Option<&str>,
        sse_event: Option<&str>,
    ) {
        let frame: Frame<'_> = match serde_json::from_str(data) {
            Ok(frame) => frame,
            Err(e) => return self.violation(format!("unparsable frame {data:?}: {e}")),
        };
        let kind = frame.kind.as_deref().or(sse_event);
        match kind {
            None | Some("status") | Some("message") => {}
            Some("gap") => {
                self.violation(format!("gap item from {:?} to {:?}", frame.from, frame.to));
                // The gap names the loss; move past it so the next status is not reported again.
                if let (Some(from), Some(to)) = (frame.from, frame.to) {
                    if from <= self.last_seq + 1 && to > self.last_seq {
                        self.advance(to);
                    }
                }
                return;
            }
            // Task frames tell a task's state and keep-alives keep the connection: neither is
            // numbered, so neither is counted.
            Some("task") | Some("keepalive") => return,
            Some(other) => return self.violation(format!("unknown item type {other:?}")),
        }
        if frame.session.as_deref() != Some(self.session.as_str()) {
            return self.violation(format!("frame of another session: {data:?}"));
        }
        let Some(seq) = frame.seq else {
            return self.violation(format!("status without seq: {data:?}"));
        };
        if let Some(id) = sse_id {
            if id.parse() != Ok(seq) {
                self.violation(format!("SSE id {id:?} differs from seq {seq}"));
            }
        }
        let expected = self.last_seq + 1;
        if seq < expected {
            return self.violation(format!(
                "duplicate or out-of-order seq {seq} after {}",
                self.last_seq
            ));
        }
        if seq > expected {
            // Reported once, then followed from the new position.
            self.violation(format!("missing seq {expected}..={}", seq - 1));
        }
        self.report.received += 1;
        let text = frame.text.as_deref().unwrap_or("");
        match parse_step(text) {
            Some((i, n, t_ns)) if i == seq && n == self.steps => {
                if i == 1 {
                    self.report.first_step_ns = Some(t_ns);
                }
                if self.keep_latencies {
                    self.report
                        .latencies_ns
                        .push(receipt_ns.saturating_sub(t_ns));
                }
            }
            _ => self.violation(format!("seq {seq}: unexpected text {text:?}")),
        }
        self.report.last_receipt_ns = receipt_ns;
        if seq > self.steps {
            self.violation(format!("seq {seq} beyond the {} steps", self.steps));
        }
        self.advance(seq);
    }

    /// Moves the last seen `seq` forward; reaching the last step ends the wait for this session.
    fn advance(&mut self, seq: u64) {
        self.last_seq = seq;
        if seq >= self.steps {
            if let Some(done) = self.done.take() {
                // The run may already have given up on this session; then nobody listens.
                done.send(()).ok();
            }
        }
    }

    fn finish(mut self) -> SessionReport {
        if self.report.received < self.steps {
            let received = self.report.received;
            self.violation(format!("received {received} of {} statuses", self.steps));
        }
        self.report
    }
}

/// `step {i}/{n} t_ns={t}` as `(i, n, t)`.
fn parse_step(text: &str) -> Option<(u64, u64, u64)> {
    let rest = text.strip_prefix("step ")?;
    let (i, rest) = rest.split_once('/')?;
    let (n, t) = rest.split_once(" t_ns=")?;
    Some((i.parse().ok()?, n.parse().ok()?, t.parse().ok()?))
}

fn http_client(args: &Args) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(args.concurrency)
        .build()
        .map_err(|e| format!("http client: {e}"))
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
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    if status != reqwest::StatusCode::CREATED {
        return Err(format!("POST {url}: status {status}, body {body:?}"));
    }
    let created: Created =
        serde_json::from_slice(&body).map_err(|e| format!("POST {url}: body {body:?}: {e}"))?;
    Ok(created.id)
}

async fn start_task(client: &reqwest::Client, args: &Args, id: &str) -> Result<(), String> {
    let url = format!("{}/api/sessions/{id}/tasks", args.task_url);
    let body = format!(r#"{{"steps":{},"delay_ms":{}}}"#, args.steps, args.delay_ms);
    let response = client
        .post(&url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    if status != reqwest::StatusCode::ACCEPTED {
        return Err(format!("POST {url}: status {status}, body {body:?}"));
    }
    Ok(())
}

async fn create_sessions(client: &reqwest::Client, args: &Args) -> Result<Vec<String>, String> {
    futures_util::stream::iter(0..args.sessions)
        .map(|_| create_session(client, &args.task_url))
        .buffered(args.concurrency)
        .try_collect()
        .await
}

async fn start_tasks(client: &reqwest::Client, args: &Args, ids: &[String]) -> Result<(), String> {
    futures_util::stream::iter(ids)
        .map(|id| start_task(client, args, id))
        .buffer_unordered(args.concurrency)
        .try_collect()
        .await
}

/// Connects, says so on `connected`, then reads frames into a checker until `stop` changes.
async fn read_session(
    args: Arc<Args>,
    client: reqwest::Client,
    handshakes: Arc<Semaphore>,
    mut checker: Checker,
    connected: mpsc::UnboundedSender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
) -> SessionReport {
    let id = checker.session.clone();
    if args.sse {
        let permit = handshakes.acquire().await;
        let url = format!("{}/events?session={id}", args.url);
        let response = match client.get(&url).send().await {
            Ok(r) if r.status() == reqwest::StatusCode::OK => r,
            Ok(r) => {
                drop(connected.send(Err(format!("GET {url}: status {}", r.status()))));
                return checker.finish();
            }
            Err(e) => {
                drop(connected.send(Err(format!("GET {url}: {e}"))));
                return checker.finish();
            }
        };
        drop(permit);
        drop(connected.send(Ok(())));
        let mut body = response.bytes_stream();
        let mut parser = SseParser::default();
        loop {
            tokio::select! {
                chunk = body.next() => match chunk {
                    Some(Ok(chunk)) => {
                        let receipt_ns = unix_nanos();
                        parser.feed(&chunk, |event| {
                            checker.frame(event.data, receipt_ns, event.id, event.event);
                        });
                    }
                    Some(Err(e)) => {
                        checker.violation(format!("event stream failed: {e}"));
                        break;
                    }
                    None => break,
                },
                _ = stop.changed() => break,
            }
        }
    } else {
        let permit = handshakes.acquire().await;
        let ws_url = format!(
            "ws://{}/ws?session={id}",
            args.url.trim_start_matches("http://")
        );
        let mut socket =
            match tokio_tungstenite::connect_async_with_config(&ws_url, None, true).await {
                Ok((socket, _)) => socket,
                Err(e) => {
                    drop(connected.send(Err(format!("GET {ws_url}: {e}"))));
                    return checker.finish();
                }
            };
        drop(permit);
        drop(connected.send(Ok(())));
        loop {
            tokio::select! {
                message = socket.next() => match message {
                    Some(Ok(Message::Text(text))) => {
                        checker.frame(text.as_str(), unix_nanos(), None, None);
                    }
                    Some(Ok(Message::Binary(_))) => {
                        checker.violation("binary frame".to_string());
                    }
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        checker.violation(format!("websocket failed: {e}"));
                        break;
                    }
                },
                _ = stop.changed() => {
                    // A polite close; the server's answer is not awaited.
                    drop(socket.close(None).await);
                    break;
                }
            }
        }
    }
    checker.finish()
}

struct SseEvent<'a> {
    id: Option<&'a str>,
    event: Option<&'a str>,
    data: &'a str,
}

/// An incremental `text/event-stream` parser (one `data:` line per event is all the contract
/// sends; several are joined with `\n` as the spec says).
#[derive(Default)]
struct SseParser {
    buffer: Vec<u8>,
    data: String,
}

impl SseParser {
    fn feed(&mut self, chunk: &[u8], mut on_event: impl FnMut(SseEvent<'_>)) {
        self.buffer.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(end) = find_event_end(&self.buffer[start..]) {
            let block = &self.buffer[start..start + end.0];
            start += end.1;
            let Ok(block) = std::str::from_utf8(block) else {
                continue;
            };
            let (mut id, mut event) = (None, None);
            self.data.clear();
            let mut has_data = false;
            for line in block.lines() {
                // The block's last line keeps the `\r` of a CRLF separator.
                let line = line.strip_suffix('\r').unwrap_or(line);
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => id = Some(value),
                    "event" => event = Some(value),
                    "data" => {
                        if has_data {
                            self.data.push('\n');
                        }
                        self.data.push_str(value);
                        has_data = true;
                    }
                    _ => {}
                }
            }
            if has_data {
                on_event(SseEvent {
                    id,
                    event,
                    data: &self.data,
                });
            }
        }
        self.buffer.drain(..start);
    }
}

/// The end of the first event block in `bytes`: `(block length, length with separator)`.
fn find_event_end(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] == b'\n' {
            if bytes[i + 1] == b'\n' {
                return Some((i, i + 2));
            }
            if bytes[i + 1] == b'\r' && bytes.get(i + 2) == Some(&b'\n') {
                return Some((i, i + 3));
            }
        }
        i += 1;
    }
    None
}

/// The outcome of one run.
struct RunResult {
    statuses: u64,
    seconds: f64,
    per_second: f64,
    latency: Option<Latency>,
    /// From the first task request to each tool's first step.
    started: Option<Latency>,
    violations: Vec<String>,
    violation_count: usize,
}

#[derive(Clone, Copy)]
struct Latency {
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Option<Self> {
        if histogram.is_empty() {
            return None;
        }
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1e6;
        Some(Latency {
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: histogram.max() as f64 / 1e6,
        })
    }
}

/// Opens the readers of `ids` and waits until all are connected.
async fn connect_all(
    args: &Arc<Args>,
    client: &reqwest::Client,
    ids: &[String],
    keep_latencies: bool,
    done: &mpsc::UnboundedSender<()>,
    stop: &watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<SessionReport>>, String> {
    let handshakes = Arc::new(Semaphore::new(args.concurrency));
    let (connected_tx, mut connected) = mpsc::unbounded_channel();
    let readers: Vec<_> = ids
        .iter()
        .map(|id| {
            let checker = Checker::new(id.clone(), args.steps, keep_latencies, done.clone());
            tokio::spawn(read_session(
                Arc::clone(args),
                client.clone(),
                Arc::clone(&handshakes),
                checker,
                connected_tx.clone(),
                stop.clone(),
            ))
        })
        .collect();
    drop(connected_tx);
    let mut first_error = None;
    for _ in 0..ids.len() {
        match connected.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                first_error.get_or_insert(e);
            }
            None => break,
        }
    }
    match first_error {
        None => Ok(readers),
        Some(e) => {
            for reader in &readers {
                reader.abort();
            }
            Err(format!("connecting failed: {e}"))
        }
    }
}

/// Waits for `expected` done signals, at most until `deadline`; returns how many came.
async fn wait_done(
    done: &mut mpsc::UnboundedReceiver<()>,
    expected: usize,
    deadline: tokio::time::Instant,
) -> usize {
    let mut finished = 0;
    while finished < expected {
        match tokio::time::timeout_at(deadline, done.recv()).await {
            Ok(Some(())) => finished += 1,
            Ok(None) | Err(_) => break,
        }
    }
    finished
}

async fn collect(
    readers: Vec<tokio::task::JoinHandle<SessionReport>>,
) -> Result<Vec<SessionReport>, String> {
    let mut reports = Vec::with_capacity(readers.len());
    for reader in readers {
        reports.push(
            reader
                .await
                .map_err(|e| format!("reader task failed: {e}"))?,
        );
    }
    Ok(reports)
}

async fn run_once(args: &Arc<Args>, client: &reqwest::Client) -> Result<RunResult, String> {
    let ids = create_sessions(client, args).await?;
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let (stop_tx, stop) = watch::channel(false);
    let readers = connect_all(args, client, &ids, true, &done_tx, &stop).await?;
    drop(done_tx);

    let start_ns = unix_nanos();
    let deadline = tokio::time::Instant::now() + args.timeout;
    start_tasks(client, args, &ids).await?;
    let finished = wait_done(&mut done, ids.len(), deadline).await;
    // Anything that arrives during the grace period is a duplicate or an extra status.
    tokio::time::sleep(args.grace).await;
    stop_tx.send_replace(true);
    let reports = collect(readers).await?;

    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3)
        .map_err(|e| format!("histogram: {e}"))?;
    let mut started = histogram.clone();
    let (mut statuses, mut last_ns) = (0, start_ns);
    let (mut violations, mut violation_count) = (Vec::new(), 0);
    for report in reports {
        statuses += report.received;
        last_ns = last_ns.max(report.last_receipt_ns);
        for latency in &report.latencies_ns {
            histogram.saturating_record(*latency);
        }
        if let Some(first_step_ns) = report.first_step_ns {
            started.saturating_record(first_step_ns.saturating_sub(start_ns).max(1));
        }
        violation_count += report.violation_count;
        let room = MAX_REPORTED.saturating_sub(violations.len());
        violations.extend(report.violations.into_iter().take(room));
    }
    if finished < ids.len() {
        violations.insert(
            0,
            format!(
                "{} of {} sessions did not finish within {:?}",
                ids.len() - finished,
                ids.len(),
                args.timeout
            ),
        );
        violation_count += 1;
    }
    let seconds = (last_ns.saturating_sub(start_ns)) as f64 / 1e9;
    Ok(RunResult {
        statuses,
        seconds,
        per_second: if seconds > 0.0 {
            statuses as f64 / seconds
        } else {
            0.0
        },
        latency: Latency::of(&histogram),
        started: Latency::of(&started),
        violations,
        violation_count,
    })
}

/// The memory scenario: tasks run with nobody listening; a sample is read back afterwards.
async fn run_idle(args: &Arc<Args>, client: &reqwest::Client) -> Result<RunResult, String> {
    let ids = create_sessions(client, args).await?;
    let start_ns = unix_nanos();
    start_tasks(client, args, &ids).await?;
    let started_ns = unix_nanos();
    // An even spread over the sessions, always including the last one started.
    let step = ids.len() as f64 / args.sample as f64;
    let sample: Vec<String> = (1..=args.sample)
        .map(|k| ids[((k as f64 * step).ceil() as usize).clamp(1, ids.len()) - 1].clone())
        .collect();
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let (stop_tx, stop) = watch::channel(false);
    let deadline = tokio::time::Instant::now() + args.timeout;
    let readers = connect_all(args, client, &sample, false, &done_tx, &stop).await?;
    drop(done_tx);
    let finished = wait_done(&mut done, sample.len(), deadline).await;
    tokio::time::sleep(args.grace).await;
    stop_tx.send_replace(true);
    let reports = collect(readers).await?;
    let mut result = RunResult {
        statuses: 0,
        seconds: started_ns.saturating_sub(start_ns) as f64 / 1e9,
        per_second: 0.0,
        latency: None,
        started: None,
        violations: Vec::new(),
        violation_count: 0,
    };
    for report in reports {
        result.statuses += report.received;
        result.violation_count += report.violation_count;
        let room = MAX_REPORTED.saturating_sub(result.violations.len());
        result
            .violations
            .extend(report.violations.into_iter().take(room));
    }
    if finished < sample.len() {
        result.violation_count += 1;
        result.violations.insert(
            0,
            format!("{} sampled sessions incomplete", sample.len() - finished),
        );
    }
    Ok(result)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn describe(result: &RunResult) -> String {
    let mut line = format!(
        "{} statuses in {:.3} s = {} statuses/s",
        result.statuses,
        result.seconds,
        thousands(result.per_second)
    );
    if let Some(l) = result.latency {
        line.push_str(&format!(
            "; latency p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
            l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms
        ));
    }
    if let Some(s) = result.started {
        line.push_str(&format!(
            "; tools started p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms after the first request",
            s.p50_ms, s.p99_ms, s.max_ms
        ));
    }
    line.push_str(&format!("; {} violations", result.violation_count));
    line
}

fn json_number(value: f64) -> serde_json::Value {
    serde_json::Number::from_f64((value * 1e6).round() / 1e6)
        .map_or(serde_json::Value::Null, serde_json::Value::Number)
}

fn latency_json(latency: Option<Latency>) -> serde_json::Value {
    match latency {
        Some(l) => serde_json::json!({
            "p50_ms": json_number(l.p50_ms),
            "p99_ms": json_number(l.p99_ms),
            "p999_ms": json_number(l.p999_ms),
            "max_ms": json_number(l.max_ms),
        }),
        None => serde_json::Value::Null,
    }
}

async fn run(args: Args) -> Result<bool, String> {
    let args = Arc::new(args);
    let client = http_client(&args)?;
    let transport = if args.sse { "sse" } else { "ws" };
    let mode = if args.idle { "idle" } else { "load" };
    let mut results = Vec::with_capacity(args.runs);
    for run in 1..=args.runs {
        let result = if args.idle {
            run_idle(&args, &client).await?
        } else {
            run_once(&args, &client).await?
        };
        if args.idle {
            eprintln!(
                "run {run}/{}: {} idle sessions x {} steps started in {:.3} s; sample of {} read back: {} statuses; {} violations",
                args.runs,
                args.sessions,
                args.steps,
                result.seconds,
                args.sample,
                result.statuses,
                result.violation_count
            );
        } else {
            eprintln!(
                "run {run}/{}: {} sessions x {} steps, delay {} ms, {transport}: {}",
                args.runs,
                args.sessions,
                args.steps,
                args.delay_ms,
                describe(&result)
            );
        }
        for violation in &result.violations {
            eprintln!("  violation: {violation}");
        }
        results.push(result);
    }

    let pick = |f: &dyn Fn(&RunResult) -> Option<f64>| {
        let mut values: Vec<f64> = results.iter().filter_map(f).collect();
        (!values.is_empty()).then(|| median(&mut values))
    };
    let median_rate = pick(&|r| Some(r.per_second)).unwrap_or(0.0);
    let median_latency = match (
        pick(&|r| r.latency.map(|l| l.p50_ms)),
        pick(&|r| r.latency.map(|l| l.p99_ms)),
        pick(&|r| r.latency.map(|l| l.p999_ms)),
        pick(&|r| r.latency.map(|l| l.max_ms)),
    ) {
        (Some(p50_ms), Some(p99_ms), Some(p999_ms), Some(max_ms)) => Some(Latency {
            p50_ms,
            p99_ms,
            p999_ms,
            max_ms,
        }),
        _ => None,
    };
    let violations: usize = results.iter().map(|r| r.violation_count).sum();
    let median_started_max = pick(&|r| r.started.map(|s| s.max_ms));
    if !args.idle && args.runs > 1 {
        let mut line = format!(
            "median of {} runs: {} statuses/s",
            args.runs,
            thousands(median_rate)
        );
        if let Some(l) = median_latency {
            line.push_str(&format!(
                "; latency p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms",
                l.p50_ms, l.p99_ms, l.p999_ms
            ));
        }
        if let Some(max_ms) = median_started_max {
            line.push_str(&format!("; last tool started after {max_ms:.3} ms"));
        }
        eprintln!("{line}; {violations} violations in all");
    }
    if args.json {
        let runs: Vec<_> = results
            .iter()
            .map(|r| {
                serde_json::json!({
                    "statuses": r.statuses,
                    "seconds": json_number(r.seconds),
                    "statuses_per_s": json_number(r.per_second),
                    "latency": latency_json(r.latency),
                    "started": latency_json(r.started),
                    "violations": r.violation_count,
                })
            })
            .collect();
        let line = serde_json::json!({
            "mode": mode,
            "url": args.url,
            "task_url": args.task_url,
            "transport": transport,
            "sessions": args.sessions,
            "steps": args.steps,
            "delay_ms": args.delay_ms,
            "runs": runs,
            "median": {
                "statuses_per_s": json_number(median_rate),
                "latency": latency_json(median_latency),
                "started_max_ms": median_started_max.map_or(serde_json::Value::Null, json_number),
            },
            "violations": violations,
            "ok": violations == 0,
        });
        println!("{line}");
    }
    Ok(violations == 0)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("loadgen: runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker(steps: u64) -> (Checker, mpsc::UnboundedReceiver<()>) {
        let (done, done_rx) = mpsc::unbounded_channel();
        (Checker::new("s1".into(), steps, true, done), done_rx)
    }

    fn status(session: &str, seq: u64, steps: u64, t_ns: u64) -> String {
        format!(r#"{{"session":"{session}","seq":{seq},"text":"step {seq}/{steps} t_ns={t_ns}"}}"#)
    }

    #[test]
    fn parses_step_texts() {
        assert_eq!(parse_step("step 3/10 t_ns=42"), Some((3, 10, 42)));
        assert_eq!(parse_step("step 3/10"), None);
        assert_eq!(parse_step("stage 3/10 t_ns=42"), None);
        assert_eq!(parse_step("step x/10 t_ns=42"), None);
    }

    #[test]
    fn complete_ordered_sessions_pass_and_signal_done() {
        let (mut checker, mut done) = checker(3);
        for seq in 1..=3 {
            checker.frame(&status("s1", seq, 3, 1_000), 1_500 + seq, None, None);
        }
        assert_eq!(done.try_recv(), Ok(()));
        let report = checker.finish();
        assert_eq!(report.violation_count, 0, "{:?}", report.violations);
        assert_eq!(report.received, 3);
        assert_eq!(report.latencies_ns, vec![501, 502, 503]);
        assert_eq!(report.last_receipt_ns, 1_503);
        assert_eq!(report.first_step_ns, Some(1_000));
    }

    #[test]
    fn duplicates_and_missing_statuses_are_violations() {
        let (mut checker, _done) = checker(4);
        checker.frame(&status("s1", 1, 4, 0), 1, None, None);
        checker.frame(&status("s1", 1, 4, 0), 1, None, None);
        checker.frame(&status("s1", 3, 4, 0), 1, None, None);
        checker.frame(&status("s1", 4, 4, 0), 1, None, None);
        let report = checker.finish();
        assert_eq!(report.received, 3);
        // The duplicate, the skipped seq 2 (once, not again for seq 4), the shortfall.
        assert_eq!(report.violation_count, 3, "{:?}", report.violations);
        assert!(report.violations[0].contains("duplicate"));
        assert!(report.violations[1].contains("missing seq 2..=2"));
        assert!(report.violations[2].contains("received 3 of 4"));
    }

    #[test]
    fn a_gap_item_is_one_violation_and_the_stream_goes_on() {
        let (mut checker, mut done) = checker(5);
        checker.frame(&status("s1", 1, 5, 0), 1, None, None);
        checker.frame(r#"{"type":"gap","from":2,"to":4}"#, 1, None, None);
        checker.frame(&status("s1", 5, 5, 0), 1, None, None);
        assert_eq!(done.try_recv(), Ok(()));
        let report = checker.finish();
        assert_eq!(report.received, 2);
        assert_eq!(report.violation_count, 2, "{:?}", report.violations);
        assert!(report.violations[0].contains("gap item from Some(2) to Some(4)"));
        assert!(report.violations[1].contains("received 2 of 5"));
    }

    #[test]
    fn extra_foreign_and_malformed_frames_are_violations() {
        let (mut checker, _done) = checker(1);
        checker.frame(&status("s1", 1, 1, 0), 1, None, None);
        checker.frame(&status("s1", 2, 1, 0), 1, None, None);
        checker.frame(&status("s2", 3, 1, 0), 1, None, None);
        checker.frame("not json", 1, None, None);
        checker.frame(r#"{"session":"s1","seq":3,"text":"hello"}"#, 1, None, None);
        let report = checker.finish();
        assert_eq!(report.violation_count, 5, "{:?}", report.violations);
        assert!(report.violations[0].contains("seq 2 beyond the 1 steps"));
        assert!(report.violations[1].contains("another session"));
        assert!(report.violations[2].contains("unparsable"));
        assert!(report.violations[3].contains("seq 3: unexpected text"));
        assert!(report.violations[4].contains("seq 3 beyond the 1 steps"));
    }

    #[test]
    fn sse_ids_and_gap_events_are_checked() {
        let (mut checker, _done) = checker(2);
        checker.frame(&status("s1", 1, 2, 0), 1, Some("1"), None);
        checker.frame(&status("s1", 2, 2, 0), 1, Some("7"), None);
        checker.frame(r#"{"from":3,"to":4}"#, 1, None, Some("gap"));
        let report = checker.finish();
        assert_eq!(report.received, 2);
        assert_eq!(report.violation_count, 2, "{:?}", report.violations);
        assert!(report.violations[0].contains("SSE id \"7\""));
        assert!(report.violations[1].contains("gap"));
    }

    #[test]
    fn sse_parser_handles_split_chunks_crlf_and_comments() {
        let mut parser = SseParser::default();
        let mut seen = Vec::new();
        let stream = ": keep-alive\n\nid: 1\ndata: {\"a\":1}\n\nevent: gap\ndata: x\ndata: y\r\n\r\nid: 3\ndata:z\n\n";
        // Byte by byte, the worst split there is.
        for byte in stream.as_bytes() {
            parser.feed(std::slice::from_ref(byte), |event| {
                seen.push((
                    event.id.map(String::from),
                    event.event.map(String::from),
                    event.data.to_string(),
                ));
            });
        }
        assert_eq!(
            seen,
            vec![
                (Some("1".into()), None, "{\"a\":1}".into()),
                (None, Some("gap".into()), "x\ny".into()),
                (Some("3".into()), None, "z".into()),
            ]
        );
        assert!(parser.buffer.is_empty());
    }

    #[test]
    fn medians_and_thousands() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
    }
}
