//! What the axum and actix demo servers share and is the demo's own: arguments, session ids,
//! the task body, the simulated tool, starting and cancelling its tasks, the page, metrics and
//! shutdown signals. The streams
//! (`/ws`, `/events`, `/cancel`, `/status-messenger.js`) are the library's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::Value;
use status_messenger::web::Refusal;
use status_messenger::{
    add_status, is_cancelled, sleep_unless_cancelled, Hub, HubConfig, StatusMessage, Task,
};

/// The page, one self-contained file: no build step, no CDN, works offline.
pub(crate) const PAGE_HTML: &str = include_str!("page.html");

/// Largest request body accepted; larger ones get 413.
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;
/// `steps` accepted by `POST /api/sessions/{id}/tasks`.
pub(crate) const STEPS_RANGE: std::ops::RangeInclusive<u64> = 1..=100_000;
/// `delay_ms` accepted by `POST /api/sessions/{id}/tasks`.
pub(crate) const DELAY_MS_RANGE: std::ops::RangeInclusive<u64> = 0..=60_000;
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
    /// How long a client may take to send a request's headers, and how long an idle
    /// keep-alive connection waits for the next request (`--header-timeout`,
    /// `HEADER_TIMEOUT_SECS`; default 10 s).
    pub(crate) header_timeout: Duration,
    /// How long a client may take to send a request's body (`--body-timeout`,
    /// `BODY_TIMEOUT_SECS`; default 30 s): 408 after it.
    pub(crate) body_timeout: Duration,
    /// How many `/mcp` tool calls may run at once (`--mcp-max-calls`, `MCP_MAX_CALLS`; default
    /// the hub's `max_running_tasks`): one more is refused with a busy error to retry.
    // Only the axum demo serves `/mcp`.
    #[allow(dead_code)]
    pub(crate) mcp_max_calls: usize,
    /// How many tasks may run at once in this process (`--max-running-tasks`,
    /// `MAX_RUNNING_TASKS`; default the hub's 256): one more is refused with 503 and
    /// `Retry-After`.
    pub(crate) max_running_tasks: usize,
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
        let mut header_timeout = env("HEADER_TIMEOUT_SECS").filter(|v| !v.is_empty());
        let mut body_timeout = env("BODY_TIMEOUT_SECS").filter(|v| !v.is_empty());
        let mut mcp_max_calls = env("MCP_MAX_CALLS").filter(|v| !v.is_empty());
        let mut max_running_tasks = env("MAX_RUNNING_TASKS").filter(|v| !v.is_empty());
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
                "--header-timeout" => &mut header_timeout,
                "--body-timeout" => &mut body_timeout,
                "--mcp-max-calls" => &mut mcp_max_calls,
                "--max-running-tasks" => &mut max_running_tasks,
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
        let seconds = |name: &str, text: Option<String>, default: u64| match text {
            None => Ok(Duration::from_secs(default)),
            Some(text) => text
                .parse::<f64>()
                .ok()
                .filter(|secs| secs.is_finite() && *secs > 0.0 && *secs <= 86_400.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| {
                    format!("invalid {name} `{text}`: expected seconds, 0 < s <= 86400")
                }),
        };
        let max_running_tasks = match max_running_tasks {
            None => HubConfig::default().max_running_tasks,
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|tasks| *tasks > 0)
                .ok_or_else(|| {
                    format!("invalid running-task limit `{text}`: expected 1 or more")
                })?,
        };
        let mcp_max_calls = match mcp_max_calls {
            None => max_running_tasks,
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|calls| *calls > 0)
                .ok_or_else(|| format!("invalid MCP call limit `{text}`: expected 1 or more"))?,
        };
        Ok(Config {
            bind: bind.unwrap_or_else(|| "127.0.0.1".to_owned()),
            port,
            redis,
            redis_cluster,
            header_timeout: seconds("header timeout", header_timeout, 10)?,
            body_timeout: seconds("body timeout", body_timeout, 30)?,
            mcp_max_calls,
            max_running_tasks,
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
            return cluster_hub(urls, self.hub_config()).await;
        }
        match &self.redis {
            #[cfg(feature = "redis")]
            Some(url) => {
                let hub = Hub::with_redis(
                    self.hub_config(),
                    status_messenger::RedisConfig::new(url.as_str()),
                )
                .await?;
                tracing::info!("sessions live in redis, shared with other servers");
                Ok(hub)
            }
            #[cfg(not(feature = "redis"))]
            Some(_) => Err(self.check_backend().err().unwrap_or_default().into()),
            None => Ok(Hub::new(self.hub_config())?),
        }
    }
}

