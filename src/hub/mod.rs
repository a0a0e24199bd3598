//! Per-session delivery: a hub with history, resume, bounded memory and signalled loss.
//!
//! A [`Hub`] consumes the `(session, text)` updates of a [`Messenger`](crate::Messenger) (or
//! any such stream) and routes each status to its session. Every session numbers its statuses
//! 1, 2, 3, ... in the order they were accepted and keeps the recent ones as history. A
//! [`Subscription`] is a `Stream` of one session's [`Event`]s: first what history holds after
//! the point it starts from, then live statuses, with no duplicate and no gap. Where it cannot
//! have a status (it left history, or the subscriber fell too far behind) it gets one
//! [`Gap`] naming exactly the missing numbers, and goes on.
//!
//! Instead of consuming the messenger's stream in a task, a hub can be
//! [`attach`](Hub::attach)ed to the messenger: each status is then published on the thread that
//! adds it, so none wait in the channel when many producers outpace one consumer.
//!
//! ```
//! use futures_util::StreamExt;
//! use status_messenger::{Event, Hub, HubConfig, Messenger, SessionContext};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let hub = Hub::new(HubConfig::default()).unwrap();
//! let messenger = Messenger::new();
//! tokio::spawn({
//!     let hub = hub.clone();
//!     let updates = messenger.stream();
//!     async move { hub.consume(updates).await }
//! });
//!
//! // Tool code, anywhere: it never sees the session id.
//! SessionContext::new("user-1").run(|| {
//!     messenger.add_status_message("Searching the web...");
//!     messenger.add_status_message("Reading 3 pages...");
//! });
//!
//! // The page connects late, yet gets both, numbered.
//! let mut page = hub.subscribe("user-1", None);
//! let Some(Event::Status(first)) = page.next().await else { panic!() };
//! let Some(Event::Status(second)) = page.next().await else { panic!() };
//! assert_eq!((first.seq, &*first.text), (1, "Searching the web..."));
//! assert_eq!((second.seq, &*second.text), (2, "Reading 3 pages..."));
//!
//! // After a reload it resumes after what it saw: nothing twice, nothing missing.
//! hub.publish(Some("user-1"), "Done");
//! let mut reloaded = hub.subscribe("user-1", Some(second.seq));
//! let Some(Event::Status(third)) = reloaded.next().await else { panic!() };
//! assert_eq!((third.seq, &*third.text), (3, "Done"));
//! # }
//! ```
//!
//! # How it works
//!
//! Each session holds one history ring of `(seq, time, Arc<str> text)` under a short lock.
//! Subscribers do not own copies: each keeps a cursor (the last number it has seen) and reads
//! the ring from there, a small batch per lock, and parks its waker in the session when it has
//! read everything. Publishing appends to the ring and wakes the parked subscribers. So a
//! subscriber that never reads costs a few words and never blocks anyone; publishing never
//! waits for a subscriber.
//!
//! # Choosing the bounds
//!
//! Every bound is a field of [`HubConfig`]; the defaults suit a web page that shows an agent's
//! progress and may reload or reconnect.
//!
//! - [`history_capacity`](HubConfig::history_capacity) (default 1,000): statuses kept per
//!   session. It is how far back a reconnecting page can resume without a gap, and the main
//!   memory cost: about 100 bytes per retained status of 40 bytes of text (32 bytes of ring
//!   slot plus the text's shared allocation), so `sessions x capacity x (~60 + text length)`
//!   bytes at worst. Take the longest run of statuses a client should be able to miss (a tool
//!   that reports 10 steps a second during a 30 s disconnect needs 300). Idle sessions do not
//!   pre-allocate: the ring grows with use.
//! - [`history_ttl`](HubConfig::history_ttl) (default 600 s): how long history is kept after a
//!   session's last status ([`history_expiry`](HubConfig::history_expiry) decides whether it
//!   leaves as a whole or status by status), and how long a session with no subscriber and no
//!   status lives before it is evicted. Take the longest time a user may be away and still
//!   expect to resume: a page reload takes seconds, a laptop lid a few minutes.
//! - [`subscriber_buffer`](HubConfig::subscriber_buffer) (default 1,000): how far one subscriber
//!   may fall behind the newest status before the hub moves it forward with a gap. It does not
//!   cost memory (subscribers read the shared history), it bounds how much old news a slow or
//!   stalled client must wade through before it sees the present; a value above
//!   `history_capacity` has no effect beyond it. It also bounds a fresh subscriber's replay, so
//!   keep it at least `history_capacity` if a late page should get the whole history.
//! - [`max_status_bytes`](HubConfig::max_status_bytes) (default 4,096): longer texts are cut at
//!   a char boundary and end with [`TRUNCATION_MARKER`], counted in [`HubStats::truncated`].
//!   It caps what one careless `add_status_message(whole_document)` costs in every session's
//!   history.
//! - [`max_sessions`](HubConfig::max_sessions) (default 100,000): sessions held at once; beyond
//!   it, statuses and subscribers for new sessions are refused and counted. Take the number of
//!   users active within `history_ttl`, with room to spare.
//! - [`no_session`](HubConfig::no_session) (default [`NoSessionPolicy::Drop`]): what happens to
//!   statuses added outside any session.
//!
//! # Counting
//!
//! Nothing is lost silently. [`Hub::stats`] returns every counter (plain atomics, cheap to read
//! at any time); with the cargo feature `metrics` the same counters also go through the
//! [`metrics`](https://docs.rs/metrics/0.24) facade under the names in [`metric_names`], so an
//! application's exporter sees them. The metrics are registered when the hub is created:
//! install the recorder first.

// # Invariants
//
// - Sequence numbers are per session and per life of a session: a closed or evicted session's
//   id starts again from 1. Within a life they only grow, and every number up to the session's
//   head is, for each subscriber, either delivered once or covered by exactly one gap
//   (`log` module).
// - Locks: shard map, then session state; neither is held across an await or while waking a
//   task (`session` module).
// - Statuses numbered outside this process (the Redis backend assigns the numbers) go into
//   the local log at their given numbers through `SessionLog::insert` and `skip_to` (the
//   `redis` module's `apply_remote`); a jump past `head + 1` is a hole that subscribers report
//   as a gap unless it is filled before they read past it. Local `publish` and the backend
//   never both number one hub's sessions.

mod counters;
mod log;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub mod redis;
mod session;
mod subscription;

use std::collections::HashMap;
use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::Duration;

use futures_core::Stream;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use self::counters::Counters;
#[cfg(feature = "redis")]
pub use self::redis::{BackendError, RedisConfig};
use self::session::{End, Session};
pub use self::subscription::Subscription;

/// Appended to a status cut to [`HubConfig::max_status_bytes`].
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
/// hub.publish(Some("s"), "x".repeat(100));
/// assert_eq!(hub.stats().truncated, 1);
/// assert!(TRUNCATION_MARKER.len() < 32);
/// ```
pub const TRUNCATION_MARKER: &str = "…[truncated]";

