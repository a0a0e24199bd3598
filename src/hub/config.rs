//! What a hub is made with: [`HubConfig`] and its policies, [`ConfigError`], and the
//! truncation of over-long statuses.
//!
//! # Invariants
//!
//! A config that passed [`HubConfig::validate`](crate::HubConfig::validate) has every bound at least 1 (`task_capacity` and the running-task caps too), a TTL that fits in
//! `u64` milliseconds, a `max_status_bytes` longer than [`TRUNCATION_MARKER`] (so [`truncate`]
//! always has room to cut), and a valid [`NoSessionPolicy::Deliver`] id.

use std::fmt;
use std::time::Duration;

use super::SessionId;

/// Appended to a status cut to [`HubConfig::max_status_bytes`](crate::HubConfig::max_status_bytes).
///
/// # Examples
///
/// ```
/// use status_messenger::hub::TRUNCATION_MARKER;
/// use status_messenger::{Hub, HubConfig};
///
/// let mut config = HubConfig::default();
/// config.max_status_bytes = 32;
/// let hub = Hub::new(config).unwrap();
/// hub.publish(Some("s"), "x".repeat(100)).unwrap();
/// assert_eq!(hub.stats().truncated, 1);
/// assert!(TRUNCATION_MARKER.len() < 32);
/// ```
pub const TRUNCATION_MARKER: &str = "…[truncated]";

/// What the hub does with a status added outside any session.
///
/// # Examples
///
/// ```
/// use status_messenger::{Hub, HubConfig, NoSessionPolicy};
///
/// let mut config = HubConfig::default();
/// config.no_session = NoSessionPolicy::Deliver("lobby".to_owned());
/// let hub = Hub::new(config).unwrap();
/// assert_eq!(hub.publish(None, "server restarting soon").unwrap().seq(), Some(1));
/// assert_eq!(hub.stats().dropped_no_session, 0);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NoSessionPolicy {
    /// Deliver it nowhere; count it in [`HubStats::dropped_no_session`](crate::HubStats::dropped_no_session) and log a warning the
    /// first time.
    #[default]
    Drop,
    /// Route it to the session with this id, as if it had been added there.
    ///
    /// Every status that lost its session goes there, whoever's tool added it (a thread
    /// started without the session's context, say), so its readers may see what was meant for
    /// other users. With the endpoints' default authorization (the id in the query is the
    /// capability) anyone who knows the id reads it: give it an id nobody can guess, or refuse
    /// it in `web::Endpoints::authorize` to all but operators.
    Deliver(String),
}

/// When a session's history expires by age (see [`HubConfig::history_ttl`](crate::HubConfig::history_ttl)).
///
/// # Examples
///
/// ```
/// use status_messenger::hub::HistoryExpiry;
/// use status_messenger::HubConfig;
///
/// assert_eq!(HubConfig::default().history_expiry, HistoryExpiry::AfterLastStatus);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HistoryExpiry {
    /// The whole history leaves once `history_ttl` has passed since the session's last status,
    /// so a long-running task keeps its last `history_capacity` statuses until it has been quiet
    /// for `history_ttl`.
    #[default]
    AfterLastStatus,
    /// Each status leaves `history_ttl` after it was added.
    EachStatus,
}

/// Bounds and policies of a [`Hub`](crate::Hub). See the [module docs](crate::hub#choosing-the-bounds) on
/// choosing each bound.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use status_messenger::{Hub, HubConfig, NoSessionPolicy};
///
/// let config = HubConfig::default();
/// assert_eq!(config.history_capacity, 1000);
/// assert_eq!(config.history_ttl, Duration::from_secs(600));
/// assert_eq!(config.subscriber_buffer, 1000);
/// assert_eq!(config.max_status_bytes, 4096);
/// assert_eq!(config.max_sessions, 100_000);
/// assert_eq!(config.task_capacity, 100);
/// assert_eq!(config.max_running_tasks_per_session, 8);
/// assert_eq!(config.max_running_tasks, 256);
/// assert_eq!(config.no_session, NoSessionPolicy::Drop);
///
/// let mut small = HubConfig::default();
/// small.history_capacity = 50;
/// small.subscriber_buffer = 50;
/// assert!(Hub::new(small).is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubConfig {
    /// Statuses kept per session (at least 1; default 1,000).
    pub history_capacity: usize,
    /// How long history is kept (see [`history_expiry`](HubConfig::history_expiry)), and how
    /// long a session with no subscriber and no status lives before it is evicted (at least
    /// 1 ms; default 600 s). On Redis a longer one than 100 years acts as 100 years, as Redis
    /// refuses expiry times that pass its clock's range.
    pub history_ttl: Duration,
    /// Whether history expires as a whole after the last status (default) or status by status.
    pub history_expiry: HistoryExpiry,
    /// How many statuses one subscriber may be behind the newest before it is moved forward
    /// with a [`Gap`](crate::Gap) (at least 1; default 1,000).
    pub subscriber_buffer: usize,
    /// Longest status text in bytes; longer ones are cut at a char boundary and end with
    /// [`TRUNCATION_MARKER`] (more than the marker's length; default 4,096).
    pub max_status_bytes: usize,
    /// Most sessions held at once (at least 1; default 100,000); when it is reached, the
    /// sessions with no subscriber and no running task give way to new ones: in the in-memory
    /// hub those holding no statuses first, then the idle longest; on a shared backend, which
    /// keeps history in its store, the idle longest (see
    /// [Choosing the bounds](crate::hub#choosing-the-bounds)).
    pub max_sessions: usize,
    /// Tasks remembered per session (at least 1; default 100). A new task makes room by
    /// forgetting the oldest one that has ended; when every remembered task still runs, it is
    /// refused ([`StartTaskError::TooManyTasks`](crate::hub::StartTaskError::TooManyTasks)).
    /// Tasks are forgotten with their session.
    pub task_capacity: usize,
    /// Most tasks of one session running at once, in this process (at least 1; default 8): one
    /// more is refused with
    /// [`StartTaskError::SessionBusy`](crate::hub::StartTaskError::SessionBusy) (429 through
    /// `web::Refusal::from_start_task`) until one of them ends, so one visitor cannot take every thread the tools run on.
    pub max_running_tasks_per_session: usize,
    /// Most tasks running at once in this process, over all sessions (at least 1; default
    /// 256): one more is refused with
    /// [`StartTaskError::HubBusy`](crate::hub::StartTaskError::HubBusy) (503 through
    /// `web::Refusal::from_start_task`).
    /// Keep it under what the tools really run on: tokio's blocking pool has 512 threads by
    /// default (`max_blocking_threads`), actix-web's `web::block` pool fewer, and a task whose
    /// tool waits for a thread is running but silent.
    pub max_running_tasks: usize,
    /// What happens to statuses with no session (default [`NoSessionPolicy::Drop`](crate::NoSessionPolicy::Drop)).
    pub no_session: NoSessionPolicy,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            history_capacity: 1000,
            history_ttl: Duration::from_secs(600),
            history_expiry: HistoryExpiry::AfterLastStatus,
            subscriber_buffer: 1000,
            max_status_bytes: 4096,
            max_sessions: 100_000,
            task_capacity: 100,
            max_running_tasks_per_session: 8,
            max_running_tasks: 256,
            no_session: NoSessionPolicy::Drop,
        }
    }
}

