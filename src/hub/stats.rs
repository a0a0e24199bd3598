//! What a hub counts: [`HubStats`](crate::HubStats), and the names under which the `metrics` feature reports the
//! same counters ([`metric_names`]).
//!
//! The counters themselves live in the private `counters` module; every field here is one of
//! them at the moment [`Hub::stats`](crate::Hub::stats) read it.

/// Names under which the `metrics` feature reports the hub's counters.
///
/// Counters end in `_total`; `sessions`, `subscribers`, `retained`, `tasks` and
/// `backend_buffered` are gauges. Drops are one counter with a `reason` label: `no_session`,
/// `closed`, `invalid_session`, `session_limit`, `backend`, `task_cancelled` (the fields
/// `dropped_*` of [`HubStats`](crate::HubStats)). Each is the hub's counter as of the last
/// time it was recorded ([`Hub::record_metrics`](crate::Hub::record_metrics); see
/// [Counting](crate::hub#counting)).
///
/// # Examples
///
/// ```
/// use status_messenger::hub::metric_names::*;
///
/// assert_eq!(DELIVERED, "status_messenger_hub_delivered_total");
/// // Every name is distinct, prefixed, and counters end in `_total`.
/// let counters = [ACCEPTED, DELIVERED, DROPPED, TRUNCATED, GAPS, LAGGED, EVICTED, BACKEND_ERRORS,
///     BACKEND_RECONNECTS, EVICTED_UNDER_PRESSURE];
/// let gauges = [SESSIONS, SUBSCRIBERS, RETAINED, BACKEND_BUFFERED, TASKS];
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
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::hub::metric_names::SESSIONS;
    /// assert_eq!(SESSIONS, "status_messenger_hub_sessions");
    /// ```
    pub const SESSIONS: &str = "status_messenger_hub_sessions";
    /// Gauge: live subscriptions ([`HubStats::subscribers`](super::HubStats::subscribers)).
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::hub::metric_names::SUBSCRIBERS;
    /// assert_eq!(SUBSCRIBERS, "status_messenger_hub_subscribers");
    /// ```
    pub const SUBSCRIBERS: &str = "status_messenger_hub_subscribers";
    /// Gauge: statuses in history ([`HubStats::retained`](super::HubStats::retained)).
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::hub::metric_names::RETAINED;
    /// assert_eq!(RETAINED, "status_messenger_hub_retained");
    /// ```
    pub const RETAINED: &str = "status_messenger_hub_retained";
    /// Counter: statuses accepted ([`HubStats::accepted`](super::HubStats::accepted)).
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::hub::metric_names::ACCEPTED;
    /// assert_eq!(ACCEPTED, "status_messenger_hub_accepted_total");
    /// ```
    pub const ACCEPTED: &str = "status_messenger_hub_accepted_total";
    /// Counter: statuses delivered ([`HubStats::delivered`](super::HubStats::delivered)).
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::hub::metric_names::DELIVERED;
    /// assert_eq!(DELIVERED, "status_messenger_hub_delivered_total");
    /// ```
    pub const DELIVERED: &str = "status_messenger_hub_delivered_total";
    /// Counter with label `reason`: statuses not accepted.
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::hub::metric_names::DROPPED;
    /// assert_eq!(DROPPED, "status_messenger_hub_dropped_total");
    /// ```
    pub const DROPPED: &str = "status_messenger_hub_dropped_total";
    /// Counter: statuses truncated ([`HubStats::truncated`](super::HubStats::truncated)).
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::hub::metric_names::TRUNCATED;
    /// assert_eq!(TRUNCATED, "status_messenger_hub_truncated_total");
    /// ```
    pub const TRUNCATED: &str = "status_messenger_hub_truncated_total";
    /// Counter: gap items emitted ([`HubStats::gaps`](super::HubStats::gaps)).
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::hub::metric_names::GAPS;
    /// assert_eq!(GAPS, "status_messenger_hub_gaps_total");
    /// ```
    pub const GAPS: &str = "status_messenger_hub_gaps_total";
    /// Counter: statuses covered by gaps ([`HubStats::lagged`](super::HubStats::lagged)).
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::hub::metric_names::LAGGED;
    /// assert_eq!(LAGGED, "status_messenger_hub_lagged_total");
    /// ```
    pub const LAGGED: &str = "status_messenger_hub_lagged_total";
    /// Counter: idle sessions evicted
    /// ([`HubStats::evicted_sessions`](super::HubStats::evicted_sessions)).
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::hub::metric_names::EVICTED;
    /// assert_eq!(EVICTED, "status_messenger_hub_evicted_sessions_total");
    /// ```
    pub const EVICTED: &str = "status_messenger_hub_evicted_sessions_total";
    /// Counter: sessions evicted early to make room
    /// ([`HubStats::evicted_under_pressure`](super::HubStats::evicted_under_pressure)).
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::hub::metric_names::EVICTED_UNDER_PRESSURE;
    /// assert_eq!(EVICTED_UNDER_PRESSURE, "status_messenger_hub_evicted_under_pressure_total");
    /// ```
    pub const EVICTED_UNDER_PRESSURE: &str = "status_messenger_hub_evicted_under_pressure_total";
    /// Gauge: statuses waiting for Redis
    /// ([`HubStats::backend_buffered`](super::HubStats::backend_buffered)).
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::hub::metric_names::BACKEND_BUFFERED;
    /// assert_eq!(BACKEND_BUFFERED, "status_messenger_hub_backend_buffered");
    /// ```
    pub const BACKEND_BUFFERED: &str = "status_messenger_hub_backend_buffered";
    /// Counter: failed Redis connections and commands
    /// ([`HubStats::backend_errors`](super::HubStats::backend_errors)).
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::hub::metric_names::BACKEND_ERRORS;
    /// assert_eq!(BACKEND_ERRORS, "status_messenger_hub_backend_errors_total");
    /// ```
    pub const BACKEND_ERRORS: &str = "status_messenger_hub_backend_errors_total";
    /// Counter: reconnections to Redis
    /// ([`HubStats::backend_reconnects`](super::HubStats::backend_reconnects)).
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::hub::metric_names::BACKEND_RECONNECTS;
    /// assert_eq!(BACKEND_RECONNECTS, "status_messenger_hub_backend_reconnects_total");
    /// ```
    pub const BACKEND_RECONNECTS: &str = "status_messenger_hub_backend_reconnects_total";
    /// Gauge: tasks remembered, over all sessions ([`HubStats::tasks`](super::HubStats::tasks)).
    ///
    /// # Examples
    ///
    /// ```
    /// use status_messenger::hub::metric_names::TASKS;
    /// assert_eq!(TASKS, "status_messenger_hub_tasks");
    /// ```
    pub const TASKS: &str = "status_messenger_hub_tasks";
}