/// The longest session id the hub accepts, in bytes.
///
/// Valid ids are 1 to `MAX_SESSION_ID_BYTES` bytes long and contain no control character.
///
/// # Examples
///
/// ```
/// use status_messenger::hub::MAX_SESSION_ID_BYTES;
/// use status_messenger::Hub;
///
/// let hub = Hub::new(Default::default()).unwrap();
/// assert!(hub.publish(Some(&"a".repeat(MAX_SESSION_ID_BYTES)), "ok").is_some());
/// assert!(hub.publish(Some(&"a".repeat(MAX_SESSION_ID_BYTES + 1)), "no").is_none());
/// ```
pub const MAX_SESSION_ID_BYTES: usize = 256;

/// Names under which the `metrics` feature reports the hub's counters.
///
/// Counters end in `_total`; `sessions`, `subscribers` and `retained` are gauges. Drops are one
/// counter with a `reason` label: `no_session`, `closed`, `invalid_session`, `session_limit`
/// (the fields `dropped_*` of [`HubStats`]).
///
/// # Examples
///
/// ```
/// use status_messenger::hub::metric_names::*;
///
/// assert_eq!(DELIVERED, "status_messenger_hub_delivered_total");
/// // Every name is distinct, prefixed, and counters end in `_total`.
/// let counters = [ACCEPTED, DELIVERED, DROPPED, TRUNCATED, GAPS, LAGGED, EVICTED, BACKEND_ERRORS,
///     BACKEND_RECONNECTS];
/// let gauges = [SESSIONS, SUBSCRIBERS, RETAINED, BACKEND_BUFFERED];
/// assert!(counters.iter().all(|name| name.ends_with("_total")));
/// assert!(gauges.iter().all(|name| !name.ends_with("_total")));
/// let mut all: Vec<&str> = counters.iter().chain(&gauges).copied().collect();
/// assert!(all.iter().all(|name| name.starts_with("status_messenger_hub_")));
/// all.sort();
/// all.dedup();
/// assert_eq!(all.len(), counters.len() + gauges.len());
/// ```
pub mod metric_names {
    /// Gauge: sessions held now ([`HubStats::sessions`](super::HubStats::sessions)).
    pub const SESSIONS: &str = "status_messenger_hub_sessions";
    /// Gauge: live subscriptions ([`HubStats::subscribers`](super::HubStats::subscribers)).
    pub const SUBSCRIBERS: &str = "status_messenger_hub_subscribers";
    /// Gauge: statuses in history ([`HubStats::retained`](super::HubStats::retained)).
    pub const RETAINED: &str = "status_messenger_hub_retained";
    /// Counter: statuses accepted ([`HubStats::accepted`](super::HubStats::accepted)).
    pub const ACCEPTED: &str = "status_messenger_hub_accepted_total";
    /// Counter: statuses delivered ([`HubStats::delivered`](super::HubStats::delivered)).
    pub const DELIVERED: &str = "status_messenger_hub_delivered_total";
    /// Counter with label `reason`: statuses not accepted.
    pub const DROPPED: &str = "status_messenger_hub_dropped_total";
    /// Counter: statuses truncated ([`HubStats::truncated`](super::HubStats::truncated)).
    pub const TRUNCATED: &str = "status_messenger_hub_truncated_total";
    /// Counter: gap items emitted ([`HubStats::gaps`](super::HubStats::gaps)).
    pub const GAPS: &str = "status_messenger_hub_gaps_total";
    /// Counter: statuses covered by gaps ([`HubStats::lagged`](super::HubStats::lagged)).
    pub const LAGGED: &str = "status_messenger_hub_lagged_total";
    /// Counter: idle sessions evicted
    /// ([`HubStats::evicted_sessions`](super::HubStats::evicted_sessions)).
    pub const EVICTED: &str = "status_messenger_hub_evicted_sessions_total";
    /// Gauge: statuses waiting for Redis
    /// ([`HubStats::backend_buffered`](super::HubStats::backend_buffered)).
    pub const BACKEND_BUFFERED: &str = "status_messenger_hub_backend_buffered";
    /// Counter: failed Redis connections and commands
    /// ([`HubStats::backend_errors`](super::HubStats::backend_errors)).
    pub const BACKEND_ERRORS: &str = "status_messenger_hub_backend_errors_total";
    /// Counter: reconnections to Redis
    /// ([`HubStats::backend_reconnects`](super::HubStats::backend_reconnects)).
    pub const BACKEND_RECONNECTS: &str = "status_messenger_hub_backend_reconnects_total";
}

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
/// assert_eq!(hub.publish(None, "server restarting soon"), Some(1));
/// assert_eq!(hub.stats().dropped_no_session, 0);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NoSessionPolicy {
    /// Deliver it nowhere; count it in [`HubStats::dropped_no_session`] and log a warning the
    /// first time.
    #[default]
    Drop,
    /// Route it to the session with this id, as if it had been added there.
    Deliver(String),
}

/// When a session's history expires by age (see [`HubConfig::history_ttl`]).
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

/// Bounds and policies of a [`Hub`]. See the [module docs](self#choosing-the-bounds) on
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
    /// 1 ms; default 600 s).
    pub history_ttl: Duration,
    /// Whether history expires as a whole after the last status (default) or status by status.
    pub history_expiry: HistoryExpiry,
    /// How many statuses one subscriber may be behind the newest before it is moved forward
    /// with a [`Gap`] (at least 1; default 1,000).
    pub subscriber_buffer: usize,
    /// Longest status text in bytes; longer ones are cut at a char boundary and end with
    /// [`TRUNCATION_MARKER`] (more than the marker's length; default 4,096).
    pub max_status_bytes: usize,
    /// Most sessions held at once (at least 1; default 100,000).
    pub max_sessions: usize,
    /// What happens to statuses with no session (default [`NoSessionPolicy::Drop`]).
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
            no_session: NoSessionPolicy::Drop,
        }
    }
}

impl HubConfig {
    /// Checks every field; [`Hub::new`] does the same.
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
        let fail = |field, reason| Err(ConfigError { field, reason });
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
        if let NoSessionPolicy::Deliver(id) = &self.no_session {
            if !valid_session_id(id) {
                return fail("no_session", "names an invalid session id");
            }
        }
        Ok(())
    }
}

/// A [`HubConfig`] field out of range: which one and why.
///
/// # Examples
///
/// ```
/// use status_messenger::{Hub, HubConfig};
///
/// let mut config = HubConfig::default();
/// config.subscriber_buffer = 0;
/// let error = Hub::new(config).unwrap_err();
/// assert_eq!(error.field(), "subscriber_buffer");
/// assert_eq!(error.to_string(), "invalid hub config: subscriber_buffer must be at least 1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    reason: &'static str,
}

