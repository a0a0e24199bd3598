//! How to reach one Redis and ride out its absence ([`RedisConfig`]), why a hub could not be
//! made on it ([`ConnectError`]), and the settings the backend's tasks share.
//!
//! # Invariants
//!
//! - A config is checked whole before anything connects: [`RedisConfig::validate`] and
//!   `Hub::with_redis` run the same checks, and a cluster's config the same ones on the fields
//!   it shares (`Common`).
//! - `Settings` are made only from a checked config and a checked hub config, so the tasks
//!   never meet a zero buffer, an empty prefix or a backoff whose least exceeds its longest.

use std::fmt;
use std::time::Duration;

use super::wire::{self, Keys, Layout};
use crate::hub::{BackendError, ConfigError, HubConfig};

/// How to reach Redis and how to ride out its absence; for [`Hub::with_redis`](crate::Hub::with_redis).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use status_messenger::RedisConfig;
///
/// let mut config = RedisConfig::new("redis://127.0.0.1:6379/");
/// assert_eq!(config.key_prefix, "status-messenger");
/// assert_eq!(config.buffer_capacity, 100_000);
/// config.reconnect_max = Duration::from_secs(2);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisConfig {
    /// The Redis URL, e.g. `redis://host:6379/0` (`rediss://` is not supported by this build).
    pub url: String,
    /// Prefix of every key and channel, so several applications can share one Redis (not
    /// empty; default `status-messenger`).
    pub key_prefix: String,
    /// Statuses held while Redis is slow or away, counting those in flight; beyond it they are
    /// dropped and counted (at least 1; default 100,000).
    pub buffer_capacity: usize,
    /// First delay before reconnecting; it doubles with each failed attempt (at least 1 ms,
    /// at most `reconnect_max`; default 100 ms).
    pub reconnect_min: Duration,
    /// Longest delay between reconnect attempts (at least `reconnect_min`, at most a day;
    /// default 1 s): a Redis that comes back (or a replica that takes over) is noticed within
    /// about this long.
    pub reconnect_max: Duration,
    /// Longest wait for a connection or an answer before the connection counts as lost (at
    /// least 1 ms, at most a day; default 2 s).
    pub timeout: Duration,
    /// Longest a call that a request waits on may wait for Redis:
    /// [`Hub::open_session`](crate::Hub::open_session),
    /// [`Hub::session_exists`](crate::Hub::session_exists) and
    /// [`Hub::cancel_task`](crate::Hub::cancel_task), a wait for a connection and the command
    /// together (at least 1 ms, at most a day; default 250 ms). While the connection is known to be down (the
    /// last attempt to reconnect failed) they, and
    /// [`Hub::close_session`](crate::Hub::close_session), answer at once instead. Either way the
    /// error says when to try again
    /// ([`BackendError::retry_after`](crate::hub::BackendError::retry_after)), what a server
    /// answers as `Retry-After` with its 503. See [Faults](super#faults).
    pub request_timeout: Duration,
    /// Least time between the starts of two batches sent to Redis, unless a full batch is
    /// waiting: statuses that arrive meanwhile go in one script call per session group, so a
    /// steady trickle costs Redis one call per delay instead of one per status, for at most this
    /// much latency (at most 1 s; 0: send as soon as the previous batch is confirmed; default
    /// 1 ms). See [What a status costs Redis](super#what-a-status-costs-redis).
    pub batch_delay: Duration,
}

impl RedisConfig {
    /// The defaults, with `url`.
    ///
    /// # Examples
    ///
    /// ```
    /// let config = status_messenger::RedisConfig::new("redis://localhost/");
    /// assert_eq!(config.url, "redis://localhost/");
    /// assert_eq!(config.timeout, std::time::Duration::from_secs(2));
    /// assert_eq!(config.request_timeout, std::time::Duration::from_millis(250));
    /// assert_eq!(config.reconnect_max, std::time::Duration::from_secs(1));
    /// ```
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            key_prefix: "status-messenger".to_owned(),
            buffer_capacity: 100_000,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            request_timeout: Duration::from_millis(250),
            batch_delay: Duration::from_millis(1),
        }
    }

    /// Checks every field; [`Hub::with_redis`](crate::Hub::with_redis) does the same.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field that is out of range.
    ///
    /// # Examples
    ///
    /// ```
    /// let mut config = status_messenger::RedisConfig::new("not a url");
    /// assert_eq!(config.validate().unwrap_err().field(), "url");
    /// config.url = "redis://localhost/".to_owned();
    /// config.buffer_capacity = 0;
    /// assert_eq!(config.validate().unwrap_err().field(), "buffer_capacity");
    /// config.buffer_capacity = 1;
    /// config.request_timeout = std::time::Duration::MAX;
    /// let error = config.validate().unwrap_err();
    /// assert_eq!((error.config(), error.field()), ("RedisConfig", "request_timeout"));
    /// assert_eq!(error.to_string(), "invalid Redis config: request_timeout must be at most a day");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.client().map(drop)
    }

    pub(super) fn client(&self) -> Result<redis::Client, ConfigError> {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return Err(ConfigError {
                config: "RedisConfig",
                field: "url",
                reason: "is not a valid redis url",
            });
        };
        self.common().check()?;
        Ok(client)
    }

    pub(super) fn common(&self) -> Common<'_> {
        Common {
            config: "RedisConfig",
            key_prefix: &self.key_prefix,
            buffer_capacity: self.buffer_capacity,
            reconnect_min: self.reconnect_min,
            reconnect_max: self.reconnect_max,
            timeout: self.timeout,
            request_timeout: self.request_timeout,
            batch_delay: self.batch_delay,
        }
    }
}