const USAGE: &str =
    "usage: [--port N] [--bind ADDR] [--redis URL | --redis-cluster URL[,URL...]]\n\
    \x20      [--header-timeout SECS] [--body-timeout SECS] [--mcp-max-calls N]\n\
    \x20      [--max-running-tasks N]\n\
    environment: PORT, BIND, REDIS_URL, REDIS_CLUSTER_URLS, HEADER_TIMEOUT_SECS, \
    BODY_TIMEOUT_SECS, MCP_MAX_CALLS, MAX_RUNNING_TASKS (arguments win); PORT=0 picks any \
    free port\n\
    --header-timeout: longest wait for a request's headers, and for the next request on an \
    idle keep-alive connection (default 10)\n\
    --body-timeout: longest wait for a request's body, then 408 (default 30)\n\
    --mcp-max-calls: most `/mcp` tool calls running at once, then a busy error to retry \
    (axum demo; default: the running-task limit)\n\
    --max-running-tasks: most tasks running at once in this process, then 503 with \
    Retry-After (default 256)";

/// The hub on a Redis Cluster given by comma-separated seed nodes, shared with every server
/// using the same cluster.
async fn cluster_hub(urls: &str, hub_config: HubConfig) -> Result<Hub, Box<dyn std::error::Error>> {
    #[cfg(feature = "redis-cluster")]
    {
        let nodes = urls.split(',').map(str::trim).filter(|u| !u.is_empty());
        let config = status_messenger::RedisClusterConfig::new(nodes);
        let hub = Hub::with_redis_cluster(hub_config, config).await?;
        tracing::info!("sessions live in a redis cluster, shared with other servers");
        Ok(hub)
    }
    #[cfg(not(feature = "redis-cluster"))]
    {
        // Settings for a backend this build does not have.
        drop(hub_config);
        Err(format!("this build has no Redis Cluster backend (cluster {urls})").into())
    }
}

impl Config {
    /// The hub settings the contract asks for (at least 1,000 statuses per session, kept at
    /// least 10 minutes) with this process's running-task limit.
    fn hub_config(&self) -> HubConfig {
        let mut config = HubConfig::default();
        config.max_running_tasks = self.max_running_tasks;
        config.history_capacity = config.history_capacity.max(1000);
        config.history_ttl = config.history_ttl.max(Duration::from_secs(600));
        // The buffer also bounds a fresh subscriber's replay: a late page gets all the history.
        config.subscriber_buffer = config.subscriber_buffer.max(config.history_capacity);
        config
    }
}

/// Logs go to stderr: stdout carries only the `listening on` line.
pub(crate) fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_max_level(tracing::Level::INFO)
        .try_init();
}

/// Whether `id` has the shape of an id this server issues (32 lowercase hex digits).
pub(crate) fn is_well_formed_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `Ok(id)` when `id` names a session this server issued and still holds: 404 for a malformed
/// or unknown id, 503 when the hub cannot tell (its backend is away).
pub(crate) async fn check_session<'a>(hub: &Hub, id: Option<&'a str>) -> Result<&'a str, Refusal> {
    let unknown = || Refusal::not_found("unknown session");
    let id = id.filter(|id| is_well_formed_id(id)).ok_or_else(unknown)?;
    match hub.session_exists(id).await {
        Ok(true) => Ok(id),
        Ok(false) => Err(unknown()),
        Err(e) => Err(Refusal::from_lookup_error(&e)),
    }
}