impl ConfigError {
    /// The name of the offending [`HubConfig`] field.
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
        write!(f, "invalid hub config: {} {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Why a hub operation failed.
///
/// # Examples
///
/// ```
/// use status_messenger::{Hub, HubError};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::new(Default::default()).unwrap();
/// let error = hub.open_session("bad\nid").await.unwrap_err();
/// assert!(matches!(error, HubError::InvalidSessionId));
/// assert_eq!(error.to_string(), "invalid session id");
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum HubError {
    /// The hub was shut down.
    ShutDown,
    /// The session id is empty, longer than [`MAX_SESSION_ID_BYTES`] or has a control
    /// character.
    InvalidSessionId,
    /// [`HubConfig::max_sessions`] sessions are held already.
    TooManySessions,
    /// A config given to [`Hub::with_redis`] is out of range.
    #[cfg(feature = "redis")]
    Config(ConfigError),
    /// Redis could not do it (unreachable, timed out or refused).
    #[cfg(feature = "redis")]
    Backend(BackendError),
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HubError::ShutDown => "the hub is shut down",
            HubError::InvalidSessionId => "invalid session id",
            HubError::TooManySessions => "too many sessions",
            #[cfg(feature = "redis")]
            HubError::Config(error) => return error.fmt(f),
            #[cfg(feature = "redis")]
            HubError::Backend(error) => return error.fmt(f),
        })
    }
}

impl std::error::Error for HubError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            #[cfg(feature = "redis")]
            HubError::Config(error) => Some(error),
            #[cfg(feature = "redis")]
            HubError::Backend(error) => Some(error),
            _ => None,
        }
    }
}

/// One item of a [`Subscription`].
///
/// # Examples
///
/// ```
/// use futures_util::StreamExt;
/// use status_messenger::{Event, Hub, HubConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let mut config = HubConfig::default();
/// config.history_capacity = 2;
/// let hub = Hub::new(config).unwrap();
/// for text in ["a", "b", "c"] {
///     hub.publish(Some("s"), text);
/// }
/// let mut sub = hub.subscribe("s", None);
/// // Status 1 left history: the subscriber is told, then gets the rest.
/// assert!(matches!(sub.next().await, Some(Event::Gap(g)) if (g.from, g.to) == (1, 1)));
/// assert_eq!(sub.next().await.and_then(|e| e.seq()), Some(2));
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A status, in order.
    Status(Status),
    /// Statuses this subscriber cannot have.
    Gap(Gap),
}

impl Event {
    /// The session of this item.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use status_messenger::{Event, Gap};
    ///
    /// let gap = Event::Gap(Gap { session: Arc::from("s"), from: 1, to: 2 });
    /// assert_eq!(gap.session(), "s");
    /// ```
    pub fn session(&self) -> &str {
        match self {
            Event::Status(status) => &status.session,
            Event::Gap(gap) => &gap.session,
        }
    }

    /// The status's number, or `None` for a gap.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use status_messenger::{Event, Status};
    ///
    /// let status = Event::Status(Status { session: Arc::from("s"), seq: 4, text: Arc::from("x") });
    /// assert_eq!(status.seq(), Some(4));
    /// ```
    pub fn seq(&self) -> Option<u64> {
        match self {
            Event::Status(status) => Some(status.seq),
            Event::Gap(_) => None,
        }
    }

    /// The last number this item accounts for: a status's `seq`, a gap's `to`. A client that
    /// remembers it can resume with [`Hub::subscribe`]`(session, Some(last))`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use status_messenger::{Event, Gap};
    ///
    /// let gap = Event::Gap(Gap { session: Arc::from("s"), from: 3, to: 9 });
    /// assert_eq!(gap.last_seq(), 9);
    /// ```
    pub fn last_seq(&self) -> u64 {
        match self {
            Event::Status(status) => status.seq,
            Event::Gap(gap) => gap.to,
        }
    }
}

/// One status of one session.
///
/// # Examples
///
/// ```
/// use futures_util::StreamExt;
/// use status_messenger::{Event, Hub};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::new(Default::default()).unwrap();
/// hub.publish(Some("s"), "one");
/// let Some(Event::Status(status)) = hub.subscribe("s", None).next().await else { panic!() };
/// assert_eq!((&*status.session, status.seq, &*status.text), ("s", 1, "one"));
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The session it belongs to.
    pub session: Arc<str>,
    /// Its number in the session: 1, 2, 3, ... in the order the statuses were accepted.
    pub seq: u64,
    /// The text (cut to [`HubConfig::max_status_bytes`]).
    pub text: Arc<str>,
}

/// Statuses `from..=to` of `session` are missing for this subscriber and cannot be delivered.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use status_messenger::Gap;
///
/// let gap = Gap { session: Arc::from("s"), from: 5, to: 7 };
/// assert_eq!(gap.len(), 3);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    /// The session.
    pub session: Arc<str>,
    /// The first missing number.
    pub from: u64,
    /// The last missing number (at least `from`).
    pub to: u64,
}

impl Gap {
    /// How many statuses are missing.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// let gap = status_messenger::Gap { session: Arc::from("s"), from: 2, to: 2 };
    /// assert_eq!(gap.len(), 1);
    /// ```
    #[allow(clippy::len_without_is_empty)] // a gap the hub hands out is never empty
    pub fn len(&self) -> u64 {
        // Fields are public: a hand-made `to < from` must not overflow.
        if self.to < self.from {
            0
        } else {
            (self.to - self.from).saturating_add(1)
        }
    }
}

/// The hub's counters at one moment; from [`Hub::stats`].
///
/// # Examples
///
/// ```
/// use status_messenger::Hub;
///
/// let hub = Hub::new(Default::default()).unwrap();
/// hub.publish(Some("s"), "kept");
/// hub.publish(None, "nowhere to go");
/// let stats = hub.stats();
/// assert_eq!((stats.sessions, stats.accepted, stats.retained), (1, 1, 1));
/// assert_eq!(stats.dropped_no_session, 1);
/// assert_eq!(stats.dropped(), 1);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct HubStats {
    /// Sessions held now.
    pub sessions: u64,
    /// Live subscriptions now.
    pub subscribers: u64,
    /// Statuses accepted (numbered and put in history).
    pub accepted: u64,
    /// Statuses handed to subscribers (each subscriber counts). Added per batch a subscriber
    /// has copied out of history, so it may trail by a few while one is half-way through a
    /// batch.
    pub delivered: u64,
    /// Statuses with no session, dropped by [`NoSessionPolicy::Drop`].
    pub dropped_no_session: u64,
    /// Statuses refused because the hub was shut down or their session was being closed.
    pub dropped_closed: u64,
    /// Statuses refused because their session id was invalid.
    pub dropped_invalid: u64,
    /// Statuses refused because they would have opened a session beyond
    /// [`HubConfig::max_sessions`].
    pub dropped_session_limit: u64,
    /// Statuses cut to [`HubConfig::max_status_bytes`] (accepted, and also counted there).
    pub truncated: u64,
    /// Gap items handed to subscribers.
    pub gaps: u64,
    /// Statuses covered by those gap items.
    pub lagged: u64,
    /// Sessions evicted after [`HubConfig::history_ttl`] with no subscriber and no status.
    pub evicted_sessions: u64,
    /// Statuses held in history now, over all sessions.
    pub retained: u64,
    /// Statuses dropped because the Redis buffer was full, or never confirmed by a Redis that
    /// lost its data (always 0 without the Redis backend).
    pub dropped_backend: u64,
    /// Statuses accepted and not yet confirmed by Redis, now.
    pub backend_buffered: u64,
    /// Failed Redis connections, connection losses and failed commands.
    pub backend_errors: u64,
    /// Reconnections to Redis after a loss (the writer's and the reader's connections count
    /// apiece).
    pub backend_reconnects: u64,
}

