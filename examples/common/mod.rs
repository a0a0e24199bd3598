//! What the axum and actix demo servers share: arguments, ids, request validation, the
//! simulated tool, frame encoding, metrics text, the page and shutdown signals.
//!
//! Every function here is framework-free so that both servers keep the HTTP contract in
//! exactly the same way.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{FutureExt, Stream, StreamExt};
use serde::Serialize;
use serde_json::Value;
use status_messenger::{add_status_message, Event, Hub, HubConfig, HubStats, Subscription};
use tokio::sync::Notify;

/// The page, one self-contained file: no build step, no CDN, works offline.
pub(crate) const PAGE_HTML: &str = include_str!("page.html");

/// Largest request body accepted; larger ones get 413.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;
/// Largest WebSocket message or frame a client may send; the connection is closed past it.
pub(crate) const MAX_WS_MESSAGE_BYTES: usize = 64 * 1024;
/// `steps` accepted by `POST /api/sessions/{id}/tasks`.
pub(crate) const STEPS_RANGE: std::ops::RangeInclusive<u64> = 1..=100_000;
/// `delay_ms` accepted by `POST /api/sessions/{id}/tasks`.
pub(crate) const DELAY_MS_RANGE: std::ops::RangeInclusive<u64> = 0..=60_000;
/// How often an idle SSE stream gets a comment line, so proxies keep it open.
pub(crate) const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long shutdown waits for open WebSocket streams to send their close frame.
pub(crate) const STREAM_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Where and how to serve, from `--flag value` arguments and environment variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Config {
    pub(crate) bind: String,
    pub(crate) port: u16,
    pub(crate) redis: Option<String>,
    /// Seed nodes of a Redis Cluster, comma-separated (`--redis-cluster`, `REDIS_CLUSTER_URLS`).
    pub(crate) redis_cluster: Option<String>,
}

impl Config {
    /// Reads the process's arguments and environment.
    pub(crate) fn from_env() -> Result<Config, String> {
        Config::parse(std::env::args().skip(1), |name| std::env::var(name).ok())
    }

    /// Arguments win over environment variables; `--name value` and `--name=value` both work.
    pub(crate) fn parse(
        args: impl IntoIterator<Item = String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, String> {
        let mut bind = env("BIND").filter(|v| !v.is_empty());
        let mut port = env("PORT").filter(|v| !v.is_empty());
        let mut redis = env("REDIS_URL").filter(|v| !v.is_empty());
        let mut redis_cluster = env("REDIS_CLUSTER_URLS").filter(|v| !v.is_empty());
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                None => (arg.clone(), None),
            };
            let slot = match name.as_str() {
                "--port" => &mut port,
                "--bind" => &mut bind,
                "--redis" => &mut redis,
                "--redis-cluster" => &mut redis_cluster,
                "-h" | "--help" => return Err(USAGE.to_owned()),
                _ => return Err(format!("unknown argument `{arg}`\n{USAGE}")),
            };
            let value = match inline {
                Some(value) => value,
                None => args
                    .next()
                    .ok_or_else(|| format!("`{name}` needs a value\n{USAGE}"))?,
            };
            *slot = Some(value);
        }
        let port = match port {
            None => 3000,
            Some(text) => text
                .parse::<u16>()
                .map_err(|_| format!("invalid port `{text}`: expected 0..=65535"))?,
        };
        Ok(Config {
            bind: bind.unwrap_or_else(|| "127.0.0.1".to_owned()),
            port,
            redis,
            redis_cluster,
        })
    }

    /// Refuses a Redis URL when this build has no Redis backend, rather than ignoring it and
    /// silently serving sessions that other processes cannot see.
    pub(crate) fn check_backend(&self) -> Result<(), String> {
        if let Some(urls) = &self.redis_cluster {
            if self.redis.is_some() {
                return Err("give either a Redis URL or Redis Cluster URLs, not both".to_owned());
            }
            if cfg!(not(feature = "redis-cluster")) {
                return Err(format!(
                    "Redis Cluster URLs were given ({urls}), but this build has no Redis Cluster \
                     backend; build with `--features redis-cluster`"
                ));
            }
        }
        match &self.redis {
            Some(url) if cfg!(not(feature = "redis")) => Err(format!(
                "a Redis URL was given ({url}), but this build has no Redis backend; build \
                 with `--features redis`, or run without --redis / REDIS_URL to keep sessions \
                 in memory"
            )),
            _ => Ok(()),
        }
    }

    /// The hub: in memory, or on Redis (shared with every server using the same Redis) when a
    /// URL was given.
    pub(crate) async fn hub(&self) -> Result<Hub, Box<dyn std::error::Error>> {
        if let Some(urls) = &self.redis_cluster {
            return cluster_hub(urls).await;
        }
        match &self.redis {
            #[cfg(feature = "redis")]
            Some(url) => {
                let hub = Hub::with_redis(
                    hub_config(),
                    status_messenger::RedisConfig::new(url.as_str()),
                )
                .await?;
                tracing::info!("sessions live in redis, shared with other servers");
                Ok(hub)
            }
            #[cfg(not(feature = "redis"))]
            Some(_) => Err(self.check_backend().err().unwrap_or_default().into()),
            None => Ok(Hub::new(hub_config())?),
        }
    }
}