/// What the configs of one Redis and of a cluster share, and its checks.
pub(super) struct Common<'a> {
    /// The name of the config these come from, for its errors.
    pub(super) config: &'static str,
    pub(super) key_prefix: &'a str,
    pub(super) buffer_capacity: usize,
    pub(super) reconnect_min: Duration,
    pub(super) reconnect_max: Duration,
    pub(super) timeout: Duration,
    pub(super) request_timeout: Duration,
    pub(super) batch_delay: Duration,
}

impl Common<'_> {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        let fail = |field, reason| {
            Err(ConfigError {
                config: self.config,
                field,
                reason,
            })
        };
        if self.key_prefix.is_empty() {
            return fail("key_prefix", "must not be empty");
        }
        if self.key_prefix.contains(['{', '}']) {
            return fail(
                "key_prefix",
                "must not contain `{` or `}` (they mark hash tags)",
            );
        }
        if self.buffer_capacity == 0 {
            return fail("buffer_capacity", "must be at least 1");
        }
        if self.reconnect_min < Duration::from_millis(1) {
            return fail("reconnect_min", "must be at least 1 ms");
        }
        if self.reconnect_max < self.reconnect_min {
            return fail("reconnect_max", "must be at least reconnect_min");
        }
        // Deadlines are the time now plus these (twice `timeout`): a day keeps them far from
        // an `Instant`'s end.
        let day = Duration::from_secs(24 * 60 * 60);
        if self.reconnect_max > day {
            return fail("reconnect_max", "must be at most a day");
        }
        if self.timeout < Duration::from_millis(1) {
            return fail("timeout", "must be at least 1 ms");
        }
        if self.timeout > day {
            return fail("timeout", "must be at most a day");
        }
        if self.request_timeout < Duration::from_millis(1) {
            return fail("request_timeout", "must be at least 1 ms");
        }
        if self.request_timeout > day {
            return fail("request_timeout", "must be at most a day");
        }
        if self.batch_delay > Duration::from_secs(1) {
            return fail("batch_delay", "must be at most 1 s");
        }
        Ok(())
    }

    /// The settings the tasks share, for a validated hub config.
    pub(super) fn settings(&self, config: &HubConfig, layout: Layout) -> Settings {
        let ttl_ms = u64::try_from(config.history_ttl.as_millis())
            .unwrap_or(u64::MAX)
            .min(LONGEST_TTL_MS);
        Settings {
            keys: Keys::new(self.key_prefix, layout),
            history_capacity: config.history_capacity,
            task_capacity: config.task_capacity,
            ttl_ms,
            buffer_capacity: self.buffer_capacity,
            batch: self.buffer_capacity.min(1024),
            batch_delay: self.batch_delay,
            reconnect_min: self.reconnect_min,
            reconnect_max: self.reconnect_max,
            timeout: self.timeout,
            request_timeout: self.request_timeout,
        }
    }
}

/// The longest history TTL given to Redis: Redis refuses a `PEXPIRE` whose time passes its
/// clock's range, and the scripts' numbers are Lua's doubles, exact only to 2^53.
const LONGEST_TTL_MS: u64 = 100 * 365 * 24 * 60 * 60 * 1000;

/// Validated settings the tasks share.
#[derive(Debug)]
pub(super) struct Settings {
    pub(super) keys: Keys,
    pub(super) history_capacity: usize,
    pub(super) task_capacity: usize,
    pub(super) ttl_ms: u64,
    pub(super) buffer_capacity: usize,
    /// Most items per batch.
    pub(super) batch: usize,
    pub(super) batch_delay: Duration,
    pub(super) reconnect_min: Duration,
    pub(super) reconnect_max: Duration,
    pub(super) timeout: Duration,
    pub(super) request_timeout: Duration,
}

impl Settings {
    /// The time to live every write gives a session's keys: 1.25 times the TTL. The writer
    /// renews them at most every quarter of the TTL, so they live at least the TTL after the
    /// last status; and since every write sets the same span from its own time, a later write
    /// (a task's change, a cancel, an open, a follower's touch) never shortens what an earlier
    /// one gave.
    pub(super) fn key_ttl_ms(&self) -> u64 {
        self.ttl_ms.saturating_add(self.ttl_ms / 4)
    }

    /// What an append call of `group` by `writer` carries besides its sessions.
    pub(super) fn call<'a>(
        &self,
        group: u32,
        writer: &'a str,
        token: u64,
        check: bool,
    ) -> wire::Call<'a> {
        wire::Call {
            group,
            writer,
            token,
            check,
            capacity: self.history_capacity,
            key_ttl_ms: self.key_ttl_ms(),
            task_ttl_ms: self.key_ttl_ms(),
            task_capacity: self.task_capacity,
        }
    }
}

/// Why [`Hub::with_redis`](crate::Hub::with_redis) could not make a hub.
///
/// # Examples
///
/// ```
/// use status_messenger::hub::redis::ConnectError;
/// use status_messenger::{Hub, HubConfig, RedisConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // Nothing listens on port 1.
/// let mut redis = RedisConfig::new("redis://127.0.0.1:1/");
/// redis.timeout = std::time::Duration::from_millis(200);
/// let Err(ConnectError::Backend(error)) = Hub::with_redis(HubConfig::default(), redis).await else {
///     panic!("connected to nothing?");
/// };
/// assert!(error.to_string().starts_with("redis: "));
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectError {
    /// A field of the [`HubConfig`] or the [`RedisConfig`] is out of range.
    Config(ConfigError),
    /// Redis did not answer within [`RedisConfig::timeout`].
    Backend(BackendError),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Config(error) => error.fmt(f),
            ConnectError::Backend(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Config(error) => Some(error),
            ConnectError::Backend(error) => Some(error),
        }
    }
}