impl HubStats {
    /// Statuses not accepted, for every reason.
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// hub.publish(None, "a");
    /// hub.publish(Some(""), "b");
    /// assert_eq!(hub.stats().dropped(), 2);
    /// ```
    pub fn dropped(&self) -> u64 {
        self.dropped_no_session
            + self.dropped_closed
            + self.dropped_invalid
            + self.dropped_session_limit
            + self.dropped_backend
    }
}

fn valid_session_id(id: &str) -> bool {
    if id.is_empty() || id.len() > MAX_SESSION_ID_BYTES {
        return false;
    }
    if id.is_ascii() {
        // The usual hex or UUID id: a byte check is enough and cheaper than decoding chars.
        !id.bytes().any(|byte| byte.is_ascii_control())
    } else {
        !id.chars().any(char::is_control)
    }
}

/// Cuts `text` to at most `max` bytes at a char boundary, marked; whether it was cut.
fn truncate(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    let mut cut = max - TRUNCATION_MARKER.len();
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(TRUNCATION_MARKER);
    true
}

/// Milliseconds since the hub was created, on tokio's clock (so paused time applies).
#[derive(Debug)]
struct Clock {
    epoch: tokio::time::Instant,
}

impl Clock {
    fn now_ms(&self) -> u64 {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.epoch);
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    }
}

type Shard = Mutex<HashMap<Arc<str>, Arc<Session>>>;

const SHARDS: usize = 16;

/// Why a session could not be had.
enum Refusal {
    ShutDown,
    TooMany,
    Missing,
}

/// Warnings logged once per hub, so a flood of drops cannot flood the log.
#[derive(Debug, Default)]
struct Warned {
    no_session: AtomicBool,
    invalid: AtomicBool,
    limit: AtomicBool,
    truncated: AtomicBool,
}

fn first_time(flag: &AtomicBool) -> bool {
    !flag.swap(true, Ordering::Relaxed)
}

pub(crate) struct Inner {
    config: HubConfig,
    ttl_ms: u64,
    sweep_every_ms: u64,
    shards: Box<[Shard]>,
    clock: Clock,
    counters: Counters,
    shut_down: AtomicBool,
    /// Wakes consumers when the hub shuts down.
    stop: Notify,
    consumers: AtomicUsize,
    consumer_left: Notify,
    next_sweep_ms: AtomicU64,
    warned: Warned,
    /// The messenger that hands its messages straight to this hub ([`Hub::attach`]).
    attached: Mutex<Option<crate::Messenger>>,
    /// Set once by [`Hub::with_redis`]; sessions then live in Redis.
    #[cfg(feature = "redis")]
    backend: std::sync::OnceLock<self::redis::Backend>,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hub")
            .field("config", &self.config)
            .field("stats", &self.counters.snapshot())
            .field("shut_down", &self.shut_down.load(Ordering::Relaxed))
            .finish()
    }
}

fn lock_shard(shard: &Shard) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Session>>> {
    // Critical sections only insert, look up or remove; poisoning cannot leave a half-change.
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Routes statuses to per-session subscribers, with history, resume and signalled loss.
///
/// Cheap to clone (clones share one hub), `Send + Sync`, needs no runtime to create or to
/// [`publish`](Hub::publish) into. See the [module docs](self) for how it works and how to
/// choose its bounds. When its last clone is dropped it shuts down as by
/// [`shutdown`](Hub::shutdown): subscriptions get what was accepted, then end.
///
/// # Examples
///
/// ```
/// use futures_util::StreamExt;
/// use status_messenger::{Event, Hub, HubConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hub = Hub::new(HubConfig::default()).unwrap();
/// let mut tab1 = hub.subscribe("s1", None);
/// let mut tab2 = hub.subscribe("s1", None);
/// assert_eq!(hub.publish(Some("s1"), "working"), Some(1));
/// assert_eq!(hub.publish(Some("s2"), "elsewhere"), Some(1));
/// for tab in [&mut tab1, &mut tab2] {
///     let Some(Event::Status(status)) = tab.next().await else { panic!() };
///     assert_eq!((&*status.session, status.seq, &*status.text), ("s1", 1, "working"));
/// }
/// assert_eq!(hub.stats().delivered, 2);
/// # }
/// ```
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
    _handles: Arc<Handles>,
}

/// Shared by every clone of one [`Hub`] (subscriptions hold only `Inner`): when the last clone
/// goes, nobody can publish any more, so the hub shuts down and its streams end.
struct Handles {
    inner: Arc<Inner>,
}

impl Drop for Handles {
    fn drop(&mut self) {
        self.inner.close_all();
    }
}

impl fmt::Debug for Hub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl Hub {
    /// Creates a hub with `config`. Needs no runtime.
    ///
    /// With the `metrics` feature, the hub's metrics are registered with the recorder installed
    /// at this moment.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when a field is out of range (see [`HubConfig::validate`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::{Hub, HubConfig};
    ///
    /// let hub = Hub::new(HubConfig::default()).unwrap();
    /// assert_eq!(hub.stats().sessions, 0);
    ///
    /// let mut bad = HubConfig::default();
    /// bad.history_ttl = std::time::Duration::ZERO;
    /// assert_eq!(Hub::new(bad).unwrap_err().field(), "history_ttl");
    /// ```
    pub fn new(config: HubConfig) -> Result<Hub, ConfigError> {
        config.validate()?;
        let ttl_ms = u64::try_from(config.history_ttl.as_millis()).unwrap_or(u64::MAX);
        // Sweeping a quarter of the TTL apart evicts within 1.25 TTL, and a minute apart at
        // most keeps a long TTL from holding dead sessions much longer than it says.
        let sweep_every_ms = (ttl_ms / 4).clamp(1, 60_000);
        let inner = Arc::new(Inner {
            config,
            ttl_ms,
            sweep_every_ms,
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            clock: Clock {
                epoch: tokio::time::Instant::now(),
            },
            counters: Counters::new(),
            shut_down: AtomicBool::new(false),
            stop: Notify::new(),
            consumers: AtomicUsize::new(0),
            consumer_left: Notify::new(),
            next_sweep_ms: AtomicU64::new(sweep_every_ms),
            warned: Warned::default(),
            attached: Mutex::new(None),
            #[cfg(feature = "redis")]
            backend: std::sync::OnceLock::new(),
        });
        Ok(Hub {
            _handles: Arc::new(Handles {
                inner: Arc::clone(&inner),
            }),
            inner,
        })
    }