const USAGE: &str =
    "usage: [--port N] [--bind ADDR] [--redis URL | --redis-cluster URL[,URL...]]\n\
    environment: PORT, BIND, REDIS_URL, REDIS_CLUSTER_URLS (arguments win); PORT=0 picks any \
    free port";

/// The hub on a Redis Cluster given by comma-separated seed nodes, shared with every server
/// using the same cluster.
async fn cluster_hub(urls: &str) -> Result<Hub, Box<dyn std::error::Error>> {
    #[cfg(feature = "redis-cluster")]
    {
        let nodes = urls.split(',').map(str::trim).filter(|u| !u.is_empty());
        let config = status_messenger::RedisClusterConfig::new(nodes);
        let hub = Hub::with_redis_cluster(hub_config(), config).await?;
        tracing::info!("sessions live in a redis cluster, shared with other servers");
        Ok(hub)
    }
    #[cfg(not(feature = "redis-cluster"))]
    Err(format!("this build has no Redis Cluster backend (cluster {urls})").into())
}

/// The hub settings the contract asks for: at least 1,000 statuses per session, kept at
/// least 10 minutes.
pub(crate) fn hub_config() -> HubConfig {
    let mut config = HubConfig::default();
    config.history_capacity = config.history_capacity.max(1000);
    config.history_ttl = config.history_ttl.max(Duration::from_secs(600));
    // The buffer also bounds a fresh subscriber's replay: a late page gets all the history.
    config.subscriber_buffer = config.subscriber_buffer.max(config.history_capacity);
    config
}

/// Logs go to stderr: stdout carries only the `listening on` line.
pub(crate) fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_max_level(tracing::Level::INFO)
        .try_init();
}

/// 128 random bits as 32 lowercase hex digits.
pub(crate) fn new_id() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    let mut id = String::with_capacity(32);
    for byte in bytes {
        let _ = write!(id, "{byte:02x}");
    }
    Ok(id)
}

/// Whether `id` has the shape of an id this server issues (32 lowercase hex digits).
pub(crate) fn is_well_formed_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A request refused: the HTTP status and the message of its JSON error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: u16,
    pub(crate) message: String,
}

impl Refusal {
    fn new(status: u16, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
        }
    }
}

/// `Ok(id)` when `id` names a session this server issued and still holds: 404 for a malformed
/// or unknown id, 503 when the hub cannot tell (its backend is away).
pub(crate) async fn check_session<'a>(hub: &Hub, id: Option<&'a str>) -> Result<&'a str, Refusal> {
    let unknown = || Refusal::new(404, "unknown session");
    let id = id.filter(|id| is_well_formed_id(id)).ok_or_else(unknown)?;
    match hub.session_exists(id).await {
        Ok(true) => Ok(id),
        Ok(false) => Err(unknown()),
        Err(e) => Err(Refusal::new(503, e.to_string())),
    }
}

/// Issues a new session id and opens it in the hub.
pub(crate) async fn create_session(hub: &Hub) -> Result<String, Refusal> {
    let id = new_id().map_err(|e| Refusal::new(500, e.to_string()))?;
    hub.open_session(&id)
        .await
        .map_err(|e| Refusal::new(503, e.to_string()))?;
    Ok(id)
}

/// The WebSocket's resume point, from its `after` parameter.
pub(crate) fn ws_resume_point(query: &Query) -> Result<Option<u64>, Refusal> {
    query
        .get("after")
        .map(|after| parse_seq("after", after))
        .transpose()
        .map_err(|message| Refusal::new(400, message))
}

/// A validated `POST /api/sessions/{id}/tasks` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TaskSpec {
    pub(crate) steps: u32,
    pub(crate) delay: Duration,
}