/// The hub's counters at one moment; from [`Hub::stats`](crate::Hub::stats).
///
/// # Examples
///
/// ```
/// use status_messenger::Hub;
///
/// let hub = Hub::new(Default::default()).unwrap();
/// hub.publish(Some("s"), "kept").unwrap();
/// hub.publish(None, "nowhere to go").unwrap_err();
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
    /// Statuses with no session, dropped by [`NoSessionPolicy::Drop`](crate::NoSessionPolicy::Drop).
    pub dropped_no_session: u64,
    /// Statuses refused because the hub was shut down or their session was being closed.
    pub dropped_closed: u64,
    /// Statuses refused because their session id was invalid.
    pub dropped_invalid: u64,
    /// Statuses refused because they would have opened a session beyond
    /// [`HubConfig::max_sessions`](crate::HubConfig::max_sessions).
    pub dropped_session_limit: u64,
    /// Statuses cut to [`HubConfig::max_status_bytes`](crate::HubConfig::max_status_bytes) (accepted, and also counted there).
    pub truncated: u64,
    /// Gap items handed to subscribers.
    pub gaps: u64,
    /// Statuses covered by those gap items.
    pub lagged: u64,
    /// Sessions evicted after [`HubConfig::history_ttl`](crate::HubConfig::history_ttl) with no
    /// subscriber and no status, or earlier to make room (those are also counted in
    /// `evicted_under_pressure`).
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
    /// Statuses refused because their task had been asked to stop
    /// ([`PublishError::TaskCancelled`](crate::hub::PublishError::TaskCancelled)).
    pub dropped_cancelled: u64,
    /// Tasks remembered now, over all sessions (running or ended, up to
    /// [`HubConfig::task_capacity`](crate::HubConfig::task_capacity) per session).
    pub tasks: u64,
    /// Sessions evicted before their time to live to make room for a new one, because
    /// [`HubConfig::max_sessions`](crate::HubConfig::max_sessions) were held. Only sessions
    /// with no subscriber and no running task go: in the in-memory hub those holding no
    /// statuses first, then the idle longest; on a shared backend the idle longest (also
    /// counted in `evicted_sessions`).
    pub evicted_under_pressure: u64,
}

impl HubStats {
    /// Statuses not accepted, for every reason.
    ///
    /// # Examples
    ///
    /// ```
    /// let hub = status_messenger::Hub::new(Default::default()).unwrap();
    /// hub.publish(None, "a").unwrap_err();
    /// hub.publish(Some(""), "b").unwrap_err();
    /// assert_eq!(hub.stats().dropped(), 2);
    /// ```
    pub fn dropped(&self) -> u64 {
        self.dropped_no_session
            + self.dropped_closed
            + self.dropped_invalid
            + self.dropped_session_limit
            + self.dropped_backend
            + self.dropped_cancelled
    }
}