    /// The configuration this hub was created with.
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// assert_eq!(hub.config().history_capacity, 1000);
    /// ```
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// Routes one update now (what the consumer does per item). Returns the seq given, or
    /// `None` when it was not accepted -- counted either way.
    ///
    /// A status with no session follows [`HubConfig::no_session`]. A status whose session does
    /// not exist yet opens it. Not accepted (and counted in [`HubStats`]): no session under
    /// [`NoSessionPolicy::Drop`], an invalid session id, a new session beyond
    /// [`HubConfig::max_sessions`], a session being closed, or a hub that is shut down. Never
    /// blocks on a subscriber, never panics; works without a runtime.
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// assert_eq!(hub.publish(Some("s1"), "a"), Some(1));
    /// assert_eq!(hub.publish(Some("s1"), "b"), Some(2));
    /// assert_eq!(hub.publish(Some("s2"), "c"), Some(1));
    /// assert_eq!(hub.publish(None, "dropped by default"), None);
    /// assert_eq!(hub.stats().accepted, 3);
    /// ```
    pub fn publish(&self, session: Option<&str>, text: impl Into<String>) -> Option<u64> {
        self.inner.publish(session, text.into())
    }

    /// Drives a stream of updates into the hub until it ends or the hub shuts down.
    ///
    /// Each `(session, text)` is [`publish`](Hub::publish)ed in order. When the hub shuts down,
    /// this stops taking items at once and returns; what the stream still holds stays in it (a
    /// [`StatusStream`](crate::StatusStream) gives its receiver back to the messenger when
    /// dropped). Idle sessions are swept as it goes. It holds no lock across an await.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::Hub;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new(Default::default()).unwrap();
    /// let updates = futures_util::stream::iter(vec![
    ///     (Some("s1".to_owned()), "a".to_owned()),
    ///     (None, "b".to_owned()),
    /// ]);
    /// hub.consume(updates).await;
    /// let stats = hub.stats();
    /// assert_eq!((stats.accepted, stats.dropped_no_session), (1, 1));
    /// # }
    /// ```
    pub async fn consume<S>(&self, updates: S)
    where
        S: Stream<Item = (Option<String>, String)> + Send,
    {
        let inner = &*self.inner;
        let _consumer = ConsumerGuard::enter(inner);
        let mut stop = pin!(inner.stop.notified());
        stop.as_mut().enable();
        let mut updates = pin!(updates);
        let mut taken: u64 = 0;
        loop {
            let next = poll_fn(|cx| {
                if inner.shut_down.load(Ordering::Acquire) || stop.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                updates.as_mut().poll_next(cx).map(|item| item.map(Some))
            })
            .await;
            match next {
                Some(Some((session, text))) => {
                    self.publish(session.as_deref(), text);
                    taken += 1;
                    // A stream that is always ready must not starve the subscribers' tasks.
                    if taken % 256 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                // The stream ended, or the hub shut down.
                Some(None) | None => return,
            }
        }
    }

    /// Spawns [`consume`](Hub::consume) of the global messenger's
    /// [`stream_status_updates`](crate::stream_status_updates) on the current runtime, after
    /// [`setup_status_messenger_async`](crate::setup_status_messenger_async).
    ///
    /// If another consumer holds the global stream, the spawned task ends at once (logged).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as `tokio::spawn` does;
    /// [`try_spawn_global_consumer`](Hub::try_spawn_global_consumer) returns an error instead.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use status_messenger::{add_status_message, with_session_id, Event, Hub};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new(Default::default()).unwrap();
    /// let consumer = hub.spawn_global_consumer();
    /// let mut page = hub.subscribe("user-7", None);
    /// with_session_id("user-7", async { add_status_message("Thinking...") }).await;
    /// let Some(Event::Status(status)) = page.next().await else { panic!() };
    /// assert_eq!(&*status.text, "Thinking...");
    /// hub.shutdown().await;
    /// consumer.await.unwrap();
    /// # }
    /// ```
    pub fn spawn_global_consumer(&self) -> JoinHandle<()> {
        let updates = crate::setup_status_messenger_async().stream();
        let hub = self.clone();
        tokio::spawn(async move { hub.consume(updates).await })
    }

    /// Like [`spawn_global_consumer`](Hub::spawn_global_consumer), but returns an error instead
    /// of panicking outside a runtime.
    ///
    /// # Errors
    ///
    /// [`SpawnError::NoRuntime`](crate::SpawnError::NoRuntime) when no tokio runtime is running
    /// on this thread.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::{Hub, SpawnError};
    ///
    /// let hub = Hub::new(Default::default()).unwrap();
    /// assert_eq!(hub.try_spawn_global_consumer().unwrap_err(), SpawnError::NoRuntime);
    /// ```
    pub fn try_spawn_global_consumer(&self) -> Result<JoinHandle<()>, crate::SpawnError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| crate::SpawnError::NoRuntime)?;
        let updates = crate::setup_status_messenger_async().stream();
        let hub = self.clone();
        Ok(runtime.spawn(async move { hub.consume(updates).await }))
    }

    /// Makes `messenger` hand every message straight to this hub, on the sender's own thread,
    /// instead of through its channel and a consuming task.
    ///
    /// What already waits in the channel is published first, in order. From then on
    /// [`add_status_message`](crate::Messenger::add_status_message) publishes as
    /// [`publish`](Hub::publish) does: no message waits in an unbounded channel, and no task has
    /// to be woken and scheduled before a subscriber is, which saves memory and latency when
    /// producers outpace a single consumer. The sender pays the publish (a few short locks,
    /// never an await). The hub holds the messenger's stream meanwhile, so no other consumer can
    /// take it; when the hub shuts down (or its last clone is dropped) messages go to the
    /// channel again and wait for the next consumer, as with [`consume`](Hub::consume).
    ///
    /// # Errors
    ///
    /// [`StreamError::AlreadyConsumed`](crate::StreamError::AlreadyConsumed) while a stream
    /// consumes the messenger (or another hub is attached to it).
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::{Hub, Messenger, SessionContext};
    ///
    /// let messenger = Messenger::new();
    /// messenger.send(Some("s1".to_owned()), "queued before");
    /// let hub = Hub::new(Default::default()).unwrap();
    /// hub.attach(&messenger).unwrap();
    /// assert!(messenger.is_direct());
    /// SessionContext::new("s1").run(|| messenger.add_status_message("straight in"));
    /// let stats = hub.stats();
    /// assert_eq!((stats.accepted, stats.sessions), (2, 1));
    /// assert!(hub.attach(&messenger).is_err());
    /// ```
    pub fn attach(&self, messenger: &crate::Messenger) -> Result<(), crate::StreamError> {
        let inner = Arc::clone(&self.inner);
        messenger.set_direct(Box::new(move |session, text| {
            if inner.shut_down.load(Ordering::Acquire) {
                // Being detached: the channel keeps it for the next consumer.
                return Err(text);
            }
            inner.publish(session, text);
            Ok(())
        }))?;
        let previous = self
            .inner
            .attached
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(messenger.clone());
        if let Some(previous) = previous {
            previous.clear_direct();
        }
        // A shutdown that ran before the line above found nothing to detach.
        if self.inner.shut_down.load(Ordering::Acquire) {
            let attached = self
                .inner
                .attached
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(messenger) = attached {
                messenger.clear_direct();
            }
        }
        Ok(())
    }

    /// [`attach`](Hub::attach)es the global messenger, after
    /// [`setup_status_messenger_async`](crate::setup_status_messenger_async): the alternative
    /// to [`spawn_global_consumer`](Hub::spawn_global_consumer) that needs no task.
    ///
    /// # Errors
    ///
    /// As [`attach`](Hub::attach).
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::{add_status_message, with_session_id, Hub};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new(Default::default()).unwrap();
    /// hub.attach_global().unwrap();
    /// with_session_id("s1", async { add_status_message("hello") }).await;
    /// assert_eq!(hub.stats().accepted, 1);
    /// hub.shutdown().await;
    /// assert!(!status_messenger::global_messenger().unwrap().is_direct());
    /// # }
    /// ```
    pub fn attach_global(&self) -> Result<(), crate::StreamError> {
        self.attach(crate::setup_status_messenger_async())
    }

    /// Registers a session id (server-issued). Sessions are also created implicitly by their
    /// first status or subscriber; opening one that exists only marks it active.
    ///
    /// # Errors
    ///
    /// [`HubError::InvalidSessionId`], [`HubError::TooManySessions`], [`HubError::ShutDown`].
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::Hub;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new(Default::default()).unwrap();
    /// assert!(!hub.session_exists("s1").await.unwrap());
    /// hub.open_session("s1").await.unwrap();
    /// assert!(hub.session_exists("s1").await.unwrap());
    /// # }
    /// ```
    pub async fn open_session(&self, id: &str) -> Result<(), HubError> {
        if !valid_session_id(id) {
            return Err(HubError::InvalidSessionId);
        }
        let inner = &*self.inner;
        #[cfg(feature = "redis")]
        if let Some(backend) = inner.backend.get() {
            if inner.shut_down.load(Ordering::Acquire) {
                return Err(HubError::ShutDown);
            }
            return backend.open_session(id).await;
        }
        let now = inner.clock.now_ms();
        inner.maybe_sweep(now);
        match inner.session(id, now, true, false) {
            Ok(_) => Ok(()),
            Err(refusal) => Err(refusal.into_error()),
        }
    }

    /// Whether the session is held now (opened, or used by a status or a subscriber, and not
    /// closed or evicted since). A session idle past its time to live is evicted here at once.
    ///
    /// # Errors
    ///
    /// [`HubError::InvalidSessionId`]. After shutdown every session is gone: `Ok(false)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::{Hub, HubError};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new(Default::default()).unwrap();
    /// hub.publish(Some("s1"), "hi");
    /// assert!(hub.session_exists("s1").await.unwrap());
    /// assert!(!hub.session_exists("s2").await.unwrap());
    /// assert!(matches!(hub.session_exists("").await, Err(HubError::InvalidSessionId)));
    /// # }
    /// ```
    pub async fn session_exists(&self, id: &str) -> Result<bool, HubError> {
        if !valid_session_id(id) {
            return Err(HubError::InvalidSessionId);
        }
        let inner = &*self.inner;
        #[cfg(feature = "redis")]
        if let Some(backend) = inner.backend.get() {
            if inner.shut_down.load(Ordering::Acquire) {
                return Ok(false);
            }
            return backend.session_exists(id).await;
        }
        let now = inner.clock.now_ms();
        inner.maybe_sweep(now);
        match inner.session(id, now, false, false) {
            Ok(_) => Ok(true),
            Err(_) => Ok(false),
        }
    }

    /// Statuses with seq > `after` (`None` = from the start, i.e. after 0): first what history
    /// still holds (a [`Gap`] first for what it no longer holds), then live ones; no duplicate,
    /// no gap.
    ///
    /// Subscribing is atomic with respect to concurrent publishing: the subscription reads the
    /// session's numbered history from its cursor, so each status is either delivered once or
    /// reported in a gap. A session that does not exist is opened. When the id is invalid, the
    /// session limit is reached or the hub is shut down, the subscription ends at once (logged);
    /// [`try_subscribe`](Hub::try_subscribe) says why.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use status_messenger::{Event, Hub};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new(Default::default()).unwrap();
    /// for text in ["one", "two", "three"] {
    ///     hub.publish(Some("s"), text);
    /// }
    /// let mut resumed = hub.subscribe("s", Some(1));
    /// assert_eq!(resumed.next().await.and_then(|e| e.seq()), Some(2));
    /// assert_eq!(resumed.next().await.and_then(|e| e.seq()), Some(3));
    /// # }
    /// ```
    pub fn subscribe(&self, session: &str, after: Option<u64>) -> Subscription {
        self.try_subscribe(session, after).unwrap_or_else(|error| {
            tracing::warn!(
                target: "status_messenger::hub",
                %error,
                "subscription refused; it ends at once"
            );
            let id = valid_session_id(session).then(|| Arc::from(session));
            Subscription::ended(id, after.unwrap_or(0))
        })
    }

    /// Like [`subscribe`](Hub::subscribe), but says why a subscription cannot be had.
    ///
    /// # Errors
    ///
    /// [`HubError::InvalidSessionId`], [`HubError::TooManySessions`], [`HubError::ShutDown`].
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::{Hub, HubError};
    ///
    /// let hub = Hub::new(Default::default()).unwrap();
    /// assert!(hub.try_subscribe("s", None).is_ok());
    /// assert!(matches!(hub.try_subscribe("", None), Err(HubError::InvalidSessionId)));
    /// ```
    pub fn try_subscribe(
        &self,
        session: &str,
        after: Option<u64>,
    ) -> Result<Subscription, HubError> {
        if !valid_session_id(session) {
            return Err(HubError::InvalidSessionId);
        }
        let inner = &self.inner;
        let now = inner.clock.now_ms();
        inner.maybe_sweep(now);
        let found = inner
            .session(session, now, true, true)
            .map_err(Refusal::into_error)?;
        inner.counters.subscribers.add(1);
        #[cfg(feature = "redis")]
        if let Some(backend) = inner.backend.get() {
            backend.interest(&found.id);
        }
        Ok(Subscription::join(
            Arc::clone(inner),
            found,
            after.unwrap_or(0),
        ))
    }

    /// Ends the session: its subscribers get what it had accepted, then their streams end
    /// cleanly; its history goes (once they have read it). Returns whether it existed. A later
    /// status or subscriber for the same id opens a new session, numbered from 1.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use status_messenger::Hub;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new(Default::default()).unwrap();
    /// let mut sub = hub.subscribe("s", None);
    /// hub.publish(Some("s"), "last words");
    /// assert!(hub.close_session("s"));
    /// assert_eq!(sub.next().await.and_then(|e| e.seq()), Some(1));
    /// assert_eq!(sub.next().await, None);
    /// assert!(!hub.close_session("s"));
    /// # }
    /// ```
    pub fn close_session(&self, id: &str) -> bool {
        let inner = &*self.inner;
        // With Redis the session may live in other processes only: the close is sent there.
        #[cfg(feature = "redis")]
        let sent = match inner.backend.get() {
            Some(backend) if valid_session_id(id) && !inner.shut_down.load(Ordering::Acquire) => {
                backend.close(id);
                true
            }
            _ => false,
        };
        #[cfg(not(feature = "redis"))]
        let sent = false;
        let removed = lock_shard(inner.shard(id)).remove(id);
        match removed {
            Some(session) => {
                inner.counters.sessions.sub(1);
                inner.end_session(&session, End::Closed);
                true
            }
            None => sent,
        }
    }

    /// Evicts every session that has had no subscriber and no status for
    /// [`HubConfig::history_ttl`], and drops expired history; returns how many sessions were
    /// evicted. The hub also does this by itself as it is used; call it to free memory at a
    /// time of your choosing.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use status_messenger::{Hub, HubConfig};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let mut config = HubConfig::default();
    /// config.history_ttl = Duration::from_secs(60);
    /// let hub = Hub::new(config).unwrap();
    /// hub.publish(Some("s"), "hi");
    /// tokio::time::advance(Duration::from_secs(61)).await;
    /// assert_eq!(hub.evict_idle(), 1);
    /// assert_eq!(hub.stats().sessions, 0);
    /// # }
    /// ```
    pub fn evict_idle(&self) -> usize {
        let inner = &*self.inner;
        let now = inner.clock.now_ms();
        inner
            .next_sweep_ms
            .store(now.saturating_add(inner.sweep_every_ms), Ordering::Relaxed);
        inner.sweep(now)
    }

    /// The hub's counters now: a few atomic loads, cheap at any time.
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// let _sub = hub.subscribe("s", None);
    /// let stats = hub.stats();
    /// assert_eq!((stats.sessions, stats.subscribers), (1, 1));
    /// ```
    pub fn stats(&self) -> HubStats {
        self.inner.counters.snapshot()
    }

    /// Whether [`shutdown`](Hub::shutdown) has been called.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// assert!(!hub.is_shut_down());
    /// hub.shutdown().await;
    /// assert!(hub.is_shut_down());
    /// # }
    /// ```
    pub fn is_shut_down(&self) -> bool {
        self.inner.shut_down.load(Ordering::Acquire)
    }

    /// Stops accepting, delivers what was accepted to live subscribers, then ends all streams.
    ///
    /// From the call on, [`publish`](Hub::publish) refuses (counted in
    /// [`HubStats::dropped_closed`]), running [`consume`](Hub::consume) calls return, and every
    /// session is closed: each subscriber still gets the statuses accepted before, then its
    /// stream ends. Returns once every consumer has returned; it does not wait for subscribers
    /// to read (one that never reads would hold it forever). Calling it again does nothing more.
    ///
    /// # Examples
    ///
    /// ```
    /// use futures_util::StreamExt;
    /// use status_messenger::Hub;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let hub = Hub::new(Default::default()).unwrap();
    /// let mut sub = hub.subscribe("s", None);
    /// hub.publish(Some("s"), "accepted before");
    /// hub.shutdown().await;
    /// assert_eq!(hub.publish(Some("s"), "too late"), None);
    /// assert_eq!(sub.next().await.and_then(|e| e.seq()), Some(1));
    /// assert_eq!(sub.next().await, None);
    /// # }
    /// ```
    pub async fn shutdown(&self) {
        let inner = &*self.inner;
        if inner.stop_accepting() {
            // Statuses already accepted for Redis go out before the streams end.
            #[cfg(feature = "redis")]
            if let Some(backend) = inner.backend.get() {
                backend.shutdown(inner).await;
            }
            inner.close_sessions();
        }
        loop {
            let left = inner.consumer_left.notified();
            let mut left = pin!(left);
            left.as_mut().enable();
            if inner.consumers.load(Ordering::Acquire) == 0 {
                return;
            }
            left.await;
        }
    }
}