/// Parses and checks a task body; the error says what is wrong, for a 400 answer.
pub(crate) fn parse_task(body: &[u8]) -> Result<TaskSpec, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("malformed JSON body: {e}"))?;
    let Value::Object(fields) = value else {
        return Err(
            "the body must be a JSON object like {\"steps\": 10, \"delay_ms\": 200}".into(),
        );
    };
    let field = |name: &str, range: &std::ops::RangeInclusive<u64>| -> Result<u64, String> {
        let value = fields
            .get(name)
            .ok_or_else(|| format!("missing field `{name}`"))?;
        let out_of_range = || {
            format!(
                "`{name}` must be between {} and {}",
                range.start(),
                range.end()
            )
        };
        match value {
            Value::Number(n) if n.is_u64() => n
                .as_u64()
                .filter(|v| range.contains(v))
                .ok_or_else(out_of_range),
            Value::Number(n) if n.is_i64() => Err(out_of_range()),
            _ => Err(format!("`{name}` must be an integer")),
        }
    };
    let steps = field("steps", &STEPS_RANGE)?;
    let delay_ms = field("delay_ms", &DELAY_MS_RANGE)?;
    Ok(TaskSpec {
        steps: u32::try_from(steps).map_err(|_| "`steps` is too large".to_owned())?,
        delay: Duration::from_millis(delay_ms),
    })
}

/// The simulated agent tool: ordinary synchronous code that knows nothing about sessions.
///
/// It reports progress with [`add_status_message`]; the session-carrying spawn helpers decide
/// whose page the messages reach.
pub(crate) fn simulated_tool(steps: u32, delay: Duration) -> u32 {
    for step in 1..=steps {
        if step > 1 && !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let t_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        add_status_message(format!("step {step}/{steps} t_ns={t_ns}"));
    }
    steps
}

/// A parsed query string (`application/x-www-form-urlencoded`), looked up by name.
#[derive(Debug, Default)]
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(raw: Option<&str>) -> Query {
        let pairs = raw
            .unwrap_or("")
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(name), percent_decode(value))
            })
            .collect();
        Query(pairs)
    }

    /// The first value given for `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads a resume point (`after`, `Last-Event-ID`, `last_event_id`): a status seq.
pub(crate) fn parse_seq(name: &str, text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<u64>()
        .map_err(|_| format!("`{name}` must be a non-negative integer (a status seq)"))
}

/// Where a subscriber resumes: the header wins over the query, as `EventSource` sends the
/// header with the newest id on its own reconnects while the query may be older.
pub(crate) fn sse_resume_point(
    header: Option<&str>,
    query: Option<&str>,
) -> Result<Option<u64>, String> {
    match (header, query) {
        (Some(h), _) if !h.trim().is_empty() => parse_seq("Last-Event-ID", h).map(Some),
        (_, Some(q)) if !q.trim().is_empty() => parse_seq("last_event_id", q).map(Some),
        _ => Ok(None),
    }
}

#[derive(Serialize)]
struct StatusFrame<'a> {
    session: &'a str,
    seq: u64,
    text: &'a str,
}

#[derive(Serialize)]
struct GapFrame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    session: &'a str,
    from: u64,
    to: u64,
}

/// One event as its JSON frame, serialized once; also the seq an SSE `id:` line carries
/// (a gap's `to`, so that a resume moves past what was declared missing).
pub(crate) fn event_json(event: &Event) -> (String, u64, bool) {
    let (json, id, is_gap) = match event {
        Event::Status(status) => (
            serde_json::to_string(&StatusFrame {
                session: status.session(),
                seq: status.seq(),
                text: status.text(),
            }),
            status.seq(),
            false,
        ),
        Event::Gap(gap) => (
            serde_json::to_string(&GapFrame {
                kind: "gap",
                session: gap.session(),
                from: gap.from(),
                to: gap.to(),
            }),
            gap.to(),
            true,
        ),
        // Kinds of event this demo does not know yet: an empty frame, which clients skip.
        _ => (Ok(String::new()), 0, false),
    };
    // Serializing plain strings and integers cannot fail.
    (json.unwrap_or_default(), id, is_gap)
}

/// One event as an SSE message: `id: n`, then `event: gap` for gaps, then `data: <json>`.
pub(crate) fn sse_message(event: &Event) -> String {
    let (json, id, is_gap) = event_json(event);
    let mut out = String::with_capacity(json.len() + 40);
    let _ = writeln!(out, "id: {id}");
    if is_gap {
        out.push_str("event: gap\n");
    }
    out.push_str("data: ");
    out.push_str(&json);
    out.push_str("\n\n");
    out
}