impl HubConfig {
    /// Checks every field; [`Hub::new`](crate::Hub::new) does the same.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field that is out of range.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::HubConfig;
    ///
    /// let mut config = HubConfig::default();
    /// config.history_capacity = 0;
    /// assert_eq!(config.validate().unwrap_err().field(), "history_capacity");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |field, reason| {
            Err(ConfigError {
                config: "HubConfig",
                field,
                reason,
            })
        };
        if self.history_capacity == 0 {
            return fail("history_capacity", "must be at least 1");
        }
        if self.history_ttl < Duration::from_millis(1) {
            return fail("history_ttl", "must be at least 1 ms");
        }
        if u64::try_from(self.history_ttl.as_millis()).is_err() {
            return fail("history_ttl", "is too long");
        }
        if self.subscriber_buffer == 0 {
            return fail("subscriber_buffer", "must be at least 1");
        }
        if self.max_status_bytes <= TRUNCATION_MARKER.len() {
            return fail(
                "max_status_bytes",
                "must be longer than the truncation marker",
            );
        }
        if self.max_sessions == 0 {
            return fail("max_sessions", "must be at least 1");
        }
        if self.task_capacity == 0 {
            return fail("task_capacity", "must be at least 1");
        }
        if self.max_running_tasks_per_session == 0 {
            return fail("max_running_tasks_per_session", "must be at least 1");
        }
        if self.max_running_tasks == 0 {
            return fail("max_running_tasks", "must be at least 1");
        }
        if let NoSessionPolicy::Deliver(id) = &self.no_session {
            if SessionId::check_str(id).is_err() {
                return fail("no_session", "names an invalid session id");
            }
        }
        Ok(())
    }
}

/// A field of a hub's config out of range: which config ([`HubConfig`], or the `RedisConfig`
/// or `RedisClusterConfig` of a shared backend), which field and why.
///
/// # Examples
///
/// ```
/// use status_messenger::{Hub, HubConfig};
///
/// let mut config = HubConfig::default();
/// config.subscriber_buffer = 0;
/// let error = Hub::new(config).unwrap_err();
/// assert_eq!(error.config(), "HubConfig");
/// assert_eq!(error.field(), "subscriber_buffer");
/// assert_eq!(error.to_string(), "invalid hub config: subscriber_buffer must be at least 1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub(crate) config: &'static str,
    pub(crate) field: &'static str,
    pub(crate) reason: &'static str,
}

impl ConfigError {
    /// The name of the config type the field belongs to: `"HubConfig"`, `"RedisConfig"` or
    /// `"RedisClusterConfig"`.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut config = status_messenger::HubConfig::default();
    /// config.max_sessions = 0;
    /// assert_eq!(config.validate().unwrap_err().config(), "HubConfig");
    /// ```
    pub fn config(&self) -> &'static str {
        self.config
    }

    /// The name of the offending field of that config.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut config = status_messenger::HubConfig::default();
    /// config.max_status_bytes = 1;
    /// assert_eq!(config.validate().unwrap_err().field(), "max_status_bytes");
    /// ```
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// Why its value is refused.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut config = status_messenger::HubConfig::default();
    /// config.max_sessions = 0;
    /// assert_eq!(config.validate().unwrap_err().reason(), "must be at least 1");
    /// ```
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = match self.config {
            "RedisConfig" => "Redis config",
            "RedisClusterConfig" => "Redis Cluster config",
            _ => "hub config",
        };
        write!(f, "invalid {config}: {} {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Cuts `text` to at most `max` bytes at a char boundary, marked; whether it was cut.
///
/// `max` must be longer than [`TRUNCATION_MARKER`] (a validated config's is).
pub(crate) fn truncate(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    let mut cut = max.saturating_sub(TRUNCATION_MARKER.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(TRUNCATION_MARKER);
    true
}

/// Cuts `text` to at most `max` bytes at a char boundary, unmarked; whether it was cut.
pub(crate) fn cut_at_char_boundary(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    true
}