/// Counts a running `consume`, so `shutdown` can wait for it, even if it is cancelled.
struct ConsumerGuard<'a> {
    inner: &'a Inner,
}

impl<'a> ConsumerGuard<'a> {
    fn enter(inner: &'a Inner) -> Self {
        inner.consumers.fetch_add(1, Ordering::AcqRel);
        Self { inner }
    }
}

impl Drop for ConsumerGuard<'_> {
    fn drop(&mut self) {
        self.inner.consumers.fetch_sub(1, Ordering::AcqRel);
        self.inner.consumer_left.notify_waiters();
    }
}

impl Refusal {
    fn into_error(self) -> HubError {
        match self {
            Refusal::ShutDown => HubError::ShutDown,
            Refusal::TooMany => HubError::TooManySessions,
            // Only asked for when creating is allowed, so this is a shut-down race at worst.
            Refusal::Missing => HubError::ShutDown,
        }
    }
}

impl Inner {
    fn publish(&self, session: Option<&str>, text: String) -> Option<u64> {
        let inner = self;
        let counters = &inner.counters;
        if inner.shut_down.load(Ordering::Acquire) {
            counters.dropped_closed.add(1);
            tracing::debug!(target: "status_messenger::hub", "hub shut down; status dropped");
            return None;
        }
        let id = match (session, &inner.config.no_session) {
            (Some(id), _) => id,
            (None, NoSessionPolicy::Deliver(id)) => id.as_str(),
            (None, NoSessionPolicy::Drop) => {
                counters.dropped_no_session.add(1);
                if first_time(&inner.warned.no_session) {
                    tracing::warn!(
                        target: "status_messenger::hub",
                        "status with no session dropped (no_session policy Drop; \
                         every one is counted in HubStats::dropped_no_session, warned once)"
                    );
                }
                return None;
            }
        };
        if !valid_session_id(id) {
            counters.dropped_invalid.add(1);
            if first_time(&inner.warned.invalid) {
                tracing::warn!(
                    target: "status_messenger::hub",
                    "status for an invalid session id dropped (counted in \
                     HubStats::dropped_invalid, warned once)"
                );
            }
            return None;
        }
        let mut text = text;
        if truncate(&mut text, inner.config.max_status_bytes) {
            counters.truncated.add(1);
            if first_time(&inner.warned.truncated) {
                tracing::warn!(
                    target: "status_messenger::hub",
                    max_status_bytes = inner.config.max_status_bytes,
                    "status longer than max_status_bytes truncated (counted in \
                     HubStats::truncated, warned once)"
                );
            }
        }
        let text: Arc<str> = Arc::from(text);
        let now = inner.clock.now_ms();
        inner.maybe_sweep(now);
        #[cfg(feature = "redis")]
        if let Some(backend) = inner.backend.get() {
            return backend.publish(inner, id, text);
        }
        // An eviction can only win against this publish when the TTL is shorter than the time
        // between looking the session up and locking it; then the next attempt opens it anew.
        for _ in 0..3 {
            let session = match inner.session(id, now, true, false) {
                Ok(session) => session,
                Err(refusal) => {
                    inner.count_refusal(&refusal);
                    return None;
                }
            };
            let mut state = session.lock();
            match state.end {
                Some(End::Evicted) => continue,
                Some(End::Closed) => {
                    drop(state);
                    counters.dropped_closed.add(1);
                    tracing::debug!(
                        target: "status_messenger::hub",
                        session = %session.id,
                        "session closed; status dropped"
                    );
                    return None;
                }
                None => {}
            }
            // Expire first: a status arriving after a quiet spell must not revive old history.
            let mut removed = inner.trim(&mut state.log, now);
            let seq = state.log.append(Arc::clone(&text), now);
            removed += inner.trim(&mut state.log, now);
            let wake = state.take_wakers();
            drop(state);
            counters.accepted.add(1);
            counters.retained.add(1);
            counters.retained.sub(removed);
            wake.wake();
            return Some(seq);
        }
        counters.dropped_closed.add(1);
        None
    }