/// Issues a new session id and opens it in the hub.
pub(crate) async fn create_session(hub: &Hub) -> Result<String, Refusal> {
    hub.create_session()
        .await
        .map_err(|e| Refusal::from_open_error(&e))
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
            // A whole number too large for 64 bits is out of range, not a wrong type; one that
            // fits but is written as a float (`5.0`, `1e2`) is the wrong type.
            Value::Number(n) if n.as_f64().is_some_and(|f| f >= u64::MAX as f64) => {
                Err(out_of_range())
            }
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

/// Runs `spec`'s simulated tool in `task`, on the thread that calls it (a tool thread): how it
/// ended is recorded in the task (`finished`, `cancelled`, or `failed` on a panic), and a panic
/// is logged here, so that nothing on the runtime need await the tool's thread (a wake-up that
/// would take the core from the tools of a busy machine).
pub(crate) fn run_tool(task: Task, spec: TaskSpec) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        task.run(|| simulated_tool(spec.steps, spec.delay))
    })) {
        let message = panic
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("a panic");
        tracing::error!(panic = message, "the simulated tool failed");
    }
}

/// The simulated agent tool: ordinary synchronous code that knows nothing about sessions or
/// tasks; returns the steps it did.
///
/// It reports each step with [`add_status`] and its progress; the task it runs in (see
/// [`start_task`]) decides whose page the statuses reach, and tags them with the task. It waits
/// between steps with [`sleep_unless_cancelled`] and asks [`is_cancelled`] before each step,
/// so a Stop ends it at once, even in the middle of a long delay.
pub(crate) fn simulated_tool(steps: u32, delay: Duration) -> u32 {
    for step in 1..=steps {
        let stopped = step > 1 && !delay.is_zero() && sleep_unless_cancelled(delay);
        if stopped || is_cancelled() {
            return step - 1;
        }
        let t_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        add_status(
            StatusMessage::new(format!("step {step}/{steps} t_ns={t_ns}"))
                .progress(u64::from(step), u64::from(steps)),
        );
    }
    steps
}

/// Starts a task in `session` for the simulated tool: the caller runs it (with [`Task::run`]
/// on a blocking thread), and its id is the `task` of the 202 answer.
pub(crate) fn start_task(hub: &Hub, session: &str) -> Result<Task, Refusal> {
    hub.start_task(session)
        .map_err(|error| Refusal::from_start_task(&error))
}

/// The 202 answer of a cancel: `{"task": "...", "state": "..."}`.
#[derive(serde::Serialize)]
struct CancelAnswer<'a> {
    task: &'a str,
    state: &'static str,
}

/// `POST /api/sessions/{id}/tasks/{task}/cancel`, in a session [`check_session`] found and
/// once the request's body passed: the JSON of the 202 answer, `{"task": "...", "state":
/// "..."}` (`cancelling`, or the state the task had already ended in), or the refusal: 404 for
/// a task that is not the session's.
pub(crate) async fn cancel_task(
    hub: &Hub,
    session: &str,
    task: Option<&str>,
) -> Result<String, Refusal> {
    let task = task.unwrap_or_default();
    match hub.cancel_task(session, task).await {
        // A struct, not `json!`, so the keys come in the contract's order (`json!` sorts them),
        // as `POST /cancel` writes them.
        Ok(state) => Ok(serde_json::to_string(&CancelAnswer {
            task,
            state: state.as_str(),
        })
        .unwrap_or_default()),
        Err(error) => Err(Refusal::from_cancel_error(&error)),
    }
}

/// Installs the Prometheus recorder that `GET /metrics` renders. Call it before the hub is
/// made: the hub registers its metrics (`status_messenger::hub::metric_names`) when it is.
pub(crate) fn install_metrics() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))
}

/// The body of `GET /metrics`: the hub's counters recorded into the facade at this moment,
/// then rendered, so a scrape sees every status counted until it came.
pub(crate) fn render_metrics(hub: &Hub, prometheus: &PrometheusHandle) -> String {
    hub.record_metrics();
    prometheus.render()
}

/// The `Content-Type` of `GET /metrics`.
pub(crate) const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