/// `{"error": "..."}`.
pub(crate) fn error_json(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

/// The hub's counters as Prometheus text (exposition format 0.0.4).
pub(crate) fn metrics_text(stats: &HubStats) -> String {
    let mut out = String::with_capacity(2048);
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP status_messenger_{name} {help}");
        let _ = writeln!(out, "# TYPE status_messenger_{name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "status_messenger_{name}{labels} {value}");
        }
    };
    metric(
        "sessions",
        "gauge",
        "Sessions the hub holds now.",
        &[("", stats.sessions)],
    );
    metric(
        "subscribers",
        "gauge",
        "Open WebSocket and SSE streams.",
        &[("", stats.subscribers)],
    );
    metric(
        "messages_in_total",
        "counter",
        "Statuses accepted into a session.",
        &[("", stats.accepted)],
    );
    metric(
        "messages_delivered_total",
        "counter",
        "Statuses handed to subscribers.",
        &[("", stats.delivered)],
    );
    metric(
        "messages_dropped_total",
        "counter",
        "Statuses not accepted, by reason.",
        &[
            ("{reason=\"no_session\"}", stats.dropped_no_session),
            ("{reason=\"closed\"}", stats.dropped_closed),
            ("{reason=\"invalid_session\"}", stats.dropped_invalid),
            ("{reason=\"session_limit\"}", stats.dropped_session_limit),
            ("{reason=\"backend\"}", stats.dropped_backend),
        ],
    );
    metric(
        "messages_lagged_total",
        "counter",
        "Statuses a subscriber missed, reported to it in gap items.",
        &[("", stats.lagged)],
    );
    metric(
        "gaps_total",
        "counter",
        "Gap items sent to subscribers.",
        &[("", stats.gaps)],
    );
    metric(
        "messages_truncated_total",
        "counter",
        "Statuses cut to the size limit.",
        &[("", stats.truncated)],
    );
    metric(
        "sessions_evicted_total",
        "counter",
        "Idle sessions evicted.",
        &[("", stats.evicted_sessions)],
    );
    metric(
        "history_retained",
        "gauge",
        "Statuses held in history now.",
        &[("", stats.retained)],
    );
    metric(
        "backend_buffered",
        "gauge",
        "Statuses waiting for Redis now (Redis backend).",
        &[("", stats.backend_buffered)],
    );
    metric(
        "backend_errors_total",
        "counter",
        "Failed Redis connections and commands (Redis backend).",
        &[("", stats.backend_errors)],
    );
    metric(
        "backend_reconnects_total",
        "counter",
        "Reconnections to Redis (Redis backend).",
        &[("", stats.backend_reconnects)],
    );
    out
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Counts open streams so that shutdown can wait for them to say goodbye.
#[derive(Debug, Clone, Default)]
pub(crate) struct OpenStreams(Arc<OpenStreamsInner>);

#[derive(Debug, Default)]
struct OpenStreamsInner {
    open: AtomicUsize,
    closed: Notify,
}

/// Held by one open stream; dropping it marks the stream closed.
#[derive(Debug)]
pub(crate) struct StreamGuard(OpenStreams);

impl OpenStreams {
    pub(crate) fn enter(&self) -> StreamGuard {
        self.0.open.fetch_add(1, Ordering::SeqCst);
        StreamGuard(self.clone())
    }

    pub(crate) fn open(&self) -> usize {
        self.0.open.load(Ordering::SeqCst)
    }

    /// Waits until no stream is open, or `limit` passes; returns how many are still open.
    pub(crate) async fn wait_closed(&self, limit: Duration) -> usize {
        let all_closed = async {
            loop {
                let notified = self.0.closed.notified();
                if self.open() == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(limit, all_closed).await;
        self.open()
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.0 .0.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0 .0.closed.notify_waiters();
        }
    }
}

/// Most SSE messages written as one body chunk, when many are ready at once.
const SSE_BATCH: usize = 256;

/// A subscription as an SSE body: a `retry:` hint first, then one message per event, and a
/// comment line when idle so that proxies keep the stream open. Ends with the subscription.
pub(crate) fn sse_stream(
    subscription: Subscription,
    guard: StreamGuard,
) -> impl Stream<Item = String> + Send + 'static {
    let keep_alive =
        tokio::time::interval_at(tokio::time::Instant::now() + SSE_KEEP_ALIVE, SSE_KEEP_ALIVE);
    let first = futures_util::stream::once(async { "retry: 1000\n\n".to_owned() });
    let events = futures_util::stream::unfold(
        (subscription, keep_alive, guard),
        |(mut subscription, mut keep_alive, guard)| async move {
            let chunk = tokio::select! {
                event = subscription.next() => {
                    let mut chunk = sse_message(&event?);
                    for _ in 1..SSE_BATCH {
                        match subscription.next().now_or_never() {
                            Some(Some(event)) => chunk.push_str(&sse_message(&event)),
                            _ => break,
                        }
                    }
                    chunk
                }
                _ = keep_alive.tick() => ": keep-alive\n\n".to_owned(),
            };
            Some((chunk, (subscription, keep_alive, guard)))
        },
    );
    first.chain(events)
}