    /// Stops accepting and closes every session (what `shutdown` does without waiting).
    fn close_all(&self) {
        if self.stop_accepting() {
            #[cfg(feature = "redis")]
            if let Some(backend) = self.backend.get() {
                backend.stop();
            }
            self.close_sessions();
        }
    }

    /// Refuses statuses from now on and stops the consumers; `false` if it was done before.
    fn stop_accepting(&self) -> bool {
        if self.shut_down.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.stop.notify_waiters();
        // Messages sent from now on wait in the channel for the next consumer.
        let attached = self
            .attached
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(messenger) = attached {
            messenger.clear_direct();
        }
        true
    }

    fn close_sessions(&self) {
        for shard in self.shards.iter() {
            let sessions: Vec<_> = lock_shard(shard).drain().map(|(_, s)| s).collect();
            self.counters.sessions.sub(sessions.len() as u64);
            for session in sessions {
                self.end_session(&session, End::Closed);
            }
        }
        tracing::debug!(target: "status_messenger::hub", "hub shut down");
    }

    fn shard(&self, id: &str) -> &Shard {
        // FNV-1a: cheap, and it only spreads lock contention; each map hashes with SipHash.
        let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
        &self.shards[(hash % self.shards.len() as u64) as usize]
    }

    fn idle_expired(&self, session: &Session, now: u64) -> bool {
        session.subscribers.load(Ordering::Acquire) == 0
            && now.saturating_sub(session.last_activity_ms.load(Ordering::Relaxed)) >= self.ttl_ms
    }

    /// Finds (or, with `create`, opens) the session `id` and marks it active; with `subscribe`
    /// also counts a subscriber in it. Evicts it first if it has been idle past its TTL.
    fn session(
        &self,
        id: &str,
        now: u64,
        create: bool,
        subscribe: bool,
    ) -> Result<Arc<Session>, Refusal> {
        let mut map = lock_shard(self.shard(id));
        // Checked under the shard lock: `shutdown` sets the flag before draining the shards,
        // so no session can be opened behind its back.
        if self.shut_down.load(Ordering::Acquire) {
            return Err(Refusal::ShutDown);
        }
        let mut expired = None;
        if let Some(session) = map.get(id) {
            if self.idle_expired(session, now) {
                expired = map.remove(id);
            } else {
                if create {
                    // Opening, publishing and subscribing keep a session alive; looking does not.
                    session.last_activity_ms.fetch_max(now, Ordering::Relaxed);
                }
                if subscribe {
                    session.subscribers.fetch_add(1, Ordering::AcqRel);
                }
                return Ok(Arc::clone(session));
            }
        }
        let result = if !create {
            Err(Refusal::Missing)
        } else if self.counters.sessions.get() >= self.config.max_sessions as u64 {
            Err(Refusal::TooMany)
        } else {
            let session = Arc::new(Session::new(Arc::from(id), now));
            if subscribe {
                session.subscribers.store(1, Ordering::Release);
            }
            map.insert(Arc::clone(&session.id), Arc::clone(&session));
            self.counters.sessions.add(1);
            Ok(session)
        };
        drop(map);
        if let Some(session) = expired {
            self.counters.sessions.sub(1);
            self.evict(&session);
        }
        result
    }

    fn count_refusal(&self, refusal: &Refusal) {
        match refusal {
            Refusal::ShutDown | Refusal::Missing => self.counters.dropped_closed.add(1),
            Refusal::TooMany => {
                self.counters.dropped_session_limit.add(1);
                if first_time(&self.warned.limit) {
                    tracing::warn!(
                        target: "status_messenger::hub",
                        max_sessions = self.config.max_sessions,
                        "session limit reached; statuses for new sessions are dropped \
                         (counted in HubStats::dropped_session_limit, warned once)"
                    );
                }
            }
        }
    }

    /// Ends a session already removed from its shard.
    fn end_session(&self, session: &Session, end: End) {
        let (freed, wake) = {
            let mut state = session.lock();
            if state.end.is_some() {
                return;
            }
            state.end = Some(end);
            let freed = if state.members() == 0 {
                state.log.clear()
            } else {
                0
            };
            (freed, state.take_wakers())
        };
        self.counters.retained.sub(freed);
        wake.wake();
    }

    fn evict(&self, session: &Session) {
        self.counters.evicted_sessions.add(1);
        tracing::debug!(
            target: "status_messenger::hub",
            session = %session.id,
            "idle session evicted"
        );
        self.end_session(session, End::Evicted);
    }

    fn maybe_sweep(&self, now: u64) {
        let due = self.next_sweep_ms.load(Ordering::Relaxed);
        if now >= due
            && self
                .next_sweep_ms
                .compare_exchange(
                    due,
                    now.saturating_add(self.sweep_every_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            self.sweep(now);
        }
    }

    fn trim(&self, log: &mut log::SessionLog, now: u64) -> u64 {
        let config = &self.config;
        log.trim(
            config.history_capacity,
            config.history_expiry,
            self.ttl_ms,
            now,
        )
    }

    /// Evicts idle sessions and trims expired history everywhere; returns how many were evicted.
    fn sweep(&self, now: u64) -> usize {
        let mut evicted = Vec::new();
        for shard in self.shards.iter() {
            let mut map = lock_shard(shard);
            map.retain(|_, session| {
                if self.idle_expired(session, now) {
                    evicted.push(Arc::clone(session));
                    return false;
                }
                let removed = self.trim(&mut session.lock().log, now);
                self.counters.retained.sub(removed);
                true
            });
        }
        self.counters.sessions.sub(evicted.len() as u64);
        for session in &evicted {
            self.evict(session);
        }
        evicted.len()
    }
}
